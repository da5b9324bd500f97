"""Typed configuration: dataclasses loaded from YAML presets in ``configs/`` and overridden from the command line.

* A config file is YAML with the sections below (``storage``, ``ray``, ``camera``, ``render``, ``preprocess``,
  ``train``). A file may start from another with ``base: local`` (a preset name) or ``base: other.yaml`` (a path
  relative to the file) and override only what differs.
* Every key is checked: an unknown key or a value of the wrong type is a :class:`ConfigError` naming the file
  and the dotted key (with a suggestion for near-miss spellings), never a silently ignored setting.
* Overrides are ``section.key=value`` strings whose value is parsed as YAML (``render.views=12``,
  ``camera.radius_range=[2.2,2.6]``); entry points map their flags onto the same keys.
* The resolved config is saved next to every output (:func:`save_resolved`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from invs import storage
from invs.errors import ConfigError, StorageError
from invs.model_spec import CONDITIONINGS, KNOWN_PIXELS

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
RESOLVED_NAME = "config.yaml"


@dataclass
class StorageConfig:
    """Where S3 URIs go (``s3_endpoint`` None means AWS, or the AWS_ENDPOINT_URL environment variable) and how
    transient S3 errors are retried (:func:`invs.storage.configure_retries`)."""

    s3_endpoint: str | None = None
    s3_region: str | None = None
    # Transient S3 errors (unreachable endpoint, reset connections, timeouts, 5xx, throttling) are tried this many
    # times in all per operation, waiting retry_backoff_s, doubled per retry (at most 30 s), with jitter.
    retry_attempts: int = 6
    retry_backoff_s: float = 1.0


@dataclass
class RayConfig:
    """``address`` None starts a local Ray instance; ``auto`` joins the cluster this process runs on."""

    address: str | None = None
    num_cpus: int | None = None
    object_store_memory_mb: int | None = 512
    # The Ray cluster file of the fleet this config runs on (relative paths: from the working directory, then the
    # project root). Worker pools are sized for every node it lets the autoscaler start, and
    # `python -m infra.planner --check` checks each stage against its node types. None: the nodes alive now.
    cluster_file: str | None = None


@dataclass
class CameraConfig:
    """Camera model and view sampling (see :mod:`invs.cameras` for the conventions).

    Default: Zero-1-to-3's 35 mm lens on a 32 mm sensor (49.1 deg) at radius U(2.2, 2.6), far enough that a
    unit-normalised object always fits (it needs >= 2.08). ``configs/zero123.yaml`` keeps Zero-1-to-3's U(1.5, 2.2).
    """

    lens_mm: float = 35.0
    sensor_width_mm: float = 32.0
    radius_range: tuple[float, float] = (2.2, 2.6)
    elevation_range_deg: tuple[float, float] = (-20.0, 60.0)
    sampling: Literal["uniform_sphere", "ring"] = "uniform_sphere"
    ring_elevation_deg: float = 20.0


class _StageSection:
    """A stage's section: it runs workers (``device``, ``node_resource``, a CPU count and a worker count, read by
    :func:`invs.fleet.worker_bundle`), and its :attr:`_LOCATIONS` settings hold locations (a local path or
    ``s3://bucket/prefix``), each normalised as it is set (:func:`invs.storage.normalize`: an absolute local path,
    a canonical S3 URI), so every stage and every Ray worker, on any node and in any working directory, reads the
    same value. One that cannot be normalised (a placeholder bucket) is kept for the stage that uses it to refuse,
    naming the setting."""

    _LOCATIONS: typing.ClassVar[tuple[str, ...]] = ()
    WORKER_CPUS: typing.ClassVar[str | float] = 1.0
    WORKER_COUNT: typing.ClassVar[str] = "workers"

    @property
    def worker_cpus(self) -> float:
        """CPUs one of this section's workers asks Ray for."""
        cpus = self.WORKER_CPUS
        return float(getattr(self, cpus) if isinstance(cpus, str) else cpus)

    @property
    def worker_count(self) -> int | None:
        """How many workers the section asks for (None: as many as the fleet holds)."""
        return getattr(self, self.WORKER_COUNT)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._LOCATIONS and isinstance(value, str):
            with contextlib.suppress(StorageError):
                value = storage.normalize(value)
        object.__setattr__(self, name, value)


@dataclass
class RenderConfig(_StageSection):
    _LOCATIONS: typing.ClassVar[tuple[str, ...]] = ("out",)
    #: How a section's workers are scheduled (:func:`invs.fleet.worker_bundle`): CPUs per worker, the setting that
    #: holds how many workers to run (None: as many as fit).
    WORKER_CPUS: typing.ClassVar[str] = "threads_per_worker"
    WORKER_COUNT: typing.ClassVar[str] = "workers"

    objects: str = "samples"
    out: str = "out/local/renders"
    num_objects: int | None = None
    views: int = 12
    resolution: int = 256
    engine: Literal["cycles", "eevee"] = "cycles"
    samples: int = 32
    denoise: bool = False
    denoise_prefilter: Literal["none", "fast", "accurate"] = "fast"  # OpenImageDenoise's albedo/normal prefilter
    adaptive_threshold: float | None = None  # Cycles' noise threshold; 0: adaptive sampling off; None: Blender's 0.01
    # Zero-1-to-3's / Objaverse-XL's light-path limits (diffuse 1, glossy 1, transparent 3, transmission 3);
    # false keeps Blender's defaults (12 bounces), slower and rarely visible on single objects.
    limited_bounces: bool = True
    device: Literal["cpu", "gpu"] = "cpu"
    lighting: Literal["uniform", "zero123_area", "four_suns"] = "uniform"
    seed: int = 0
    depth_dtype: Literal["float16", "float32"] = "float16"
    # What each view's shard sample holds (invs.passes): rgba and depth (what iNVS needs) and optionally normal
    # (camera-frame unit normals) and albedo (base colour without lighting).
    passes: list[str] = field(default_factory=lambda: ["rgba", "depth"])
    # > 0: each view's alpha from a second render of coverage alone (every surface an unlit emission, no bounces)
    # with this many samples, so the colour render can take few samples and be denoised; objects with a
    # transparent material keep the colour render's alpha. 0: alpha from the colour render.
    coverage_samples: int = 0
    persistent_data: bool = True  # Cycles keeps the synced scene (BVH, images, shaders) across an object's views
    # Sample only the pixels inside the projection of the object's bounding box (2 px margin): the rest of the frame
    # can only be background (alpha 0), so the images are the same and the background's samples are saved.
    crop_to_object: bool = True
    objects_per_shard: int = 64
    shard_flush_s: float = 300.0  # publish a shard at least this often, so progress is durable
    workers: int | None = None  # Blender processes; None: CPUs // threads_per_worker
    threads_per_worker: int = 2  # render threads of each Blender process (and its Ray CPU request)
    timeout_s: float = 300.0  # per object; the Blender process is killed past it
    # Per Blender process; killed past it. None: 80% of the node's memory (or its container's limit) divided by the
    # render workers that node holds (its CPUs / threads_per_worker, or its GPUs with device gpu).
    max_memory_mb: float | None = None
    # With every render worker lost (nodes gone) and none starting, stop after this long with one line (a re-run
    # finishes the job); an autoscaler that adds nodes within it keeps the job going.
    worker_wait_s: float = 900.0
    max_attempts: int = 3
    node_resource: str | None = None  # custom Ray resource (ray_cluster.yaml) render workers need; None: any node


@dataclass
class ObjaverseConfig:
    """The Objaverse source of the render stage (``render.objects: objaverse``): which objects, and where they come
    from (:mod:`render.objaverse_source`)."""

    uids_file: str | None = None  # render the uids listed in this file (one per line)
    lvis_categories: list[str] = field(default_factory=list)  # only these LVIS categories
    licenses: list[str] = field(default_factory=list)  # only these licences (by, by-sa, cc0, ...)
    cache: str | None = None  # local cache (index; objects when there is no store); None: ~/.cache/invs
    mirror: str | None = None  # http(s) base URL with Hugging Face's layout, read instead of huggingface.co
    # s3://bucket/prefix (or a shared directory) holding a copy of every object and index file fetched: workers
    # read objects from it first and copy each new download there, so later runs make no HTTP request. Separate
    # from the mirror, which is a read-only HTTP source; with a store, workers keep no local copies.
    store: str | None = None
    download_attempts: int = 5  # HTTP tries per file; transient errors (5xx, 429, timeouts, resets) are retried
    download_backoff_s: float = 1.0  # wait before the 2nd try, doubled for each further one (max 60 s), jittered
    download_timeout_s: float = 60.0  # per HTTP request: connecting and each read


@dataclass
class ObjaverseXLConfig:
    """The Objaverse-XL source of the render stage (``render.objects: objaverse-xl``): which of its ~10M objects
    (:mod:`render.objaverse_xl`). The ``objaverse`` section's cache, store, retries and mirror (for Sketchfab
    objects) serve it too; ``render.num_objects`` and ``render.seed`` draw a sample of the selection."""

    sources: list[Literal["github", "thingiverse", "smithsonian", "sketchfab"]] = field(default_factory=list)  # []: all
    licenses: list[str] = field(default_factory=list)  # as the annotations write them (CC0, by, MIT License, ...)
    file_types: list[str] = field(default_factory=list)  # glb, obj, stl, ...; []: every type render/formats.py imports
    alignment: bool = False  # only the alignment subset (Zero-1-to-3-XL's fine-tuning set: GitHub and Sketchfab)
    ids_file: str | None = None  # only these: a .txt of fileIdentifiers, sha256s or uids, or a selection.parquet
    dedupe: bool = True  # keep one object per sha256 (XL repeats files across repositories)
    # "FROM=TO" URL prefix rewrites for every XL download (annotations, git clones, Thingiverse, Smithsonian), e.g.
    # "https://github.com/=https://git.example.org/github/"; Sketchfab objects use objaverse.mirror
    url_rewrites: list[str] = field(default_factory=list)
    clone_timeout_s: float = 900.0  # per git command of a GitHub clone


@dataclass
class PreprocessConfig(_StageSection):
    _LOCATIONS: typing.ClassVar[tuple[str, ...]] = ("renders", "out")
    WORKER_CPUS: typing.ClassVar[float] = 1.0
    WORKER_COUNT: typing.ClassVar[str] = "workers"

    renders: str = "out/local/renders"
    out: str = "out/local/pairs"
    pairs_per_object: int = 8
    depth: Literal["zoedepth", "gt"] = "gt"
    depth_model: str = "Intel/zoedepth-nyu-kitti"
    resolution: int = 256
    min_angle_deg: float = 15.0
    max_angle_deg: float = 120.0
    val_fraction: float = 0.1
    seed: int = 0
    mask_half_angle_deg: float = 45.0  # covered pixels reach mask 0.5 at this source/target ray angle
    flip_average: bool = False  # ZoeDepth: average with the prediction on the mirrored image
    device: Literal["cpu", "gpu"] = "cpu"  # depth, splatting and masks (gpu: one CUDA device per pair maker)
    workers: int | None = None  # actors in the pair-making pool; None: CPUs - 1 (at least 1)
    objects_per_shard: int = 16  # all pairs of an object share one shard
    # Leave out rendered objects carrying any of these quality flags (invs.quality: empty, nearly_empty, too_small,
    # cropped, constant_color, missing_texture, no_material), as the render manifest records them
    skip_flags: list[str] = field(default_factory=list)
    node_resource: str | None = None  # custom Ray resource (ray_cluster.yaml) the pair makers need; None: any node
    latents: str | None = None  # also store VAE latents of target and partial: "tiny" or a diffusers model id/path
    # Stop with one line when no node can hold a pair maker (e.g. device cuda and no GPU node) for this long
    worker_wait_s: float = 900.0


@dataclass
class TrainConfig(_StageSection):
    _LOCATIONS: typing.ClassVar[tuple[str, ...]] = ("data", "out")
    WORKER_CPUS: typing.ClassVar[float] = 1.0
    WORKER_COUNT: typing.ClassVar[str] = "num_workers"

    data: str = "out/local/pairs"  # pair shards of the preprocess stage (OUT/shards + OUT/index)
    out: str = "out/local/train"  # Ray Train run (checkpoints), logs, validation grids, the exported pipeline
    model: str = "stabilityai/stable-diffusion-2-inpainting"
    tiny: bool = False  # small random-config model built offline instead of `model`
    tiny_vae_fit_steps: int = 0  # tiny: first fit its random VAE on train targets (else predictions decode to noise)
    tiny_vae_learning_rate: float = 1e-3  # Adam, for that fit
    tiny_unet_levels: int = 2  # tiny: UNet resolution levels (2: 32, 64 channels; each more: 64 more, half the size)
    vae_scaling_factor: float | None = None  # None: the VAE's own (tiny fitted: 1 / std of its latents, measured)
    resolution: int | None = None  # None: the pair shards' size; otherwise they must have this size
    steps: int = 300  # optimizer steps (each of `grad_accumulation` micro-batches per worker)
    batch_size: int = 4  # per worker and micro-batch
    grad_accumulation: int = 1
    num_workers: int = 1  # Ray Train workers (DDP ranks)
    device: Literal["cpu", "gpu"] = "cpu"  # gpu: one CUDA device per worker, NCCL
    node_resource: str | None = None  # custom Ray resource (ray_cluster.yaml) every worker needs; None: any node
    loader_workers: int = 1  # data-loading processes per worker (0: load in the training process)
    shuffle_buffer: int = 64  # samples shuffled together while streaming (after shuffling shard order)
    learning_rate: float = 1e-4
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    # auto: bf16 autocast on GPU, float32 on CPU; also spelled no / false / fp32 / float32 and bfloat16
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    ema_decay: float = 0.9999  # 0 turns EMA off
    timesteps: Literal["uniform", "cubic", "logit_normal"] = "cubic"
    logit_normal_mean: float = 1.5
    logit_normal_std: float = 1.0
    noise_offset: float = 0.0
    prediction_type: Literal["scheduler", "epsilon", "v_prediction"] = "scheduler"  # scheduler: the model's own
    conditioning: Literal[CONDITIONINGS] = "empty_prompt"
    image_encoder: str = "openai/clip-vit-large-patch14"  # for clip_image (tiny: a small random CLIP)
    cfg_dropout: float = 0.1  # probability of the unconditional embedding in training (clip_image)
    use_latents: bool = True  # use precomputed VAE latents in the pair shards when they match the model's VAE
    require_stored_latents: bool = False  # refuse to start when the pairs' stored latents are not this VAE's
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    max_failures: int = 2  # failures survived by restarting from the last checkpoint (one repeating at a step stops)
    validate_every: int = 100  # 0: only at the end
    val_pairs: int = 4
    val_inference_steps: int = 20
    guidance_scale: float = 1.0
    known_pixels: Literal[KNOWN_PIXELS] = "composite"  # keep the partial view's pixels by the soft mask
    seed: int = 0

    @property
    def use_gpu(self) -> bool:
        """Whether the workers run on GPUs (``device == "gpu"``)."""
        return self.device == "gpu"


@dataclass
class Config:
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    objaverse: ObjaverseConfig = field(default_factory=ObjaverseConfig)
    objaverse_xl: ObjaverseXLConfig = field(default_factory=ObjaverseXLConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def worker_sections(self) -> dict[str, Any]:
        """The sections whose stages run workers on the fleet, by name."""
        return {"render": self.render, "preprocess": self.preprocess, "train": self.train}


# ------------------------------------------------------------------------------------------------ range checks

#: Allowed values of numeric settings: ``>= a``, ``> a`` or an interval ``[a, b]`` / ``[a, b)`` / ``(a, b]``.
#: A null value (where the type allows it) is not checked; a pair (``radius_range``) is checked per element
#: and must be ordered.
RANGES: dict[str, str] = {
    "storage.retry_attempts": ">= 1",
    "storage.retry_backoff_s": ">= 0",
    "ray.num_cpus": ">= 1",
    "ray.object_store_memory_mb": ">= 64",
    "camera.lens_mm": "> 0",
    "camera.sensor_width_mm": "> 0",
    "camera.radius_range": "> 0",
    "camera.elevation_range_deg": "[-90, 90]",
    "camera.ring_elevation_deg": "[-90, 90]",
    "render.num_objects": ">= 0",
    "render.views": ">= 1",
    "render.resolution": ">= 8",
    "render.samples": ">= 1",
    "render.adaptive_threshold": "[0, 1]",
    "render.objects_per_shard": ">= 1",
    "render.shard_flush_s": "> 0",
    "render.workers": ">= 1",
    "render.threads_per_worker": ">= 1",
    "render.timeout_s": "> 0",
    "render.max_memory_mb": "> 0",
    "render.max_attempts": ">= 1",
    "render.worker_wait_s": "> 0",
    "objaverse.download_attempts": ">= 1",
    "objaverse.download_backoff_s": ">= 0",
    "objaverse.download_timeout_s": "> 0",
    "objaverse_xl.clone_timeout_s": "> 0",
    "preprocess.pairs_per_object": ">= 1",
    "preprocess.resolution": ">= 8",
    "preprocess.min_angle_deg": "[0, 180]",
    "preprocess.max_angle_deg": "[0, 180]",
    "preprocess.val_fraction": "[0, 1)",
    "preprocess.mask_half_angle_deg": "(0, 180)",
    "preprocess.workers": ">= 1",
    "preprocess.objects_per_shard": ">= 1",
    "preprocess.worker_wait_s": "> 0",
    "train.tiny_vae_fit_steps": ">= 0",
    "train.tiny_vae_learning_rate": "> 0",
    "train.tiny_unet_levels": "[2, 4]",
    "train.vae_scaling_factor": "> 0",
    "train.resolution": ">= 8",
    "train.steps": ">= 1",
    "train.batch_size": ">= 1",
    "train.grad_accumulation": ">= 1",
    "train.num_workers": ">= 1",
    "train.loader_workers": ">= 0",
    "train.shuffle_buffer": ">= 1",
    "train.learning_rate": "> 0",
    "train.warmup_steps": ">= 0",
    "train.weight_decay": ">= 0",
    "train.max_grad_norm": "> 0",
    "train.ema_decay": "[0, 1)",
    "train.logit_normal_std": "> 0",
    "train.cfg_dropout": "[0, 1]",
    "train.checkpoint_every": ">= 1",
    "train.keep_checkpoints": ">= 1",
    "train.max_failures": ">= 0",
    "render.coverage_samples": ">= 0",
    "train.validate_every": ">= 0",
    "train.val_pairs": ">= 0",
    "train.val_inference_steps": ">= 1",
    "train.guidance_scale": ">= 1",
}
#: Pairs of settings where the first may not exceed the second.
ORDERED = [("preprocess.min_angle_deg", "preprocess.max_angle_deg")]


def _in_range(value: float, rule: str) -> bool:
    if rule.startswith((">=", ">")):
        bound = float(rule.lstrip(">= "))
        return value >= bound if rule.startswith(">=") else value > bound
    lo, hi = (float(x) for x in rule[1:-1].split(","))
    above = value >= lo if rule[0] == "[" else value > lo
    below = value <= hi if rule[-1] == "]" else value < hi
    return above and below


def setting(config: Config, key: str) -> Any:
    """The value of a dotted ``section.name`` setting."""
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def check_ranges(config: Config) -> None:
    """Raise :class:`ConfigError` naming the first setting outside :data:`RANGES` or out of order."""
    for key, rule in RANGES.items():
        value = setting(config, key)
        values = value if isinstance(value, tuple) else (value,)
        if any(v is not None and not _in_range(v, rule) for v in values):
            raise ConfigError(f"{key} must be {rule}, got {value!r}")
        if isinstance(value, tuple) and list(value) != sorted(value):
            raise ConfigError(f"{key} must be [low, high], got {value!r}")
    for first, second in ORDERED:
        if setting(config, first) > setting(config, second):
            raise ConfigError(f"{first} must be <= {second}, got {setting(config, first)} > {setting(config, second)}")
    from invs import passes, quality

    try:
        config.render.passes = list(passes.check(config.render.passes))
        config.preprocess.skip_flags = quality.check(config.preprocess.skip_flags)
    except ValueError as exc:
        raise ConfigError(f"preprocess.skip_flags: {exc}" if "flag" in str(exc) else str(exc)) from None


# ------------------------------------------------------------------------------------------------ type checks


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return f"[{', '.join(_type_name(a) for a in get_args(tp))}]"
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints widen to floats, lists become tuples)."""
    origin = get_origin(tp)
    bad = ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise bad
    if origin is list:
        (arg,) = get_args(tp)
        if not isinstance(value, list | tuple):
            raise bad
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):  # YAML 1.1 reads 1e-4 as a string
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise ConfigError(f"{where}: unsupported setting type {tp!r}")


#: Other spellings of a setting's values, as users write them (YAML reads ``no``, ``off`` and ``false`` as false).
#: Settings renamed since they were first published: old key -> (new key, value map). A file or ``--set`` that
#: still uses the old key keeps working.
RENAMED: dict[str, tuple[str, dict[Any, Any]]] = {"train.use_gpu": ("device", {True: "gpu", False: "cpu"})}
SPELLINGS: dict[str, dict[Any, str]] = {
    **{f"{section}.device": {"cuda": "gpu"} for section in ("render", "preprocess", "train")},
    "train.mixed_precision": {
        False: "no",
        "false": "no",
        "off": "no",
        "none": "no",
        "fp32": "no",
        "float32": "no",
        "bfloat16": "bf16",
    },
}


def _respell(value: Any, where: str) -> Any:
    """``value`` in its canonical spelling for the setting ``where`` (:data:`SPELLINGS`), else unchanged."""
    spellings = SPELLINGS.get(where, {})
    if isinstance(value, bool):
        return spellings.get(value, value)
    if isinstance(value, str):
        return spellings.get(value.strip().lower(), value)
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if name in RENAMED and key not in fields:
            key, values = RENAMED[name]
            value = values.get(value, value)
            name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            prefix = f"{where}." if where else ""
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else f" (known: {', '.join(fields)})"
            raise ConfigError(f"unknown setting {name!r}{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, name)
        else:
            kwargs[key] = _coerce(_respell(value, name), tp, name)
    return cls(**kwargs)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------------------ loading


def resolve_config_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A preset name (``local``, ``paper``) or a YAML path; relative paths are tried next to ``relative_to``."""
    text = str(name_or_path)
    candidates = []
    if relative_to is not None:
        candidates.append(relative_to / text)
    candidates.append(Path(text))
    if "/" not in text and not text.endswith((".yaml", ".yml")):
        candidates.append(CONFIG_DIR / f"{text}.yaml")
    for c in candidates:
        if c.is_file():
            return c.resolve()
    presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config {text!r} not found (a YAML path or one of the presets: {presets})")


def _load_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a preset name or a path, got {base!r}")
    return _merge(_load_raw(resolve_config_path(base, path.parent), (*seen, path)), data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (["section", "key"], parsed YAML value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override {text!r}: expected section.key=value (e.g. render.views=12)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML") from exc
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Apply dotted-key overrides (``["render.views=12"]`` or ``{"render.views": 12}``) to raw config data."""
    items = (
        [(k.split("."), v) for k, v in overrides.items()]
        if isinstance(overrides, dict)
        else [parse_override(o) for o in overrides]
    )
    out = dict(data)
    for path, value in items:
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        out = _merge(out, nested)
    return out


def load_config(
    name_or_path: str | Path | None = "local",
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Load a preset or YAML file (default: the ``local`` preset), apply overrides, check every key and type, and
    An error names its cause: the file, or the overrides (``--set``, flags)."""
    data: dict[str, Any] = {}
    source = "defaults"
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        data = _load_raw(path)
        source = str(path)
    config = _checked(data, source)
    if overrides:
        config = _checked(apply_overrides(data, overrides), "a --set override or flag")
    return config


#: Settings that moved to another section: old ``section.key`` -> new ``section.key``. Files and ``--set`` that still
#: use the old place keep working.
MOVED = {
    **{f"render.{key}": f"objaverse.{key}" for key in ("uids_file", "lvis_categories", "licenses")},
    **{f"render.objaverse_{key}": f"objaverse.{key}" for key in ("cache", "mirror", "store")},
    **{f"render.download_{key}": f"objaverse.download_{key}" for key in ("attempts", "backoff_s", "timeout_s")},
}


def _moved(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the :data:`MOVED` settings in their new sections (an old-place value wins: it was written
    last, by an override, or the file still uses it)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old, new in MOVED.items():
        old_section, old_key = old.split(".")
        section = out.get(old_section)
        if isinstance(section, dict) and old_key in section:
            new_section, new_key = new.split(".")
            target = out.setdefault(new_section, {})
            if isinstance(target, dict):
                target[new_key] = section.pop(old_key)
    return out


def _checked(data: dict[str, Any], source: str) -> Config:
    data = _moved(data)
    try:
        config = _build(Config, data, "")
        check_ranges(config)
        return config
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def to_dict(config: Config) -> dict[str, Any]:
    """Plain-data form (tuples become lists) that :func:`load_config` reads back to an equal Config."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_resolved(config: Config, out_uri: str, name: str = RESOLVED_NAME) -> str:
    """Write the resolved config as YAML beside an output (``OUT/config.yaml``); returns its URI."""
    uri = storage.join(out_uri, name)
    storage.write_text(uri, dump_yaml(config))
    return uri


def apply_storage_settings(config: Config) -> None:
    """Point S3 URIs at the configured endpoint (if any) and set the retry policy, for this process."""
    if config.storage.s3_endpoint or config.storage.s3_region:
        storage.configure_s3(config.storage.s3_endpoint, config.storage.s3_region)
    storage.configure_retries(config.storage.retry_attempts, config.storage.retry_backoff_s)
