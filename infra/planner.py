"""Cost planner: wall time and dollars per stage, from measured per-unit costs (bench/results/*.json).

    python -m infra.planner                          # configs/paper.yaml: ~800K objects, 24 views, 512 px, 96 A100s
    python -m infra.planner --config local --objects 1000 --train-steps 2000
    python -m infra.planner --selection OUT/selection.parquet   # the objects render/main.py --select-only chose
    python -m infra.planner --check [--config P] [--cluster ray_cluster.yaml]   # can every stage be scheduled?

``--check`` runs Ray's own validation of the cluster file (what ``ray up`` runs first) and checks each stage's
worker (CPUs, GPUs, node resource) against the node types, without AWS: one ``error:`` line per stage that would
wait for ever, exit 2. The plan itself runs the same check first and prices each stage on the node type its
workers land on, plus the head node for the whole run and S3 (a month of storage, requests).

Per-unit costs come from the benchmark JSON where we have measured them (``measured``) and from stated
assumptions where not (``assumed``, e.g. every GPU figure until a GPU benchmark has run). CPU costs measured on
the 2-core development machine are converted to core-seconds (seconds x threads used) and divided by a node's
vCPUs, i.e. they assume rendering and preprocessing scale linearly with cores, which Cycles and our per-object
workers do to first order; a render figure measured at other settings than the preset's is ``scaled`` (linear in
samples, a stated denoising cost). Prices are AWS us-east-1 list prices (on-demand, and spot where the node type
is spot in the cluster file), assumed as of 2026 and settable. Nothing here calls AWS.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invs.config import Config, load_config
from invs.errors import InvsError
from invs.fleet import Fleet, NodeType, check_fleet, default_cluster_file, load_fleet, per_node, worker_bundle

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"

#: AWS us-east-1 on-demand list prices, $/hour (assumed as of 2026; settable). Spot node types pay SPOT_SHARE.
ON_DEMAND = {
    "m6i.2xlarge": 0.384,
    "m6i.4xlarge": 0.768,
    "c6i.8xlarge": 1.36,
    "c6i.16xlarge": 2.72,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.12xlarge": 5.672,
    "g5.48xlarge": 16.288,
    "g6.2xlarge": 0.978,
    "p4d.24xlarge": 32.77,
    "p4de.24xlarge": 40.97,
    "p5.48xlarge": 98.32,
}
SPOT_SHARE = 0.4  # assumed: spot prices of these types run ~35-45% of on-demand
S3_DOLLARS_PER_GB_MONTH = 0.023  # S3 Standard, first 50 TB
S3_PUT_PER_1000 = 0.005
S3_GET_PER_1000 = 0.0004


@dataclass
class Figure:
    value: float
    unit: str
    source: str  # "measured: <file>", "scaled: <from what, how>" or "assumed: <why>"


@dataclass
class Workload:
    objects: int = 800_000
    views: int = 24
    resolution: int = 512
    samples: int = 64
    denoise: bool = True
    adaptive_threshold: float | None = None
    denoise_prefilter: str = "fast"
    coverage_samples: int = 0  # > 0: alpha from a coverage render with this many samples
    crop_to_object: bool = True  # sample only the object's bounding box on screen
    render_device: str = "cpu"  # or "gpu"
    pairs_per_object: int = 24
    depth: str = "zoedepth"  # or "gt"
    train_steps: int = 300_000
    train_batch_per_gpu: int = 8
    train_gpus: int = 96  # training workers: GPUs with train.device gpu, else CPU workers
    train_device: str = "gpu"
    precomputed_latents: bool = True
    objects_per_render_shard: int = 256
    objects_per_pair_shard: int = 64


OBJAVERSE_OBJECTS = 800_000  # Objaverse 1.0 holds ~800K objects


def workload_from_config(config: Config) -> Workload:
    """The workload a config describes (``render.num_objects`` null with Objaverse: all of it)."""
    r, p, t = config.render, config.preprocess, config.train
    objects = r.num_objects or (OBJAVERSE_OBJECTS if r.objects == "objaverse" else 5)
    return Workload(
        objects=objects,
        views=r.views,
        resolution=r.resolution,
        samples=r.samples,
        denoise=r.denoise,
        adaptive_threshold=r.adaptive_threshold,
        denoise_prefilter=r.denoise_prefilter,
        coverage_samples=r.coverage_samples,
        crop_to_object=r.crop_to_object,
        render_device=r.device,
        pairs_per_object=p.pairs_per_object,
        depth=p.depth,
        train_steps=t.steps,
        train_batch_per_gpu=t.batch_size * t.grad_accumulation,
        train_gpus=t.num_workers,
        train_device=t.device,
        precomputed_latents=p.latents is not None,
        objects_per_render_shard=r.objects_per_shard,
        objects_per_pair_shard=p.objects_per_shard,
    )


@dataclass
class Plan:
    rows: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _render_quality_figure(work: Workload, resolution: int) -> Figure | None:
    """Core-seconds per view from ``bench/results/render_quality.json`` for exactly the workload's settings (None
    when it has no such run): the per-object part shared by the workload's views per object where recorded."""
    quality = _load(RESULTS / "render_quality.json")
    wanted = {
        "samples": work.samples,
        "denoise": work.denoise,
        "adaptive_threshold": work.adaptive_threshold,
        "denoise_prefilter": work.denoise_prefilter if work.denoise else "fast",
        "coverage_samples": work.coverage_samples,
        "persistent_data": True,
        "crop_to_object": work.crop_to_object,
    }
    defaults = {
        "adaptive_threshold": None,
        "denoise_prefilter": "fast",
        "coverage_samples": 0,
        "persistent_data": True,
        "crop_to_object": True,
    }
    for name, r in (quality or {}).get("results", {}).items():
        if quality["resolution"] == resolution and defaults | r["settings"] == wanted:
            phases = r.get("cpu_s")
            value = phases["per_object"] / work.views + phases["per_view"] if phases else r["core_s_per_view"]
            shared = f"import shared by {work.views} views; " if phases else ""
            return Figure(
                round(value, 3),
                "core-s/view",
                f"measured: bench/results/render_quality.json ({name}, {resolution} px, "
                f"{quality['machine']['threads']} threads; {shared}"
                f"object PSNR {r['psnr_object_db']:.1f} dB vs 512 spp)",
            )
    return None


def render_figures(work: Workload) -> dict[str, Figure]:
    """Core-seconds per view (CPU) from the render benchmark closest to the workload's settings, and bytes per view.

    An exact match (resolution, samples, denoise, coverage samples) is ``measured``, with the per-object part
    (import, set-up) shared by the workload's views per object where the benchmark recorded it; otherwise the
    nearest run is scaled linearly in samples, and denoising adds an assumed 0.6 core-s/view at 512 px
    (OpenImageDenoise on CPU), marked ``scaled``.
    """
    key = str(512 if work.resolution > 256 else 256)
    figures: dict[str, Figure] = {}
    measured = _render_quality_figure(work, int(key))
    if measured is not None:
        figures["render_core_s_per_view"] = measured
    runs = []
    for path in sorted(RESULTS.glob("render*.json")):
        data = _load(path) or {}
        if key in data.get("runs", {}) and data.get("limited_bounces", True):
            runs.append((path, data))
    if not runs:
        figures.setdefault("render_core_s_per_view", Figure(8.0, "core-s/view", "assumed: no render benchmark found"))
        figures["render_bytes_per_view"] = Figure(6e5, "bytes/view", "assumed: no render benchmark found")
        return figures

    def distance(item: tuple[Path, dict[str, Any]]) -> tuple[int, int]:
        data = item[1]
        return (data.get("denoise", False) != work.denoise, abs(data["samples"] - work.samples))

    path, data = min(runs, key=distance)
    run = data["runs"][key]["long_lived"]
    threads = data.get("threads", data["machine"]["cpus"])
    core_s = run["seconds_per_view"] * threads
    what = f"bench/results/{path.name} ({key} px, Cycles {data['samples']} spp"
    what += ", denoised" if data.get("denoise") else ""
    what += f", {threads} threads)"
    if "render_core_s_per_view" in figures:
        pass  # measured at the preset's own settings by the quality benchmark
    elif distance((path, data)) == (0, 0):
        figures["render_core_s_per_view"] = Figure(core_s, "core-s/view", f"measured: {what}")
    else:
        scaled = core_s * work.samples / data["samples"]
        denoise_s = 0.6 * (work.resolution / 512) ** 2
        if work.denoise and not data.get("denoise"):
            scaled += denoise_s
        elif data.get("denoise") and not work.denoise:
            scaled -= denoise_s
        figures["render_core_s_per_view"] = Figure(
            scaled,
            "core-s/view",
            f"scaled: {what} x {work.samples}/{data['samples']} spp (assumed linear in samples)"
            + (", denoise assumed 0.6 core-s/view at 512 px" if work.denoise != data.get("denoise", False) else ""),
        )
    if "bytes_per_view" in run:
        figures["render_bytes_per_view"] = Figure(
            run["bytes_per_view"] * (work.resolution / int(key)) ** 2, "bytes/view", f"measured: {what}"
        )
    else:
        figures["render_bytes_per_view"] = Figure(
            6e5 * (work.resolution / 512) ** 2,
            "bytes/view",
            f"assumed: RGBA PNG + float16 depth, 600 KB at 512 px scaled to {work.resolution} px",
        )
    figures["render_gpu_s_per_view"] = Figure(
        0.4 * work.samples / 64 * (work.resolution / 512) ** 2,
        "s/view per A10G",
        f"assumed: Cycles CUDA/OptiX, 0.4 s at 64 spp and 512 px scaled to {work.samples} spp and {work.resolution} px "
        "(bpy cannot run in the GPU benchmark)",
    )
    return figures


def per_unit_figures(work: Workload) -> dict[str, Figure]:
    """Every per-unit cost the plan multiplies: render, pairs, depth, latents, training, bytes."""
    figures = render_figures(work)
    key = str(512 if work.resolution > 256 else 256)
    pre = _load(RESULTS / "preprocess.json")
    if pre and key in pre.get("runs", {}):
        threads = pre["machine"].get("torch_threads", 2)
        figures["pair_core_s"] = Figure(
            pre["runs"][key]["mesh"]["seconds_per_pair"] * threads,
            "core-s/pair",
            f"measured: bench/results/preprocess.json ({key} px, gt depth, mesh partial views, CPU, {threads} threads)",
        )
    else:
        figures["pair_core_s"] = Figure(1.5, "core-s/pair", "assumed: no preprocess benchmark found")
    figures["zoedepth_gpu_images_per_s"] = Figure(
        20.0, "images/s per A10G", "assumed: BEiT-L 384 px in bf16 (~0.2 TFLOP/image) at ~10 TFLOP/s effective"
    )
    figures["pair_gpu_pairs_per_s"] = Figure(
        40.0, "pairs/s per A10G", "assumed: splat + occlusion region on CUDA (CPU: measured, see pair_core_s)"
    )
    figures["vae_encode_gpu_images_per_s"] = Figure(
        30.0, "images/s per A10G", "assumed: SD VAE encoder at 512 px in bf16 (~0.5 TFLOP/image)"
    )
    gpu = _load(RESULTS / "gpu.json")  # bench/gpu.sh; measured on whatever GPU ran it (stated)
    if gpu:
        name = gpu["machine"]["gpu"]
        views = [r for r in gpu.get("partial_view", []) if r["size"] == work.resolution and r["device"] == "cuda"]
        if views:
            best = max(views, key=lambda r: r["pairs_per_s"])
            figures["pair_gpu_pairs_per_s"] = Figure(
                best["pairs_per_s"], f"pairs/s per {name}", f"measured: bench/results/gpu.json (batch {best['batch']})"
            )
        encodes = [r for r in gpu.get("vae_encode", []) if r.get("size") == work.resolution]
        if encodes:
            best = max(encodes, key=lambda r: r["images_per_s"])
            figures["vae_encode_gpu_images_per_s"] = Figure(
                best["images_per_s"],
                f"images/s per {name}",
                f"measured: bench/results/gpu.json (batch {best['batch']})",
            )
    depth = (_load(RESULTS / "depth_gpu.json") or {}).get("cuda")
    if depth and depth.get("runs"):
        best = max((r for r in depth["runs"] if "images_per_s" in r), key=lambda r: r["images_per_s"], default=None)
        if best:
            figures["zoedepth_gpu_images_per_s"] = Figure(
                best["images_per_s"], "images/s per GPU", "measured: bench/results/depth_gpu.json"
            )
    figures["pair_bytes"] = Figure(
        figures["render_bytes_per_view"].value * 3.5,
        "bytes/pair",
        "assumed: source, target, partial PNGs + masks ~3.5 rendered views (+ latents 2 x 4x64x64 float16)",
    )
    train = _load(RESULTS / "train_gpu.json")
    full = [r for r in (train or {}).get("full", []) if not r["gradient_checkpointing"]]
    if full:
        by_mode = {r["mode"]: r for r in full}
        for mode in ("encode", "latents"):
            if mode in by_mode:
                figures[f"train_samples_per_s_per_gpu_{mode}"] = a100_rate(by_mode[mode])
    else:
        figures["train_samples_per_s_per_gpu_encode"] = Figure(
            9.0, "samples/s per A100", "assumed: SD-2-sized UNet at 512 px, bf16, VAE encode in the step"
        )
        tiny = (_load(RESULTS / "train.json") or {}).get("tiny", [])
        speedup = next(
            (r["speedup_vs_encode"] for r in tiny if "speedup_vs_encode" in r and r["resolution"] == 256), None
        )
        figures["train_samples_per_s_per_gpu_latents"] = Figure(
            12.0,
            "samples/s per A100",
            "assumed: the VAE encoder of two 512 px images is ~25% of an SD-2 step"
            + (f" (the tiny model measured {speedup:.2f}x, not transferable)" if speedup else ""),
        )
    return figures


#: Dense bf16 tensor-core peaks (TFLOP/s, NVIDIA's data sheets), to carry a training rate measured on one GPU to
#: the A100s the paper preset trains on: the same model and batch at the same MFU scale with the peak.
BF16_PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "L4": 121.0, "A10G": 70.0}


def a100_rate(run: dict[str, Any]) -> Figure:
    """A ``train_gpu.json`` run's samples/s on an A100: as measured on one, else scaled by the bf16 peaks."""
    rate, gpu = float(run["samples_per_s_per_gpu"]), str(run["gpu"])
    source = f"bench/results/train_gpu.json ({gpu})"
    if "A100" in gpu:
        return Figure(rate, "samples/s per A100", f"measured: {source}")
    measured_on = next((name for name in BF16_PEAK_TFLOPS if name in gpu), None)
    if measured_on is None:
        return Figure(rate, "samples/s per GPU", f"measured: {source}; no bf16 peak known to scale it to an A100")
    scale = BF16_PEAK_TFLOPS["A100"] / BF16_PEAK_TFLOPS[measured_on]
    return Figure(
        rate * scale,
        "samples/s per A100",
        f"scaled: {rate:.1f} measured on {measured_on} ({source}) x {scale:.3f}, the A100/{measured_on} bf16 peaks",
    )


def dollars_per_hour(node: NodeType) -> float:
    """The price a node of this type pays per hour (spot: :data:`SPOT_SHARE` of on-demand)."""
    if node.instance not in ON_DEMAND:
        raise InvsError(f"no price for instance type {node.instance!r} (node type {node.name}); add it to ON_DEMAND")
    return ON_DEMAND[node.instance] * (SPOT_SHARE if node.spot else 1.0)


def stage_node_types(config: Config, fleet: Fleet) -> dict[str, NodeType]:
    """For each stage, the node type its workers run on (the first that holds one worker); InvsError if none."""
    problems, _ = check_fleet(config, fleet)
    if problems:
        raise InvsError(problems[0])
    found = {}
    for stage, section in config.worker_sections().items():
        bundle = worker_bundle(section)
        found[stage] = next(nt for nt in fleet.node_types.values() if per_node(bundle, nt.resources) > 0)
    return found


def plan(config: Config, fleet: Fleet, nodes: dict[str, int], work: Workload | None = None) -> Plan:
    """Wall hours, node-hours and dollars per stage for ``config``'s workload on ``nodes`` (count per stage), plus
    the head node for the whole time and S3 (storage for a month, requests)."""
    work = work or workload_from_config(config)
    figs = per_unit_figures(work)
    result = Plan(figures=figs)
    types = stage_node_types(config, fleet)
    views = work.objects * work.views
    pairs = work.objects * work.pairs_per_object
    train_type = types["train"]
    counts = {**nodes, "train": math.ceil(work.train_gpus / max(1, train_type.resources.get("GPU", 1)))}

    def row(stage: str, units: float, unit: str, node: NodeType, count: int, node_seconds: float, basis: str) -> None:
        """``node_seconds``: the work in seconds of one node; it is spread over ``count`` nodes."""
        wall_h = node_seconds / count / 3600
        result.rows.append(
            {
                "stage": stage,
                "units": units,
                "unit": unit,
                "node_type": f"{node.name} ({node.instance}{', spot' if node.spot else ''})",
                "nodes": count,
                "wall_h": wall_h,
                "node_h": wall_h * count,
                "dollars": wall_h * count * dollars_per_hour(node),
                "basis": basis,
            }
        )

    def basis(*names: str) -> str:
        return " + ".join(sorted({figs[n].source.split(":")[0] for n in names}))

    rt = types["render"]
    if work.render_device == "gpu":
        render_s = views * figs["render_gpu_s_per_view"].value / max(1, rt.resources.get("GPU", 1))
        row("render", views, "views", rt, counts["render"], render_s, basis("render_gpu_s_per_view"))
    else:
        render_s = views * figs["render_core_s_per_view"].value / rt.resources.get("CPU", 1)
        row("render", views, "views", rt, counts["render"], render_s, basis("render_core_s_per_view"))
    depth_images = work.objects * min(work.views, work.pairs_per_object)  # at most one depth map per source view
    depth_s = 0.0 if work.depth == "gt" else depth_images / figs["zoedepth_gpu_images_per_s"].value
    latent_s = 2 * pairs / figs["vae_encode_gpu_images_per_s"].value if work.precomputed_latents else 0.0
    names = ["pair_gpu_pairs_per_s", "zoedepth_gpu_images_per_s"]
    names += ["vae_encode_gpu_images_per_s"] if work.precomputed_latents else []
    pt = types["preprocess"]
    pre_s = pairs / figs["pair_gpu_pairs_per_s"].value + depth_s + latent_s
    row("preprocess", pairs, "pairs", pt, counts["preprocess"], pre_s, basis(*names))
    rate_name = f"train_samples_per_s_per_gpu_{'latents' if work.precomputed_latents else 'encode'}"
    samples = work.train_steps * work.train_batch_per_gpu * work.train_gpus
    gpus_per_node = work.train_gpus / counts["train"]
    train_s = samples / figs[rate_name].value / gpus_per_node  # node-seconds
    row("train", samples, "samples", train_type, counts["train"], train_s, basis(rate_name))
    stage_hours = sum(r["wall_h"] for r in result.rows)
    head = fleet.node_types.get(fleet.head or "")
    if head is not None and head.instance:
        row("head", stage_hours, "h", head, 1, stage_hours * 3600, "the stages' wall time")
    data_gb = (views * figs["render_bytes_per_view"].value + pairs * figs["pair_bytes"].value) / 1e9
    shards = work.objects / work.objects_per_render_shard + work.objects / work.objects_per_pair_shard
    puts = 2 * shards + work.objects  # shards, index/manifest parts, one downloaded object mirrored each
    epochs = samples / max(1, pairs)
    gets = shards + epochs * work.objects / work.objects_per_pair_shard  # preprocess reads + training passes
    s3 = data_gb * S3_DOLLARS_PER_GB_MONTH + puts / 1000 * S3_PUT_PER_1000 + gets / 1000 * S3_GET_PER_1000
    result.rows.append(
        {
            "stage": "s3",
            "units": data_gb,
            "unit": "GB",
            "node_type": "S3 Standard, 1 month",
            "nodes": 0,
            "wall_h": 0.0,
            "node_h": 0.0,
            "dollars": s3,
            "basis": "assumed" if "assumed" in figs["pair_bytes"].source else "measured",
        }
    )
    return result


def budget_line(work: Workload, figs: dict[str, Figure]) -> str:
    """How the paper's training budget (96 A100 x 2 weeks) compares with the planned steps."""
    mode = "latents" if work.precomputed_latents else "encode"
    rate = figs[f"train_samples_per_s_per_gpu_{mode}"].value
    budget_samples = 96 * 14 * 24 * 3600 * rate
    planned = work.train_steps * work.train_batch_per_gpu * work.train_gpus
    return (
        f"paper budget 96 A100 x 14 days at {rate:.1f} samples/s/GPU = {budget_samples / 1e6:.0f} M samples "
        f"({budget_samples / (work.train_batch_per_gpu * 96):,.0f} steps of {work.train_batch_per_gpu} x 96); "
        f"planned: {planned / 1e6:.1f} M samples ({planned / budget_samples:.0%} of the budget)"
    )


def format_table(p: Plan) -> str:
    head = f"{'stage':<11} {'units':>14} {'node type':<34} {'nodes':>5} {'wall h':>9} {'node h':>10} {'$':>12}  basis"
    lines = [head, "-" * len(head)]
    for r in p.rows:
        lines.append(
            f"{r['stage']:<11} {r['units']:>10,.0f} {r['unit']:<3.3} {r['node_type']:<34} {r['nodes']:>5} "
            f"{r['wall_h']:>9.1f} {r['node_h']:>10.1f} {r['dollars']:>12,.0f}  {r['basis']}"
        )
    total = sum(r["dollars"] for r in p.rows)
    lines.append(f"{'total':<11} {'':>14} {'':<34} {'':>5} {'':>9} {'':>10} {total:>12,.0f}")
    lines.append("")
    lines.append("per-unit figures:")
    for name, f in p.figures.items():
        lines.append(f"  {name} = {f.value:.4g} {f.unit}  [{f.source}]")
    return "\n".join(lines)


def check(config: Config, cluster: str) -> tuple[list[str], list[str]]:
    """``(problems, lines)`` for ``config`` on the cluster file: Ray's own validation of the file (as ``ray up``
    runs it, no AWS), then every stage's worker against the node types (:func:`invs.fleet.check_fleet`)."""
    from infra.cluster_file import load_cluster_file

    try:
        load_cluster_file(cluster)
    except Exception as exc:  # noqa: BLE001 - Ray raises jsonschema/ValueError/KeyError for bad files: report any
        return [f"cluster file {cluster}: Ray's validation failed: {str(exc).splitlines()[0][:300]}"], []
    return check_fleet(config, load_fleet(cluster))


def selection_size(uri: str) -> int:
    """The number of objects in a ``selection.parquet`` (what ``render/main.py --select-only`` writes)."""
    import pyarrow.parquet as pq

    from invs import storage

    try:
        with storage.open_read(storage.normalize(uri)) as f:
            return pq.ParquetFile(f).metadata.num_rows
    except (OSError, ValueError) as exc:
        raise InvsError(f"cannot read the selection {uri}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.planner", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="paper", help="config preset or file to take the workload from")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument(
        "--cluster", help="Ray cluster file (default: the config's ray.cluster_file, else ray_cluster.yaml)"
    )
    parser.add_argument("--check", action="store_true", help="only check that every stage can run on the cluster")
    parser.add_argument("--objects", type=int)
    parser.add_argument("--selection", help="price the objects of a selection.parquet (render/main.py --select-only)")
    parser.add_argument("--views", type=int)
    parser.add_argument("--train-steps", type=int)
    parser.add_argument("--render-nodes", type=int, default=50)
    parser.add_argument("--preprocess-nodes", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides or None)
        cluster = args.cluster or config.ray.cluster_file or str(default_cluster_file())
        problems, lines = check(config, cluster)
        if args.check or problems:
            for line in lines:
                print(f"ok: {line}")
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            return 2 if problems else 0
        for name, value in (("render-nodes", args.render_nodes), ("preprocess-nodes", args.preprocess_nodes)):
            if value < 1:
                parser.error(f"--{name} must be >= 1")
        work = workload_from_config(config)
        if args.selection is not None:
            if args.objects is not None:
                parser.error("--selection and --objects both give the object count; give one")
            args.objects = selection_size(args.selection)
        overrides = {"objects": args.objects, "views": args.views, "train_steps": args.train_steps}
        work = Workload(**{**work.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
        p = plan(config, load_fleet(cluster), {"render": args.render_nodes, "preprocess": args.preprocess_nodes}, work)
    except InvsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                {"workload": work.__dict__, "rows": p.rows, "figures": {k: f.__dict__ for k, f in p.figures.items()}},
                indent=2,
            )
        )
        return 0
    print(
        f"workload: {work.objects:,} objects x {work.views} views at {work.resolution} px, {work.samples} spp"
        f"{' denoised' if work.denoise else ''} ({work.render_device}); {work.pairs_per_object} pairs/object "
        f"({work.depth} depth); train {work.train_steps:,} steps x {work.train_batch_per_gpu} x {work.train_gpus} "
        f"{'GPUs' if work.train_device == 'gpu' else 'CPU workers'}"
    )
    print(format_table(p))
    if work.train_device == "gpu":
        print(budget_line(work, p.figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
