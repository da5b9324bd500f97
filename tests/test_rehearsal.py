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
@pytest.mark.parametrize(
    "half",
    # On S3 by default (the paper's storage; ~3.5 min); on local disk, whose paths the demo and the train tests
    # cover by default, in `make test-all` and `make rehearsal`.
    ["s3", pytest.param("local", marks=pytest.mark.slow)],
)
def test_the_paper_preset_runs_end_to_end(tmp_path: Path, half: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "infra.rehearsal", "--out", str(tmp_path), "--only", half],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=REPO,
        env=local_env(),
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert out.rstrip().endswith("checks passed, 0 failed"), out[-3000:]
    assert f"[{half}] FAIL" not in out
    for check in ("train: bf16 autocast", "train: every batch used them", "train: resumed from step 3"):
        assert f"[{half}] ok   {check}" in out
    # What the stages printed: the paper preset's paths, not the demo's.
    assert out.count("train: stored latents: used (made by this run's VAE") == 2  # the first run, the resumed one
    assert "bf16 autocast with float32 weights" in out and "(depth: zoedepth " in out and "; on cpu;" in out
    table = out.split("means over pairs:")[-1]
    for row in ("model, known pixels kept", "partial view alone", "source view copied", "VAE round trip (ceiling)"):
        assert row in table
    if half == "s3":
        assert "s3://rehearsal/" in out and "[evaluate] no held-out pairs" in out  # preprocess.val_fraction=0
    else:
        assert "held-out (4 pairs)" in out  # BoxTextured
        facts = json.loads((tmp_path / "local" / "train" / "logs" / "worker.json").read_text())
        assert facts["precision"] == "bfloat16" and facts["validations"] == [6] and facts["started_at_step"] == 3
        assert Image.open(tmp_path / "local" / "eval" / "predictions.png").size[0] > 100
    assert Image.open(tmp_path / half / "views" / "grid.png").size[0] > 100
