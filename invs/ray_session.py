"""Connecting to Ray: the configured cluster, the one a Ray job runs in, or a new local instance.

A driver connected here prints only lines a user can act on: Ray's C++ core logs one harmless error line for every
actor whose constructor arguments sit in the object store (each Ray Data actor pool and Ray Train's own actors;
https://github.com/ray-project/ray/issues/53727), in the driver and in the worker output Ray forwards to it.
:func:`known_noise_dropped` removes exactly those lines from the process's stderr (file descriptor 2, where both
arrive); every other line passes unchanged and in order.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

from invs.config import Config

#: Ray's known harmless error lines (matched anywhere in a line, so the forwarded ``(Actor pid=...)`` form too).
KNOWN_NOISE = (
    re.compile(rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store"),
)
MARKER = b"\x00invs-stderr-filter-end\x00\n"


@contextlib.contextmanager
def known_noise_dropped() -> Iterator[None]:
    """While inside, this process's stderr (fd 2, which Ray's C++ core writes to directly) passes through a filter
    that drops the :data:`KNOWN_NOISE` lines; on leaving, everything written before is flushed through in order.
    For entry points (:func:`invs.cli.exit_with`), not for a library caller whose stderr is someone else's."""
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    marker_end = os.dup(write_end)
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as source:
            while chunk := source.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                done = MARKER[:-1] in lines
                if done:
                    lines = lines[: lines.index(MARKER[:-1])]
                kept = b"".join(line + b"\n" for line in lines if not _is_noise(line))
                if kept:
                    os.write(original, kept)
                if done:
                    return

    thread = threading.Thread(target=pump, name="invs-stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # new writes go straight to the real stderr; the pipe is drained up to the marker
        os.write(marker_end, MARKER)
        thread.join(timeout=10)
        os.close(marker_end)
        os.close(original)


def _is_noise(line: bytes) -> bool:
    return any(pattern.search(line) for pattern in KNOWN_NOISE)


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
