"""Does the data teach? Held-out quality against the number of training objects, at a fixed step budget.

    python bench/scaling.py                                  # N = 4, 16, 64: bench/results/scaling.{json,png}
    python bench/scaling.py --objects 16 --out out/scaling   # one N alone; its model in out/scaling/n16/train/model

For each N the demo's recipe (``configs/local.yaml``: the tiny model, batch and seeds) with a longer budget (3000
steps, the VAE fitted for 1500 steps on that N's training targets; the demo's 600 / 300 are ``--steps 600
--vae-fit-steps 300``) is trained on N procedural objects (``--objects procedural:N``, rendered and
preprocessed by the stages' own commands) and scored by the written protocol (``inference/evaluate.py
--renders``: view 0 the source, views 1..4 the targets, ground-truth depth) on two sets it never saw: the repo's
real objects (``tests/assets/objects``) and held-out procedural objects (``procedural:10000-10008``). Per N and
set: every method's mean with its 95% interval, and the **paired** difference model - partial view alone (per pair,
bootstrap 95% interval): the margin the model adds over what costs nothing. The plot draws the margins over the
partial view and over the source view copied against N.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OBJECTS, RESULTS, write_results
from inference.evaluate import bootstrap_ci

REPO = Path(__file__).resolve().parent.parent
HELD_OUT = "procedural:10000-10008"
#: The real test objects scored (the two problem_* files are for failure tests, not objects to score).
REAL = sorted(p.name for p in OBJECTS.glob("*.glb") if not p.name.startswith("problem_"))
METHODS = {
    "model": "model",
    "partial": "partial view alone",
    "source": "source view copied",
    "vae": "VAE round trip (ceiling)",
    "vae_kept": "VAE round trip, known pixels kept",
}
BOOTSTRAP = 2000


def run(step: str, args: list[str], log: Path) -> None:
    """One stage command, as a user runs it; its output in ``log``, its failure one line with the log's tail."""
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.call([sys.executable, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    tail = log.read_text().strip().splitlines()[-1:] or [""]
    print(f"  {step}: {time.monotonic() - started:.0f} s ({tail[0][:120]})", flush=True)
    if code != 0:
        raise SystemExit(f"{step} failed (exit {code}); see {log}")


def render(objects: str, out: Path, args: argparse.Namespace, logs: Path, name: str, tag: str = "") -> Path:
    if not (out / "summary.json").is_file():
        command = ["render/main.py", "--objects", objects, "--out", str(out), "--views", str(args.views)]
        run(
            f"render {name}{tag}",
            [*command, "--resolution", str(args.render_px), "--set", "render.samples=16"],
            logs / f"render_{name}.log",
        )
    return out


def paired(rows: list[dict[str, str]], a: str, b: str, metric: str) -> list[float]:
    """Per pair, ``a``'s metric minus ``b``'s."""
    by = {(r["key"], r["method"]): float(r[metric]) for r in rows if r[metric] not in ("", "None")}
    keys = sorted({r["key"] for r in rows})
    return [by[(k, a)] - by[(k, b)] for k in keys if (k, a) in by and (k, b) in by]


def score(model: Path, renders: Path, out: Path, logs: Path, name: str, tag: str = "") -> dict[str, Any]:
    """The protocol on ``renders``: per method mean and interval, and the paired margins over the baselines."""
    command = ["inference/evaluate.py", "--model", str(model), "--renders", str(renders), "--out", str(out)]
    run(f"evaluate {name}{tag}", [*command, "--views-per-object", "4"], logs / f"evaluate_{name}.log")
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    result: dict[str, Any] = {"pairs": summary["pairs"], "objects": summary["objects_count"]}
    for short, method in METHODS.items():
        entry = summary["methods"][method]
        result[short] = {m: {"mean": entry[m]["mean"], "ci95": entry[m]["ci95"]} for m in ("psnr", "ssim")}
    for short in ("partial", "source"):
        diffs = {m: paired(rows, "model", METHODS[short], m) for m in ("psnr", "ssim")}
        result[f"model_minus_{short}"] = {
            m: {"mean": round(sum(d) / len(d), 4), "ci95": bootstrap_ci(d, BOOTSTRAP)} for m, d in diffs.items()
        }
    return result


def one_n(n: int, root: Path, real: Path, held_out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Render, preprocess, train and score with N training objects (see the module docstring)."""
    folder = root / f"n{n}"
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"N = {n}: {folder}", flush=True)
    started = time.monotonic()
    tag = f" N={n}"
    renders = render(f"procedural:{n}", folder / "renders", args, logs, "train", tag)
    pairs = folder / "pairs"
    if not (pairs / "summary.json").is_file():
        command = ["preprocess/main.py", "--renders", str(renders), "--out", str(pairs), "--depth", "gt"]
        run(f"preprocess{tag}", [*command, "--set", "preprocess.val_fraction=0"], logs / "preprocess.log")
    model = folder / "train" / "model"
    if not (model / "model_index.json").is_file():
        command = ["train/run.py", "--data", str(pairs), "--out", str(folder / "train"), "--steps", str(args.steps)]
        fixed = ["train.validate_every=0", f"train.tiny_vae_fit_steps={args.vae_fit_steps}"]
        settings = [x for setting in [*fixed, *args.set] for x in ("--set", setting)]
        run(f"train{tag}", [*command, *settings], logs / "train.log")
    return {
        "objects": n,
        "steps": args.steps,
        "vae_fit_steps": args.vae_fit_steps,
        "settings": args.set,
        "real": score(model, real, folder / "eval_real", logs, "real", tag),
        "generated": score(model, held_out, folder / "eval_generated", logs, "generated", tag),
        "model_dir": str(model),
        "seconds": round(time.monotonic() - started, 1),
    }


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("psnr", "ssim"), strict=True):
        for where, style in (("real", "-o"), ("generated", "--s")):
            for baseline in ("partial", "source"):
                ns = [r["objects"] for r in runs]
                means = [r[where][f"model_minus_{baseline}"][metric]["mean"] for r in runs]
                lo = [r[where][f"model_minus_{baseline}"][metric]["ci95"][0] for r in runs]
                hi = [r[where][f"model_minus_{baseline}"][metric]["ci95"][1] for r in runs]
                ax.plot(ns, means, style, label=f"{where}: model - {baseline}")
                ax.fill_between(ns, lo, hi, alpha=0.15)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training objects N")
        ax.set_ylabel(f"paired margin, {'dB' if metric == 'psnr' else 'SSIM'}")
        ax.set_title(f"{metric.upper()} margin on unseen objects (95% intervals)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[4, 16, 64], metavar="N", help="training objects")
    parser.add_argument("--out", default="out/scaling", help="working folder (renders, pairs, models, logs)")
    parser.add_argument("--steps", type=int, default=3000, help="training steps for every N (the demo: 600)")
    parser.add_argument("--vae-fit-steps", type=int, default=1500, help="tiny VAE fitting steps (the demo: 300)")
    parser.add_argument("--jobs", type=int, default=2, help="values of N trained at once (one core each)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a training setting (repeatable)"
    )
    parser.add_argument("--views", type=int, default=12, help="rendered views per object")
    parser.add_argument("--render-px", type=int, default=128, help="render resolution (pairs: the preset's 64 px)")
    parser.add_argument("--results", default=str(RESULTS / "scaling.json"), help="results JSON (plot beside it)")
    args = parser.parse_args(argv)
    root = Path(args.out).resolve()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    objects_list = root / "real_objects.txt"
    objects_list.write_text("".join(f"{OBJECTS / name}\n" for name in REAL))
    real = render(str(objects_list), root / "renders_real", args, root / "logs", "real")
    held_out = render(HELD_OUT, root / "renders_held_out", args, root / "logs", "held_out")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # the work is in each N's stage commands
        runs = list(pool.map(lambda n: one_n(n, root, real, held_out, args), args.objects))
    results = {"recipe": "configs/local.yaml", "held_out": HELD_OUT, "real_objects": REAL, "runs": runs}
    if len(runs) > 1 or args.results != str(RESULTS / "scaling.json"):
        write_results(results, args.results)
        plot(runs, Path(args.results).with_suffix(".png"))
    for r in runs:
        for where in ("real", "generated"):
            m, p = r[where]["model_minus_partial"], r[where]
            model, partial = p["model"], p["partial"]
            print(
                f"N={r['objects']:>3} {where:>9}: model {model['psnr']['mean']:.2f} dB / {model['ssim']['mean']:.3f}"
                f", partial {partial['psnr']['mean']:.2f} / {partial['ssim']['mean']:.3f}; model - partial "
                f"{m['psnr']['mean']:+.2f} dB {m['psnr']['ci95']}, SSIM {m['ssim']['mean']:+.3f} {m['ssim']['ci95']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
