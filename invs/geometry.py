"""Pinhole projection in torch, batched and device-agnostic: the one implementation of lifting and projecting.

Cameras follow :mod:`invs.cameras`: ``K`` (B, 3, 3) in pixels with pixel centres at ``+0.5``, ``c2w`` (B, 4, 4)
OpenCV camera-to-world (x right, y down, z forward), depth planar z in world units with 0 = no surface.
Results have the dtype and device of the inputs (float32 in the preprocess stage, float64 through the numpy wrappers
of :mod:`invs.cameras`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_shape(name: str, t: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    """Raise ValueError unless ``t`` has ``shape`` (None: any size)."""
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape, strict=True)):
        want = ", ".join("*" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape ({want}), got {tuple(t.shape)}")


def pixel_grid(
    height: int, width: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(H*W, 2) continuous (u, v) = (column + 0.5, row + 0.5) of every pixel centre, row-major."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5,
        torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1).reshape(-1, 2)


def rays(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) camera-frame rays ``(x/z, y/z, 1)`` through continuous pixel positions ``uv`` (B, N, 2)."""
    check_shape("uv", uv, (None, None, 2))
    check_shape("K", K, (uv.shape[0], 3, 3))
    x = (uv[..., 0] - K[:, 0, 2, None]) / K[:, 0, 0, None]
    y = (uv[..., 1] - K[:, 1, 2, None]) / K[:, 1, 1, None]
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def pixel_rays(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, 3) camera-frame rays ``(x/z, y/z, 1)`` through every pixel centre (planar depth 1)."""
    check_shape("K", K, (None, 3, 3))
    return rays(pixel_grid(height, width, K.device, K.dtype).expand(K.shape[0], -1, -1), K)


def lift(uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """World points (B, N, 3) at continuous pixel positions ``uv`` (B, N, 2) with planar depth (B, N)."""
    check_shape("depth", depth, (uv.shape[0], uv.shape[1]))
    check_shape("c2w", c2w, (uv.shape[0], 4, 4))
    cam = rays(uv, K.to(uv)) * depth[..., None]
    c2w = c2w.to(cam)
    return cam @ c2w[:, :3, :3].transpose(1, 2) + c2w[:, None, :3, 3]


def unproject(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """World points (B, H*W, 3) of every pixel centre from planar depth (B, H, W)."""
    check_shape("depth", depth, (None, None, None))
    check_shape("c2w", c2w, (depth.shape[0], 4, 4))
    b, h, w = depth.shape
    uv = pixel_grid(h, w, depth.device, depth.dtype).expand(b, -1, -1)
    return lift(uv, depth.reshape(b, -1), K, c2w)


def project(points: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(uv (B, N, 2) continuous pixels, z (B, N) planar depth) of world points (B, N, 3) in a camera.

    Points at z ~ 0 get finite but meaningless uv; callers keep only points with z > 0.
    """
    check_shape("points", points, (None, None, 3))
    check_shape("K", K, (points.shape[0], 3, 3))
    check_shape("c2w", c2w, (points.shape[0], 4, 4))
    R = c2w[:, :3, :3]
    cam = (points - c2w[:, None, :3, 3]) @ R  # world -> camera: R^T (p - t), rows as points
    z = cam[..., 2]
    safe = torch.where(z.abs() > 1e-8, z, torch.full_like(z, 1e-8))
    u = cam[..., 0] / safe * K[:, 0, 0, None] + K[:, 0, 2, None]
    v = cam[..., 1] / safe * K[:, 1, 1, None] + K[:, 1, 2, None]
    return torch.stack([u, v], dim=-1), z


def ray_angle_deg(points: torch.Tensor, c2w_a: torch.Tensor, c2w_b: torch.Tensor) -> torch.Tensor:
    """Angle (B, N) in degrees at each point between the directions to two camera centres."""
    da = F.normalize(c2w_a[:, None, :3, 3] - points, dim=-1)
    db = F.normalize(c2w_b[:, None, :3, 3] - points, dim=-1)
    return torch.rad2deg(torch.acos((da * db).sum(-1).clamp(-1.0, 1.0)))
