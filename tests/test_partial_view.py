"""Partial-view geometry on analytic scenes (no Blender): the occlusion region two ways, masks, coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invs import cameras
from invs import partial_view as G

RES = 32


def sphere_view(c2w: np.ndarray, K: np.ndarray, radius: float = 0.35) -> np.ndarray:
    """Planar depth (RES, RES) of a sphere at the origin, 0 where the pixel ray misses it."""
    uv = cameras.pixel_centers(RES, RES)
    d_cam = np.stack([(uv[..., 0] - K[0, 2]) / K[0, 0], (uv[..., 1] - K[1, 2]) / K[1, 1], np.ones((RES, RES))], -1)
    dirs = d_cam @ c2w[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    o = c2w[:3, 3]
    b = dirs @ o
    disc = b * b - (o @ o - radius * radius)
    t = -b - np.sqrt(np.maximum(disc, 0))
    point_cam_z = t * (dirs @ c2w[:3, 2])
    return np.where(disc > 0, point_cam_z, 0.0)


def dilate(mask: np.ndarray, res: int = RES) -> np.ndarray:
    """3x3 binary dilation."""
    padded = np.pad(mask, 1)
    return np.any([padded[dy : dy + res, dx : dx + res] for dy in range(3) for dx in range(3)], axis=0)


def forward_region(
    depth: np.ndarray,
    K_s: np.ndarray,
    c2w_s: np.ndarray,
    K_t: np.ndarray,
    c2w_t: np.ndarray,
    sub: int = 4,
    steps: int = 96,
) -> np.ndarray:
    """The other way (the paper's epipolar lines): splat samples of everything the source cannot rule out
    (behind each visible surface point, and outside the source's view) into the target."""
    marked = np.zeros((RES, RES), bool)
    rng = np.random.default_rng(0)

    def mark(points: np.ndarray) -> None:
        uv, z = cameras.project_points(points, K_t, c2w_t)
        ok = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < RES) & (uv[:, 1] >= 0) & (uv[:, 1] < RES)
        marked[uv[ok, 1].astype(int), uv[ok, 0].astype(int)] = True

    # Behind the visible surface, along every source ray through a foreground pixel, up to the bounding sphere.
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    for dy in offsets:
        for dx in offsets:
            uv = cameras.pixel_centers(RES, RES) + np.array([dx, dy])
            fg = depth > 0
            d = np.stack(
                [(uv[..., 0] - K_s[0, 2]) / K_s[0, 0], (uv[..., 1] - K_s[1, 2]) / K_s[1, 1], np.ones((RES, RES))], -1
            )[fg]
            z0 = depth[fg]
            for s in np.linspace(0, 1, steps):
                z = z0 + s * 2 * cameras.BOUNDING_RADIUS
                pts = (d * z[:, None]) @ c2w_s[:3, :3].T + c2w_s[:3, 3]
                mark(pts[np.linalg.norm(pts, axis=1) <= cameras.BOUNDING_RADIUS])
    # Everything inside the bounding sphere that the source does not see at all (outside its image).
    pts = rng.uniform(-cameras.BOUNDING_RADIUS, cameras.BOUNDING_RADIUS, size=(400000, 3))
    pts = pts[np.linalg.norm(pts, axis=1) <= cameras.BOUNDING_RADIUS]
    uv, z = cameras.project_points(pts, K_s, c2w_s)
    mark(pts[(z <= 0) | (uv[:, 0] < 0) | (uv[:, 0] >= RES) | (uv[:, 1] < 0) | (uv[:, 1] >= RES)])
    return marked


@pytest.mark.parametrize(("azimuth", "radius_s"), [(40.0, 2.4), (100.0, 2.4), (60.0, 1.5)])
def test_occlusion_region_agrees_with_splatted_epipolar_lines(azimuth: float, radius_s: float) -> None:
    K = cameras.intrinsics_from_lens(35, 32, RES, RES)
    c2w_s = cameras.pose_from_spherical(10.0, 20.0, radius_s)
    c2w_t = cameras.pose_from_spherical(10.0 + azimuth, 5.0, 2.4)
    depth = sphere_view(c2w_s, K)
    T = lambda a: torch.from_numpy(np.asarray(a, np.float32))[None]  # noqa: E731
    ours = G.occlusion_region(T(depth), T(K), T(c2w_s), T(K), T(c2w_t), RES, RES)[0].numpy()
    other = forward_region(depth, K, c2w_s, K, c2w_t)
    assert other.sum() > 100 and (ours & other).sum() / (ours | other).sum() > 0.8
    # Ours tests each pixel's centre ray, the other marks any pixel a sample lands in, and ours dilates the source
    # silhouette: they may differ only in a one-pixel band along the region's outline, never beyond it.
    assert not (ours & ~dilate(other)).any() and not (other & ~dilate(ours)).any()


def test_a_fully_seen_plane_is_all_known_or_covered() -> None:
    """Target == source: every covered pixel keeps (mask 0), everything off the object is known background."""
    K = cameras.intrinsics_from_lens(35, 32, RES, RES)
    c2w = cameras.pose_from_spherical(0.0, 10.0, 2.4)
    depth = sphere_view(c2w, K)
    T = lambda a: torch.from_numpy(np.asarray(a, np.float32))[None]  # noqa: E731
    rgb = torch.rand(1, 3, RES, RES)
    view = G.partial_view(rgb, T(depth), T(K), T(c2w), T(K), T(c2w), RES, RES)
    fg = torch.from_numpy(depth > 0)[None]
    assert torch.equal(view.visible, fg)
    assert torch.allclose(view.partial[:, :, fg[0]], rgb[:, :, fg[0]], atol=1e-5)
    assert float(view.mask[fg].max()) < 1e-3
    assert not bool(view.region[~fg].any()) or int(view.region[~fg].sum()) < 0.1 * int((~fg).sum())
    assert bool((view.mask[~view.region] == 0).all()) and bool((view.partial[:, :, ~view.region[0]] == 1).all())


def rect_scene(
    c2w: np.ndarray, K: np.ndarray, res: int, rects: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """(planar depth (res, res), world points (res, res, 3)) of the nearest of some rectangles ``(centre, half
    axis u, half axis v)`` along every pixel centre's ray; depth 0 where all are missed."""
    uv = cameras.pixel_centers(res, res)
    d_cam = np.stack([(uv[..., 0] - K[0, 2]) / K[0, 0], (uv[..., 1] - K[1, 2]) / K[1, 1], np.ones((res, res))], -1)
    dirs, o = d_cam @ c2w[:3, :3].T, c2w[:3, 3]  # rays o + t * dirs, t = planar depth
    best = np.full((res, res), np.inf)
    for centre, hu, hv in rects:
        normal = np.cross(hu, hv)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((centre - o) @ normal) / (dirs @ normal)
        rel = o + t[..., None] * dirs - centre
        inside = (np.abs(rel @ hu) <= hu @ hu) & (np.abs(rel @ hv) <= hv @ hv) & (t > 0)
        best = np.where(inside & (t < best), t, best)
    depth = np.where(np.isfinite(best), best, 0.0)
    return depth, o + depth[..., None] * dirs


def plane_colour(points: np.ndarray) -> np.ndarray:
    """An RGB texture affine in world x and y, (..., 3) -> (3, ...)."""
    return np.stack([0.5 + points[..., 0], 0.5 + points[..., 1], np.full(points.shape[:-1], 0.25)])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_a_magnifying_plane_is_covered_without_cracks(device: str) -> None:
    """The source sees a textured floor at 75 degrees from its normal, the target from above and nearer: the
    target pixels whose floor point lies between four source samples are covered (all but where the floor is two
    samples deep: a lone steep step may as well join two surfaces), with the texture (affine on the floor)
    interpolated exactly; the former point coverage leaves cracks there."""
    res = 64
    K = cameras.intrinsics_from_lens(35, 32, res, res)
    c2w_s, c2w_t = cameras.pose_from_spherical(0.0, 15.0, 2.6), cameras.pose_from_spherical(20.0, 80.0, 2.2)
    floor = [(np.zeros(3), np.array([0.45, 0.0, 0.0]), np.array([0.0, 0.45, 0.0]))]
    depth_s, points_s = rect_scene(c2w_s, K, res, floor)
    depth_t, points_t = rect_scene(c2w_t, K, res, floor)
    T = lambda a: torch.from_numpy(np.asarray(a, np.float32))[None].to(device)  # noqa: E731
    rgb = T(plane_colour(points_s))
    args = (rgb, T(depth_s), T(K), T(c2w_s), T(K), T(c2w_t), res, res)
    mesh, points = G.warp_to_target(*args), G.warp_to_target(*args, cover="points")
    # Target floor pixels inside a 2x2 block of source floor samples.
    uv, _ = cameras.project_points(points_t.reshape(-1, 3), K, c2w_s)
    col, row = np.floor(uv[:, 0] - 0.5).astype(int), np.floor(uv[:, 1] - 0.5).astype(int)
    ok = (col >= 0) & (col < res - 1) & (row >= 0) & (row < res - 1)
    col, row = np.where(ok, col, 0), np.where(ok, row, 0)
    fg = depth_s > 0
    between = ok & fg[row, col] & fg[row + 1, col] & fg[row, col + 1] & fg[row + 1, col + 1]
    between = torch.from_numpy((between & (depth_t.reshape(-1) > 0)).reshape(res, res)).to(device)
    assert int(between.sum()) > 300
    assert float(mesh.covered[0][between].float().mean()) > 0.99
    assert float(points.covered[0][between].float().mean()) < 0.8  # cracks
    expected = torch.from_numpy(plane_colour(points_t)).float().to(device)
    inside = between & mesh.covered[0]
    assert float((mesh.rgb[0] - expected).abs()[:, inside].max()) < 1e-3
    # Off the floor, at most the one-pixel fringe the footprints of the floor's edge samples may reach.
    off = torch.from_numpy(~dilate(depth_t > 0, res)).to(device)
    assert not bool(mesh.covered[0][off].any())


def test_a_depth_discontinuity_is_not_bridged() -> None:
    """A card in front of a wall: the wall strip the card hides from the source, which the target sees, is never
    kept (covered with mask < 0.5), while what the source sees is covered."""
    from preprocess.law import seen_by_source

    res = 64
    K = cameras.intrinsics_from_lens(35, 32, res, res)
    c2w_s, c2w_t = cameras.pose_from_spherical(0.0, 0.0, 2.4), cameras.pose_from_spherical(30.0, 0.0, 2.4)
    axis_u, axis_v = c2w_s[:3, 0], c2w_s[:3, 1]  # the source's right and down
    away = c2w_s[:3, 2]  # the source's viewing direction
    scene = [(0.3 * away, 0.5 * axis_u, 0.5 * axis_v), (-0.2 * away, 0.15 * axis_u, 0.15 * axis_v)]
    depth_s, _ = rect_scene(c2w_s, K, res, scene)
    depth_t, _ = rect_scene(c2w_t, K, res, scene)
    T = lambda a: torch.from_numpy(np.asarray(a, np.float32))[None]  # noqa: E731
    view = G.partial_view(torch.rand(1, 3, res, res), T(depth_s), T(K), T(c2w_s), T(K), T(c2w_t), res, res)
    seen, _ = seen_by_source(T(depth_t), T(K), T(c2w_t), T(depth_s), T(K), T(c2w_s))
    unseen = T(depth_t > 0).bool() & ~seen
    assert int(unseen.sum()) > 40  # the disoccluded strip
    assert not bool((unseen & view.visible & (view.mask < 0.5)).any())
    assert float((view.visible & seen).sum() / seen.sum()) > 0.97


def test_back_faces_are_not_covered() -> None:
    """A card seen from the front by the source and from behind by the target shows the target nothing."""
    res = 32
    K = cameras.intrinsics_from_lens(35, 32, res, res)
    c2w_s, c2w_t = cameras.pose_from_spherical(0.0, 0.0, 2.4), cameras.pose_from_spherical(150.0, 0.0, 2.4)
    card = [(np.zeros(3), 0.4 * c2w_s[:3, 0], 0.4 * c2w_s[:3, 1])]
    depth_s, _ = rect_scene(c2w_s, K, res, card)
    T = lambda a: torch.from_numpy(np.asarray(a, np.float32))[None]  # noqa: E731
    args = (torch.rand(1, 3, res, res), T(depth_s), T(K), T(c2w_s), T(K), T(c2w_t), res, res)
    assert int(G.warp_to_target(*args, cover="points").covered.sum()) > 50  # the points alone do show it
    assert not bool(G.warp_to_target(*args).covered.any())


def test_rasterised_pixels_are_the_centres_inside_each_triangle() -> None:
    """Against a brute-force inside test, on random triangles of all sizes, some partly off the image."""
    gen = torch.Generator().manual_seed(0)
    h, w, m = 24, 20, 300
    corners = torch.rand(m, 2, generator=gen) * torch.tensor([w + 8.0, h + 8.0]) - 4.0
    size = torch.rand(m, 1, 1, generator=gen) * 12.0
    uv = (corners[:, None, :] + (torch.rand(m, 3, 2, generator=gen) - 0.5) * size).reshape(-1, 2)
    z = torch.rand(3 * m, generator=gen) + 1.0
    triangles = torch.arange(3 * m).view(m, 3)
    batch = torch.randint(0, 2, (m,), generator=gen)
    frags = G.rasterize_triangles(uv, z, triangles, batch, h, w)
    got = sorted(zip(frags.pixel.tolist(), frags.corners[:, 0].tolist(), strict=True))
    centres = cameras.pixel_centers(w, h).reshape(-1, 2)
    want = []
    for k in range(m):
        p = uv[3 * k : 3 * k + 3].double().numpy()
        q = p[None] - centres[:, None]  # (HW, 3, 2)
        cross = q[:, [1, 2, 0], 0] * q[:, [2, 0, 1], 1] - q[:, [1, 2, 0], 1] * q[:, [2, 0, 1], 0]
        inside = (cross >= 0).all(1) | (cross <= 0).all(1)
        want += [(int(batch[k]) * h * w + i, 3 * k) for i in np.nonzero(inside)[0]]
    assert got == sorted(want) and len(want) > 400
    # Inverse depth at a pixel is the barycentric mix of the corners' (affine on screen), weights sum to 1.
    torch.testing.assert_close(frags.weights.sum(1), torch.ones(len(frags.pixel)))
    torch.testing.assert_close(frags.inv_depth, 1.0 / (frags.weights * z[frags.corners]).sum(1), rtol=1e-4, atol=0)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_soft_mask_mapping(device: str) -> None:
    angle = torch.tensor([[[0.0, 22.5, 45.0, 90.0, 170.0]]], device=device)
    covered = torch.tensor([[[True, True, True, True, False]]], device=device)
    region = torch.tensor([[[True, True, True, True, True]]], device=device)
    mask = G.soft_mask(covered, angle, region)
    assert torch.allclose(mask, torch.tensor([[[0.0, 0.25, 0.5, 1.0, 1.0]]], device=device))
    assert float(G.soft_mask(covered, angle, ~region)[0, 0, 4]) == 0.0
    # A covered point that far (in source depth) from its samples is raised: 0.5 at the tolerance, 1 at twice it.
    gap = torch.tensor([[[0.02, 0.01, 0.0, 0.0, 0.0]]], device=device)
    mask = G.soft_mask(covered, angle, region, depth_gap=gap, tolerance=0.02)
    assert torch.allclose(mask, torch.tensor([[[0.5, 0.25, 0.5, 1.0, 1.0]]], device=device))


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_core_unproject_then_project_returns_pixel_centres(device: str, dtype: torch.dtype) -> None:
    from invs import geometry

    specs = cameras.sample_object_cameras("plane", 0, 2, (2.2, 2.6), (-20.0, 60.0))
    K = torch.tensor(cameras.intrinsics_from_lens(35, 32, 12, 8), dtype=dtype, device=device)[None].repeat(2, 1, 1)
    c2w = torch.tensor(np.stack([s.c2w() for s in specs]), dtype=dtype, device=device)
    depth = torch.rand(2, 8, 12, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device) + 1.5
    points = geometry.unproject(depth, K, c2w)
    uv, z = geometry.project(points, K, c2w)
    assert points.dtype == uv.dtype == dtype and uv.device.type == device
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(uv, geometry.pixel_grid(8, 12, device, dtype).expand(2, -1, -1), atol=tol, rtol=0)
    torch.testing.assert_close(z, depth.reshape(2, -1), atol=tol, rtol=0)
    # The numpy views in invs.cameras are the same computation.
    np.testing.assert_allclose(
        cameras.unproject_depth(depth[1].cpu().double().numpy(), K[1].cpu().double().numpy(), c2w[1].cpu().numpy()),
        points[1].reshape(8, 12, 3).cpu().double().numpy(),
        atol=1e-4,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_core_lift_at_any_pixel_position_projects_back_there(device: str) -> None:
    """Lifting continuous pixel positions (the mesh footprints' vertices) and projecting them again is the
    identity, one camera per point, and at pixel centres lifting is unprojection."""
    from invs import geometry

    specs = cameras.sample_object_cameras("plane", 1, 3, (2.2, 2.6), (-20.0, 60.0))
    K = torch.tensor(cameras.intrinsics_from_lens(35, 32, 16, 16), device=device)[None].repeat(3, 1, 1).float()
    c2w = torch.tensor(np.stack([s.c2w() for s in specs]), device=device).float()
    g = torch.Generator().manual_seed(1)
    uv = (torch.rand(3, 5, 2, generator=g) * 16).to(device)
    depth = (torch.rand(3, 5, generator=g) + 1.5).to(device)
    back, z = geometry.project(geometry.lift(uv, depth, K, c2w), K, c2w)
    torch.testing.assert_close(back, uv, atol=1e-4, rtol=0)
    torch.testing.assert_close(z, depth, atol=1e-5, rtol=0)
    grid = torch.rand(3, 4, 6, generator=g).to(device) + 1.5
    centres = geometry.pixel_grid(4, 6, device).expand(3, -1, -1)
    torch.testing.assert_close(geometry.lift(centres, grid.reshape(3, -1), K, c2w), geometry.unproject(grid, K, c2w))
    with pytest.raises(ValueError, match="depth must have shape"):
        geometry.lift(uv, depth[:, :4], K, c2w)


def test_core_geometry_rejects_wrong_shapes() -> None:
    from invs import geometry

    K, c2w = torch.eye(3)[None], torch.eye(4)[None]
    with pytest.raises(ValueError, match=r"depth must have shape \(\*, \*, \*\), got \(4, 4\)"):
        geometry.unproject(torch.ones(4, 4), K, c2w)
    with pytest.raises(ValueError, match=r"c2w must have shape \(1, 4, 4\), got \(2, 4, 4\)"):
        geometry.project(torch.ones(1, 5, 3), K, torch.eye(4).repeat(2, 1, 1))
