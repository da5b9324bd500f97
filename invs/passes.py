"""Render passes: what a render shard can hold per view besides RGBA, and how each is stored.

``render.passes`` names them; ``rgba`` and ``depth`` are what iNVS needs and are always there.

* ``rgba`` — ``rgba.NNN.png``: 8-bit sRGB colour, straight (not premultiplied) alpha.
* ``depth`` — ``depth.NNN.npy``: float16/float32 planar z-depth (distance along the camera's +z axis, not along
  the ray) in normalised-object units; 0 where alpha is 0.
* ``normal`` — ``normal.NNN.png``: 8-bit RGB unit surface normals in the **camera frame, OpenCV axes** (x right,
  y down, z forward, so a surface facing the camera has z < 0), encoded ``rgb = round((n + 1) * 127.5)``; the
  background (alpha 0) is (128, 128, 128), which decodes to ~0. Cycles' shading normal (normal maps and smooth
  shading applied), averaged over a pixel's samples and renormalised. Decode with :func:`decode_normals`.
* ``albedo`` — ``albedo.NNN.png``: 8-bit sRGB RGB base colour without lighting or shading: what feeds each
  material's Principled BSDF Base Color (texture x factor x vertex colour; metals keep their colour), or an unlit
  material's emission colour; straight like RGBA; 0 where alpha is 0 and on surfaces with no such material.
"""

from __future__ import annotations

from typing import Final

import numpy as np

#: Every pass, in shard order; ``REQUIRED`` are those the pair stage reads.
ALL: Final = ("rgba", "depth", "normal", "albedo")
REQUIRED: Final = ("rgba", "depth")
#: Image passes beyond RGBA and depth: name -> PNG mode of their ``NAME.NNN.png`` members.
IMAGE_PASSES: Final = {"normal": "RGB", "albedo": "RGB"}
#: What ``meta.json`` says of each image pass a sample holds (so a reader needs no code of ours).
DESCRIPTIONS: Final = {
    "normal": {
        "frame": "camera_opencv",
        "axes": "x right, y down, z forward",
        "encoding": "rgb = round((n + 1) * 127.5)",
        "background": [128, 128, 128],
    },
    "albedo": {"color_space": "srgb", "alpha": "straight", "source": "base_color", "background": [0, 0, 0]},
}


def check(passes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``passes`` in shard order; ``ValueError`` for an unknown one or a missing required one."""
    unknown = sorted(set(passes) - set(ALL))
    if unknown:
        raise ValueError(f"unknown render pass {unknown[0]!r}: choose from {', '.join(ALL)}")
    missing = [p for p in REQUIRED if p not in passes]
    if missing:
        raise ValueError(f"render.passes must include {' and '.join(missing)} (the pair stage reads them)")
    return tuple(p for p in ALL if p in passes)


def encode_normals(normals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 of unit normals (H, W, 3) where ``mask`` (H, W) is true; (128, 128, 128) elsewhere."""
    n = np.asarray(normals, dtype=np.float32)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    valid = mask & (length[..., 0] > 1e-6)
    unit = np.where(valid[..., None], n / np.maximum(length, 1e-12), 0.0)
    return np.clip(np.round((unit + 1.0) * 127.5), 0, 255).astype(np.uint8)


def decode_normals(rgb: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """Unit normals (H, W, 3) float32 from :func:`encode_normals`' bytes; 0 where ``alpha`` (if given) is 0."""
    n = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    if alpha is not None:
        n[np.asarray(alpha) == 0] = 0.0
    return n


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """The sRGB transfer function (IEC 61966-2-1) of linear values in [0, 1]."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def encode_albedo(linear_premultiplied: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 sRGB straight albedo from a linear pass accumulated over coverage (premultiplied) and the
    view's uint8 alpha; 0 where alpha is 0."""
    a = np.asarray(alpha, dtype=np.float32)[..., None] / 255.0
    straight = np.where(a > 0, np.asarray(linear_premultiplied, dtype=np.float32)[..., :3] / np.maximum(a, 1e-6), 0)
    return np.round(linear_to_srgb(straight) * 255.0).astype(np.uint8)
