"""The paper path's model code on a GPU, without Ray: what `make rehearsal` runs on CPU, on CUDA in bf16.

    python bench/gpu_paper_path.py                    # on a CUDA machine (bench/gpu.sh runs it)
    python bench/gpu_paper_path.py --device cpu       # the same checks on CPU (a smoke run; the tests run it)

With the stand-ins of :mod:`invs.standins` (the real classes and config keys, random weights) on ``--device``:

* ``train_step``: the worker's own pieces (``freeze``, ``build_denoiser``, ``training_loss`` under the step's bf16
  autocast, AdamW, grad clipping, EMA) for a few steps, once encoding with the VAE and once from stored posterior
  moments; the loss must stay finite, and the seconds per step are recorded;
* ``validation``: ``NovelViewPipeline.score`` under the same autocast with the EMA weights;
* ``export``: the training export; its ``vae/`` and ``text_encoder/`` must be bit-identical to the stand-in's;
* ``reload``: ``NovelViewPipeline.load`` on the device, then ``predict``;
* ``zoedepth``: the ZoeDepth stand-in through :class:`invs.depth.DepthEstimator` in bf16 (bf16 only on CUDA).

Each check records ``ok``, its error and seconds in ``bench/results/gpu_paper_path.json``. It cannot prove NCCL,
Ray Train on GPUs, Cycles on GPUs or the real weights' numerics: README "What the rehearsal cannot prove".
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, write_results

RES = 64


def pair_batch(n: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = {k: torch.rand(n, 3, RES, RES, generator=g) * 2 - 1 for k in ("source", "partial", "target")}
    return {k: v.to(device) for k, v in (images | {"mask": torch.rand(n, 1, RES, RES, generator=g)}).items()}


def check(results: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    started = time.perf_counter()
    try:
        results[name] = {"ok": True, **fn()}
    except Exception as exc:  # noqa: BLE001 (a benchmark records any failure and goes on with the next check)
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        traceback.print_exc()
    results[name]["seconds"] = round(time.perf_counter() - started, 3)
    print(f"{name}: {'ok' if results[name]['ok'] else 'FAILED ' + results[name]['error']}", flush=True)


def run(device: torch.device, folder: Path) -> dict[str, Any]:
    from diffusers.training_utils import EMAModel
    from safetensors.torch import load_file

    from inference.conditioning import Conditioner
    from inference.pipeline import NovelViewPipeline
    from invs.config import load_config
    from invs.models import load_components
    from invs.standins import save_standins
    from train.loop import autocast, build_denoiser, export, freeze, model_spec
    from train.loss import Frozen, LossConfig, training_loss

    paths = save_standins(folder / "standins")
    overrides = {"train.model": str(paths["inpainting"]), "train.out": str(folder / "run")}
    config = load_config("paper", overrides)
    tc = config.train
    plan = SimpleNamespace(resolution=RES, pair_geometry={})
    amp = torch.bfloat16 if tc.mixed_precision == "bf16" else None
    parts = load_components(tc.model)
    freeze(parts, device)
    conditioner = Conditioner(tc.conditioning, parts).to(device)
    denoiser = build_denoiser(parts, conditioner, tc).to(device)
    trainable = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=tc.learning_rate)
    ema = EMAModel(trainable, decay=tc.ema_decay)
    ema.to(device)
    frozen = Frozen(parts["vae"], parts["scheduler"], conditioner)
    loss_config = LossConfig(timesteps=tc.timesteps, prediction_type=parts["scheduler"].config.prediction_type)
    results: dict[str, Any] = {}

    def steps(stored: bool) -> dict[str, Any]:
        losses, times = [], []
        for step in range(4):
            batch = pair_batch(tc.batch_size, device, step)
            if stored:
                with torch.no_grad():
                    moments = [parts["vae"].encode(batch[k]).latent_dist.parameters for k in ("target", "partial")]
                batch["moments"] = torch.stack(moments, 1).half().float()
            t0 = time.perf_counter()
            with autocast(device, amp):
                loss = training_loss(denoiser, frozen, batch, loss_config, torch.Generator().manual_seed(step))
                loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, tc.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(trainable)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
            losses.append(float(loss.detach()))
        if not all(torch.isfinite(torch.tensor(losses))):
            raise FloatingPointError(f"losses {losses}")
        return {"losses": losses, "s_per_step": round(sorted(times)[len(times) // 2], 4), "precision": str(amp)}

    check(results, "train_step_encoding", lambda: steps(stored=False))
    check(results, "train_step_stored_latents", lambda: steps(stored=True))

    def validation() -> dict[str, Any]:
        ema.store(trainable)
        ema.copy_to(trainable)
        try:
            with autocast(device, amp), torch.no_grad():
                spec = model_spec(config, parts, plan)
                model = NovelViewPipeline.from_parts(parts, denoiser.unet, spec, None, conditioner)
                _, scores = model.score({k: v.cpu() for k, v in pair_batch(2, device).items()}, 5, vae_ceiling=False)
        finally:
            ema.restore(trainable)
        if not all(torch.isfinite(v).all() for v in scores.values()):
            raise FloatingPointError(f"scores {scores}")
        return {"psnr_generated": float(scores["psnr_generated"].mean())}

    check(results, "validation", validation)

    def exported() -> dict[str, Any]:
        export(denoiser, ema, trainable, parts, config, plan)
        for part in ("vae", "text_encoder"):
            [a] = (paths["inpainting"] / part).glob("*.safetensors")
            [b] = (folder / "run" / "model" / part).glob("*.safetensors")
            x, y = load_file(a), load_file(b)
            if x.keys() != y.keys() or any(x[k].dtype != y[k].dtype or not torch.equal(x[k], y[k]) for k in x):
                raise AssertionError(f"exported {part}/ differs from the model's")
        denoiser.to(device)  # export moved it to the CPU
        return {}

    check(results, "export", exported)

    def reload() -> dict[str, Any]:
        model = NovelViewPipeline.load(str(folder / "run" / "model"), device=str(device))
        views = model.predict({k: v.cpu() for k, v in pair_batch(2, device).items()}, steps=5)
        if not torch.isfinite(views).all():
            raise FloatingPointError("non-finite views")
        return {"clip_sample": model.scheduler.config.clip_sample}

    check(results, "reload", reload)

    def zoedepth() -> dict[str, Any]:
        from invs.depth import DepthEstimator

        dtype = torch.bfloat16 if device.type == "cuda" else None
        estimator = DepthEstimator.from_pretrained(str(paths["zoedepth"]), device=device, dtype=dtype)
        depth = estimator(torch.rand(2, 3, RES, RES, generator=torch.Generator().manual_seed(0)).to(device))
        if not torch.isfinite(depth).all():
            raise FloatingPointError("non-finite depth")
        return {"shape": list(depth.shape), "dtype": str(depth.dtype)}

    check(results, "zoedepth", zoedepth)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=str(RESULTS / "gpu_paper_path.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (use --device cpu for a smoke run)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="invs-paper-path-") as tmp:
        checks = run(device, Path(tmp))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    write_results({"device": name, "torch": torch.__version__, "checks": checks}, args.out)
    failed = [k for k, v in checks.items() if not v["ok"]]
    print(f"paper path on {name}: {len(checks) - len(failed)} of {len(checks)} checks ok; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
