"""Quality flags: measurable rules that mark a rendered view or object as suspect, so a filter can be rerun.

Per view (from its RGBA alone; ``coverage`` = fraction of pixels with alpha > 0):

* ``empty`` — coverage < :data:`invs.images.MIN_ALPHA_FRACTION` (0.1%): shows (almost) nothing.
* ``nearly_empty`` — coverage < :data:`NEARLY_EMPTY` (1%) but not empty.
* ``too_small`` — the object's alpha bounding box spans less than :data:`TOO_SMALL` (15%) of the image on its
  longer side (a thin object can cover little and still fill the frame; this catches a speck).
* ``cropped`` — alpha > 0 on the image border: part of the object is outside the frame.
* ``constant_color`` — the fully covered pixels (alpha 255, at least 16 of them) have an RGB standard deviation
  below :data:`CONSTANT_STD` (2 of 255 levels, mean over channels): a blank, untextured-looking view.

Per object (from Blender's scene; the render stage records them):

* ``missing_texture`` — a material refers to an image whose pixels could not be loaded.
* ``no_material`` — a mesh has no material of its own (STL, PLY, OBJ without .mtl, ...), so it was drawn with the
  render stage's stated default material (``render.formats.DEFAULT_MATERIAL``, recorded in ``meta.json``).
* every view flag that at least half of the object's views carry (:data:`MAJORITY`).

``meta.json`` holds ``views[i].flags`` and the object's ``flags``; the manifest's ``flags`` column holds the
object's, so ``flags`` filters are parquet queries, and ``preprocess.skip_flags`` skips objects by them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

from invs.images import MIN_ALPHA_FRACTION

NEARLY_EMPTY: Final = 0.01
TOO_SMALL: Final = 0.15
CONSTANT_STD: Final = 2.0
MAJORITY: Final = 0.5
VIEW_FLAGS: Final = ("empty", "nearly_empty", "too_small", "cropped", "constant_color")
OBJECT_FLAGS: Final = ("missing_texture", "no_material")
ALL: Final = (*VIEW_FLAGS, *OBJECT_FLAGS)
#: Each flag's rule in one line (for reports).
RULES: Final = {
    "empty": f"object pixels (alpha > 0) < {MIN_ALPHA_FRACTION:.1%} of the view",
    "nearly_empty": f"object pixels < {NEARLY_EMPTY:.0%} of the view (not empty)",
    "too_small": f"object's box spans < {TOO_SMALL:.0%} of the view's side",
    "cropped": "object pixels on the image border",
    "constant_color": f"RGB std of opaque pixels < {CONSTANT_STD:g} levels",
    "missing_texture": "a material's image could not be loaded",
    "no_material": "a mesh drawn with the stated default material",
}


def view_flags(rgba: np.ndarray) -> list[str]:
    """The flags of one (H, W, 4) uint8 straight-alpha view, in :data:`VIEW_FLAGS` order."""
    alpha = rgba[..., 3]
    h, w = alpha.shape
    on = alpha > 0
    coverage = float(on.mean())
    flags = []
    if coverage < MIN_ALPHA_FRACTION:
        flags.append("empty")
    elif coverage < NEARLY_EMPTY:
        flags.append("nearly_empty")
    if on.any():
        rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
        span = max((rows[-1] - rows[0] + 1) / h, (cols[-1] - cols[0] + 1) / w)
        if span < TOO_SMALL:
            flags.append("too_small")
        if on[0].any() or on[-1].any() or on[:, 0].any() or on[:, -1].any():
            flags.append("cropped")
    full = rgba[..., :3][alpha == 255].astype(np.float32)
    if len(full) >= 16 and float(full.std(axis=0).mean()) < CONSTANT_STD:
        flags.append("constant_color")
    return flags


def object_flags(per_view: Sequence[Sequence[str]], missing_textures: int, meshes_without_material: int) -> list[str]:
    """The object's flags: the view flags held by at least half its views, then its own, in :data:`ALL` order."""
    counts = {f: sum(f in v for v in per_view) for f in VIEW_FLAGS}
    flags = {f for f, n in counts.items() if per_view and n >= MAJORITY * len(per_view)}
    if missing_textures:
        flags.add("missing_texture")
    if meshes_without_material:
        flags.add("no_material")
    return [f for f in ALL if f in flags]


def check(flags: Sequence[str]) -> list[str]:
    """``flags`` if all are known; ``ValueError`` naming the first unknown one."""
    unknown = [f for f in flags if f not in ALL]
    if unknown:
        raise ValueError(f"unknown quality flag {unknown[0]!r}: choose from {', '.join(ALL)}")
    return list(flags)
