"""The glTF checks run before Blender opens a file: hostile and broken files get one-line reasons, real ones pass."""

from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path

import pytest

from render import gltf_check, samples
from render.gltf_check import GltfError, check_gltf
from tests.helpers import png_header, write_gltf


def edit_json(path: Path, change) -> Path:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def rejected(path: Path) -> str:
    with pytest.raises(GltfError) as info:
        check_gltf(path)
    reason = str(info.value)
    assert "\n" not in reason and reason
    return reason


def test_real_objects_and_the_samples_pass(real_objects: Path, tmp_path: Path) -> None:
    files = sorted(real_objects.glob("*.glb"))
    for name in samples.SAMPLE_NAMES:
        files.append(tmp_path / f"{name}.glb")
        files[-1].write_bytes(samples.sample_bytes(name))
    for path in files:
        report = check_gltf(path)
        assert report.nodes >= 1 and report.primitives >= 1 and report.accessor_bytes > 0, path.name
    fox = check_gltf(real_objects / "Fox.glb")
    assert fox.depth > 2 and fox.image_pixels > 0  # a skinned rig and an embedded texture were measured


@pytest.mark.parametrize("suffix", [".gltf", ".glb"])
def test_generated_cubes_pass(tmp_path: Path, suffix: str) -> None:
    report = check_gltf(write_gltf(tmp_path / f"cube{suffix}"))
    assert (report.nodes, report.depth, report.primitives) == (1, 1, 1)
    assert report.files == ()


def test_files_inside_the_folder_are_allowed_and_listed(tmp_path: Path) -> None:
    model = write_gltf(
        tmp_path / "obj" / "cube.gltf", buffer_uri="data/cube%20geometry.bin", image_uri="tex/a.png", image_bytes=b""
    )
    (tmp_path / "obj" / "tex" / "a.png").write_bytes(png_header(64, 32))
    report = check_gltf(model)
    assert report.files == (
        str(tmp_path / "obj" / "data" / "cube geometry.bin"),
        str(tmp_path / "obj" / "tex" / "a.png"),
    )
    assert report.image_pixels == 64 * 32


@pytest.mark.parametrize(
    "uri",
    [
        "../secret-dir/secret.bin",
        "sub/../../secret-dir/secret.bin",
        "%2E%2E/secret-dir/secret.bin",
        "/etc/hostname",
        "file:///etc/hostname",
        "http://example.com/cube.bin",
        "//example.com/cube.bin",
        "C:/Windows/win.ini",
        "..\\secret-dir\\secret.bin",
    ],
)
def test_buffers_outside_the_objects_folder_are_rejected(tmp_path: Path, uri: str) -> None:
    (tmp_path / "secret-dir").mkdir()
    (tmp_path / "secret-dir" / "secret.bin").write_bytes(b"\0" * 4096)
    model = write_gltf(tmp_path / "obj" / "cube.gltf", buffer_uri="cube.bin")
    edit_json(model, lambda g: g["buffers"][0].update(uri=uri))
    reason = rejected(model)
    assert reason.startswith("buffer 0 refers to") and ("outside" in reason or "only data:" in reason), reason


def test_a_symlink_out_of_the_folder_is_outside(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4096)
    model = write_gltf(tmp_path / "obj" / "cube.gltf", buffer_uri="cube.bin")
    (tmp_path / "obj" / "cube.bin").unlink()
    os.symlink(tmp_path / "secret.bin", tmp_path / "obj" / "cube.bin")
    assert "outside the object's folder" in rejected(model)


@pytest.mark.parametrize("uri", ["../secret.png", "/etc/passwd", "https://example.com/a.png"])
def test_images_outside_the_folder_are_rejected(tmp_path: Path, uri: str) -> None:
    model = write_gltf(tmp_path / "obj" / "cube.gltf", image_uri=uri, image_bytes=png_header(8, 8))
    assert rejected(model).startswith("image 0 refers to")


def test_a_data_uri_image_passes_and_is_measured(tmp_path: Path) -> None:
    uri = "data:image/png;base64," + base64.b64encode(png_header(300, 200)).decode()
    report = check_gltf(write_gltf(tmp_path / "cube.gltf", image_uri=uri))
    assert report.image_pixels == 300 * 200


def test_an_accessor_claiming_a_billion_vertices_is_rejected(tmp_path: Path) -> None:
    model = write_gltf(tmp_path / "liar.gltf", claimed_vertices=10**9)
    assert model.stat().st_size < 2000
    assert rejected(model) == (
        "accessor 0 claims 1000000000 elements of 12 bytes (12000000000 bytes), its bufferView 0 holds 96"
    )


def test_an_accessor_past_its_view_by_stride_is_rejected(tmp_path: Path) -> None:
    model = write_gltf(tmp_path / "cube.gltf")
    edit_json(model, lambda g: g["bufferViews"][0].update(byteStride=16))  # 8 x 16 bytes > 96
    assert "accessor 0 claims 8 elements" in rejected(model)


def test_accessors_without_data_are_bounded(tmp_path: Path) -> None:
    model = write_gltf(tmp_path / "cube.gltf")
    # An accessor with no bufferView is all zeros (or Draco-decoded): nothing in the file bounds it but the total.
    edit_json(model, lambda g: g["accessors"][0].update(bufferView=None, count=10**9))
    edit_json(model, lambda g: g["accessors"][0].pop("bufferView"))
    assert rejected(model).startswith("accessors declare 12000000072 bytes")


def test_buffer_views_and_buffers_must_hold_what_they_claim(tmp_path: Path) -> None:
    model = write_gltf(tmp_path / "a.gltf")
    edit_json(model, lambda g: g["bufferViews"][1].update(byteLength=10_000))
    assert "bufferView 1 (bytes 96-10096) runs past the end of buffer 0" in rejected(model)
    model = write_gltf(tmp_path / "b.gltf", buffer_uri="b.bin")
    edit_json(model, lambda g: g["buffers"][0].update(byteLength=10**8))
    assert rejected(model) == "buffer 0 claims 100000000 bytes, its data holds 168"
    glb = write_gltf(tmp_path / "c.glb")
    data = bytearray(glb.read_bytes())
    (json_len,) = struct.unpack_from("<I", data, 12)
    text = json.loads(bytes(data[20 : 20 + json_len]))
    text["buffers"][0]["byteLength"] = 999  # as many digits as the real 168: the chunk keeps its length
    new = json.dumps(text).encode()
    new += b" " * (json_len - len(new))
    assert len(new) == json_len
    data[20 : 20 + json_len] = new
    glb.write_bytes(bytes(data))
    assert rejected(glb) == "buffer 0 claims 999 bytes, the GLB's BIN chunk holds 168"
    (tmp_path / "d.gltf").write_text((tmp_path / "b.gltf").read_text())
    assert "does not exist in the object's folder" in rejected(
        edit_json(tmp_path / "d.gltf", lambda g: g["buffers"][0].update(uri="gone.bin", byteLength=8))
    )


def test_glb_containers_that_lie_are_rejected(tmp_path: Path) -> None:
    good = write_gltf(tmp_path / "good.glb").read_bytes()
    cases = {
        "truncated": (good[:-40], "glTF binary header says"),
        "version": (good[:4] + struct.pack("<I", 1) + good[8:], "version 1"),
        "magic": (b"gltf" + good[4:], "no 'glTF' header"),
        "json_chunk": (good[:12] + struct.pack("<I", 10**6) + good[16:], "JSON chunk (1000000 bytes) runs past"),
        "bin_chunk": (good[:-176] + struct.pack("<I", 10**6) + good[-172:], "BIN chunk (1000000 bytes) runs past"),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / f"{name}.glb"
        path.write_bytes(data)
        assert expected in rejected(path), name


def test_deep_cyclic_and_shared_node_hierarchies_are_rejected(tmp_path: Path) -> None:
    assert check_gltf(write_gltf(tmp_path / "limit.gltf", depth=gltf_check.MAX_NODE_DEPTH)).depth == 256
    deep = write_gltf(tmp_path / "deep.gltf", depth=3000)
    assert rejected(deep) == "the node hierarchy is deeper than 256 levels (at node 256)"
    assert "deeper than 256" in rejected(write_gltf(tmp_path / "over.gltf", depth=gltf_check.MAX_NODE_DEPTH + 1))
    cycle = write_gltf(tmp_path / "cycle.gltf", depth=3)
    edit_json(cycle, lambda g: g["nodes"][2].update(children=[0]))
    assert "has two parents" in rejected(cycle) or "cycle" in rejected(cycle)
    loop = write_gltf(tmp_path / "loop.gltf", depth=3)
    edit_json(loop, lambda g: (g["scenes"][0].update(nodes=[1]), g["nodes"][2].update(children=[1])))
    edit_json(loop, lambda g: g["nodes"][0].update(children=[]))
    assert "cycle through node" in rejected(loop)
    shared = write_gltf(tmp_path / "shared.gltf", depth=3)
    edit_json(shared, lambda g: g["nodes"][0].update(children=[1, 2]))
    assert rejected(shared) == "node 2 has two parents (0 and 1)"
    itself = write_gltf(tmp_path / "itself.gltf")
    edit_json(itself, lambda g: g["nodes"][0].update(children=[0]))
    assert rejected(itself) == "node 0 is its own child"


def test_indices_must_point_at_something(tmp_path: Path) -> None:
    changes = {
        "mesh": (lambda g: g["nodes"][0].update(mesh=7), "node 0 mesh points at 7"),
        "attribute": (lambda g: g["meshes"][0]["primitives"][0]["attributes"].update(NORMAL=9), "attribute NORMAL"),
        "view": (lambda g: g["accessors"][1].update(bufferView=5), "accessor 1 bufferView points at 5"),
        "scene": (lambda g: g["scenes"][0].update(nodes=[3]), "scene 0 node points at 3"),
        "default": (lambda g: g.update(scene=2), "the default scene points at 2"),
        "type": (lambda g: g["accessors"][0].update(type="VEC7"), "unknown type 'VEC7'"),
        "component": (lambda g: g["accessors"][0].update(componentType=1), "unknown componentType 1"),
        "count": (lambda g: g["accessors"][0].update(count=-1), "accessor 0 count must be an integer >= 1"),
        "version": (lambda g: g["asset"].update(version="1.0"), "asset.version is '1.0'"),
        "stride": (lambda g: g["bufferViews"][0].update(byteStride=6), "byteStride 6 is not a multiple of 4"),
    }
    for name, (change, expected) in changes.items():
        model = edit_json(write_gltf(tmp_path / f"{name}.gltf"), change)
        assert expected in rejected(model), name
    (tmp_path / "junk.gltf").write_text("{not json")
    assert rejected(tmp_path / "junk.gltf").startswith("glTF JSON is not valid")


def test_image_sizes_come_from_png_jpeg_and_webp_headers(tmp_path: Path) -> None:
    from io import BytesIO

    from PIL import Image

    for fmt in ("PNG", "JPEG", "WEBP"):
        buf = BytesIO()
        Image.new("RGB", (123, 45)).save(buf, format=fmt)
        assert gltf_check.image_size(buf.getvalue()) == (123, 45), fmt
    buf = BytesIO()
    Image.new("RGBA", (77, 66)).save(buf, format="WEBP", lossless=True)
    assert gltf_check.image_size(buf.getvalue()) == (77, 66)
    assert gltf_check.image_size(b"GIF89a....") is None


def test_a_decompression_bomb_texture_is_rejected(tmp_path: Path) -> None:
    # 60 bytes of PNG header claim 60000 x 60000 pixels (14 GB as RGBA), embedded in the GLB's buffer.
    glb = write_gltf(tmp_path / "bomb.glb", image_bytes=png_header(60000, 60000))
    assert rejected(glb) == "image 0 is 60000 x 60000 pixels, over the 16384 pixel side limit"
    many = write_gltf(tmp_path / "many.gltf", image_uri="a.png", image_bytes=png_header(16384, 16384))
    edit_json(many, lambda g: g.update(images=[{"uri": "a.png"}] * 3))
    assert rejected(many).startswith("images hold more than 536870912 pixels together")


def test_what_blender_cannot_import_is_refused_before_it_starts(tmp_path: Path) -> None:
    """A version other than 2.0 and required extensions that Blender's importer lacks are refused naming them (the
    importer refuses them only after Blender's start-up); required extensions it loads pass."""

    def requiring(*names: str, used: tuple[str, ...] | None = None):
        return lambda g: g.update(extensionsRequired=list(names), extensionsUsed=list(names if used is None else used))

    changes = {
        "v21": (lambda g: g["asset"].update(version="2.1"), "asset.version is '2.1'; Blender's importer reads only"),
        "meshopt": (requiring("KHR_meshopt_compression"), "extension 'KHR_meshopt_compression', which Blender"),
        "basisu": (requiring("KHR_texture_basisu"), "extension 'KHR_texture_basisu', which Blender"),
        "iridescence": (requiring("KHR_materials_iridescence"), "'KHR_materials_iridescence', which Blender"),
        "unused": (requiring("KHR_materials_unlit", used=()), "does not list it in extensionsUsed"),
        "not_a_list": (lambda g: g.update(extensionsRequired="KHR_materials_unlit"), "must be a list of extension"),
    }
    for name, (change, expected) in changes.items():
        model = edit_json(write_gltf(tmp_path / f"{name}.gltf"), change)
        assert expected in rejected(model), name
    loadable = requiring("KHR_materials_unlit", "KHR_draco_mesh_compression", "KHR_texture_transform")
    assert check_gltf(edit_json(write_gltf(tmp_path / "loadable.gltf"), loadable)).primitives == 1


def test_the_extension_list_is_the_installed_importers(tmp_path: Path) -> None:
    """:data:`BLENDER_EXTENSIONS` is the ``extensions_managed`` list of the glTF importer installed with bpy."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    assert spec is not None and spec.origin is not None
    sources = list(Path(spec.origin).parent.glob("*/scripts/addons_core/io_scene_gltf2/io/imp/gltf2_io_gltf.py"))
    assert len(sources) == 1, sources
    lists = [
        node.value
        for node in ast.walk(ast.parse(sources[0].read_text()))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == "extensions_managed" for t in node.targets)
    ]
    assert len(lists) == 1
    assert set(ast.literal_eval(lists[0])) == gltf_check.BLENDER_EXTENSIONS


@pytest.mark.parametrize("extension", ["EXT_meshopt_compression", "KHR_meshopt_compression"])
def test_a_meshopt_fallback_buffer_has_no_data_to_check(tmp_path: Path, extension: str) -> None:
    def fallback(g: dict) -> None:
        g["buffers"].append({"byteLength": 64, "extensions": {extension: {"fallback": True}}})
        g["extensionsUsed"] = [extension]

    assert check_gltf(edit_json(write_gltf(tmp_path / "fallback.gltf"), fallback)).primitives == 1
    model = edit_json(write_gltf(tmp_path / "neither.gltf"), lambda g: g["buffers"].append({"byteLength": 64}))
    assert rejected(model) == "buffer 1 has no uri and is not the GLB's BIN chunk"


@pytest.mark.parametrize(
    ("component", "type_", "stride", "last"),
    [
        (5121, "MAT2", 8, 6),
        (5121, "MAT3", 12, 11),
        (5123, "MAT3", 24, 22),
        (5123, "MAT2", 8, 8),
        (5126, "MAT3", 36, 36),
    ],
)
def test_small_matrices_are_padded_per_column_but_not_after_the_last(
    tmp_path: Path, component: int, type_: str, stride: int, last: int
) -> None:
    """Two matrix elements need one padded element and the last without the padding after its last column."""
    assert gltf_check.element_bytes(component, type_) == stride

    def matrices(view_bytes: int):
        def change(g: dict) -> None:
            g["bufferViews"].append({"buffer": 0, "byteOffset": 0, "byteLength": view_bytes})
            g["accessors"].append(
                {"bufferView": len(g["bufferViews"]) - 1, "componentType": component, "type": type_, "count": 2}
            )

        return change

    assert check_gltf(edit_json(write_gltf(tmp_path / "fits.gltf"), matrices(stride + last))).primitives == 1
    short = edit_json(write_gltf(tmp_path / "short.gltf"), matrices(stride + last - 1))
    assert f"claims 2 elements of {stride} bytes ({stride + last} bytes)" in rejected(short)


def test_a_missing_specular_glossiness_texture_is_refused_as_blender_fails_on_it(tmp_path: Path) -> None:
    """Blender 5.0's importer fails the whole file when a specular-glossiness material's specularGlossinessTexture
    image is missing (measured), and imports it with a missing diffuseTexture or base-colour texture."""

    def spec_gloss(key: str):
        def change(g: dict) -> None:
            texture = g["materials"][0]["pbrMetallicRoughness"].pop("baseColorTexture")
            g["materials"][0]["extensions"] = {"KHR_materials_pbrSpecularGlossiness": {key: texture}}
            g["extensionsUsed"] = ["KHR_materials_pbrSpecularGlossiness"]

        return change

    def model(name: str, key: str | None, image: bytes | None = None) -> Path:
        path = write_gltf(tmp_path / name / "cube.gltf", image_uri="tex.png", image_bytes=image)
        return edit_json(path, spec_gloss(key)) if key else path

    reason = rejected(model("sg", "specularGlossinessTexture"))
    assert (
        reason
        == "material 0: its specularGlossinessTexture image 'tex.png' is missing, which fails Blender's whole import"
    )
    assert check_gltf(model("sg_present", "specularGlossinessTexture", png_header(8, 8))).image_pixels == 64
    assert check_gltf(model("diffuse", "diffuseTexture")).image_pixels == 0
    assert check_gltf(model("metallic_roughness", None)).image_pixels == 0
