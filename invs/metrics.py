"""Image quality metrics for predicted views, per image, on float images ``(B, 3, H, W)`` in ``[0, 1]``.

PSNR and SSIM are torchmetrics' (``data_range=1``; SSIM: Wang et al. 2004, 11x11 Gaussian window, sigma 1.5,
K1 0.01, K2 0.03); LPIPS is :mod:`invs.lpips` (AlexNet v0.1, the paper's). One :func:`compare` scores a
prediction and its baselines on the same pixels, for validation, evaluation and the benchmarks alike.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(f"need two (B, 3, H, W) images of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image ``(B,)`` with peak 1 (inf where identical)."""
    _check(a, b)
    return peak_signal_noise_ratio(a.float(), b.float(), data_range=1.0, reduction="none", dim=(1, 2, 3))


def masked_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR in dB pooled over the pixels of a ``(B, H, W)`` boolean mask of images ``(B, 3, H, W)`` in [0, 1]
    (inf when identical there, nan when the mask is empty)."""
    m = mask[:, None].expand_as(a)
    if not bool(m.any()):
        return float("nan")
    return float(peak_signal_noise_ratio(a.float()[m], b.float()[m], data_range=1.0))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM per image ``(B,)``; images under 11 px use a window the size of the image."""
    _check(a, b)
    size = min(11, a.shape[-1], a.shape[-2])
    size -= 1 - size % 2  # odd
    sigma = 1.5 * size / 11
    return structural_similarity_index_measure(
        a.float(), b.float(), data_range=1.0, reduction="none", kernel_size=size, sigma=sigma
    )


def compare(
    images: dict[str, torch.Tensor], target: torch.Tensor, lpips: torch.nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """``psnr_NAME``, ``ssim_NAME`` (and ``lpips_NAME`` given an :class:`invs.lpips.Lpips`) per image ``(B,)`` for
    every named image batch against ``target``, e.g. ``{"generated": ..., "partial": ..., "source": ...}``."""
    scores: dict[str, torch.Tensor] = {}
    for name, image in images.items():
        scores[f"psnr_{name}"] = psnr(image, target)
        scores[f"ssim_{name}"] = ssim(image, target)
        if lpips is not None:
            device = next(lpips.buffers()).device
            scores[f"lpips_{name}"] = lpips(image.to(device), target.to(device)).cpu()
    return scores
