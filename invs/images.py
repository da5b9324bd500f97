"""Image conventions shared by the stages: RGBA renders are straight-alpha uint8; training images are on white."""

from __future__ import annotations

import numpy as np

#: A view whose alpha covers less than this fraction of the image shows (almost) nothing of the object: the render
#: stage counts it in ``empty_views`` and the preprocess stage never pairs it.
MIN_ALPHA_FRACTION = 1e-3


def on_white(rgba: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA (..., 4) uint8 -> RGB float32 in [0, 1] composited on white."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return rgba[..., :3].astype(np.float32) / 255.0 * alpha + (1.0 - alpha)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (clipped) -> uint8, rounded to nearest."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
