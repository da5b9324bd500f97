"""Softmax-splatting benchmark: invs.splat.softmax_splat versus a naive index_put_ baseline.

    .venv/bin/python bench/splat_bench.py                      # writes bench/results/splat.json

For each device (CPU, and CUDA when available) and each resolution it splats the same batch twice, in one run:
* ``softmax_splat``: the production path (flattened (batch, pixel) index, one ``index_add_`` per channel), and
* ``naive``: a straightforward alternative: keep the valid points by boolean indexing, then a Python loop over the
  four bilinear neighbours, each accumulated with ``Tensor.index_put_(accumulate=True)`` on a (B, H, W, C+2) buffer,
and reports seconds per call (wall clock, and process CPU time, the steadier number on a shared machine), pairs
per second (one pair = one splat of one image, so B per call) and the ratio naive / softmax_splat, after a warm-up,
over several repeats (median). CPU runs use one torch thread by default (per-core numbers). The two results are
compared as a sanity check. Points: a realistic warp: the pixel centres of a foreground disc covering about 40% of
the image, in raster order, moved by a smooth flow (zoom, rotation and a sinusoidal wobble), importance = scaled
inverse depth of a sphere-like surface, 2% of the points invalid. Timings, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_results
from invs.splat import softmax_splat

Splat = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def naive_splat(
    values: torch.Tensor,
    uv: torch.Tensor,
    importance: torch.Tensor,
    valid: torch.Tensor,
    height: int,
    width: int,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same computation written the obvious way (the baseline): same conventions and outputs."""
    b, c, _ = values.shape
    values, uv, z = values.float(), uv.float(), importance.float()
    ok = valid & torch.isfinite(uv).all(-1) & torch.isfinite(z)
    zmax = torch.where(ok, z, float("-inf")).amax(dim=1, keepdim=True)
    zmax = torch.where(torch.isfinite(zmax), zmax, 0.0)
    bi, pi = ok.nonzero(as_tuple=True)
    soft = torch.exp(z[bi, pi] - zmax[bi, 0])
    vals = values.permute(0, 2, 1)[bi, pi]  # (M, C)
    x = uv[bi, pi, 0] - 0.5
    y = uv[bi, pi, 1] - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    acc = torch.zeros(b, height, width, c + 2, device=values.device)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        ix, iy = x0 + dx, y0 + dy
        inside = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
        e = (w * soft)[inside]
        rows = torch.cat((vals[inside] * e[:, None], e[:, None], w[inside][:, None]), dim=1)
        acc.index_put_((bi[inside], iy[inside], ix[inside]), rows, accumulate=True)
    acc = acc.permute(0, 3, 1, 2)
    num, den, density = acc[:, :c], acc[:, c : c + 1], acc[:, c + 1 :]
    out = torch.where(den > eps, num / den.clamp_min(eps), 0.0)
    return out.contiguous(), density.contiguous()


def warp_inputs(batch: int, size: int, channels: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A realistic forward warp of a foreground object covering ~40% of a size x size image, batched."""
    gen = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    u0, v0 = cols.flatten() + 0.5, rows.flatten() + 0.5
    c = size / 2
    r2 = ((u0 - c) ** 2 + (v0 - c) ** 2) / c**2
    disc = r2 < 0.4 / (math.pi / 4)  # the disc covers 40% of the image
    u0, v0, r2 = u0[disc], v0[disc], r2[disc]
    n = u0.numel()
    depth = 2.0 - torch.sqrt((1.0 - r2.clamp(max=1.0)).clamp_min(0.0))  # a bulging surface, nearest at the centre
    uvs, zs = [], []
    for k in range(batch):
        angle = 0.1 * (k + 1)
        zoom = 1.0 + 0.05 * k
        du, dv = u0 - c, v0 - c
        u = c + zoom * (math.cos(angle) * du - math.sin(angle) * dv) + 2.0 * torch.sin(v0 / 17.0)
        v = c + zoom * (math.sin(angle) * du + math.cos(angle) * dv) + 2.0 * torch.cos(u0 / 23.0)
        uvs.append(torch.stack((u, v), dim=-1))
        zs.append(10.0 / depth)  # scaled inverse depth: nearer wins
    uv = torch.stack(uvs).float()
    importance = torch.stack(zs).float()
    values = torch.rand(batch, channels, n, generator=gen)
    valid = torch.rand(batch, n, generator=gen) > 0.02
    return tuple(t.to(device) for t in (values, uv, importance, valid))


def time_calls(
    fn: Splat, args: tuple[Any, ...], device: torch.device, warmup: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of each repeat (CPU time is the steadier number on a shared machine)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn(*args)
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        fn(*args)
        sync()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return wall, cpu


def summarize(times: tuple[list[float], list[float]], batch: int) -> dict[str, Any]:
    wall, cpu = times
    median = statistics.median(wall)
    return {
        "seconds_per_call_median": round(median, 6),
        "seconds_per_call_min": round(min(wall), 6),
        "seconds_per_call": [round(t, 6) for t in wall],
        "seconds_per_pair": round(median / batch, 6),
        "pairs_per_second": round(batch / median, 1),
        "cpu_seconds_per_call_median": round(statistics.median(cpu), 6),
        "cpu_seconds_per_call": [round(t, 6) for t in cpu],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (1: per-core numbers)")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "splat.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        },
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "batch": args.batch,
        "channels": args.channels,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "pair": "one splat of one image (B pairs per call)",
        "baseline": "naive: boolean-compacted points, Python loop over 4 neighbours, index_put_(accumulate=True)",
        "runs": {},
    }
    for name in devices:
        device = torch.device(name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        results["runs"][name] = {"device_name": label}
        for size in args.sizes:
            inputs = warp_inputs(args.batch, size, args.channels, device)
            call = (*inputs, size, size)
            fast = summarize(time_calls(softmax_splat, call, device, args.warmup, args.repeats), args.batch)
            slow = summarize(time_calls(naive_splat, call, device, args.warmup, args.repeats), args.batch)
            out_a, dens_a = softmax_splat(*call)
            out_b, dens_b = naive_splat(*call)
            n = inputs[0].shape[-1]
            ratio = round(slow["seconds_per_call_median"] / fast["seconds_per_call_median"], 2)
            results["runs"][name][str(size)] = {
                "shapes": {"values": [args.batch, args.channels, n], "uv": [args.batch, n, 2], "out": [size, size]},
                "points_per_image": n,
                "point_fraction": round(n / size**2, 3),
                "covered_fraction": round((dens_a > 0.5).float().mean().item(), 3),
                "softmax_splat": fast,
                "naive": slow,
                "naive_over_softmax_splat": ratio,
                "naive_over_softmax_splat_cpu_time": round(
                    slow["cpu_seconds_per_call_median"] / fast["cpu_seconds_per_call_median"], 2
                ),
                "max_abs_diff_out": (out_a - out_b).abs().max().item(),
                "max_abs_diff_density": (dens_a - dens_b).abs().max().item(),
            }
            print(
                f"{name} {size}x{size}, B={args.batch}, {n} points/image: softmax_splat "
                f"{fast['seconds_per_pair'] * 1e3:.2f} ms/pair ({fast['pairs_per_second']:.0f} pairs/s); naive "
                f"{slow['seconds_per_pair'] * 1e3:.2f} ms/pair ({slow['pairs_per_second']:.0f} pairs/s); "
                f"naive/softmax_splat = {ratio:.2f}x (wall, median)",
                flush=True,
            )
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
