"""Evaluate an exported model on held-out pairs: predicted views, PSNR/SSIM per pair, and a picture.

python train/evaluate.py --model out/train/model --data out/pairs --out out/eval

Uses the pairs of ``--split`` (default ``val``: objects the model never saw, by the index's uid-hash split) and
:class:`train.inference.NovelViewModel` (the pipeline fed as in training). Writes ``OUT/metrics.csv`` (one row
per pair: key, psnr, ssim, and psnr_partial = the partial view alone, for scale), ``OUT/summary.json`` (means)
and ``OUT/predictions.png`` (source | partial | mask | prediction | target for the first pairs).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invs import cli, shards, storage, tables
from invs.errors import InvsError

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
) -> dict[str, Any]:
    """Predict every chosen pair, write metrics and a picture under ``out``; returns the summary."""
    import torch

    from invs import metrics
    from invs.preview import png_bytes, prediction_sheet
    from train.batches import pair_to_tensors
    from train.data import collate
    from train.inference import NovelViewModel

    model = NovelViewModel.from_pretrained(model_uri, device=device)
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
        pred = model.predict(batch, steps=steps, guidance_scale=guidance_scale, seed=seed + start).cpu()
        target, partial = (batch["target"] + 1) / 2, (batch["partial"] + 1) / 2
        p, s, pp = metrics.psnr(pred, target), metrics.ssim(pred, target), metrics.psnr(partial, target)
        for i, key in enumerate(keys):
            rows.append({"key": key, "psnr": float(p[i]), "ssim": float(s[i]), "psnr_partial": float(pp[i])})
        room = GRID_ROWS - len(grid_batch["source"])
        for name in ("source", "partial", "mask", "target"):
            grid_batch[name] += list(batch[name][:room])
        grid_batch["prediction"] += list(pred[:room])
    if not rows:
        raise InvsError(f"none of the {len(raw)} {split!r} pairs could be read")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["key", "psnr", "ssim", "psnr_partial"])
    writer.writeheader()
    writer.writerows(rows)
    storage.write_text(storage.join(out, "metrics.csv"), buffer.getvalue())
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
        "psnr": sum(r["psnr"] for r in rows) / len(rows),
        "ssim": sum(r["ssim"] for r in rows) / len(rows),
        "psnr_partial": sum(r["psnr_partial"] for r in rows) / len(rows),
        "metrics_csv": storage.join(out, "metrics.csv"),
        "picture": picture,
    }
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.stage_parser("train/evaluate.py", __doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported model: OUT/model of train/run.py (local or s3://)")
    parser.add_argument("--data", required=True, help="pair shards (the preprocess stage's --out)")
    parser.add_argument("--out", required=True, help="where metrics and the picture go")
    parser.add_argument("--split", default="val", choices=["val", "train"])
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per view")
    parser.add_argument("--guidance-scale", type=float, default=1.0)
    parser.add_argument("--limit", type=int, help="at most this many pairs")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    cli.resolve_config(args, {})
    storage.check_writable(args.out)
    summary = evaluate(
        args.model,
        args.data,
        args.out,
        args.split,
        args.steps,
        args.guidance_scale,
        limit=args.limit,
        device=args.device,
    )
    print(
        f"evaluate: {summary['pairs']} {summary['split']} pairs: PSNR {summary['psnr']:.2f} dB, SSIM "
        f"{summary['ssim']:.3f} (partial view alone: {summary['psnr_partial']:.2f} dB)"
    )
    print(f"outputs: {summary['picture']}, {summary['metrics_csv']}")
    return 0


if __name__ == "__main__":
    cli.run(main)
