"""Camera conventions, pinned by round trips, properties and Blender's own projection."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invs import cameras as C

azimuths = st.floats(0.0, 359.999)
elevations = st.floats(-89.0, 89.0)
radii = st.floats(0.5, 10.0)


def random_rigid(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    T = np.eye(4)
    T[:3, :3] = q
    T[:3, 3] = rng.normal(size=3) * 3
    return T


# ------------------------------------------------------------------------------------------------ intrinsics


def test_zero123_camera_fov_is_49_1_degrees() -> None:
    K = C.intrinsics_from_lens(C.ZERO123_LENS_MM, C.ZERO123_SENSOR_MM, 256, 256)
    fx, fy = C.fov_from_intrinsics(K, 256, 256)
    assert fx == pytest.approx(49.134, abs=1e-3)
    assert fy == pytest.approx(fx)
    assert K[0, 2] == 128 and K[1, 2] == 128


@given(lens=st.floats(5, 300), sensor=st.floats(5, 70), w=st.integers(8, 4096), h=st.integers(8, 4096))
def test_lens_intrinsics_round_trip(lens: float, sensor: float, w: int, h: int) -> None:
    K = C.intrinsics_from_lens(lens, sensor, w, h)
    assert C.lens_from_intrinsics(K, sensor, w) == pytest.approx(lens, rel=1e-12)
    fov_x, _ = C.fov_from_intrinsics(K, w, h)
    assert np.allclose(C.intrinsics_from_fov(fov_x, w, h), K, rtol=1e-9)


def test_scaling_intrinsics_keeps_the_principal_point_at_the_centre() -> None:
    K = C.intrinsics_from_lens(35, 32, 512, 512)
    K2 = C.scale_intrinsics(K, 0.5)
    assert np.allclose(K2, C.intrinsics_from_lens(35, 32, 256, 256))


@pytest.mark.parametrize("bad", [(0, 32, 10, 10), (35, -1, 10, 10), (35, 32, 0, 10)])
def test_intrinsics_reject_nonsense(bad: tuple[float, float, int, int]) -> None:
    with pytest.raises(ValueError):
        C.intrinsics_from_lens(*bad)


# ------------------------------------------------------------------------------------------------ extrinsics


@settings(max_examples=50)
@given(seed=st.integers(0, 2**32 - 1))
def test_blender_opencv_round_trip_and_inverse(seed: int) -> None:
    mw = random_rigid(np.random.default_rng(seed))
    c2w = C.blender_to_opencv_c2w(mw)
    assert np.allclose(C.opencv_c2w_to_blender(c2w), mw)
    assert np.allclose(C.invert_rigid(c2w) @ c2w, np.eye(4), atol=1e-10)
    # Same centre, flipped y and z axes: Blender looks down -z, OpenCV down +z.
    assert np.allclose(c2w[:3, 3], mw[:3, 3])
    assert np.allclose(c2w[:3, 2], -mw[:3, 2]) and np.allclose(c2w[:3, 1], -mw[:3, 1])


def test_invert_rigid_is_batched() -> None:
    rng = np.random.default_rng(0)
    T = np.stack([random_rigid(rng) for _ in range(5)])
    assert np.allclose(C.invert_rigid(T) @ T, np.broadcast_to(np.eye(4), (5, 4, 4)), atol=1e-10)
    with pytest.raises(ValueError, match="shape"):
        C.invert_rigid(np.eye(3))


@settings(max_examples=100)
@given(az=azimuths, el=elevations, r=radii)
def test_spherical_pose_looks_at_origin_with_world_up_in_the_image(az: float, el: float, r: float) -> None:
    c2w = C.pose_from_spherical(az, el, r)
    R = c2w[:3, :3]
    assert np.allclose(R.T @ R, np.eye(3), atol=1e-10) and np.linalg.det(R) == pytest.approx(1.0)
    assert np.allclose(C.camera_center(c2w), C.spherical_to_position(az, el, r))
    # The optical axis (+z, OpenCV) points at the origin: it projects to the principal point.
    K = C.intrinsics_from_lens(35, 32, 64, 64)
    uv, z = C.project_points(np.zeros((1, 3)), K, c2w)
    assert np.allclose(uv, [[32, 32]], atol=1e-8) and z[0] == pytest.approx(r)
    # World +z appears upwards in the image (smaller v) and there is no roll: image x is horizontal.
    uv_up, _ = C.project_points(np.array([[0, 0, 0.01]]), K, c2w)
    assert uv_up[0, 1] < 32
    assert abs(R[2, 0]) < 1e-9  # the camera's x axis has no world-z component


@given(az=azimuths, el=elevations, r=radii)
def test_spherical_round_trip(az: float, el: float, r: float) -> None:
    az2, el2, r2 = C.position_to_spherical(C.spherical_to_position(az, el, r))
    assert el2 == pytest.approx(el, abs=1e-9) and r2 == pytest.approx(r)
    assert math.isclose((az2 - az + 180) % 360 - 180, 0.0, abs_tol=1e-7)


@pytest.mark.parametrize("el", [90.0, -90.0])
def test_look_at_from_the_poles_stays_well_defined(el: float) -> None:
    c2w = C.pose_from_spherical(0.0, el, 2.0)
    assert np.all(np.isfinite(c2w))
    assert np.allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-12)
    assert np.allclose(c2w[:3, 2], [0, 0, -np.sign(el)])


# ------------------------------------------------------------------------------------------------ projection


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1))
def test_unproject_then_project_returns_pixel_centres(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c2w = C.pose_from_spherical(rng.uniform(0, 360), rng.uniform(-80, 80), rng.uniform(1.5, 3))
    K = C.intrinsics_from_lens(35, 32, 24, 16)
    depth = rng.uniform(0.5, 4.0, size=(16, 24))
    pts = C.unproject_depth(depth, K, c2w)
    uv, z = C.project_points(pts.reshape(-1, 3), K, c2w)
    assert np.allclose(uv.reshape(16, 24, 2), C.pixel_centers(24, 16), atol=1e-8)
    assert np.allclose(z.reshape(16, 24), depth)


def test_ray_depth_to_planar_on_a_fronto_parallel_plane() -> None:
    K = C.intrinsics_from_lens(35, 32, 32, 32)
    c2w = np.eye(4)
    planar = np.full((32, 32), 5.0)
    pts = C.unproject_depth(planar, K, c2w)
    ray = np.linalg.norm(pts, axis=-1)
    assert ray.max() > 5.0 * 1.05  # corners are further along their rays
    assert np.allclose(C.ray_depth_to_planar(ray, K), planar)


def test_min_radius_to_fit_keeps_every_cube_corner_in_frame() -> None:
    fov = C.fov_from_intrinsics(C.intrinsics_from_lens(35, 32, 256, 256), 256, 256)[0]
    r = C.min_radius_to_fit(fov)
    assert r == pytest.approx(2.083, abs=1e-3)
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    K = C.intrinsics_from_lens(35, 32, 256, 256)
    rng = np.random.default_rng(1)
    for cam in C.sample_cameras(200, rng, (r, r), (-90, 90)):
        uv, _ = C.project_points(corners, K, cam.c2w())
        assert np.all((uv >= -1e-6) & (uv <= 256 + 1e-6))
    # Zero-1-to-3's closest radius crops some views.
    cropped = 0
    for cam in C.sample_cameras(200, rng, (1.5, 1.5), (-90, 90)):
        uv, _ = C.project_points(corners, K, cam.c2w())
        cropped += bool(np.any((uv < 0) | (uv > 256)))
    assert cropped > 0


# ------------------------------------------------------------------------------------------------ sampling


def test_sampling_is_uniform_over_the_sphere_area() -> None:
    cams = C.sample_cameras(40000, np.random.default_rng(0), (1.0, 1.0), (-90.0, 90.0))
    z = np.array([c.position()[2] for c in cams])
    # Archimedes: z is uniform on [-1, 1] for area-uniform points; check the histogram.
    counts, _ = np.histogram(z, bins=10, range=(-1, 1))
    assert np.all(np.abs(counts / len(z) - 0.1) < 0.01)
    # A cube-normalised sampler would over-sample the diagonals: x/y/z marginals would not be uniform.
    az = np.array([c.azimuth_deg for c in cams])
    counts, _ = np.histogram(az, bins=8, range=(0, 360))
    assert np.all(np.abs(counts / len(az) - 0.125) < 0.01)


def test_sampling_respects_the_band_and_radius_range() -> None:
    cams = C.sample_cameras(2000, np.random.default_rng(1), (2.2, 2.6), (-20.0, 60.0))
    el = np.array([c.elevation_deg for c in cams])
    r = np.array([np.linalg.norm(c.position()) for c in cams])
    assert el.min() >= -20 and el.max() <= 60 and el.max() > 55 and el.min() < -15
    assert r.min() >= 2.2 and r.max() <= 2.6
    with pytest.raises(ValueError):
        C.sample_cameras(1, np.random.default_rng(0), (2.6, 2.2))
    with pytest.raises(ValueError):
        C.sample_cameras(1, np.random.default_rng(0), (2, 3), (10, -10))


def test_per_object_sampling_is_seeded_by_uid_and_seed() -> None:
    a = C.sample_object_cameras("obj-a", 0, 6, (2.2, 2.6), (-20, 60))
    assert a == C.sample_object_cameras("obj-a", 0, 6, (2.2, 2.6), (-20, 60))
    assert a != C.sample_object_cameras("obj-b", 0, 6, (2.2, 2.6), (-20, 60))
    assert a != C.sample_object_cameras("obj-a", 1, 6, (2.2, 2.6), (-20, 60))
    # Asking for more views extends the same sequence only per-array; the seed itself is stable across runs.
    assert C.object_seed("obj-a", 0) == C.object_seed("obj-a", 0) < 2**63


def test_rings_are_evenly_spaced() -> None:
    ring = C.ring_cameras(8, 20.0, 2.5, azimuth_offset_deg=10)
    assert [c.azimuth_deg for c in ring] == pytest.approx([10 + 45 * i for i in range(8)])
    assert {c.elevation_deg for c in ring} == {20.0}
    with pytest.raises(ValueError):
        C.ring_cameras(0, 0, 1)


# ------------------------------------------------------------------------------------------------ relative pose


def test_zero123_relative_pose_matches_its_definition() -> None:
    src = C.pose_from_spherical(30.0, 10.0, 2.0)
    tgt = C.pose_from_spherical(300.0, 40.0, 2.5)
    d = C.zero123_relative_pose(src, tgt)
    # Polar angle from +z: 90 - elevation. Azimuth difference (300 - 30) mod 360 = 270 degrees.
    assert d[0] == pytest.approx(math.radians((90 - 40) - (90 - 10)))
    assert d[1] == pytest.approx(math.sin(math.radians(270)))
    assert d[2] == pytest.approx(math.cos(math.radians(270)), abs=1e-12)
    assert d[3] == pytest.approx(0.5)
    assert np.allclose(C.zero123_relative_pose(src, src), [0, 0, 1, 0])


def test_relative_pose_maps_source_camera_points_into_the_target_camera() -> None:
    src = C.pose_from_spherical(0.0, 0.0, 2.0)
    tgt = C.pose_from_spherical(90.0, 0.0, 2.0)
    p_world = np.array([0.1, -0.2, 0.3, 1.0])
    p_src = C.invert_rigid(src) @ p_world
    assert np.allclose(C.relative_pose(src, tgt) @ p_src, C.invert_rigid(tgt) @ p_world)
    assert C.angle_between_views_deg(src, tgt) == pytest.approx(90.0)


# ------------------------------------------------------------------------------------------------ Blender


@pytest.mark.blender
def test_conventions_match_blenders_own_projection() -> None:
    """Our K and c2w project points exactly where Blender's camera does (world_to_camera_view)."""
    bpy = pytest.importorskip("bpy")
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Matrix, Vector

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    W, H = 320, 240
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.render.resolution_percentage = 100
    cam_data = bpy.data.cameras.new("cam")
    cam_data.lens, cam_data.sensor_width, cam_data.sensor_fit = 35.0, 32.0, "HORIZONTAL"
    cam = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    K = C.intrinsics_from_lens(35.0, 32.0, W, H)
    rng = np.random.default_rng(0)
    for spec in C.sample_cameras(5, rng, (2.0, 3.0), (-60, 60)):
        c2w = spec.c2w()
        cam.matrix_world = Matrix(C.opencv_c2w_to_blender(c2w).tolist())
        bpy.context.view_layer.update()
        assert np.allclose(np.array(cam.matrix_world), C.opencv_c2w_to_blender(c2w), atol=1e-6)
        pts = rng.uniform(-0.5, 0.5, size=(20, 3))
        uv, z = C.project_points(pts, K, c2w)
        for p, (u, v), depth in zip(pts, uv, z, strict=True):
            ndc = world_to_camera_view(scene, cam, Vector(p.tolist()))
            # Blender: x right from the left edge, y up from the bottom edge, z = planar depth.
            assert ndc.x * W == pytest.approx(u, abs=1e-3)
            assert (1.0 - ndc.y) * H == pytest.approx(v, abs=1e-3)
            assert ndc.z == pytest.approx(depth, abs=1e-5)


def test_pixel_bounds_hold_every_projection_tightly_and_refuse_points_behind() -> None:
    cameras = C
    K = cameras.intrinsics_from_fov(49.1, 320, 240)
    c2w = cameras.pose_from_spherical(30.0, 20.0, 2.0)
    cube = np.array([[x, y, z] for x in (-0.25, 0.25) for y in (-0.15, 0.15) for z in (-0.2, 0.2)])
    uv, _ = cameras.project_points(cube, K, c2w)
    x0, y0, x1, y1 = cameras.pixel_bounds(cube, K, c2w, 320, 240, margin=2)
    assert (uv[:, 0] >= x0 + 2).all() and (uv[:, 0] <= x1 - 2).all() and (uv[:, 1] >= y0 + 2).all()
    assert (uv[:, 1] <= y1 - 2).all()
    assert uv[:, 0].min() - (x0 + 2) < 1 and (x1 - 2) - uv[:, 0].max() < 1  # tight: within a pixel
    behind = cameras.camera_center(c2w) * 2  # beyond the camera, seen from the object
    assert cameras.pixel_bounds(np.vstack([cube, behind]), K, c2w, 320, 240) is None
    assert cameras.pixel_bounds(cube * 20, K, c2w, 320, 240) is None  # the camera inside: unbounded
