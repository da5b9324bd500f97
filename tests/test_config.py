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
        (["render.views=0"], "render.views must be >= 1, got 0"),
        (["render.timeout_s=0"], "render.timeout_s must be > 0, got 0.0"),
        (["preprocess.val_fraction=1"], "preprocess.val_fraction must be [0, 1), got 1.0"),
        (["preprocess.min_angle_deg=130"], "preprocess.min_angle_deg must be <= preprocess.max_angle_deg"),
        (["camera.radius_range=[2.6, 2.2]"], "camera.radius_range must be [low, high]"),
        (["camera.radius_range=[0, 2.2]"], "camera.radius_range must be > 0"),
        (["camera.elevation_range_deg=[-95, 60]"], "camera.elevation_range_deg must be [-90, 90]"),
        (["train.ema_decay=1"], "train.ema_decay must be [0, 1), got 1.0"),
        (["train.vae_scaling_factor=-1"], "train.vae_scaling_factor must be > 0"),
        (["train.tiny_unet_levels=5"], "train.tiny_unet_levels must be [2, 4]"),
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
    with pytest.raises(ConfigError, match="not found .*presets: local, paper, rehearsal, zero123"):
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


def test_every_range_names_a_numeric_setting_and_every_preset_is_in_range() -> None:
    import typing

    for key in cfg.RANGES:
        section, name = key.split(".")
        hint = str(typing.get_type_hints(type(getattr(cfg.Config(), section)))[name])
        assert "int" in hint or "float" in hint, key
    for preset in cfg.CONFIG_DIR.glob("*.yaml"):
        cfg.check_ranges(cfg.load_config(preset))
    cfg.check_ranges(cfg.Config())


def test_stage_flags_come_from_the_config_fields(tmp_path: Path) -> None:
    from invs import cli

    parser = cli.stage_parser("x", "x")
    flags = cli.add_settings(
        parser,
        "render",
        {
            "views": "views",
            "engine": "",
            "denoise": "",
            "timeout_s": ("timeout", "seconds"),
            "num_objects": "",
        },
    )
    flags |= cli.add_settings(parser, "objaverse", {"lvis_categories": ("lvis", "repeatable")})
    args = parser.parse_args(
        ["--views", "3", "--engine", "eevee", "--no-denoise", "--timeout", "2", "--lvis", "a", "--lvis", "b"]
    )
    config = cli.resolve_config(args, flags)
    r, lvis = config.render, config.objaverse.lvis_categories
    assert (r.views, r.engine, r.denoise, r.timeout_s, lvis) == (3, "eevee", False, 2.0, ["a", "b"])
    assert r.num_objects == cfg.load_config("local").render.num_objects  # a flag not given changes nothing
    with pytest.raises(SystemExit):
        parser.parse_args(["--engine", "blender"])  # choices from the Literal
    with pytest.raises(KeyError, match="render.colour is not a setting"):
        cli.add_settings(cli.stage_parser("y", "y"), "render", {"colour": ""})
    with pytest.raises(ConfigError, match="render.views must be >= 1"):
        cli.resolve_config(parser.parse_args(["--views", "0"]), flags)


def test_settings_that_moved_or_were_renamed_are_still_read() -> None:
    """Files and --set written for the earlier layout keep working: the Objaverse settings moved from render to
    their own section, train.use_gpu became train.device, and cuda is read as gpu."""
    old = cfg.load_config(
        "local",
        [
            "render.objaverse_store=s3://b/objaverse",
            "render.lvis_categories=[chair]",
            "render.download_attempts=2",
            "train.use_gpu=true",
            "preprocess.device=cuda",
        ],
    )
    assert (old.objaverse.store, old.objaverse.lvis_categories, old.objaverse.download_attempts) == (
        "s3://b/objaverse",
        ["chair"],
        2,
    )
    assert old.train.device == "gpu" and old.preprocess.device == "gpu"
    assert not hasattr(old.render, "objaverse_store")
    with pytest.raises(ConfigError, match="^a --set override or flag: objaverse.download_attempts must be >= 1"):
        cfg.load_config("local", ["render.download_attempts=0"])
