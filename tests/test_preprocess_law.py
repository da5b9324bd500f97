"""The law that proves the partial views and masks, on Blender renders of the real objects with ground-truth depth.

It must hold for our geometry and fail for the classic mistakes: ray distance read as planar depth, a 3% depth
scale error, a one-pixel shift between image and depth, swapped colour channels.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from invs import cameras
from preprocess.geometry import partial_view
from preprocess.law import law_metrics
from render.blender_process import BlenderProcess

pytestmark = pytest.mark.blender
RES = 128
OBJECTS = ["SpotCow.glb", "BoxTextured.glb", "CesiumMilkTruck.glb"]


@pytest.fixture(scope="module")
def renders(real_objects: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Six views of each object at 128 px: RGB on white, alpha, planar depth, K, c2w (float64 numpy)."""
    out: dict[str, dict[str, Any]] = {}
    root = tmp_path_factory.mktemp("law")
    with BlenderProcess(threads=2, log_dir=str(root / "logs")) as bp:
        for name in OBJECTS:
            specs = cameras.sample_object_cameras(name, 3, 6, (2.2, 2.6), (-20.0, 60.0))
            req = {
                "model_path": str(real_objects / name),
                "out_dir": str(root / name),
                "views": [asdict(s) for s in specs],
                "resolution": RES,
                "engine": "cycles",
                "samples": 32,
                "denoise": False,
                "device": "cpu",
                "lighting": "uniform",
                "light_seed": 0,
                "lens_mm": 35.0,
                "sensor_width_mm": 32.0,
                "threads": 2,
                "depth_dtype": "float32",
            }
            result = bp.render(req, timeout_s=300)
            assert result["ok"], result
            rgba = np.stack([np.asarray(Image.open(root / name / f"rgba_{i:03d}.png")) for i in range(6)])
            alpha = rgba[..., 3:4] / 255.0
            out[name] = {
                "rgb": rgba[..., :3] / 255.0 * alpha + (1 - alpha),
                "alpha": alpha[..., 0],
                "depth": np.stack([np.load(root / name / f"depth_{i:03d}.npy") for i in range(6)]).astype(np.float64),
                "K": np.stack([v["K"] for v in result["views"]]),
                "c2w": np.stack([v["c2w"] for v in result["views"]]),
            }
    return out


def pairs(n: int, c2w: np.ndarray) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i in range(n)
        for j in range(n)
        if i != j and 10.0 <= cameras.angle_between_views_deg(c2w[i], c2w[j]) <= 120.0
    ]


def measure(r: dict[str, Any], mistake: str | None = None) -> dict[str, float]:
    """Law figures over all pairs of one object (pixel-weighted PSNR via summed squared error)."""
    idx = pairs(len(r["c2w"]), r["c2w"])
    s, t = [i for i, _ in idx], [j for _, j in idx]

    def T(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).float()

    rgb = true_rgb = T(r["rgb"][s]).permute(0, 3, 1, 2)
    depth = T(r["depth"][s])
    K_src, c2w_src = T(r["K"][s]), T(r["c2w"][s])
    if mistake == "ray_depth":
        uv = cameras.pixel_centers(RES, RES)
        K = r["K"][0]
        norm = np.sqrt(1 + ((uv[..., 0] - K[0, 2]) / K[0, 0]) ** 2 + ((uv[..., 1] - K[1, 2]) / K[1, 1]) ** 2)
        depth = depth * T(norm)[None]
    elif mistake == "scale_3pct":
        depth = depth * 1.03
    elif mistake == "pixel_shift":
        rgb = torch.roll(rgb, shifts=1, dims=-1)
    elif mistake == "bgr":
        rgb = rgb.flip(1)
    view = partial_view(rgb, depth, K_src, c2w_src, T(r["K"][t]), T(r["c2w"][t]), RES, RES)
    # The reference (backward warp) always uses the true source image and depth: the mistake is the pipeline's.
    return law_metrics(
        view,
        true_rgb,
        T(r["depth"][s]),
        K_src,
        c2w_src,
        T(r["rgb"][t]).permute(0, 3, 1, 2),
        T(r["alpha"][t]),
        T(r["depth"][t]),
        T(r["K"][t]),
        T(r["c2w"][t]),
    )


def holds(m: dict[str, float]) -> bool:
    return (
        m["psnr_partial"] >= m["psnr_backward"] - 1.0 and m["stray_fraction"] < 0.005 and m["unseen_below_half"] < 0.01
    )


@pytest.mark.parametrize("name", OBJECTS)
def test_the_law_holds_with_ground_truth_depth(renders: dict[str, dict[str, Any]], name: str) -> None:
    m = measure(renders[name])
    assert m["compared_pixels"] > 2000 and m["unseen_pixels"] > 500
    assert m["psnr_partial"] >= m["psnr_backward"] - 1.0, m
    assert m["stray_fraction"] < 0.005, m
    assert m["unseen_below_half"] < 0.01, m
    assert math.isfinite(m["psnr_partial"]) and m["psnr_partial"] > 20, m


@pytest.mark.parametrize("mistake", ["ray_depth", "scale_3pct", "pixel_shift", "bgr"])
def test_the_law_catches_the_classic_mistakes(renders: dict[str, dict[str, Any]], mistake: str) -> None:
    failed = [name for name in OBJECTS if not holds(measure(renders[name], mistake))]
    assert failed, f"{mistake} went unnoticed"
