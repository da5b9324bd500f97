"""Camera conventions, intrinsics, poses and camera sampling: the one place that defines them.

Conventions (every stage and every stored file uses these):

* **World frame**: right-handed, **+z up** (Blender's). Objects are normalised so the largest side of the
  bounding box is 1 and its centre is the origin.
* **OpenCV camera frame** (what ``c2w`` / ``w2c`` mean everywhere in this project): x right, y down,
  z forward (the viewing direction). ``c2w`` is a 4x4 rigid matrix mapping camera coordinates to world
  coordinates; ``w2c`` is its inverse.
* **Blender camera frame** (``blender_matrix_world``, stored for Zero-1-to-3-style loaders): x right, y up,
  looking down -z. ``c2w_opencv = matrix_world @ diag(1, -1, -1, 1)``.
* **Intrinsics** ``K`` (3x3, pixels) use continuous pixel coordinates: the image spans ``[0, W] x [0, H]``,
  pixel ``(i, j)`` (column, row) covers ``[i, i+1] x [j, j+1]`` with its centre at ``(i + 0.5, j + 0.5)``.
  Blender with ``sensor_fit='HORIZONTAL'`` gives ``fx = fy = lens / sensor_width * W`` and
  ``(cx, cy) = (W / 2, H / 2)``, matching ``bpy_extras.object_utils.world_to_camera_view``.
* **Depth** is planar z-depth in the OpenCV camera frame (distance along the optical axis, not along the ray).
* **Spherical coordinates** of a camera centre: azimuth in degrees measured in the xy-plane from +x toward +y,
  elevation in degrees above the xy-plane, radius in world units; cameras look at the origin with world +z up
  in the image.

All functions take and return float64 numpy arrays and accept leading batch dimensions where noted; projection
and lifting are numpy views of the batched torch implementation in :mod:`invs.geometry`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Flip between the OpenCV and Blender camera frames (its own inverse).
BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])

#: Radius of the sphere that bounds a unit-normalised object (half the diagonal of the unit cube).
BOUNDING_RADIUS = math.sqrt(3.0) / 2.0

#: Zero-1-to-3's camera: a 35 mm lens on a 32 mm wide sensor (horizontal FOV ~49.13 degrees).
ZERO123_LENS_MM = 35.0
ZERO123_SENSOR_MM = 32.0


def _check_matrix(m: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape[-2:] != shape:
        raise ValueError(f"{name} must have shape (..., {shape[0]}, {shape[1]}), got {m.shape}")
    return m


# --------------------------------------------------------------------------------------------- intrinsics


def intrinsics_from_lens(lens_mm: float, sensor_width_mm: float, width: int, height: int) -> np.ndarray:
    """K (3x3, pixels) of a Blender camera with ``sensor_fit='HORIZONTAL'`` rendering ``width x height``."""
    if lens_mm <= 0 or sensor_width_mm <= 0 or width <= 0 or height <= 0:
        raise ValueError("lens, sensor width, width and height must all be positive")
    f = lens_mm / sensor_width_mm * width
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def lens_from_intrinsics(K: np.ndarray, sensor_width_mm: float, width: int) -> float:
    """Inverse of :func:`intrinsics_from_lens`: the focal length in mm for a given sensor width."""
    K = _check_matrix(K, (3, 3), "K")
    return float(K[0, 0] / width * sensor_width_mm)


def intrinsics_from_fov(fov_x_deg: float, width: int, height: int) -> np.ndarray:
    """K (3x3, pixels) with square pixels, principal point at the image centre, horizontal FOV in degrees."""
    if not 0.0 < fov_x_deg < 180.0:
        raise ValueError(f"horizontal FOV must lie in (0, 180) degrees, got {fov_x_deg}")
    f = width / (2.0 * math.tan(math.radians(fov_x_deg) / 2.0))
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def fov_from_intrinsics(K: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """(horizontal, vertical) field of view in degrees."""
    K = _check_matrix(K, (3, 3), "K")
    fx = math.degrees(2.0 * math.atan(width / (2.0 * K[0, 0])))
    fy = math.degrees(2.0 * math.atan(height / (2.0 * K[1, 1])))
    return fx, fy


def scale_intrinsics(K: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """K for the same camera after resizing the image by (sx, sy) (continuous-coordinate convention)."""
    K = _check_matrix(K, (3, 3), "K").copy()
    sy = sx if sy is None else sy
    K[..., 0, :] *= sx
    K[..., 1, :] *= sy
    return K


def min_radius_to_fit(fov_deg: float, bounding_radius: float = BOUNDING_RADIUS) -> float:
    """Smallest camera distance at which a sphere of ``bounding_radius`` at the origin fits a ``fov_deg`` cone.

    The default radius bounds a unit cube (the normalised object), so at Zero-1-to-3's 49.1 degrees an object
    is only guaranteed to fit from about 2.08 units away.
    """
    return bounding_radius / math.sin(math.radians(fov_deg) / 2.0)


# --------------------------------------------------------------------------------------------- extrinsics


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid 4x4 transforms (rotation + translation), batched over leading dimensions."""
    T = _check_matrix(T, (4, 4), "T")
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def blender_to_opencv_c2w(matrix_world: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world from a Blender camera ``matrix_world`` (without scale)."""
    return _check_matrix(matrix_world, (4, 4), "matrix_world") @ BLENDER_TO_OPENCV


def opencv_c2w_to_blender(c2w: np.ndarray) -> np.ndarray:
    """Blender camera ``matrix_world`` from an OpenCV camera-to-world matrix."""
    return _check_matrix(c2w, (4, 4), "c2w") @ BLENDER_TO_OPENCV


def camera_center(c2w: np.ndarray) -> np.ndarray:
    """World position of the camera centre, shape (..., 3)."""
    return _check_matrix(c2w, (4, 4), "c2w")[..., :3, 3]


def look_at(
    eye: Sequence[float], target: Sequence[float] = (0.0, 0.0, 0.0), up: Sequence[float] = (0.0, 0.0, 1.0)
) -> np.ndarray:
    """OpenCV c2w of a camera at ``eye`` looking at ``target`` with ``up`` pointing up in the image.

    When the view direction is parallel to ``up`` (a camera straight above or below), world +y is used as the
    image-up hint instead, so the pose stays well defined.
    """
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    norm = np.linalg.norm(forward)
    if norm < 1e-12:
        raise ValueError("look_at: eye and target coincide")
    forward /= norm
    up_v = np.asarray(up, dtype=np.float64)
    if np.linalg.norm(np.cross(forward, up_v)) < 1e-9:
        up_v = np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, up_v)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0] = right
    c2w[:3, 1] = down
    c2w[:3, 2] = forward
    c2w[:3, 3] = eye
    return c2w


def spherical_to_position(azimuth_deg: float, elevation_deg: float, radius: float) -> np.ndarray:
    """Camera centre (3,) from azimuth (from +x toward +y), elevation (above the xy-plane) and radius."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def position_to_spherical(position: Sequence[float]) -> tuple[float, float, float]:
    """Inverse of :func:`spherical_to_position`: (azimuth in [0, 360), elevation in [-90, 90], radius)."""
    x, y, z = (float(v) for v in position)
    radius = math.sqrt(x * x + y * y + z * z)
    if radius < 1e-12:
        raise ValueError("position_to_spherical: the origin has no direction")
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, z / radius))))
    azimuth = math.degrees(math.atan2(y, x)) % 360.0
    return azimuth, elevation, radius


def pose_from_spherical(azimuth_deg: float, elevation_deg: float, radius: float) -> np.ndarray:
    """OpenCV c2w of a camera on the sphere looking at the origin, world +z up in the image."""
    return look_at(spherical_to_position(azimuth_deg, elevation_deg, radius))


# --------------------------------------------------------------------------------------------- projection


def _torch(*arrays: np.ndarray) -> list[Any]:
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))[None] for a in arrays]


def project_points(points_world: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points (N, 3) to continuous pixel coordinates (N, 2) and planar depth (N,).

    A numpy view of :func:`invs.geometry.project`.
    """
    from invs.geometry import project

    pts = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    uv, z = project(*_torch(pts, K, _check_matrix(c2w, (4, 4), "c2w")))
    return uv[0].numpy(), z[0].numpy()


def pixel_bounds(
    points_world: np.ndarray, K: np.ndarray, c2w: np.ndarray, width: int, height: int, margin: int = 0
) -> tuple[int, int, int, int] | None:
    """The pixel rectangle ``(x0, y0, x1, y1)`` (x1, y1 exclusive; clamped to the image) that holds the projections
    of ``points_world`` (N, 3) grown by ``margin`` pixels, or None when a point is not in front of the camera
    (its projection is unbounded). Pure numpy (it runs inside Blender too)."""
    c2w = _check_matrix(c2w, (4, 4), "c2w")
    cam = (np.asarray(points_world, dtype=np.float64).reshape(-1, 3) - c2w[:3, 3]) @ c2w[:3, :3]
    if len(cam) == 0 or (cam[:, 2] <= 1e-9).any():
        return None
    uv = cam[:, :2] / cam[:, 2:] * np.diag(K)[:2] + np.asarray(K)[:2, 2]
    x0, y0 = np.floor(uv.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(uv.max(axis=0)).astype(int) + margin
    return max(int(x0), 0), max(int(y0), 0), min(int(x1), width), min(int(y1), height)


def pixel_centers(width: int, height: int) -> np.ndarray:
    """Continuous coordinates (H, W, 2) of every pixel centre, as (u, v) = (column + 0.5, row + 0.5)."""
    import torch

    from invs.geometry import pixel_grid

    return pixel_grid(height, width, dtype=torch.float64).reshape(height, width, 2).numpy()


def unproject_depth(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """World points (H, W, 3) of every pixel centre from planar z-depth (H, W) in the OpenCV camera.

    A numpy view of :func:`invs.geometry.unproject`.
    """
    from invs.geometry import unproject

    depth = np.asarray(depth, dtype=np.float64)
    h, w = depth.shape
    return unproject(*_torch(depth, K, _check_matrix(c2w, (4, 4), "c2w")))[0].reshape(h, w, 3).numpy()


def ray_depth_to_planar(ray_depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Convert distance along each pixel's ray (H, W) to planar z-depth (H, W)."""
    from invs.geometry import pixel_rays

    ray_depth = np.asarray(ray_depth, dtype=np.float64)
    h, w = ray_depth.shape
    (K_t,) = _torch(K)
    return ray_depth / pixel_rays(K_t, h, w)[0].norm(dim=-1).reshape(h, w).numpy()


# --------------------------------------------------------------------------------------------- sampling


def object_seed(uid: str, seed: int) -> int:
    """A 63-bit seed derived from an object's uid and a run seed: the same object always gets the same views."""
    digest = hashlib.sha256(f"{seed}:{uid}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class CameraSpec:
    """One view on the sphere around the object; ``c2w`` follows from the three numbers (see :func:`pose`)."""

    azimuth_deg: float
    elevation_deg: float
    radius: float

    def position(self) -> np.ndarray:
        return spherical_to_position(self.azimuth_deg, self.elevation_deg, self.radius)

    def c2w(self) -> np.ndarray:
        """OpenCV camera-to-world pose looking at the origin."""
        return pose_from_spherical(self.azimuth_deg, self.elevation_deg, self.radius)


def sample_cameras(
    n: int,
    rng: np.random.Generator,
    radius_range: tuple[float, float],
    elevation_range_deg: tuple[float, float] = (-90.0, 90.0),
) -> list[CameraSpec]:
    """``n`` views distributed uniformly over the area of the spherical band ``elevation_range_deg``.

    Uniform area means ``sin(elevation)`` is uniform (not the elevation itself, and not normalised points of a
    cube, which over-sample the cube's corners). Azimuth is uniform in [0, 360); radius is uniform in
    ``radius_range``.
    """
    lo, hi = elevation_range_deg
    if not -90.0 <= lo <= hi <= 90.0:
        raise ValueError(f"elevation range must satisfy -90 <= lo <= hi <= 90, got {elevation_range_deg}")
    r_lo, r_hi = radius_range
    if not 0.0 < r_lo <= r_hi:
        raise ValueError(f"radius range must satisfy 0 < lo <= hi, got {radius_range}")
    s = rng.uniform(math.sin(math.radians(lo)), math.sin(math.radians(hi)), size=n)
    elevation = np.degrees(np.arcsin(np.clip(s, -1.0, 1.0)))
    azimuth = rng.uniform(0.0, 360.0, size=n)
    radius = rng.uniform(r_lo, r_hi, size=n)
    return [CameraSpec(float(a), float(e), float(r)) for a, e, r in zip(azimuth, elevation, radius, strict=True)]


def ring_cameras(n: int, elevation_deg: float, radius: float, azimuth_offset_deg: float = 0.0) -> list[CameraSpec]:
    """``n`` views evenly spaced in azimuth at one elevation and radius (fixed rings for evaluation)."""
    if n <= 0:
        raise ValueError("a ring needs at least one view")
    return [CameraSpec((azimuth_offset_deg + 360.0 * i / n) % 360.0, elevation_deg, radius) for i in range(n)]


def sample_object_cameras(
    uid: str,
    seed: int,
    n: int,
    radius_range: tuple[float, float],
    elevation_range_deg: tuple[float, float],
) -> list[CameraSpec]:
    """:func:`sample_cameras` seeded by (uid, seed): a re-run renders exactly the same views of each object."""
    return sample_cameras(n, np.random.default_rng(object_seed(uid, seed)), radius_range, elevation_range_deg)


# --------------------------------------------------------------------------------------------- relative pose


def view_specs(config: Any, uid: str) -> list[CameraSpec]:
    """The views the render stage renders of object ``uid`` under ``config`` (an :class:`invs.config.Config`): a
    fixed ring (``camera.sampling: ring``), or sampled uniformly by area, seeded by (uid, ``render.seed``)."""
    c, r = config.camera, config.render
    if c.sampling == "ring":
        return ring_cameras(r.views, c.ring_elevation_deg, sum(c.radius_range) / 2)
    return sample_object_cameras(uid, r.seed, r.views, c.radius_range, c.elevation_range_deg)


def zero123_relative_pose(c2w_src: np.ndarray, c2w_tgt: np.ndarray) -> np.ndarray:
    """Zero-1-to-3's relative camera feature ``[d_polar, sin d_azimuth, cos d_azimuth, d_radius]`` (4,).

    Polar angle is measured from world +z (radians), azimuth in the xy-plane (radians), radius in world units;
    each difference is target minus source, computed from the camera centres of the two OpenCV c2w matrices
    (as Zero-1-to-3's ``get_T`` does from Blender's matrices; the centres are the same in both conventions).
    """

    def polar_az_r(c2w: np.ndarray) -> tuple[float, float, float]:
        x, y, z = camera_center(c2w)
        r = math.sqrt(x * x + y * y + z * z)
        return math.atan2(math.sqrt(x * x + y * y), z), math.atan2(y, x), r

    th_s, az_s, r_s = polar_az_r(c2w_src)
    th_t, az_t, r_t = polar_az_r(c2w_tgt)
    d_az = (az_t - az_s) % (2.0 * math.pi)
    return np.array([th_t - th_s, math.sin(d_az), math.cos(d_az), r_t - r_s])


def relative_pose(c2w_src: np.ndarray, c2w_tgt: np.ndarray) -> np.ndarray:
    """4x4 transform taking source-camera coordinates to target-camera coordinates (both OpenCV)."""
    return invert_rigid(c2w_tgt) @ _check_matrix(c2w_src, (4, 4), "c2w_src")


def angle_between_views_deg(c2w_a: np.ndarray, c2w_b: np.ndarray) -> float:
    """Angle in degrees between the directions from the origin to two camera centres."""
    a, b = camera_center(c2w_a), camera_center(c2w_b)
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))
