"""Shared fixtures: real services (SeaweedFS S3 on 127.0.0.1, a two-node local Ray cluster) and real assets."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import local_ray, local_s3
from invs import storage

REPO = Path(__file__).resolve().parent.parent
REAL_OBJECTS = REPO / "tests" / "assets" / "objects"  # real glTF files shipped with the repo (SOURCES.md)

# No test may reach a model hub: fail fast instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA; this machine has no GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a (session) fixture, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def real_objects() -> Path:
    """The real glTF objects shipped in tests/assets/objects (sources and licences in its SOURCES.md)."""
    return REAL_OBJECTS


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_s3.S3Server]:
    """A real SeaweedFS S3 server on 127.0.0.1; the process environment points storage at it."""
    server = local_s3.start(tmp_path_factory.mktemp("seaweedfs"))
    storage.configure_s3(None)
    try:
        with _environ(server.env()):
            yield server
    finally:
        local_s3.stop(server)


@pytest.fixture
def s3_bucket(s3_server: local_s3.S3Server) -> str:
    """A fresh, empty bucket on the local server; returns ``s3://name``."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    local_s3.create_bucket(s3_server, name)
    return f"s3://{name}"


#: The second node (127.0.0.3) plays every worker node type of ray_cluster.yaml; the head plays none.
WORKER_RESOURCES = {"render_cpu": 1, "preprocess_gpu": 1, "train_a100": 1}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[local_ray.LocalRayCluster]:
    """A real two-node Ray cluster: head on 127.0.0.2, a second node on 127.0.0.3."""
    local_ray.stop_cluster()
    try:
        cluster = local_ray.start_cluster(num_cpus_per_node=1, object_store_mb=150, worker_resources=WORKER_RESOURCES)
        with _environ(cluster.env()):
            yield cluster
    finally:
        local_ray.stop_cluster()


@pytest.fixture(scope="session")
def flagged_renders(real_objects: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, list[str]]]:
    """A render output (``--out``) of two real objects and the generated faulty ones of
    :func:`tests.helpers.write_faulty_objects`, with every pass; and the flags each faulty one must get."""
    from tests.helpers import render, write_faulty_objects

    objects = tmp_path_factory.mktemp("flagged-objects")
    expected = write_faulty_objects(objects)
    for name in ("BoxTextured.glb", "SpotCow.glb"):
        shutil.copy(real_objects / name, objects / name)
    out = str(tmp_path_factory.mktemp("flagged-renders"))
    proc = render(str(objects), out, "--views", "3", "--set", "render.passes=[rgba,depth,normal,albedo]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, expected


@pytest.fixture(scope="session")
def flagged_pairs(flagged_renders: tuple[str, dict], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The preprocess stage run on :func:`flagged_renders` leaving out three flags; (its --out, its stdout)."""
    import subprocess
    import sys

    from tests.helpers import REPO, local_env

    out = str(tmp_path_factory.mktemp("flagged-pairs"))
    command = [sys.executable, str(REPO / "preprocess/main.py"), "--renders", flagged_renders[0], "--out", out]
    command += ["--resolution", "64", "--pairs-per-object", "2", "--set", "preprocess.min_angle_deg=10"]
    command += ["--set", "preprocess.skip_flags=[no_material,too_small,constant_color]"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=local_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout
