"""Built-in sample objects, generated in code so that the demo renders offline (``--objects samples``).

Five small, asymmetric objects, each exported as one binary glTF (GLB) with PBR materials:

* ``text_block`` — a box whose six faces carry large dark words on light backgrounds ("iNVS" front, "NOVEL VIEW"
  back, "LEFT", "RIGHT", "TOP", "BASE"), read correctly (not mirrored, upright) from outside;
* ``checker_torus`` — a ring with a rainbow checker texture, so every azimuth shows different colours;
* ``mug`` — a hollow red mug with a cream handle and a cream inside floor;
* ``robot`` — a box robot of six coloured materials, one arm raised and the antenna to one side;
* ``arrow_sign`` — a thick arrow (red front, blue back, white edges) on a post with a round base.

Conventions: glTF's (+Y up, front faces +Z, metres, counter-clockwise front faces), sizes about one unit around
the origin, every vertex carries an explicit normal. UVs use trimesh's convention (v = 0 at the image's bottom row);
trimesh flips v when it writes glTF. The bytes are deterministic: no randomness, no timestamps, PNG textures drawn
with Pillow's built-in scalable font (Pillow >= 10.1), so two generations with the same library versions are equal.
"""

from __future__ import annotations

import colorsys
import itertools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image, ImageDraw, ImageFont
from trimesh.exchange.gltf import export_glb
from trimesh.visual import TextureVisuals
from trimesh.visual.material import PBRMaterial

SAMPLE_NAMES: tuple[str, ...] = ("text_block", "checker_torus", "mug", "robot", "arrow_sign")

RGB = tuple[int, int, int]
# A mesh part before it becomes a Trimesh: vertices (n, 3), faces (m, 3), normals (n, 3), uv (n, 2) or None.
Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]


# ------------------------------------------------------------------------------------------------ geometry helpers


def _orient(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Flip every triangle whose winding disagrees with its vertex normals, so front faces are counter-clockwise."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = np.einsum("ij,ij->i", cross, normals[faces].sum(axis=1)) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, ::-1]
    return faces


def _drop_degenerate(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return faces[area > 1e-12]


def _grid(surface: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], nu: int, nv: int) -> Part:
    """A (nu x nv)-cell parametric surface; ``surface(u, v)`` maps [0, 1]^2 to (points, normals), uv = (u, v)."""
    u, v = np.meshgrid(np.linspace(0.0, 1.0, nu + 1), np.linspace(0.0, 1.0, nv + 1), indexing="ij")
    points, normals = surface(u.ravel(), v.ravel())
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    faces = _drop_degenerate(points, faces)
    return points, _orient(points, faces, normals), normals, np.stack([u.ravel(), v.ravel()], axis=1)


def _lathe(profile: list[tuple[float, float]], sections: int = 48, center: tuple[float, float] = (0.0, 0.0)) -> Part:
    """Revolve a (radius, y) polyline around the vertical axis at ``center`` (x, z); one hard-edged strip a segment."""
    parts = []
    for (r0, y0), (r1, y1) in itertools.pairwise(profile):
        n_r, n_y = y1 - y0, -(r1 - r0)  # the profile's normal in the (radius, y) half-plane
        length = float(np.hypot(n_r, n_y))

        def strip(u: np.ndarray, v: np.ndarray, r0=r0, y0=y0, r1=r1, y1=y1, n_r=n_r / length, n_y=n_y / length):
            theta = 2.0 * np.pi * u
            r, y = r0 + (r1 - r0) * v, y0 + (y1 - y0) * v
            cos, sin = np.cos(theta), np.sin(theta)
            points = np.stack([center[0] + r * cos, y, center[1] - r * sin], axis=1)
            normals = np.stack([n_r * cos, np.full_like(u, n_y), -n_r * sin], axis=1)
            return points, normals

        parts.append(_grid(strip, sections, 1))
    return _merge(parts)


def _box(size: tuple[float, float, float], center: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Part:
    """An axis-aligned box with 4 vertices per face (flat shading), no UVs."""
    vertices, faces, normals = [], [], []
    for normal, right, up in _BOX_FACES:
        vertices.append(_face_corners(np.asarray(size) / 2.0, normal, right, up) + np.asarray(center))
        normals.append(np.tile(normal, (4, 1)))
        base = 4 * len(faces)
        faces.append(np.array([[base, base + 1, base + 2], [base, base + 2, base + 3]]))
    v, n = np.concatenate(vertices).astype(float), np.concatenate(normals).astype(float)
    return v, _orient(v, np.concatenate(faces), n), n, None


# (outward normal, right, up) of each box face as seen from outside: right x up = normal, so text is not mirrored.
_BOX_FACES: tuple[tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]], ...] = (
    ((0, 0, 1), (1, 0, 0), (0, 1, 0)),  # front
    ((0, 0, -1), (-1, 0, 0), (0, 1, 0)),  # back
    ((-1, 0, 0), (0, 0, 1), (0, 1, 0)),  # left
    ((1, 0, 0), (0, 0, -1), (0, 1, 0)),  # right
    ((0, 1, 0), (1, 0, 0), (0, 0, -1)),  # top: the front edge at the bottom of the image
    ((0, -1, 0), (1, 0, 0), (0, 0, 1)),  # bottom
)


def _face_corners(half: np.ndarray, normal: tuple, right: tuple, up: tuple) -> np.ndarray:
    """Corners (bottom-left, bottom-right, top-right, top-left) of one face of a box with half-extents ``half``."""
    n, r, u = (np.asarray(x, dtype=float) for x in (normal, right, up))
    c, rr, uu = n * half, r * half, u * half
    return np.stack([c - rr - uu, c + rr - uu, c + rr + uu, c - rr + uu])


def _transform(part: Part, matrix: np.ndarray) -> Part:
    vertices, faces, normals, uv = part
    rot = matrix[:3, :3]
    normals = normals @ np.linalg.inv(rot)  # inverse-transpose, applied to row vectors
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    return vertices @ rot.T + matrix[:3, 3], faces, normals, uv


def _merge(parts: list[Part]) -> Part:
    vertices, faces, normals, uvs, offset = [], [], [], [], 0
    for v, f, n, uv in parts:
        vertices.append(v)
        faces.append(f + offset)
        normals.append(n)
        uvs.append(uv)
        offset += len(v)
    uv = None if any(x is None for x in uvs) else np.concatenate(uvs)
    return np.concatenate(vertices), np.concatenate(faces), np.concatenate(normals), uv


def _material(name: str, color: RGB, texture: Image.Image | None = None, roughness: float = 0.7) -> PBRMaterial:
    return PBRMaterial(
        name=name,
        baseColorFactor=None if texture is not None else (*color, 255),
        baseColorTexture=texture,
        metallicFactor=0.0,
        roughnessFactor=roughness,
    )


def _mesh(part: Part, material: PBRMaterial) -> trimesh.Trimesh:
    vertices, faces, normals, uv = part
    return trimesh.Trimesh(
        vertices=vertices.astype(np.float32),
        faces=faces.astype(np.int64),
        vertex_normals=normals.astype(np.float32),
        visual=TextureVisuals(uv=None if uv is None else uv.astype(np.float32), material=material),
        process=False,
    )


def _scene(name: str, meshes: list[tuple[str, trimesh.Trimesh]]) -> trimesh.Scene:
    scene = trimesh.Scene()
    for part, mesh in meshes:
        scene.add_geometry(mesh, geom_name=f"{name}_{part}", node_name=f"{name}_{part}")
    return scene


def _rotation(axis: tuple[float, float, float], degrees: float, pivot: tuple[float, float, float]) -> np.ndarray:
    return trimesh.transformations.rotation_matrix(np.radians(degrees), axis, point=pivot)


# ------------------------------------------------------------------------------------------------ text_block

# Box size (x, y, z) and texture density; each face gets its own tile of the 1024x1024 atlas.
_BLOCK_SIZE = (1.0, 0.7, 0.5)
_ATLAS = 1024
# face index (as in _BOX_FACES) -> (tile x0, y0, x1, y1 in image pixels, y down), word, background colour
_BLOCK_TILES: tuple[tuple[tuple[int, int, int, int], str, RGB], ...] = (
    ((0, 0, 512, 358), "iNVS", (250, 250, 245)),
    ((512, 0, 1024, 358), "NOVEL\nVIEW", (255, 221, 87)),
    ((0, 358, 256, 716), "LEFT", (150, 205, 255)),
    ((256, 358, 512, 716), "RIGHT", (160, 230, 160)),
    ((512, 358, 1024, 614), "TOP", (255, 180, 200)),
    ((512, 614, 1024, 870), "BASE", (205, 205, 205)),
)
_INK: RGB = (20, 20, 30)


def _fit_font(draw: ImageDraw.ImageDraw, text: str, width: int, height: int) -> ImageFont.FreeTypeFont:
    """The largest built-in font size at which ``text`` fits in ``width`` x ``height`` pixels."""
    lo, hi = 8, 400
    while lo < hi:
        mid = (lo + hi + 1) // 2
        font = ImageFont.load_default(size=mid)
        x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), text, font=font, align="center", stroke_width=mid // 25)
        if x1 - x0 <= width and y1 - y0 <= height:
            lo = mid
        else:
            hi = mid - 1
    return ImageFont.load_default(size=lo)  # type: ignore[return-value]


def text_texture() -> Image.Image:
    """The text block's texture atlas: one light tile with one large dark word (or two lines) per face."""
    image = Image.new("RGB", (_ATLAS, _ATLAS), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    for (x0, y0, x1, y1), word, background in _BLOCK_TILES:
        border = 10
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=_INK)
        draw.rectangle((x0 + border, y0 + border, x1 - 1 - border, y1 - 1 - border), fill=background)
        w, h = x1 - x0, y1 - y0
        font = _fit_font(draw, word, int(0.8 * w), int(0.62 * h))
        stroke = int(font.size) // 25
        center = ((x0 + x1) / 2, (y0 + y1) / 2)
        draw.multiline_text(
            center, word, font=font, fill=_INK, anchor="mm", align="center", stroke_width=stroke, stroke_fill=_INK
        )
    return image


def _text_block() -> trimesh.Scene:
    half = np.asarray(_BLOCK_SIZE) / 2.0
    inset = 1.5  # pixels: keep bilinear filtering inside each tile
    vertices, faces, normals, uvs = [], [], [], []
    for i, ((normal, right, up), ((x0, y0, x1, y1), _, _)) in enumerate(zip(_BOX_FACES, _BLOCK_TILES, strict=True)):
        vertices.append(_face_corners(half, normal, right, up))
        normals.append(np.tile(np.asarray(normal, dtype=float), (4, 1)))
        left, right_u = (x0 + inset) / _ATLAS, (x1 - inset) / _ATLAS
        bottom, top = 1.0 - (y1 - inset) / _ATLAS, 1.0 - (y0 + inset) / _ATLAS
        uvs.append(np.array([[left, bottom], [right_u, bottom], [right_u, top], [left, top]]))
        faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + 4 * i)
    v, n = np.concatenate(vertices), np.concatenate(normals)
    part = (v, _orient(v, np.concatenate(faces), n), n, np.concatenate(uvs))
    material = _material("text_block_words", (255, 255, 255), texture=text_texture(), roughness=0.8)
    return _scene("text_block", [("body", _mesh(part, material))])


# ------------------------------------------------------------------------------------------------ checker_torus


def checker_texture(width: int = 512, height: int = 256, cells: tuple[int, int] = (16, 8)) -> Image.Image:
    """Rainbow checker: the hue of the coloured cells turns once around the ring, the other cells are near-white."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    cw, ch = width // cells[0], height // cells[1]
    for i in range(cells[0]):
        r, g, b = colorsys.hsv_to_rgb(i / cells[0], 0.85, 0.95)
        hue: RGB = (round(255 * r), round(255 * g), round(255 * b))
        for j in range(cells[1]):
            fill = hue if (i + j) % 2 == 0 else (245, 245, 240)
            draw.rectangle((i * cw, j * ch, (i + 1) * cw - 1, (j + 1) * ch - 1), fill=fill)
    return image


def _checker_torus() -> trimesh.Scene:
    major, minor = 0.42, 0.18

    def surface(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta, phi = 2.0 * np.pi * u, -2.0 * np.pi * v
        ring = np.stack([np.cos(theta), np.zeros_like(theta), -np.sin(theta)], axis=1)
        normals = ring * np.cos(phi)[:, None] + np.array([0.0, 1.0, 0.0]) * np.sin(phi)[:, None]
        return major * ring + minor * normals, normals

    # Tilt the ring so that no view sees it exactly edge-on or exactly as a circle.
    part = _transform(_grid(surface, 64, 32), _rotation((1.0, 0.0, 0.3), 25.0, (0.0, 0.0, 0.0)))
    material = _material("checker_torus_checker", (255, 255, 255), texture=checker_texture(), roughness=0.5)
    return _scene("checker_torus", [("ring", _mesh(part, material))])


# ------------------------------------------------------------------------------------------------ mug


def _mug() -> trimesh.Scene:
    radius, height, wall, floor = 0.3, 0.72, 0.03, 0.05
    y0 = -height / 2
    body = _lathe(
        [(0.0, y0), (radius, y0), (radius, y0 + height), (radius - wall, y0 + height), (radius - wall, y0 + floor)],
        sections=64,
    )
    inside_floor = _lathe([(radius - wall, y0 + floor), (0.0, y0 + floor)], sections=64)
    handle_r, tube = 0.2, 0.04
    handle_x = radius - wall / 2

    def handle_surface(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta, phi = np.pi * (u - 0.5), 2.0 * np.pi * v  # half a ring, in the xy plane, bulging towards +x
        ring = np.stack([np.cos(theta), np.sin(theta), np.zeros_like(theta)], axis=1)
        normals = ring * np.cos(phi)[:, None] + np.array([0.0, 0.0, 1.0]) * np.sin(phi)[:, None]
        return np.array([handle_x, 0.02, 0.0]) + handle_r * ring + tube * normals, normals

    # Squashed towards the body (a D-shaped handle); its ends stay inside the wall at x = handle_x.
    squash = np.diag([0.8, 1.0, 1.0, 1.0])
    squash[0, 3] = 0.2 * handle_x
    v, f, n, _ = _transform(_grid(handle_surface, 32, 16), squash)
    handle = (v, f, n, None)
    red = _material("mug_glaze", (200, 35, 40), roughness=0.35)
    cream = _material("mug_cream", (245, 235, 210), roughness=0.45)
    return _scene(
        "mug",
        [
            ("body", _mesh((*body[:3], None), red)),
            ("floor", _mesh((*inside_floor[:3], None), cream)),
            ("handle", _mesh(handle, cream)),
        ],
    )


# ------------------------------------------------------------------------------------------------ robot


def _robot() -> trimesh.Scene:
    steel = _material("robot_steel", (70, 110, 170), roughness=0.4)
    light = _material("robot_light", (215, 215, 220), roughness=0.5)
    dark = _material("robot_dark", (45, 45, 50), roughness=0.6)
    orange = _material("robot_orange", (240, 130, 30), roughness=0.5)
    yellow = _material("robot_yellow", (255, 220, 40), roughness=0.3)
    red = _material("robot_red", (220, 30, 40), roughness=0.3)

    torso = _box((0.5, 0.55, 0.3), (0.0, 0.0, 0.0))
    head = _box((0.36, 0.28, 0.3), (0.0, 0.43, 0.0))
    neck = _box((0.12, 0.06, 0.12), (0.0, 0.3, 0.0))
    legs = [_box((0.15, 0.4, 0.18), (x, -0.48, 0.0)) for x in (-0.13, 0.13)]
    feet = [_box((0.17, 0.07, 0.3), (x, -0.715, 0.06)) for x in (-0.13, 0.13)]
    left_arm = _transform(_box((0.11, 0.45, 0.13), (-0.32, -0.05, 0.0)), _rotation((0, 0, 1), -12.0, (-0.3, 0.2, 0)))
    # The right arm (at +x) is raised sideways: the robot is waving.
    right_arm = _transform(_box((0.11, 0.45, 0.13), (0.32, -0.05, 0.0)), _rotation((0, 0, 1), 150.0, (0.3, 0.2, 0)))
    hands = [
        _transform(_box((0.14, 0.1, 0.16), (-0.32, -0.32, 0.0)), _rotation((0, 0, 1), -12.0, (-0.3, 0.2, 0))),
        _transform(_box((0.14, 0.1, 0.16), (0.32, -0.32, 0.0)), _rotation((0, 0, 1), 150.0, (0.3, 0.2, 0))),
    ]
    eyes = [_box((0.07, 0.06, 0.03), (x, 0.47, 0.16)) for x in (-0.08, 0.08)]
    mouth = _box((0.18, 0.03, 0.02), (0.0, 0.36, 0.155))
    badge = _box((0.14, 0.14, 0.03), (0.11, 0.1, 0.16))  # off-centre chest panel
    antenna_x = -0.1
    antenna = _lathe([(0.0, 0.57), (0.015, 0.57), (0.015, 0.72), (0.0, 0.72)], sections=16, center=(antenna_x, 0.0))
    ball = _grid(_sphere(np.array([antenna_x, 0.75, 0.0]), 0.04), 16, 8)

    def mesh(parts: list[Part], material: PBRMaterial) -> trimesh.Trimesh:
        merged = _merge([(v, f, n, None) for v, f, n, _ in parts])
        return _mesh(merged, material)

    return _scene(
        "robot",
        [
            ("body", mesh([torso, left_arm, right_arm], steel)),
            ("head", mesh([head, *hands], light)),
            ("joints", mesh([neck, *legs, antenna, mouth], dark)),
            ("feet", mesh([*feet, badge], orange)),
            ("eyes", mesh(eyes, yellow)),
            ("antenna_ball", mesh([ball], red)),
        ],
    )


def _sphere(center: np.ndarray, radius: float) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def surface(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta, phi = 2.0 * np.pi * u, np.pi * (v - 0.5)
        normals = np.stack([np.cos(phi) * np.cos(theta), np.sin(phi), -np.cos(phi) * np.sin(theta)], axis=1)
        return center + radius * normals, normals

    return surface


# ------------------------------------------------------------------------------------------------ arrow_sign


def _arrow_sign() -> trimesh.Scene:
    # The arrow outline in the xy plane (counter-clockwise), pointing +x, and its triangulation.
    outline = np.array(
        [(-0.45, -0.09), (0.1, -0.09), (0.1, -0.25), (0.45, 0.0), (0.1, 0.25), (0.1, 0.09), (-0.45, 0.09)]
    )
    triangles = np.array([[0, 1, 5], [0, 5, 6], [2, 3, 4]])
    lift, depth = 0.3, 0.12
    outline = outline + np.array([0.0, lift])

    def cap(z: float) -> Part:
        v = np.column_stack([outline, np.full(len(outline), z)])
        n = np.tile([0.0, 0.0, np.sign(z)], (len(v), 1))
        return v, _orient(v, triangles, n), n, None

    sides = []
    for a, b in zip(outline, np.roll(outline, -1, axis=0), strict=True):
        edge = b - a
        normal = np.array([edge[1], -edge[0], 0.0]) / np.hypot(*edge)  # outward for a counter-clockwise outline
        v = np.array([[*a, depth / 2], [*b, depth / 2], [*b, -depth / 2], [*a, -depth / 2]])
        n = np.tile(normal, (4, 1))
        sides.append((v, _orient(v, np.array([[0, 1, 2], [0, 2, 3]]), n), n, None))
    post_x, post_top = -0.2, lift - 0.09
    post = _lathe([(0.035, -0.5), (0.035, post_top), (0.0, post_top)], sections=24, center=(post_x, 0.0))
    base = _lathe([(0.0, -0.55), (0.2, -0.55), (0.2, -0.5), (0.0, -0.5)], sections=48, center=(post_x, 0.0))
    return _scene(
        "arrow_sign",
        [
            ("front", _mesh(cap(depth / 2), _material("arrow_front", (215, 40, 40), roughness=0.4))),
            ("back", _mesh(cap(-depth / 2), _material("arrow_back", (40, 80, 200), roughness=0.4))),
            ("edge", _mesh(_merge(sides), _material("arrow_edge", (240, 240, 240), roughness=0.6))),
            ("post", _mesh((*_merge([post, base])[:3], None), _material("arrow_post", (60, 60, 65), roughness=0.5))),
        ],
    )


# ------------------------------------------------------------------------------------------------ public API

_BUILDERS: dict[str, Callable[[], trimesh.Scene]] = {
    "text_block": _text_block,
    "checker_torus": _checker_torus,
    "mug": _mug,
    "robot": _robot,
    "arrow_sign": _arrow_sign,
}
assert tuple(_BUILDERS) == SAMPLE_NAMES


def sample_bytes(name: str) -> bytes:
    """The GLB bytes of sample ``name`` (one of :data:`SAMPLE_NAMES`); the same bytes on every call."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown sample {name!r}: expected one of {', '.join(SAMPLE_NAMES)}") from None
    return export_glb(builder(), include_normals=True)


def generate_samples(out_dir: str | Path) -> list[Path]:
    """Write ``{name}.glb`` for every sample into ``out_dir`` (created if needed); returns the paths in order.

    Idempotent: a file that already holds the right bytes is left untouched; others are replaced atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SAMPLE_NAMES:
        data, path = sample_bytes(name), out / f"{name}.glb"
        if not (path.is_file() and path.read_bytes() == data):
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)  # mkstemp creates 0600
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        paths.append(path)
    return paths
