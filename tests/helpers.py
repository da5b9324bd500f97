"""Helpers that several test modules share: running the render stage as users do, and generated model files."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
#: Render settings small enough for tests (2 views at 48 px, 4 samples).
FAST_RENDER = [
    "--views",
    "2",
    "--resolution",
    "48",
    "--set",
    "render.samples=4",
    "--set",
    "render.threads_per_worker=2",
]


def blender_request(model: Path, out_dir: Path, specs: list[Any], resolution: int, **overrides: Any) -> Any:
    """The render stage's own Blender request (:func:`render.worker.build_request` with the local config: Cycles on
    the CPU, uniform light, two threads) for ``model`` seen by the camera views ``specs``
    (:class:`invs.cameras.ViewSpec`); ``overrides`` replace request fields (``samples``, ``depth_dtype``, ...)."""
    from invs.config import load_config
    from render.object_ref import ObjectRef
    from render.worker import build_request

    config = load_config("local", {"render.resolution": resolution})
    request = build_request(config, ObjectRef(model.stem, str(model), "local"), model, out_dir, threads=2)
    return request.replace(views=[asdict(s) for s in specs], **overrides)


def local_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the session cluster's address: the job starts its own local Ray instance."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, **(extra or {})}


def render_command(
    objects: str | Path, out: str, *extra: str, address: str | None = None, settings: list[str] | None = None
) -> list[str]:
    """``render/main.py`` as a user runs it, with :data:`FAST_RENDER`, ``--address`` when given and one ``--set``
    per ``settings`` item (``key=value``), then ``extra``."""
    command = [sys.executable, str(REPO / "render/main.py"), "--objects", str(objects), "--out", out, *FAST_RENDER]
    command += ["--address", address] if address else []
    return command + [a for item in settings or [] for a in ("--set", item)] + list(extra)


def render(objects: str, out: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        render_command(objects, out, *extra),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=local_env(env),
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def render_real_objects(
    real_objects: Path, names: tuple[str, ...], factory: Any, views: int = 4, samples: int = 16
) -> str:
    """Render the named real objects (copied to a folder of their own) at 64 px; the render ``--out``."""
    objects = factory.mktemp("objects")
    for name in names:
        shutil.copy(real_objects / name, objects / name)
    out = str(factory.mktemp("renders"))
    extra = ("--views", str(views), "--resolution", "64", "--set", f"render.samples={samples}")
    proc = render(str(objects), out, *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


#: What a job prints when Ray's runtime-env agents of the local nodes, which share one session directory on this
#: host, removed the unpacked working directory under the running job (not a fault of the job).
WORKING_DIR_RACE = "runtime_resources/working_dir_files/"


def ray_job_submit(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``ray job submit ARGS`` from the repository; submitted once more when the job died of
    :data:`WORKING_DIR_RACE` (a ``No such file or directory`` under Ray's unpacked working directory)."""
    from infra import local_ray

    def submit() -> subprocess.CompletedProcess[str]:
        command = [local_ray.ray_binary(), "job", "submit", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)

    proc = submit()
    if proc.returncode != 0 and "No such file or directory" in proc.stdout and WORKING_DIR_RACE in proc.stdout:
        proc = submit()
    return proc


def own_lines(output: str) -> str:
    """A job's own output, without the Ray log lines it forwards (which start with a timestamp or a worker tag)."""
    return "\n".join(ln for ln in output.splitlines() if not ln.lstrip().startswith(("[", "(")))


def copy_objects(real_objects: Path, folder: Path, n: int) -> list[str]:
    """``n`` copies of the real test objects (not the ``problem_`` ones) in a new ``folder``; their uids."""
    folder.mkdir()
    glbs = sorted(p for p in real_objects.glob("*.glb") if not p.name.startswith("problem_"))
    for i in range(n):
        shutil.copy(glbs[i % len(glbs)], folder / f"obj{i:02d}.glb")
    return [f"obj{i:02d}" for i in range(n)]


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """A job started in the background (stdout and stderr together), killed on exit if it still runs."""
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
    try:
        yield job
    finally:
        job.kill()


@contextlib.contextmanager
def extra_nodes(cluster: Any, resources: dict[str, float]) -> Iterator[Callable[[str], None]]:
    """Worker nodes a test adds to the local cluster with ``resources`` (``add(ip)``, before or during a job) and may
    kill: on exit they are removed and the cluster is back to the nodes the other tests know."""
    from infra import local_ray

    added: list[str] = []

    def add(ip: str) -> None:
        added.append(ip)
        local_ray.add_node(cluster.address, ip, resources=resources, object_store_mb=100)

    try:
        yield add
    finally:
        for ip in added:
            local_ray.remove_node(ip)
        local_ray.wait_for_nodes(cluster.address, cluster.num_nodes)


def heavy_ply(path: Path, n: int = 700) -> Path:
    """A binary PLY grid of 2 * n * n triangles: slow enough to import and render to trip a short timeout."""
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    verts = np.stack([u.ravel(), v.ravel(), 0.1 * np.sin(20 * u.ravel()) * np.cos(20 * v.ravel())], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tris = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(verts)}\nproperty float x\n"
        f"property float y\nproperty float z\nelement face {len(tris)}\nproperty list uchar int vertex_indices\n"
        "end_header\n"
    ).encode()
    faces = np.zeros(len(tris), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    faces["n"], faces["i"] = 3, tris
    path.write_bytes(header + verts.astype("<f4").tobytes() + faces.tobytes())
    return path


def make_blend(path: Path, *, camera_and_light: bool = False, invisible: bool = False) -> Path:
    """A .blend with a cube (optionally with a camera and a light, or with a fully transparent material)."""
    code = f"""
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_cube_add(size=0.5)
cube = bpy.context.active_object
if {invisible!r}:
    mat = bpy.data.materials.new("invisible")
    mat.use_nodes = True
    mat.node_tree.nodes["Principled BSDF"].inputs["Alpha"].default_value = 0.0
    cube.data.materials.append(mat)
if {camera_and_light!r}:
    bpy.ops.object.camera_add(location=(3, 0, 0))
    bpy.ops.object.light_add(type="POINT", location=(0, 0, 3))
bpy.ops.wm.save_as_mainfile(filepath={str(path)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    return path


def export_with_blender(source: Path, targets: list[Path]) -> list[Path]:
    """``source`` (a GLB) exported by Blender's own exporters to each of ``targets``, by extension: ``.fbx`` (textures
    embedded), ``.usdz``/``.usd``/``.usdc``/``.usda``, ``.abc``, ``.obj`` (with an ``.mtl`` and its textures written
    beside it)."""
    code = f"""
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath={str(source)!r})
for target in {[str(t) for t in targets]!r}:
    ext = target.rsplit(".", 1)[-1]
    if ext == "fbx":
        bpy.ops.export_scene.fbx(filepath=target, path_mode="COPY", embed_textures=True)
    elif ext in ("usd", "usdc", "usda", "usdz"):
        bpy.ops.wm.usd_export(filepath=target)
    elif ext == "abc":
        bpy.ops.wm.alembic_export(filepath=target)
    elif ext == "obj":
        import os
        for image in bpy.data.images:  # textures as files beside the .obj, named by its .mtl
            if image.packed_file is not None:
                image.filepath_raw = os.path.join(os.path.dirname(target), os.path.splitext(image.name)[0] + ".png")
                image.file_format = "PNG"
                image.save()
                image.unpack(method="REMOVE")
        bpy.ops.wm.obj_export(filepath=target, path_mode="STRIP")
    else:
        raise SystemExit("no exporter for " + ext)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return targets


# ------------------------------------------------------------------------------------------------ generated glTF

#: A unit cube: 8 corners and 12 triangles (counter-clockwise seen from outside).
_CUBE_VERTICES = np.array([(x, y, z) for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], dtype="<f4")
_CUBE_TRIANGLES = np.array(
    [0, 1, 3, 0, 3, 2, 4, 6, 7, 4, 7, 5, 0, 4, 5, 0, 5, 1, 2, 3, 7, 2, 7, 6, 0, 2, 6, 0, 6, 4, 1, 5, 7, 1, 7, 3],
    dtype="<u2",
).reshape(-1, 3)


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG (signature and IHDR) declaring ``width`` x ``height``: what a header check reads."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def write_gltf(
    path: Path,
    *,
    buffer_uri: str | None = None,
    depth: int = 1,
    claimed_vertices: int | None = None,
    image_uri: str | None = None,
    image_bytes: bytes | None = None,
    last_index: int | None = None,
    material: dict | None = None,
) -> Path:
    """A glTF 2.0 cube at ``path`` (``.gltf``: JSON; ``.glb``: binary with the buffer in its BIN chunk).

    ``buffer_uri``: where the JSON says the geometry buffer is (the bytes are written there, relative to the file;
    None: a base64 ``data:`` URI, or the BIN chunk of a ``.glb``). ``depth``: the cube hangs at the end of a chain
    of that many nodes. ``claimed_vertices``: the vertex count the position accessor claims (the data stays 8
    vertices). ``last_index``: the value of the last triangle index (out of range: a file that passes every
    structural check and still breaks an importer). ``image_uri`` / ``image_bytes``: a base-colour texture read from
    that URI (``image_bytes`` written there when it is a relative path; URIs are percent-decoded into file names)
    or, with ``image_bytes`` alone, stored in the buffer. ``material``: the cube's glTF material (none: Blender's
    default surface).
    """
    import base64
    import json
    import urllib.parse

    path.parent.mkdir(parents=True, exist_ok=True)
    triangles = _CUBE_TRIANGLES.copy()
    if last_index is not None:
        triangles[-1, -1] = last_index
    data = _CUBE_VERTICES.tobytes() + triangles.tobytes()
    views = [
        {"buffer": 0, "byteOffset": 0, "byteLength": _CUBE_VERTICES.nbytes, "target": 34962},
        {"buffer": 0, "byteOffset": _CUBE_VERTICES.nbytes, "byteLength": _CUBE_TRIANGLES.nbytes, "target": 34963},
    ]
    attributes = {"POSITION": 0}
    accessors = [
        {
            "bufferView": 0,
            "componentType": 5126,
            "count": claimed_vertices if claimed_vertices is not None else len(_CUBE_VERTICES),
            "type": "VEC3",
            "min": [-0.5, -0.5, -0.5],
            "max": [0.5, 0.5, 0.5],
        },
        {"bufferView": 1, "componentType": 5123, "count": _CUBE_TRIANGLES.size, "type": "SCALAR"},
    ]
    gltf: dict = {"asset": {"version": "2.0", "generator": "invs tests"}}
    primitive: dict = {"attributes": attributes, "indices": 1}
    if image_uri is not None or image_bytes is not None:
        uv = (_CUBE_VERTICES[:, :2] + 0.5).astype("<f4")
        data += uv.tobytes()
        views.append({"buffer": 0, "byteOffset": len(data) - uv.nbytes, "byteLength": uv.nbytes})
        accessors.append({"bufferView": len(views) - 1, "componentType": 5126, "count": len(uv), "type": "VEC2"})
        attributes["TEXCOORD_0"] = len(accessors) - 1
        if image_uri is not None:
            image: dict = {"uri": image_uri}
            if image_bytes is not None and "://" not in image_uri and not image_uri.startswith(("/", "data:")):
                target = path.parent / urllib.parse.unquote(image_uri)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(image_bytes)
        else:
            assert image_bytes is not None
            data += b"\0" * (-len(data) % 4)
            views.append({"buffer": 0, "byteOffset": len(data), "byteLength": len(image_bytes)})
            data += image_bytes
            image = {"bufferView": len(views) - 1, "mimeType": "image/png"}
        gltf |= {
            "images": [image],
            "textures": [{"source": 0}],
            "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
        }
        primitive["material"] = 0
    elif material is not None:
        gltf["materials"] = [material]
        primitive["material"] = 0
    data += b"\0" * (-len(data) % 4)
    buffer: dict = {"byteLength": len(data)}
    glb = path.suffix.lower() == ".glb"
    if buffer_uri is not None:
        buffer["uri"] = buffer_uri
        target = path.parent / urllib.parse.unquote(buffer_uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    elif not glb:
        buffer["uri"] = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
    nodes = [{"children": [i + 1]} for i in range(depth - 1)] + [{"mesh": 0}]
    gltf |= {
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": nodes,
        "meshes": [{"primitives": [primitive]}],
        "buffers": [buffer],
        "bufferViews": views,
        "accessors": accessors,
    }
    text = json.dumps(gltf).encode()
    if not glb:
        path.write_bytes(text)
        return path
    import struct

    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<I4s", len(text), b"JSON") + text
    if buffer_uri is None:
        chunks += struct.pack("<I4s", len(data), b"BIN\0") + data
    path.write_bytes(b"glTF" + struct.pack("<II", 2, 12 + len(chunks)) + chunks)
    return path


def write_faulty_objects(folder: Path) -> dict[str, list[str]]:
    """Generated glTF cubes that each carry one fault the quality flags name (:mod:`invs.quality`); returns the
    file stem -> the object flags its render must get (``ghost`` renders empty and fails)."""
    import json

    colour = {"pbrMetallicRoughness": {"baseColorFactor": [0.8, 0.3, 0.1, 1.0], "metallicFactor": 0.0}}
    write_gltf(folder / "no_material.gltf")
    write_gltf(folder / "missing_texture.gltf", image_uri="absent.png")
    unlit = write_gltf(folder / "unlit.gltf", material=colour | {"extensions": {"KHR_materials_unlit": {}}})
    gltf = json.loads(unlit.read_text())
    unlit.write_text(json.dumps(gltf | {"extensionsUsed": ["KHR_materials_unlit"]}))
    hidden = {"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 0.0]}, "alphaMode": "BLEND"}
    write_gltf(folder / "ghost.gltf", material=hidden)
    # A visible cube beside an invisible one 10 times its size: normalisation shrinks the visible one to a speck.
    speck = write_gltf(folder / "speck.gltf", material=colour)
    gltf = json.loads(speck.read_text())
    gltf["materials"].append(hidden)
    gltf["meshes"].append({"primitives": [dict(gltf["meshes"][0]["primitives"][0], material=1)]})
    gltf["nodes"].append({"mesh": 1, "scale": [10, 10, 10], "translation": [0, 0, 0]})
    gltf["scenes"][0]["nodes"].append(len(gltf["nodes"]) - 1)
    speck.write_text(json.dumps(gltf))
    return {
        "no_material": ["no_material"],
        "missing_texture": ["missing_texture"],
        "unlit": ["constant_color"],
        "ghost": ["empty"],
        "speck": ["nearly_empty", "too_small"],
    }
