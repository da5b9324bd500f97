"""Evaluate an exported model on held-out pairs: predicted views, PSNR/SSIM per pair, and a picture.

python train/evaluate.py --model out/train/model --data out/pairs --out out/eval
python train/evaluate.py --config local      # the model, pairs and settings of a config's training run

Uses the pairs of ``--split`` (default ``val``: objects the model never saw, by the index's uid-hash split) and
:class:`train.inference.NovelViewModel` (the pipeline fed as in training). Writes ``OUT/metrics.csv`` (one row
per pair: key, psnr, ssim, and psnr_partial = the partial view alone, for scale), ``OUT/summary.json`` (means)
and ``OUT/predictions.png`` (source | partial | mask | prediction | target for the first pairs).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invs import cli, shards, storage, tables
from invs.errors import InvsError
from train.inference import SCORED

GRID_ROWS = 8


def held_out_pairs(data: str, split: str, limit: int | None) -> list[tuple[str, dict[str, bytes]]]:
    """Raw members of the index's ``split`` pairs (sorted by key, at most ``limit``), read from their shards."""
    from train.data import index_shard, read_samples

    rows = tables.read_table(storage.join(data, "index"), tables.INDEX_SCHEMA).to_pylist()
    if not rows:
        raise InvsError(f"no pair index at {data}; --data must be the --out of the preprocess stage")
    chosen = sorted((r["key"], index_shard(data, r["shard"])) for r in rows if r["split"] == split)
    if not chosen:
        raise InvsError(
            f"the pair index at {data} has no {split!r} pairs (splits: {sorted({r['split'] for r in rows})})"
        )
    chosen = chosen[:limit] if limit else chosen
    found: list[tuple[str, dict[str, bytes]]] = []
    for shard in sorted({s for _, s in chosen}):
        found += read_samples(shard, {k for k, s in chosen if s == shard})
    return sorted(found)


#: Per-pair columns of ``metrics.csv``: the model's views as it delivers them (``psnr``/``ssim``, its known-pixels
#: default), then every view of :data:`train.inference.SCORED`.
COLUMNS = ("key", "psnr", "ssim", *(f"{m}_{n}" for n in SCORED for m in ("psnr", "ssim")))


def evaluate(
    model_uri: str,
    data: str,
    out: str,
    split: str = "val",
    steps: int = 20,
    guidance_scale: float = 1.0,
    batch_size: int = 8,
    limit: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    known_pixels: str | None = None,
) -> dict[str, Any]:
    """Predict every chosen pair, write metrics and a picture under ``out``; returns the summary.

    ``known_pixels`` (``composite`` / ``generate``; None: the model's default) chooses which of the model's views
    are ``psnr``/``ssim`` and the picture; both are always scored.
    """
    import torch

    from invs.preview import png_bytes, prediction_sheet
    from train.batches import pair_to_tensors
    from train.data import collate
    from train.inference import NovelViewModel, delivered_view

    model = NovelViewModel.from_pretrained(model_uri, device=device)
    known_pixels = known_pixels or model.known_pixels
    try:
        delivered = delivered_view(known_pixels)
    except ValueError as exc:
        raise InvsError(str(exc)) from None
    raw = held_out_pairs(data, split, limit)
    rows: list[dict[str, Any]] = []
    grid_batch: dict[str, list] = {"source": [], "partial": [], "mask": [], "target": [], "prediction": []}
    skipped = 0
    for start in range(0, len(raw), batch_size):
        items, keys = [], []
        for key, members in raw[start : start + batch_size]:
            try:
                items.append(pair_to_tensors(shards.decode_pair_sample(key, members), model.resolution))
                keys.append(key)
            except InvsError as exc:
                skipped += 1
                print(f"warning: skipping pair {key}: {exc}", file=sys.stderr)
        if not items:
            continue
        batch = collate(items)
        views, scores = model.score(batch, steps, guidance_scale, seed + start)
        for i, key in enumerate(keys):
            row = {
                "key": key,
                "psnr": float(scores[f"psnr_{delivered}"][i]),
                "ssim": float(scores[f"ssim_{delivered}"][i]),
            }
            rows.append(row | {name: float(value[i]) for name, value in scores.items()})
        room = GRID_ROWS - len(grid_batch["source"])
        for name in ("source", "partial", "mask", "target"):
            grid_batch[name] += list(batch[name][:room])
        grid_batch["prediction"] += list(views[delivered][:room])
    if not rows:
        raise InvsError(f"none of the {len(raw)} {split!r} pairs could be read")
    storage.write_text(storage.join(out, "metrics.csv"), tables.csv_text(rows, COLUMNS))
    stacked = {k: torch.stack(v) for k, v in grid_batch.items()}
    labels = [r["key"] for r in rows[:GRID_ROWS]]
    picture = storage.join(out, "predictions.png")
    storage.write_bytes(picture, png_bytes(prediction_sheet(stacked, stacked["prediction"], labels)))
    summary = {
        "model": model_uri,
        "data": data,
        "split": split,
        "pairs": len(rows),
        "skipped": skipped,
        "inference_steps": steps,
        "known_pixels": known_pixels,
        **{c: sum(r[c] for r in rows) / len(rows) for c in COLUMNS if c != "key"},
        "metrics_csv": storage.join(out, "metrics.csv"),
        "picture": picture,
    }
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
    return summary


def comparison_table(summaries: dict[str, dict[str, Any]]) -> str:
    """The model beside its baselines, one column pair (PSNR dB, SSIM) per evaluated split, as aligned text."""
    labels = {
        "": "model (as delivered)",
        "_generated": "model, generated views",
        "_composite": "model, known pixels kept",
        "_partial": "partial view alone",
        "_source": "source view copied",
        "_vae": "VAE round trip of target",
    }
    titles = [f"{name} ({summary['pairs']} pairs)" for name, summary in summaries.items()]
    head = f"{'':26}" + "".join(f"{title:>26}" for title in titles)
    lines = [head, f"{'':26}" + "".join(f"{'PSNR dB':>16}{'SSIM':>10}" for _ in summaries)]
    for suffix, label in labels.items():
        cells = "".join(f"{s['psnr' + suffix]:>16.2f}{s['ssim' + suffix]:>10.3f}" for s in summaries.values())
        lines.append(f"{label:26}{cells}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from train.inference import KNOWN_PIXELS

    parser = cli.stage_parser("train/evaluate.py", __doc__.splitlines()[0])
    parser.add_argument("--model", help="exported model (local or s3://); default: the config's train.out/model")
    parser.add_argument("--out", help="where metrics and the picture go; default: the config's train.out/evaluation")
    parser.add_argument("--split", default="val", choices=["val", "train"])
    flags = cli.add_settings(
        parser,
        "train",
        {
            "data": "pair shards (the preprocess stage's --out)",
            "val_inference_steps": ("steps", "denoising steps per view"),
            "guidance_scale": "classifier-free guidance (1: none)",
        },
    )
    parser.add_argument("--limit", type=int, help="at most this many pairs")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when train.use_gpu, else cpu")
    parser.add_argument(
        "--known-pixels",
        choices=KNOWN_PIXELS,
        help="which views count as the model's (both are scored); default: the model's own (invs.json)",
    )
    args = parser.parse_args(argv)
    tc = cli.resolve_config(args, flags).train
    out = args.out or storage.join(tc.out, "evaluation")
    storage.check_writable(out)
    summary = evaluate(
        args.model or storage.join(tc.out, "model"),
        tc.data,
        out,
        args.split,
        tc.val_inference_steps,
        tc.guidance_scale,
        limit=args.limit,
        device=args.device or ("cuda" if tc.use_gpu else "cpu"),
        known_pixels=args.known_pixels,
    )
    print(f"evaluate: {summary['pairs']} {summary['split']} pairs, known pixels: {summary['known_pixels']}")
    print(comparison_table({summary["split"]: summary}))
    print(f"outputs: {summary['picture']}, {summary['metrics_csv']}")
    return 0


if __name__ == "__main__":
    cli.exit_with(main)
