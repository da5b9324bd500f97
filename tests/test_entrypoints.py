"""The stage entry points run as plain scripts (as `ray submit` / `ray job submit` call them) and fail cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ["render/main.py", "preprocess/main.py", "train/run.py", "inference/infer.py"]


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_runs_from_any_directory(script: str, tmp_path: Path) -> None:
    proc = run_script(script, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--config", "--address", "--out", "--set"):
        assert flag in proc.stdout


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("render/main.py", ["--set", "render.veiws=3"], "did you mean 'render.views'"),
        ("render/main.py", ["--config", "no-such-preset"], "config 'no-such-preset' not found"),
        ("preprocess/main.py", ["--set", "preprocess.resolution=big"], "preprocess.resolution: expected int"),
        ("train/run.py", ["--out", "gs://bucket/x"], "unsupported location"),
        ("train/run.py", ["--set", "storage.s3_endpoint=3"], "storage.s3_endpoint: expected str"),
    ],
)
def test_bad_configuration_is_one_error_line_and_exit_2(
    script: str, args: list[str], message: str, tmp_path: Path
) -> None:
    proc = run_script(script, *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr


def test_bad_yaml_file_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("render: [unclosed\n")
    proc = run_script("render/main.py", "--config", str(bad), cwd=tmp_path)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.s3
@pytest.mark.parametrize(
    ("env_change", "out", "message"),
    [
        ({}, "s3://no-such-bucket-xyz/renders", "render.out: cannot write"),
        ({"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, None, "access denied"),
    ],
)
def test_unwritable_outputs_fail_before_any_work(
    s3_bucket: str, env_change: dict[str, str], out: str | None, message: str, tmp_path: Path
) -> None:
    env = {**os.environ, **env_change}
    proc = subprocess.run(
        [sys.executable, str(REPO / "render/main.py"), "--out", out or f"{s3_bucket}/renders"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "wrong-secret" not in proc.stderr
