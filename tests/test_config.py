"""Typed configuration: presets, inheritance, overrides, and one-line errors for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from invs import config as cfg
from invs import storage
from invs.errors import ConfigError


def test_presets_load_and_differ_where_they_should() -> None:
    local = cfg.load_config("local")
    paper = cfg.load_config("paper")
    z123 = cfg.load_config("zero123")
    assert local.render.objects == "samples" and local.train.tiny and local.ray.address is None
    assert paper.render.objects == "objaverse" and paper.render.resolution == 512 and not paper.train.tiny
    assert paper.preprocess.depth == "zoedepth" and paper.ray.address == "auto"
    # paper.yaml is based on local.yaml: what it does not set is inherited.
    assert paper.render.engine == local.render.engine == "cycles"
    # The demo's recipe (a tiny model from scratch) does not leak into the paper's fine-tuning of SD 2 inpainting.
    assert local.train.prediction_type == "v_prediction" and paper.train.prediction_type == "scheduler"
    assert paper.train.timesteps == "cubic" and paper.train.tiny_vae_fit_steps == 0
    assert z123.camera.radius_range == (1.5, 2.2) and z123.render == local.render
    assert isinstance(local.camera.radius_range, tuple) and isinstance(local.camera.lens_mm, float)


def test_defaults_without_a_file() -> None:
    assert cfg.load_config(None) == cfg.Config()


def test_overrides_parse_values_as_yaml() -> None:
    c = cfg.load_config(
        "local",
        [
            "render.views=24",
            "camera.radius_range=[2.0, 3]",
            "render.num_objects=null",
            "train.use_gpu=true",
            "storage.s3_endpoint=http://127.0.0.1:8333",
        ],
    )
    assert c.render.views == 24 and c.camera.radius_range == (2.0, 3.0) and c.render.num_objects is None
    assert c.train.use_gpu is True and c.storage.s3_endpoint == "http://127.0.0.1:8333"
    assert cfg.load_config("local", {"render.views": 3}).render.views == 3
    # YAML 1.1 reads exponent floats without a dot as strings; float settings accept them.
    assert cfg.load_config("local", ["train.learning_rate=2e-3"]).train.learning_rate == 0.002


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["render.veiws=3"], "unknown setting 'render.veiws' (did you mean 'render.views'?)"),
        (["rendr.views=3"], "unknown setting 'rendr'"),
        (["render.views=many"], "render.views: expected int, got 'many'"),
        (["render.views=2.5"], "render.views: expected int"),
        (["train.learning_rate=fast"], "train.learning_rate: expected float, got 'fast'"),
        (["render.views=true"], "render.views: expected int"),
        (["render.engine=blender"], "render.engine: expected 'cycles' | 'eevee'"),
        (["camera.radius_range=[1, 2, 3]"], "camera.radius_range: expected [float, float]"),
        (["train.tiny=yes please"], "train.tiny: expected bool"),
        (["render=3"], "render: expected a mapping"),
        (["views"], "expected section.key=value"),
        (["render..views=3"], "expected section.key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.load_config("local", overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("render:\n  views: [1, 2\n", "not valid YAML at line"),
        ("- a\n- b\n", "must be a mapping of sections"),
        ("render:\n  colour: red\n", "unknown setting 'render.colour'"),
        ("base: nowhere\n", "config 'nowhere' not found"),
        ("base: 3\n", "'base' must be a preset name"),
        ("render:\n  views: twelve\n", "render.views: expected int"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        cfg.load_config(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="binary.yaml: cannot read config"):
        cfg.load_config(binary)
    with pytest.raises(ConfigError, match="not found .*presets: local, paper, zero123"):
        cfg.load_config(tmp_path / "missing.yaml")


def test_base_chains_resolve_relative_to_the_file_and_detect_loops(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: local\nrender:\n  views: 5\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nrender:\n  resolution: 64\n")
    c = cfg.load_config(tmp_path / "b.yaml")
    assert (c.render.views, c.render.resolution, c.render.objects) == (5, 64, "samples")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        cfg.load_config(tmp_path / "loop.yaml")


def test_resolved_config_is_saved_and_reloads_identically(tmp_path: Path) -> None:
    c = cfg.load_config("paper", ["render.views=7"])
    uri = cfg.save_resolved(c, str(tmp_path / "out"))
    assert uri == str(tmp_path / "out" / "config.yaml")
    assert cfg.load_config(uri) == c
    assert "views: 7" in storage.read_text(uri)
