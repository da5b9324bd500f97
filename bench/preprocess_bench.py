"""Preprocess-stage benchmark: pairs per second end to end (without Ray), where the time goes, and how much of what
the source sees the partial views cover.

    .venv/bin/python bench/preprocess_bench.py            # writes bench/results/preprocess.json and partial_views.png

Renders the built-in text block and the real test objects (SpotCow, BoxTextured, CesiumMilkTruck, on which the
partial view was developed, and Fox, GolfBall, kenney_alien, kenney_cakeBirthday, on which it was not tuned; from
tests/assets/objects; 8 views each) at each resolution, then times :func:`preprocess.object_pairs.object_pairs` with
ground-truth depth (8 pairs per object) twice in the same run: with the partial view's mesh coverage (``cover=
"mesh"``, the stage's) and, as the baseline, with the former point coverage (``cover="points"``). Also timed: the
parts (warp, occlusion region, the rest) and the same pairs made one at a time (batch 1). With each run come the
law's figures and the coverage (:func:`preprocess.law.law_metrics`, pair-weighted over the objects, and per object
with whether the law holds), and a picture
of a few pairs at the first resolution (source | partial, points | partial, mesh | mask | target). Wall-clock and
process CPU seconds (the steadier number on a shared machine). Timings, not tests: nothing here asserts a speed.
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
from PIL import Image

from bench.common import RESULTS, render_samples, write_results
from invs import partial_view, shards
from invs.config import Config, load_config
from invs.images import coverage, on_white, resize_view, to_uint8
from preprocess import object_pairs
from preprocess.law import law_holds

REPO = Path(__file__).resolve().parent.parent
#: The objects the partial view was developed on, then objects it was not tuned on (thin legs, box edges, candles).
REAL_OBJECTS = ["SpotCow.glb", "BoxTextured.glb", "CesiumMilkTruck.glb"]
HELD_OUT = ["Fox.glb", "GolfBall.glb", "kenney_alien.glb", "kenney_cakeBirthday.glb"]
COVERS = ("mesh", "points")
FIGURES = (
    "seen_covered",
    "seen_cells_kept",
    "visible_fraction",
    "psnr_partial",
    "psnr_backward",
    "stray_fraction",
    "unseen_below_half",
)


def timed(repeats: int, fn: Any, *args: Any, **kwargs: Any) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call, after a warm-up call."""
    fn(*args, **kwargs)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn(*args, **kwargs)
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def stage_config(res: int, pairs: int) -> Config:
    return load_config(
        "local", {"preprocess.resolution": res, "preprocess.pairs_per_object": pairs, "preprocess.min_angle_deg": 10.0}
    )


def pair_tensors(sample: shards.RenderSample, pairs: list[tuple[int, int]], res: int) -> dict[str, torch.Tensor]:
    """The stage's inputs for the given (source, target) pairs, as object_pairs stacks them."""
    views = [
        resize_view(sample.rgba[i], sample.depth[i].astype(np.float32), sample.K(i), res)
        for i in range(sample.num_views)
    ]

    def stack(items: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(items)).float()

    s, t = [a for a, _ in pairs], [b for _, b in pairs]
    return {
        "rgb": stack([on_white(views[i][0]) for i in s]).permute(0, 3, 1, 2),
        "depth": stack([views[i][1] for i in s]),
        "K_s": stack([views[i][2] for i in s]),
        "T_s": stack([sample.c2w(i) for i in s]),
        "K_t": stack([views[j][2] for j in t]),
        "T_t": stack([sample.c2w(j) for j in t]),
        "alpha": stack([coverage(views[i][0]) for i in s]),
        "target": stack([on_white(views[j][0]) for j in t]).permute(0, 3, 1, 2),
    }


def picture(samples: list[shards.RenderSample], res: int, per_object: int, out: Path) -> None:
    """Rows of source | partial, points | partial, mesh | mask (mesh) | target for a few pairs of each object."""
    rows = []
    for sample in samples:
        made = object_pairs.object_pairs(sample, stage_config(res, per_object), "bench")
        pairs = [(int(k.split("_")[-2]), int(k.split("_")[-1])) for k, _ in made.pairs]
        x = pair_tensors(sample, pairs, res)
        args = (x["rgb"], x["depth"], x["K_s"], x["T_s"], x["K_t"], x["T_t"], res, res)
        old = partial_view.partial_view(*args, cover="points")
        new = partial_view.partial_view(*args, cover="mesh", alpha_src=x["alpha"])
        for k in range(len(pairs)):
            panels = [x["rgb"][k], old.partial[k], new.partial[k], new.mask[k][None].expand(3, -1, -1), x["target"][k]]
            rows.append(torch.cat([p.clamp(0, 1) for p in panels], dim=2))
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(grid)).save(out)
    print(f"wrote {out}")


def pooled(laws: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """Pair-weighted means of per-object law figures."""
    total = sum(n for n, _ in laws)
    return {k: round(sum(n * law[k] for n, law in laws) / total, 4) for k in FIGURES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--text-block-only", action="store_true", help="skip the real test objects")
    parser.add_argument("--out", default=str(RESULTS / "preprocess.json"))
    parser.add_argument("--picture", default=str(RESULTS / "partial_views.png"))
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
        "objects": ["samples:text_block"] + ([] if args.text_block_only else REAL_OBJECTS + HELD_OUT),
        "held_out": [] if args.text_block_only else HELD_OUT,
        "runs": {},
    }
    for n_res, res in enumerate(args.resolutions):
        with tempfile.TemporaryDirectory() as tmp:
            objects = ["samples:text_block"] + ([] if args.text_block_only else REAL_OBJECTS + HELD_OUT)
            samples = render_samples(objects, 8, res, tmp)
        config = stage_config(res, args.pairs)
        run: dict[str, Any] = {"pairs": 0}
        for cover in COVERS:
            wall = cpu = 0.0
            laws = []
            per_object = {}
            for sample in samples:
                made = object_pairs.object_pairs(sample, config, "bench", cover=cover)
                laws.append((len(made.pairs), made.law))
                figures = {k: round(made.law[k], 4) for k in FIGURES}
                per_object[sample.key] = figures | {"law_holds": law_holds(made.law)}
                w, c = timed(args.repeats, object_pairs.object_pairs, sample, config, "bench", cover=cover)
                wall, cpu = wall + w, cpu + c
            n = sum(k for k, _ in laws)
            run["pairs"] = n
            run[cover] = {
                "pairs_per_s": round(n / wall, 3),
                "seconds_per_pair": round(wall / n, 4),
                "cpu_seconds_per_pair": round(cpu / n, 4),
                "law_and_coverage": pooled(laws),
                "per_object": per_object,
            }
        run["mesh_time_over_points"] = {
            "wall": round(run["mesh"]["seconds_per_pair"] / run["points"]["seconds_per_pair"], 3),
            "cpu": round(run["mesh"]["cpu_seconds_per_pair"] / run["points"]["cpu_seconds_per_pair"], 3),
        }
        # Parts, on the text block's pairs as one batch; and those pairs made one at a time.
        text_block = samples[0]
        made = object_pairs.object_pairs(text_block, config, "bench")
        pairs = [(int(k.split("_")[-2]), int(k.split("_")[-1])) for k, _ in made.pairs]
        x = pair_tensors(text_block, pairs, res)
        args_warp = (x["rgb"], x["depth"], x["K_s"], x["T_s"], x["K_t"], x["T_t"], res, res)
        batched, _ = timed(args.repeats, object_pairs.object_pairs, text_block, config, "bench")
        single, _ = timed(args.repeats, object_pairs.object_pairs, text_block, stage_config(res, 1), "bench")
        warp = partial_view.warp_to_target
        parts = {f"warp ({cover})": timed(args.repeats, warp, *args_warp, cover)[0] for cover in COVERS}
        parts["occlusion_region"] = timed(args.repeats, partial_view.occlusion_region, *args_warp[1:])[0]
        n = len(pairs)
        rest = batched - parts["warp (mesh)"] - parts["occlusion_region"]
        run["text_block"] = {
            "pairs": n,
            "baseline_one_pair_per_call_s": round(single, 4),
            "batched_speedup_over_one_at_a_time": round(single / (batched / n), 3),
            "parts_seconds_per_pair": {k: round(v / n, 4) for k, v in parts.items()}
            | {"rest (law, encode, resize)": round(rest / n, 4)},
        }
        results["runs"][str(res)] = run
        m, p = run["mesh"]["law_and_coverage"], run["points"]["law_and_coverage"]
        ratio = run["mesh_time_over_points"]
        print(
            f"{res}px, {run['pairs']} pairs: mesh {run['mesh']['pairs_per_s']:.2f} pairs/s, points "
            f"{run['points']['pairs_per_s']:.2f} pairs/s (mesh/points time: wall {ratio['wall']:.2f}x, cpu "
            f"{ratio['cpu']:.2f}x); co-visible covered {p['seen_covered']:.3f} -> {m['seen_covered']:.3f}; "
            f"co-visible cells kept {p['seen_cells_kept']:.3f} -> {m['seen_cells_kept']:.3f}",
            flush=True,
        )
        if n_res == 0 and args.picture:
            picture(samples, res, 2, Path(args.picture))
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
