"""The Blender worker on real glTF objects: geometry that pins every convention, and process isolation."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from invs import cameras, passes
from render.blender_process import BlenderError, BlenderProcess
from tests.geometry import normals_from_depth, point_mesh_distance
from tests.helpers import blender_request, export_with_blender, heavy_ply, make_blend, png_header, write_gltf

pytestmark = pytest.mark.blender
RES = 96


def request(model: Path, out_dir: Path, uid: str, views: int = 3, **extra: Any) -> Any:
    """The stage's request for ``views`` views of ``model`` at RES px, 8 samples, float16 depth and the mesh export."""
    specs = cameras.sample_object_cameras(uid, 0, views, (2.2, 2.6), (-20.0, 60.0))
    fields = {"id": uid, "samples": 8, "light_seed": 1, "depth_dtype": "float16", "export_mesh": True}
    return blender_request(model, out_dir, specs, RES, **(fields | extra))


def on_surface(dist: np.ndarray) -> bool:
    """Unprojected depth lies on the mesh: float16 depth at ~2.4 units is good to ~1e-3."""
    return bool(np.median(dist) < 2e-3 and np.percentile(dist, 99) < 6e-3)


@pytest.fixture(scope="module")
def blender(tmp_path_factory: pytest.TempPathFactory) -> BlenderProcess:
    with BlenderProcess(threads=2, log_dir=str(tmp_path_factory.mktemp("logs"))) as bp:
        yield bp


@pytest.mark.parametrize(
    "name", ["SpotCow.glb", "kenney_alien.glb", "Fox.glb", "problem_CornellBox_largescale_offset.glb"]
)
def test_depth_unprojects_onto_the_mesh_and_into_every_other_silhouette(
    blender: BlenderProcess, real_objects: Path, tmp_path: Path, name: str
) -> None:
    result = blender.render(request(real_objects / name, tmp_path, name), timeout_s=120)
    assert result["ok"], result
    mesh = np.load(tmp_path / "mesh.npz")
    V, F = mesh["vertices"], mesh["faces"]
    # Normalisation: largest side exactly 1, centred at the origin.
    extent = V.max(0) - V.min(0)
    assert extent.max() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose((V.max(0) + V.min(0)) / 2, 0.0, atol=1e-5)
    views = result["views"]
    alphas = [np.asarray(Image.open(tmp_path / f"rgba_{i:03d}.png"))[..., 3] for i in range(len(views))]
    rng = np.random.default_rng(0)
    for i, view in enumerate(views):
        K, c2w = np.array(view["K"]), np.array(view["c2w"])
        assert np.allclose(c2w, cameras.blender_to_opencv_c2w(np.array(view["blender_matrix_world"])), atol=1e-6)
        stored = np.load(tmp_path / f"depth_{i:03d}.npy")
        assert stored.dtype == np.float16 and np.all(stored[alphas[i] == 0] == 0)
        depth = stored.astype(np.float64)
        points = cameras.unproject_depth(depth, K, c2w)[depth > 0]
        assert len(points) > 50, "object barely visible"
        sample = points[rng.choice(len(points), min(300, len(points)), replace=False)]
        # 1. On the surface: planar depth, K and c2w agree with Blender's geometry (float16 depth: ~1e-3).
        dist = point_mesh_distance(sample, V, F)
        assert on_surface(dist), (np.median(dist), dist.max())
        # 2. Inside every other view's silhouette (dilated by one pixel for anti-aliased edges).
        for j, other in enumerate(views):
            if j == i:
                continue
            uv, z = cameras.project_points(sample, np.array(other["K"]), np.array(other["c2w"]))
            assert np.all(z > 0)
            inside = (uv[:, 0] >= 0) & (uv[:, 0] < RES) & (uv[:, 1] >= 0) & (uv[:, 1] < RES)
            cols, rows = np.clip(uv[inside].astype(int), 0, RES - 1).T
            mask = alphas[j] > 0
            dilated = mask | np.roll(mask, 1, 0) | np.roll(mask, -1, 0) | np.roll(mask, 1, 1) | np.roll(mask, -1, 1)
            assert dilated[rows, cols].mean() > 0.995
    # Metadata for the manifest.
    assert result["normalization"]["triangles"] > 0
    assert 0 < result["views"][0]["alpha_fraction"] < 1


ALL_PASSES = ["rgba", "depth", "normal", "albedo"]


def test_helpers_the_importer_hides_are_neither_measured_nor_flagged(
    blender: BlenderProcess, real_objects: Path, tmp_path: Path
) -> None:
    """Blender's glTF importer parks the Fox's bone shape (an 80-triangle icosphere without a material) in a
    collection hidden for rendering: it is not drawn, so it counts in no triangle, material or bounding box."""
    result = blender.render(request(real_objects / "Fox.glb", tmp_path, "fox", views=1), timeout_s=120)
    assert result["ok"], result
    assert result["normalization"]["triangles"] == 576  # the fox's own (its glTF accessors)
    assert result["contents"] == {"materials": 1, "textures": 1, "meshes_without_material": 0, "default_material": 0}


@pytest.mark.parametrize(  # all nine real objects agree (README); two more in `make test-all`
    "name",
    [
        "SpotCow.glb",
        pytest.param("Fox.glb", marks=pytest.mark.slow),
        pytest.param("kenney_alien.glb", marks=pytest.mark.slow),
    ],
)
def test_normals_agree_with_the_depth_of_the_same_view_and_leave_alpha_and_depth_alone(
    blender: BlenderProcess, real_objects: Path, tmp_path: Path, name: str
) -> None:
    result = blender.render(request(real_objects / name, tmp_path / "all", name, passes=ALL_PASSES), timeout_s=120)
    assert result["ok"], result
    if name == "SpotCow.glb":  # the passes leave what iNVS reads as it was (one object is enough for that)
        assert blender.render(request(real_objects / name, tmp_path / "plain", name), timeout_s=120)["ok"]
        for i in range(len(result["views"])):
            rgba, depth = (f"rgba_{i:03d}.png", f"depth_{i:03d}.npy")
            assert np.array_equal(
                np.asarray(Image.open(tmp_path / "all" / rgba)), np.asarray(Image.open(tmp_path / "plain" / rgba))
            )
            assert np.array_equal(np.load(tmp_path / "all" / depth), np.load(tmp_path / "plain" / depth))
    angles = []
    for view in result["views"]:
        i = view["index"]
        rgba = np.asarray(Image.open(tmp_path / "all" / f"rgba_{i:03d}.png"))
        depth = np.load(tmp_path / "all" / f"depth_{i:03d}.npy")
        on = rgba[..., 3] > 0
        normals = passes.decode_normals(np.asarray(Image.open(tmp_path / "all" / f"normal_{i:03d}.png")), on)
        assert np.allclose(np.linalg.norm(normals[on], axis=-1), 1.0, atol=1e-3)
        assert (normals[on][:, 2] < 0).mean() > 0.98  # OpenCV camera frame: visible surfaces face -z
        from_depth, valid = normals_from_depth(depth.astype(np.float64), np.asarray(view["K"]), rgba[..., 3])
        angles.append(np.degrees(np.arccos(np.clip((normals * from_depth).sum(-1), -1, 1)))[valid])
    angles = np.concatenate(angles)  # a wrong frame or axis order gives medians of 45-135 degrees
    assert len(angles) > 300 and np.median(angles) < 6.0, (len(angles), np.median(angles))


@pytest.mark.parametrize("metallic", [0.0, 1.0])
def test_albedo_is_the_base_colour_whatever_the_lighting(
    blender: BlenderProcess, tmp_path: Path, metallic: float
) -> None:
    base = [0.8, 0.25, 0.05, 1.0]  # linear, as glTF states factors
    pbr = {"baseColorFactor": base, "metallicFactor": metallic, "roughnessFactor": 0.5}
    model = write_gltf(tmp_path / "flat.gltf", material={"pbrMetallicRoughness": pbr})
    expected = np.round(passes.linear_to_srgb(np.array(base[:3])) * 255)
    seen = {}
    for lighting in ("four_suns", "zero123_area"):
        out = tmp_path / lighting
        result = blender.render(request(model, out, "flat", passes=ALL_PASSES, lighting=lighting), timeout_s=120)
        assert result["ok"], result
        i = 0
        rgba = np.asarray(Image.open(out / f"rgba_{i:03d}.png")).astype(int)
        albedo = np.asarray(Image.open(out / f"albedo_{i:03d}.png")).astype(int)
        inside = rgba[..., 3] == 255
        assert inside.sum() > 500
        assert np.abs(albedo[inside] - expected).max() <= 2, np.abs(albedo[inside] - expected).max()
        assert (albedo[rgba[..., 3] == 0] == 0).all()
        seen[lighting] = rgba[..., :3][inside].mean(0)
    assert np.abs(seen["four_suns"] - seen["zero123_area"]).max() > 10, seen  # the lighting did change the colours


def test_a_wrong_convention_would_be_caught(blender: BlenderProcess, real_objects: Path, tmp_path: Path) -> None:
    """The geometry check fails for ray-distance depth or a Blender matrix read as OpenCV (the classic mistakes)."""
    result = blender.render(request(real_objects / "SpotCow.glb", tmp_path, "cow", views=1), timeout_s=120)
    mesh = np.load(tmp_path / "mesh.npz")
    view = result["views"][0]
    K, c2w = np.array(view["K"]), np.array(view["c2w"])
    depth = np.load(tmp_path / "depth_000.npy").astype(np.float64)
    planar = cameras.unproject_depth(depth, K, c2w)[depth > 0][::7]
    ray_as_planar = cameras.unproject_depth(
        np.linalg.norm(cameras.unproject_depth(depth, K, np.eye(4)), axis=-1), K, c2w
    )[depth > 0][::7]
    blender_as_opencv = cameras.unproject_depth(depth, K, np.array(view["blender_matrix_world"]))[depth > 0][::7]
    assert on_surface(point_mesh_distance(planar, mesh["vertices"], mesh["faces"]))
    for wrong in (ray_as_planar, blender_as_opencv):
        assert not on_surface(point_mesh_distance(wrong, mesh["vertices"], mesh["faces"]))


def test_missing_textures_are_counted(blender: BlenderProcess, tmp_path: Path) -> None:
    (tmp_path / "box.mtl").write_text("newmtl skin\nKd 1 1 1\nmap_Kd does_not_exist.png\n")
    verts = [(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    faces = [(1, 3, 4, 2), (5, 6, 8, 7), (1, 2, 6, 5), (3, 7, 8, 4), (1, 5, 7, 3), (2, 4, 8, 6)]
    obj = [
        "mtllib box.mtl",
        *(f"v {x} {y} {z}" for x, y, z in verts),
        "vt 0 0",
        "usemtl skin",
        *("f " + " ".join(f"{i}/1" for i in face) for face in faces),
    ]
    (tmp_path / "box.obj").write_text("\n".join(obj) + "\n")
    result = blender.render(request(tmp_path / "box.obj", tmp_path / "out", "box", views=1), timeout_s=120)
    assert result["ok"], result
    assert result["missing_textures"] == 1


# ------------------------------------------------------------------------------------------------ isolation


def test_crash_timeout_and_memory_blowup_cost_one_object_only(real_objects: Path, tmp_path: Path) -> None:
    good = request(real_objects / "BoxTextured.glb", tmp_path / "good", "box", views=1)
    with BlenderProcess(threads=2, log_dir=str(tmp_path / "logs")) as bp:
        assert bp.render(good, timeout_s=120)["ok"]
        # A crash (segfault) mid-render fails this request only; the next object gets a fresh Blender.
        slow = request(heavy_ply(tmp_path / "heavy.ply"), tmp_path / "slow", "heavy", views=4, samples=512)
        pid = bp.pid
        crash = threading.Timer(3.0, os.kill, (pid, signal.SIGSEGV))
        crash.start()
        try:
            with pytest.raises(BlenderError, match="SIGSEGV"):
                bp.render(slow, timeout_s=120)
        finally:
            crash.cancel()
        assert bp.render(good, timeout_s=120)["ok"] and bp.starts == 2
        # A hang past the per-object timeout is killed, with Blender's last output in the reason.
        with pytest.raises(BlenderError, match=r"timed out after 2 s"):
            bp.render(slow, timeout_s=2)
        assert bp.render(good, timeout_s=120)["ok"] and bp.starts == 3
    # A memory ceiling below what Blender needs kills it and says so.
    with (
        BlenderProcess(threads=2, max_memory_mb=150, log_dir=str(tmp_path / "logs2")) as bp,
        pytest.raises(BlenderError, match="over the 150 MiB limit"),
    ):
        bp.render(request(tmp_path / "heavy.ply", tmp_path / "mem", "heavy", views=1), timeout_s=120)


def test_bad_files_fail_with_clear_reasons(blender: BlenderProcess, real_objects: Path, tmp_path: Path) -> None:
    good = (real_objects / "BoxTextured.glb").read_bytes()
    cases = {
        "empty.glb": b"",
        "truncated.glb": good[: len(good) // 3],
        "random.glb": np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "lies.glb": b"glTF" + struct.pack("<II", 2, 10**6) + b"\0" * 100,
    }
    reasons = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        result = blender.render(request(tmp_path / name, tmp_path / f"o-{name}", name), timeout_s=120)
        assert not result["ok"], name
        reasons[name] = result["error"]
    assert "empty (0 bytes)" in reasons["empty.glb"]
    for name in ("truncated.glb", "random.glb", "lies.glb"):
        assert reasons[name].startswith(("rejected before import", "import failed", "Blender's")), reasons[name]
        assert "\n" not in reasons[name]
    missing = blender.render(request(tmp_path / "nope.glb", tmp_path / "o-nope", "nope"), timeout_s=60)
    assert missing == {"ok": False, "error": f"model file not found: {tmp_path / 'nope.glb'}", "id": "nope"}
    # Still healthy afterwards, in the same process.
    assert blender.render(request(real_objects / "BoxTextured.glb", tmp_path / "ok", "box", views=1), 120)["ok"]


def test_imported_cameras_and_lights_are_removed(blender: BlenderProcess, tmp_path: Path) -> None:
    model = make_blend(tmp_path / "scene.blend", camera_and_light=True)
    result = blender.render(request(model, tmp_path / "out", "scene", views=1), timeout_s=120)
    assert result["ok"], result
    assert result["removed"] == {"cameras": 1, "lights": 1}


@pytest.mark.parametrize("fmt", ["obj", "stl", "ply", "gltf"])
def test_other_formats_import_and_normalise(
    blender: BlenderProcess, real_objects: Path, tmp_path: Path, fmt: str
) -> None:
    import trimesh

    mesh = trimesh.load(real_objects / "SpotCow.glb", force="mesh")
    model = tmp_path / f"cow.{fmt}"
    mesh.export(model)
    result = blender.render(request(model, tmp_path / "out", "cow", views=1), timeout_s=120)
    assert result["ok"], result
    V = np.load(tmp_path / "out" / "mesh.npz")["vertices"]
    assert (V.max(0) - V.min(0)).max() == pytest.approx(1.0, abs=1e-5)
    assert result["views"][0]["alpha_fraction"] > 0.02


@pytest.fixture(scope="module")
def exported(real_objects: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """BoxTextured (a textured glTF) exported by Blender to every other format Objaverse-XL lists that Blender
    reads: FBX (texture embedded), USDZ (texture packed), USDA (texture beside it), Alembic, OBJ with its .mtl and
    texture file beside it."""
    folder = tmp_path_factory.mktemp("exported")
    targets = {ext: folder / ext / f"box.{ext}" for ext in ("fbx", "usdz", "usda", "abc", "obj")}
    for path in targets.values():
        path.parent.mkdir()
    export_with_blender(real_objects / "BoxTextured.glb", list(targets.values()))
    return targets


@pytest.mark.parametrize("fmt", ["fbx", "usdz", "usda", "abc", "obj"])
def test_every_xl_file_type_blender_reads_renders_the_object(
    blender: BlenderProcess, exported: dict[str, Path], tmp_path: Path, fmt: str
) -> None:
    """Each format renders the same box, normalised; the formats that carry the texture (FBX embeds it, USDZ packs
    it, the OBJ's .mtl names the file beside it) show it; Alembic has no materials, so it gets the default one."""
    result = blender.render(request(exported[fmt], tmp_path / "out", f"box-{fmt}", views=1), timeout_s=120)
    assert result["ok"], result
    V = np.load(tmp_path / "out" / "mesh.npz")["vertices"]
    assert (V.max(0) - V.min(0)).max() == pytest.approx(1.0, abs=1e-4)
    assert result["views"][0]["alpha_fraction"] > 0.05
    textured = fmt != "abc"
    assert (result["contents"]["textures"] >= 1) == textured, result["contents"]
    rgba = np.asarray(Image.open(tmp_path / "out" / "rgba_000.png")).astype(float)
    covered = rgba[..., 3] == 255
    saturation = float(np.mean(rgba[covered][:, :3].max(1) - rgba[covered][:, :3].min(1))) / 255
    assert (saturation > 0.1) == textured, saturation  # the logo's colours, or the grey default material
    assert result["missing_textures"] == 0
    assert result["contents"]["default_material"] == (0 if textured else result["contents"]["meshes_without_material"])
    assert result["contents"]["default_material"] >= int(not textured)


def test_untextured_files_get_the_stated_default_material_or_their_vertex_colours(
    blender: BlenderProcess, tmp_path: Path
) -> None:
    """STL carries no colour: mid-grey default material (flat albedo 0.8, linear). A PLY with vertex colours: the
    default material takes them (a red PLY has red albedo). A COLLADA file fails with one line: Blender 5.0 cannot
    read it."""
    import trimesh

    from render.formats import DEFAULT_MATERIAL

    box = trimesh.creation.box()
    box.export(tmp_path / "box.stl")
    red = trimesh.creation.box()
    red.visual.vertex_colors = np.tile([230, 20, 20, 255], (len(red.vertices), 1)).astype(np.uint8)
    red.export(tmp_path / "red.ply")
    albedo: dict[str, np.ndarray] = {}
    for name in ("box.stl", "red.ply"):
        out = tmp_path / f"out-{name}"
        result = blender.render(
            request(tmp_path / name, out, name, views=1, passes=["rgba", "depth", "albedo"]), timeout_s=120
        )
        assert result["ok"], result
        assert result["contents"]["meshes_without_material"] == result["contents"]["default_material"] == 1
        rgba = np.asarray(Image.open(out / "rgba_000.png"))
        covered = rgba[..., 3] == 255
        albedo[name] = np.asarray(Image.open(out / "albedo_000.png"))[covered][:, :3].astype(float).mean(0) / 255
    grey = (DEFAULT_MATERIAL["base_color"][0] ** (1 / 2.4)) * 1.055 - 0.055  # linear 0.8 as 8-bit sRGB
    assert albedo["box.stl"] == pytest.approx([grey] * 3, abs=0.03)
    r, g, b = albedo["red.ply"]
    assert r > 0.8 and g < 0.2 and b < 0.2, albedo["red.ply"]
    (tmp_path / "box.dae").write_text("<COLLADA/>")
    result = blender.render(request(tmp_path / "box.dae", tmp_path / "out-dae", "dae", views=1), timeout_s=60)
    assert not result["ok"] and "COLLADA" in result["error"] and "\n" not in result["error"]


@pytest.mark.parametrize("lighting", ["uniform", "zero123_area", "four_suns"])
def test_lighting_modes(blender: BlenderProcess, real_objects: Path, tmp_path: Path, lighting: str) -> None:
    result = blender.render(
        request(real_objects / "SpotCow.glb", tmp_path, "cow", views=1, lighting=lighting), timeout_s=120
    )
    assert result["ok"], result
    assert result["lighting"]["mode"] == lighting
    assert len(result["lighting"].get("lights", [])) == {"uniform": 0, "zero123_area": 1, "four_suns": 4}[lighting]
    rgba = np.asarray(Image.open(tmp_path / "rgba_000.png"))
    lit = rgba[rgba[..., 3] == 255][:, :3]
    assert 20 < lit.mean() < 250  # neither black nor blown out


def test_an_invisible_object_renders_empty(blender: BlenderProcess, tmp_path: Path) -> None:
    model = make_blend(tmp_path / "ghost.blend", invisible=True)
    result = blender.render(request(model, tmp_path / "out", "ghost", views=2), timeout_s=120)
    assert result["ok"]
    assert max(v["alpha_fraction"] for v in result["views"]) < 1e-3  # the job records this as an empty render


def test_cheaper_sampling_settings_keep_depth_and_alpha(
    blender: BlenderProcess, real_objects: Path, tmp_path: Path
) -> None:
    """Denoising, its prefilter and the adaptive threshold change colour noise only: the depth is the same and
    the silhouette (alpha >= 128) nearly so."""
    model = real_objects / "SpotCow.glb"
    base = request(model, tmp_path / "base", "cow", views=2, samples=32)
    cheap = request(
        model,
        tmp_path / "cheap",
        "cow",
        views=2,
        samples=8,
        denoise=True,
        denoise_prefilter="accurate",
        adaptive_threshold=0.05,
    )
    for req in (base, cheap):
        blender.render(req, timeout_s=300)
    for i in range(2):
        assert np.array_equal(
            np.load(tmp_path / "base" / f"depth_{i:03d}.npy"), np.load(tmp_path / "cheap" / f"depth_{i:03d}.npy")
        )
        a = np.asarray(Image.open(tmp_path / "base" / f"rgba_{i:03d}.png"))[..., 3] >= 128
        b = np.asarray(Image.open(tmp_path / "cheap" / f"rgba_{i:03d}.png"))[..., 3] >= 128
        assert (a & b).sum() / (a | b).sum() > 0.98


def test_sampling_only_the_objects_box_changes_no_pixel(
    blender: BlenderProcess, real_objects: Path, tmp_path: Path
) -> None:
    """render.crop_to_object: the same RGBA, depth and passes as sampling the whole frame, bit for bit."""
    for name in ("CesiumMilkTruck.glb", "kenney_alien.glb"):
        outs = {}
        for crop in (False, True):
            out = tmp_path / f"{name}-{crop}"
            req = request(real_objects / name, out, name, views=2, crop_to_object=crop).replace(passes=ALL_PASSES)
            assert blender.render(req, timeout_s=120)["ok"]
            outs[crop] = out
        for kind in ("rgba_000.png", "rgba_001.png", "normal_001.png", "albedo_001.png", "depth_001.npy"):
            read = np.load if kind.endswith(".npy") else (lambda f: np.asarray(Image.open(f)))
            assert np.array_equal(read(outs[False] / kind), read(outs[True] / kind)), (name, kind)


def test_alpha_from_a_coverage_render_keeps_depth_alpha_and_passes_in_place(
    blender: BlenderProcess, real_objects: Path, tmp_path: Path
) -> None:
    """Colour from 8 denoised samples, alpha from a 32-sample coverage render: the silhouette matches a 64-sample
    colour render's, depth is the colour render's (on the mesh, 0 off the object), and every pass covers the new
    alpha (no pixel the coverage render adds is left without a colour or a normal)."""
    model = real_objects / "SpotCow.glb"
    ref = request(model, tmp_path / "ref", "cow", views=2, samples=64)
    cheap = request(model, tmp_path / "cheap", "cow", views=2, samples=8, denoise=True, coverage_samples=32)
    cheap = cheap.replace(passes=ALL_PASSES)
    assert blender.render(ref, timeout_s=300)["ok"]
    result = blender.render(cheap, timeout_s=300)
    assert result["ok"] and result["alpha_from"] == "coverage render", result
    assert len(result["cpu_s"]["coverage"]) == 2 and result["cpu_s"]["coverage"][0] > 0
    V, F = (np.load(tmp_path / "cheap" / "mesh.npz")[k] for k in ("vertices", "faces"))
    for i, view in enumerate(result["views"]):
        rgba = np.asarray(Image.open(tmp_path / "cheap" / f"rgba_{i:03d}.png"))
        alpha, depth = rgba[..., 3], np.load(tmp_path / "cheap" / f"depth_{i:03d}.npy").astype(np.float64)
        ref_alpha = np.asarray(Image.open(tmp_path / "ref" / f"rgba_{i:03d}.png"))[..., 3]
        a, b = alpha >= 128, ref_alpha >= 128
        assert (a & b).sum() / (a | b).sum() > 0.98
        assert np.abs(alpha.astype(int) - ref_alpha).mean() < 2.0  # soft edges agree too
        assert (depth[alpha == 0] == 0).all()
        points = cameras.unproject_depth(depth, np.asarray(view["K"]), np.asarray(view["c2w"]))[depth > 0]
        assert on_surface(point_mesh_distance(points[::7], V, F))
        normals = passes.decode_normals(np.asarray(Image.open(tmp_path / "cheap" / f"normal_{i:03d}.png")), alpha)
        assert np.allclose(np.linalg.norm(normals[alpha > 0], axis=-1), 1.0, atol=1e-3)
        albedo = np.asarray(Image.open(tmp_path / "cheap" / f"albedo_{i:03d}.png"))
        assert (albedo[alpha > 0].max(axis=-1) > 0).mean() > 0.99  # the cow has no black-albedo parts


def test_a_transparent_material_keeps_the_colour_renders_alpha(blender: BlenderProcess, tmp_path: Path) -> None:
    glass = {"pbrMetallicRoughness": {"baseColorFactor": [0.2, 0.6, 0.9, 0.4]}, "alphaMode": "BLEND"}
    model = write_gltf(tmp_path / "glass.gltf", material=glass)
    req = request(model, tmp_path / "out", "glass", views=1, samples=8, denoise=True, coverage_samples=32)
    result = blender.render(req, timeout_s=120)
    assert result["ok"] and result["alpha_from"] == "colour render" and result["cpu_s"]["coverage"] == []
    assert result["colour_samples"] == 32  # the silhouette's anti-aliasing samples, taken by the colour render
    alpha = np.asarray(Image.open(tmp_path / "out" / "rgba_000.png"))[..., 3]
    assert 60 < np.median(alpha[alpha > 0]) < 200  # see-through, as the material says (a coverage render: 255)


# ------------------------------------------------------------------------------------------------ hostile files


def test_blenders_own_importer_reads_a_buffer_outside_the_objects_folder(tmp_path: Path) -> None:
    """Guards the next test: without the check, Blender's glTF importer follows ``../`` and builds the object's
    geometry from a file of the machine (the generator wrote the cube's bytes there)."""
    model = write_gltf(tmp_path / "obj" / "cube.gltf", buffer_uri="../secret-dir/secret.bin")
    assert (tmp_path / "secret-dir" / "secret.bin").is_file() and not any((tmp_path / "obj").glob("*.bin"))
    code = f"""
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath={str(model)!r})
print("VERTICES", sum(len(m.vertices) for m in bpy.data.meshes))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "VERTICES 8" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_hostile_gltf_files_are_refused_before_blender_opens_them(blender: BlenderProcess, tmp_path: Path) -> None:
    starts = blender.starts
    (tmp_path / "secret.png").write_bytes(png_header(8, 8))
    cases = {
        "outside": dict(buffer_uri="../secret-dir/secret.bin"),
        "absolute": dict(buffer_uri="cube.bin"),
        "image": dict(image_uri="../secret.png"),
        "liar": dict(claimed_vertices=10**9),
        "deep": dict(depth=3000),
        "bomb": dict(image_bytes=png_header(60000, 60000)),
    }
    expected = {
        "outside": "rejected before import: buffer 0 refers to '../secret-dir/secret.bin', outside the object's folder",
        "absolute": "rejected before import: buffer 0 refers to '/etc/hostname': an absolute path, outside",
        "image": "rejected before import: image 0 refers to '../secret.png', outside the object's folder",
        "liar": "rejected before import: accessor 0 claims 1000000000 elements of 12 bytes",
        "deep": "rejected before import: the node hierarchy is deeper than 256 levels",
        "bomb": "rejected before import: image 0 is 60000 x 60000 pixels, over the 16384 pixel side limit",
    }
    for name, kwargs in cases.items():
        model = write_gltf(tmp_path / name / f"{name}.gltf", **kwargs)
        if name == "absolute":
            text = model.read_text().replace('"uri": "cube.bin"', '"uri": "/etc/hostname"')
            model.write_text(text)
        result = blender.render(request(model, tmp_path / f"out-{name}", name), timeout_s=60)
        assert not result["ok"], name
        assert result["error"].startswith(expected[name]), (name, result["error"])
        assert "\n" not in result["error"]
        assert not (tmp_path / f"out-{name}" / "rgba_000.png").exists()
    assert blender.starts == starts, "no hostile file killed or hung the Blender process"
    # The same object with its files inside its folder (and at the depth limit) renders.
    inside = write_gltf(
        tmp_path / "inside" / "cube.gltf",
        buffer_uri="parts/cube.bin",
        depth=256,
        image_uri="tex/a.png",
        image_bytes=(tmp_path / "secret.png").read_bytes(),
    )
    result = blender.render(request(inside, tmp_path / "out-inside", "inside", views=1), timeout_s=120)
    assert result["ok"], result
    assert result["views"][0]["alpha_fraction"] > 0.05


def test_an_importer_traceback_becomes_its_last_line(blender: BlenderProcess, tmp_path: Path) -> None:
    """A file that passes every structural check but indexes past its vertices breaks Blender's importer with a
    Python traceback: the reason is the exception, not "Traceback (most recent call last)"."""
    model = write_gltf(tmp_path / "badindex.gltf", last_index=60000)
    result = blender.render(request(model, tmp_path / "out", "badindex", views=1), timeout_s=120)
    assert result == {
        "ok": False,
        "error": "import failed: IndexError: index 60000 is out of bounds for axis 0 with size 8",
        "id": "badindex",
    }


def test_textures_outside_the_folder_are_refused_after_import(blender: BlenderProcess, tmp_path: Path) -> None:
    """Formats without a pre-import check (here OBJ) are refused before any render when they refer to a file
    outside their folder."""
    (tmp_path / "obj").mkdir()
    (tmp_path / "outside.png").write_bytes(png_header(8, 8))
    (tmp_path / "obj" / "box.mtl").write_text(f"newmtl skin\nKd 1 1 1\nmap_Kd {tmp_path / 'outside.png'}\n")
    faces = ["f 1/1 2/1 3/1", "f 1/1 3/1 4/1", "f 1/1 2/1 4/1", "f 2/1 3/1 4/1"]
    lines = ["mtllib box.mtl", "v 0 0 0", "v 1 0 0", "v 0 1 0", "v 0 0 1", "vt 0 0", "usemtl skin", *faces]
    (tmp_path / "obj" / "box.obj").write_text("\n".join(lines) + "\n")
    result = blender.render(request(tmp_path / "obj" / "box.obj", tmp_path / "out", "box", views=1), timeout_s=120)
    assert result["error"] == f"refers to {tmp_path / 'outside.png'}, outside the object's folder", result
    assert not (tmp_path / "out" / "rgba_000.png").exists()
