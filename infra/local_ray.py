"""A real two-node Ray cluster on one machine, for tests and local runs of the used-by commands.

The head node listens on 127.0.0.2 and a second node joins from 127.0.0.3 (Ray replaces 127.0.0.1 with the
machine's network address, but keeps other loopback addresses). The dashboard, and so the Jobs API used by
``ray job submit --address http://127.0.0.2:8265``, listens on the head address. Each node's object store is
kept small (it lives in /dev/shm).

Token authentication is on (``RAY_AUTH_MODE=token``, the token in ``~/.ray/auth_token``, created if missing):
Ray 2.59+ enables it for local instances anyway, and every client of the cluster (``ray.init``, ``ray job
submit``) needs ``RAY_AUTH_MODE=token`` in its environment, which :meth:`LocalRayCluster.env` provides.

Command line (also used by ``make ray-up`` / ``make ray-down``)::

    python -m infra.local_ray up      # prints the RAY_ADDRESS to use
    python -m infra.local_ray down
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.tools import find_binary

HEAD_IP = "127.0.0.2"
DASHBOARD_PORT = 8265


@dataclass(frozen=True)
class LocalRayCluster:
    """Addresses of a running local cluster."""

    address: str  # GCS address for ray.init(address=...)
    dashboard_url: str  # Jobs API / dashboard, for `ray job submit --address`
    num_nodes: int

    def env(self) -> dict[str, str]:
        """Environment for clients: the address and the authentication mode."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token"}


def ray_binary() -> str:
    return find_binary("ray", "install the project (pip install -e .)")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], timeout_s: float) -> None:
    # Jobs run `python ...` with the nodes' PATH: put this interpreter's bin first so they get this environment.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    if cmd[1:2] == ["get-auth-token"]:
        proc.stdout = ""  # the token itself must never reach a log or an error message
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )


def _wait_for_dashboard(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                return
        except urllib.error.HTTPError:  # 401 without the token: the dashboard is up
            return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"Ray dashboard did not answer on {url} within {timeout_s:.0f} s")


def wait_for_nodes(address: str, count: int, timeout_s: float = 120.0) -> None:
    """Return once exactly ``count`` nodes of the cluster at ``address`` are alive (joined, or the rest gone)."""
    code = (
        "import ray, time, sys\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        f"deadline = time.monotonic() + {timeout_s}\n"
        f"while len([n for n in ray.nodes() if n['Alive']]) != {count}:\n"
        "    if time.monotonic() > deadline: sys.exit('the cluster did not reach the node count in time')\n"
        "    time.sleep(0.5)\n"
    )
    _run([sys.executable, "-c", code], timeout_s + 30)


def start_cluster(
    num_cpus_per_node: int = 1,
    object_store_mb: int = 200,
    workers: int = 1,
    dashboard_port: int = DASHBOARD_PORT,
    timeout_s: float = 120.0,
    worker_resources: dict[str, float] | None = None,
) -> LocalRayCluster:
    """Start a head node on 127.0.0.2 and ``workers`` nodes on 127.0.0.3, .4, ...; returns when all joined.

    ``worker_resources``: custom resources the non-head nodes advertise (like a worker node type of
    ``ray_cluster.yaml``), so that a stage's ``node_resource`` setting can be tested.
    """
    ray = ray_binary()
    _run([ray, "get-auth-token", "--generate"], timeout_s)  # creates ~/.ray/auth_token once; never printed
    port = _free_port(HEAD_IP)
    store = str(object_store_mb * 2**20)
    _run(
        [
            ray,
            "start",
            "--head",
            f"--node-ip-address={HEAD_IP}",
            f"--port={port}",
            "--include-dashboard=true",
            f"--dashboard-host={HEAD_IP}",
            f"--dashboard-port={dashboard_port}",
            f"--num-cpus={num_cpus_per_node}",
            f"--object-store-memory={store}",
            "--disable-usage-stats",
        ],
        timeout_s,
    )
    address = f"{HEAD_IP}:{port}"
    for i in range(workers):
        add_node(address, f"127.0.0.{3 + i}", num_cpus_per_node, object_store_mb, worker_resources, timeout_s)
    dashboard = f"http://{HEAD_IP}:{dashboard_port}"
    _wait_for_dashboard(dashboard, timeout_s)
    wait_for_nodes(address, workers + 1, timeout_s)
    return LocalRayCluster(address=address, dashboard_url=dashboard, num_nodes=workers + 1)


def add_node(
    address: str,
    ip: str,
    num_cpus: int = 1,
    object_store_mb: int = 200,
    resources: dict[str, float] | None = None,
    timeout_s: float = 120.0,
) -> None:
    """Start one more node on loopback address ``ip`` and join it to the cluster at ``address`` (GCS)."""
    _run(
        [
            ray_binary(),
            "start",
            f"--address={address}",
            f"--node-ip-address={ip}",
            f"--num-cpus={num_cpus}",
            f"--object-store-memory={object_store_mb * 2**20}",
            *([f"--resources={json.dumps(resources)}"] if resources else []),
        ],
        timeout_s,
    )


def remove_node(ip: str, timeout_s: float = 60.0) -> int:
    """Stop the node started on ``ip`` as a lost cloud node stops: its raylet, the processes started for it and
    every process those started (Ray workers, and what they run) are killed at once; returns how many.

    ``ray stop`` stops every node on the machine; this stops one.
    """
    return _kill_matching(
        lambda cmdline: f"--node_ip_address={ip}" in cmdline or f"--node-ip-address={ip}" in cmdline, timeout_s
    )


def _kill_matching(matches: Callable[[str], bool], timeout_s: float) -> int:
    """Kill every process whose command line ``matches`` and every process those started, at once; wait for them
    to go (at most ``timeout_s``); returns how many."""
    import psutil

    mine: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if matches(" ".join(proc.info["cmdline"] or [])):
            mine[proc.pid] = proc
            try:
                mine |= {child.pid: child for child in proc.children(recursive=True)}
            except psutil.NoSuchProcess:
                continue
    for proc in mine.values():
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(list(mine.values()), timeout=timeout_s)
    return len(mine)


#: The loopback addresses the local cluster's nodes use (the head, then workers from 127.0.0.3 on).
CLUSTER_IPS = tuple(f"127.0.0.{i}" for i in range(2, 10))
_SESSION = re.compile(r"session_\d{4}-\d{2}-\d{2}_[\d-]+_\d+_\d+")


def cluster_sessions(ips: tuple[str, ...] = CLUSTER_IPS) -> set[str]:
    """The Ray sessions (``session_<time>_<pid>`` directory names) that have a node on one of ``ips``."""
    import psutil

    flags = tuple(f"{flag}={ip}" for ip in ips for flag in ("--node_ip_address", "--node-ip-address", "--host"))
    sessions: set[str] = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(f"{flag} " in f"{cmdline} " for flag in flags):
            sessions.update(_SESSION.findall(cmdline))
    return sessions


def stop_cluster(timeout_s: float = 60.0, ips: tuple[str, ...] = CLUSTER_IPS) -> int:
    """Stop the local cluster: every process of a Ray session with a node on ``ips`` and every process those
    started; returns how many. Other Ray instances on this machine (a user's own, ``ray.init()`` of a job) are left
    running, unlike ``ray stop --force``."""
    sessions = cluster_sessions(ips)
    if not sessions:
        return 0
    return _kill_matching(lambda cmdline: any(session in cmdline for session in sessions), timeout_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local_ray", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--num-cpus", type=int, default=1, help="CPUs per node (default 1)")
    parser.add_argument("--object-store-mb", type=int, default=200)
    args = parser.parse_args(argv)
    if args.action == "down":
        stop_cluster()
        return 0
    cluster = start_cluster(args.num_cpus, args.object_store_mb)
    for key, value in cluster.env().items():
        print(f"export {key}={value}")
    print(f"# jobs: ray job submit --address {cluster.dashboard_url} --working-dir . -- python ...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
