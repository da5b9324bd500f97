"""Procedural objects: the same index gives the same bytes, N indices give N different objects (their bytes and
their renders differ), and ``--objects procedural:N`` names them for the render stage."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invs import cameras
from invs.config import load_config
from invs.errors import InvsError
from render import procedural
from render.sources import resolve_objects
from tests.helpers import blender_request


def test_an_index_gives_the_same_bytes_and_64_indices_give_64_objects() -> None:
    assert procedural.procedural_bytes(7) == procedural.procedural_bytes(7)
    digests = {hashlib.sha256(procedural.procedural_bytes(i)).hexdigest() for i in range(64)}
    assert len(digests) == 64
    assert procedural.uid(42) == "proc_00042" and procedural.index_of("proc_00042") == procedural.index_of("42") == 42
    with pytest.raises(ValueError, match="not a procedural object"):
        procedural.index_of("sample_mug")


def test_the_source_names_a_range_of_objects() -> None:
    refs = resolve_objects(load_config("local", {"render.objects": "procedural:3"}))
    assert [(r.uid, r.uri) for r in refs] == [(f"proc_0000{i}", f"procedural:{i}") for i in range(3)]
    held_out = resolve_objects(load_config("local", {"render.objects": "procedural:1000-1002"}))
    assert [r.uid for r in held_out] == ["proc_01000", "proc_01001"]
    for bad in ("procedural:0", "procedural:5-5", "procedural:x"):
        with pytest.raises(InvsError, match="names no objects"):
            resolve_objects(load_config("local", {"render.objects": bad}))


@pytest.mark.blender
def test_their_renders_differ_and_show_the_object(tmp_path: Path) -> None:
    """Six objects, each seen from the same camera: every pair of renders differs, and each shows its object."""
    from render.blender_process import BlenderProcess

    res, count = 64, 6
    spec = cameras.sample_object_cameras("same", 0, 1, (2.4, 2.4), (20.0, 20.0))
    images = []
    with BlenderProcess(threads=2, log_dir=str(tmp_path / "logs")) as bp:
        for i in range(count):
            model = tmp_path / f"{procedural.uid(i)}.glb"
            model.write_bytes(procedural.procedural_bytes(i))
            result = bp.render(blender_request(model, tmp_path / str(i), spec, res, samples=8), timeout_s=120)
            assert result["ok"], result
            images.append(np.asarray(Image.open(tmp_path / str(i) / "rgba_000.png")).astype(float))
    for image in images:
        assert (image[..., 3] > 0).mean() > 0.05, "the object fills part of the frame"
    for a, b in itertools.combinations(images, 2):
        assert np.abs(a - b).mean() > 5.0, "two objects rendered alike"
