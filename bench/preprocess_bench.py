"""Preprocess-stage benchmark: pairs per second end to end (without Ray), and where the time goes.

    .venv/bin/python bench/preprocess_bench.py            # writes bench/results/preprocess.json

Renders the built-in text block (8 views) at each resolution, then times :func:`preprocess.object_pairs.object_pairs`
with ground-truth depth (8 pairs per object), its parts (splatting, occlusion region, law, encoding), and as a
baseline in the same run the same pairs made one at a time (batch 1) instead of as one batch per object.
Timings, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from bench.common import write_results
from invs import partial_view, shards
from invs.config import load_config
from invs.images import on_white, resize_view
from preprocess import object_pairs
from render.object_ref import ObjectRef
from render.worker import RenderWorker


def render_sample(resolution: int, views: int, tmp: str) -> shards.RenderSample:
    config = load_config("local", {"render.out": tmp, "render.views": views, "render.resolution": resolution})
    worker = RenderWorker(config, job_id="bench", index=0, threads=os.cpu_count() or 1)
    worker.render_batch([(ObjectRef("sample_text_block", "samples:text_block", "samples"), 1)])
    worker.close()
    return next(shards.iter_render_samples(shards.list_shards(tmp)))


def timed(repeats: int, fn: Any, *args: Any) -> float:
    fn(*args)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - started) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "preprocess.json"))
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "device": "cpu",
        "depth": "gt",
        "pairs_per_object": args.pairs,
        "runs": {},
    }
    for res in args.resolutions:
        with tempfile.TemporaryDirectory() as tmp:
            sample = render_sample(res, 8, tmp)
        config = load_config(
            "local",
            {"preprocess.resolution": res, "preprocess.pairs_per_object": args.pairs, "preprocess.min_angle_deg": 10.0},
        )
        made = object_pairs.object_pairs(sample, config, "bench")
        n = len(made.pairs)
        batched = timed(args.repeats, object_pairs.object_pairs, sample, config, "bench")
        one = load_config(
            "local", {"preprocess.resolution": res, "preprocess.pairs_per_object": 1, "preprocess.min_angle_deg": 10.0}
        )
        single = timed(args.repeats, object_pairs.object_pairs, sample, one, "bench")
        # Parts, on the same pairs as one batch.
        views = [
            resize_view(sample.rgba[i], sample.depth[i].astype(np.float32), sample.K(i), res)
            for i in range(sample.num_views)
        ]
        pairs = [(int(k.split("_")[-2]), int(k.split("_")[-1])) for k, _ in made.pairs]
        s, t = [a for a, _ in pairs], [b for _, b in pairs]

        def stack(items: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.stack(items)).float()

        rgb = stack([on_white(views[i][0]) for i in s]).permute(0, 3, 1, 2)
        depth = stack([views[i][1] for i in s])
        K_s, T_s = stack([views[i][2] for i in s]), stack([sample.c2w(i) for i in s])
        K_t, T_t = stack([views[j][2] for j in t]), stack([sample.c2w(j) for j in t])
        splat_s = timed(args.repeats, partial_view.warp_to_target, rgb, depth, K_s, T_s, K_t, T_t, res, res)
        region_s = timed(args.repeats, partial_view.occlusion_region, depth, K_s, T_s, K_t, T_t, res, res)
        results["runs"][str(res)] = {
            "pairs": n,
            "pairs_per_s": round(n / batched, 3),
            "seconds_per_pair": round(batched / n, 4),
            "baseline_one_pair_per_call_s": round(single, 4),
            "batched_speedup_over_one_at_a_time": round(single / (batched / n), 3),
            "parts_seconds_per_pair": {
                "splat": round(splat_s / n, 4),
                "occlusion_region": round(region_s / n, 4),
                "rest (law, encode, resize)": round((batched - splat_s - region_s) / n, 4),
            },
        }
        r = results["runs"][str(res)]
        print(
            f"{res}px: {r['pairs_per_s']:.2f} pairs/s ({r['seconds_per_pair']:.3f} s/pair; splat "
            f"{r['parts_seconds_per_pair']['splat']:.3f}, region {r['parts_seconds_per_pair']['occlusion_region']:.3f})"
            f"; batched vs one at a time: {r['batched_speedup_over_one_at_a_time']:.2f}x",
            flush=True,
        )
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
