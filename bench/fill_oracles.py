"""What the generated region must get right to beat the partial view alone: oracle fills scored by the protocol.

    python bench/fill_oracles.py --model out/scaling/n64/train/model --renders out/scaling/renders_real

The partial view alone fills every pixel it does not know with white (the background), and PSNR and SSIM reward
that on unseen objects: about half of the region to generate is background. This bench scores, on the protocol's
pairs of ``--renders`` (view 0 the source, views 1..4 the targets, ground-truth depth; the pairs built as the
model's spec says), fills of the region to generate that stand for models of known quality, each with known pixels
kept by the soft mask as the model's own view: the target itself (a perfect model), the target blurred by a Gaussian
of sigma 1, 2 and 4 px (a model right up to that blur), the target with Gaussian noise (a model right but mottled),
the VAE's round trip of the target (the ceiling of any model with this VAE) and a flat grey (a model that knows
nothing); beside them the model and the partial view alone. It also splits each view's squared error and SSIM loss
(1 - the SSIM map) between the region to generate (mask >= 0.5) on the target's object and on its background, and
the rest. Results: ``bench/results/fill_oracles.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, write_results

#: A target pixel is the object's where its darkest channel is below this (renders are composited on white).
OBJECT_BELOW = 0.97


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(B, 3, H, W)`` blurred by a separable Gaussian of ``sigma`` px (radius 2 sigma, edges replicated)."""
    radius = max(1, round(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).repeat(3, 1, 1, 1)
    padded = F.pad(images, (radius,) * 4, mode="replicate")
    rows = F.conv2d(padded, kernel.view(3, 1, 1, -1), groups=3)
    return F.conv2d(rows, kernel.view(3, 1, -1, 1), groups=3)


def regions(target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Weights ``(B, 1, H, W)`` of the region to generate (mask >= 0.5) on the target's object, on its background,
    and of the rest."""
    on_object = (target.min(1, keepdim=True).values < OBJECT_BELOW).float()
    generate = (mask >= 0.5).float()
    return {
        "generate_object": generate * on_object,
        "generate_background": generate * (1 - on_object),
        "kept": 1 - generate,
    }


def loss_shares(
    view: torch.Tensor, target: torch.Tensor, where: dict[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """Of the squared error and of the SSIM loss summed over all pairs: the share in each of :func:`regions`."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _, ssim_map = structural_similarity_index_measure(
        view, target, data_range=1.0, reduction="none", return_full_image=True
    )
    losses = {"squared_error": ((view - target) ** 2).mean(1, keepdim=True), "ssim_loss": 1 - ssim_map.mean(1, True)}
    shares: dict[str, dict[str, float]] = {}
    for name, loss in losses.items():
        total = float(loss.sum())
        shares[name] = {r: round(float((loss * w).sum()) / total, 3) for r, w in where.items()} | {
            "total": round(total, 1)
        }
    return shares


def oracle_views(model: Any, batch: dict[str, torch.Tensor], steps: int) -> dict[str, torch.Tensor]:
    """The views scored (see the module docstring), ``(B, 3, H, W)`` in [0, 1]."""
    from inference.pipeline import keep_known
    from invs.models import vae_round_trip

    target, partial, mask = (batch["target"] + 1) / 2, (batch["partial"] + 1) / 2, batch["mask"]
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    fills = {
        "target (a perfect model)": target,
        **{f"target blurred, sigma {s:g} px": gaussian_blur(target, s) for s in (1.0, 2.0, 4.0)},
        **{f"target + noise, std {s:g}": (target + s * noise).clamp(0, 1) for s in (0.02, 0.05)},
        "VAE round trip of the target": (vae_round_trip(model.vae, batch["target"]) + 1) / 2,
        "flat grey 0.8 (knows nothing)": torch.full_like(target, 0.8),
    }
    views = {name: keep_known(fill, partial, mask) for name, fill in fills.items()}
    views["model"] = model.predict(batch, steps, seeds=list(range(len(target))), known_pixels="composite")
    views["partial view alone"] = partial
    return views


def main(argv: list[str] | None = None) -> int:
    from inference.pipeline import NovelViewPipeline
    from inference.protocol import protocol_pairs
    from invs import metrics
    from invs.pair_builder import collate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an exported model (its spec builds the pairs)")
    parser.add_argument("--renders", required=True, help="render shards scored by the protocol")
    parser.add_argument("--steps", type=int, default=20, help="the model's sampling steps")
    parser.add_argument("--results", default=str(RESULTS / "fill_oracles.json"))
    args = parser.parse_args(argv)
    model = NovelViewPipeline.load(args.model)
    pairs = [item for _, _, item in protocol_pairs(args.renders, model.spec, 4, "gt", None, "cpu") if item]
    batch = collate(pairs)
    target = (batch["target"] + 1) / 2
    views = oracle_views(model, batch, args.steps)
    scores = metrics.compare(views, target)
    where = regions(target, batch["mask"])
    rows = {
        name: {
            "psnr": round(float(scores[f"psnr_{name}"].mean()), 3),
            "ssim": round(float(scores[f"ssim_{name}"].mean()), 4),
            "shares": loss_shares(view, target, where),
        }
        for name, view in views.items()
    }
    generate = 1 - where["kept"]
    results = {
        "model": args.model,
        "renders": args.renders,
        "pairs": len(pairs),
        "generate_fraction": round(float(generate.mean()), 4),
        "generate_on_background": round(float(where["generate_background"].sum() / generate.sum()), 4),
        "views": rows,
    }
    write_results(results, args.results)
    print(f"{len(pairs)} pairs; {results['generate_on_background']:.0%} of the region to generate is background")
    for name, row in rows.items():
        s = row["shares"]["ssim_loss"]
        print(
            f"{name:32s} {row['psnr']:6.2f} dB  SSIM {row['ssim']:.3f}  (SSIM loss: {s['generate_object']:.0%} "
            f"object to generate, {s['generate_background']:.0%} background to generate, total {s['total']:.0f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
