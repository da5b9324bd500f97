"""inference/infer.py: novel views from one image. Cameras as the renders' relative poses, the object cut out and framed
as the renders frame it, the preprocess stage's partial view and mask for a rendered pair, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from inference.infer import Move, camera_moves, source_pose, target_pose
from invs import cameras, shards
from invs.config import load_config
from invs.errors import InvsError
from invs.images import frame_object, object_bbox, plain_background_alpha
from tests.helpers import blender_request

REPO = Path(__file__).resolve().parent.parent
RES = 32


def run_infer(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "inference/infer.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def export_tiny(folder: Path, resolution: int) -> Path:
    from inference.pipeline import export_model
    from invs.models import build_tiny_components
    from invs.standins import standin_spec

    parts = build_tiny_components(seed=0)
    export_model(parts, parts["unet"], None, standin_spec(resolution), str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("model") / "model", RES)


@pytest.fixture(scope="module")
def tiny_zoedepth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random ZoeDepth saved as a local model directory (the real loading path)."""
    from invs.depth import DepthEstimator, tiny_zoedepth_config

    folder = tmp_path_factory.mktemp("zoedepth")
    tiny = DepthEstimator.from_config(tiny_zoedepth_config(), input_size=(64, 64), seed=0)
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    return folder


def object_on_plain_background(path: Path, size: tuple[int, int] = (120, 90)) -> Path:
    """An RGB picture: a red box with a grey window (the background's colour, enclosed) on a grey background."""
    image = Image.new("RGB", size, (200, 200, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 30, 59, 69), fill=(200, 30, 30))  # 40 x 40, off-centre
    draw.rectangle((35, 45, 44, 54), fill=(200, 200, 200))
    image.save(path)
    return path


# ------------------------------------------------------------------------------------------------ cameras


def test_moves_pair_by_position_and_a_flag_given_once_applies_to_all() -> None:
    assert camera_moves([30, -30], [10], []) == [Move("view_00", 30, 10, 0), Move("view_01", -30, 10, 0)]
    assert camera_moves([], [], [0.2]) == [Move("view_00", 0, 0, 0.2)]
    assert camera_moves([], [], []) == []
    with pytest.raises(InvsError, match="paired by position: got 2 --azimuth, 3 --elevation"):
        camera_moves([1, 2], [1, 2, 3], [])


def test_a_move_reproduces_the_relative_pose_of_two_render_cameras() -> None:
    """The source at azimuth 0 and the move as Zero-1-to-3's offsets give the renders' relative pose exactly."""
    rng = np.random.default_rng(0)
    for src, tgt in zip(*(cameras.sample_cameras(20, rng, (2.2, 2.6), (-20, 60)) for _ in range(2)), strict=True):
        move = Move(
            "m", tgt.azimuth_deg - src.azimuth_deg, tgt.elevation_deg - src.elevation_deg, tgt.radius - src.radius
        )
        ours = cameras.relative_pose(
            source_pose(src.elevation_deg, src.radius), target_pose(move, src.elevation_deg, src.radius)
        )
        np.testing.assert_allclose(ours, cameras.relative_pose(src.c2w(), tgt.c2w()), atol=1e-12)


def test_positive_azimuth_moves_the_camera_right_and_positive_elevation_up() -> None:
    src = source_pose(0.0, 2.4)
    for move, axis, sign in ((Move("a", 20, 0, 0), 0, 1), (Move("e", 0, 20, 0), 1, -1)):  # OpenCV: y is down
        centre = cameras.invert_rigid(src) @ np.append(cameras.camera_center(target_pose(move, 0.0, 2.4)), 1.0)
        assert np.sign(centre[axis]) == sign


# ------------------------------------------------------------------------------------------------ the object


def test_a_plain_background_is_cut_away_but_enclosed_background_colour_stays_object(tmp_path: Path) -> None:
    rgb = np.asarray(Image.open(object_on_plain_background(tmp_path / "a.png"))).copy()
    noise = np.random.default_rng(0).integers(-6, 7, rgb.shape)
    alpha = plain_background_alpha(np.clip(rgb.astype(int) + noise, 0, 255).astype(np.uint8))
    expected = np.zeros(rgb.shape[:2], np.uint8)
    expected[30:70, 20:60] = 255  # the box, window included
    assert np.array_equal(alpha, expected)


def test_a_busy_border_cannot_be_cut() -> None:
    busy = np.random.default_rng(0).integers(0, 256, (40, 50, 3)).astype(np.uint8)
    with pytest.raises(ValueError, match="not one plain colour"):
        plain_background_alpha(busy)


def test_framing_centres_the_object_box_at_the_fraction_of_the_frame() -> None:
    rgba = np.zeros((90, 120, 4), np.uint8)
    rgba[30:70, 20:50] = (255, 0, 0, 255)  # 30 wide, 40 high, off-centre
    framed = frame_object(rgba, 64, 0.5)
    x0, y0, x1, y1 = object_bbox(framed[..., 3])
    assert (x0 + x1) / 2 == pytest.approx(32, abs=1) and (y0 + y1) / 2 == pytest.approx(32, abs=1)
    assert y1 - y0 == pytest.approx(32, abs=1) and x1 - x0 == pytest.approx(24, abs=1)


# ------------------------------------------------------------------------------------------------ the command


def test_an_rgb_picture_with_zoedepth_gives_views_a_turntable_and_the_same_views_in_any_batch(
    tiny_model: Path, tiny_zoedepth: Path, tmp_path: Path
) -> None:
    image = object_on_plain_background(tmp_path / "box.png")
    common = ["--model", str(tiny_model), "--image", str(image), "--depth-model", str(tiny_zoedepth), "--steps", "2"]
    moves = ["--azimuth", "30", "--azimuth", "-30", "--elevation", "10", "--turntable", "4"]
    proc = run_infer(*common, *moves, "--batch-size", "4", "--save-intermediates", "--out", "a", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "note: turntable.mp4 skipped" in proc.stdout or (tmp_path / "a/box/turntable.mp4").is_file()
    folder = tmp_path / "a" / "box"
    for name in ("source", "view_00", "view_01"):
        assert Image.open(folder / f"{name}.png").size == (RES, RES)
    with Image.open(folder / "turntable.gif") as gif:
        assert gif.n_frames == 4
    source = np.asarray(Image.open(folder / "source.png"))
    x0, y0, x1, y1 = object_bbox(np.where((source < 250).any(-1), 255, 0).astype(np.uint8))
    record = json.loads((folder / "views.json").read_text())
    fraction = record["framing_fraction"]
    assert record["reframed"] and max(x1 - x0, y1 - y0) == pytest.approx(fraction * RES, abs=1.5)
    assert [v["azimuth_offset_deg"] for v in record["views"]] == [30, -30, 0, 90, 180, 270]
    depth = np.load(folder / "intermediates" / "depth.npy")
    radius = float(np.mean(load_config("local").camera.radius_range))
    assert float(np.median(depth[depth > 0])) == pytest.approx(radius, rel=0.02)  # align_to_distance's prior
    assert record["source"]["radius"] == radius and record["depth"]["zoedepth"] == str(tiny_zoedepth)
    assert (tmp_path / "a" / "grid.png").is_file()

    one = run_infer(*common, *moves, "--batch-size", "1", "--out", "b", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    for name in ("view_00", "view_01"):  # equal up to the network's float rounding at another batch size
        a = np.asarray(Image.open(folder / f"{name}.png")).astype(int)
        b = np.asarray(Image.open(tmp_path / f"b/box/{name}.png")).astype(int)
        assert np.abs(a - b).max() <= 1 and float((a != b).mean()) < 0.005


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("random_bytes", "cannot read the image"),
        ("no_object", "shows no object"),
        ("depth_shape", "it must hold one planar depth per pixel of its image: shape (48, 48)"),
        ("not_a_model", "is not an exported iNVS model"),
        ("broken_model", "is not an exported iNVS model"),
        ("no_depth_weights", "cannot load the ZoeDepth model"),
    ],
)
def test_bad_input_is_one_error_line_exit_2_and_nothing_written(
    case: str, message: str, tiny_model: Path, tmp_path: Path
) -> None:
    image, model, extra = tmp_path / "in.png", tiny_model, []
    rgba = np.zeros((48, 48, 4), np.uint8)
    rgba[10:30, 12:36] = (200, 0, 0, 255)
    Image.fromarray(rgba).save(image)
    if case == "random_bytes":
        image.write_bytes(np.random.default_rng(0).bytes(5000))
    elif case == "no_object":
        Image.new("RGB", (48, 48), "white").save(image)
    elif case == "depth_shape":
        np.save(tmp_path / "d.npy", np.ones((48, 40), np.float32))
        extra = ["--depth", str(tmp_path / "d.npy")]
    elif case == "no_depth_weights":
        extra = ["--depth-model", str(tmp_path / "no-such-zoedepth")]
    elif case == "not_a_model":
        model = tmp_path / "empty"
        model.mkdir()
    elif case == "broken_model":
        model = tmp_path / "broken"
        model.mkdir()
        (model / "invs.json").write_text(json.dumps({"conditioning": "empty_prompt", "resolution": RES}))
    out = tmp_path / "out"
    proc = run_infer(
        "--model", str(model), "--image", str(image), "--out", str(out), "--azimuth", "30", *extra, cwd=tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ one geometry


@pytest.mark.blender
def test_a_rendered_pair_gives_the_preprocess_stages_partial_view_and_mask(real_objects: Path, tmp_path: Path) -> None:
    """A rendered view with its depth file and the exact relative camera of another rendered view: infer's partial
    view and mask are the pair's as the preprocess stage writes it. Two moves and a turntable of 8 come out too."""
    from preprocess.object_pairs import object_pairs
    from render.blender_process import BlenderProcess

    res = 64
    specs = cameras.sample_object_cameras("SpotCow", 3, 3, (2.2, 2.6), (-20.0, 60.0))
    request = blender_request(
        real_objects / "SpotCow.glb", tmp_path / "render", specs, res, samples=8, light_seed=0, depth_dtype="float32"
    )
    with BlenderProcess(threads=2, log_dir=str(tmp_path / "logs")) as bp:
        result = bp.render(request, timeout_s=300)
    assert result["ok"], result
    rgba = [np.asarray(Image.open(tmp_path / "render" / f"rgba_{i:03d}.png")) for i in range(3)]
    depth = [np.load(tmp_path / "render" / f"depth_{i:03d}.npy") for i in range(3)]
    sample = shards.RenderSample("SpotCow", {"uid": "SpotCow", "views": result["views"]}, rgba, depth)
    config = load_config("local", {"preprocess.resolution": res, "preprocess.min_angle_deg": 10.0})
    made = object_pairs(sample, config, "test")
    key, members = made.pairs[0]
    pair = shards.decode_pair_sample(key, members)
    i, j = pair.meta["src"], pair.meta["tgt"]
    src, tgt = result["views"][i], result["views"][j]
    model = export_tiny(tmp_path / "model", res)
    moves = [
        *("--azimuth", str(tgt["azimuth_deg"] - src["azimuth_deg"]), "--azimuth", "45"),
        *("--elevation", str(tgt["elevation_deg"] - src["elevation_deg"]), "--elevation", "0"),
        *("--radius", str(tgt["radius"] - src["radius"]), "--radius", "0"),
    ]
    proc = run_infer(
        *("--model", str(model), "--image", str(tmp_path / "render" / f"rgba_{i:03d}.png")),
        *("--depth", str(tmp_path / "render" / f"depth_{i:03d}.npy")),
        *("--source-radius", str(src["radius"]), "--source-elevation", str(src["elevation_deg"])),
        *moves,
        *("--turntable", "8", "--steps", "2", "--save-intermediates", "--out", "out"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "out" / f"rgba_{i:03d}"
    partial = np.asarray(Image.open(folder / "intermediates" / "view_00_partial.png"))
    mask = np.asarray(Image.open(folder / "intermediates" / "view_00_mask.png"))
    assert pair.visible.mean() > 0.02 and (pair.mask == 255).mean() > 0.01, "the pair must show something"
    assert np.array_equal(np.asarray(Image.open(folder / "source.png")), pair.source)
    assert np.array_equal(partial, pair.partial) and np.array_equal(mask, pair.mask)
    for name in ("view_00", "view_01"):
        assert Image.open(folder / f"{name}.png").size == (res, res)
    with Image.open(folder / "turntable.gif") as gif:
        assert gif.n_frames == 8


def test_the_model_not_the_config_decides_how_inputs_are_built(
    tiny_model: Path, tiny_zoedepth: Path, tmp_path: Path
) -> None:
    """The same model and image give identical views under the demo preset and under one whose cameras, lens and
    mask angle differ: the geometry comes from the model's spec. A flag overrides one value, and says so."""
    from inference.infer import read_spec

    image = object_on_plain_background(tmp_path / "box.png")
    common = ["--model", str(tiny_model), "--image", str(image), "--depth-model", str(tiny_zoedepth), "--steps", "2"]
    common += ["--azimuth", "40", "--elevation", "15", "--save-intermediates"]
    other = ["--config", "zero123", "--set", "camera.lens_mm=50", "--set", "preprocess.mask_half_angle_deg=30"]
    runs = {
        "local": run_infer(*common, "--config", "local", "--out", "local", cwd=tmp_path),
        "other": run_infer(*common, *other, "--out", "other", cwd=tmp_path),
        "flag": run_infer(*common, "--mask-half-angle", "30", "--out", "flag", cwd=tmp_path),
    }
    for proc in runs.values():
        assert proc.returncode == 0, proc.stderr
    spec = read_spec(str(tiny_model))
    assert spec.mask.half_angle_deg == 45.0 and spec.camera.lens_mm == 35.0  # what the model was built with
    for name in ("view_00.png", "intermediates/view_00_mask.png", "intermediates/view_00_partial.png"):
        a = (tmp_path / "local/box" / name).read_bytes()
        assert a == (tmp_path / "other/box" / name).read_bytes(), name
    flagged = np.asarray(Image.open(tmp_path / "flag/box/intermediates/view_00_mask.png"))
    assert not np.array_equal(flagged, np.asarray(Image.open(tmp_path / "local/box/intermediates/view_00_mask.png")))
    assert "note: mask.half_angle_deg = 30 overrides the model's 45" in runs["flag"].stdout
    assert "note: mask." not in runs["other"].stdout and "note: camera." not in runs["other"].stdout
    record = json.loads((tmp_path / "other/box/views.json").read_text())
    assert record["spec"]["mask"]["half_angle_deg"] == 45.0 and record["spec"]["camera"]["lens_mm"] == 35.0
