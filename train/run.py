"""Fine-tune a Stable Diffusion inpainting model on pair shards with Ray Train.

ray job submit --address http://HEAD:8265 --working-dir . -- python train/run.py --data s3://B/pairs --out s3://B/train

Before any worker starts, the driver checks the output location, the pair shards (index, shards, resolution) and
that the model is on disk; then ``TorchTrainer`` runs :func:`train.loop.train_loop_per_worker` on ``--num-workers``
workers (DDP; gloo on CPU, NCCL on GPU). Outputs under ``--out``: ``run/`` (Ray Train checkpoints and state),
``logs/metrics.csv``, ``validation/step_*.png``, ``model/`` (the exported diffusers pipeline), ``summary.json``,
``config.yaml``. ``--resume`` continues the run in ``--out`` from its last checkpoint; without it an existing run
is an error, never overwritten.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (how `ray job submit` calls it): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invs import cli, storage
from invs.config import Config, save_resolved
from invs.errors import InvsError

TRAINER_DIR = "run"  # Ray Train's storage for this training run (RunConfig name): checkpoints, state
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train V2 writes it per run (no public API says whether a run
# exists); used only to refuse overwriting and to resume, and the resume tests fail if Ray renames it


def note_settings(config: Config) -> None:
    """Say so when a setting is allowed but probably not what was meant (ranges are checked on loading)."""
    if config.train.mixed_precision == "bf16" and config.train.device != "gpu":
        print("note: train.mixed_precision=bf16 on CPU runs bf16 autocast; it is usually slower than float32")


def check_run_state(out: str, resume: bool) -> None:
    exists = storage.exists(storage.join(out, TRAINER_DIR, SNAPSHOT))
    if exists and not resume:
        raise InvsError(f"{out} already holds a training run; pass --resume to continue it, or choose another --out")
    if resume and not exists:
        raise InvsError(f"--resume: {out} holds no training run to continue (no {TRAINER_DIR}/{SNAPSHOT})")


def check_model(config: Config) -> None:
    from invs.models import check_model_available

    tc = config.train
    if not tc.tiny:
        check_model_available(tc.model)
    if tc.conditioning == "clip_image" and not tc.tiny:
        from huggingface_hub import try_to_load_from_cache

        path = Path(tc.image_encoder).expanduser()
        if not (path / "config.json").is_file() and not isinstance(
            try_to_load_from_cache(tc.image_encoder, "config.json"), str
        ):
            raise InvsError(
                f"CLIP image encoder {tc.image_encoder!r} is not on disk or in the local Hugging Face cache; "
                "download it first or set train.image_encoder to a local directory"
            )


def spread_keys(train_keys: dict[str, list[str]], count: int) -> set[tuple[str, str]]:
    """``count`` (shard, key) pairs evenly spaced over all train pairs in shard order (all of them when there are
    no more), so that a sample of them covers every object, not only the first shard's."""
    everything = [(shard, key) for shard in sorted(train_keys) for key in train_keys[shard]]
    step = max(1.0, len(everything) / count)
    return {everything[int(i * step)] for i in range(min(count, len(everything)))}


def fit_tiny_vae_on(plan: Any, config: Config, max_images: int = 64) -> dict[str, Any]:
    """Fit the tiny model's VAE on up to ``max_images`` train targets spread over all objects, once, on the driver;
    every worker loads the returned ``{"state": state_dict, "scaling_factor": float}``
    (:func:`invs.models.fit_tiny_vae`)."""
    import torch

    from invs import metrics
    from invs.models import build_tiny_components, fit_tiny_vae, vae_round_trip
    from invs.pair_builder import pair_to_tensors
    from invs.shards import decode_pair_sample, read_samples

    chosen = spread_keys(plan.train_keys, max_images)
    images = []
    for shard in plan.shards:
        keys = {key for key in plan.train_keys[shard] if (shard, key) in chosen}
        for key, members in sorted(read_samples(shard, keys), key=lambda item: plan.train_keys[shard].index(item[0])):
            try:
                images.append(pair_to_tensors(decode_pair_sample(key, members), plan.resolution)["target"])
            except InvsError:
                continue
    tc = config.train
    vae = build_tiny_components(seed=tc.seed)["vae"]
    started = time.perf_counter()
    stacked = torch.stack(images)
    loss = fit_tiny_vae(vae, stacked, tc.tiny_vae_fit_steps, lr=tc.tiny_vae_learning_rate, seed=tc.seed)
    round_trip = float(metrics.psnr((vae_round_trip(vae, stacked) + 1) / 2, (stacked + 1) / 2).mean())
    print(
        f"train: fitted the tiny VAE on {len(images)} targets in {tc.tiny_vae_fit_steps} steps "
        f"({time.perf_counter() - started:.0f} s): loss {loss:.4f}, round trip {round_trip:.2f} dB PSNR, "
        f"scaling_factor {vae.config.scaling_factor:.4f} (1 / latent std)",
        flush=True,
    )
    state = {k: v.detach().clone() for k, v in vae.state_dict().items()}
    return {"state": state, "scaling_factor": float(vae.config.scaling_factor)}


def run_vae(config: Config, fitted_vae: dict[str, Any] | None) -> Any:
    """The VAE the workers will train with (the tiny one with its fitted weights, or the model's), on the CPU."""
    from invs.models import build_tiny_components, load_vae

    tc = config.train
    vae = build_tiny_components(seed=tc.seed)["vae"] if tc.tiny else load_vae(tc.model)
    if fitted_vae is not None:
        vae.load_state_dict(fitted_vae["state"])
    return vae


def stored_latents(config: Config, plan: Any, fitted_vae: dict[str, Any] | None) -> dict[str, Any]:
    """Whether the pairs' stored VAE latents fit this run's VAE (:func:`invs.latents.vae_fingerprint`), as
    ``{"used": bool, "line": what training prints, "vae": this run's fingerprint, "pairs_vae": theirs}``.
    ``train.require_stored_latents`` turns "not used" into an error before any worker starts."""
    from invs.latents import vae_fingerprint

    tc = config.train
    made = plan.latents or {}
    info: dict[str, Any] = {"used": False, "vae": None, "pairs_vae": made.get("vae"), "pairs_model": made.get("model")}
    encodes = "the VAE encodes every image"
    if not tc.use_latents:
        why = "train.use_latents is false"
        info["line"] = f"stored latents: off ({why}); {encodes}"
    elif not made:
        why = "the pairs have none (preprocessed without --latents)"
        info["line"] = f"stored latents: none: {why}; {encodes}"
    else:
        info["vae"] = vae_fingerprint(run_vae(config, fitted_vae))
        named = f"{made.get('model')!r} in preprocessing"
        if made.get("vae") == info["vae"]:
            why = ""
            info["used"] = True
            info["line"] = f"stored latents: used (made by this run's VAE, {_short(info['vae'])}, named {named})"
        else:
            model = "the tiny model's" if tc.tiny else repr(tc.model)
            why = (
                f"the pairs' were made by another VAE ({_short(made.get('vae'))}, named {named}) than this run's "
                f"({_short(info['vae'])}, {model})"
            )
            info["line"] = f"stored latents: NOT used: {why}; {encodes}"
    if tc.require_stored_latents and not info["used"]:
        raise InvsError(
            f"train.require_stored_latents is set but {why}; preprocess with --latents "
            f"{'tiny' if tc.tiny else tc.model} (the VAE this run trains with), or set "
            "train.require_stored_latents=false to encode on the fly"
        )
    return info


def run_line(config: Config) -> str:
    """Where and how the workers train: devices, backend, precision, EMA, validation and checkpoints."""
    tc = config.train
    precision = {"no": "float32", "bf16": "bf16 autocast"}.get(tc.mixed_precision)
    precision = precision or ("bf16 autocast (auto on GPU)" if tc.device == "gpu" else "float32 (auto on CPU)")
    return (
        f"{tc.num_workers} worker(s) on {'GPUs, NCCL' if tc.use_gpu else 'CPUs, gloo'}; {precision} with float32 "
        f"weights; EMA {tc.ema_decay if tc.ema_decay > 0 else 'off'}; validation every {tc.validate_every or tc.steps} "
        f"steps on {tc.val_pairs} pairs; checkpoints every {tc.checkpoint_every} steps"
    )


def _short(fingerprint: str | None) -> str:
    return f"{fingerprint[:19]}..." if fingerprint else "no fingerprint"


def train(config: Config, resume: bool = False) -> dict[str, Any]:
    """Run training as configured; returns the summary (also written to ``OUT/summary.json``)."""
    from invs.ray_session import init_ray
    from train.data import plan_data
    from train.loop import WORKER_FACTS

    tc = config.train
    note_settings(config)
    check_run_state(tc.out, resume)
    plan = plan_data(tc.data, tc.resolution, tc.val_pairs)
    check_model(config)
    save_resolved(config, tc.out)
    fitted_vae = fit_tiny_vae_on(plan, config) if tc.tiny and tc.tiny_vae_fit_steps > 0 else None
    latents = stored_latents(config, plan, fitted_vae)
    print(f"train: {latents['line']}", flush=True)
    print(f"train: {run_line(config)}", flush=True)
    init_ray(config, dashboard=True)
    from ray.util.queue import Queue

    progress = Queue(maxsize=1000, actor_options={"num_cpus": 0})
    trainer = trainer_factory(config, plan, fitted_vae, progress)
    started = time.perf_counter()
    stop = threading.Event()
    shown = threading.Thread(target=show_progress, args=(progress, stop), daemon=True)
    shown.start()
    try:
        result, restarts = fit_with_restarts(trainer, tc.max_failures)
    finally:
        stop.set()
        shown.join(timeout=5)
    seconds = time.perf_counter() - started
    worker = _read_json(storage.join(tc.out, WORKER_FACTS))
    plot = write_metrics_plot(tc.out)
    metrics = dict(result.metrics or {})
    summary = {
        "out": tc.out,
        "steps": tc.steps,
        "num_workers": tc.num_workers,
        "batch_size": tc.batch_size,
        "resolution": plan.resolution,
        "train_pairs": plan.num_train,
        "val_pairs": len(plan.val_samples),
        "val_source": plan.val_source,
        "seconds": seconds,
        "final": metrics,
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "model": storage.join(tc.out, "model"),
        "metrics_csv": storage.join(tc.out, "logs", "metrics.csv"),
        "metrics_plot": plot,
        "validation": storage.join(tc.out, "validation", f"step_{tc.steps:08d}.png"),
        "stored_latents": latents,
        "restarts": restarts,
        "worker": worker,
    }
    storage.write_text(storage.join(tc.out, "summary.json"), json.dumps(summary, indent=2, default=str))
    return summary


def trainer_factory(config: Config, plan: Any, fitted_vae: dict[str, Any] | None, progress: Any) -> Callable[[], Any]:
    """A function making the run's ``TorchTrainer``, a fresh one per attempt: Ray Train resumes each from the run's
    last checkpoint in ``OUT/run``. Ray Train's own retries are off; :func:`fit_with_restarts` decides."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from invs.fleet import worker_bundle
    from train.loop import train_loop_per_worker

    tc = config.train
    fs, path = storage.arrow_filesystem(tc.out)

    def trainer() -> Any:
        return TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"config": config, "plan": plan, "fitted_vae": fitted_vae, "progress": progress},
            torch_config=TorchConfig(backend="nccl" if tc.device == "gpu" else "gloo"),
            scaling_config=ray.train.ScalingConfig(
                num_workers=tc.num_workers,
                use_gpu=tc.device == "gpu",
                resources_per_worker=worker_bundle(config.train),
            ),
            run_config=ray.train.RunConfig(
                name=TRAINER_DIR,
                storage_path=path,
                storage_filesystem=fs,
                failure_config=ray.train.FailureConfig(max_failures=0),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=tc.keep_checkpoints),
                # Ray Train's worker-group start-up lines say nothing a user can act on; warnings still show.
                logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            ),
        )

    return trainer


def fit_with_restarts(trainer: Callable[[], Any], max_failures: int) -> tuple[Any, list[str]]:
    """``trainer().fit()``, restarted from the last checkpoint after a failure up to ``max_failures`` times; returns
    the result and one line per restart.

    A failure whose workers all raised (:class:`train.loop.StepFailure`) and that repeats an error of the attempt
    before at the same step is deterministic: restarting from the same checkpoint would redo the same steps and fail
    the same way, so it stops the run at once with one line. A lost worker (its process or node gone) always
    restarts, as do failures at a new step or with a new error."""
    from ray.train import TrainingFailedError

    from train.loop import StepFailure

    restarts: list[str] = []
    previous: set[tuple[int, str]] = set()
    while True:
        try:
            return trainer().fit(), restarts
        except TrainingFailedError as exc:
            failures = getattr(exc, "worker_failures", {}) or {}
            raised = {(f.step, f.error) for f in failures.values() if isinstance(f, StepFailure)}
            lost = len(raised) < len(failures) or not failures
            cause = _root_cause(exc)
            if not lost and raised & previous:
                step, error = min(raised & previous)
                raise InvsError(
                    f"training failed the same way twice at step {step} (after a restart from the last checkpoint): "
                    f"{error}; not restarting again (it would fail the same way); fix the cause, then --resume"
                ) from exc
            if len(restarts) >= max_failures:
                raise InvsError(f"training failed: {cause} (after {len(restarts)} restart(s))") from exc
            what = "a worker was lost" if lost else f"{min(raised)[1]} at step {min(raised)[0]}"
            restarts.append(what)
            print(f"train: {what}; restarting from the last checkpoint ({len(restarts)} of {max_failures})", flush=True)
            previous = set() if lost else raised


def _read_json(uri: str) -> dict[str, Any] | None:
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def show_progress(queue: Any, stop: threading.Event) -> None:
    """The driver's view of training: rank 0's metrics from ``queue`` as a progress bar (a log line every 10 s when
    not on a terminal) with step, loss, samples/s and ETA, plus one line per validation and the latent-scale check."""
    from ray.exceptions import RayError
    from ray.util.queue import Empty

    from invs.progress import Progress

    bar: Progress | None = None
    while not stop.is_set():
        try:
            m = queue.get(timeout=0.5)
        except Empty:
            continue
        except RayError:  # the queue's actor is gone with the Ray instance: nothing more to show
            break
        if "first_step" in m:
            if bar is not None:
                bar.close()
                print(f"train: (re)started at step {m['first_step']}", flush=True)
            bar = Progress("train", int(m["steps"]), "steps", start=int(m["first_step"]))
            continue
        if bar is None:
            continue
        if "latent_std" in m:
            print(f"train: std of the scaled target latents {m['latent_std']:.3f} (should be ~1)", flush=True)
        if "val_psnr" in m:
            print(
                f"train: step {m['step']} validation: PSNR {m['val_psnr']:.2f} dB, SSIM {m['val_ssim']:.3f} (the "
                f"partial view alone: {m['val_psnr_partial']:.2f} dB, {m['val_ssim_partial']:.3f})",
                flush=True,
            )
        bar.update(int(m["step"]), f"loss {m['loss']:.4f}, {m['samples_per_s']:.1f} samples/s")
    if bar is not None:
        bar.close()


def write_metrics_plot(out: str) -> str | None:
    """``OUT/logs/metrics.png`` from ``OUT/logs/metrics.csv`` (loss and validation curves); its URI, or None when
    there are no metrics."""
    from invs.preview import metrics_plot_png
    from train.loop import METRICS_CSV

    csv_uri = storage.join(out, METRICS_CSV)
    if not storage.exists(csv_uri):
        return None
    uri = storage.join(out, "logs", "metrics.png")
    storage.write_bytes(uri, metrics_plot_png(storage.read_text(csv_uri)))
    return uri


def _root_cause(exc: BaseException) -> str:
    from train.loop import StepFailure

    failures = list((getattr(exc, "worker_failures", None) or {}).values())
    seen = next((f for f in failures if isinstance(f, StepFailure)), failures[0] if failures else exc)
    while seen.__cause__ is not None and not isinstance(seen, StepFailure):
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    lines = [line for line in text if line.strip() and not line.startswith(" ")]
    return (lines[-1] if lines else type(seen).__name__)[:500]


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.stage_parser("train/run.py", __doc__.splitlines()[0])
    flags = cli.add_settings(
        parser,
        "train",
        {
            "data": "pair shards from the preprocess stage: local path or s3://bucket/prefix",
            "out": "checkpoints and the exported pipeline: local path or s3://bucket/prefix",
            "steps": "optimizer steps",
            "batch_size": "per worker and micro-batch",
            "num_workers": "Ray Train workers (DDP ranks)",
            "device": "gpu: one GPU per worker (NCCL); cpu: gloo",
            "learning_rate": "",
        },
    )
    model = parser.add_mutually_exclusive_group()
    flags |= cli.add_settings(
        model,
        "train",
        {
            "model": "diffusers inpainting model: hub id or local path",
            "tiny": "a small random-config model built offline instead of --model",
        },
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    args = parser.parse_args(argv)
    if args.train__model is not None:
        args.train__tiny = False
    config = cli.resolve_config(args, flags, locations=("train.data", "train.out"))
    cli.check_outputs(config, ("train.out",))
    summary = train(config, resume=args.resume)
    final = summary["final"]
    print(
        f"train: {summary['steps']} steps on {summary['num_workers']} worker(s) in {summary['seconds']:.1f} s; "
        f"loss {final.get('loss', float('nan')):.4f}; val PSNR {final.get('val_psnr', float('nan')):.2f} dB "
        f"(partial view alone {final.get('val_psnr_partial', float('nan')):.2f} dB), "
        f"SSIM {final.get('val_ssim', float('nan')):.3f}; skipped pairs {final.get('skipped', 0)}"
    )
    print(f"outputs: {summary['model']} (diffusers pipeline), {summary['validation']}, {summary['metrics_csv']}")
    return 0


if __name__ == "__main__":
    cli.exit_with(main)
