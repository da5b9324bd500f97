"""Helpers that several test modules share: running the render stage as users do, and generated model files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def local_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the session cluster's address: the job starts its own local Ray instance."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, **(extra or {})}


def render(objects: str, out: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "render/main.py"), "--objects", objects, "--out", out, *FAST_RENDER, *extra],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=local_env(env),
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


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
