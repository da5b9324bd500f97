"""Depth-stage benchmark: images per second of full-size ZoeDepth (BEiT-L, random weights) through DepthEstimator.

    .venv/bin/python bench/depth_bench.py                      # writes bench/results/depth.json

Source images of 256 and 512 px (ZoeDepth pads them to 322 / 608 px and resizes to 384 x 384 / 512 x 512
network inputs), batch 1 and 2, timed end to end (pre-processing, network, post-processing). Baselines in the
same run: on CPU the tiny test config at batch 1 on the same inputs (the same pipeline and ZoeDepth's
full-resolution heads, with a 32-wide 4-layer backbone) and the pre/post-processing time alone; on CUDA float32
versus bf16 autocast, and bf16 with flip averaging (two network passes per image). CPU runs use one warm-up and
one timed repeat by default to stay within about two minutes on a few cores. Timings, not tests: nothing here
asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_results

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights: nothing to download

import torch
import transformers

from invs.depth import DepthEstimator, full_zoedepth_config, tiny_zoedepth_config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_estimator(
    est: DepthEstimator, size: int, batch: int, warmup: int, repeats: int, seed: int = 0
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g).to(est.device)
    for _ in range(warmup):
        est(images)
    sync(est.device)
    started = time.perf_counter()
    for _ in range(repeats):
        depth = est(images)
    sync(est.device)
    wall = time.perf_counter() - started
    assert depth.shape == (batch, size, size) and bool(torch.isfinite(depth).all())
    pad_h, pad_w = est.preprocessing.padding(size, size)
    return {
        "source_px": size,
        "batch": batch,
        "network_input": list(est.preprocessing.network_size(size + 2 * pad_h, size + 2 * pad_w)),
        "warmup": warmup,
        "repeats": repeats,
        "seconds_per_batch": round(wall / repeats, 4),
        "images_per_s": round(batch * repeats / wall, 3),
    }


def time_prepost(est: DepthEstimator, size: int, batch: int, repeats: int = 5) -> float:
    """Milliseconds per batch for pre-processing plus post-processing alone (the network left out)."""
    images = torch.rand(batch, 3, size, size).to(est.device)
    predicted = torch.rand(batch, *est.preprocess(images).shape[-2:], device=est.device)
    sync(est.device)
    started = time.perf_counter()
    for _ in range(repeats):
        est.preprocess(images)
        est.postprocess(predicted, size, size)
    sync(est.device)
    return round(1000 * (time.perf_counter() - started) / repeats, 3)


def label(dtype: torch.dtype | None, flip: bool) -> str:
    name = "float32" if dtype in (None, torch.float32) else str(dtype).removeprefix("torch.")
    return name + ("+flip" if flip else "")


def run_variant(
    config: Any,
    device: torch.device,
    dtype: torch.dtype | None,
    flip: bool,
    args: argparse.Namespace,
    prefix: str = "",
    batches: list[int] | None = None,
) -> list[dict[str, Any]]:
    est = DepthEstimator.from_config(config, device=device, dtype=dtype, flip_average=flip)
    on_cuda = device.type == "cuda"
    batches = batches or args.batches
    rows = []
    for i, size in enumerate(args.sizes):
        for j, batch in enumerate(batches):
            # CPU: one warm-up for the whole variant (no per-shape autotuning there); CUDA: per shape.
            warmup = args.warmup if (on_cuda or i == j == 0) else 0
            repeats = args.repeats if args.repeats else (5 if on_cuda else 1)
            variant = prefix + label(est.autocast_dtype, flip)
            row = {"variant": variant, **time_estimator(est, size, batch, warmup, repeats)}
            row["prepost_ms_per_batch"] = time_prepost(est, size, batch)
            rows.append(row)
            print(
                f"{device.type} {row['variant']:<14} {size}px b{batch} -> net {row['network_input']}: "
                f"{row['images_per_s']:.3f} img/s ({row['seconds_per_batch']:.3f} s/batch, "
                f"pre+post {row['prepost_ms_per_batch']:.1f} ms)",
                flush=True,
            )
    del est
    if on_cuda:
        torch.cuda.empty_cache()
    return rows


def ratios(rows: list[dict[str, Any]], numerator: str, denominator: str) -> dict[str, float]:
    """images_per_s[numerator] / images_per_s[denominator] per (source size, batch)."""
    index = {(r["variant"], r["source_px"], r["batch"]): r["images_per_s"] for r in rows}
    out = {}
    for (variant, size, batch), ips in index.items():
        if variant == denominator and (numerator, size, batch) in index:
            out[f"{size}px_b{batch}"] = round(index[(numerator, size, batch)] / ips, 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="square source image sizes")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (CUDA: per shape)")
    parser.add_argument("--repeats", type=int, default=0, help="timed calls per shape (default: CPU 1, CUDA 5)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU runs (when CUDA is available)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "depth.json"))
    args = parser.parse_args()

    full = full_zoedepth_config()
    cuda = torch.cuda.is_available()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        },
        "model": "ZoeDepthConfig() defaults: BEiT-L/16 backbone at 384 px, one 64-bin metric head; random weights",
        "input": "square RGB in [0, 1]; processor target 384x512, keep aspect, multiple of 32, reflect padding",
        "cpu": None,
        "cuda": None,
    }
    if not (cuda and args.no_cpu):
        cpu = torch.device("cpu")
        rows = run_variant(full, cpu, None, False, args)
        tiny_rows = run_variant(tiny_zoedepth_config(), cpu, None, False, args, prefix="tiny-", batches=[1])
        results["cpu"] = {
            "runs": rows + tiny_rows,
            "tiny_over_full_images_per_s": ratios(rows + tiny_rows, "tiny-float32", "float32"),
        }
    if cuda:
        gpu = torch.device("cuda")
        rows = []
        for dtype, flip in [(None, False), (torch.bfloat16, False), (torch.bfloat16, True)]:
            rows += run_variant(full, gpu, dtype, flip, args)
        results["cuda"] = {
            "runs": rows,
            "bf16_over_fp32_images_per_s": ratios(rows, "bfloat16", "float32"),
            "flip_over_noflip_images_per_s_bf16": ratios(rows, "bfloat16+flip", "bfloat16"),
        }
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    if max(results["machine"]["load_average_at_start"][0], os.getloadavg()[0]) > 0.5 * (os.cpu_count() or 1):
        print("note: other processes were busy on this machine: CPU timings are contended and noisy")
    for section in ("cpu", "cuda"):
        if results[section]:
            for key, value in results[section].items():
                if key != "runs":
                    print(f"{section} {key}: {value}")
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
