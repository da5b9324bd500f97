"""The sanity law for partial views and masks, measured against the target's ground truth (README, "Preprocess stage").

Given a pair's partial view and mask and the *target's* render (RGBA and planar depth), with the true target
surface points ``X`` from the target depth:

* **seen** target pixels are those whose ``X`` the source sees: ``X`` projects inside the source image, and one of
  the 2x2 source pixels around its projection holds a depth that agrees with ``X``'s source depth within
  ``tolerance`` (0.02 units; a pixel's worth of leeway at grazing angles and visibility edges);
* **photometric**: on covered, seen, fully opaque target pixels, PSNR(partial, target) must be within ~1 dB of
  PSNR(backward warp, target), where the backward warp samples the source image bilinearly at ``X``'s projection
  (the best a perfect forward warp could do);
* **stray**: covered pixels outside the target silhouette (alpha 0), as a fraction of covered pixels (< 0.5%);
* **unseen kept**: target foreground pixels the source does not see (uncovered or seen through) with mask < 0.5,
  as a fraction of such pixels (< 1%).

Alongside, not part of the law: how much of what the source sees the partial view covers (``seen_covered``, the
covered fraction of the seen pixels) and keeps (``seen_cells_kept``: of the 8x8 pixel cells whose pixels are all
seen, the fraction whose largest mask value is < 0.5, i.e. kept after the max-pooling to latent cells of
``inference.pipeline.mask_to_latent``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from invs.geometry import project, unproject
from invs.metrics import masked_psnr
from invs.partial_view import SAME_SURFACE_TOLERANCE, PartialView

#: Pixels per latent cell side (the VAE's downsampling factor).
LATENT_CELL = 8
#: The law's limits: PSNR below the backward warp's (dB), stray and unseen-kept fractions (see the module docstring).
MAX_PSNR_DEFICIT_DB = 1.0
MAX_STRAY_FRACTION = 0.005
MAX_UNSEEN_KEPT_FRACTION = 0.01


def law_holds(figures: dict[str, float]) -> bool:
    """Whether :func:`law_metrics`' figures (of a pair or pooled over pairs) are within the law's limits."""
    return (
        figures["psnr_partial"] >= figures["psnr_backward"] - MAX_PSNR_DEFICIT_DB
        and figures["stray_fraction"] < MAX_STRAY_FRACTION
        and figures["unseen_below_half"] < MAX_UNSEEN_KEPT_FRACTION
    )


def seen_by_source(
    depth_tgt: torch.Tensor,
    K_tgt: torch.Tensor,
    c2w_tgt: torch.Tensor,
    depth_src: torch.Tensor,
    K_src: torch.Tensor,
    c2w_src: torch.Tensor,
    tolerance: float = SAME_SURFACE_TOLERANCE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(seen (B, H, W) bool, source pixel coordinates (B, H*W, 2)) of the target's true surface points."""
    b, h, w = depth_tgt.shape
    hs, ws = depth_src.shape[-2:]
    points = unproject(depth_tgt.float(), K_tgt.float(), c2w_tgt.float())
    uv, z = project(points, K_src.float(), c2w_src.float())
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < ws) & (uv[..., 1] >= 0) & (uv[..., 1] < hs) & (z > 0)
    # The 2x2 source pixels around the projection: one of them must hold a surface at X's depth.
    col0, row0 = torch.floor(uv[..., 0] - 0.5).long(), torch.floor(uv[..., 1] - 0.5).long()
    flat_depth = depth_src.float().reshape(b, -1)
    agrees = torch.zeros_like(inside)
    for dr in (0, 1):
        for dc in (0, 1):
            flat = (row0 + dr).clamp(0, hs - 1) * ws + (col0 + dc).clamp(0, ws - 1)
            d_src = torch.gather(flat_depth, 1, flat)
            agrees |= (d_src > 0) & ((z - d_src).abs() < tolerance)
    seen = inside & agrees & (depth_tgt.reshape(b, -1) > 0)
    return seen.view(b, h, w), uv


def backward_warp(rgb_src: torch.Tensor, uv_src: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sample the source image (B, 3, Hs, Ws) bilinearly at continuous pixel positions (B, H*W, 2)."""
    hs, ws = rgb_src.shape[-2:]
    grid = torch.stack([uv_src[..., 0] / ws * 2 - 1, uv_src[..., 1] / hs * 2 - 1], dim=-1)
    out = F.grid_sample(rgb_src.float(), grid[:, None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0].reshape(rgb_src.shape[0], 3, height, width)


def law_metrics(
    view: PartialView,
    rgb_src: torch.Tensor,
    depth_src: torch.Tensor,
    K_src: torch.Tensor,
    c2w_src: torch.Tensor,
    rgb_tgt: torch.Tensor,
    alpha_tgt: torch.Tensor,
    depth_tgt: torch.Tensor,
    K_tgt: torch.Tensor,
    c2w_tgt: torch.Tensor,
) -> dict[str, float]:
    """The law's figures for a batch of pairs (images on white in [0, 1]; alpha (B, H, W) in [0, 1])."""
    h, w = depth_tgt.shape[-2:]
    seen, uv_src = seen_by_source(depth_tgt, K_tgt, c2w_tgt, depth_src, K_src, c2w_src)
    opaque = alpha_tgt >= 1.0
    compare = view.visible & seen & opaque
    backward = backward_warp(rgb_src, uv_src, h, w)
    covered = view.visible
    unseen = (depth_tgt > 0) & ~seen
    n_covered = int(covered.sum())
    n_unseen = int(unseen.sum())
    seen_cells = F.avg_pool2d(seen.float()[:, None], LATENT_CELL)[:, 0] >= 1.0
    cell_mask = F.max_pool2d(view.mask.float()[:, None], LATENT_CELL)[:, 0]
    return {
        "psnr_partial": masked_psnr(view.partial, rgb_tgt.float(), compare),
        "psnr_backward": masked_psnr(backward, rgb_tgt.float(), compare),
        "compared_pixels": int(compare.sum()),
        "stray_fraction": float((covered & (alpha_tgt <= 0)).sum()) / max(n_covered, 1),
        "unseen_below_half": float((unseen & (view.mask < 0.5)).sum()) / max(n_unseen, 1),
        "unseen_pixels": n_unseen,
        "visible_fraction": float(covered.sum()) / max(int((alpha_tgt > 0).sum()), 1),
        "seen_covered": float((covered & seen).sum()) / max(int(seen.sum()), 1),
        "seen_pixels": int(seen.sum()),
        "seen_cells_kept": float((seen_cells & (cell_mask < 0.5)).sum()) / max(int(seen_cells.sum()), 1),
        "seen_cells": int(seen_cells.sum()),
    }
