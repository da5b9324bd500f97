"""The real two-node local Ray cluster: both nodes do work, and `ray job submit` runs project code on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra import local_ray
from tests.helpers import ray_job_submit

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.ray


def test_two_nodes_on_loopback_both_run_tasks(ray_cluster: local_ray.LocalRayCluster) -> None:
    code = """
import json, ray, sys
ray.init(address=sys.argv[1], logging_level="ERROR")
nodes = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def where():
    import time; time.sleep(0.5)
    return ray.util.get_node_ip_address()
ips = sorted(set(ray.get([where.remote() for _ in range(6)])))
print(json.dumps({"nodes": nodes, "ips": ips}))
"""
    cmd = [sys.executable, "-c", code, ray_cluster.address]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["nodes"] == ["127.0.0.2", "127.0.0.3"]
    assert result["ips"] == ["127.0.0.2", "127.0.0.3"]


def test_ray_job_submit_runs_project_code_from_the_working_dir(ray_cluster: local_ray.LocalRayCluster) -> None:
    proc = ray_job_submit(
        [
            "--address",
            ray_cluster.dashboard_url,
            "--working-dir",
            str(REPO),
            "--",
            "python",
            "render/main.py",
            "--help",
        ],
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "--objects" in proc.stdout and "succeeded" in proc.stdout


def test_stopping_a_cluster_spares_the_other_ray_instances_on_the_machine(
    ray_cluster: local_ray.LocalRayCluster,
) -> None:
    """Another Ray instance (a user's own) on 127.0.0.9 is stopped by its address alone: the session cluster's
    processes are left running and still take work."""
    import psutil

    port = local_ray._free_port("127.0.0.9")
    start = [local_ray.ray_binary(), "start", "--head", "--node-ip-address=127.0.0.9", f"--port={port}"]
    start += ["--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats", "--object-store-memory=80000000"]
    proc = subprocess.run(start, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (other,) = local_ray.cluster_sessions(("127.0.0.9",))
    ours = local_ray.cluster_sessions()
    assert other in ours and len(ours) == 2  # the session fixture's cluster, and the other instance

    assert local_ray.stop_cluster(ips=("127.0.0.9",)) > 0
    assert local_ray.cluster_sessions(("127.0.0.9",)) == set()
    left = [p for p in psutil.process_iter(["cmdline"]) if other in " ".join(p.info["cmdline"] or [])]
    assert left == []
    assert local_ray.cluster_sessions() == ours - {other}
    code = "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); print(ray.get(ray.put(7)))"
    still = subprocess.run(
        [sys.executable, "-c", code, ray_cluster.address], capture_output=True, text=True, timeout=120
    )
    assert still.returncode == 0 and still.stdout.strip().endswith("7"), still.stderr[-2000:]
