"""The preprocess job end to end on real renders: pair shards and index, resume, bad input, the law's figures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from infra import local_ray, local_s3
from invs import shards, storage, tables
from tests.fault_proxy import FaultProxy
from tests.helpers import copy_objects, extra_nodes, local_env, own_lines, render, running

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.blender
FAST = ["--resolution", "96", "--pairs-per-object", "8", "--set", "preprocess.min_angle_deg=10"]


@pytest.fixture(scope="module")
def renders(real_objects: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    objects = tmp_path_factory.mktemp("objects")
    for name in ("BoxTextured.glb", "SpotCow.glb", "kenney_alien.glb"):
        shutil.copy(real_objects / name, objects / name)
    out = str(tmp_path_factory.mktemp("renders"))
    proc = render(str(objects), out, "--views", "4", "--resolution", "96", "--set", "render.samples=32")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def preprocess(renders: str, out: str, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "preprocess/main.py"), "--renders", renders, "--out", out, *FAST, *extra],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=local_env(),
    )
    assert "Traceback" not in proc.stdout, proc.stdout[-3000:]
    return proc


def index_of(out: str) -> list[dict]:
    return tables.read_table(storage.join(out, "index"), tables.INDEX_SCHEMA).to_pylist()


def test_pairs_index_law_figures_and_stored_latents(renders: str, tmp_path: Path) -> None:
    out = str(tmp_path / "pairs")
    proc = preprocess(renders, out, "--latents", "tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = index_of(out)
    assert f"{len(rows)} pairs from 3 objects, 0 failures" in proc.stdout, proc.stdout
    assert 3 * 6 <= len(rows) <= 3 * 8 and len({r["key"] for r in rows}) == len(rows)
    by_uid = {r["uid"]: r["split"] for r in rows}
    assert all(r["split"] == by_uid[r["uid"]] for r in rows)  # one object, one split
    in_shards = Counter(k for uri in shards.list_shards(out) for k, _ in shards.iter_tar_samples(uri))
    assert in_shards == Counter({r["key"]: 1 for r in rows})
    for r in rows:
        assert r["key"] == f"{r['uid']}_{r['src']:03d}_{r['tgt']:03d}" and storage.exists(r["shard"])
    samples = list(shards.iter_pair_samples(shards.list_shards(out)))
    for s in samples:
        assert s.target.shape == (96, 96, 3) and s.mask.dtype == np.uint8 and s.depth.shape == (96, 96)
        known_background = s.epipolar == 0
        assert np.all(s.mask[known_background] == 0) and np.all(s.partial[known_background] == 255)
        assert np.all(s.mask[(s.visible == 0) & (s.epipolar == 255)] == 255)
        # A target may see only the back of what its source sees (nothing visible), never most pairs.
        assert s.meta["depth_source"] == "gt" and 0 <= s.meta["visible_fraction"] <= 1
    assert sum(s.meta["visible_fraction"] > 0 for s in samples) >= 0.8 * len(samples)
    summary = json.loads(storage.read_text(f"{out}/summary.json"))
    law = summary["law"]
    assert law["psnr_partial"] >= law["psnr_backward"] - 1.0
    assert law["stray_fraction"] < 0.005 and law["unseen_below_half"] < 0.01
    assert "law: PSNR partial" in proc.stdout and summary["empty_views_skipped"] == 0
    assert f"coverage: {law['seen_covered']:.1%} of what the source sees" in proc.stdout
    check_stored_latents(out, samples)


def check_stored_latents(out: str, pairs: list[shards.PairSample]) -> None:
    """Each pair's ``latents.npy`` is the posterior of its target and partial view under the VAE its metadata
    names by fingerprint, and training picks them up only for that VAE."""
    import torch

    from invs.latents import load_vae, posterior_moments, vae_fingerprint
    from invs.models import build_tiny_components
    from train.data import PairStream, plan_data

    assert pairs and all(p.latents is not None and p.latents.shape == (2, 8, 24, 24) for p in pairs)
    vae = load_vae("tiny")
    made_by = vae_fingerprint(vae)
    assert made_by.startswith("sha256:") and all(p.meta["latents"]["model"] == "tiny" for p in pairs)
    assert all(p.latents.dtype == np.float16 and p.meta["latents"]["vae"] == made_by for p in pairs)
    expected = posterior_moments(vae, np.stack([pairs[0].target, pairs[0].partial]))
    np.testing.assert_allclose(pairs[0].latents.astype(np.float32), expected.astype(np.float32), atol=2e-3)
    plan = plan_data(out, None, val_pairs=0)
    item = next(iter(PairStream(plan, 0, 1, 0, seed=0, latents_vae=made_by)))
    assert item["moments"].shape == (2, 8, 24, 24) and item["moments"].dtype == torch.float32
    other = vae_fingerprint(build_tiny_components(seed=1)["vae"])
    assert "moments" not in next(iter(PairStream(plan, 0, 1, 0, seed=0, latents_vae=other)))


def test_bad_render_shards_become_failures_and_a_rerun_resumes(renders: str, tmp_path: Path) -> None:
    """A truncated shard and a sample without its depth are recorded with reasons; the rest goes on. A re-run makes
    nothing again (done and failed objects are skipped) and deletes a pair shard a crashed run left."""
    broken = tmp_path / "renders"
    shutil.copytree(renders, broken)
    (shard,) = shards.list_shards(str(broken))
    samples = list(shards.iter_tar_samples(shard))
    assert len(samples) == 3
    good, damaged, cut = samples
    del damaged[1]["depth.001.npy"]
    with shards.ShardWriter(str(broken / "shards"), "fixed", max_samples=1) as w:
        w.write(*good)
        w.write(*damaged)
        w.write(*cut)
    new = sorted(set(shards.list_shards(str(broken))) - {shard})
    Path(new[2]).write_bytes(Path(new[2]).read_bytes()[:3000])  # truncate the third
    rows = [tables.manifest_row(k, "ok", key=k, shard=u, attempts=1) for (k, _), u in zip(samples, new, strict=True)]
    tables.append_rows(str(broken / "manifest"), rows, tables.MANIFEST_SCHEMA)
    out = str(tmp_path / "pairs")
    proc = preprocess(str(broken), out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = tables.read_table(f"{out}/failures", tables.FAILURE_SCHEMA).to_pylist()
    reasons = {f["uid"] or "shard": f["error"] for f in failures}
    assert "missing depth.001.npy" in reasons[damaged[0]]
    assert "truncated" in reasons["shard"] or "truncated" in reasons.get(cut[0], "")
    assert {r["uid"] for r in index_of(out)} == {good[0]}

    first, pairs = shards.list_shards(out), len(index_of(out))
    shutil.copy(first[0], Path(out) / "shards" / "crashed-00000000-000000.tar")
    again = preprocess(str(broken), out)
    assert "0 to do; 1 orphan shard(s) removed" in again.stdout, again.stdout
    assert shards.list_shards(out) == first and len(index_of(out)) == pairs
    assert len(tables.read_table(f"{out}/failures", tables.FAILURE_SCHEMA)) == len(failures)


@pytest.mark.slow  # `make test-all`; the rehearsal preprocesses with a ZoeDepth directory (alignment checked)
def test_zoedepth_from_a_local_model_directory(renders: str, tmp_path: Path) -> None:
    """The real loading path with a small model saved to disk; alignment and depth error are recorded per pair."""
    import torch
    from transformers import ZoeDepthForDepthEstimation, ZoeDepthImageProcessorPil

    from invs.depth import tiny_zoedepth_config

    torch.manual_seed(0)
    model_dir = tmp_path / "zoedepth-tiny"
    ZoeDepthForDepthEstimation(tiny_zoedepth_config()).save_pretrained(model_dir)
    ZoeDepthImageProcessorPil().save_pretrained(model_dir)
    out = str(tmp_path / "pairs")
    proc = preprocess(renders, out, "--depth", "zoedepth", "--depth-model", str(model_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    pairs = list(shards.iter_pair_samples(shards.list_shards(out)))
    assert "from 3 objects, 0 failures" in proc.stdout, proc.stdout
    assert pairs and all(p.meta["depth_source"] == str(model_dir) for p in pairs)
    for pair in pairs:
        alignment = pair.meta["depth_alignment"]
        assert alignment["kind"] == "robust" and {"scale", "shift", "median_abs_rel", "rmse"} <= set(alignment)
        assert set(alignment["errors"]) >= {"abs_rel", "rmse", "delta1"}
        assert set(alignment["errors_distance_prior"]) >= {"abs_rel", "rmse", "delta1"}


@pytest.mark.parametrize("model", ["Intel/zoedepth-nyu-kitti", "/no/such/model"])
def test_missing_depth_weights_fail_fast_with_one_line(renders: str, tmp_path: Path, model: str) -> None:
    proc = preprocess(renders, str(tmp_path / "pairs"), "--depth", "zoedepth", "--depth-model", model)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot load the ZoeDepth model" in lines[0] and "--depth gt" in lines[0]


def test_views_with_empty_alpha_are_never_used_and_are_counted(renders: str) -> None:
    from invs.config import load_config
    from preprocess.object_pairs import object_pairs

    sample = next(shards.iter_render_samples(shards.list_shards(renders)))
    sample.rgba[0][..., 3] = 0
    sample.depth[0][:] = 0
    config = load_config(
        "local", {"preprocess.resolution": 96, "preprocess.pairs_per_object": 12, "preprocess.min_angle_deg": 10.0}
    )
    result = object_pairs(sample, config, "shard")
    assert result.skipped_views == 1 and result.pairs
    assert all(r["src"] != 0 and r["tgt"] != 0 for r in result.index_rows)


def test_missing_latents_vae_fails_fast(renders: str, tmp_path: Path) -> None:
    proc = preprocess(renders, str(tmp_path / "pairs"), "--latents", "stabilityai/stable-diffusion-2-inpainting")
    assert proc.returncode == 2 and "not in the local Hugging Face cache" in proc.stderr


@pytest.mark.slow  # 80 s on 2 cores: `make test-all`; the render job's node-loss test is in the default run
@pytest.mark.ray
def test_a_worker_node_lost_mid_job_costs_no_pair(
    ray_cluster: local_ray.LocalRayCluster, real_objects: Path, tmp_path: Path
) -> None:
    """A node running pair makers dies (raylet, workers and all) while the job runs: Ray Data runs its tasks again
    elsewhere and the sink's retry-safe names keep every object's pairs in the shards and the index exactly once."""
    import time

    import psutil

    uids = copy_objects(real_objects, tmp_path / "objects", 6)
    renders = str(tmp_path / "renders")
    proc = render(
        str(tmp_path / "objects"), renders, "--views", "4", "--resolution", "96", "--set", "render.objects_per_shard=1"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = str(tmp_path / "pairs")
    doomed = "127.0.0.4"
    settings = ["preprocess.node_resource=preprocess_gpu", "preprocess.objects_per_shard=1", "preprocess.workers=2"]
    command = [sys.executable, str(REPO / "preprocess/main.py"), "--renders", renders, "--out", out, *FAST]
    command += ["--address", ray_cluster.address, *(a for s in settings for a in ("--set", s))]
    with extra_nodes(ray_cluster, {"preprocess_gpu": 1}) as add_node:
        add_node(doomed)
        raylet = next(
            p for p in psutil.process_iter(["cmdline"]) if f"--node_ip_address={doomed}" in " ".join(p.cmdline())
        )

        def pair_maker_on_doomed_node() -> bool:
            try:
                return any("PairMaker" in " ".join(p.cmdline()) for p in raylet.children(recursive=True))
            except psutil.Error:
                return False

        with running(command) as job:
            while not (pair_maker_on_doomed_node() and storage.list_files(f"{out}/index")):
                assert job.poll() is None, job.stdout.read() if job.stdout else ""
                time.sleep(0.2)
            assert local_ray.remove_node(doomed) > 0
            output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, own_lines(output)[-3000:]
    rows = index_of(out)
    assert {r["uid"] for r in rows} == set(uids) and len({r["key"] for r in rows}) == len(rows)
    held = {uri: {k for k, _ in shards.iter_tar_samples(uri)} for uri in shards.list_shards(out)}
    assert Counter(k for keys in held.values() for k in keys) == Counter({r["key"]: 1 for r in rows})
    assert all(r["key"] in held[r["shard"]] for r in rows) and set(held) == {r["shard"] for r in rows}
    assert tables.read_table(f"{out}/failures", tables.FAILURE_SCHEMA).num_rows == 0


# ------------------------------------------------------------------------------------------------ no node, S3 outages


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_pair_makers_no_node_can_hold_stop_the_job_in_one_line(renders: str, tmp_path: Path) -> None:
    """``preprocess.device: cuda`` and no GPU node (this machine has none): the job stops after
    ``preprocess.worker_wait_s`` with one line instead of leaving Ray Data's actor pool waiting for ever."""
    import time

    out = str(tmp_path / "pairs")
    started = time.monotonic()
    proc = preprocess(renders, out, "--set", "preprocess.device=cuda", "--set", "preprocess.worker_wait_s=3")
    took = time.monotonic() - started
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (error,) = error_lines(proc.stdout + proc.stderr)
    assert error.startswith("error: preprocess: no node could hold a pair maker ({CPU: 1, GPU: 1}) for 3 s: "), error
    assert "for 3 s: no GPU node alive or added; 3 objects not preprocessed; " in error, error
    assert error.endswith("re-run with the same --out when one is"), error
    assert "Traceback" not in proc.stderr and took < 180
    assert storage.list_files(f"{out}/shards") == [] and storage.list_files(f"{out}/index") == []


def test_a_pair_maker_asked_for_cuda_never_falls_back_to_the_cpu() -> None:
    import torch

    from invs.config import load_config
    from invs.errors import InvsError
    from preprocess.job import PairMaker

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    no_cuda = (
        r"^preprocess.device is gpu but torch sees no CUDA device in the pair maker .*, or set preprocess.device=cpu$"
    )
    with pytest.raises(InvsError, match=no_cuda):
        PairMaker(load_config("local", {"preprocess.device": "cuda"}))


def test_an_error_of_ours_in_a_preprocess_task_or_actor_becomes_one_line() -> None:
    """The shapes in which Ray Data hands the driver what a task or actor raised: the error itself as the cause (a
    write task), or only its traceback's text (a map task's UserCodeException, an actor that failed to start)."""
    from ray.exceptions import ActorDiedError, RayTaskError, UserCodeException

    from invs.errors import InvsError, StorageError
    from preprocess.job import _job_error

    outage = "cannot write s3://b/pairs/x.tar: S3 endpoint http://h:1 is unreachable (after 2 tries over 1 s)"
    then = "; the preprocess job stopped, re-run it with the same --out to finish"
    write = RayTaskError("Write", "Traceback: ...", StorageError(f"{outage}\nFailed to apply UDF transform"))
    read = f"Traceback (most recent call last):\ninvs.errors.StorageError: {outage}\n\nThe above exception was ..."
    cuda = "preprocess.device is gpu but torch sees no CUDA device in the pair maker on node-7 (...)"
    no_cuda = f"Traceback (most recent call last):\ninvs.errors.InvsError: {cuda}\n"
    for raised, kind, line in [
        (write, StorageError, outage + then),
        (RayTaskError("MapBatches", read, UserCodeException("UDF failed")), StorageError, outage + then),
        (
            ActorDiedError(RayTaskError("__init__", no_cuda, InvsError("x"))),
            InvsError,
            cuda + "; the preprocess job stopped",
        ),
    ]:
        error = _job_error(raised)
        assert type(error) is kind and str(error) == line, (raised, error)
    assert _job_error(RayTaskError("MapBatches", "Traceback ...\nKeyError: 'x'", KeyError("x"))) is None


def renders_on_s3(renders: str, dest: str) -> str:
    """A copy of a local render output at ``dest`` on S3: its shards, and manifest rows that point at them."""
    moved = {uri: f"{dest}/shards/{Path(uri).name}" for uri in shards.list_shards(renders)}
    for uri, target in moved.items():
        storage.upload_file(uri, target)
    rows = tables.read_table(f"{renders}/manifest", tables.MANIFEST_SCHEMA).to_pylist()
    rows = [r | {"shard": moved.get(r["shard"], r["shard"])} for r in rows]
    tables.append_rows(f"{dest}/manifest", rows, tables.MANIFEST_SCHEMA)
    return dest


def dead_endpoint() -> str:
    """An S3 endpoint on 127.0.0.1 that refuses connections (a port nothing listens on)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def preprocess_through_an_s3_outage(
    source: str, out: str, proxy: FaultProxy, attempts: int, restore_on: str | None, cut: bool = True
) -> tuple[int, str]:
    """preprocess/main.py from ``source`` to ``out`` on S3 through ``proxy``, which only the config names (the
    environment names a dead endpoint, as a worker node's would: every task must apply the config's storage
    settings), with ``attempts`` tries per S3 operation. With ``cut``, S3 goes down once the job has read its
    inputs and, with ``restore_on``, comes back when the job prints that. Returns the exit status and output."""
    dead = dead_endpoint()
    settings = [f"storage.s3_endpoint={proxy.url}", f"storage.retry_attempts={attempts}", "storage.retry_backoff_s=0.5"]
    command = [sys.executable, str(REPO / "preprocess/main.py"), "--renders", source, "--out", out, *FAST]
    command += ["--pairs-per-object", "2", "--resolution", "64", *(a for s in settings for a in ("--set", s))]
    with running(command, local_env({"INVS_S3_ENDPOINT": dead, "AWS_ENDPOINT_URL": dead})) as job:
        assert job.stdout is not None
        seen = []
        for line in job.stdout:
            seen.append(line)
            if cut and " to do; " in line:  # the driver has read the manifest and the index: the rest is the tasks'
                proxy.cut()
            if restore_on and restore_on in line:
                proxy.restore()
                break
        rest, _ = job.communicate(timeout=300)
    proxy.restore()
    return job.returncode, "".join(seen) + rest


def assert_every_object_once(out: str) -> None:
    rows = index_of(out)
    assert {r["uid"] for r in rows} == {"BoxTextured", "SpotCow", "kenney_alien"}
    assert len({r["key"] for r in rows}) == len(rows) and all(r["shard"].startswith(f"{out}/shards/") for r in rows)
    held = Counter(k for uri in shards.list_shards(out) for k, _ in shards.iter_tar_samples(uri))
    assert held == Counter({r["key"]: 1 for r in rows})


@pytest.mark.slow  # `make test-all`: the same retries in test_storage.py's outage tests and the re-read test below
@pytest.mark.ray
@pytest.mark.s3
def test_preprocess_on_s3_rides_out_an_outage_within_the_configured_retries(
    renders: str, s3_server: local_s3.S3Server, s3_bucket: str
) -> None:
    """Render shards read from and pairs written to S3 that goes away as the tasks start, and comes back once the
    read task has retried: the job completes with every object's pairs once, the tasks on the config's endpoint
    and its 8 tries (the default is 6)."""
    source, out = renders_on_s3(renders, f"{s3_bucket}/renders"), f"{s3_bucket}/pairs"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        code, output = preprocess_through_an_s3_outage(source, out, proxy, 8, restore_on="warning: cannot read")
    assert code == 0, own_lines(output)[-4000:]
    assert "try 2 of 8" in output and not error_lines(output) and "Traceback" not in output, own_lines(output)
    assert_every_object_once(out)


@pytest.mark.slow  # two runs (~100 s on 2 cores): `make test-all`; the default run rides out an outage
@pytest.mark.ray
@pytest.mark.s3
def test_an_s3_outage_past_the_retries_stops_preprocess_in_one_line_and_a_rerun_completes(
    renders: str, s3_server: local_s3.S3Server, s3_bucket: str
) -> None:
    source, out = renders_on_s3(renders, f"{s3_bucket}/renders"), f"{s3_bucket}/pairs"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        code, output = preprocess_through_an_s3_outage(source, out, proxy, 2, restore_on=None)
        assert code == 2, own_lines(output)[-4000:]
        (error,) = error_lines(output)
        assert error.startswith(f"error: cannot read {source}/shards/") and "(after 2 tries" in error, error
        assert proxy.url in error and "Traceback" not in output, own_lines(output)
        assert error.endswith("the preprocess job stopped, re-run it with the same --out to finish"), error
        assert storage.list_files(f"{out}/index") == [] and storage.list_files(f"{out}/shards") == []
        code, output = preprocess_through_an_s3_outage(source, out, proxy, 2, restore_on=None, cut=False)
    assert code == 0, own_lines(output)[-4000:]
    assert_every_object_once(out)


@pytest.mark.s3
def test_a_render_shard_cut_mid_read_is_read_again_not_recorded_as_corrupt(
    s3_server: local_s3.S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """S3 goes down while a render shard streams (after its first sample): that is an outage, not a corrupt shard,
    so the read task reads the whole shard again under the retry policy; past the retries it is one StorageError."""
    import os

    import pyarrow as pa

    from invs.config import load_config
    from invs.errors import StorageError
    from preprocess import job

    with shards.ShardWriter(f"{s3_bucket}/renders/shards", "big", max_samples=10) as writer:
        for i in range(4):
            writer.write(f"obj{i}", {"blob.bin": os.urandom(5 * 2**20)})  # 20 MiB: more than two 8 MiB read blocks
    (uri,) = shards.list_shards(f"{s3_bucket}/renders")
    batch = pa.table({"render_shard": [uri], "keys": [["obj0", "obj1", "obj2"]]})
    stream, passes, outage_passes = shards.iter_tar_samples, [], [1]

    def cut_mid_read(shard: str) -> Iterator[tuple[str, dict[str, bytes]]]:
        """Each of the first ``outage_passes`` reads of the shard loses S3 after its first sample."""
        passes.append(shard)
        proxy.restore()
        for n, sample in enumerate(stream(shard)):
            yield sample
            if n == 0 and len(passes) <= outage_passes[0]:
                proxy.cut()

    monkeypatch.setattr(shards, "iter_tar_samples", cut_mid_read)
    saved = storage.retry_policy()
    try:
        with FaultProxy(s3_server.endpoint_url) as proxy:
            settings = {"storage.s3_endpoint": proxy.url, "storage.retry_attempts": 2, "storage.retry_backoff_s": 0.2}
            config = load_config("local", settings)
            rows = job.read_objects(batch, config).to_pylist()
            assert [r["key"] for r in rows] == ["obj0", "obj1", "obj2"] and not any(r["error"] for r in rows)
            warning = f"warning: cannot read {uri}: the connection to {proxy.url} broke mid-read"
            assert warning in capsys.readouterr().err and len(passes) == 2
            passes.clear()
            outage_passes[0] = 1
            with pytest.raises(StorageError, match=r"^cannot read .* broke mid-read \(\w+\)$"):
                job.read_objects(batch, load_config("local", settings | {"storage.retry_attempts": 1}))
            assert len(passes) == 1
    finally:
        storage.configure_s3(None)
        storage.configure_retries(saved.attempts, saved.backoff_s)


def test_a_copied_render_and_pair_output_keeps_every_shard_and_is_read_where_it_is(
    flagged_renders: tuple[str, dict], flagged_pairs: tuple[str, str], tmp_path: Path
) -> None:
    """Rows name the URI a shard was written at; an output copied elsewhere (an `aws s3 sync` to a new prefix) and
    resumed there keeps all its shards (none taken for an orphan and deleted), reads its own render shards, and has
    nothing left to do."""
    from invs.config import load_config
    from preprocess.job import plan_work
    from render.job import plan
    from render.object_ref import ObjectRef

    renders, pairs = tmp_path / "renders", tmp_path / "pairs"
    shutil.copytree(flagged_renders[0], renders)
    shutil.copytree(flagged_pairs[0], pairs)
    render_shards = sorted(p.name for p in (renders / "shards").iterdir())
    pair_shards = sorted(p.name for p in (pairs / "shards").iterdir())

    latest = tables.latest_by_uid(tables.read_table(str(renders / "manifest"), tables.MANIFEST_SCHEMA))
    objects = [ObjectRef(uid, row["source"], "local") for uid, row in latest.items() if row["status"] == "ok"]
    p = plan(load_config("local", {"render.out": str(renders)}), objects)
    assert not p.todo and shards.remove_orphan_shards(str(renders), p.referenced_shards) == []
    found = tables.rendered_shards(str(renders))
    assert found and all(f.startswith(str(renders / "shards")) for f in found)

    work = plan_work(str(renders), str(pairs), ["no_material", "too_small", "constant_color"])
    assert work.orphans == [] and work.left == 0
    assert all(s.startswith(str(renders / "shards")) for s in work.by_shard)
    assert sorted(p.name for p in (renders / "shards").iterdir()) == render_shards
    assert sorted(p.name for p in (pairs / "shards").iterdir()) == pair_shards
