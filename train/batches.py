"""Pair samples to training tensors, and the 9-channel inpainting UNet input.

Conventions (those of diffusers' SD pipelines): images are float ``(3, H, W)`` in ``[-1, 1]``; the mask is float
``(1, H, W)`` in ``[0, 1]`` with 1 = generate, kept soft (the shard's 8-bit soft mask / 255, not binarised).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from invs.errors import ShardFormatError
from invs.shards import PairSample

__all__ = ["inpaint_unet_input", "mask_to_latent", "pair_to_tensors"]

_IMAGES = ("source", "target", "partial")


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
    """``source``, ``target``, ``partial`` as float32 ``(3, R, R)`` in ``[-1, 1]``; ``mask`` float32 ``(1, R, R)``.

    Images are not resized: a sample at another size than ``resolution`` (or a missing/ill-typed image or mask)
    raises :class:`ShardFormatError` naming the sample.
    """
    key = getattr(sample, "key", "?")
    out: dict[str, torch.Tensor] = {}
    for name in _IMAGES:
        image = _check_image(key, name, getattr(sample, name, None), (resolution, resolution, 3))
        out[name] = torch.from_numpy(image).permute(2, 0, 1).to(torch.float32).div_(127.5).sub_(1.0)
    mask = _check_image(key, "mask", getattr(sample, "mask", None), (resolution, resolution))
    out["mask"] = torch.from_numpy(mask).to(torch.float32).div_(255.0).unsqueeze(0)
    return out


def mask_to_latent(
    mask: torch.Tensor, latent_hw: tuple[int, int], mode: Literal["max", "area"] = "max"
) -> torch.Tensor:
    """Downsample a soft pixel mask ``(B, 1, H, W)`` to latent resolution ``(B, 1, h, w)``.

    ``max`` (default): each latent cell takes the largest mask value among its pixels, so any pixel to generate
    marks its cell. A latent cell encodes its whole pixel patch (and more, through the VAE's receptive field); if
    any of it must be generated, the partial-view latent there is not trustworthy and the UNet has to know it.
    Soft values survive (a cell whose pixels are all 0.3 gets 0.3). ``area``: the cell's mean (the fraction to
    generate), which dilutes thin regions.

    The pipeline at inference differs: it binarises the mask at 0.5 and downsamples with nearest
    (``pipeline_stable_diffusion_inpaint.py``: ``mask_processor`` with ``do_binarize=True``, then
    ``F.interpolate(mask, size=(height // vae_scale_factor, width // vae_scale_factor))``), which can drop thin
    regions; give the pipeline a mask max-pooled and upsampled the same way to match training.
    """
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (B, 1, H, W), got {tuple(mask.shape)}")
    h, w = latent_hw
    H, W = mask.shape[-2:]
    if H % h or W % w:
        raise ValueError(f"mask size {(H, W)} is not a multiple of the latent size {(h, w)}")
    if mode == "max":
        return F.max_pool2d(mask, kernel_size=(H // h, W // w))
    if mode == "area":
        return F.avg_pool2d(mask, kernel_size=(H // h, W // w))
    raise ValueError(f"unknown mask downsampling mode {mode!r}; valid: max, area")


def inpaint_unet_input(
    noisy_latents: torch.Tensor, mask_latent: torch.Tensor, partial_latents: torch.Tensor
) -> torch.Tensor:
    """The inpainting UNet's 9-channel input ``(B, 4 + 1 + 4, h, w)``: noisy latents, mask, partial-view latents.

    Same order as diffusers 0.42 ``StableDiffusionInpaintPipeline.__call__`` (denoising loop,
    ``if num_channels_unet == 9``): ``latent_model_input = torch.cat([latent_model_input, mask,
    masked_image_latents], dim=1)``, where ``latent_model_input`` is the (scheduler-scaled) noisy latents and
    ``masked_image_latents`` the VAE latents (times ``scaling_factor``) of the masked image — for iNVS, the partial
    target view.
    """
    if noisy_latents.ndim != 4 or mask_latent.ndim != 4 or partial_latents.ndim != 4:
        raise ValueError("noisy_latents, mask_latent and partial_latents must all be (B, C, h, w)")
    if mask_latent.shape[1] != 1 or noisy_latents.shape[1] != partial_latents.shape[1]:
        raise ValueError(
            f"channel mismatch: noisy {noisy_latents.shape[1]}, mask {mask_latent.shape[1]} (must be 1), "
            f"partial {partial_latents.shape[1]}"
        )
    shapes = {tuple(t.shape[i] for i in (0, 2, 3)) for t in (noisy_latents, mask_latent, partial_latents)}
    if len(shapes) != 1:
        raise ValueError(f"batch/spatial sizes differ: {sorted(shapes)}")
    mask_latent = mask_latent.to(dtype=noisy_latents.dtype)
    partial_latents = partial_latents.to(dtype=noisy_latents.dtype)
    return torch.cat([noisy_latents, mask_latent, partial_latents], dim=1)
