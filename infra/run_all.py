"""Every stage as one command: render -> preprocess -> train -> evaluate, each stage's output the next's input.

    python -m infra.run_all --config local          # what `make demo` runs
    python -m infra.run_all --config paper --out s3://my-bucket/invs

Each stage reads the previous stage's output URI, as on a cluster. ``--out ROOT`` puts them at ``ROOT/renders``,
``ROOT/pairs`` and ``ROOT/train``; otherwise the config's ``render.out``, ``preprocess.out`` and ``train.out``.
Pictures, the evaluation and the resolved config go beside the render output (the parent of ``render.out``).
Every output location is checked (writable, not a placeholder) before the first stage starts. Re-running continues:
rendered objects and preprocessed pairs are skipped, and an existing training run is resumed (a finished one is
only re-exported). Evaluation runs as a Ray task with a training worker's resources: with ``train.device: gpu`` one GPU
(and ``train.node_resource``), so a CPU-only head node never samples the model itself.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from invs import cameras, cli, storage
from invs.config import Config, save_resolved, setting
from invs.ray_session import init_ray

#: Each stage's output setting and its folder under ``--out``.
STAGE_OUTPUTS = {"render.out": "renders", "preprocess.out": "pairs", "train.out": "train"}
#: Each stage's input setting -> the setting of the output it reads.
STAGE_INPUTS = {"preprocess.renders": "render.out", "train.data": "preprocess.out"}
#: (stage, entry point) in pipeline order.
STAGES: list[tuple[str, str]] = [
    ("render", "render/main.py"),
    ("preprocess", "preprocess/main.py"),
    ("train", "train/run.py"),
    ("evaluate", "inference/evaluate.py"),
]


def camera_rig_png(config: Config, uid: str) -> bytes:
    """PNG of the views the render stage samples for object ``uid`` under ``config``."""
    from invs.preview import draw_camera_rig, png_bytes

    cam, r = config.camera, config.render
    specs = cameras.view_specs(config, uid)
    K = cameras.intrinsics_from_lens(cam.lens_mm, cam.sensor_width_mm, r.resolution, r.resolution)
    return png_bytes(draw_camera_rig(specs, K, r.resolution, r.resolution))


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.stage_parser("python -m infra.run_all", __doc__.splitlines()[0])
    parser.add_argument("--out", help="one root for every stage's output: ROOT/renders, ROOT/pairs, ROOT/train")
    args = parser.parse_args(argv)
    if args.out:
        root = storage.normalize(args.out)
        args.overrides = [*(f"{k}={storage.join(root, v)}" for k, v in STAGE_OUTPUTS.items()), *args.overrides]
    config = cli.resolve_config(args, {}, locations=tuple(STAGE_OUTPUTS))
    # Each stage reads the previous stage's output: chained once, here, before anything runs.
    args.overrides = [*args.overrides, *(f"{k}={setting(config, v)}" for k, v in STAGE_INPUTS.items())]
    config = cli.resolve_config(args, {}, locations=tuple(STAGE_OUTPUTS))
    cli.check_outputs(config, tuple(STAGE_OUTPUTS))  # every stage's, before the first one spends anything
    started = time.monotonic()
    out = storage.parent(config.render.out)
    init_ray(config, dashboard=True)  # Ray Train queries actor state through the dashboard
    import ray

    print(f"Ray: {int(ray.cluster_resources().get('CPU', 0))} CPUs ({'cluster' if config.ray.address else 'local'})")
    config_uri = save_resolved(config, out)
    rig_uri = storage.join(out, "cameras.png")
    storage.write_bytes(rig_uri, ray.get(ray.remote(camera_rig_png).remote(config, "sample_text_block")))
    outputs = [(config_uri, "the resolved config"), (rig_uri, "the camera rig sampled for one object")]

    from render.job import render_objects
    from render.job import summary_line as render_summary_line

    r = config.render
    print(
        f"[render] {r.objects} -> {r.out} ({r.engine} on {r.device}, {r.views} views at {r.resolution} px, "
        f"{r.samples} spp{', denoised' if r.denoise else ''})",
        flush=True,
    )
    summary = render_objects(config)
    print(f"[render] {render_summary_line(summary)}", flush=True)
    sheet_uri = storage.join(out, "renders.png")
    storage.write_bytes(sheet_uri, render_sheet_png(config.render.out))
    outputs += [
        (storage.join(config.render.out, "shards"), "render shards (webdataset)"),
        (sheet_uri, "rendered views and depth, one row per object"),
    ]
    p = config.preprocess
    depth = f"{p.depth} {p.depth_model}" if p.depth == "zoedepth" else p.depth
    print(
        f"[preprocess] {p.renders} -> {p.out} (depth: {depth}; on {p.device}; stored latents: "
        f"{'VAE of ' + p.latents if p.latents else 'none'}; {p.resolution} px)",
        flush=True,
    )
    from preprocess.job import make_pairs, summary_lines

    pre = make_pairs(config)
    for line in summary_lines(pre):
        print(f"[preprocess] {line}", flush=True)
    pairs_uri = storage.join(out, "pairs.png")
    storage.write_bytes(pairs_uri, pairs_sheet_png(config.preprocess.out))
    outputs += [
        (storage.join(config.preprocess.out, "shards"), "pair shards (webdataset) and index/ (parquet)"),
        (pairs_uri, "source | partial | mask | epipolar region | target, one pair per object"),
        (dataset_report(config, out), "the dataset report: counts, failures, quality flags, passes, the law"),
    ]
    outputs += run_train_and_evaluate(config, out)
    print(f"{len(STAGES)} stages ran; finished in {time.monotonic() - started:.1f} s")
    print("outputs:")
    for uri, what in outputs:
        print(f"  {uri}   ({what})")
    return 0


def run_train_and_evaluate(config: Config, out: str) -> list[tuple[str, str]]:
    """Train on the preprocess output (resuming a run already there), then evaluate on its held-out pairs and on
    training pairs, and print the model beside its zero-cost baselines."""
    from inference.evaluate import comparison_table
    from train.run import SNAPSHOT, TRAINER_DIR, train

    tc = config.train
    resume = storage.exists(storage.join(tc.out, TRAINER_DIR, SNAPSHOT))
    model = "tiny (random-config, offline)" if tc.tiny else tc.model
    print(f"[train] {tc.data} -> {tc.out} ({model}, {tc.steps} steps{', resuming' if resume else ''})", flush=True)
    summary = train(config, resume=resume)
    final = {k: float(v) for k, v in summary["final"].items() if isinstance(v, int | float)}
    nan = float("nan")
    print(
        f"[train] {summary['steps']} steps in {summary['seconds']:.0f} s; validation PSNR "
        f"{final.get('val_psnr', nan):.2f} dB, SSIM {final.get('val_ssim', nan):.3f} (the partial view alone: "
        f"{final.get('val_psnr_partial', nan):.2f} dB, {final.get('val_ssim_partial', nan):.3f})",
        flush=True,
    )
    splits = [("val", "held-out"), ("train", "training")]
    if not has_split(tc.data, "val"):
        print(
            f"[evaluate] no held-out pairs: preprocess.val_fraction={config.preprocess.val_fraction} held out none "
            "of these objects; scoring training pairs only",
            flush=True,
        )
        splits = splits[1:]
    device = "cuda" if tc.device == "gpu" else "cpu"
    summaries = {}
    for split, what in splits:
        eval_out = storage.join(out, "eval" if what == splits[0][1] else f"eval_{split}")
        print(f"[evaluate] {summary['model']} on {what} pairs ({split} split) on {device} -> {eval_out}", flush=True)
        summaries[what] = evaluate_on(config, summary["model"], eval_out, split, device)
    print("[evaluate] PSNR (dB), SSIM and LPIPS against the target views, means over pairs:")
    print(comparison_table(summaries))
    ev = summaries[splits[0][1]]
    outputs = [
        (summary["model"], "the trained model: a diffusers pipeline directory"),
        (summary["metrics_csv"], "training metrics, one row per step"),
    ]
    if summary.get("metrics_plot"):
        outputs.append((summary["metrics_plot"], "loss and validation curves (model vs the partial view alone)"))
    outputs += [
        (ev["picture"], f"source | partial | mask | prediction | target on {splits[0][1]} pairs"),
        (ev["results_md"], f"the model and its baselines on {splits[0][1]} pairs, with 95% intervals"),
        (ev["metrics_csv"], f"PSNR/SSIM/LPIPS per {splits[0][1]} pair and method"),
    ]
    return outputs


def has_split(data: str, split: str) -> bool:
    """Whether the pair index at ``data`` has pairs of ``split``."""
    from invs import tables

    index = tables.read_table(storage.join(data, tables.INDEX_DIR), tables.INDEX_SCHEMA)
    return split in set(index.column("split").to_pylist())


def evaluate_on(config: Config, model: str, out: str, split: str, device: str) -> dict[str, Any]:
    """:func:`inference.evaluate.evaluate` on ``device`` where training ran: a Ray task with one training worker's
    resources (one GPU and ``train.node_resource`` with ``train.device: gpu``; else a CPU), never on the driver's own
    node by default (a cluster's head node has no GPU)."""
    import ray

    from inference.evaluate import EvalRequest
    from invs import fleet

    tc = config.train
    task = ray.remote(**fleet.ray_options(fleet.worker_bundle(config.train)))(_evaluate_with_settings)
    request = EvalRequest(
        model, out, data=tc.data, split=split, steps=tc.val_inference_steps, limit=EVAL_PAIRS, device=device
    )
    return ray.get(task.remote(config, request))


#: Pairs the demo scores per split (the README's table).
EVAL_PAIRS = 16


def _evaluate_with_settings(config: Config, request: Any) -> dict:
    """A Ray task's evaluation: this process's storage settings first (a Ray worker does not inherit them)."""
    from inference.evaluate import evaluate
    from invs.config import apply_storage_settings

    apply_storage_settings(config)
    return evaluate(request)


def dataset_report(config: Config, out: str) -> str:
    """``render/report.py`` on this run's renders and pairs, into ``OUT/report/``; returns its ``index.html``."""
    import tempfile
    from pathlib import Path

    from render.report import build_report

    target = storage.join(out, "report")
    if not storage.is_s3(target):
        return str(build_report(config.render.out, target, config.preprocess.out))
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_report(config.render.out, Path(tmp) / "report", config.preprocess.out).parent
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                storage.upload_file(path, storage.join(target, path.relative_to(folder).as_posix()))
    return storage.join(target, "index.html")


def pairs_sheet_png(pairs_uri: str, max_rows: int = 8) -> bytes:
    """PNG of one pair per object: source | partial | mask | epipolar region | target."""
    from invs.preview import pair_sheet, png_bytes
    from invs.shards import iter_pair_samples, list_shards

    chosen: dict[str, object] = {}
    for sample in iter_pair_samples(list_shards(pairs_uri)):
        chosen.setdefault(sample.meta["uid"], sample)
        if len(chosen) == max_rows:
            break
    return png_bytes(pair_sheet([chosen[k] for k in sorted(chosen)]))


def render_sheet_png(renders_uri: str, max_objects: int = 8) -> bytes:
    """PNG contact sheet of the first objects in a render output."""
    from invs.preview import contact_sheet, png_bytes
    from invs.shards import iter_render_samples, list_shards

    samples = []
    for sample in iter_render_samples(list_shards(renders_uri)):
        samples.append(sample)
        if len(samples) == max_objects:
            break
    return png_bytes(contact_sheet(sorted(samples, key=lambda s: s.key)))


if __name__ == "__main__":
    cli.exit_with(main, sys.argv[1:])
