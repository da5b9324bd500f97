"""Evaluation by the written protocol straight from render shards, and its bad input: a table with both
baselines and LPIPS (or the stated reason), one line and exit 2 for what cannot be evaluated."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference.pipeline import export_model
from invs import shards
from invs.models import build_tiny_components
from invs.standins import standin_spec
from tests.helpers import local_env, render_real_objects

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def renders(real_objects: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return render_real_objects(real_objects, ("SpotCow.glb", "BoxTextured.glb"), tmp_path_factory, samples=16)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    parts = build_tiny_components(seed=0)
    folder = str(tmp_path_factory.mktemp("model") / "model")
    export_model(parts, parts["unet"], None, standin_spec(32), folder)
    return folder


def evaluate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "inference/evaluate.py"), "--steps", "2", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=local_env(),
    )


def test_the_protocol_on_render_shards_gives_the_table_with_baselines(
    renders: str, model_dir: str, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    proc = evaluate("--model", model_dir, "--renders", renders, "--out", str(out), "--views-per-object", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "protocol" and summary["pairs"] == 4 and summary["objects_count"] == 2
    assert summary["protocol"] == {"views_per_object": 2, "depth": "gt", "half_angle_deg": 45.0}
    for method in ("model", "partial view alone", "source view copied", "VAE round trip, known pixels kept"):
        for metric in ("psnr", "ssim"):
            entry = summary["methods"][method][metric]
            assert entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1]
    assert summary["lpips"] is None and "not found at" in summary["lpips_unavailable"]  # no weights on this machine
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["key"] for r in rows} == {shards.pair_key(k, 0, j) for k in ("SpotCow", "BoxTextured") for j in (1, 2)}
    assert "| source view copied |" in (out / "results.md").read_text()
    assert "LPIPS: not computed" in proc.stdout


def test_protocol_pairs_match_what_the_preprocess_stage_builds(renders: str) -> None:
    """The same source view, depth and target camera give the partial view and mask of the training data."""
    from inference.protocol import protocol_pairs
    from invs.config import load_config
    from invs.pair_builder import pair_to_tensors
    from invs.tables import rendered_shards
    from preprocess.object_pairs import object_pairs

    config = load_config("local", {"preprocess.resolution": 32, "preprocess.pairs_per_object": 12})
    (sample,) = [s for s in shards.iter_render_samples(rendered_shards(renders)) if s.key == "SpotCow"]
    made = object_pairs(sample, config, "x", None, "cpu", None)
    stage = {key: pair_to_tensors(shards.decode_pair_sample(key, m), 32) for key, m in made.pairs}
    ours = {key: t for key, _, t in protocol_pairs(renders, standin_spec(32), views_per_object=3) if key in stage}
    assert ours, f"no protocol pair among the stage's pairs {sorted(stage)}"
    for key, t in ours.items():
        for name in ("source", "target", "partial", "mask"):
            assert torch.allclose(t[name], stage[key][name], atol=1 / 127), (key, name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--renders", "{tmp}/nothing"], "no rendered objects under"),
        (["--data", "{tmp}/nothing"], "no pair index at"),
        (["--model", "{tmp}", "--renders", "{renders}"], "not an exported iNVS model"),
    ],
)
def test_what_cannot_be_evaluated_is_one_line(
    renders: str, model_dir: str, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "eval"
    filled = [a.format(tmp=tmp_path, renders=renders) for a in args]
    if "--model" not in filled:
        filled = ["--model", model_dir, *filled]
    proc = evaluate(*filled, "--out", str(out))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (out / "summary.json").exists()
