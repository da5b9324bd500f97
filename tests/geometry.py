"""Test helpers: exact point-to-mesh distances (brute force, vectorised) for geometry checks on renders."""

from __future__ import annotations

import numpy as np


def _closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest points on triangles (T, 3) to points p (P, 1, 3): shape (P, T, 3) (Ericson, RTCD 5.1.5)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    denom = va + vb + vc
    with np.errstate(divide="ignore", invalid="ignore"):
        v = vb / denom
        w = vc / denom
        out = a + ab * v[..., None] + ac * w[..., None]
        # Edge and vertex regions, later conditions override earlier ones in Ericson's order reversed.
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    cond_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    out = np.where(cond_bc[..., None], b + (c - b) * t_bc[..., None], out)
    cond_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    out = np.where(cond_ac[..., None], a + ac * t_ac[..., None], out)
    cond_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    out = np.where(cond_ab[..., None], a + ab * t_ab[..., None], out)
    out = np.where(((d6 >= 0) & (d5 <= d6))[..., None], c, out)
    out = np.where(((d3 >= 0) & (d4 <= d3))[..., None], b, out)
    out = np.where(((d1 <= 0) & (d2 <= 0))[..., None], a, out)
    return out


def point_mesh_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Euclidean distance from each point (N, 3) to the nearest triangle of the mesh."""
    a, b, c = (vertices[faces[:, i]][None] for i in range(3))
    out = np.empty(len(points))
    for s in range(0, len(points), chunk):
        p = points[s : s + chunk, None, :]
        closest = _closest_on_triangles(p, a, b, c)
        out[s : s + chunk] = np.sqrt(((closest - p) ** 2).sum(-1)).min(axis=1)
    return out


def normals_from_depth(depth: np.ndarray, K: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame (OpenCV) unit normals (H, W, 3) from planar depth by central differences, facing the camera,
    and where they are defined (H, W): the pixel and its four neighbours fully covered, no depth jump (> 2%)."""
    from invs import cameras

    points = cameras.unproject_depth(depth, K, np.eye(4))
    du = np.zeros_like(points)
    dv = np.zeros_like(points)
    du[:, 1:-1] = points[:, 2:] - points[:, :-2]
    dv[1:-1] = points[2:] - points[:-2]
    n = np.cross(dv, du)  # x (right) cross y (down) is +z (away): reversed so a surface facing the camera has z < 0
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    covered = alpha == 255
    z = np.asarray(depth, dtype=np.float64)
    valid = np.zeros_like(covered)
    inner = (slice(1, -1), slice(1, -1))
    valid[inner] = covered[inner] & covered[:-2, 1:-1] & covered[2:, 1:-1] & covered[1:-1, :-2] & covered[1:-1, 2:]
    jump = np.zeros_like(covered)
    jump[inner] = (np.abs(z[2:, 1:-1] - z[:-2, 1:-1]) > 0.02 * z[inner]) | (
        np.abs(z[1:-1, 2:] - z[1:-1, :-2]) > 0.02 * z[inner]
    )
    return n, valid & ~jump
