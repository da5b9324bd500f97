"""Training-step benchmark: samples/s per worker, with and without precomputed VAE latents, and MFU on a GPU.

    .venv/bin/python bench/train_bench.py                  # writes bench/results/train.json (CPU, tiny model)
    python bench/train_bench.py --full                     # on a GPU: the SD-2-inpainting-sized UNet, bf16

One training step = :func:`train.loss.training_loss` (VAE encode of target and partial view, or sampling stored
posterior moments; timestep, noise, UNet forward and backward) + AdamW step, the same code the Ray Train loop
runs, on synthetic pairs. Each case is measured after warm-up steps, median of the per-step times.

* ``tiny`` (CPU, one torch thread = one Ray Train worker with 1 CPU): the ``--tiny`` model at 64 and 256 px,
  batch 4, encoding on the fly (baseline) versus precomputed latents; reports samples/s and the ratio.
* ``full`` (CUDA only): UNet and VAE built from SD 2 inpainting's configs (random weights: cost, not quality) at
  512 px (64x64 latents), bf16 autocast, SDPA attention, with and without gradient checkpointing. FLOPs of one
  step are counted with ``torch.utils.flop_counter.FlopCounterMode`` (UNet forward + backward; the VAE encode is
  counted separately); MFU = counted FLOPs per second / the GPU's dense bf16 peak (H100/H200 SXM 989 TFLOP/s,
  A100 312). Also the VAE encoder's share of a step, i.e. what precomputed latents save.
Timings, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, write_results
from inference.conditioning import Conditioner
from invs.models import SD2_INPAINT_UNET_CONFIG, SD_SCHEDULER_CONFIG, SD_VAE_CONFIG, build_tiny_components
from train.loss import Denoiser, Frozen, LossConfig, training_loss

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def synthetic_batch(n: int, size: int, device: torch.device, moments_hw: int | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(n, 3, size, size, generator=g) * 2 - 1 for k in ("source", "target", "partial")}
    batch["mask"] = (torch.rand(n, 1, size, size, generator=g) > 0.5).float()
    if moments_hw is not None:
        mean = torch.randn(n, 2, 4, moments_hw, moments_hw, generator=g)
        batch["moments"] = torch.cat([mean, torch.full_like(mean, -6.0)], 2)  # (B, 2, 8, h, w)
    return {k: v.to(device) for k, v in batch.items()}


def time_steps(step, warmup: int, repeats: int, device: torch.device) -> list[float]:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def make_step(denoiser: Denoiser, frozen: Frozen, batch: dict[str, torch.Tensor], amp: torch.dtype | None):
    params = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    config = LossConfig(timesteps="cubic")
    device = batch["mask"].device
    counter = {"i": 0}

    def step() -> None:
        counter["i"] += 1
        generator = torch.Generator().manual_seed(counter["i"])
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = training_loss(denoiser, frozen, batch, config, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def tiny_cases(warmup: int, repeats: int) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    device = torch.device("cpu")
    parts = build_tiny_components(seed=0)
    frozen = Frozen(parts["vae"], parts["scheduler"], Conditioner("empty_prompt", parts))
    denoiser = Denoiser(parts["unet"]).train()
    rows = []
    for size in (64, 256):
        per_mode = {}
        for mode in ("encode", "latents"):
            batch = synthetic_batch(4, size, device, moments_hw=size // 4 if mode == "latents" else None)
            times = time_steps(make_step(denoiser, frozen, batch, None), warmup, repeats, device)
            per_mode[mode] = statistics.median(times)
            rows.append(
                {
                    "model": "tiny",
                    "resolution": size,
                    "batch": 4,
                    "mode": mode,
                    "s_per_step": per_mode[mode],
                    "samples_per_s_per_worker": 4 / per_mode[mode],
                }
            )
        rows[-1]["speedup_vs_encode"] = per_mode["encode"] / per_mode["latents"]
        print(
            f"tiny {size:3d}px: {4 / per_mode['encode']:.1f} samples/s encoding, {4 / per_mode['latents']:.1f} with "
            f"precomputed latents ({rows[-1]['speedup_vs_encode']:.2f}x)"
        )
    return rows


def full_cases(batch_size: int, warmup: int, repeats: int) -> list[dict[str, Any]]:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device("cuda")
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    unet = UNet2DConditionModel(**SD2_INPAINT_UNET_CONFIG).to(device)
    unet.set_attn_processor(AttnProcessor2_0())
    vae = AutoencoderKL(**SD_VAE_CONFIG).to(device, torch.bfloat16).requires_grad_(False)
    prompt = torch.randn(1, 77, 1024, device=device)
    frozen = Frozen(vae, DDPMScheduler(**SD_SCHEDULER_CONFIG), Conditioner.from_embedding(prompt))
    denoiser = Denoiser(unet).train()
    rows = []
    for checkpointing in (False, True):
        if checkpointing:
            unet.enable_gradient_checkpointing()
        for mode in ("encode", "latents"):
            batch = synthetic_batch(batch_size, 512, device, moments_hw=64 if mode == "latents" else None)
            step = make_step(denoiser, frozen, batch, torch.bfloat16)
            torch.cuda.reset_peak_memory_stats()
            times = time_steps(step, warmup, repeats, device)
            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops()
            s = statistics.median(times)
            row = {
                "model": "sd2-inpainting-sized (random weights)",
                "gpu": name,
                "resolution": 512,
                "batch": batch_size,
                "precision": "bf16 autocast",
                "gradient_checkpointing": checkpointing,
                "mode": mode,
                "s_per_step": s,
                "samples_per_s_per_gpu": batch_size / s,
                "flops_per_step": flops,
                "tflops_per_s": flops / s / 1e12,
                "mfu": flops / s / peak if peak else None,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
            }
            rows.append(row)
            print(
                f"{name} ckpt={checkpointing} {mode}: {row['samples_per_s_per_gpu']:.1f} samples/s, "
                f"{row['tflops_per_s']:.0f} TFLOP/s, MFU {row['mfu'] or float('nan'):.1%}"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="SD-2-inpainting-sized UNet on CUDA (bf16)")
    parser.add_argument("--batch-size", type=int, default=16, help="per GPU, for --full")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "train step (training_loss + AdamW)",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
    }
    if args.full:
        if not torch.cuda.is_available():
            raise SystemExit("error: --full needs a CUDA GPU")
        results["full"] = full_cases(args.batch_size, args.warmup, args.repeats)
        out = args.out or RESULTS / "train_gpu.json"
    else:
        results["tiny"] = tiny_cases(args.warmup, args.repeats)
        out = args.out or RESULTS / "train.json"
    write_results(results, out)


if __name__ == "__main__":
    main()
