"""The render job end to end: bad input, resume and exactly-once, retries, and the two-node cluster with S3."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from infra import local_ray, local_s3
from invs import shards, storage, tables
from tests.helpers import FAST_RENDER, heavy_ply, make_blend, render

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.blender


def latest(out: str) -> dict[str, dict]:
    return tables.latest_by_uid(tables.read_table(storage.join(out, "manifest"), tables.MANIFEST_SCHEMA))


def keys_in_shards(out: str) -> Counter[str]:
    return Counter(key for uri in shards.list_shards(out) for key, _ in shards.iter_tar_samples(uri))


def make_evil_blend(path: Path, marker: Path) -> None:
    """A .blend holding a cube and a text block registered to run on load (it writes ``marker`` if it runs)."""
    code = f"""
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_cube_add(size=0.5)
text = bpy.data.texts.new("evil.py")
text.write("open({str(marker)!r}, 'w').write('ran')\\n")
text.use_module = True
bpy.ops.wm.save_as_mainfile(filepath={str(path)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_evil_blend_really_runs_code_when_scripts_are_allowed(tmp_path: Path) -> None:
    """Guards the next test: the .blend used there does execute code if Blender is allowed to."""
    marker = tmp_path / "marker"
    make_evil_blend(tmp_path / "evil.blend", marker)
    code = f"""
import bpy
bpy.context.preferences.filepaths.use_scripts_auto_execute = True
bpy.ops.wm.open_mainfile(filepath={str(tmp_path / "evil.blend")!r}, use_scripts=True)
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    assert marker.read_text() == "ran"


def test_bad_input_gets_failed_rows_with_reasons_and_the_job_carries_on(real_objects: Path, tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    objects.mkdir()
    good = real_objects / "BoxTextured.glb"
    shutil.copy(good, objects / "good.glb")
    shutil.copy(real_objects / "kenney_alien.glb", objects / "alien.glb")
    (objects / "empty.glb").write_bytes(b"")
    (objects / "truncated.glb").write_bytes(good.read_bytes()[:5000])
    (objects / "random.glb").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    marker = tmp_path / "marker"
    make_evil_blend(objects / "scene.blend", marker)
    make_blend(objects / "ghost.blend", invisible=True)
    listing = tmp_path / "objects.txt"
    names = [
        "good.glb",
        "alien.glb",
        "empty.glb",
        "truncated.glb",
        "random.glb",
        "scene.blend",
        "ghost.blend",
        "missing.glb",
    ]
    listing.write_text("# objects for this run\n" + "\n".join(f"objects/{n}" for n in names) + "\n")
    out = str(tmp_path / "out")
    proc = render(str(listing), out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 rendered, 5 failed" in proc.stdout, proc.stdout
    rows = latest(out)
    assert {u: r["status"] for u, r in rows.items()} == {
        "good": "ok",
        "alien": "ok",
        "scene": "ok",
        "empty": "failed",
        "truncated": "failed",
        "random": "failed",
        "missing": "failed",
        "ghost": "failed",
    }
    assert rows["ghost"]["error"].startswith("empty render")
    assert "empty (0 bytes)" in rows["empty"]["error"]
    assert rows["truncated"]["error"].startswith("import failed")
    assert rows["random"]["error"].startswith("import failed")
    assert "model file not found" in rows["missing"]["error"]
    assert not marker.exists(), "a .blend file ran embedded Python"
    assert keys_in_shards(out) == Counter({"good": 1, "alien": 1, "scene": 1})
    summary = json.loads(storage.read_text(f"{out}/summary.json"))
    assert summary["rendered"] == 3 and summary["failed"] == 5 and summary["blender_starts"] == 1, summary


def test_timeouts_fail_one_object(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    objects.mkdir()
    heavy_ply(objects / "heavy.ply", n=900)
    out = str(tmp_path / "out")
    proc = render(str(objects), out, "--timeout", "2", "--set", "render.samples=256")
    assert proc.returncode == 0
    assert "timed out after 2 s" in latest(out)["heavy"]["error"]


def test_resume_is_exactly_once_after_crashes_and_reruns(real_objects: Path, tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    objects.mkdir()
    for name in ("BoxTextured.glb", "kenney_alien.glb", "kenney_cakeBirthday.glb"):
        shutil.copy(real_objects / name, objects / name)
    out = str(tmp_path / "out")
    assert render(str(objects), out, "--num-objects", "2").returncode == 0
    assert keys_in_shards(out) == Counter({"BoxTextured": 1, "kenney_alien": 1})
    # A worker that died after publishing a shard but before writing its manifest rows leaves an orphan.
    (first,) = shards.list_shards(out)
    shutil.copy(first, Path(out) / "shards" / "crashed-w000-000000.tar")
    proc = render(str(objects), out)
    assert "removed 1 orphan shard" in proc.stdout and "2 already done, 1 to render" in proc.stdout, proc.stdout
    assert keys_in_shards(out) == Counter({"BoxTextured": 1, "kenney_alien": 1, "kenney_cakeBirthday": 1})
    rows = latest(out)
    assert all(r["status"] == "ok" and storage.exists(r["shard"]) for r in rows.values())
    again = render(str(objects), out)
    assert "3 already done, 0 to render" in again.stdout
    assert keys_in_shards(out) == Counter({"BoxTextured": 1, "kenney_alien": 1, "kenney_cakeBirthday": 1})


def test_failures_are_retried_up_to_the_limit(real_objects: Path, tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    objects.mkdir()
    (objects / "broken.glb").write_bytes(b"not a model")
    shutil.copy(real_objects / "BoxTextured.glb", objects / "box.glb")
    out = str(tmp_path / "out")
    limit = ["--set", "render.max_attempts=2"]
    render(str(objects), out, *limit)
    second = render(str(objects), out, *limit)
    assert "1 already done, 1 to render" in second.stdout
    assert latest(out)["broken"]["total_attempts"] == 2
    third = render(str(objects), out, *limit)
    assert "0 to render, 1 given up" in third.stdout
    summary = json.loads(storage.read_text(f"{out}/summary.json"))
    assert summary["given_up"] == ["broken"]


@pytest.mark.ray
@pytest.mark.s3
def test_render_job_on_the_two_node_cluster_reading_and_writing_s3(
    ray_cluster: local_ray.LocalRayCluster, s3_server: local_s3.S3Server, s3_bucket: str, real_objects: Path
) -> None:
    """`ray job submit ... -- python render/main.py` with objects and output on the local S3 server."""
    names = ["BoxTextured.glb", "SpotCow.glb", "problem_BoxTextured_draco.glb", "kenney_alien.glb"]
    for name in names:
        storage.upload_file(real_objects / name, f"{s3_bucket}/objects/{name}")
    out = f"{s3_bucket}/renders"
    runtime_env = {"env_vars": s3_server.env()}
    proc = subprocess.run(
        [
            local_ray.ray_binary(),
            "job",
            "submit",
            "--address",
            ray_cluster.dashboard_url,
            "--working-dir",
            str(REPO),
            "--runtime-env-json",
            json.dumps(runtime_env),
            "--",
            "python",
            "render/main.py",
            "--objects",
            f"{s3_bucket}/objects",
            "--out",
            out,
            *FAST_RENDER,
            "--set",
            "render.threads_per_worker=1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-2000:])
    assert "4 rendered, 0 failed" in proc.stdout
    uris = shards.list_shards(out)
    assert len({storage.basename(u).rsplit("-", 1)[0] for u in uris}) == 2, "both nodes' workers wrote shards"
    samples = list(shards.iter_render_samples(uris))
    assert sorted(s.key for s in samples) == sorted(Path(n).stem for n in names)
    for s in samples:
        assert s.meta["source"].startswith(f"{s3_bucket}/objects/") and len(s.meta["sha256"]) == 64
        assert s.num_views == 2 and s.rgba[0].shape == (48, 48, 4) and s.depth[0].dtype == np.float16
        assert np.all(s.depth[0][s.rgba[0][..., 3] == 0] == 0)
    assert storage.exists(f"{out}/config.yaml") and storage.exists(f"{out}/summary.json")


@pytest.mark.ray
def test_node_resource_keeps_render_workers_on_that_node_type(
    ray_cluster: local_ray.LocalRayCluster, real_objects: Path, tmp_path: Path
) -> None:
    """With ``render.node_resource=render_cpu`` only the node advertising it (127.0.0.3) runs render workers."""
    objects = tmp_path / "objects"
    objects.mkdir()
    for name in ("BoxTextured.glb", "SpotCow.glb"):
        shutil.copy(real_objects / name, objects / name)
    out = str(tmp_path / "renders")
    pinned = ["--set", "render.threads_per_worker=1", "--set", "render.node_resource=render_cpu"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "render/main.py"), "--objects", str(objects), "--out", out, *FAST_RENDER, *pinned],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=dict(os.environ),  # RAY_ADDRESS of the session's cluster
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(storage.read_text(f"{out}/summary.json"))
    assert summary["rendered"] == 2 and summary["worker_nodes"] == ["127.0.0.3"]


def test_workers_sized_for_the_fleet_use_nodes_that_join_after_the_job_starts(
    ray_cluster: local_ray.LocalRayCluster, real_objects: Path, tmp_path: Path
) -> None:
    """The fleet (a cluster file) has two 'late' nodes; none is up at submit time, as on an autoscaling cluster
    that starts from zero workers. The job sizes its pool for the fleet, waits, and uses each node as it joins."""
    import yaml

    fleet = {
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 1}, "node_config": {}},
            "late": {"resources": {"CPU": 1, "render_late": 1}, "max_workers": 2, "node_config": {}},
        },
    }
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(fleet))
    objects = tmp_path / "objects"
    objects.mkdir()
    glbs = sorted(p for p in real_objects.glob("*.glb") if not p.name.startswith("problem_"))
    for i in range(16):  # enough work that the first node is still rendering when the second has joined
        shutil.copy(glbs[i % len(glbs)], objects / f"obj{i:02d}_{glbs[i % len(glbs)].name}")
    out = str(tmp_path / "renders")
    settings = ["ray.cluster_file=" + str(cluster_file), "render.node_resource=render_late"]
    settings += ["render.threads_per_worker=1", "render.samples=128", "render.resolution=96"]  # ~2 s per object
    command = [sys.executable, str(REPO / "render/main.py"), "--objects", str(objects), "--out", out, *FAST_RENDER]
    command += ["--address", ray_cluster.address, *(a for s in settings for a in ("--set", s))]
    ips = ["127.0.0.8", "127.0.0.9"]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    lines: list[str] = []
    try:
        assert job.stdout is not None
        for line in job.stdout:
            lines.append(line)
            if "waiting for nodes" in line:
                break
        assert "render: 2 workers, 2 waiting for nodes" in "".join(lines), lines
        for ip in ips:  # one node after the other, while the job runs
            local_ray.add_node(ray_cluster.address, ip, resources={"render_late": 1}, object_store_mb=100)
        lines += job.stdout.readlines()
        assert job.wait(timeout=600) == 0, "".join(lines[-40:])
    finally:
        job.kill()
        for ip in ips:
            local_ray.remove_node(ip)
        local_ray.wait_for_nodes(ray_cluster.address, ray_cluster.num_nodes)  # the cluster as the other tests know it
    summary = json.loads(Path(out, "summary.json").read_text())
    assert summary["rendered"] == 16 and summary["failed"] == 0
    assert summary["worker_nodes"] == ips, "".join(lines)  # both late nodes rendered
