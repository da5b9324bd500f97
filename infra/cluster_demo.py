"""The users' cluster commands, for real, on this machine: every stage as a `ray job submit` to the two-node local
cluster, reading and writing the local S3 server.

    make cluster-demo          # = python -m infra.cluster_demo

Starts SeaweedFS S3 on 127.0.0.1 (bucket ``invs-demo``) and the two-node Ray cluster (head 127.0.0.2, worker
127.0.0.3), then submits, each reading the previous stage's ``s3://`` output::

    ray job submit --address http://127.0.0.2:8265 --working-dir . --runtime-env-json '{"env_vars": S3}' \\
        -- python render/main.py --objects samples --out s3://invs-demo/renders ...
    ... -- python preprocess/main.py --renders s3://invs-demo/renders --out s3://invs-demo/pairs ...
    ... -- python train/run.py --data s3://invs-demo/pairs --out s3://invs-demo/train --tiny --num-workers 2 ...

and stops both services at the end (``--keep`` leaves them running). The S3 endpoint and credentials reach the
jobs through the runtime environment, as an instance profile would on AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infra import local_ray, local_s3

REPO = Path(__file__).resolve().parent.parent
BUCKET = "invs-demo"


def stage_commands(bucket: str, steps: int) -> list[tuple[str, list[str]]]:
    """(stage, entry point and arguments) in stage order, all on ``s3://bucket``."""
    s3 = f"s3://{bucket}"
    render = ["--views", "6", "--resolution", "64", "--set", "render.samples=8", "--set", "render.threads_per_worker=1"]
    pairs = ["--resolution", "64", "--pairs-per-object", "6", "--set", "preprocess.min_angle_deg=10"]
    train = ["--tiny", "--num-workers", "2", "--steps", str(steps), "--batch-size", "2"]
    train += ["--set", "train.loader_workers=0", "--set", "train.tiny_vae_fit_steps=0"]
    return [
        ("render", ["render/main.py", "--objects", "samples", "--out", f"{s3}/renders", *render]),
        ("preprocess", ["preprocess/main.py", "--renders", f"{s3}/renders", "--out", f"{s3}/pairs", *pairs]),
        ("train", ["train/run.py", "--data", f"{s3}/pairs", "--out", f"{s3}/train", *train]),
    ]


def submit(cluster: local_ray.LocalRayCluster, env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess:
    cmd = [local_ray.ray_binary(), "job", "submit", "--address", cluster.dashboard_url, "--working-dir", str(REPO)]
    cmd += ["--runtime-env-json", json.dumps({"env_vars": env}), "--", "python", *args]
    client_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=REPO, env=client_env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("--keep", action="store_true", help="leave S3 and the cluster running")
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="invs-cluster-demo-s3-"))
    server = local_s3.start(data_dir)
    local_s3.create_bucket(server, BUCKET)
    local_ray.stop_cluster()
    cluster = local_ray.start_cluster(num_cpus_per_node=1, object_store_mb=300)
    print(f"S3 at {server.endpoint_url} (bucket {BUCKET}); Ray jobs at {cluster.dashboard_url}", flush=True)
    try:
        for stage, command in stage_commands(BUCKET, args.steps):
            started = time.monotonic()
            print(f"[{stage}] ray job submit ... -- python {' '.join(command)}", flush=True)
            proc = submit(cluster, server.env(), command)
            summary = [line for line in proc.stdout.splitlines() if line.startswith((stage, "outputs:", "error:"))]
            print("\n".join(f"  {line}" for line in summary[-4:]), flush=True)
            if proc.returncode != 0:
                print(proc.stdout[-3000:] + proc.stderr[-2000:], file=sys.stderr)
                print(f"error: the {stage} job failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            print(f"[{stage}] done in {time.monotonic() - started:.0f} s", flush=True)
        print(f"outputs: s3://{BUCKET}/renders, s3://{BUCKET}/pairs, s3://{BUCKET}/train (model/, validation/, logs/)")
    finally:
        if not args.keep:
            local_ray.stop_cluster()
            local_s3.stop(server)
        else:
            env = " ".join(f"{k}={v}" for k, v in {**server.env(), **cluster.env()}.items())
            print(f"left running; to use them: export {env}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
