"""Depth alignment on real renders: the camera-distance prior versus the robust fit to the render's depth.

    .venv/bin/python bench/depth_align_bench.py              # writes bench/results/depth_align.json

Renders the real test objects (tests/assets/objects, the problem_* files left out) with the render stage's
default settings (12 views at 256 px, radius U(2.2, 2.6)), then aligns stand-in depth estimates of every view
to planar depth in object units three ways: :func:`invs.depth.align_to_distance` (median foreground depth
= camera distance; the inference-time prior), :func:`invs.depth.align_robust` (training pairs) and plain
:func:`invs.depth.align_least_squares`, and scores each against the rendered depth (abs-rel, pooled over
the foreground of all views). The estimates are the rendered depth itself (a perfect shape: the prior's error
is then all bias), and the rendered depth made ``1.6 * d + 0.3`` with Gaussian noise (0.003), plus 5% gross
outliers (3-6x too far; not scored), plus a smooth +-5% shape error. No trained ZoeDepth is used: its weights cannot be
downloaded here. Measurements, not tests: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import OBJECTS, render_samples, write_results
from invs.depth import align_least_squares, align_robust, align_to_distance, depth_errors


def smooth_field(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """A smooth random field in [-1, 1]: a 4 x 4 grid upsampled bicubically."""
    coarse = torch.rand(shape[0], 1, 4, 4, generator=g) * 2 - 1
    return F.interpolate(coarse, size=shape[1:], mode="bicubic", align_corners=True)[:, 0].clamp(-1, 1)


def estimates(gt: torch.Tensor, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Stand-in estimates of the rendered depth ``gt``, each with the pixels to score (all but gross outliers)."""
    g = torch.Generator().manual_seed(seed)
    noisy = gt * 1.6 + 0.3 + 0.003 * torch.randn(gt.shape, generator=g)
    gross = torch.rand(gt.shape, generator=g) < 0.05
    outliers = torch.where(gross, noisy * (3 + 3 * torch.rand(gt.shape, generator=g)), noisy)
    shaped = (gt * (1 + 0.05 * smooth_field(tuple(gt.shape), g))) * 1.6 + 0.3
    shaped = shaped + 0.003 * torch.randn(gt.shape, generator=g)
    everywhere = gt > 0
    return {
        "exact": (gt.clone(), everywhere),
        "affine_noise": (noisy, everywhere),
        "affine_noise_outliers": (outliers, everywhere & ~gross),
        "affine_noise_shape5pct": (shaped, everywhere),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "depth_align.json"))
    args = parser.parse_args()
    names = sorted(p.name for p in OBJECTS.glob("*.glb") if not p.name.startswith("problem_"))
    with tempfile.TemporaryDirectory() as tmp:
        samples = render_samples(names, args.views, args.resolution, tmp)
    aligners: dict[str, Callable[..., Any]] = {
        "distance_prior": lambda d, gt, m, radii: align_to_distance(d, m, radii),
        "robust": lambda d, gt, m, radii: align_robust(d, gt, m),
        "lstsq": lambda d, gt, m, radii: align_least_squares(d, gt, m),
    }
    results: dict[str, Any] = {
        "views": args.views,
        "resolution": args.resolution,
        "metric": "abs_rel vs the rendered depth, pooled over the foreground of all views; gross outliers not scored",
        "objects": {},
    }
    pooled: dict[str, dict[str, list[float]]] = {}
    for k, sample in enumerate(sorted(samples, key=lambda s: s.key)):
        usable = [i for i in range(sample.num_views) if (sample.depth[i] > 0).sum() >= 100]
        gt = torch.from_numpy(np.stack([sample.depth[i] for i in usable]).astype(np.float32))
        mask = gt > 0
        radii = [float(sample.meta["views"][i]["radius"]) for i in usable]
        medians = torch.stack([gt[b][mask[b]].median() for b in range(len(usable))])
        ratio = torch.tensor(radii) / medians
        entry: dict[str, Any] = {
            "views_used": len(usable),
            "radius_over_median_depth": {
                "min": round(float(ratio.min()), 3),
                "mean": round(float(ratio.mean()), 3),
                "max": round(float(ratio.max()), 3),
            },
        }
        for estimate, (predicted, scored) in estimates(gt, seed=k).items():
            for aligner, align in aligners.items():
                aligned, _ = align(predicted, gt, mask, radii)
                error = depth_errors(aligned, gt, scored)["abs_rel"]
                entry.setdefault(estimate, {})[aligner] = round(error, 5)
                pooled.setdefault(estimate, {}).setdefault(aligner, []).append(error)
        results["objects"][sample.key] = entry
        print(sample.key, entry, flush=True)
    results["mean_over_objects"] = {
        e: {a: round(float(np.mean(v)), 5) for a, v in d.items()} for e, d in pooled.items()
    }
    ratios = [o["radius_over_median_depth"] for o in results["objects"].values()]
    results["radius_over_median_depth"] = {
        "min": min(r["min"] for r in ratios),
        "mean_of_object_means": round(float(np.mean([r["mean"] for r in ratios])), 3),
        "max": max(r["max"] for r in ratios),
    }
    print("mean over objects:", results["mean_over_objects"])
    print("radius / median foreground depth:", results["radius_over_median_depth"])
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
