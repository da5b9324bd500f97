"""Quality flags: each rule on arrays that have the fault, then on generated model files through the render
stage (manifest and meta.json), and preprocessing that skips objects by flag and counts them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from invs import quality, shards, storage, tables
from tests.helpers import REPO


def view(size: int = 64, box: tuple[int, int, int, int] | None = (16, 48, 16, 48), noise: float = 20.0) -> np.ndarray:
    """An RGBA view with an opaque, noisy object over rows/columns ``box`` (top, bottom, left, right)."""
    rgba = np.zeros((size, size, 4), np.uint8)
    if box is not None:
        t, b, left, r = box
        rng = np.random.default_rng(0)
        rgba[t:b, left:r, :3] = np.clip(128 + rng.normal(0, noise, (b - t, r - left, 3)), 0, 255).astype(np.uint8)
        rgba[t:b, left:r, 3] = 255
    return rgba


@pytest.mark.parametrize(
    ("rgba", "flags"),
    [
        (view(), []),
        (view(box=None), ["empty"]),
        (view(box=(30, 36, 30, 36)), ["nearly_empty", "too_small"]),  # 36 px of 4096: 0.9%; 6 px of 64: 9%
        (view(box=(20, 60, 31, 33)), []),  # thin (3% of pixels) but 62% of the frame tall: not small, not empty
        (view(box=(0, 40, 10, 50)), ["cropped"]),
        (view(noise=1.0), ["constant_color"]),
    ],
    ids=["fine", "empty", "speck", "thin", "cropped", "constant"],
)
def test_each_view_rule_fires_on_its_fault_only(rgba: np.ndarray, flags: list[str]) -> None:
    assert quality.view_flags(rgba) == flags


def test_object_flags_take_view_flags_held_by_half_the_views() -> None:
    per_view = [["cropped"], ["cropped", "too_small"], [], []]
    assert quality.object_flags(per_view, missing_textures=0, meshes_without_material=0) == ["cropped"]
    assert quality.object_flags(per_view[2:], 2, 1) == ["missing_texture", "no_material"]
    with pytest.raises(ValueError, match="unknown quality flag 'blurry'"):
        quality.check(["cropped", "blurry"])


def test_generated_faults_are_flagged_in_the_manifest_and_meta(flagged_renders: tuple[str, dict]) -> None:
    out, expected = flagged_renders
    rows = tables.latest_by_uid(tables.read_table(storage.join(out, "manifest"), tables.MANIFEST_SCHEMA))
    assert {u: r["flags"] for u, r in rows.items() if u in expected} == expected
    assert rows["ghost"]["status"] == "failed" and rows["ghost"]["error"].startswith("empty render")
    assert rows["BoxTextured"]["flags"] == [] and rows["SpotCow"]["flags"] == []
    # provenance: what the file is, as a parquet column anyone can filter on
    box = rows["BoxTextured"]
    assert box["file_bytes"] == (REPO / "tests/assets/objects/BoxTextured.glb").stat().st_size
    assert (box["triangles"], box["materials"], box["textures"]) == (12, 1, 1)
    assert rows["no_material"]["materials"] == 0 and rows["missing_texture"]["textures"] == 1
    assert rows["speck"]["materials"] == 2 and rows["ghost"]["file_bytes"] > 0
    metas = {s.meta["uid"]: s.meta for s in shards.iter_render_samples(shards.list_shards(out))}
    assert metas["speck"]["flags"] == expected["speck"]
    assert all("too_small" in v["flags"] for v in metas["speck"]["views"])
    assert metas["unlit"]["contents"]["meshes_without_material"] == 0


def test_preprocessing_skips_flagged_objects_and_counts_them(flagged_pairs: tuple[str, str]) -> None:
    out, stdout = flagged_pairs  # skip_flags: no_material, too_small, constant_color
    summary = json.loads(storage.read_text(f"{out}/summary.json"))
    assert summary["objects_skipped_by_flag"] == {"no_material": 1, "too_small": 1, "constant_color": 1}
    assert "skipped by flag: 1 constant_color, 1 no_material, 1 too_small" in stdout
    uids = {r["uid"] for r in tables.read_table(storage.join(out, "index"), tables.INDEX_SCHEMA).to_pylist()}
    assert uids == {"BoxTextured", "SpotCow", "missing_texture"}


def test_an_unknown_skip_flag_is_one_line(tmp_path: Path) -> None:
    command = [sys.executable, str(REPO / "preprocess/main.py"), "--renders", str(tmp_path), "--out", str(tmp_path)]
    proc = subprocess.run(
        [*command, "--set", "preprocess.skip_flags=[blurry]"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "preprocess.skip_flags: unknown quality flag 'blurry'" in last, last
