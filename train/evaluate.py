"""Evaluate an exported model on held-out pairs: the model and its baselines by PSNR, SSIM and LPIPS, and a picture.

python train/evaluate.py --model out/train/model --data out/pairs --out out/eval
python train/evaluate.py --config local      # the model, pairs and settings of a config's training run
python train/evaluate.py --model out/train/model --renders out/gso_renders --out out/eval_gso --depth gt

Uses the pairs of ``--split`` (default ``val``: objects the model never saw, by the index's uid-hash split) and
:class:`train.inference.NovelViewModel` (the pipeline fed as in training). Every method of :data:`METHODS` (the
model, its variants, the partial view alone, the source view copied, the VAE ceiling) is scored on the same
pixels. Writes ``OUT/metrics.csv`` (one row per pair and method), ``OUT/summary.json`` (means with bootstrap 95%
intervals, per-object means; ``lpips`` null with ``lpips_unavailable`` saying which weights file is missing),
``OUT/results.md`` (the table) and ``OUT/predictions.png`` (source | partial | mask | prediction | target).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invs import cli, shards, storage, tables
from invs.devices import pick_device
from invs.errors import InvsError, ShardFormatError

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


#: The methods scored on the same pixels, as rows: name -> view of :data:`train.inference.SCORED`. ``model`` is the
#: view the model delivers (its known-pixels setting); the others are its two variants, the zero-cost baselines and
#: the VAE's round trip of the target (the ceiling of any generated view).
METHODS = {
    "model": None,
    "model, generated": "generated",
    "model, known pixels kept": "composite",
    "partial view alone": "partial",
    "source view copied": "source",
    "VAE round trip (ceiling)": "vae",
}
METRICS = ("psnr", "ssim", "lpips")
#: ``metrics.csv``: one row per pair and method.
COLUMNS = ("key", "uid", "method", *METRICS)
BOOTSTRAP_SAMPLES = 1000


def pair_uids(data: str) -> dict[str, str]:
    """Pair key -> object uid, from the pair index."""
    table = tables.read_table(storage.join(data, "index"), tables.INDEX_SCHEMA)
    return dict(zip(table.column("key").to_pylist(), table.column("uid").to_pylist(), strict=True))


def lpips_or_reason(device: str) -> tuple[Any, str | None]:
    """The LPIPS network, or None and why it is unavailable (the file looked for)."""
    from invs.lpips import LpipsUnavailable, load_lpips

    try:
        return load_lpips(device), None
    except LpipsUnavailable as exc:
        return None, str(exc)


def bootstrap_ci(values: list[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[float] | None:
    """95% percentile-bootstrap interval of the mean over pairs (None for fewer than 2 finite values)."""
    import numpy as np

    x = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if len(x) < 2:
        return None
    means = np.random.default_rng(seed).choice(x, size=(samples, len(x)), replace=True).mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def _mean(values: list[float]) -> float | None:
    import math

    finite = [v for v in values if v is not None and math.isfinite(v)]
    return round(sum(finite) / len(finite), 4) if finite else None


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: mean and bootstrap 95% interval of each metric over pairs; per object: means per method."""
    methods: dict[str, Any] = {}
    objects: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        methods[method] = {
            m: {"mean": _mean([r[m] for r in mine]), "ci95": bootstrap_ci([r[m] for r in mine if r[m] is not None])}
            for m in METRICS
            if any(r[m] is not None for r in mine)
        }
        for uid in sorted({r["uid"] for r in mine}):
            objects.setdefault(uid, {})[method] = {
                m: _mean([r[m] for r in mine if r["uid"] == uid]) for m in METRICS if mine[0][m] is not None
            }
    return {"methods": methods, "objects": objects}


def results_markdown(summary: dict[str, Any]) -> str:
    """A table a person can paste: methods as rows, mean [95% interval] per metric."""

    def cell(entry: dict[str, Any] | None, digits: int) -> str:
        if not entry or entry["mean"] is None:
            return "n/a"
        ci = entry["ci95"]
        return f"{entry['mean']:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")

    lines = [
        f"Model `{summary['model']}` on {summary['pairs']} {summary['split']} pairs of {summary['objects_count']} "
        f"objects ({summary['inference_steps']} steps, guidance {summary['guidance_scale']}, seed {summary['seed']}).",
        "",
        "| method | PSNR dB ↑ | SSIM ↑ | LPIPS ↓ |",
        "|---|---|---|---|",
    ]
    for method, entry in summary["methods"].items():
        cells = [cell(entry.get(m), d) for m, d in zip(METRICS, (2, 3, 3), strict=True)]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    if summary["lpips_unavailable"]:
        lines += ["", f"LPIPS: not computed ({summary['lpips_unavailable']})."]
    return "\n".join(lines) + "\n"


def shard_pairs(
    data: str, split: str, limit: int | None, resolution: int
) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    """``(key, uid, tensors)`` of the pair index's ``split`` pairs (tensors None, with a warning, when a pair is
    unreadable)."""
    from train.batches import pair_to_tensors

    uids = pair_uids(data)
    for n, (key, members) in enumerate(held_out_pairs(data, split, limit)):
        try:
            sample = shards.decode_pair_sample(key, members)
            if n == 0 and sample.target.shape[:2] != (resolution, resolution):
                raise InvsError(
                    f"the pairs at {data} are {sample.target.shape[1]}x{sample.target.shape[0]} px and the model "
                    f"works at {resolution} px: preprocess with --resolution {resolution}, or use --renders"
                )
            yield key, uids.get(key, ""), pair_to_tensors(sample, resolution)
        except ShardFormatError as exc:
            print(f"warning: skipping pair {key}: {exc}", file=sys.stderr)
            yield key, uids.get(key, ""), None


def evaluate(
    model_uri: str,
    data: str | None,
    out: str,
    split: str = "val",
    steps: int = 20,
    guidance_scale: float = 1.0,
    batch_size: int = 8,
    limit: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    known_pixels: str | None = None,
    renders: str | None = None,
    views_per_object: int = 4,
    depth: str = "gt",
    depth_model: str | None = None,
    half_angle_deg: float = 45.0,
) -> dict[str, Any]:
    """Predict every chosen pair and score every method of :data:`METHODS` on it; write ``metrics.csv`` (a row
    per pair and method), ``summary.json`` (means with bootstrap 95% intervals, per-object means),
    ``results.md`` and ``predictions.png`` under ``out``; returns the summary.

    Pairs come from the pair shards at ``data`` (their ``split``), or, given ``renders``, straight from render
    shards by the written protocol (:mod:`train.protocol`: ``views_per_object``, ``depth``, ``half_angle_deg``).
    ``known_pixels`` (``composite`` / ``generate``; None: the model's default) chooses which view is ``model``.
    """
    import itertools

    import torch

    from invs.preview import png_bytes, prediction_sheet
    from train.data import collate
    from train.inference import NovelViewModel, delivered_view

    model = NovelViewModel.from_pretrained(model_uri, device=device)
    known_pixels = known_pixels or model.known_pixels
    try:
        delivered = delivered_view(known_pixels)
    except ValueError as exc:
        raise InvsError(str(exc)) from None
    lpips, lpips_reason = lpips_or_reason(device)
    if renders is not None:
        from train.protocol import protocol_pairs

        source: Iterator[tuple[str, str, dict[str, Any] | None]] = protocol_pairs(
            renders, model.resolution, views_per_object, depth, depth_model, half_angle_deg, limit, device
        )
    elif data is not None:
        source = shard_pairs(data, split, limit, model.resolution)
    else:
        raise InvsError("evaluate needs pair shards (--data) or render shards (--renders)")
    rows: list[dict[str, Any]] = []
    grid_batch: dict[str, list] = {"source": [], "partial": [], "mask": [], "target": [], "prediction": []}
    skipped, scored_keys, start = 0, [], 0
    while chunk := list(itertools.islice(source, batch_size)):
        good = [(key, uid, item) for key, uid, item in chunk if item is not None]
        skipped += len(chunk) - len(good)
        if good:
            batch = collate([item for _, _, item in good])
            views, scores = model.score(batch, steps, guidance_scale, seed + start, lpips=lpips)
            for i, (key, uid, _) in enumerate(good):
                for method, view in METHODS.items():
                    view = view or delivered
                    row = {"key": key, "uid": uid, "method": method}
                    rows.append(
                        row
                        | {m: (float(scores[f"{m}_{view}"][i]) if f"{m}_{view}" in scores else None) for m in METRICS}
                    )
            scored_keys += [key for key, _, _ in good]
            room = GRID_ROWS - len(grid_batch["source"])
            for name in ("source", "partial", "mask", "target"):
                grid_batch[name] += list(batch[name][:room])
            grid_batch["prediction"] += list(views[delivered][:room])
        start += len(chunk)
    if not rows:
        where = renders if renders is not None else f"{data} ({split!r})"
        raise InvsError(f"none of the {start} pairs from {where} could be read")
    storage.write_text(storage.join(out, "metrics.csv"), tables.csv_text(rows, COLUMNS))
    stacked = {k: torch.stack(v) for k, v in grid_batch.items()}
    picture = storage.join(out, "predictions.png")
    storage.write_bytes(picture, png_bytes(prediction_sheet(stacked, stacked["prediction"], scored_keys[:GRID_ROWS])))
    breakdown = summarize_rows(rows)
    model_means = breakdown["methods"]["model"]
    summary = {
        "model": model_uri,
        "data": data if renders is None else None,
        "renders": renders,
        "split": split if renders is None else "protocol",
        "protocol": (
            {"views_per_object": views_per_object, "depth": depth, "half_angle_deg": half_angle_deg}
            if renders is not None
            else None
        ),
        "pairs": len(scored_keys),
        "objects_count": len({r["uid"] for r in rows}),
        "skipped": skipped,
        "inference_steps": steps,
        "device": device,
        "guidance_scale": guidance_scale,
        "seed": seed,
        "known_pixels": known_pixels,
        "psnr": model_means["psnr"]["mean"],
        "ssim": model_means["ssim"]["mean"],
        "lpips": model_means["lpips"]["mean"] if "lpips" in model_means else None,
        "lpips_unavailable": lpips_reason,
        **breakdown,
        "metrics_csv": storage.join(out, "metrics.csv"),
        "results_md": storage.join(out, "results.md"),
        "picture": picture,
    }
    storage.write_text(summary["results_md"], results_markdown(summary))
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
    return summary


def comparison_table(summaries: dict[str, dict[str, Any]]) -> str:
    """Methods as rows beside each other's evaluations (columns: PSNR dB, SSIM, LPIPS per named summary)."""
    titles = [f"{name} ({summary['pairs']} pairs)" for name, summary in summaries.items()]
    head = f"{'':26}" + "".join(f"{title:>30}" for title in titles)
    lines = [head, f"{'':26}" + "".join(f"{'PSNR dB':>12}{'SSIM':>9}{'LPIPS':>9}" for _ in summaries)]
    first = next(iter(summaries.values()))
    for method in first["methods"]:
        cells = ""
        for s in summaries.values():
            entry = s["methods"].get(method, {})
            values = [entry.get(m, {}).get("mean") for m in METRICS]
            cells += "".join(
                f"{v:>{w}.{d}f}" if v is not None else f"{'n/a':>{w}}"
                for v, w, d in zip(values, (12, 9, 9), (2, 3, 3), strict=True)
            )
        lines.append(f"{method:26}{cells}")
    reasons = {s["lpips_unavailable"] for s in summaries.values() if s.get("lpips_unavailable")}
    lines += [f"LPIPS: not computed ({reason})" for reason in sorted(reasons)]
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
    parser.add_argument(
        "--renders", help="evaluate straight from render shards by the written protocol (train/protocol.py)"
    )
    parser.add_argument("--views-per-object", type=int, default=4, help="--renders: targets per object (views 1..K)")
    parser.add_argument("--depth", choices=["gt", "zoedepth"], default="gt", help="--renders: the source's depth")
    parser.add_argument("--depth-model", help="--renders --depth zoedepth: hub id or local path")
    parser.add_argument("--limit", type=int, help="at most this many pairs")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when this machine has it, else cpu")
    parser.add_argument(
        "--known-pixels",
        choices=KNOWN_PIXELS,
        help="which views count as the model's (both are scored); default: the model's own (invs.json)",
    )
    args = parser.parse_args(argv)
    if args.views_per_object < 1:
        parser.error("--views-per-object must be >= 1")
    config = cli.resolve_config(args, flags)
    tc = config.train
    out = args.out or storage.join(tc.out, "evaluation")
    device = pick_device(args.device)
    storage.check_writable(out)
    summary = evaluate(
        args.model or storage.join(tc.out, "model"),
        tc.data,
        out,
        args.split,
        tc.val_inference_steps,
        tc.guidance_scale,
        limit=args.limit,
        device=device,
        known_pixels=args.known_pixels,
        renders=args.renders,
        views_per_object=args.views_per_object,
        depth=args.depth,
        depth_model=args.depth_model or config.preprocess.depth_model,
        half_angle_deg=config.preprocess.mask_half_angle_deg,
    )
    print(f"evaluate: {summary['pairs']} {summary['split']} pairs, known pixels: {summary['known_pixels']}")
    print(comparison_table({summary["split"]: summary}))
    print(f"outputs: {summary['results_md']}, {summary['picture']}, {summary['metrics_csv']}")
    return 0


if __name__ == "__main__":
    cli.exit_with(main)
