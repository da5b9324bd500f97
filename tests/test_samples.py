"""The built-in sample objects: deterministic GLBs that trimesh and Blender's own glTF importer read as intended."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from render import samples

REPO = Path(__file__).resolve().parent.parent


def _digests(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def _load(path: Path) -> trimesh.Scene:
    scene = trimesh.load(path, force="scene", process=False)
    assert isinstance(scene, trimesh.Scene)
    return scene


def _texture(scene: trimesh.Scene) -> tuple[trimesh.Trimesh, Image.Image]:
    (mesh,) = scene.geometry.values()
    image = mesh.visual.material.baseColorTexture
    assert isinstance(image, Image.Image)
    return mesh, image


@pytest.fixture(scope="module")
def glbs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths = samples.generate_samples(tmp_path_factory.mktemp("samples"))
    return dict(zip(samples.SAMPLE_NAMES, paths, strict=True))


def test_names_are_stable_and_safe() -> None:
    assert 4 <= len(samples.SAMPLE_NAMES) <= 5
    assert len(set(samples.SAMPLE_NAMES)) == len(samples.SAMPLE_NAMES)
    assert all(re.fullmatch(r"[a-z0-9_]+", n) for n in samples.SAMPLE_NAMES)
    assert "text_block" in samples.SAMPLE_NAMES


def test_bytes_are_deterministic_across_calls_directories_and_processes(tmp_path: Path) -> None:
    first = [samples.sample_bytes(n) for n in samples.SAMPLE_NAMES]
    assert first == [samples.sample_bytes(n) for n in samples.SAMPLE_NAMES]
    a = samples.generate_samples(tmp_path / "a")
    b = samples.generate_samples(tmp_path / "b")
    assert _digests(a) == _digests(b) == [hashlib.sha256(x).hexdigest() for x in first]
    # A fresh interpreter with a different string-hash seed produces the same files.
    code = (
        "import hashlib, json; from render import samples; "
        "print(json.dumps([hashlib.sha256(samples.sample_bytes(n)).hexdigest() for n in samples.SAMPLE_NAMES]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == _digests(a)


def test_generate_is_idempotent_and_repairs_files(tmp_path: Path) -> None:
    paths = samples.generate_samples(tmp_path)
    assert paths == [tmp_path / f"{n}.glb" for n in samples.SAMPLE_NAMES]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    paths[1].write_bytes(b"corrupt")
    again = samples.generate_samples(str(tmp_path))
    assert again == paths
    assert paths[1].read_bytes() == samples.sample_bytes(samples.SAMPLE_NAMES[1])
    assert [p.stat().st_mtime_ns for i, p in enumerate(paths) if i != 1] == [m for i, m in enumerate(mtimes) if i != 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporary files left
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in paths)


def test_unknown_sample_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown sample 'teapot'"):
        samples.sample_bytes("teapot")


def test_samples_are_small_and_fast(tmp_path: Path) -> None:
    samples.sample_bytes("text_block")  # warm up imports and the font
    start = time.perf_counter()
    paths = samples.generate_samples(tmp_path)
    assert time.perf_counter() - start < 2.0
    for p in paths:
        assert 1_000 < p.stat().st_size < 1_000_000, p
        assert p.read_bytes()[:4] == b"glTF"


def test_every_sample_loads_with_geometry_materials_and_outward_normals(glbs: dict[str, Path]) -> None:
    for name, path in glbs.items():
        scene = _load(path)
        assert scene.geometry, name
        for mesh in scene.geometry.values():
            assert len(mesh.faces) > 0 and len(mesh.vertices) > 0, name
            assert isinstance(mesh.visual.material, trimesh.visual.material.PBRMaterial), name
            # Winding (front faces counter-clockwise) agrees with the stored smooth/flat vertex normals.
            agree = np.einsum("ij,ij->i", mesh.face_normals, mesh.vertex_normals[mesh.faces].mean(axis=1))
            assert (agree > 0).all(), name
        extents = scene.extents
        assert 0.5 < extents.max() < 2.0, (name, extents)


def test_textured_samples_carry_their_textures(glbs: dict[str, Path]) -> None:
    for name in ("text_block", "checker_torus"):
        mesh, image = _texture(_load(glbs[name]))
        assert mesh.visual.uv is not None and mesh.visual.uv.shape == (len(mesh.vertices), 2)
        assert min(image.size) >= 256
        pixels = np.asarray(image.convert("RGB"))
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) >= 8, name


def test_coloured_samples_use_distinct_material_colours(glbs: dict[str, Path]) -> None:
    expected = {"mug": (200, 35, 40), "robot": (70, 110, 170), "arrow_sign": (215, 40, 40)}
    for name, colour in expected.items():
        scene = _load(glbs[name])
        colours = {tuple(int(c) for c in m.visual.material.baseColorFactor[:3]) for m in scene.geometry.values()}
        assert colour in colours, (name, colours)
        assert len(colours) >= 2, name


def test_objects_are_y_up(glbs: dict[str, Path]) -> None:
    assert np.allclose(_load(glbs["text_block"]).extents, (1.0, 0.7, 0.5), atol=1e-5)
    robot = _load(glbs["robot"]).bounds
    assert np.argmax(robot[1] - robot[0]) == 1  # the robot stands along +Y
    ball = _load(glbs["robot"]).geometry["robot_antenna_ball"].bounds
    assert ball[1][1] == pytest.approx(robot[1][1])  # ...with its antenna on top


def test_text_block_uvs_are_not_mirrored_and_upright(glbs: dict[str, Path]) -> None:
    mesh, _ = _texture(_load(glbs["text_block"]))
    uv = mesh.visual.uv[mesh.faces]  # (faces, 3, 2), v up (trimesh's convention)
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    # Front faces are counter-clockwise from outside; so must their UV triangles be, else the text is mirrored.
    assert (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] > 0).all()
    # The image's "up" (+v) direction in 3D, per face: upright words on the sides, the top reads from the front.
    p = mesh.vertices[mesh.faces]
    d1, d2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    up = (-e2[:, 0, None] * d1 + e1[:, 0, None] * d2) / det[:, None]  # d(position)/dv
    normals = mesh.face_normals
    sides = np.abs(normals[:, 1]) < 0.5
    assert sides.sum() == 8 and (up[sides, 1] > 0).all()
    top = normals[:, 1] > 0.5
    assert top.sum() == 2 and (up[top, 2] < 0).all()


def test_text_texture_shows_dark_words_on_light_faces(glbs: dict[str, Path]) -> None:
    mesh, image = _texture(_load(glbs["text_block"]))
    luma = np.asarray(image.convert("L"), dtype=float)
    h, w = luma.shape
    for face in range(6):  # 4 vertices per box face, in order
        uv = mesh.visual.uv[4 * face : 4 * face + 4]
        x0, x1 = int(uv[:, 0].min() * w), int(uv[:, 0].max() * w)
        y0, y1 = int((1 - uv[:, 1].max()) * h), int((1 - uv[:, 1].min()) * h)
        inner = luma[y0 + 20 : y1 - 20, x0 + 20 : x1 - 20]  # inside the dark frame
        dark, light = (inner < 80).mean(), (inner > 150).mean()
        assert 0.05 < dark < 0.5, (face, dark)
        assert light > 0.45, (face, light)
        assert dark + light > 0.9, (face, dark, light)  # high contrast: few mid-grey pixels
        # The dark pixels form words: they span most of the face's width, and some row crosses several strokes.
        ink = inner < 80
        cols = np.flatnonzero(ink.any(axis=0))
        assert cols.max() - cols.min() > 0.5 * inner.shape[1], face
        strokes = np.count_nonzero(np.diff(ink.astype(np.int8), axis=1) == 1, axis=1)
        assert strokes.max() >= 4, face


@pytest.mark.blender
def test_blender_imports_every_sample(glbs: dict[str, Path]) -> None:
    bpy = pytest.importorskip("bpy")
    for name, path in glbs.items():
        bpy.ops.wm.read_factory_settings(use_empty=True)
        assert bpy.ops.import_scene.gltf(filepath=str(path)) == {"FINISHED"}
        meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
        assert meshes, name
        for obj in meshes:
            assert len(obj.data.polygons) > 0, (name, obj.name)
            materials = [m for m in obj.data.materials if m is not None]
            assert materials and all(m.node_tree is not None for m in materials), (name, obj.name)
        if name == "text_block":
            # glTF +Y up becomes Blender +Z up: width 1.0 (x), depth 0.5 (y), height 0.7 (z).
            assert tuple(round(d, 4) for d in meshes[0].dimensions) == (1.0, 0.5, 0.7)
            images = [
                n.image
                for m in meshes[0].data.materials
                for n in m.node_tree.nodes
                if n.type == "TEX_IMAGE" and n.image
            ]
            assert len(images) == 1
            image = images[0]
            assert tuple(image.size) == (1024, 1024)
            pixels = np.empty(image.size[0] * image.size[1] * image.channels, dtype=np.float32)
            image.pixels.foreach_get(pixels)
            rgb = pixels.reshape(-1, image.channels)[:, :3]
            assert rgb.std() > 0.2
            assert (rgb.mean(axis=1) < 0.1).mean() > 0.05 and (rgb.mean(axis=1) > 0.5).mean() > 0.4
            # Blender sees exactly the drawn words (its rows run bottom-up).
            drawn = np.asarray(samples.text_texture(), dtype=np.float32) / 255.0
            assert np.abs(rgb.reshape(*drawn.shape)[::-1] - drawn).max() < 1e-3
        elif name in ("mug", "robot", "arrow_sign"):
            colours = {
                tuple(round(c, 3) for c in m.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value)
                for obj in meshes
                for m in obj.data.materials
            }
            assert len(colours) >= 2, (name, colours)
