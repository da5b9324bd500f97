"""Procedural objects: as many distinct, asymmetric objects as wanted, from a seed, offline (``--objects
procedural:N``).

Object ``i`` (uid ``proc_NNNNN``) is drawn from ``numpy.random.default_rng([SEED, i])``, so the same index gives the
same GLB bytes everywhere and any number of objects can be rendered without a download. Each object is a body and
one to three attached parts:

* **bodies**: a lathed profile (a vase, a bottle, a cup: 3-6 random radii up a random height), a box of random
  proportions, or an extruded irregular polygon (5-8 corners) of random depth;
* **parts**: boxes, knobs (lathed) and spheres at random heights and azimuths on the body's side or on its top, so
  that the silhouette differs from every side; sometimes a tilt;
* **materials**: flat colours of random hue, saturation and value, or textures drawn with Pillow: stripes (random
  count, width and direction), checkers (random cells), printed text (a random word), dots; every part its own.

Conventions as :mod:`render.samples` (glTF: +Y up, metres, counter-clockwise front faces, explicit normals, sizes
about one unit; the renderer normalises every object anyway). Deterministic for given library versions.
"""

from __future__ import annotations

import colorsys

import numpy as np
import trimesh
from PIL import Image, ImageDraw
from trimesh.exchange.gltf import export_glb

from render.samples import (
    _BOX_FACES,
    RGB,
    Part,
    _face_corners,
    _fit_font,
    _grid,
    _lathe,
    _material,
    _merge,
    _mesh,
    _orient,
    _rotation,
    _scene,
    _sphere,
    _transform,
)

#: The generator's seed: changing it gives another family of objects.
SEED = 20261204
PREFIX = "proc_"
_WORDS = ("AB", "KEY", "ZOO", "MAP", "SUN", "FOX", "INK", "JET", "OWL", "RAY", "VAN", "WEB", "YAK", "7", "42", "Q")
_TEXTURE_SIZE = 256


def uid(index: int) -> str:
    """The uid of object ``index``: ``proc_00042``."""
    return f"{PREFIX}{index:05d}"


def index_of(name: str) -> int:
    """The index of ``proc_00042`` or ``42``; ValueError for anything else."""
    text = name.removeprefix(PREFIX)
    if not text.isdigit():
        raise ValueError(f"not a procedural object: {name!r} (expected {PREFIX}NNNNN or a number)")
    return int(text)


# ------------------------------------------------------------------------------------------------ materials


def _colour(rng: np.random.Generator, light: bool | None = None) -> RGB:
    hue, sat = rng.uniform(0, 1), rng.uniform(0.35, 0.95)
    value = rng.uniform(0.75, 0.98) if light else rng.uniform(0.25, 0.6) if light is False else rng.uniform(0.3, 0.95)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, value)
    return round(255 * r), round(255 * g), round(255 * b)


def _texture(rng: np.random.Generator) -> Image.Image:
    """One of stripes, checker, text or dots, in two random colours (one light, one dark)."""
    size = _TEXTURE_SIZE
    light, dark = _colour(rng, light=True), _colour(rng, light=False)
    image = Image.new("RGB", (size, size), light)
    draw = ImageDraw.Draw(image)
    kind = rng.choice(["stripes", "checker", "text", "dots"])
    if kind == "stripes":
        count, width = int(rng.integers(3, 9)), float(rng.uniform(0.25, 0.6))
        step = size / count
        for k in range(count):
            a, b = k * step, k * step + width * step
            box = (a, 0, b, size) if rng.uniform() < 0.5 or k == 0 else (0, a, size, b)
            draw.rectangle(box, fill=dark)
    elif kind == "checker":
        cells = int(rng.integers(2, 7))
        step = size / cells
        for i in range(cells):
            for j in range(cells):
                if (i + j) % 2 == 0:
                    draw.rectangle((i * step, j * step, (i + 1) * step, (j + 1) * step), fill=dark)
    elif kind == "text":
        word = str(rng.choice(_WORDS))
        font = _fit_font(draw, word, int(0.8 * size), int(0.6 * size))
        draw.text((size / 2, size / 2), word, font=font, fill=dark, anchor="mm")
    else:
        for _ in range(int(rng.integers(4, 12))):
            x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.04, 0.12) * size
            draw.ellipse((x - r, y - r, x + r, y + r), fill=dark)
    return image


def _random_material(rng: np.random.Generator, name: str, textured: bool) -> trimesh.visual.material.PBRMaterial:
    roughness = float(rng.uniform(0.3, 0.85))
    if textured and rng.uniform() < 0.6:
        return _material(name, (255, 255, 255), texture=_texture(rng), roughness=roughness)
    return _material(name, _colour(rng), roughness=roughness)


# ------------------------------------------------------------------------------------------------ shapes


def _box_uv(size: tuple[float, float, float], center: tuple[float, float, float]) -> Part:
    """A box whose every face maps the whole texture (flat shading)."""
    vertices, faces, normals, uvs = [], [], [], []
    for i, (normal, right, up) in enumerate(_BOX_FACES):
        vertices.append(_face_corners(np.asarray(size) / 2.0, normal, right, up) + np.asarray(center))
        normals.append(np.tile(np.asarray(normal, dtype=float), (4, 1)))
        uvs.append(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))
        faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + 4 * i)
    v, n = np.concatenate(vertices).astype(float), np.concatenate(normals)
    return v, _orient(v, np.concatenate(faces), n), n, np.concatenate(uvs)


def _prism(outline: np.ndarray, depth: float) -> Part:
    """An irregular polygon (counter-clockwise (x, y) corners, star-shaped around the origin) extruded along z;
    the sides map the texture around the perimeter."""
    parts = []
    for z, sign in ((depth / 2, 1.0), (-depth / 2, -1.0)):
        v = np.vstack([[0.0, 0.0, z], np.column_stack([outline, np.full(len(outline), z)])])
        n = np.tile([0.0, 0.0, sign], (len(v), 1))
        k = len(outline)
        fan = np.array([[0, 1 + i, 1 + (i + 1) % k] for i in range(k)])
        uv = 0.5 + 0.5 * v[:, :2] / max(np.abs(outline).max(), 1e-6)
        parts.append((v, _orient(v, fan, n), n, uv))
    perimeter = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(outline, axis=0, append=outline[:1]), axis=1))])
    for i in range(len(outline)):
        a, b = outline[i], outline[(i + 1) % len(outline)]
        edge = b - a
        normal = np.array([edge[1], -edge[0], 0.0]) / np.hypot(*edge)
        v = np.array([[*a, depth / 2], [*b, depth / 2], [*b, -depth / 2], [*a, -depth / 2]])
        u0, u1 = perimeter[i] / perimeter[-1], perimeter[i + 1] / perimeter[-1]
        uv = np.array([[u0, 1.0], [u1, 1.0], [u1, 0.0], [u0, 0.0]])
        n = np.tile(normal, (4, 1))
        parts.append((v, _orient(v, np.array([[0, 1, 2], [0, 2, 3]]), n), n, uv))
    return _merge(parts)


def _body(rng: np.random.Generator) -> Part:
    """The body, centred on the vertical axis."""
    kind = rng.choice(["lathe", "box", "prism"])
    if kind == "lathe":
        height, count = float(rng.uniform(0.5, 1.1)), int(rng.integers(3, 7))
        ys = np.linspace(-height / 2, height / 2, count)
        radii = rng.uniform(0.12, 0.45, count)
        profile = [(0.0, ys[0]), *((float(r), float(y)) for r, y in zip(radii, ys, strict=True)), (0.0, ys[-1])]
        return _lathe(profile, sections=48)
    if kind == "box":
        size = tuple(float(x) for x in rng.uniform(0.25, 0.9, 3))
        return _box_uv(size, (0.0, 0.0, 0.0))
    corners = int(rng.integers(5, 9))
    # Evenly spread corners, jittered: the outline stays star-shaped around the origin (its caps are fans from it).
    angles = (np.arange(corners) + rng.uniform(-0.3, 0.3, corners)) * 2 * np.pi / corners
    radii = rng.uniform(0.2, 0.5, corners)
    outline = np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])
    depth = float(rng.uniform(0.15, 0.5))
    # Stand the prism up (its outline in the vertical xy plane) or lay it flat (outline in xz), at random.
    part = _prism(outline, depth)
    if rng.uniform() < 0.5:
        part = _transform(part, _rotation((1, 0, 0), -90.0, (0, 0, 0)))
    return part


def _surface_point(body: np.ndarray, rng: np.random.Generator, size: float) -> np.ndarray:
    """Where an attachment of ``size`` sits, touching the body (vertices ``body``): on its side, at a random
    azimuth and height, as far out as the body reaches there; or on its top, off the axis."""
    top = float(body[:, 1].max())
    if rng.uniform() < 0.35:
        azimuth = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(azimuth), 0.0, -np.sin(azimuth)])
        reach = rng.uniform(0.1, 0.6) * float((body @ direction).max())
        return reach * direction + np.array([0.0, top + 0.3 * size, 0.0])
    azimuth = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(azimuth), 0.0, -np.sin(azimuth)])
    height = rng.uniform(0.2, 0.8) * float(body[:, 1].min()) + rng.uniform(0, 0.8) * top
    near = body[np.abs(body[:, 1] - height) < 0.1]
    reach = float(((near if len(near) else body) @ direction).max())
    return reach * direction + np.array([0.0, height, 0.0]) + 0.3 * size * direction


def _attachment(rng: np.random.Generator, body: np.ndarray) -> Part:
    """A box, knob or sphere touching the body (vertices ``body``) on its side or its top, off the axis."""
    kind = rng.choice(["box", "knob", "sphere"])
    size = float(rng.uniform(0.08, 0.25))
    center = _surface_point(body, rng, size)
    if kind == "box":
        dims = tuple(float(x) for x in size * rng.uniform(0.5, 1.6, 3))
        part = _box_uv(dims, tuple(center))
    elif kind == "knob":
        h = size * float(rng.uniform(0.5, 1.5))
        base = center[1] - h / 2
        part = _lathe(
            [(0.0, base), (size / 2, base), (size / 3, base + h), (0.0, base + h)],
            sections=24,
            center=(center[0], center[2]),
        )
    else:
        part = _grid(_sphere(center, size / 2), 16, 8)
    if rng.uniform() < 0.4:
        part = _transform(part, _rotation(tuple(rng.normal(size=3)), float(rng.uniform(-40, 40)), tuple(center)))
    return part


def procedural_scene(index: int) -> trimesh.Scene:
    """Object ``index``'s scene (see the module docstring)."""
    if index < 0:
        raise ValueError(f"procedural objects are numbered from 0, got {index}")
    rng = np.random.default_rng([SEED, index])
    name = uid(index)
    body = _body(rng)
    meshes = [("body", _mesh(body, _random_material(rng, f"{name}_body", textured=True)))]
    for k in range(int(rng.integers(1, 4))):
        part = _attachment(rng, body[0])
        material = _random_material(rng, f"{name}_part{k}", textured=part[3] is not None)
        meshes.append((f"part{k}", _mesh(part, material)))
    return _scene(name, meshes)


def procedural_bytes(index: int) -> bytes:
    """The GLB bytes of object ``index``; the same bytes on every call."""
    return export_glb(procedural_scene(index), include_normals=True)
