"""The fleet a config targets: node types of a Ray cluster file, each stage's worker bundle, and whether they fit.

A stage worker asks Ray for a *bundle* of resources (:func:`worker_bundle`): CPUs, a GPU where the stage runs on
one, and a small share of the stage's ``node_resource`` (a custom resource that pins it to a node type). A node
type of ``ray_cluster.yaml`` offers its instance's CPUs and GPUs (from :data:`INSTANCES`, as Ray's AWS provider
detects them; resources written in the file win) plus its custom resources, on up to ``max_workers`` nodes.

* :func:`check_fleet` says, before money is spent, which stage cannot be scheduled on any node type (the job
  would wait for ever) or needs more workers than the fleet can hold.
* :func:`fleet_workers` sizes a stage's worker pool from the whole fleet (every node the autoscaler may start),
  not only from the nodes alive when the job is submitted; workers beyond the nodes alive wait as pending
  actors, which is the demand Ray's autoscaler scales up for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from invs.config import CONFIG_DIR, Config
from invs.errors import ConfigError

#: How much of a node-type resource (``ray_cluster.yaml`` gives each node 1) one worker asks for: the resource only
#: says where a worker may run; CPUs and GPUs still decide how many fit.
NODE_RESOURCE_SHARE = 0.001


@dataclass(frozen=True)
class Instance:
    """What Ray detects on an EC2 instance type: vCPUs and GPUs."""

    vcpus: int
    gpus: int = 0


#: The EC2 instance types the presets use or document (vCPUs, GPUs: AWS's published figures).
INSTANCES: dict[str, Instance] = {
    "m6i.2xlarge": Instance(8),
    "m6i.4xlarge": Instance(16),
    "c6i.8xlarge": Instance(32),
    "c6i.16xlarge": Instance(64),
    "g5.xlarge": Instance(4, 1),
    "g5.2xlarge": Instance(8, 1),
    "g5.12xlarge": Instance(48, 4),
    "g5.48xlarge": Instance(192, 8),
    "g6.2xlarge": Instance(8, 1),
    "p4d.24xlarge": Instance(96, 8),
    "p4de.24xlarge": Instance(96, 8),
    "p5.48xlarge": Instance(192, 8),
}


@dataclass(frozen=True)
class NodeType:
    """One ``available_node_types`` entry: what each node offers and how many the autoscaler may start."""

    name: str
    resources: dict[str, float]
    max_workers: int
    instance: str | None = None
    spot: bool = False


@dataclass
class Fleet:
    """The node types of a cluster file (the head type counts as one node)."""

    path: str
    node_types: dict[str, NodeType] = field(default_factory=dict)
    head: str | None = None


def default_cluster_file() -> Path:
    """``ray_cluster.yaml`` at the project root (beside ``configs/``)."""
    return CONFIG_DIR.parent / "ray_cluster.yaml"


def load_fleet(path: str | Path) -> Fleet:
    """Read a Ray cluster file's node types; a one-line :class:`ConfigError` when it cannot say what a node offers.

    A relative ``path`` that is not under the working directory is looked up from the project root.
    """
    if not Path(path).is_absolute() and not Path(path).exists():
        path = CONFIG_DIR.parent / path
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cluster file {path}: cannot read it ({str(exc).splitlines()[0]})") from None
    types = (data or {}).get("available_node_types") if isinstance(data, dict) else None
    if not isinstance(types, dict) or not types:
        raise ConfigError(f"cluster file {path}: no available_node_types")
    fleet = Fleet(path=str(path), head=data.get("head_node_type"))
    for name, spec in types.items():
        spec = spec or {}
        node_config = spec.get("node_config") or {}
        instance = node_config.get("InstanceType")
        explicit = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
        known = INSTANCES.get(instance) if instance else None
        if "CPU" not in explicit and known is None:
            raise ConfigError(
                f"cluster file {path}: node type {name!r}: unknown instance type {instance!r}; "
                f"write its resources (resources: {{CPU: N, GPU: M}}) or add it to invs.fleet.INSTANCES"
            )
        offered = {"CPU": float(known.vcpus), "GPU": float(known.gpus)} if known else {}
        offered = {k: v for k, v in (offered | explicit).items() if v > 0}
        max_workers = 1 if name == fleet.head else int(spec.get("max_workers", data.get("max_workers", 0)))
        spot = (node_config.get("InstanceMarketOptions") or {}).get("MarketType") == "spot"
        fleet.node_types[name] = NodeType(name, offered, max_workers, instance, spot)
    return fleet


def node_resources(name: str | None) -> dict[str, float]:
    """Ray ``resources=`` for a worker that must run on nodes advertising the custom resource ``name``."""
    return {name: NODE_RESOURCE_SHARE} if name else {}


def worker_bundle(section: Any) -> dict[str, float]:
    """The resources one worker of a config section (``config.render``, ``config.preprocess``, ``config.train``)
    asks Ray for: its ``worker_cpus`` CPUs, a GPU with ``device: gpu``, and a share of its ``node_resource``."""
    gpu = {"GPU": 1.0} if section.device == "gpu" else {}
    return {"CPU": section.worker_cpus, **gpu, **node_resources(section.node_resource)}


def ray_options(bundle: dict[str, float]) -> dict[str, Any]:
    """``bundle`` as Ray actor/task options (``num_cpus``, ``num_gpus``, ``resources``)."""
    custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")}
    return {"num_cpus": bundle.get("CPU", 0.0), "num_gpus": bundle.get("GPU", 0.0), "resources": custom or None}


def per_node(bundle: dict[str, float], offered: dict[str, float]) -> int:
    """How many ``bundle``s one node offering ``offered`` holds."""
    return min((math.floor(offered.get(k, 0.0) / v + 1e-9) for k, v in bundle.items() if v > 0), default=0)


def fleet_workers(fleet: Fleet, bundle: dict[str, float]) -> int:
    """How many ``bundle``s the whole fleet holds (every node type at its ``max_workers``)."""
    return sum(per_node(bundle, nt.resources) * nt.max_workers for nt in fleet.node_types.values())


def alive_workers(bundle: dict[str, float]) -> int:
    """How many ``bundle``s the alive nodes of the connected Ray cluster hold."""
    import ray

    return sum(per_node(bundle, n["Resources"]) for n in ray.nodes() if n["Alive"])


def describe(resources: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def _shortfall(bundle: dict[str, float], fleet: Fleet) -> str:
    """Why no node type holds ``bundle``: the node types that offer its custom resources and what they lack."""
    custom = [k for k in bundle if k not in ("CPU", "GPU")]
    pinned = [nt for nt in fleet.node_types.values() if all(k in nt.resources for k in custom)]
    if not pinned:
        return f"none offers {', '.join(custom)}"
    parts = []
    for nt in pinned:
        lacks = [f"{k} {nt.resources.get(k, 0):g} < {v:g}" for k, v in bundle.items() if nt.resources.get(k, 0) < v]
        parts.append(f"{nt.name} ({nt.instance or 'custom'}) has {'; '.join(lacks)}")
    return ", ".join(parts)


def check_fleet(config: Config, fleet: Fleet) -> tuple[list[str], list[str]]:
    """``(problems, lines)``: one line per stage that cannot run on ``fleet`` as configured, and one line per stage
    saying where its workers go and how many the fleet holds."""
    problems, lines = [], []
    for stage, section in config.worker_sections().items():
        bundle = worker_bundle(section)
        hosts = {n: per_node(bundle, nt.resources) for n, nt in fleet.node_types.items()}
        hosts = {n: k for n, k in hosts.items() if k > 0}
        if not hosts:
            problems.append(
                f"{stage}: no node type in {fleet.path} can hold one worker ({describe(bundle)}): "
                + _shortfall(bundle, fleet)
            )
            continue
        capacity = fleet_workers(fleet, bundle)
        wanted = section.worker_count
        if wanted is not None and wanted > capacity:
            problems.append(
                f"{stage}: {wanted} workers of {describe(bundle)} need more than the fleet holds ({capacity} on "
                f"{', '.join(f'{n} x {fleet.node_types[n].max_workers}' for n in hosts)})"
            )
            continue
        where = ", ".join(f"{n} ({k} per node x {fleet.node_types[n].max_workers} nodes)" for n, k in hosts.items())
        lines.append(f"{stage}: workers of {describe(bundle)} on {where}: up to {capacity}")
    return problems, lines
