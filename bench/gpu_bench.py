"""GPU benchmark of what the preprocess stage runs per pair and of the VAE encoder: partial views and VAE encodes.

    python bench/gpu_bench.py            # on a CUDA machine (bench/gpu.sh runs it); writes bench/results/gpu.json
    python bench/gpu_bench.py --device cpu --sizes 64 --batches 2   # the same code on CPU (a smoke run)

* ``partial_view``: :func:`invs.partial_view.partial_view` (softmax splat, occlusion region, soft mask) at 512 px
  on synthetic pairs (a sphere seen from two cameras of the training distribution), batched; pairs/s by batch
  size, with one CPU call of the same batch in the same run as the baseline.
* ``vae_encode``: SD's VAE encoder (random weights from its config) at 512 px in bf16, images/s by batch size;
  preprocessing with ``preprocess.latents`` encodes two images per pair.
Median of timed repeats after warm-up. Timings, not tests.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, write_results
from invs import cameras


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sphere_pairs(batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(rgb, depth, K_s, c2w_s, K_t, c2w_t): a sphere of radius 0.45 seen by seeded camera pairs."""
    K = cameras.intrinsics_from_lens(35.0, 32.0, size, size)
    specs = cameras.sample_object_cameras("bench", 0, 2 * batch, (2.2, 2.6), (-20.0, 60.0))
    c2w = np.stack([s.c2w() for s in specs])
    uv = cameras.pixel_centers(size, size)
    rays = np.stack([(uv[..., 0] - K[0, 2]) / K[0, 0], (uv[..., 1] - K[1, 2]) / K[1, 1], np.ones((size, size))], -1)
    depths = []
    for pose in c2w[:batch]:
        dirs = rays @ pose[:3, :3].T
        norm = np.linalg.norm(dirs, axis=-1)
        o = pose[:3, 3]
        b = (dirs / norm[..., None]) @ o
        disc = b * b - (o @ o - 0.45**2)
        t = -b - np.sqrt(np.maximum(disc, 0))
        depths.append(np.where(disc > 0, t / norm, 0.0))
    rgb = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
    Ks = as_t(np.repeat(K[None], batch, 0))
    return rgb.to(device), as_t(np.stack(depths)), Ks, as_t(c2w[:batch]), Ks, as_t(c2w[batch:])


def partial_view_runs(sizes: list[int], batches: list[int], device: torch.device, args: Any) -> list[dict]:
    from invs.partial_view import partial_view

    rows = []
    for size in sizes:
        for batch in batches:
            inputs = sphere_pairs(batch, size, device)
            s = timed(lambda: partial_view(*inputs, size, size), device, args.warmup, args.repeats)  # noqa: B023
            row = {"size": size, "batch": batch, "device": device.type, "s_per_call": round(s, 5)}
            row["pairs_per_s"] = round(batch / s, 2)
            if device.type == "cuda":
                cpu_inputs = sphere_pairs(batch, size, torch.device("cpu"))
                cpu_s = timed(lambda: partial_view(*cpu_inputs, size, size), torch.device("cpu"), 0, 1)  # noqa: B023
                row["cpu_pairs_per_s"] = round(batch / cpu_s, 3)
                row["speedup_vs_cpu"] = round(cpu_s / s, 1)
            rows.append(row)
            print(
                f"partial view {size} px batch {batch} on {device.type}: {row['pairs_per_s']:.1f} pairs/s", flush=True
            )
    return rows


def vae_runs(sizes: list[int], batches: list[int], device: torch.device, args: Any) -> list[dict]:
    from diffusers import AutoencoderKL

    from invs.models import SD_VAE_CONFIG

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    vae = AutoencoderKL.from_config(SD_VAE_CONFIG).eval().to(device)
    vae = vae.to(dtype) if dtype != torch.float32 else vae
    rows = []
    for size in sizes:
        for batch in batches:
            x = torch.rand(batch, 3, size, size, device=device, dtype=dtype) * 2 - 1
            with torch.no_grad():
                s = timed(lambda: vae.encode(x).latent_dist.mode(), device, args.warmup, args.repeats)  # noqa: B023
            rows.append({"size": size, "batch": batch, "dtype": str(dtype), "images_per_s": round(batch / s, 2)})
            print(f"VAE encode {size} px batch {batch} ({dtype}): {batch / s:.1f} images/s", flush=True)
    if device.type == "cuda":
        rows.append({"peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "gpu.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (use --device cpu for a smoke run)", file=sys.stderr)
        return 2
    results = {
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        },
        "partial_view": partial_view_runs(args.sizes, args.batches, device, args),
        "vae_encode": vae_runs(args.sizes, args.batches, device, args),
    }
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
