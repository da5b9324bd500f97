"""Connecting to Ray: the configured cluster, the one a Ray job runs in, or a new local instance."""

from __future__ import annotations

import os

from invs.config import Config

#: How much of a node-type resource (``ray_cluster.yaml`` gives each node 1) one worker asks for: the resource only
#: says where a worker may run; CPUs and GPUs still decide how many fit.
NODE_RESOURCE_SHARE = 0.001


def node_resources(name: str | None) -> dict[str, float]:
    """Ray ``resources=`` for a worker that must run on nodes advertising the custom resource ``name``."""
    return {name: NODE_RESOURCE_SHARE} if name else {}


def nodes_with(name: str | None) -> list[dict]:
    """The alive nodes (``ray.nodes()`` entries) that advertise ``name`` (all alive nodes when ``name`` is None)."""
    import ray

    return [n for n in ray.nodes() if n["Alive"] and (name is None or n["Resources"].get(name, 0) > 0)]


def cpus_on_nodes_with(name: str | None) -> float:
    """CPUs of the alive nodes that advertise ``name`` (all alive nodes when ``name`` is None)."""
    return sum(n["Resources"].get("CPU", 0) for n in nodes_with(name))


def init_ray(config: Config, dashboard: bool = False) -> None:
    """Connect to ``ray.address`` or start a local Ray instance sized by the config.

    ``dashboard``: start the local instance's dashboard too (Ray Train V2 queries actor state through it).
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, object] = {"logging_level": "ERROR", "include_dashboard": dashboard}
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:  # a cluster (also: inside `ray job submit`, which sets RAY_ADDRESS)
        ray.init(address=address, logging_level="ERROR")
        return
    if config.ray.num_cpus is not None:
        kwargs["num_cpus"] = config.ray.num_cpus
    if config.ray.object_store_memory_mb is not None:
        kwargs["object_store_memory"] = config.ray.object_store_memory_mb * 2**20
    # "local": always a new instance, even when a `ray start` cluster runs on this machine.
    ray.init(address="local", **kwargs)
