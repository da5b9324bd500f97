"""One way to build a model's input pair, used by the preprocess stage, the evaluation protocol and inference.

A pair is a source view and a target camera. Given the source at the model's resolution (straight-alpha RGBA
uint8, its planar depth in object units with 0 = no surface, and its camera) and the target camera, the builder
composites the source on white, makes the partial target view and soft mask (:func:`invs.partial_view.
partial_view`) and quantises them to 8 bits, exactly as pair shards store them. :func:`model_tensors` is the one
step from those 8-bit images to the model's tensors (images in [-1, 1], the soft mask in [0, 1], 1 = generate).

Cameras follow :mod:`invs.cameras`: ``K`` in pixels (pixel centres at +0.5), ``c2w`` OpenCV camera-to-world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from invs.errors import ShardFormatError
from invs.images import coverage, on_white, to_uint8
from invs.partial_view import PartialView, partial_view
from invs.shards import PairSample

__all__ = ["BuiltPairs", "build_pairs", "collate", "image_tensor", "mask_tensor", "model_tensors", "pair_to_tensors"]


@dataclass
class BuiltPairs:
    """A batch of built pairs: the 8-bit images a pair shard stores and the float partial view they came from."""

    source: np.ndarray  # (B, R, R, 3) uint8: the source on white
    partial: np.ndarray  # (B, R, R, 3) uint8: the partial target view (white where nothing is known)
    mask: np.ndarray  # (B, R, R) uint8: the soft inpainting mask, 255 = generate
    views: PartialView  # float tensors on the builder's device (visibility, occlusion region, angles)
    rgb_source: torch.Tensor  # (B, 3, R, R) float32 in [0, 1]: the source on white, on the builder's device


def build_pairs(
    source_rgba: np.ndarray,
    source_depth: np.ndarray,
    K_src: np.ndarray,
    c2w_src: np.ndarray,
    K_tgt: np.ndarray,
    c2w_tgt: np.ndarray,
    half_angle_deg: float,
    cover: str = "mesh",
    device: str | torch.device = "cpu",
) -> BuiltPairs:
    """Pairs for sources ``(B, R, R, 4)`` uint8 with depth ``(B, R, R)``, cameras ``(B, 3, 3)`` / ``(B, 4, 4)`` per
    source and target; the target image is ``R x R`` too. ``half_angle_deg``: the mask reaches 0.5 at this angle
    between source and target rays; ``cover``: :func:`~invs.partial_view.partial_view`'s coverage."""
    rgba = np.asarray(source_rgba)
    if rgba.ndim != 4 or rgba.shape[-1] != 4 or rgba.dtype != np.uint8 or rgba.shape[1] != rgba.shape[2]:
        raise ValueError(f"source_rgba must be (B, R, R, 4) uint8, got {rgba.dtype} {rgba.shape}")
    b, res = rgba.shape[0], rgba.shape[1]
    if np.shape(source_depth) != (b, res, res):
        raise ValueError(f"source_depth must be {(b, res, res)}, got {np.shape(source_depth)}")

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)

    rgb = tensor(on_white(rgba)).permute(0, 3, 1, 2)
    pv = partial_view(
        rgb,
        tensor(source_depth),
        tensor(K_src),
        tensor(c2w_src),
        tensor(K_tgt),
        tensor(c2w_tgt),
        res,
        res,
        half_angle_deg,
        cover=cover,
        alpha_src=tensor(coverage(rgba)),
    )
    return BuiltPairs(
        source=to_uint8(on_white(rgba)),
        partial=to_uint8(pv.partial.permute(0, 2, 3, 1).cpu().numpy()),
        mask=to_uint8(pv.mask.cpu().numpy()),
        views=pv,
        rgb_source=rgb,
    )


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 image(s) ``(..., H, W, 3)`` -> float32 ``(..., 3, H, W)`` in [-1, 1] (``x / 127.5 - 1``)."""
    t = torch.from_numpy(np.ascontiguousarray(image))
    return t.movedim(-1, -3).to(torch.float32).div_(127.5).sub_(1.0)


def mask_tensor(mask: np.ndarray) -> torch.Tensor:
    """uint8 soft mask(s) ``(..., H, W)`` (255 = generate) -> float32 ``(..., 1, H, W)`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(mask)).to(torch.float32).div_(255.0).unsqueeze(-3)


def model_tensors(source: np.ndarray, partial: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
    """A batch of 8-bit pairs ``(B, R, R, 3)``, ``(B, R, R, 3)``, ``(B, R, R)`` as the model reads them:
    ``source``/``partial`` ``(B, 3, R, R)`` in [-1, 1], ``mask`` ``(B, 1, R, R)`` in [0, 1]."""
    return {"source": image_tensor(source), "partial": image_tensor(partial), "mask": mask_tensor(mask)}


def _check_image(key: str, name: str, image: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if image is None:
        raise ShardFormatError(f"{key}: pair sample has no {name}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape != shape:
        raise ShardFormatError(
            f"{key}: {name} is {image.dtype} {image.shape}, expected uint8 {shape} (pairs must be preprocessed at "
            "the training resolution)"
        )
    return image


def pair_to_tensors(sample: PairSample, resolution: int) -> dict[str, torch.Tensor]:
    """A pair shard's sample as the model reads it: ``source``, ``target``, ``partial`` float32 ``(3, R, R)`` in
    [-1, 1], ``mask`` float32 ``(1, R, R)`` in [0, 1] (1 = generate, soft: the shard's 8-bit mask / 255).

    Images are not resized: a sample at another size than ``resolution`` (or a missing/ill-typed image or mask)
    raises :class:`ShardFormatError` naming the sample.
    """
    key = getattr(sample, "key", "?")
    out = {
        name: image_tensor(_check_image(key, name, getattr(sample, name, None), (resolution, resolution, 3)))
        for name in ("source", "target", "partial")
    }
    out["mask"] = mask_tensor(_check_image(key, "mask", getattr(sample, "mask", None), (resolution, resolution)))
    return out


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of stream items; ``moments`` only when every item has them."""
    keys = set(items[0])
    for item in items[1:]:
        keys &= set(item)
    out: dict[str, Any] = {}
    for k in sorted(keys):
        values = [item[k] for item in items]
        out[k] = torch.stack(values) if isinstance(values[0], torch.Tensor) else torch.tensor(values)
    return out
