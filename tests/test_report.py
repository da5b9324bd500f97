"""The dataset report: built from a render output and its pairs as a user runs it, opened in a real headless
browser, which must load it without errors and with every image."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.browser import load
from tests.helpers import REPO


def report(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(REPO / "render/report.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)


def test_the_report_loads_in_a_browser_with_every_image_and_says_what_went_wrong(
    flagged_renders: tuple[str, dict], flagged_pairs: tuple[str, str], tmp_path: Path
) -> None:
    renders = flagged_renders[0]
    out = tmp_path / "report"
    proc = report("--renders", renders, "--pairs", flagged_pairs[0], "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = out / "index.html"
    text = page.read_text()
    # counts, the failure reason and each flag's row, per-object passes, the preprocess figures
    assert re.search(r"<td>empty render</td><td class=\"n\">1</td><td>ghost</td>", text)
    for flag in ("no_material", "missing_texture", "constant_color", "too_small"):
        assert re.search(rf"<td>{flag}</td><td class=\"n\">1</td>", text), flag
    for kind in ("rgba", "depth", "normal", "albedo"):
        assert (out / "img" / f"BoxTextured-{kind}.png").is_file()
    assert "psnr_partial" in text and "objects skipped by flag" in text and text.count("<svg") >= 5
    glbs = re.search(r"<td>local</td><td>glb</td><td>none given</td><td class=\"n\">(\d+)</td>", text)
    assert glbs and int(glbs.group(1)) >= 2  # provenance: BoxTextured and SpotCow at least
    images = text.count("<img ")
    assert images >= 6 * 4 + 4 * 4  # six objects' passes and some pairs

    shown = load(page, screenshot=tmp_path / "report.png")
    assert shown.console_errors == []
    assert shown.body == {"data-images": str(images), "data-broken-images": "0"}

    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(page, moved / "index.html")  # without its img/ folder: the page itself says so
    assert load(moved / "index.html").body["data-broken-images"] == str(images)


def test_a_folder_that_is_not_a_render_output_is_one_line(tmp_path: Path) -> None:
    proc = report("--renders", str(tmp_path / "nothing"), "--out", str(tmp_path / "report"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no render manifest under")
    assert not (tmp_path / "report").exists()
