"""`make rehearsal`: the paper preset end to end on this machine, on local disk and on the local S3 server, with
stand-in weights (infra/rehearsal.py checks what every stage did and exits non-zero when a check fails)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import local_env

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.blender
@pytest.mark.ray
@pytest.mark.s3
def test_the_paper_preset_runs_end_to_end_on_disk_and_on_s3(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "infra.rehearsal", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=REPO,
        env=local_env(),
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert out.rstrip().endswith("checks passed, 0 failed"), out[-3000:]
    for half in ("local", "s3"):
        for check in ("train: bf16 autocast", "train: every batch used them", "export: vae/ bit-identical"):
            assert f"[{half}] ok   {check}" in out
    assert "[local] ok   train: resumed from step 3" in out and "[s3] ok   train: resumed from step 3" in out
    # What the stages printed: the paper preset's paths, not the demo's.
    assert out.count("train: stored latents: used (made by this run's VAE") == 4  # two runs on disk, two on S3
    assert "bf16 autocast with float32 weights" in out and "(depth: zoedepth)" in out
    assert "[evaluate] no held-out pairs" in out and "held-out (" in out  # S3 half: val_fraction 0; local: BoxTextured
    assert "s3://rehearsal/" in out
    facts = json.loads((tmp_path / "local" / "train" / "logs" / "worker.json").read_text())
    assert facts["precision"] == "bfloat16" and facts["validations"] == [6] and facts["started_at_step"] == 3
    for picture in ("local/pairs.png", "local/eval/predictions.png", "s3/views/grid.png"):
        assert Image.open(tmp_path / picture).size[0] > 100, picture
