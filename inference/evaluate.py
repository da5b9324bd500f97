"""Evaluate an exported model on held-out pairs: the model and its baselines by PSNR, SSIM and LPIPS, and a picture.

python inference/evaluate.py --model out/train/model --data out/pairs --out out/eval
python inference/evaluate.py --config local      # the model, pairs and settings of a config's training run
python inference/evaluate.py --model out/train/model --renders out/gso_renders --out out/eval_gso --depth gt

Uses the pairs of ``--split`` (default ``val``: objects the model never saw, by the index's uid-hash split) and
:class:`inference.pipeline.NovelViewPipeline` (the pipeline fed as in training). Every method of :data:`METHODS` (the
model, its variants, the partial view alone, the source view copied, the VAE ceiling) is scored on the same
pixels. Writes ``OUT/metrics.csv`` (one row per pair and method), ``OUT/summary.json`` (means with bootstrap 95%
intervals, per-object means; ``lpips`` null with ``lpips_unavailable`` saying which weights file is missing),
``OUT/results.md`` (the table) and ``OUT/predictions.png`` (source | partial | mask | prediction | target).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
    from invs.shards import index_shard, read_samples

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


#: The methods scored on the same pixels, as rows: name -> view of :data:`inference.pipeline.SCORED`. ``model`` is the
#: view the model delivers (its known-pixels setting); the others are its two variants, the zero-cost baselines and
#: the VAE's round trip of the target (the ceiling of any generated view), alone and with known pixels kept (the
#: ceiling of the composited view).
METHODS = {
    "model": None,
    "model, generated": "generated",
    "model, known pixels kept": "composite",
    "partial view alone": "partial",
    "source view copied": "source",
    "VAE round trip (ceiling)": "vae",
    "VAE round trip, known pixels kept": "vae_composite",
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
    from invs.pair_builder import pair_to_tensors

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


@dataclass
class EvalRequest:
    """What to evaluate and how (see :func:`evaluate`)."""

    model: str
    out: str
    data: str | None = None  # pair shards (the preprocess stage's --out), scored on their ``split`` pairs
    renders: str | None = None  # or render shards, scored by the written protocol (:mod:`inference.protocol`)
    split: str = "val"
    steps: int = 20
    guidance_scale: float = 1.0
    batch_size: int = 8
    limit: int | None = None
    device: str = "cpu"
    seed: int = 0
    known_pixels: str | None = None  # which view is ``model``; None: the model's own
    views_per_object: int = 4  # protocol: targets per object
    depth: str = "gt"  # protocol: the source's depth, ``gt`` or ``zoedepth`` (the model's depth model)
    #: Overrides of the model's spec (keys as :meth:`invs.model_spec.ModelSpec.overridden` takes them).
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scored:
    """Rows and picture material gathered while scoring."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    grid: dict[str, list] = field(default_factory=lambda: {n: [] for n in (*_GRID_INPUTS, "prediction")})
    skipped: int = 0
    seen: int = 0


_GRID_INPUTS = ("source", "partial", "mask", "target")


def pair_stream(request: EvalRequest, model: Any) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    """The pairs to score: the protocol's from render shards, or the pair index's ``split`` from pair shards."""
    if request.renders is not None:
        from inference.protocol import protocol_pairs

        return protocol_pairs(
            request.renders, model.spec, request.views_per_object, request.depth, request.limit, request.device
        )
    if request.data is not None:
        return shard_pairs(request.data, request.split, request.limit, model.resolution)
    raise InvsError("evaluate needs pair shards (--data) or render shards (--renders)")


def score_all(model: Any, pairs: Iterator, request: EvalRequest, delivered: str, lpips: Any) -> Scored:
    """Predict and score every pair in batches: one row per pair and method of :data:`METHODS`."""
    import itertools

    from invs.pair_builder import collate

    scored = Scored()
    while chunk := list(itertools.islice(pairs, request.batch_size)):
        good = [(key, uid, item) for key, uid, item in chunk if item is not None]
        scored.skipped += len(chunk) - len(good)
        if good:
            batch = collate([item for _, _, item in good])
            seed = request.seed + scored.seen
            views, scores = model.score(batch, request.steps, request.guidance_scale, seed, lpips=lpips)
            for i, (key, uid, _) in enumerate(good):
                for method, view in METHODS.items():
                    name = view or delivered
                    values = {m: float(scores[f"{m}_{name}"][i]) if f"{m}_{name}" in scores else None for m in METRICS}
                    scored.rows.append({"key": key, "uid": uid, "method": method} | values)
            scored.keys += [key for key, _, _ in good]
            room = GRID_ROWS - len(scored.grid["source"])
            for name in _GRID_INPUTS:
                scored.grid[name] += list(batch[name][:room])
            scored.grid["prediction"] += list(views[delivered][:room])
        scored.seen += len(chunk)
    return scored


def evaluate(request: EvalRequest) -> dict[str, Any]:
    """Predict every chosen pair and score every method of :data:`METHODS` on it; write ``metrics.csv`` (a row
    per pair and method), ``summary.json`` (means with bootstrap 95% intervals, per-object means, the model's
    spec in force), ``results.md`` and ``predictions.png`` under ``request.out``; returns the summary.

    The pairs are built as the model's own spec says (:mod:`invs.model_spec`), never as a config says."""
    import torch

    from inference.pipeline import NovelViewPipeline, delivered_view
    from invs.preview import png_bytes, prediction_sheet

    model = NovelViewPipeline.load(request.model, device=request.device)
    model.spec, notes = model.spec.overridden(**request.overrides)
    for note in notes:
        print(note)
    known_pixels = request.known_pixels or model.known_pixels
    try:
        delivered = delivered_view(known_pixels)
    except ValueError as exc:
        raise InvsError(str(exc)) from None
    lpips, lpips_reason = lpips_or_reason(request.device)
    scored = score_all(model, pair_stream(request, model), request, delivered, lpips)
    if not scored.rows:
        where = request.renders if request.renders is not None else f"{request.data} ({request.split!r})"
        raise InvsError(f"none of the {scored.seen} pairs from {where} could be read")
    out = request.out
    storage.write_text(storage.join(out, "metrics.csv"), tables.csv_text(scored.rows, COLUMNS))
    stacked = {k: torch.stack(v) for k, v in scored.grid.items()}
    picture = storage.join(out, "predictions.png")
    storage.write_bytes(picture, png_bytes(prediction_sheet(stacked, stacked["prediction"], scored.keys[:GRID_ROWS])))
    summary = summary_of(request, model.spec, scored, known_pixels, lpips_reason) | {"picture": picture}
    storage.write_text(summary["results_md"], results_markdown(summary))
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
    return summary


def summary_of(
    request: EvalRequest, spec: Any, scored: Scored, known_pixels: str, lpips_reason: str | None
) -> dict[str, Any]:
    """``summary.json``'s content (without the picture's URI)."""
    breakdown = summarize_rows(scored.rows)
    model_means = breakdown["methods"]["model"]
    protocol = request.renders is not None
    return {
        "model": request.model,
        "data": None if protocol else request.data,
        "renders": request.renders,
        "split": "protocol" if protocol else request.split,
        "protocol": (
            {
                "views_per_object": request.views_per_object,
                "depth": request.depth,
                "half_angle_deg": spec.mask.half_angle_deg,
            }
            if protocol
            else None
        ),
        "spec": spec.to_dict(),
        "pairs": len(scored.keys),
        "objects_count": len({r["uid"] for r in scored.rows}),
        "skipped": scored.skipped,
        "inference_steps": request.steps,
        "device": request.device,
        "guidance_scale": request.guidance_scale,
        "seed": request.seed,
        "known_pixels": known_pixels,
        "psnr": model_means["psnr"]["mean"],
        "ssim": model_means["ssim"]["mean"],
        "lpips": model_means["lpips"]["mean"] if "lpips" in model_means else None,
        "lpips_unavailable": lpips_reason,
        **breakdown,
        "metrics_csv": storage.join(request.out, "metrics.csv"),
        "results_md": storage.join(request.out, "results.md"),
    }


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
    from invs.model_spec import KNOWN_PIXELS

    parser = cli.stage_parser("inference/evaluate.py", __doc__.splitlines()[0])
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
        "--renders", help="evaluate straight from render shards by the written protocol (inference/protocol.py)"
    )
    parser.add_argument("--views-per-object", type=int, default=4, help="--renders: targets per object (views 1..K)")
    parser.add_argument("--depth", choices=["gt", "zoedepth"], default="gt", help="--renders: the source's depth")
    parser.add_argument("--depth-model", help="--renders --depth zoedepth: overrides the model's depth model")
    parser.add_argument("--mask-half-angle", type=float, metavar="DEG", help="overrides the model's mask half-angle")
    parser.add_argument("--limit", type=int, help="at most this many pairs")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when this machine has it, else cpu")
    parser.add_argument(
        "--known-pixels",
        choices=KNOWN_PIXELS,
        help="which views count as the model's (both are scored); default: the model's own (its spec)",
    )
    args = parser.parse_args(argv)
    if args.views_per_object < 1:
        parser.error("--views-per-object must be >= 1")
    config = cli.resolve_config(args, flags)
    tc = config.train
    request = EvalRequest(
        model=args.model or storage.join(tc.out, "model"),
        out=args.out or storage.join(tc.out, "evaluation"),
        data=tc.data,
        renders=args.renders,
        split=args.split,
        steps=tc.val_inference_steps,
        guidance_scale=tc.guidance_scale,
        limit=args.limit,
        device=pick_device(args.device),
        known_pixels=args.known_pixels,
        views_per_object=args.views_per_object,
        depth=args.depth,
        overrides={"depth.model": args.depth_model, "mask.half_angle_deg": args.mask_half_angle},
    )
    storage.check_writable(request.out)
    summary = evaluate(request)
    print(f"evaluate: {summary['pairs']} {summary['split']} pairs, known pixels: {summary['known_pixels']}")
    print(comparison_table({summary["split"]: summary}))
    print(f"outputs: {summary['results_md']}, {summary['picture']}, {summary['metrics_csv']}")
    return 0


if __name__ == "__main__":
    cli.exit_with(main)
