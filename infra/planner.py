"""Cost planner: wall time and dollars per stage, from measured per-unit costs (bench/results/*.json).

    python -m infra.planner                          # configs/paper.yaml: ~800K objects, 24 views, 512 px, 96 A100s
    python -m infra.planner --config local --objects 1000 --train-steps 2000 --train-gpus 8

Per-unit costs come from the benchmark JSON where we have measured them (``measured``) and from stated
assumptions where not (``assumed``, e.g. every GPU figure until a GPU benchmark has run). CPU costs measured on
the 2-core development machine are converted to core-seconds (seconds x threads used) and divided by a node's
vCPUs, i.e. they assume rendering and preprocessing scale linearly with cores, which Cycles and our per-object
workers do to first order. Prices are AWS us-east-1 list prices (on-demand, and spot where the node type is
spot in ``ray_cluster.yaml``), assumed as of 2026 and settable. Nothing here calls AWS.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


@dataclass(frozen=True)
class NodeType:
    name: str  # as in ray_cluster.yaml
    instance: str
    vcpus: int
    gpus: int
    dollars_per_hour: float  # the price the cluster pays (spot for spot node types)
    spot: bool


NODE_TYPES = {
    "render_cpu": NodeType("render_cpu", "c6i.8xlarge", 32, 0, 0.54, True),  # assumed spot ~40% of 1.36 on-demand
    "gpu_preprocess": NodeType("gpu_preprocess", "g5.2xlarge", 8, 1, 1.212, False),
    "train_a100": NodeType("train_a100", "p4d.24xlarge", 96, 8, 32.77, False),
}


@dataclass
class Figure:
    value: float
    unit: str
    source: str  # "measured: <file>" or "assumed: <why>"


@dataclass
class Workload:
    objects: int = 800_000
    views: int = 24
    resolution: int = 512
    pairs_per_object: int = 24
    depth: str = "zoedepth"  # or "gt"
    train_steps: int = 300_000
    train_batch_per_gpu: int = 8
    train_gpus: int = 96
    precomputed_latents: bool = True


OBJAVERSE_OBJECTS = 800_000  # Objaverse 1.0 holds ~800K objects


def workload_from_config(preset: str) -> Workload:
    """The workload a config preset or file describes (``render.num_objects`` null with Objaverse: all of it)."""
    from invs.config import load_config

    c = load_config(preset)
    objects = c.render.num_objects or (OBJAVERSE_OBJECTS if c.render.objects == "objaverse" else 5)
    return Workload(
        objects=objects,
        views=c.render.views,
        resolution=c.render.resolution,
        pairs_per_object=c.preprocess.pairs_per_object,
        depth=c.preprocess.depth,
        train_steps=c.train.steps,
        train_batch_per_gpu=c.train.batch_size * c.train.grad_accumulation,
        train_gpus=c.train.num_workers if c.train.use_gpu else 8,
        precomputed_latents=c.preprocess.latents is not None,
    )


@dataclass
class Plan:
    rows: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def per_unit_figures(resolution: int) -> dict[str, Figure]:
    """Core-seconds per rendered view, per pair (gt depth), per ZoeDepth image; GPU throughputs (assumed)."""
    figures: dict[str, Figure] = {}
    key = str(512 if resolution > 256 else 256)
    render = _load("render")
    if render and key in render.get("runs", {}):
        run = render["runs"][key]["long_lived"]
        threads = render.get("threads", render["machine"]["cpus"])
        figures["render_core_s_per_view"] = Figure(
            run["seconds_per_view"] * threads,
            "core-s/view",
            f"measured: bench/results/render.json ({key} px, Cycles {render['samples']} spp, {threads} threads)",
        )
    else:
        figures["render_core_s_per_view"] = Figure(4.0, "core-s/view", "assumed: no render benchmark found")
    pre = _load("preprocess")
    if pre and key in pre.get("runs", {}):
        threads = pre["machine"].get("torch_threads", 2)
        figures["pair_core_s"] = Figure(
            pre["runs"][key]["seconds_per_pair"] * threads,
            "core-s/pair",
            f"measured: bench/results/preprocess.json ({key} px, gt depth, CPU, {threads} threads)",
        )
    else:
        figures["pair_core_s"] = Figure(1.5, "core-s/pair", "assumed: no preprocess benchmark found")
    figures["zoedepth_gpu_images_per_s"] = Figure(
        20.0, "images/s per A10G", "assumed: BEiT-L 384 px in bf16 (~0.2 TFLOP/image) at ~10 TFLOP/s effective"
    )
    figures["pair_gpu_pairs_per_s"] = Figure(
        40.0, "pairs/s per A10G", "assumed: splat + occlusion region on CUDA (CPU: measured, see pair_core_s)"
    )
    train = _load("train_gpu")
    full = [r for r in (train or {}).get("full", []) if not r["gradient_checkpointing"]]
    if full:
        by_mode = {r["mode"]: r for r in full}
        for mode in ("encode", "latents"):
            if mode in by_mode:
                r = by_mode[mode]
                figures[f"train_samples_per_s_per_gpu_{mode}"] = Figure(
                    r["samples_per_s_per_gpu"],
                    "samples/s per GPU",
                    f"measured: bench/results/train_gpu.json ({r['gpu']})",
                )
    else:
        figures["train_samples_per_s_per_gpu_encode"] = Figure(
            9.0, "samples/s per A100", "assumed: SD-2-sized UNet at 512 px, bf16, VAE encode in the step"
        )
        tiny = (_load("train") or {}).get("tiny", [])
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


def plan(work: Workload, nodes: dict[str, int], node_types: dict[str, NodeType] = NODE_TYPES) -> Plan:
    """Wall hours, node-hours and dollars per stage for ``work`` on ``nodes`` (count per node type)."""
    figs = per_unit_figures(work.resolution)
    result = Plan(figures=figs)
    views = work.objects * work.views
    pairs = work.objects * work.pairs_per_object
    counts = {**nodes, "train_a100": math.ceil(work.train_gpus / node_types["train_a100"].gpus)}

    def row(stage: str, units: float, unit: str, node: str, node_seconds: float, basis: str) -> None:
        """``node_seconds``: the work in seconds of one node; it is spread over ``counts[node]`` nodes."""
        nt, count = node_types[node], counts[node]
        wall_h = node_seconds / count / 3600
        result.rows.append(
            {
                "stage": stage,
                "units": units,
                "unit": unit,
                "node_type": f"{node} ({nt.instance}{', spot' if nt.spot else ''})",
                "nodes": count,
                "wall_h": wall_h,
                "node_h": wall_h * count,
                "dollars": wall_h * count * nt.dollars_per_hour,
                "basis": basis,
            }
        )

    def basis(*names: str) -> str:
        return " + ".join(sorted({figs[n].source.split(":")[0] for n in names}))

    render_s = views * figs["render_core_s_per_view"].value / node_types["render_cpu"].vcpus
    row("render", views, "views", "render_cpu", render_s, basis("render_core_s_per_view"))
    depth_images = work.objects * min(work.views, work.pairs_per_object)  # at most one depth map per source view
    depth_s = 0.0 if work.depth == "gt" else depth_images / figs["zoedepth_gpu_images_per_s"].value
    pre_s = pairs / figs["pair_gpu_pairs_per_s"].value + depth_s
    row(
        "preprocess",
        pairs,
        "pairs",
        "gpu_preprocess",
        pre_s,
        basis("pair_gpu_pairs_per_s", "zoedepth_gpu_images_per_s"),
    )
    rate_name = f"train_samples_per_s_per_gpu_{'latents' if work.precomputed_latents else 'encode'}"
    samples = work.train_steps * work.train_batch_per_gpu * work.train_gpus
    gpus_per_node = work.train_gpus / counts["train_a100"]
    train_s = samples / figs[rate_name].value / gpus_per_node  # node-seconds
    row("train", samples, "samples", "train_a100", train_s, basis(rate_name))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="paper", help="config preset or file to take the workload from")
    parser.add_argument("--objects", type=int)
    parser.add_argument("--views", type=int)
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--pairs-per-object", type=int)
    parser.add_argument("--depth", choices=["zoedepth", "gt"])
    parser.add_argument("--train-steps", type=int)
    parser.add_argument("--train-gpus", type=int)
    parser.add_argument("--render-nodes", type=int, default=50)
    parser.add_argument("--preprocess-nodes", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args(argv)
    work = workload_from_config(args.config)
    overrides = {
        k: v
        for k, v in {
            "objects": args.objects,
            "views": args.views,
            "resolution": args.resolution,
            "pairs_per_object": args.pairs_per_object,
            "depth": args.depth,
            "train_steps": args.train_steps,
            "train_gpus": args.train_gpus,
        }.items()
        if v is not None
    }
    work = Workload(**{**work.__dict__, **overrides})
    for name, value in (("render-nodes", args.render_nodes), ("preprocess-nodes", args.preprocess_nodes)):
        if value < 1:
            parser.error(f"--{name} must be >= 1")
    p = plan(work, {"render_cpu": args.render_nodes, "gpu_preprocess": args.preprocess_nodes})
    if args.json:
        print(
            json.dumps(
                {"workload": work.__dict__, "rows": p.rows, "figures": {k: f.__dict__ for k, f in p.figures.items()}},
                indent=2,
            )
        )
        return 0
    print(
        f"workload: {work.objects:,} objects x {work.views} views at {work.resolution} px; {work.pairs_per_object} "
        f"pairs/object ({work.depth} depth); train {work.train_steps:,} steps x {work.train_batch_per_gpu} x "
        f"{work.train_gpus} GPUs"
    )
    print(format_table(p))
    print(budget_line(work, p.figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
