"""Progress of long jobs: log lines off a terminal (what a cluster's logs show), with counts, note, rate and ETA."""

from __future__ import annotations

import pytest

from invs.progress import Progress


def test_log_lines_carry_counts_note_rate_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress("train", 10, "steps", interval_s=3600.0, start=4)
    progress.update(5, "loss 0.5")  # first line at once, then not again within the interval
    progress.update(6, "loss 0.4")
    progress.update(10, "loss 0.3")  # the last one always
    progress.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("train: 5/10 steps (loss 0.5), ") and "steps/s, ETA " in lines[0]
    assert lines[1].startswith("train: 10/10 steps (loss 0.3), ") and lines[1].endswith("ETA 0.0 min")
    assert progress.rate() > 0  # 6 steps since it started at step 4


def test_hourly_rates_for_slow_units(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress("render", 3, "objects", rate_per="h", interval_s=0.0)
    progress.update(3, "3 ok, 0 failed")
    line = capsys.readouterr().out.strip()
    assert line.startswith("render: 3/3 objects (3 ok, 0 failed), ") and "objects/h" in line
    with pytest.raises(ValueError, match="rate_per"):
        Progress("x", 1, "u", rate_per="min")
