"""What the demo's training recipe rests on: the tiny model's predictions against the zero-cost baselines, per recipe.

    .venv/bin/python bench/recipe_bench.py                   # after `make demo`: its pairs in out/local/pairs
    .venv/bin/python bench/recipe_bench.py --data PAIRS --steps 600 --out bench/results/recipe.json

A learning benchmark, not a timing one: on a pair dataset it fits the tiny VAE once (as ``train/run.py`` does:
:func:`invs.models.fit_tiny_vae` on the train targets), then trains the tiny UNet in this process under each recipe
with the same code the Ray Train loop runs (:func:`train.loss.training_loss`, AdamW, EMA, gradient clipping) and
predicts with :class:`inference.pipeline.NovelViewPipeline` from pure noise. Every recipe sees the same VAE, batches and
seeds, so the rows differ only by the recipe. Reported per split (the first ``--eval-pairs`` training pairs; every
held-out pair): PSNR/SSIM of the generated views, of the views with known pixels kept (``composite``), of the
partial view alone, of the source view copied, and of the VAE's round trip of the target.

Recipes: ``sd_scale_epsilon`` (SD's 0.18215 on the fitted VAE, epsilon), ``epsilon`` (the measured scale),
``v_uniform``, ``v_cubic`` (the demo's), ``v_logit_normal``, ``v_cubic_area_mask``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, write_results

RECIPES: dict[str, dict[str, Any]] = {
    "sd_scale_epsilon": {"scale": 0.18215, "prediction_type": "epsilon", "timesteps": "cubic"},
    "epsilon": {"prediction_type": "epsilon", "timesteps": "cubic"},
    "v_uniform": {"prediction_type": "v_prediction", "timesteps": "uniform"},
    "v_cubic": {"prediction_type": "v_prediction", "timesteps": "cubic"},
    "v_logit_normal": {"prediction_type": "v_prediction", "timesteps": "logit_normal"},
    "v_cubic_area_mask": {"prediction_type": "v_prediction", "timesteps": "cubic", "mask": "area"},
}


def load_split(data: str, split: str, limit: int | None) -> dict[str, torch.Tensor]:
    from inference.evaluate import held_out_pairs
    from invs import shards
    from invs.pair_builder import collate, pair_to_tensors

    raw = held_out_pairs(data, split, limit)
    first = shards.decode_pair_sample(*raw[0])
    return collate([pair_to_tensors(shards.decode_pair_sample(k, m), first.target.shape[0]) for k, m in raw])


def score(model: Any, batch: dict[str, torch.Tensor], steps: int) -> dict[str, list[float]]:
    _, scores = model.score(batch, steps)
    return {name: [round(float(v.mean()), 4)] for name, v in scores.items()}


def run_recipe(name: str, recipe: dict[str, Any], vae_state: dict, scale: float, data: dict, args: Any) -> dict:
    from diffusers.training_utils import EMAModel

    import inference.pipeline
    import train.loss
    from inference.conditioning import Conditioner
    from inference.pipeline import NovelViewPipeline, mask_to_latent
    from invs.config import TrainConfig
    from invs.models import build_tiny_components
    from invs.standins import standin_spec
    from train.loop import build_denoiser
    from train.loss import Frozen, LossConfig, training_loss

    downsample = functools.partial(mask_to_latent, mode=recipe.get("mask", "max"))
    train.loss.mask_to_latent = inference.pipeline.mask_to_latent = downsample  # both sides of the latent mask
    parts = build_tiny_components(seed=0)
    parts["vae"].load_state_dict(vae_state)
    parts["vae"].register_to_config(scaling_factor=recipe.get("scale", scale))
    parts["scheduler"] = type(parts["scheduler"]).from_config(
        parts["scheduler"].config, prediction_type=recipe["prediction_type"]
    )
    conditioner = Conditioner("empty_prompt", parts)
    denoiser = build_denoiser(parts, conditioner, TrainConfig(tiny=True))
    trainable = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=1e-2)
    ema = EMAModel(trainable, decay=0.99)
    frozen = Frozen(parts["vae"], parts["scheduler"], conditioner)
    loss_config = LossConfig(timesteps=recipe["timesteps"], prediction_type=recipe["prediction_type"])
    train_pairs = data["train_all"]
    g = torch.Generator().manual_seed(1)
    started, losses = time.perf_counter(), []
    for _ in range(args.steps):
        pick = torch.randint(0, len(train_pairs["target"]), (args.batch_size,), generator=g)
        batch = {k: v[pick] for k, v in train_pairs.items() if v.dtype.is_floating_point}
        loss = training_loss(denoiser, frozen, batch, loss_config, g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        ema.step(trainable)
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - started
    ema.copy_to(trainable)
    denoiser.eval()
    spec = standin_spec(
        args.resolution, prediction_type=recipe["prediction_type"], latent_scale=recipe.get("scale", scale)
    )
    model = NovelViewPipeline.from_parts(parts, denoiser.unet, spec, None, conditioner)
    result = {"recipe": recipe, "train_seconds": round(seconds, 1), "loss_last_50": sum(losses[-50:]) / 50}
    for split in ("train", "val"):
        result[split] = {k: v[0] for k, v in score(model, data[split], args.inference_steps).items()}
    t, v = result["train"], result["val"]
    print(
        f"{name:20} train {t['psnr_generated']:.2f}/{t['ssim_generated']:.3f} (composite {t['psnr_composite']:.2f}/"
        f"{t['ssim_composite']:.3f}, partial {t['psnr_partial']:.2f}/{t['ssim_partial']:.3f})  held-out "
        f"{v['psnr_generated']:.2f}/{v['ssim_generated']:.3f} (composite {v['psnr_composite']:.2f}/"
        f"{v['ssim_composite']:.3f}, partial {v['psnr_partial']:.2f}/{v['ssim_partial']:.3f})",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="out/local/pairs", help="pair shards with train and val splits")
    parser.add_argument("--out", default=str(RESULTS / "recipe.json"))
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--steps", type=int, default=600, help="UNet training steps per recipe")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--vae-steps", type=int, default=300)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--inference-steps", type=int, default=20)
    parser.add_argument("--eval-pairs", type=int, default=16, help="training pairs scored (held-out: all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from invs import metrics
    from invs.models import build_tiny_components, fit_tiny_vae, vae_round_trip

    train_all = load_split(args.data, "train", None)
    data = {
        "train_all": train_all,
        "train": {k: v[: args.eval_pairs] for k, v in train_all.items()},
        "val": load_split(args.data, "val", None),
    }
    args.resolution = int(train_all["target"].shape[-1])
    vae = build_tiny_components(seed=0)["vae"]
    started = time.perf_counter()
    fit_tiny_vae(vae, train_all["target"], args.vae_steps, lr=args.vae_lr)
    vae_seconds = time.perf_counter() - started
    round_trip = {}
    for split in ("train", "val"):
        target = data[split]["target"]
        round_trip[split] = round(
            float(metrics.psnr((vae_round_trip(vae, target) + 1) / 2, (target + 1) / 2).mean()), 3
        )
    scale = vae.config.scaling_factor
    print(f"VAE: {args.vae_steps} steps in {vae_seconds:.0f} s, round trip {round_trip} dB, scale {scale:.4f}")
    results: dict[str, Any] = {
        "data": args.data,
        "train_pairs": len(train_all["target"]),
        "val_pairs": len(data["val"]["target"]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "recipes")},
        "vae": {
            "seconds": round(vae_seconds, 1),
            "round_trip_psnr": round_trip,
            "scaling_factor": vae.config.scaling_factor,
        },
        "recipes": {},
    }
    state = {k: v.clone() for k, v in vae.state_dict().items()}
    for name in args.recipes:
        results["recipes"][name] = run_recipe(name, RECIPES[name], state, vae.config.scaling_factor, data, args)
    write_results(results, args.out)


if __name__ == "__main__":
    main()
