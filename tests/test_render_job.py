"""The render job end to end: bad and hostile input, resume and exactly-once, retries, the two-node cluster with S3,
worker nodes lost mid-job and S3 outages."""

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
from render import worker
from tests.helpers import (
    FAST_RENDER,
    copy_objects,
    extra_nodes,
    heavy_ply,
    local_env,
    make_blend,
    own_lines,
    png_header,
    ray_job_submit,
    render,
    render_command,
    running,
    write_gltf,
)

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
    limit = ["--set", "render.max_attempts=2"]
    proc = render(str(listing), out, *limit)
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
    assert rows["truncated"]["error"].startswith("rejected before import: glTF binary header says")
    assert rows["random"]["error"].startswith("rejected before import: not a glTF binary")
    assert "model file not found" in rows["missing"]["error"]
    assert not marker.exists(), "a .blend file ran embedded Python"
    assert keys_in_shards(out) == Counter({"good": 1, "alien": 1, "scene": 1})
    summary = json.loads(storage.read_text(f"{out}/summary.json"))
    assert summary["rendered"] == 3 and summary["failed"] == 5 and summary["blender_starts"] == 1, summary
    # Failed objects are retried by the next runs up to render.max_attempts, then given up.
    second = render(str(listing), out, *limit)
    assert "3 already done, 5 to render" in second.stdout, second.stdout
    assert latest(out)["ghost"]["total_attempts"] == 2
    third = render(str(listing), out, *limit)
    assert "0 to render, 5 given up" in third.stdout, third.stdout
    given_up = json.loads(storage.read_text(f"{out}/summary.json"))["given_up"]
    assert sorted(given_up) == ["empty", "ghost", "missing", "random", "truncated"]


def test_a_corpus_of_hostile_files_never_crashes_reads_outside_or_holds_a_worker(
    real_objects: Path, tmp_path: Path
) -> None:
    """Hostile files beside a good one (64 px, 2 views): the job carries on and exits 0, the good object renders,
    each hostile one fails with a one-line reason from a check (none is a timeout or a memory kill, so none held
    a worker), nothing outside an object's folder reaches a shard, and the one Blender process never died."""
    corpus = tmp_path / "corpus"
    shutil.copy(real_objects / "BoxTextured.glb", (corpus / "good").mkdir(parents=True) or corpus / "good" / "good.glb")
    write_gltf(corpus / "outside" / "outside.gltf", buffer_uri="../secret-dir/secret.bin")
    write_gltf(corpus / "image" / "image.gltf", image_uri="../secret-dir/secret.png", image_bytes=png_header(8, 8))
    write_gltf(corpus / "liar" / "liar.gltf", claimed_vertices=10**9)
    write_gltf(corpus / "deep" / "deep.gltf", depth=3000)
    write_gltf(corpus / "bomb" / "bomb.glb", image_bytes=png_header(60000, 60000))
    write_gltf(corpus / "badindex" / "badindex.gltf", last_index=60000)
    cycle = write_gltf(corpus / "cycle" / "cycle.gltf", depth=2)
    cycle.write_text(cycle.read_text().replace('{"mesh": 0}', '{"mesh": 0, "children": [0]}'))
    (corpus / "obj").mkdir()
    (corpus / "obj" / "box.mtl").write_text(f"newmtl m\nmap_Kd {corpus / 'secret-dir' / 'secret.png'}\n")
    (corpus / "obj" / "box.obj").write_text(
        "mtllib box.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nusemtl m\nf 1/1 2/1 3/1\n"
    )
    listing = tmp_path / "corpus.txt"
    names = ["good/good.glb", "outside/outside.gltf", "image/image.gltf", "liar/liar.gltf", "deep/deep.gltf"]
    names += ["bomb/bomb.glb", "badindex/badindex.gltf", "cycle/cycle.gltf", "obj/box.obj"]
    listing.write_text("\n".join(f"corpus/{n}" for n in names) + "\n")
    out = str(tmp_path / "out")
    proc = render(str(listing), out, "--resolution", "64", "--timeout", "60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = latest(out)
    assert rows.pop("good")["status"] == "ok"
    expected = {
        "outside": "rejected before import: buffer 0 refers to '../secret-dir/secret.bin', outside the object's folder",
        "image": "rejected before import: image 0 refers to '../secret-dir/secret.png', outside the object's folder",
        "liar": "rejected before import: accessor 0 claims 1000000000 elements of 12 bytes (12000000000 bytes), "
        "its bufferView 0 holds 96",
        "deep": "rejected before import: the node hierarchy is deeper than 256 levels (at node 256)",
        "bomb": "rejected before import: image 0 is 60000 x 60000 pixels, over the 16384 pixel side limit",
        "badindex": "import failed: IndexError: index 60000 is out of bounds for axis 0 with size 8",
        "cycle": "rejected before import: the node hierarchy has a cycle through node 0",
        "box": f"refers to {corpus / 'secret-dir' / 'secret.png'}, outside the object's folder",
    }
    assert {uid: row["error"] for uid, row in rows.items()} == expected
    assert all(row["status"] == "failed" and "\n" not in row["error"] for row in rows.values())
    assert keys_in_shards(out) == Counter({"good": 1})
    summary = json.loads(storage.read_text(f"{out}/summary.json"))
    assert summary["blender_starts"] == 1, "a hostile file killed or hung Blender"
    # The memory ceiling of each Blender: 80% of the node's memory over the workers the node holds (2 CPUs each).
    node_workers = max(1, (os.cpu_count() or 1) // 2)
    cap = round(worker.memory_cap_mb(None, worker.node_memory_mb(), node_workers))
    assert list(summary["blender_memory_cap_mb"].values()) == [cap], summary["blender_memory_cap_mb"]
    print("seconds per hostile object:", {uid: round(row["seconds"], 3) for uid, row in rows.items()})


def test_memory_ceiling_follows_the_node_and_its_workers() -> None:
    assert worker.memory_cap_mb(None, 64000, 16) == pytest.approx(3200)
    assert worker.memory_cap_mb(None, 64000, 1) == pytest.approx(51200)
    assert worker.memory_cap_mb(5000, 64000, 16) == 5000  # a set value wins
    assert 0 < worker.node_memory_mb() < 2**40


@pytest.mark.slow  # `make test-all`: test_render_blender.py's isolation test times an object out in the same process
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
    proc = ray_job_submit(
        [
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
        ]
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
    pinned = ["render.threads_per_worker=1", "render.node_resource=render_cpu"]
    proc = subprocess.run(
        render_command(objects, out, settings=pinned),
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
    copy_objects(real_objects, tmp_path / "objects", 16)  # the first node still renders when the second joins
    out = str(tmp_path / "renders")
    settings = ["ray.cluster_file=" + str(cluster_file), "render.node_resource=render_late"]
    settings += ["render.threads_per_worker=1", "render.samples=128", "render.resolution=96"]  # ~2 s per object
    command = render_command(tmp_path / "objects", out, address=ray_cluster.address, settings=settings)
    ips = ["127.0.0.8", "127.0.0.9"]
    lines: list[str] = []
    with extra_nodes(ray_cluster, {"render_late": 1}) as add_node, running(command) as job:
        assert job.stdout is not None
        for line in job.stdout:
            lines.append(line)
            if "waiting for nodes" in line:
                break
        assert "render: 2 workers, 2 waiting for nodes" in "".join(lines), lines
        for ip in ips:  # one node after the other, while the job runs
            add_node(ip)
        lines += job.stdout.readlines()
        assert job.wait(timeout=600) == 0, "".join(lines[-40:])
    summary = json.loads(Path(out, "summary.json").read_text())
    assert summary["rendered"] == 16 and summary["failed"] == 0
    assert summary["worker_nodes"] == ips, "".join(lines)  # both late nodes rendered


# ------------------------------------------------------------------------------------------------ lost nodes


def assert_every_object_exactly_once(out: str, uids: list[str]) -> None:
    """Each object in the shards once, its latest manifest row ``ok`` and pointing at the shard holding it, and
    no shard that no row points at."""
    assert keys_in_shards(out) == Counter(dict.fromkeys(uids, 1))
    rows = latest(out)
    assert sorted(rows) == sorted(uids) and all(r["status"] == "ok" for r in rows.values()), rows
    held = {uri: {key for key, _ in shards.iter_tar_samples(uri)} for uri in shards.list_shards(out)}
    assert all(row["key"] in held[row["shard"]] for row in rows.values())
    assert set(held) == {row["shard"] for row in rows.values()}


def views_rendered_on(ip: str) -> int:
    """Views the Blender processes of render workers on node ``ip`` have saved (from their logs): a Ray worker is
    a child of its node's raylet, whose command line names the node's address."""
    import tempfile

    import psutil

    saved = 0
    for log in Path(tempfile.gettempdir()).glob("invs-render-w*/logs/blender-*.log"):
        try:
            worker = psutil.Process(int(log.name.split("-")[1]))
            on_node = any(f"={ip}" in " ".join(p.cmdline()) for p in worker.parents())
            lines = log.read_text(errors="replace").splitlines()
            saved += on_node * sum("Saved:" in line and "rgba_" in line for line in lines)
        except (psutil.Error, OSError, ValueError):
            continue
    return saved


def wait_for_views(job: subprocess.Popen[str], ip: str, views: int) -> None:
    """Return once workers on node ``ip`` have rendered ``views`` views (the job still running)."""
    import time

    while views_rendered_on(ip) < views:
        assert job.poll() is None, job.stdout.read() if job.stdout else ""
        time.sleep(0.2)


@pytest.mark.ray
def test_a_worker_node_lost_mid_job_costs_no_object(
    ray_cluster: local_ray.LocalRayCluster, real_objects: Path, tmp_path: Path
) -> None:
    """A worker node dies (its raylet and every process started for it killed) while the job renders. The objects
    its worker held and had not recorded go back to the queue and the other node renders them in the same run;
    shards published without rows are removed: every object ends in the shards exactly once."""
    uids = copy_objects(real_objects, tmp_path / "objects", 12)
    out = str(tmp_path / "renders")
    doomed = "127.0.0.4"
    settings = ["render.threads_per_worker=1", "render.node_resource=render_cpu", "render.objects_per_shard=3"]
    settings += ["render.samples=32", "render.resolution=64"]
    command = render_command(tmp_path / "objects", out, address=ray_cluster.address, settings=settings)
    with extra_nodes(ray_cluster, {"render_cpu": 1}) as add_node:
        add_node(doomed)
        with running(command) as job:
            wait_for_views(job, doomed, views=2 * 2)  # two objects rendered there, more to come
            assert local_ray.remove_node(doomed) > 0
            output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, own_lines(output)[-4000:]
    assert "render worker died" in output and "go back to the queue" in output, own_lines(output)[-4000:]
    summary = json.loads(Path(out, "summary.json").read_text())
    assert summary["rendered"] == 12 and summary["failed"] == 0, summary
    assert summary["workers_lost"] >= 1 and summary["objects_requeued"] >= 1, summary
    assert_every_object_exactly_once(out, uids)


@pytest.mark.slow  # the same recovery is covered in the default run by a faster test
@pytest.mark.ray
def test_with_every_worker_node_lost_the_job_stops_in_one_line_and_a_rerun_finishes(
    ray_cluster: local_ray.LocalRayCluster, real_objects: Path, tmp_path: Path
) -> None:
    """The only node that may run the workers dies and none replaces it: after ``render.worker_wait_s`` the job
    stops with one error line; a re-run on the nodes there are then finishes with every object exactly once."""
    uids = copy_objects(real_objects, tmp_path / "objects", 10)
    out = str(tmp_path / "renders")
    doomed = "127.0.0.4"
    settings = ["render.threads_per_worker=1", "render.objects_per_shard=2", "render.worker_wait_s=20"]
    settings += ["render.samples=64", "render.resolution=64"]
    command = render_command(tmp_path / "objects", out, address=ray_cluster.address, settings=settings)
    with extra_nodes(ray_cluster, {"render_doomed": 1}) as add_node:
        add_node(doomed)
        with running([*command, "--set", "render.node_resource=render_doomed"]) as job:
            wait_for_views(job, doomed, views=3 * 2)
            local_ray.remove_node(doomed)
            output, _ = job.communicate(timeout=600)
    assert job.returncode == 2, own_lines(output)[-4000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert errors == [errors[-1]] and "no render worker ran for 20 s" in errors[0], own_lines(output)[-4000:]
    assert "re-run with the same --out to finish" in errors[0] and "Traceback" not in output
    rerun = subprocess.run(
        [*command, "--set", "render.node_resource=render_cpu"], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "already done" in rerun.stdout
    assert_every_object_exactly_once(out, uids)


# ------------------------------------------------------------------------------------------------ storage outages


def wait_for_a_shard(job: subprocess.Popen[str], out: str) -> None:
    """Return once the job's first shard is on S3 (the job still running)."""
    import time

    while not shards.list_shards(out):
        assert job.poll() is None, job.stdout.read() if job.stdout else ""
        time.sleep(0.2)


def assert_nothing_half_written(out: str) -> None:
    """Only final names under the output: shards, manifest parts, the config and the summary."""
    for uri in storage.list_files(out):
        rel = uri[len(out) + 1 :]
        assert rel in ("config.yaml", "summary.json") or (
            (rel.startswith("shards/") and rel.endswith(".tar")) or rel.startswith("manifest/part-")
        ), uri


@pytest.mark.slow  # the same storage retries: test_storage.py's outage tests and the preprocess job's, by default
@pytest.mark.ray
@pytest.mark.s3
def test_render_job_rides_out_an_s3_outage(
    s3_server: local_s3.S3Server, s3_bucket: str, real_objects: Path, tmp_path: Path
) -> None:
    """S3 goes away for 20 s mid-run (connections reset, new ones refused) and comes back: the workers' uploads
    wait it out with backoff and the job completes, every object exactly once and nothing half-written."""
    import time

    from tests.fault_proxy import FaultProxy

    uids = copy_objects(real_objects, tmp_path / "objects", 8)
    out = f"{s3_bucket}/renders"
    command = render_command(tmp_path / "objects", out, settings=["render.objects_per_shard=1", "render.samples=32"])
    with FaultProxy(s3_server.endpoint_url) as proxy:
        env = local_env({"INVS_S3_ENDPOINT": proxy.url, "AWS_ENDPOINT_URL": proxy.url})
        with running(command, env) as job:
            wait_for_a_shard(job, out)
            proxy.cut()
            time.sleep(20)
            proxy.restore()
            output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, own_lines(output)[-4000:]
    assert "warning: cannot write" in output and "Traceback" not in output, own_lines(output)[-4000:]
    assert "8 rendered, 0 failed" in output
    assert_every_object_exactly_once(out, uids)
    assert_nothing_half_written(out)


@pytest.mark.slow  # the same recovery is covered in the default run by a faster test
@pytest.mark.ray
@pytest.mark.s3
def test_an_s3_outage_longer_than_the_retries_stops_the_job_in_one_line_and_a_rerun_completes(
    s3_server: local_s3.S3Server, s3_bucket: str, real_objects: Path, tmp_path: Path
) -> None:
    from tests.fault_proxy import FaultProxy

    uids = copy_objects(real_objects, tmp_path / "objects", 8)
    out = f"{s3_bucket}/renders"
    settings = ["render.objects_per_shard=1", "render.samples=32"]
    settings += ["storage.retry_attempts=2", "storage.retry_backoff_s=0.5"]
    command = render_command(tmp_path / "objects", out, settings=settings)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        env = local_env({"INVS_S3_ENDPOINT": proxy.url, "AWS_ENDPOINT_URL": proxy.url})
        with running(command, env) as job:
            wait_for_a_shard(job, out)
            proxy.cut()
            output, _ = job.communicate(timeout=600)
        proxy.restore()
        assert job.returncode == 2, own_lines(output)[-4000:]
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "is unreachable (after 2 tries" in errors[0], own_lines(output)[-4000:]
        assert errors[0].endswith("the render job stopped, re-run it with the same --out to finish")
        assert "Traceback" not in output
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "already done" in rerun.stdout
    assert_every_object_exactly_once(out, uids)
    assert_nothing_half_written(out)
