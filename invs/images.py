"""Image conventions shared by the stages: RGBA renders are straight-alpha uint8; training images are on white.

Also what turns a person's image into a view like the renders: the object cut out (its alpha, or a plain background
removed) and framed as the render stage frames a normalised object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

#: A view whose alpha covers less than this fraction of the image shows (almost) nothing of the object: the render
#: stage counts it in ``empty_views`` and the preprocess stage never pairs it.
MIN_ALPHA_FRACTION = 1e-3


def coverage(rgba: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA (..., 4) uint8 -> its alpha (...) as float32 in [0, 1]: how much of each pixel the
    object covers (the partial view places the source's silhouette by it)."""
    return rgba[..., 3].astype(np.float32) / 255.0


def on_white(rgba: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA (..., 4) uint8 -> RGB float32 in [0, 1] composited on white."""
    alpha = coverage(rgba)[..., None]
    return rgba[..., :3].astype(np.float32) / 255.0 * alpha + (1.0 - alpha)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (clipped) -> uint8, rounded to nearest."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def object_bbox(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: the pixel box (``x1``, ``y1`` exclusive) of the pixels at least half opaque, for an
    alpha map (H, W) in uint8 or in [0, 1] floats; ``ValueError`` when no pixel is."""
    alpha = np.asarray(alpha)
    solid = alpha >= (128 if alpha.dtype == np.uint8 else 0.5)
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    if not len(rows):
        raise ValueError("no pixel is at least half opaque")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# ------------------------------------------------------------------------------------------- a person's image

#: Apparent size of a normalised object in the render stage's frames: the larger side of its alpha bounding box
#: (:func:`object_bbox`), in object units at the distance of the object's centre (``side / fx * radius``), median
#: over 12 views of each of the 7 real test objects (bench/framing_bench.py, bench/results/framing.json: quartiles
#: 1.00-1.09; the demo's sample objects give the same median). With the local preset's camera (35 mm on 32 mm,
#: radius 2.4) that is 47% of the frame.
OBJECT_EXTENT = 1.03
#: Colour distance (largest channel difference, 0-255) within which a pixel counts as the plain background.
BACKGROUND_TOLERANCE = 24
#: At least this share of the border pixels must be background-coloured for a plain background to be assumed.
PLAIN_BORDER_SHARE = 0.9


def framing_fraction(lens_mm: float, sensor_width_mm: float, radius: float) -> float:
    """The fraction of the frame the larger side of an object's box fills in the render stage's frames, for a
    camera of ``lens_mm`` on ``sensor_width_mm`` at ``radius`` from the object's centre (:data:`OBJECT_EXTENT`)."""
    return OBJECT_EXTENT * lens_mm / sensor_width_mm / radius


def resize_view(
    rgba: np.ndarray, depth: np.ndarray, K: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample one view to ``size x size``: RGBA with a box filter, depth by nearest pixel (0 where the resized
    alpha is 0), K scaled. A view already at that size is returned as it is."""
    from invs.cameras import scale_intrinsics

    h, w = depth.shape
    if (h, w) == (size, size):
        return rgba, depth, K
    image = np.asarray(Image.fromarray(rgba, "RGBA").resize((size, size), Image.BOX))
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(int), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(int), w - 1)
    resized_depth = depth[rows][:, cols]
    resized_depth = np.where(image[..., 3] > 0, resized_depth, 0)
    return image, resized_depth, scale_intrinsics(K, size / w, size / h)


def _spread(reached: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """``reached`` grown along each row through runs of ``allowed`` pixels (both (H, W) bool)."""
    import torch

    h, w = allowed.shape
    run = torch.cumsum(~allowed, dim=1) + torch.arange(h)[:, None] * (w + 1)  # one id per run of each row
    hit = torch.zeros(h * (w + 1), dtype=torch.bool)
    hit[run[reached]] = True
    return allowed & hit[run]


def plain_background_alpha(rgb: np.ndarray, tolerance: int = BACKGROUND_TOLERANCE) -> np.ndarray:
    """Alpha (H, W) uint8 of the object in front of a plain background: 0 on the background, 255 on the object.

    The background colour is the median of the border pixels; the background is every pixel within ``tolerance``
    of it that is connected to the border, so parts of the object in the background's colour stay object when
    the object encloses them. ``ValueError`` when less than :data:`PLAIN_BORDER_SHARE` of the border has that
    colour (no plain background to cut the object from).
    """
    import torch

    rgb = np.asarray(rgb)[..., :3].astype(np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    colour = np.median(border, axis=0)
    share = float((np.abs(border - colour).max(-1) <= tolerance).mean())
    if share < PLAIN_BORDER_SHARE:
        raise ValueError(
            f"its border is not one plain colour (only {share:.0%} of the border pixels are within {tolerance} of "
            f"the median border colour {tuple(int(c) for c in colour)}), so the object cannot be cut out"
        )
    allowed = torch.from_numpy(np.abs(rgb - colour).max(-1) <= tolerance)
    reached = torch.zeros_like(allowed)
    for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
        reached[edge] = allowed[edge]
    while True:  # alternate row and column runs until nothing changes (a few rounds for any plain background)
        grown = _spread(_spread(reached, allowed).T.contiguous(), allowed.T.contiguous()).T
        if torch.equal(grown, reached):
            break
        reached = grown
    return np.where(reached.numpy(), 0, 255).astype(np.uint8)


def object_rgba(rgba: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA (H, W, 4) uint8 of the object in an RGBA image: its own alpha where it has a pixel that
    is not opaque, else cut from a plain background (:func:`plain_background_alpha`). ``ValueError`` when it
    shows no object."""
    rgba = np.asarray(rgba)
    if rgba[..., 3].min() == 255:
        rgba = np.concatenate([rgba[..., :3], plain_background_alpha(rgba[..., :3])[..., None]], axis=-1)
    if float((rgba[..., 3] >= 128).mean()) < MIN_ALPHA_FRACTION:
        raise ValueError(
            f"it shows no object (less than {MIN_ALPHA_FRACTION:.1%} of it is object: alpha, or not the "
            "background colour)"
        )
    return rgba


def frame_object(rgba: np.ndarray, size: int, fraction: float) -> np.ndarray:
    """``size x size`` RGBA framed as the renders are: the object's box (:func:`object_bbox`) centred, its larger
    side ``fraction`` of the frame (as Zero-1-to-3 frames its inputs); transparent where the frame reaches past the
    image. Resampled on premultiplied alpha with a box filter when shrinking (as :func:`resize_view` resizes the
    renders for training) and bilinearly when enlarging: neither rings, so no faint alpha appears off the object."""
    x0, y0, x1, y1 = object_bbox(rgba[..., 3])
    side = max(x1 - x0, y1 - y0) / fraction
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    h, w = rgba.shape[:2]
    pad = int(np.ceil(max(0.0, -box[0], -box[1], box[2] - w, box[3] - h))) + 1
    canvas = np.zeros((h + 2 * pad, w + 2 * pad, 4), dtype=np.uint8)
    canvas[pad : pad + h, pad : pad + w] = rgba
    shifted = tuple(v + pad for v in box)
    resample = Image.BOX if side >= size else Image.BILINEAR
    framed = Image.fromarray(canvas, "RGBA").resize((size, size), resample, box=shifted)
    return np.asarray(framed)


def extend_into(values: np.ndarray, known: np.ndarray, wanted: np.ndarray, steps: int = 8) -> np.ndarray:
    """``values`` (H, W) or (H, W, C) with the pixels of ``wanted`` that are not ``known`` (both (H, W) bool) set
    to the mean of their known 8-neighbours, grown ring by ring (at most ``steps`` rings; farther ones get the mean
    of all known values). Known pixels are unchanged; the dtype is kept."""
    v = np.asarray(values)
    flat = v.astype(np.float64).reshape(*v.shape[:2], -1)
    have = np.asarray(known, dtype=bool).copy()
    need = np.asarray(wanted, dtype=bool) & ~have
    for _ in range(steps):
        if not need.any():
            break
        total = np.zeros_like(flat)
        count = np.zeros(have.shape)
        padded_v = np.pad(flat * have[..., None], ((1, 1), (1, 1), (0, 0)))
        padded_h = np.pad(have.astype(np.float64), 1)
        h, w = have.shape
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    total += padded_v[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                    count += padded_h[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        grow = need & (count > 0)
        flat[grow] = total[grow] / count[grow][:, None]
        have |= grow
        need &= ~grow
    if need.any():
        flat[need] = flat[have].mean(axis=0) if have.any() else 0.0
    out = flat.reshape(v.shape)
    return np.round(out).astype(v.dtype) if np.issubdtype(v.dtype, np.integer) else out.astype(v.dtype)
