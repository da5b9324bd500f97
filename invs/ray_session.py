"""Connecting to Ray: the configured cluster, the one a Ray job runs in, or a new local instance."""

from __future__ import annotations

import os

from invs.config import Config


def nodes_with(name: str | None) -> list[dict]:
    """The alive nodes (``ray.nodes()`` entries) that advertise ``name`` (all alive nodes when ``name`` is None)."""
    import ray

    return [n for n in ray.nodes() if n["Alive"] and (name is None or n["Resources"].get(name, 0) > 0)]


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
