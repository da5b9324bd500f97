"""Exports of render shards in other trainers' layouts, read back the way those trainers read them: Zero-1-to-3's
relative poses from its per-view matrices, and nerfstudio's cameras and depth reprojected across views."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invs import shards, tables
from invs.cameras import zero123_relative_pose
from tests.helpers import render_real_objects

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def renders(real_objects: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return render_real_objects(real_objects, ("Fox.glb", "SpotCow.glb"), tmp_path_factory, samples=4)


def export(renders: str, fmt: str, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "render/export.py", "--renders", renders, "--format", fmt, "--out", str(out)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def samples(renders: str) -> list[shards.RenderSample]:
    return list(shards.iter_render_samples(tables.rendered_shards(renders)))


def zero123_get_t(target_rt: np.ndarray, cond_rt: np.ndarray) -> np.ndarray:
    """Zero-1-to-3's ``ObjaverseData.get_T`` (ldm/data/simple.py), on the matrices its Blender script saves."""

    def cartesian_to_spherical(xyz: np.ndarray) -> tuple[float, float, float]:
        xy = xyz[0] ** 2 + xyz[1] ** 2
        return math.atan2(math.sqrt(xy), xyz[2]), math.atan2(xyz[1], xyz[0]), math.sqrt(xy + xyz[2] ** 2)

    t_target = -target_rt[:3, :3].T @ target_rt[:, -1]
    t_cond = -cond_rt[:3, :3].T @ cond_rt[:, -1]
    theta_c, azimuth_c, z_c = cartesian_to_spherical(t_cond)
    theta_t, azimuth_t, z_t = cartesian_to_spherical(t_target)
    d_azimuth = (azimuth_t - azimuth_c) % (2 * math.pi)
    return np.array([theta_t - theta_c, math.sin(d_azimuth), math.cos(d_azimuth), z_t - z_c])


def test_zero123_layout_gives_its_loader_our_relative_poses(renders: str, tmp_path: Path) -> None:
    proc = export(renders, "zero123", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = samples(renders)
    assert json.loads((tmp_path / "valid_paths.json").read_text()) == sorted(s.key for s in found)
    for sample in found:
        folder = tmp_path / sample.key
        matrices = [np.load(folder / f"{i:03d}.npy") for i in range(sample.num_views)]
        assert all(m.shape == (3, 4) and m.dtype == np.float32 for m in matrices)
        for i in range(sample.num_views):
            assert np.array_equal(np.asarray(Image.open(folder / f"{i:03d}.png")), sample.rgba[i])
            for j in range(sample.num_views):
                ours = zero123_relative_pose(sample.c2w(i), sample.c2w(j))
                np.testing.assert_allclose(zero123_get_t(matrices[j], matrices[i]), ours, atol=1e-5)
        views = sample.meta["views"]
        theirs = zero123_get_t(matrices[1], matrices[0])
        assert theirs[0] == pytest.approx(
            -math.radians(views[1]["elevation_deg"] - views[0]["elevation_deg"]), abs=1e-5
        )
        assert theirs[3] == pytest.approx(views[1]["radius"] - views[0]["radius"], abs=1e-5)


def test_nerfstudio_depth_of_one_view_lands_inside_the_others_silhouettes(renders: str, tmp_path: Path) -> None:
    proc = export(renders, "nerfstudio", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for sample in samples(renders):
        meta = json.loads((tmp_path / sample.key / "transforms.json").read_text())
        assert meta["camera_model"] == "OPENCV" and len(meta["frames"]) == sample.num_views
        gl_to_cv = np.diag([1.0, -1.0, -1.0, 1.0])  # nerfstudio's camera axes (OpenGL) to OpenCV's
        frames = meta["frames"]

        def intrinsics(f: dict) -> np.ndarray:
            return np.array([[f["fl_x"], 0, f["cx"]], [0, f["fl_y"], f["cy"]], [0, 0, 1.0]])

        source = frames[0]
        depth = np.asarray(Image.open(tmp_path / sample.key / source["depth_file_path"])).astype(np.float64) * 1e-3
        np.testing.assert_allclose(depth, sample.depth[0], atol=6e-4)
        v, u = np.nonzero(depth > 0)
        rays = np.linalg.inv(intrinsics(source)) @ np.stack([u + 0.5, v + 0.5, np.ones_like(u)])
        camera = np.vstack([rays * depth[v, u], np.ones(len(u))])
        world = np.asarray(source["transform_matrix"]) @ gl_to_cv @ camera
        for frame in frames[1:]:
            alpha = np.asarray(Image.open(tmp_path / sample.key / frame["file_path"]))[..., 3] > 0
            silhouette = np.pad(alpha, 1)  # grown by a pixel: a 64 px view's edge pixels are partly the object's
            silhouette = np.max([np.roll(silhouette, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], 0)

            world_to_camera = np.linalg.inv(np.asarray(frame["transform_matrix"]) @ gl_to_cv)
            assert landed(world, world_to_camera, intrinsics(frame), silhouette) > 0.99, sample.key
            wrong = np.asarray(frame["transform_matrix"]) @ gl_to_cv  # camera-to-world taken for world-to-camera
            assert landed(world, wrong, intrinsics(frame), silhouette) < 0.5, "a convention mistake must miss"


def landed(world: np.ndarray, world_to_camera: np.ndarray, K: np.ndarray, silhouette: np.ndarray) -> float:
    """Fraction of homogeneous ``world`` points (4, N) in front of the camera that project onto ``silhouette`` (a
    view's alpha grown by a pixel and padded by one on each side)."""
    seen = world_to_camera @ world
    pixels = K @ seen[:3]
    x, y = np.floor(pixels[:2] / pixels[2]).astype(int) + 1
    h, w = silhouette.shape
    ok = (seen[2] > 0) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return float(np.mean(ok & silhouette[np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)]))


def test_nothing_to_export_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    proc = export(str(tmp_path / "no_renders"), "nerfstudio", tmp_path / "out")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--renders must be the --out of render/main.py" in proc.stderr
    assert not (tmp_path / "out").exists()
