"""train/run.py end to end with Ray Train: 2 CPU workers (gloo) on pair shards made from the real objects.

Covers the overfit run with export and validation, a lost worker restarting from its checkpoint, ``--resume``,
bad input, and S3 for data and checkpoints.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from invs import shards, storage
from tests.helpers import local_env, render

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.blender, pytest.mark.ray]
PAIRS = ["--pairs-per-object", "8", "--set", "preprocess.min_angle_deg=10"]
FAST = ["--tiny", "--batch-size", "2", "--set", "train.val_inference_steps=4", "--set", "train.val_pairs=3"]
FAST += ["--set", "train.tiny_vae_fit_steps=0"]  # the demo's VAE fit costs a minute per run and is tested there


@pytest.fixture(scope="module")
def pairs(real_objects: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """24 pairs at 64 px from three real objects (render 4 views each, then preprocess with ground-truth depth)."""
    objects = tmp_path_factory.mktemp("objects")
    for name in ("BoxTextured.glb", "SpotCow.glb", "kenney_alien.glb"):
        shutil.copy(real_objects / name, objects / name)
    renders = str(tmp_path_factory.mktemp("renders"))
    proc = render(str(objects), renders, "--views", "4", "--resolution", "64", "--set", "render.samples=8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = str(tmp_path_factory.mktemp("pairs"))
    proc = subprocess.run(
        [sys.executable, "preprocess/main.py", "--renders", renders, "--out", out, "--resolution", "64", *PAIRS],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=local_env(),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def train(
    data: str, out: str, *extra: str, env: dict[str, str] | None = None, cluster: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run train/run.py: on the session's two-node cluster (``cluster``, RAY_ADDRESS from the fixture) or on a
    local Ray instance of its own."""
    proc = subprocess.run(
        [sys.executable, "train/run.py", "--data", data, "--out", out, *FAST, *extra],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        env={**os.environ, **(env or {})} if cluster else local_env(env),
    )
    if proc.returncode == 2:  # a refused run says why in one error line (Ray's log lines may follow it)
        assert any(line.startswith("error: ") for line in proc.stderr.splitlines()), proc.stderr[-3000:]
    return proc


def losses(out: str) -> dict[int, float]:
    rows = csv.DictReader(storage.read_text(storage.join(out, "logs", "metrics.csv")).splitlines())
    return {int(r["step"]): float(r["loss"]) for r in rows}


COMMON = ["--num-workers", "2", "--set", "train.learning_rate=2e-3", "--set", "train.checkpoint_every=3"]
COMMON += ["--set", "train.loader_workers=2"]


@pytest.fixture(scope="module")
def reference(pairs: str, tmp_path_factory: pytest.TempPathFactory, ray_cluster) -> tuple[str, str]:
    """A 12-step run with two workers, one per node of the two-node cluster (DDP over gloo between 127.0.0.2 and
    127.0.0.3), validating at 6 and 12; also the uninterrupted reference for the failure and resume test."""
    out = str(tmp_path_factory.mktemp("reference") / "run")
    proc = train(pairs, out, "--steps", "12", *COMMON, "--set", "train.validate_every=6", cluster=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_two_workers_validate_and_export(pairs: str, reference: tuple[str, str]) -> None:
    """(Learning itself: test_overfit_pairs_come_back_through_the_whole_sampler.)"""
    out, stdout = reference
    curve = losses(out)
    assert sorted(curve) == list(range(1, 13))
    assert np.isfinite([curve[s] for s in range(1, 13)]).all()
    summary = json.loads(storage.read_text(storage.join(out, "summary.json")))
    assert summary["num_workers"] == 2 and summary["final"]["step"] == 12
    assert np.isfinite(summary["final"]["val_psnr"]) and -1 <= summary["final"]["val_ssim"] <= 1
    for step in (6, 12):
        assert (Path(out) / "validation" / f"step_{step:08d}.png").stat().st_size > 1000
    assert "val PSNR" in stdout and str(Path(out) / "model") in stdout

    # The export is a diffusers pipeline, and our wrapper inpaints with it.
    from diffusers import StableDiffusionInpaintPipeline

    from inference.pipeline import NovelViewPipeline
    from invs.pair_builder import collate, pair_to_tensors
    from invs.shards import read_samples

    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(Path(out) / "model"), local_files_only=True)
    assert pipe.unet.config.in_channels == 9
    model = NovelViewPipeline.load(str(Path(out) / "model"))
    shard = shards.list_shards(pairs)[0]
    keys = {key for key, _ in shards.iter_tar_samples(shard)}
    raw = read_samples(shard, set(sorted(keys)[:2]))
    batch = collate([pair_to_tensors(shards.decode_pair_sample(k, m), 64) for k, m in raw])
    views = model.predict(batch, steps=3, seed=7)
    assert views.shape == (2, 3, 64, 64) and torch.isfinite(views).all()
    assert torch.equal(views, model.predict(batch, steps=3, seed=7))
    state = torch.load(Path(out) / "run" / "checkpoint_00000012" / "denoiser.pt", weights_only=True)
    exported = pipe.unet.state_dict()
    ema_differs = any(not torch.equal(state[f"unet.{k}"], v) for k, v in exported.items())
    assert ema_differs, "the export holds the EMA weights, not the last raw weights"


def kill_a_worker_after(out: str, step: int, stop: threading.Event) -> list[int]:
    """Wait until the run in ``out`` has logged ``step``, then SIGKILL one Ray Train worker process, from outside,
    as a lost node would; returns the killed pid (empty if the run ended first)."""
    import psutil

    killed: list[int] = []
    metrics = Path(out) / "logs" / "metrics.csv"
    while not stop.is_set():
        if metrics.is_file() and max(losses(out), default=0) >= step:
            workers = [
                p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])
            ]
            if workers:
                victim = max(workers, key=lambda p: p.pid)
                victim.kill()
                killed.append(victim.pid)
                return killed
        time.sleep(0.05)
    return killed


def test_lost_worker_and_resume_repeat_the_uninterrupted_run(
    pairs: str, tmp_path: Path, reference: tuple[str, str]
) -> None:
    """Checkpoints every 3 steps (so the loader processes resume mid-rotation). (b) one worker process is killed
    from outside once step 5 is logged and Ray Train restarts both from the last checkpoint; (c) 3 steps, then
    ``--resume`` to 7. Both log the same loss at every step as the uninterrupted reference run (same settings; a
    constant learning rate, so its length does not matter)."""
    common = [*COMMON, "--set", "train.validate_every=0", "--set", "train.val_pairs=0"]
    b, c = str(tmp_path / "b"), str(tmp_path / "c")
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        killer = pool.submit(kill_a_worker_after, b, 5, stop)
        proc = train(pairs, b, "--steps", "12", *common, cluster=True)
        stop.set()
        killed = killer.result()
    assert proc.returncode == 0, [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert killed and "train: (re)started at step" in proc.stdout, (killed, proc.stdout[-2000:])
    assert train(pairs, c, "--steps", "3", *common, cluster=True).returncode == 0
    refused = train(pairs, c, "--steps", "7", *common, cluster=True)
    assert refused.returncode == 2 and "already holds a training run" in refused.stderr
    assert train(pairs, c, "--steps", "7", "--resume", *common, cluster=True).returncode == 0
    expected = losses(reference[0])
    for other, steps in ((b, 12), (c, 7)):
        got = losses(other)
        assert sorted(got) == list(range(1, steps + 1))
        np.testing.assert_allclose(
            [got[s] for s in range(1, steps + 1)], [expected[s] for s in range(1, steps + 1)], rtol=1e-5
        )


def test_a_failure_that_repeats_at_the_same_step_stops_at_once(pairs: str, tmp_path: Path) -> None:
    """A learning rate of 1e30 overflows the weights in step 1, so step 2's loss is NaN, and again after a restart
    from the step-1 checkpoint: the run stops there with one line instead of using up its 5 restarts."""
    settings = ["train.learning_rate=1e30", "train.checkpoint_every=1", "train.max_failures=5", "train.val_pairs=0"]
    proc = train(pairs, str(tmp_path / "run"), "--steps", "6", *(x for s in settings for x in ("--set", s)))
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "failed the same way twice at step 2" in errors[0] and "FloatingPointError: the loss is nan" in errors[0]
    assert "restarting from the last checkpoint (1 of 5)" in proc.stdout and "(2 of 5)" not in proc.stdout


@pytest.mark.parametrize(
    ("data", "message"),
    [("{tmp}/nothing", "no training pairs at"), ("s3://no-such-bucket-invs/pairs", "no-such-bucket-invs")],
)
def test_wrong_data_fails_fast_before_any_worker(tmp_path: Path, data: str, message: str, s3_server) -> None:
    out = str(tmp_path / "run")
    proc = train(data.format(tmp=tmp_path), out, "--steps", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and message in proc.stderr
    assert "RayTrainWorker" not in proc.stdout + proc.stderr
    assert not (Path(out) / "run").exists()


def test_resume_without_a_run_is_refused(pairs: str, tmp_path: Path) -> None:
    proc = train(pairs, str(tmp_path / "empty"), "--steps", "2", "--resume")
    assert proc.returncode == 2 and "holds no training run" in proc.stderr


def corrupt_two_pairs(data: Path) -> list[str]:
    """Rewrite a shard with one train pair's mask removed and another's partial view at the wrong size."""
    from invs import tables

    index = tables.read_table(str(data / "index"), tables.INDEX_SCHEMA).to_pylist()
    train_keys = {r["key"] for r in index if r["split"] == "train"}
    shard = next(s for s in shards.list_shards(str(data)) if train_keys & {k for k, _ in shards.iter_tar_samples(s)})
    samples = list(shards.iter_tar_samples(shard))
    bad = [i for i, (key, _) in enumerate(samples) if key in train_keys][:2]
    del samples[bad[0]][1]["mask.png"]
    samples[bad[1]][1]["partial.png"] = shards.encode_png(np.full((32, 32, 3), 255, np.uint8), "RGB")
    Path(shard).unlink()
    with shards.ShardWriter(str(data / "shards"), Path(shard).stem.rsplit("-", 1)[0], max_samples=1 << 20) as w:
        for key, members in samples:
            w.write(key, members)
    assert shard in shards.list_shards(str(data))
    return [samples[i][0] for i in bad]


@pytest.mark.s3
@pytest.mark.slow  # `make test-all`; training on S3 (checkpoints, resume, export) runs by default in the rehearsal
def test_ray_job_submit_on_the_cluster_with_s3_and_bad_pairs_skipped(
    pairs: str, tmp_path: Path, s3_server, s3_bucket: str, ray_cluster
) -> None:
    """`ray job submit --working-dir . -- python train/run.py` on the two-node cluster, pair shards and the run on
    the local S3 server; two broken train pairs are skipped, named and counted."""
    from infra import local_ray

    local = tmp_path / "pairs"
    shutil.copytree(pairs, local)
    bad = corrupt_two_pairs(local)
    data, out = f"{s3_bucket}/pairs", f"{s3_bucket}/train"
    for path in local.rglob("*"):
        if path.is_file():
            storage.upload_file(path, storage.join(data, path.relative_to(local).as_posix()))
    settings = ["checkpoint_every=6", "keep_checkpoints=1", "loader_workers=0", "validate_every=0"]
    proc = subprocess.run(
        [local_ray.ray_binary(), "job", "submit", "--address", ray_cluster.dashboard_url, "--working-dir", str(REPO)]
        + ["--runtime-env-json", json.dumps({"env_vars": s3_server.env()}), "--", "python", "train/run.py"]
        + ["--data", data, "--out", out, "--num-workers", "2", "--steps", "12", *FAST]
        + [arg for setting in settings for arg in ("--set", f"train.{setting}")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-2000:])
    assert "train: 12 steps on 2 worker(s)" in proc.stdout
    files = storage.list_files(out)
    checkpoints = {f.split("/run/")[1].split("/")[0] for f in files if "/run/checkpoint_0" in f}
    assert checkpoints == {"checkpoint_00000012"}  # keep_checkpoints=1 removed the one of step 6
    for name in ("model/model_index.json", "model/unet/config.json", "logs/metrics.csv", "summary.json"):
        assert storage.join(out, name) in files
    assert any(f.startswith(storage.join(out, "validation")) for f in files)
    assert sorted(losses(out)) == list(range(1, 13))
    summary = json.loads(storage.read_text(storage.join(out, "summary.json")))
    assert summary["final"]["skipped"] >= 2  # 12 steps x 2 x 2 pairs cover the whole train split
    assert all(f"pair {key}" in proc.stdout + proc.stderr for key in bad), proc.stdout[-3000:]


def two_train_pairs(pairs: str, dest: Path) -> tuple[str, list[str]]:
    """A copy of the pair data whose index lists only two train pairs, the two whose partial views cover least of
    the target (most to generate), and no val pairs: nothing else to learn."""
    from invs import tables

    shutil.copytree(Path(pairs) / "shards", dest / "shards")
    rows = tables.read_table(str(Path(pairs) / "index"), tables.INDEX_SCHEMA).to_pylist()
    chosen = sorted((r for r in rows if r["split"] == "train"), key=lambda r: (r["visible_fraction"], r["key"]))[:2]
    tables.append_rows(str(dest / "index"), chosen, tables.INDEX_SCHEMA)
    return str(dest), [r["key"] for r in chosen]


@pytest.mark.parametrize(
    "scaling_factor",
    [
        None,
        pytest.param(
            0.18215,
            marks=[
                pytest.mark.slow,
                pytest.mark.xfail(strict=True, reason="SD's constant drowns the tiny VAE's latents"),
            ],
        ),
    ],
    ids=["measured_scale", "sd_constant"],
)
def test_overfit_pairs_come_back_through_the_whole_sampler(
    pairs: str, tmp_path: Path, scaling_factor: float | None
) -> None:
    """The real loop (Ray Train) overfits two pairs with the demo's recipe; the exported model, loaded with
    NovelViewPipeline.load and sampled from pure noise, gives those targets back: far above the partial view
    alone and near the VAE's own round trip. With SD's 0.18215 on the fitted tiny VAE (latent std ~0.2) the same
    run warns loudly and the views do not come back (strict xfail)."""
    from inference.pipeline import NovelViewPipeline
    from invs import metrics
    from invs.models import vae_round_trip
    from invs.pair_builder import collate, pair_to_tensors
    from invs.shards import read_samples

    data, keys = two_train_pairs(pairs, tmp_path / "two")
    settings = ["validate_every=0", "checkpoint_every=250", "tiny_vae_fit_steps=150", "learning_rate=2e-3"]
    if scaling_factor is not None:
        settings.append(f"vae_scaling_factor={scaling_factor}")
    out = str(tmp_path / "run")
    proc = train(data, out, "--steps", "250", *[a for s in settings for a in ("--set", f"train.{s}")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "Reporting training result" not in output  # a progress bar, not Ray Train's per-report lines
    std = float(output.split("std of the scaled target latents ")[1].split()[0])
    if scaling_factor is None:
        assert 0.5 <= std <= 2.0 and "LATENT SCALE" not in output
    else:
        assert std < 0.5 and "LATENT SCALE" in output

    model = NovelViewPipeline.load(str(Path(out) / "model"))
    shard = shards.list_shards(data)[0]
    raw = sorted(read_samples(shard, set(keys)))
    batch = collate([pair_to_tensors(shards.decode_pair_sample(k, m), 64) for k, m in raw])
    views = model.predict(batch, steps=20, seed=0, known_pixels="generate")
    target = (batch["target"] + 1) / 2
    got = metrics.psnr(views, target)
    partial = metrics.psnr((batch["partial"] + 1) / 2, target)
    ceiling = metrics.psnr((vae_round_trip(model.vae, batch["target"]) + 1) / 2, target)
    print(f"generated {got.tolist()} partial {partial.tolist()} VAE round trip {ceiling.tolist()}")
    assert (got > partial + 2.0).all(), (got, partial)
    assert (got > ceiling - 1.0).all(), (got, ceiling)


def test_the_tiny_vae_is_fitted_on_images_of_every_object() -> None:
    from train.run import spread_keys

    train_keys = {f"shard{s}": [f"obj{s * 4 + o}_{p}" for o in range(4) for p in range(8)] for s in range(4)}
    chosen = spread_keys(train_keys, 32)
    assert len(chosen) == 32 and len({key.split("_")[0] for _, key in chosen}) == 16  # all 16 objects, 2 pairs each
    few = {"shard0": ["a", "b", "c"]}
    assert spread_keys(few, 64) == {("shard0", k) for k in "abc"}
