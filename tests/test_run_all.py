"""The one pipeline command (what `make demo` runs) on the built-in samples, with tiny settings."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invs import shards
from tests.helpers import local_env

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.blender
@pytest.mark.slow  # `make test-all`; by default the rehearsal runs the same driver (tests/test_rehearsal.py)
def test_pipeline_runs_every_stage_and_leaves_pictures(tmp_path: Path) -> None:
    """render -> preprocess -> train (tiny, a few steps) -> evaluate on held-out pairs, on the built-in samples."""
    renders = tmp_path / "run" / "renders"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.run_all",
            "--config",
            "local",
            "--set",
            f"render.out={renders}",
            "--set",
            "render.views=4",
            "--set",
            "render.resolution=64",
            "--set",
            "render.samples=8",
            "--set",
            "preprocess.resolution=64",
            "--set",
            "preprocess.pairs_per_object=2",
            "--set",
            f"preprocess.out={tmp_path / 'run' / 'pairs'}",
            "--set",
            f"train.out={tmp_path / 'run' / 'train'}",
            "--set",
            "train.steps=6",
            "--set",
            "train.tiny_vae_fit_steps=3",
            "--set",
            "train.val_inference_steps=3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=local_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[render] 5 rendered, 0 failed" in proc.stdout
    assert "4 stages ran" in proc.stdout
    samples = list(shards.iter_render_samples(shards.list_shards(str(renders))))
    assert sorted(s.key for s in samples) == [
        "sample_arrow_sign",
        "sample_checker_torus",
        "sample_mug",
        "sample_robot",
        "sample_text_block",
    ]
    sheet = Image.open(tmp_path / "run" / "renders.png")
    assert sheet.size[1] >= 5 * 100  # one row per object
    assert len(np.unique(np.asarray(sheet.convert("L")))) > 50  # a real picture, not a blank page
    assert (tmp_path / "run" / "cameras.png").is_file() and (tmp_path / "run" / "config.yaml").is_file()
    # The preprocess stage read the render stage's output and wrote pairs for every object.
    assert "[preprocess] 10 pairs from 5 objects, 0 failures" in proc.stdout, proc.stdout
    pairs = list(shards.iter_pair_samples(shards.list_shards(str(tmp_path / "run" / "pairs"))))
    assert sorted({p.meta["uid"] for p in pairs}) == sorted(s.key for s in samples)
    assert Image.open(tmp_path / "run" / "pairs.png").size[1] > 5 * 128
    report = tmp_path / "run" / "report" / "index.html"  # listed among the outputs, its images beside it
    assert str(report) in proc.stdout and "sample_mug-rgba.png" in report.read_text()
    assert (report.parent / "img" / "sample_mug-depth.png").is_file()
    # Train read the pairs, evaluate the exported model on the held-out object (sample_mug, by the uid hash).
    assert "[train] 6 steps" in proc.stdout and (tmp_path / "run" / "train" / "model" / "model_index.json").is_file()
    assert "train: std of the scaled target latents" in proc.stdout  # the latent scale is measured and shown
    assert "Reporting training result" not in proc.stdout + proc.stderr  # a progress bar instead
    # The last lines: the model beside its baselines, on held-out and training pairs.
    table = proc.stdout.split("means over pairs:")[1]
    assert "held-out (2 pairs)" in table and "training (8 pairs)" in table
    for row in ("model", "model, known pixels kept", "partial view alone", "source view copied", "VAE round trip"):
        assert row in table
    assert "LPIPS: not computed (ImageNet AlexNet weights (torchvision's) not found at" in table  # no weights here
    summary = json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())
    assert summary["lpips"] is None and "alexnet-owt-7be5be79.pth" in summary["lpips_unavailable"]
    partial = summary["methods"]["partial view alone"]["psnr"]
    assert partial["ci95"][0] <= partial["mean"] <= partial["ci95"][1]
    assert set(summary["objects"]) == {"sample_mug"} and "model" in summary["objects"]["sample_mug"]
    results = (tmp_path / "run" / "eval" / "results.md").read_text()
    assert "| partial view alone | " in results and "| method | PSNR dB" in results
    rows = list(csv.DictReader((tmp_path / "run" / "eval" / "metrics.csv").open()))
    assert len(rows) == 2 * 6 and {r["method"] for r in rows} == set(summary["methods"])  # pairs x methods
    grid = Image.open(tmp_path / "run" / "eval" / "predictions.png")
    assert grid.size == (5 * 128, 14 + 2 * (128 + 14))
    for picture in ("eval/predictions.png", "train/logs/metrics.png"):
        assert str(tmp_path / "run" / picture) in proc.stdout
    assert Image.open(tmp_path / "run" / "train" / "logs" / "metrics.png").size[0] > 500


def test_every_output_is_checked_before_the_first_stage(tmp_path: Path) -> None:
    """The paper preset with only the render output moved: the placeholder bucket of the next stage's output stops
    the run before anything renders, in one line."""
    renders = tmp_path / "renders"
    proc = subprocess.run(
        [sys.executable, "-m", "infra.run_all", "--config", "paper", "--set", f"render.out={renders}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=local_env(),
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "preprocess.out" in errors[0] and "placeholder" in errors[0], proc.stderr[-2000:]
    assert not renders.exists()
