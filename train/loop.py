"""The per-worker training loop that Ray Train runs (``TorchTrainer(train_loop_per_worker, ...)``).

Every worker builds the same model (tiny from the seed, or loaded from the checkpoint), wraps the trainable
:class:`~train.loss.Denoiser` in DDP (``ray.train.torch.prepare_model``), streams its own part of the pair shards
(:mod:`train.data`) and runs ``steps`` optimizer steps of ``grad_accumulation`` micro-batches each (DDP gradient
sync only on the last micro-batch). Step ``k``'s random draws come from a generator seeded by ``(seed, k, micro,
rank)``, so a resumed run repeats exactly what an uninterrupted one does.

Precision: float32 weights, the frozen VAE and encoders included (so the export holds them exactly as loaded);
``mixed_precision=bf16`` (``auto`` on GPU) runs the training step *and validation* under bf16 autocast, so every
matmul and convolution, frozen parts included, computes in bf16. Attention uses PyTorch SDPA (``AttnProcessor2_0``).
A non-finite loss stops the step with an error (it would turn every weight into NaN through AdamW).
Optional gradient checkpointing. EMA of the trainable weights on rank 0 (diffusers ``EMAModel``).

Checkpoints (rank 0, every ``checkpoint_every`` steps and at the end) hold ``denoiser.pt``, ``optimizer.pt``,
``lr_scheduler.pt``, ``ema.pt`` and ``state.json`` (step, every stream's data position); Ray Train uploads them
under ``OUT/run/`` and hands the latest back through ``ray.train.get_checkpoint()`` after a worker failure or to
a resumed run. Validation (rank 0, every ``validate_every`` steps and at the end) samples the validation pairs
with the EMA weights, logs PSNR/SSIM and writes a grid; the final EMA weights are exported as a diffusers
pipeline to ``OUT/model``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from inference.conditioning import Conditioner, ImageProjection, build_tiny_image_encoder, load_image_encoder
from invs import storage, tables
from invs.config import Config, TrainConfig, apply_storage_settings
from invs.latents import vae_fingerprint
from invs.model_spec import ModelSpec
from invs.pair_builder import collate
from train.data import DataPlan, DataPosition, PairStream, StreamStart, derive_seed
from train.loss import Denoiser, Frozen, LossConfig, latent_scale_warning, training_loss

log = logging.getLogger("invs.train")

METRICS_CSV = "logs/metrics.csv"
WORKER_FACTS = "logs/worker.json"
METRIC_FIELDS = (
    "step",
    "loss",
    "lr",
    "samples_per_s",
    "skipped",
    "latent_std",
    "val_psnr",
    "val_ssim",
    "val_psnr_generated",
    "val_ssim_generated",
    "val_psnr_partial",
    "val_ssim_partial",
)
#: Steps (from the start of this run or its resumption) over which the scaled target latents' std is measured.
LATENT_CHECK_STEPS = 4
#: Seconds between progress messages to the driver.
PROGRESS_INTERVAL_S = 0.5


class StepFailure(RuntimeError):
    """A worker's exception in (or before) a training step, with where it happened: the driver tells a failure that
    repeats at the same step after a restart (deterministic: stop) from a lost worker (restart)."""

    def __init__(self, step: int, rank: int, error: str) -> None:
        super().__init__(f"{error} (rank {rank}, step {step})")
        self.step, self.rank, self.error = step, rank, error

    def __reduce__(self) -> tuple[Any, ...]:
        return (StepFailure, (self.step, self.rank, self.error))


# ------------------------------------------------------------------------------------------------ model


def model_parts(tc: TrainConfig) -> dict[str, Any]:
    """The frozen and trainable components for this config (tiny offline, or loaded), scheduler as configured."""
    from invs.models import build_tiny_components, load_components

    parts = build_tiny_components(tc.seed, tc.tiny_unet_levels) if tc.tiny else load_components(tc.model)
    if tc.conditioning == "clip_image":
        parts["image_encoder"] = build_tiny_image_encoder(tc.seed) if tc.tiny else load_image_encoder(tc.image_encoder)
    if tc.prediction_type != "scheduler":
        parts["scheduler"] = type(parts["scheduler"]).from_config(
            parts["scheduler"].config, prediction_type=tc.prediction_type
        )
    return parts


def freeze(parts: dict[str, Any], device: torch.device) -> None:
    """The frozen parts (VAE, text and image encoders) without gradients on ``device``, in the dtype they were
    loaded in: under bf16 autocast they compute in bf16 all the same, and the export holds them exactly as loaded."""
    for name in ("vae", "text_encoder", "image_encoder"):
        if name in parts:
            parts[name].requires_grad_(False).to(device)


def build_denoiser(parts: dict[str, Any], conditioner: Conditioner, tc: TrainConfig) -> Denoiser:
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = parts["unet"]
    unet.set_attn_processor(AttnProcessor2_0())
    if tc.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    projection = None
    if conditioner.kind == "clip_image":
        torch.manual_seed(derive_seed(tc.seed, "projection") % 2**31)
        projection = ImageProjection(conditioner.feature_dim, unet.config.cross_attention_dim)
    return Denoiser(unet, projection)


def autocast_dtype(tc: TrainConfig, device: torch.device) -> torch.dtype | None:
    if tc.mixed_precision == "bf16" or (tc.mixed_precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, amp: torch.dtype | None) -> torch.autocast:
    """The training precision's autocast context (disabled for float32): the step and validation both run in it."""
    return torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)


def lr_scheduler(optimizer: torch.optim.Optimizer, tc: TrainConfig) -> Any:
    from diffusers.optimization import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[tc.lr_schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=tc.warmup_steps, num_training_steps=tc.steps)


# ------------------------------------------------------------------------------------------------ loop


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point; ``loop_config`` = ``{"config": Config, "plan": DataPlan, "fitted_vae": dict | None,
    "progress": ray.util.queue.Queue | None}``. Any exception leaves as a :class:`StepFailure` naming the step."""
    where = {"step": 0, "rank": -1}
    try:
        _train_worker(loop_config, where)
    except Exception as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        error = f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
        raise StepFailure(where["step"], where["rank"], error[:500]) from exc


def _train_worker(loop_config: dict[str, Any], where: dict[str, int]) -> None:
    """The worker's set-up and steps; keeps ``where`` (step being run, rank) current for error reports."""
    worker = TrainWorker(loop_config, where)
    for step in range(worker.start_step, worker.tc.steps):
        where["step"] = step + 1
        total = worker.accumulate(step)
        worker.update(step, total)
        worker.after_step(step + 1)
    worker.finish()


class TrainWorker:
    """One Ray Train worker's state: the model and its optimizer (restored from the last checkpoint), the pair
    stream, and rank 0's logger, validator and progress reports."""

    def __init__(self, loop_config: dict[str, Any], where: dict[str, int]) -> None:
        import ray.train
        import ray.train.torch

        self.config: Config = loop_config["config"]
        self.plan: DataPlan = loop_config["plan"]
        self.tc = tc = self.config.train
        apply_storage_settings(self.config)
        configure_worker_logging()
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        where["rank"] = self.rank
        self.device = ray.train.torch.get_device()
        self.amp = autocast_dtype(tc, self.device)
        self._build_model(loop_config.get("fitted_vae"))
        self._restore()
        where["step"] = self.start_step + 1
        self.model = ray.train.torch.prepare_model(
            self.denoiser, parallel_strategy_kwargs={"find_unused_parameters": False}
        )
        if self.ema is not None:
            self.ema.to(self.device)
        self.batches = iter(self._loader())
        self.frozen = Frozen(self.parts["vae"], self.parts["scheduler"], self.conditioner)
        self.loss_config = loss_config(tc, self.parts)
        first = self.rank == 0
        self.logger = MetricsLog(tc.out, self.start_step) if first else None
        self.validator = Validator(self.plan, self.config, self.parts, self.conditioner, self.device) if first else None
        self.progress = ProgressSender(loop_config.get("progress"), self.start_step, tc.steps) if first else None
        self.latent_stds: list[float] = []
        self.tick, self.samples = time.perf_counter(), 0
        self.facts = WorkerFacts(
            str(self.device),
            str(self.amp).removeprefix("torch.") if self.amp else "float32",
            self.start_step,
            self.world,
            self.vae_id,
            frozen_dtype=str(self.parts["vae"].dtype).removeprefix("torch."),
        )

    def _build_model(self, fitted: dict[str, Any] | None) -> None:
        """The model's parts (the fitted tiny VAE's weights and scale applied), frozen; the trainable denoiser,
        its optimizer, learning-rate schedule and (rank 0) EMA."""
        from diffusers.training_utils import EMAModel

        tc = self.tc
        self.parts = parts = model_parts(tc)
        if fitted is not None:
            parts["vae"].load_state_dict(fitted["state"])
            parts["vae"].register_to_config(scaling_factor=fitted["scaling_factor"])
        if tc.vae_scaling_factor is not None:
            parts["vae"].register_to_config(scaling_factor=tc.vae_scaling_factor)
        freeze(parts, self.device)
        self.vae_id = vae_fingerprint(parts["vae"]) if tc.use_latents else None
        self.conditioner = Conditioner(tc.conditioning, parts).to(self.device)
        self.denoiser = build_denoiser(parts, self.conditioner, tc)
        self.trainable = [p for p in self.denoiser.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=tc.learning_rate, weight_decay=tc.weight_decay)
        self.scheduler = lr_scheduler(self.optimizer, tc)
        self.ema = EMAModel(self.trainable, decay=tc.ema_decay) if self.rank == 0 and tc.ema_decay > 0 else None

    def _restore(self) -> None:
        """The step and data position to start from: the last checkpoint's, else the beginning."""
        import ray.train

        self.start_step = 0
        self.position = DataPosition(num_streams=self.world * max(self.tc.loader_workers, 1))
        restored = ray.train.get_checkpoint()
        if restored is None:
            return
        # A folder of this worker's own: Checkpoint.as_directory() shares one download folder between the workers of
        # a node, and with the checkpoint on S3 one worker's clean-up raced another's read (EOFError, "file read
        # failed" in torch.load; found by the rehearsal's S3 resume).
        with tempfile.TemporaryDirectory(prefix=f"invs-restore-{self.rank}-") as folder:
            restored.to_directory(folder)
            state = (self.denoiser, self.optimizer, self.scheduler, self.ema, self.position)
            self.start_step, self.position = load_state(Path(folder), *state)

    def _loader(self) -> torch.utils.data.DataLoader:
        """This rank's share of the pair stream, from the restored position."""
        tc = self.tc
        dataset = PairStream(
            self.plan,
            self.rank,
            self.world,
            tc.loader_workers,
            tc.seed,
            tc.shuffle_buffer,
            starts=self.position.streams,
            rotation=self.position.batches % max(tc.loader_workers, 1),
            latents_vae=self.vae_id,
        )
        return torch.utils.data.DataLoader(
            dataset, batch_size=tc.batch_size, num_workers=tc.loader_workers, collate_fn=collate, pin_memory=False
        )

    def accumulate(self, step: int) -> torch.Tensor:
        """Forward and backward over the step's micro-batches; the summed loss (gradients synchronised once)."""
        tc = self.tc
        total = torch.zeros((), device=self.device)
        stats: dict[str, float] | None = {} if step < self.start_step + LATENT_CHECK_STEPS else None
        for micro in range(tc.grad_accumulation):
            batch = next(self.batches)
            self.position.consume(batch)
            tensors = {k: v.to(self.device) for k, v in batch.items() if v.dtype.is_floating_point}
            self.samples += int(batch["stream"].shape[0])
            self.facts.count_batch(stored="moments" in batch)
            generator = torch.Generator().manual_seed(derive_seed(tc.seed, step, micro, self.rank) % 2**63)
            last = micro == tc.grad_accumulation - 1
            sync = contextlib.nullcontext() if last or self.world == 1 else self.model.no_sync()
            with sync, autocast(self.device, self.amp):
                loss = training_loss(self.model, self.frozen, tensors, self.loss_config, generator, stats)
                loss = loss / tc.grad_accumulation
                loss.backward()
            total += loss.detach()
            if stats is not None:
                self.latent_stds.append(stats["latent_std"])
        return total

    def update(self, step: int, total: torch.Tensor) -> None:
        """The optimizer step (a non-finite loss stops the run), the schedule, EMA, and the step's metrics."""
        if not torch.isfinite(total):
            raise FloatingPointError(f"the loss is {float(total)} at step {step + 1} (learning rate too high?)")
        if self.tc.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.tc.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.trainable)
        loss_value, skipped = _mean_loss_and_total_skipped(total, self.position.skipped, self.world)
        elapsed = time.perf_counter() - self.tick
        self.metrics: dict[str, Any] = {
            "step": step + 1,
            "loss": loss_value,
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": self.samples / elapsed if elapsed > 0 else 0.0,
            "skipped": skipped,
        }

    def after_step(self, done: int) -> None:
        """The latent-scale check, validation, the metrics log, checkpoints and progress, as due after step ``done``."""
        import ray.train

        tc, metrics = self.tc, self.metrics
        final = done == tc.steps
        if done == min(self.start_step + LATENT_CHECK_STEPS, tc.steps):
            scale = self.frozen.vae.config.scaling_factor
            metrics["latent_std"] = check_latent_scale(self.latent_stds, scale, self.rank)
        validate_now = final or (tc.validate_every and done % tc.validate_every == 0)
        if validate_now and self.validator is not None:
            with ema_weights(self.ema, self.trainable), autocast(self.device, self.amp):
                metrics |= self.validator.validate(model_unwrapped(self.model), done)
            self.facts.validations.append(done)
        if self.logger is not None:
            self.logger.write(metrics)
        if final or done % tc.checkpoint_every == 0:
            self._checkpoint(done)
        elif done % 10 == 0:
            ray.train.report(metrics)
        if self.progress is not None:
            self.progress.send(metrics, force=final or validate_now or "latent_std" in metrics)
        self.tick, self.samples = time.perf_counter(), 0

    def _checkpoint(self, done: int) -> None:
        """Every rank's data position gathered; rank 0 saves the state and reports it with the metrics."""
        import ray.train

        positions = _gather(self.position, self.world)
        with tempfile.TemporaryDirectory(prefix="invs-ckpt-") as folder:
            checkpoint = None
            if self.rank == 0:
                state = (model_unwrapped(self.model), self.optimizer, self.scheduler, self.ema, positions)
                save_state(Path(folder), done, *state)
                self.logger.flush()
                checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(self.metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_{done:08d}")

    def finish(self) -> None:
        """Rank 0 exports the model (EMA weights) and writes ``OUT/logs/worker.json``."""
        if self.rank == 0:
            export(model_unwrapped(self.model), self.ema, self.trainable, self.parts, self.config, self.plan)
            uri = storage.join(self.tc.out, WORKER_FACTS)
            storage.write_text(uri, json.dumps(dataclasses.asdict(self.facts), indent=1))


def loss_config(tc: TrainConfig, parts: dict[str, Any]) -> LossConfig:
    """The loss settings of a run: its timestep sampling, noise offset, CFG dropout and the scheduler's target."""
    return LossConfig(
        timesteps=tc.timesteps,
        timestep_params={"mean": tc.logit_normal_mean, "std": tc.logit_normal_std}
        if tc.timesteps == "logit_normal"
        else {},
        noise_offset=tc.noise_offset,
        cfg_dropout=tc.cfg_dropout if tc.conditioning == "clip_image" else 0.0,
        prediction_type=parts["scheduler"].config.prediction_type,
    )


@dataclasses.dataclass
class WorkerFacts:
    """What rank 0's last attempt ran (``OUT/logs/worker.json``): device, compute precision, where it started, the
    VAE fingerprint it matched stored latents against, and how many of its batches used them."""

    device: str
    precision: str  # the autocast dtype of the step and of validation ("float32": none)
    started_at_step: int
    world_size: int
    vae: str | None
    frozen_dtype: str  # the frozen VAE's weights as held (as loaded: the export holds them so)
    batches_with_stored_latents: int = 0
    batches_encoded: int = 0
    validations: list[int] = dataclasses.field(default_factory=list)

    def count_batch(self, stored: bool) -> None:
        if stored:
            self.batches_with_stored_latents += 1
        else:
            self.batches_encoded += 1


def model_unwrapped(model: torch.nn.Module) -> Denoiser:
    return model.module if hasattr(model, "module") else model  # type: ignore[return-value]


def configure_worker_logging() -> None:
    """Our loggers at INFO on the worker; Ray Train's own per-report and per-checkpoint INFO lines stay quiet (the
    driver shows a progress bar instead)."""
    ours = logging.getLogger("invs")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    # Ray Train V2 logs each report under a logger named by its file path, so it inherits the root level, which
    # Ray sets to INFO in workers.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    from invs.models import quiet_model_libraries

    quiet_model_libraries()


def check_latent_scale(stds: list[float], scaling_factor: float, rank: int) -> float:
    """Mean std of the scaled target latents over the first micro-batches; logged, and a loud warning when it is
    outside :data:`train.loss.LATENT_STD_RANGE`."""
    std = sum(stds) / max(len(stds), 1)
    if rank == 0:
        warning = latent_scale_warning(std, scaling_factor)
        if warning is None:
            log.debug("latent scale: std of the scaled target latents %.3f over %d micro-batches", std, len(stds))
        else:
            log.warning("LATENT SCALE: %s", warning)
    return std


class ProgressSender:
    """Rank 0's metrics to the driver's progress bar (:func:`train.run.show_progress`), at most every
    :data:`PROGRESS_INTERVAL_S` seconds; a full queue drops the message rather than slowing training."""

    def __init__(self, queue: Any, start_step: int, steps: int) -> None:
        self.queue, self.last = queue, 0.0
        self.send({"step": start_step, "first_step": start_step, "steps": steps}, force=True)

    def send(self, metrics: dict[str, Any], force: bool = False) -> None:
        from ray.util.queue import Full

        now = time.monotonic()
        if self.queue is None or (not force and now - self.last < PROGRESS_INTERVAL_S):
            return
        self.last = now
        with contextlib.suppress(Full):
            self.queue.put_nowait(metrics)


def _mean_loss_and_total_skipped(loss: torch.Tensor, skipped: int, world: int) -> tuple[float, int]:
    """The loss averaged over ranks and the skipped-pair count summed over ranks, in one collective."""
    if world == 1:
        return float(loss), skipped
    both = torch.stack([loss.float(), torch.tensor(float(skipped), device=loss.device)])
    torch.distributed.all_reduce(both)
    return float(both[0]) / world, int(both[1].item())


def _gather(position: DataPosition, world: int) -> DataPosition:
    if world == 1:
        return position
    everyone: list[Any] = [None] * world
    torch.distributed.all_gather_object(everyone, position.to_json())
    return position.merge([DataPosition.from_json(p) for p in everyone])


@contextlib.contextmanager
def ema_weights(ema: Any, parameters: list[torch.nn.Parameter]):
    """Temporarily swap the EMA weights into ``parameters`` (no-op without EMA)."""
    if ema is None:
        yield
        return
    ema.store(parameters)
    ema.copy_to(parameters)
    try:
        yield
    finally:
        ema.restore(parameters)


# ------------------------------------------------------------------------------------------------ state


def save_state(
    folder: Path,
    step: int,
    denoiser: Denoiser,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ema: Any,
    position: DataPosition,
) -> None:
    torch.save(denoiser.state_dict(), folder / "denoiser.pt")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "lr_scheduler.pt")
    if ema is not None:
        torch.save(ema.state_dict(), folder / "ema.pt")
    (folder / "state.json").write_text(json.dumps({"step": step, "data": position.to_json()}, indent=1))


def load_state(
    folder: Path,
    denoiser: Denoiser,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ema: Any,
    position: DataPosition,
) -> tuple[int, DataPosition]:
    """Restore a checkpoint in place; returns the step to continue from and the data position to use."""
    state = json.loads((folder / "state.json").read_text())
    denoiser.load_state_dict(torch.load(folder / "denoiser.pt", map_location="cpu", weights_only=True))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "lr_scheduler.pt", map_location="cpu", weights_only=False))
    if ema is not None and (folder / "ema.pt").is_file():
        ema.load_state_dict(torch.load(folder / "ema.pt", map_location="cpu", weights_only=False))
    saved = DataPosition.from_json(state["data"])
    if saved.num_streams != position.num_streams:
        log.warning(
            "data position saved for %d streams, this run has %d (workers x loader processes changed): every stream "
            "starts a new epoch after the furthest one reached",
            saved.num_streams,
            position.num_streams,
        )
        epoch = max((s.epoch for s in saved.streams.values()), default=0) + 1
        position.streams = {s: StreamStart(epoch, 0, 0) for s in range(position.num_streams)}
        position.batches = 0
    else:
        position = saved
    log.info("resumed from step %d", state["step"])
    return int(state["step"]), position


# ------------------------------------------------------------------------------------------------ logs


class MetricsLog:
    """Rank 0's metrics as CSV (``OUT/logs/metrics.csv``, one row per step), cut back to the resume step.

    A local file gets one line appended per step; on S3 (no appends) the rows are kept and the object rewritten
    on :meth:`flush` (at checkpoints and at the end).
    """

    def __init__(self, out: str, start_step: int) -> None:
        self.uri = storage.join(out, METRICS_CSV)
        self.on_s3 = storage.is_s3(self.uri)
        kept: list[dict[str, Any]] = []
        if start_step > 0 and storage.exists(self.uri):
            kept = [r for r in csv.DictReader(io.StringIO(storage.read_text(self.uri))) if int(r["step"]) <= start_step]
        storage.write_text(self.uri, tables.csv_text(kept, METRIC_FIELDS))
        self.rows = kept if self.on_s3 else []  # locally, later rows go straight to the file

    def write(self, metrics: dict[str, Any]) -> None:
        row = {k: metrics.get(k, "") for k in METRIC_FIELDS}
        if self.on_s3:
            self.rows.append(row)
            return
        with open(self.uri, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=METRIC_FIELDS).writerow(row)

    def flush(self) -> None:
        """Make the S3 object hold every row so far (a local file always does)."""
        if self.on_s3:
            storage.write_text(self.uri, tables.csv_text(self.rows, METRIC_FIELDS))


class Validator:
    """Samples the validation pairs with the current weights; PSNR/SSIM against the targets and a picture."""

    def __init__(
        self, plan: DataPlan, config: Config, parts: dict[str, Any], conditioner: Conditioner, device: Any
    ) -> None:
        from invs import shards
        from invs.pair_builder import pair_to_tensors

        self.config, self.tc, self.plan, self.parts, self.device = config, config.train, plan, parts, device
        items = [pair_to_tensors(shards.decode_pair_sample(k, m), plan.resolution) for k, m in plan.val_samples]
        self.batch = collate(items) if items else None
        self.labels = [k for k, _ in plan.val_samples]
        self.conditioner = conditioner
        self.resolution = plan.resolution

    def validate(self, denoiser: Denoiser, step: int) -> dict[str, float]:
        from inference.pipeline import NovelViewPipeline, delivered_view
        from invs.preview import png_bytes, prediction_sheet

        if self.batch is None:
            return {}
        was_training = denoiser.training
        denoiser.eval()
        try:
            spec = model_spec(self.config, self.parts, self.plan)
            pipe = NovelViewPipeline.from_parts(self.parts, denoiser.unet, spec, denoiser.projection, self.conditioner)
            tc = self.tc
            views, per_pair = pipe.score(
                self.batch, tc.val_inference_steps, tc.guidance_scale, tc.seed, vae_ceiling=False
            )
        finally:
            denoiser.train(was_training)
        scores = {k: float(v.mean()) for k, v in per_pair.items()}
        delivered = delivered_view(self.tc.known_pixels)
        sheet = prediction_sheet(self.batch, views[delivered], self.labels)
        storage.write_bytes(storage.join(self.tc.out, "validation", f"step_{step:08d}.png"), png_bytes(sheet))
        return {
            "val_psnr": scores[f"psnr_{delivered}"],
            "val_ssim": scores[f"ssim_{delivered}"],
            **{f"val_{m}_{name}": scores[f"{m}_{name}"] for name in ("generated", "partial") for m in ("psnr", "ssim")},
        }


def _cpu_float32(module: torch.nn.Module) -> torch.nn.Module:
    """The module on the CPU in float32 (cast only when it is not: diffusers warns about every dtype cast)."""
    module = module.to("cpu")
    return module if all(p.dtype == torch.float32 for p in module.parameters()) else module.to(torch.float32)


def latent_scale_source(tc: TrainConfig) -> str:
    """Where the VAE's ``scaling_factor`` came from, for the model's spec."""
    if tc.vae_scaling_factor is not None:
        return "train.vae_scaling_factor"
    if tc.tiny and tc.tiny_vae_fit_steps > 0:
        return "measured: 1 / std of the fitted tiny VAE's latents of training targets"
    return f"the VAE's own config ({'tiny' if tc.tiny else tc.model})"


def model_spec(config: Config, parts: dict[str, Any], plan: DataPlan) -> ModelSpec:
    """The spec of the model being trained (:mod:`invs.model_spec`): the pairs' own geometry where they record
    it, the config's camera and depth model, the scheduler's prediction type and the VAE's scale."""
    geometry = plan.pair_geometry
    return ModelSpec.from_config(
        config,
        plan.resolution,
        prediction_type=parts["scheduler"].config.prediction_type,
        latent_scale=float(parts["vae"].config.scaling_factor),
        latent_scale_source=latent_scale_source(config.train),
        half_angle_deg=geometry.get("half_angle_deg"),
        depth_training=geometry.get("depth"),
    )


def export(denoiser: Denoiser, ema: Any, trainable: list[torch.nn.Parameter], parts, config: Config, plan) -> None:
    """Write the final (EMA) weights as the model's pipeline (:mod:`inference.pipeline`) to ``OUT/model``."""
    from inference.pipeline import export_model

    tc = config.train
    if ema is not None:
        ema.copy_to(trainable)
    denoiser.eval()
    cpu_parts = {k: (_cpu_float32(v) if isinstance(v, torch.nn.Module) else v) for k, v in parts.items()}
    export_model(
        cpu_parts,
        _cpu_float32(denoiser.unet),
        denoiser.projection.to("cpu") if denoiser.projection is not None else None,
        model_spec(config, parts, plan),
        storage.join(tc.out, "model"),
        training={"steps": tc.steps, "ema_decay": tc.ema_decay, "model": "tiny" if tc.tiny else tc.model},
    )
