"""Image quality metrics for predicted views, per image, on float images ``(B, 3, H, W)`` in ``[0, 1]``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(f"need two (B, 3, H, W) images of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image ``(B,)`` with peak 1 (inf where identical)."""
    _check(a, b)
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


def masked_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR in dB pooled over the pixels of a ``(B, H, W)`` boolean mask of images ``(B, 3, H, W)`` in [0, 1]
    (inf when identical there, nan when the mask is empty)."""
    m = mask[:, None].expand_as(a)
    if not bool(m.any()):
        return float("nan")
    mse = float(((a.float() - b.float()) ** 2)[m].mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM per image ``(B,)`` (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, valid
    region only, mean over channels and pixels). The window shrinks to the image for images under 11 px."""
    _check(a, b)
    a, b = a.float(), b.float()
    size = min(window, a.shape[-1], a.shape[-2])
    w = _gaussian_window(size, sigma, a.device)
    c1, c2 = 0.01**2, 0.03**2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, groups=3)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def compare(images: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``psnr_NAME`` and ``ssim_NAME`` per image ``(B,)`` for every named image batch against ``target``.

    One call scores a prediction and its zero-cost baselines on the same pixels, e.g. ``{"generated": ...,
    "composite": ..., "partial": ..., "source": ...}``.
    """
    scores: dict[str, torch.Tensor] = {}
    for name, image in images.items():
        scores[f"psnr_{name}"] = psnr(image, target)
        scores[f"ssim_{name}"] = ssim(image, target)
    return scores
