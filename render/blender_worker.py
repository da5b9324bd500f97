"""The long-lived Blender process: imports one object at a time and renders all of its views.

Runs as ``python -m render.blender_worker --response-fd N`` (bpy is Blender as a Python module) under
:class:`render.blender_process.BlenderProcess`. Requests arrive as JSON lines on stdin, one per object;
each answer is one JSON line on file descriptor N (Blender prints freely to stdout/stderr, which the host
keeps as the log). The process exits on ``{"cmd": "quit"}`` or end of input.

Per object, in one scene load: reset to an empty scene, check a glTF/GLB's structure and the files it refers to
(:mod:`render.gltf_check`) before Blender opens it, import the model (:data:`render.formats.IMPORTERS`: glTF/GLB incl.
Draco, OBJ, FBX, PLY, STL, USD/USDZ, Alembic, .blend with auto-run scripts off), refuse it if it refers to a file
outside its own folder, delete imported cameras and lights, pose animations at the first frame, give meshes without a
material :data:`render.formats.DEFAULT_MATERIAL`, normalise (largest bounding-box side 1, centre at the origin:
``p_norm = scale * p_world + offset``), light, then render every view: an 8-bit straight-alpha RGBA PNG, planar
z-depth (Cycles' Depth pass through the compositor, written as EXR, converted to ``.npy``; 0 where alpha is 0 or
the depth sample missed the object) and the request's other passes (:mod:`invs.passes`: camera-frame normals,
albedo), all from the same render.
Camera conventions: :mod:`invs.cameras` (OpenCV ``c2w``; Blender ``matrix_world`` stored alongside).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from invs import cameras, passes
from render import formats, gltf_check
from render.request import RenderRequest

DEPTH_MISS = 1e9  # Cycles writes ~1e10 where a depth sample hits nothing

_GEOMETRY_TYPES = {"MESH", "CURVE", "SURFACE", "FONT", "META"}


class RenderFailure(Exception):
    """An object that cannot be rendered; the message is the reason recorded in the manifest."""


# ------------------------------------------------------------------------------------------------ scene


def _bpy() -> Any:
    import bpy

    return bpy


def reset_scene() -> None:
    bpy = _bpy()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.filepaths.use_scripts_auto_execute = False


def error_line(text: str) -> str:
    """The one line that says what went wrong in an importer's error: for a Python traceback its last line (the
    exception), not its first; otherwise the message with its lines joined. ``Error:``/``Python:`` prefixes and
    Blender's ``Location:`` line go."""
    lines = [ln.rstrip() for ln in str(text).splitlines() if ln.strip() and not ln.startswith("Location:")]
    if any("Traceback (most recent call last)" in ln for ln in lines):
        # The exception's own lines are not indented; frames ("  File ...") and their source lines are.
        tail = [ln for ln in lines if not ln[:1].isspace() and "Traceback (most recent call last)" not in ln]
        tail = [ln for ln in tail if not set(ln.strip()) <= set("^~ ")]
        lines = tail[-1:] if tail else lines[-1:]
    message = " ".join(" ".join(lines).split())
    for prefix in ("Error:", "Python:"):
        message = message.removeprefix(prefix).strip()
    return message or "no message"


def check_before_import(path: Path) -> None:
    """Reject a glTF/GLB that fails :func:`render.gltf_check.check_gltf`, before Blender opens it."""
    if gltf_check.is_gltf(path):
        try:
            gltf_check.check_gltf(path)
        except gltf_check.GltfError as exc:
            raise RenderFailure(f"rejected before import: {exc}") from None
        except OSError as exc:
            raise RenderFailure(f"rejected before import: cannot read the file ({exc.strerror or exc})") from None


def check_references(folder: Path) -> None:
    """Refuse a scene that refers to files (images, linked libraries, ...) outside the model's folder.

    Runs right after the import, before anything is rendered, so nothing read from outside reaches an output.
    Packed (embedded) data is not a reference, whatever path it was unpacked from (the USD importer packs USDZ
    textures from a temporary folder).
    """
    root = folder.resolve()
    outside = sorted(
        p for p in _bpy().utils.blend_paths(absolute=True, packed=False) if not Path(p).resolve().is_relative_to(root)
    )
    if outside:
        more = f" and {len(outside) - 1} more" if len(outside) > 1 else ""
        raise RenderFailure(f"refers to {outside[0][:200]}{more}, outside the object's folder")


def import_model(path: Path) -> None:
    """Import a model into the current (empty) scene; raise RenderFailure with the importer's reason."""
    bpy = _bpy()
    suffix = path.suffix.lower()
    kind = suffix.lstrip(".")
    if not path.is_file():
        raise RenderFailure(f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise RenderFailure("model file is empty (0 bytes)")
    check_before_import(path)
    before = set(bpy.data.objects)
    try:
        reason = formats.unsupported_reason(kind)
        if reason is not None:
            raise RenderFailure(reason)
        if kind == "blend":
            # Never run Python embedded in a .blend file.
            bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False, use_scripts=False)
            bpy.context.preferences.filepaths.use_scripts_auto_execute = False
            before = set()
        else:
            module, op = formats.IMPORTERS[kind]
            result = getattr(getattr(bpy.ops, module), op)(filepath=str(path))
            if "FINISHED" not in result:
                raise RenderFailure(f"Blender's {suffix} importer did not finish ({', '.join(sorted(result))})")
    except RuntimeError as exc:  # bpy reports importer errors as RuntimeError("Error: ...")
        raise RenderFailure(f"import failed: {error_line(str(exc))[:500]}") from None
    check_references(path.parent)
    if not (set(bpy.data.objects) - before) and suffix != ".blend":
        raise RenderFailure("import produced no objects")


def clean_scene() -> dict[str, int]:
    """Delete imported cameras and lights; pose every animation at the scene's first frame."""
    bpy = _bpy()
    scene = bpy.context.scene
    removed = {"cameras": 0, "lights": 0}
    for obj in list(bpy.data.objects):
        if obj.type in ("CAMERA", "LIGHT"):
            removed["cameras" if obj.type == "CAMERA" else "lights"] += 1
            bpy.data.objects.remove(obj, do_unlink=True)
    scene.frame_set(scene.frame_start)
    return removed


def rendered_geometry() -> list[Any]:
    """The geometry objects a render draws: not hidden for rendering themselves, and in at least one collection
    that is neither excluded from the view layer nor hidden for rendering (nor under one that is). Importers park
    helpers in such collections (Blender's glTF importer: bone shapes in ``glTF_not_exported``)."""
    bpy = _bpy()
    hidden: set[str] = set()

    def walk(layer: Any, above_hidden: bool) -> None:
        here = above_hidden or layer.exclude or layer.collection.hide_render
        if here:
            hidden.add(layer.collection.name)
        for child in layer.children:
            walk(child, here)

    walk(bpy.context.view_layer.layer_collection, False)
    return [
        obj
        for obj in bpy.context.scene.objects
        if obj.type in _GEOMETRY_TYPES
        and not obj.hide_render
        and any(c.name not in hidden for c in obj.users_collection)
    ]


def _evaluated_meshes() -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(world-space vertices (N, 3), triangles (T, 3)) of every rendered geometry object, posed and modified."""
    bpy = _bpy()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for obj in rendered_geometry():
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        try:
            mesh.calc_loop_triangles()
            n, t = len(mesh.vertices), len(mesh.loop_triangles)
            if n == 0:
                continue
            co = np.empty(n * 3, dtype=np.float64)
            mesh.vertices.foreach_get("co", co)
            tri = np.empty(t * 3, dtype=np.int64)
            mesh.loop_triangles.foreach_get("vertices", tri)
            M = np.array(evaluated.matrix_world, dtype=np.float64)
            yield co.reshape(-1, 3) @ M[:3, :3].T + M[:3, 3], tri.reshape(-1, 3)
        finally:
            evaluated.to_mesh_clear()


def normalize_scene() -> dict[str, Any]:
    """Scale and move the whole scene so its bounding box has largest side 1 and is centred at the origin."""
    bpy = _bpy()
    meshes = list(_evaluated_meshes())
    triangles = sum(len(t) for _, t in meshes)
    if triangles == 0:
        raise RenderFailure("no renderable geometry (no mesh with faces) in the file")
    points = np.concatenate([v for v, _ in meshes])
    lo, hi = points.min(axis=0), points.max(axis=0)
    extent = float((hi - lo).max())
    if not math.isfinite(extent) or extent <= 0:
        raise RenderFailure(f"degenerate bounding box (largest side {extent})")
    scale = 1.0 / extent
    offset = -scale * (lo + hi) / 2.0
    root = bpy.data.objects.new("invs_normalize", None)
    bpy.context.scene.collection.objects.link(root)
    for obj in list(bpy.context.scene.objects):
        if obj.parent is None and obj is not root:
            world = obj.matrix_world.copy()
            obj.parent = root
            obj.matrix_world = world
    root.scale = (scale, scale, scale)
    root.location = tuple(offset)
    bpy.context.view_layer.update()
    return {
        "scale": scale,
        "offset": offset.tolist(),
        "bbox_min": lo.tolist(),
        "bbox_max": hi.tolist(),
        "meshes": len(meshes),
        "triangles": triangles,
    }


def count_missing_textures() -> int:
    """Images that materials reference but whose pixels could not be loaded."""
    bpy = _bpy()
    missing = 0
    for image in bpy.data.images:
        if image.source not in ("FILE", "TILED") or image.users == 0:
            continue
        if not image.has_data:
            with contextlib.suppress(IndexError, RuntimeError):
                image.pixels[0]  # reading a pixel forces the load
        if image.size[0] == 0 or image.size[1] == 0:
            missing += 1
    return missing


def rendered_materials() -> list[Any]:
    """The materials the rendered geometry uses (each once, by name)."""
    used = {
        slot.material.name: slot.material
        for obj in rendered_geometry()
        for slot in obj.material_slots
        if slot.material is not None
    }
    return [used[name] for name in sorted(used)]


def _shader_nodes(material: Any) -> list[Any]:
    """The nodes of a material's shader (none for a material without nodes)."""
    return list(material.node_tree.nodes) if material.use_nodes and material.node_tree is not None else []


def count_contents() -> dict[str, int]:
    """What the imported scene draws: ``materials`` used by its rendered geometry, ``textures`` (images those
    materials load), and ``meshes_without_material`` (geometry without a material of its own, which
    :func:`assign_default_material` then gives the default one)."""
    materials = rendered_materials()
    without = sum(not any(slot.material for slot in obj.material_slots) for obj in rendered_geometry())
    images = {
        node.image.name
        for material in materials
        for node in _shader_nodes(material)
        if node.type == "TEX_IMAGE" and node.image is not None
    }
    return {"materials": len(materials), "textures": len(images), "meshes_without_material": without}


def _default_material(color_attribute: str | None) -> Any:
    """A material of :data:`render.formats.DEFAULT_MATERIAL`, its base colour from ``color_attribute`` if given."""
    bpy = _bpy()
    spec = formats.DEFAULT_MATERIAL
    material = bpy.data.materials.new(str(spec["name"]))
    tree = material.node_tree  # Blender 5: a new material has a Principled BSDF wired to its output
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Base Color"].default_value = (*spec["base_color"], 1.0)  # type: ignore[misc]
    bsdf.inputs["Roughness"].default_value = spec["roughness"]
    bsdf.inputs["Metallic"].default_value = spec["metallic"]
    if color_attribute is not None:
        node = tree.nodes.new("ShaderNodeVertexColor")
        node.layer_name = color_attribute
        tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def assign_default_material() -> int:
    """Give each rendered geometry object without any material :data:`render.formats.DEFAULT_MATERIAL` (STL, PLY,
    OBJ without .mtl, ...): its mesh's active colour attribute as base colour when it has one (PLY vertex colours),
    else mid grey. Returns how many objects got it."""
    made: dict[str, Any] = {}
    count = 0
    for obj in rendered_geometry():
        if any(slot.material for slot in obj.material_slots):
            continue
        colors = getattr(obj.data, "color_attributes", None)
        attribute = None
        if colors is not None and len(colors):
            attribute = (colors.active_color or colors[0]).name
        material = made.get(attribute or "")
        if material is None:
            material = made[attribute or ""] = _default_material(attribute)
        if obj.material_slots:
            for slot in obj.material_slots:
                slot.material = material
        else:
            obj.data.materials.append(material)
        count += 1
    return count


def export_mesh(path: Path) -> None:
    """Write the normalised, posed triangle mesh (world units) as .npz (``vertices``, ``faces``) for checks."""
    verts, faces, base = [], [], 0
    for v, t in _evaluated_meshes():
        verts.append(v)
        faces.append(t + base)
        base += len(v)
    np.savez_compressed(path, vertices=np.concatenate(verts), faces=np.concatenate(faces))


# ------------------------------------------------------------------------------------------------ lighting


def setup_lighting(mode: str, rng: np.random.Generator) -> dict[str, Any]:
    """Light the normalised object. Returns a description recorded in the render metadata.

    * ``uniform``: a uniform white environment (strength 1): even, shadow-free lighting.
    * ``zero123_area``: Zero-1-to-3's set-up: a large area light above the object, energy drawn per object,
      over a dim environment.
    * ``four_suns``: Objaverse-XL's set-up: key, fill, rim and bottom sun lights with energies drawn per object.
    """
    bpy = _bpy()
    scene = bpy.context.scene
    world = bpy.data.worlds.new("invs_world")
    scene.world = world
    world.use_nodes = True
    background = world.node_tree.nodes["Background"]
    info: dict[str, Any] = {"mode": mode}
    if mode == "uniform":
        background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
        background.inputs["Strength"].default_value = 1.0
        info["environment"] = 1.0
        return info
    background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    background.inputs["Strength"].default_value = 0.3
    info["environment"] = 0.3

    def add_light(
        name: str,
        kind: str,
        energy: float,
        rotation: tuple[float, float, float],
        location: tuple[float, float, float] = (0.0, 0.0, 0.0),
        size: float | None = None,
    ) -> None:
        data = bpy.data.lights.new(name, kind)
        data.energy = energy
        if size is not None:
            data.size = size
        obj = bpy.data.objects.new(name, data)
        obj.location = location
        obj.rotation_euler = rotation
        scene.collection.objects.link(obj)
        info.setdefault("lights", []).append({"name": name, "type": kind, "energy": round(energy, 4)})

    if mode == "zero123_area":
        add_light("area", "AREA", float(rng.uniform(300.0, 900.0)), (0.0, 0.0, 0.0), (0.0, 0.0, 3.0), size=6.0)
    elif mode == "four_suns":
        add_light("key", "SUN", float(rng.uniform(3.0, 6.0)), (math.radians(45), 0.0, math.radians(-45)))
        add_light("fill", "SUN", float(rng.uniform(2.0, 4.0)), (math.radians(45), 0.0, math.radians(135)))
        add_light("rim", "SUN", float(rng.uniform(3.0, 5.0)), (math.radians(45), 0.0, math.radians(225)))
        add_light("bottom", "SUN", float(rng.uniform(1.0, 2.0)), (math.radians(180), 0.0, 0.0))
    else:
        raise RenderFailure(f"unknown lighting mode {mode!r}")
    return info


# ------------------------------------------------------------------------------------------------ render set-up


#: Pass -> (render layer output, file output item type, view layer switch).
_PASS_SOCKETS = {
    "depth": ("Depth", "FLOAT", "use_pass_z"),
    "normal": ("Normal", "VECTOR", "use_pass_normal"),
    "albedo": ("albedo", "RGBA", None),  # a shader AOV (see add_albedo_aov)
}


def add_albedo_aov() -> int:
    """Write each material's base colour, as its shader computes it (texture x factor x vertex colour), into a
    colour AOV named ``albedo``: what feeds a Principled BSDF's Base Color, else an Emission's Color (glTF unlit
    materials) of every rendered material. Returns those that have neither (their pixels' albedo is 0)."""
    _bpy().context.view_layer.aovs.add().name = "albedo"
    without = 0
    for material in rendered_materials():
        nodes = _shader_nodes(material)
        source = next((n.inputs["Base Color"] for n in nodes if n.type == "BSDF_PRINCIPLED"), None)
        source = source or next((n.inputs["Color"] for n in nodes if n.type == "EMISSION"), None)
        if source is None:
            without += 1
            continue
        tree = material.node_tree
        aov = tree.nodes.new("ShaderNodeOutputAOV")
        aov.aov_name = "albedo"
        if source.is_linked:
            tree.links.new(source.links[0].from_socket, aov.inputs["Color"])
        else:
            aov.inputs["Color"].default_value = source.default_value
    return without


def setup_render(req: RenderRequest, pass_dir: Path) -> tuple[Any, Any]:
    """Engine, film, colour management, camera and the compositor that writes the EXR passes; (camera, output)."""
    bpy = _bpy()
    scene = bpy.context.scene
    res = req.resolution
    scene.render.resolution_x = scene.render.resolution_y = res
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.use_persistent_data = req.persistent_data
    if req.threads > 0:
        scene.render.threads_mode = "FIXED"
        scene.render.threads = req.threads
    engine = req.engine
    if engine == "cycles":
        scene.render.engine = "CYCLES"
        scene.cycles.samples = req.samples
        threshold = req.adaptive_threshold
        if threshold is not None:  # None: Blender's default (adaptive sampling on, noise threshold 0.01)
            scene.cycles.use_adaptive_sampling = float(threshold) > 0
            if float(threshold) > 0:
                scene.cycles.adaptive_threshold = float(threshold)
        scene.cycles.use_denoising = req.denoise
        if req.denoise:
            scene.cycles.denoiser = "OPENIMAGEDENOISE"
            scene.cycles.denoising_prefilter = req.denoise_prefilter.upper()
        if req.limited_bounces:
            scene.cycles.diffuse_bounces = 1
            scene.cycles.glossy_bounces = 1
            scene.cycles.transparent_max_bounces = 3
            scene.cycles.transmission_bounces = 3
        scene.cycles.device = "GPU" if req.device == "gpu" else "CPU"
        if req.device == "gpu":
            _enable_gpu()
    elif engine == "eevee":
        scene.render.engine = "BLENDER_EEVEE"
        scene.eevee.taa_render_samples = req.samples
    else:
        raise RenderFailure(f"unknown engine {engine!r}")

    cam_data = bpy.data.cameras.new("invs_camera")
    cam_data.lens = float(req.lens_mm)
    cam_data.sensor_width = float(req.sensor_width_mm)
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.clip_start = 0.01
    cam_data.clip_end = 100.0
    camera = bpy.data.objects.new("invs_camera", cam_data)
    scene.collection.objects.link(camera)
    scene.camera = camera

    tree = bpy.data.node_groups.new("invs_compositor", "CompositorNodeTree")
    scene.compositing_node_group = tree
    layers = tree.nodes.new("CompositorNodeRLayers")
    output = tree.nodes.new("CompositorNodeOutputFile")
    output.format.media_type = "IMAGE"
    output.format.file_format = "OPEN_EXR"
    output.format.color_depth = "32"
    output.directory = str(pass_dir)
    for name in req.passes:
        if name in _PASS_SOCKETS:
            socket, kind, switch = _PASS_SOCKETS[name]
            if switch:
                setattr(scene.view_layers[0], switch, True)
            output.file_output_items.new(kind, name)
            tree.links.new(layers.outputs[socket], output.inputs[name])
    group_out = tree.nodes.new("NodeGroupOutput")
    tree.interface.new_socket(name="Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    tree.links.new(layers.outputs["Image"], group_out.inputs[0])
    return camera, output


def _enable_gpu() -> None:
    """Use every CUDA/OptiX device Cycles finds (CUDA_VISIBLE_DEVICES selects them); fail if there is none."""
    bpy = _bpy()
    prefs = bpy.context.preferences.addons["cycles"].preferences
    for backend in ("OPTIX", "CUDA"):
        try:
            prefs.compute_device_type = backend
        except TypeError:
            continue
        prefs.get_devices()
        devices = [d for d in prefs.devices if d.type == backend]
        if devices:
            for d in prefs.devices:
                d.use = d.type == backend
            return
    raise RenderFailure("device 'gpu' requested but Cycles found no CUDA or OptiX device")


def read_exr(exr_path: Path) -> np.ndarray:
    """The pixels of a one-layer EXR: (H, W) for one channel, (H, W, C) for more (vectors X, Y, Z then A; colours
    R, G, B, A); the file is removed."""
    import OpenEXR

    channels = OpenEXR.File(str(exr_path)).channels()
    exr_path.unlink()
    if len(channels) == 1:
        return np.asarray(next(iter(channels.values())).pixels, dtype=np.float32)
    names = sorted(channels, key=lambda c: ("XYZRGBA".index(c) if c in "XYZRGBA" else 7, c))
    return np.stack([np.asarray(channels[c].pixels, dtype=np.float32) for c in names], axis=-1)


def write_passes(
    out_dir: Path, i: int, req: RenderRequest, c2w: np.ndarray, dtype: Any, coverage: bool = False
) -> np.ndarray:
    """Turn view ``i``'s render outputs into its shard files (:mod:`invs.passes`); returns its uint8 alpha.

    With ``coverage``, the alpha is the coverage render's (``coverage_NNN.png``), and the colour render's values
    (RGB, normals, albedo) are extended into the pixels only the coverage render reached."""
    from PIL import Image

    from invs.images import extend_into

    rgba_path = out_dir / f"rgba_{i:03d}.png"
    rgba = np.asarray(Image.open(rgba_path))
    reached = rgba[..., 3] > 0  # where the colour render saw the object
    alpha = rgba[..., 3]
    if coverage:
        cover_path = out_dir / f"coverage_{i:03d}.png"
        alpha = np.asarray(Image.open(cover_path))[..., 3]
        cover_path.unlink()
        rgb = extend_into(rgba[..., :3], reached, alpha > 0)
        Image.fromarray(np.dstack([rgb, alpha])).save(rgba_path, compress_level=1)
    exr = {name: read_exr(out_dir / f"passes_{i:03d}{name}.exr") for name in req.passes if name in _PASS_SOCKETS}
    depth = exr["depth"][..., 0] if exr["depth"].ndim == 3 else exr["depth"]
    depth[(alpha == 0) | ~(depth < DEPTH_MISS)] = 0.0
    np.save(out_dir / f"depth_{i:03d}.npy", depth.astype(dtype))
    if "normal" in exr:
        world = exr["normal"][..., :3]
        camera_frame = world @ np.asarray(c2w)[:3, :3]  # R^T n per pixel: world -> OpenCV camera axes
        if coverage:
            camera_frame = extend_into(camera_frame, reached, alpha > 0)
        Image.fromarray(passes.encode_normals(camera_frame, alpha > 0)).save(out_dir / f"normal_{i:03d}.png")
    if "albedo" in exr:
        albedo = exr["albedo"][..., :3]
        if coverage:  # the pass holds colour x the colour render's coverage: straighten, extend, re-apply
            a = rgba[..., 3:4].astype(np.float32) / 255.0
            straight = extend_into(np.where(a > 0, albedo / np.maximum(a, 1e-6), 0.0), reached, alpha > 0)
            albedo = straight * (alpha[..., None].astype(np.float32) / 255.0)
        Image.fromarray(passes.encode_albedo(albedo, alpha)).save(out_dir / f"albedo_{i:03d}.png")
    return alpha


# ------------------------------------------------------------------------------------------------ one object


#: Pixels added around the projected bounding box: the pixel filter (Blackman-Harris, 1.5 px wide) reaches this far.
CROP_MARGIN = 2


def crop_to(box: tuple[int, int, int, int] | None) -> None:
    """Render only the pixel rectangle ``box`` (x0, y0, x1, y1; image rows from the top) of the full frame: Cycles
    takes no sample outside it, which stays transparent (alpha 0, depth 0); None renders the whole frame."""
    render = _bpy().context.scene.render
    render.use_border = box is not None
    render.use_crop_to_border = False  # the written images keep the full frame
    if box is not None:
        x0, y0, x1, y1 = box
        w, h = render.resolution_x, render.resolution_y
        render.border_min_x, render.border_max_x = x0 / w, x1 / w
        render.border_min_y, render.border_max_y = 1.0 - y1 / h, 1.0 - y0 / h  # Blender's y runs up


def has_transparency() -> bool:
    """Whether a rendered material can let light through its surface (alpha below 1, an alpha texture, a
    transparent BSDF): its silhouette then needs its shader, so a coverage render cannot stand in for it."""
    for material in rendered_materials():
        for node in _shader_nodes(material):
            if node.type == "BSDF_TRANSPARENT":
                return True
            if node.type == "BSDF_PRINCIPLED":
                alpha = node.inputs["Alpha"]
                if alpha.is_linked or alpha.default_value < 1.0:
                    return True
    return False


def setup_coverage(req: RenderRequest, pass_output: Any) -> None:
    """Switch the scene to the coverage render: every surface an unlit emission (no BSDF: no light sampling, no
    bounce), ``req.coverage_samples`` anti-aliasing samples, no denoising or adaptive stop, no pass files."""
    bpy = _bpy()
    scene = bpy.context.scene
    material = bpy.data.materials.new("invs_coverage")
    material.use_nodes = True
    nodes = material.node_tree.nodes
    nodes.clear()
    emission = nodes.new("ShaderNodeEmission")
    output = nodes.new("ShaderNodeOutputMaterial")
    material.node_tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    scene.view_layers[0].material_override = material
    scene.cycles.samples = req.coverage_samples
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.max_bounces = 0
    pass_output.mute = True


def box_corners(normalization: dict[str, Any]) -> np.ndarray:
    """The 8 corners (8, 3) of the normalised object's bounding box, in world units."""
    lo = np.asarray(normalization["bbox_min"]) * normalization["scale"] + normalization["offset"]
    hi = np.asarray(normalization["bbox_max"]) * normalization["scale"] + normalization["offset"]
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def render_views(
    req: RenderRequest, camera: Any, pass_output: Any, specs: list[Any], K: np.ndarray, corners: np.ndarray
) -> tuple[list[float], list[float], float]:
    """Render every view's colour (``rgba_NNN.png`` and EXR passes), then, when the object allows it, every view's
    coverage (``coverage_NNN.png``). Returns the CPU seconds of each colour render and each coverage render (empty:
    alpha from the colour render, which then takes at least ``coverage_samples``) and the wall seconds rendering."""
    from mathutils import Matrix

    bpy = _bpy()
    scene = bpy.context.scene
    out_dir, res = Path(req.out_dir), req.resolution
    coverage = req.coverage_samples > 0 and req.engine == "cycles" and not has_transparency()
    if req.coverage_samples > 0 and req.engine == "cycles" and not coverage:
        scene.cycles.samples = max(req.samples, req.coverage_samples)
    wall = [0.0]

    def render(i: int, c2w: np.ndarray, name: str) -> float:
        camera.matrix_world = Matrix(cameras.opencv_c2w_to_blender(c2w).tolist())
        crop_to(cameras.pixel_bounds(corners, K, c2w, res, res, CROP_MARGIN) if req.crop_to_object else None)
        pass_output.file_name = f"passes_{i:03d}"
        scene.render.filepath = str(out_dir / f"{name}_{i:03d}.png")
        t0, c0 = time.perf_counter(), time.process_time()
        bpy.ops.render.render(write_still=True)
        wall[0] += time.perf_counter() - t0
        return time.process_time() - c0

    colour = [render(i, spec.c2w(), "rgba") for i, spec in enumerate(specs)]
    covered = []
    if coverage:
        setup_coverage(req, pass_output)
        covered = [render(i, spec.c2w(), "coverage") for i, spec in enumerate(specs)]
    return colour, covered, wall[0]


def view_record(i: int, spec: Any, K: np.ndarray, camera: Any, alpha: np.ndarray) -> dict[str, Any]:
    """What Blender reports of view ``i``: cameras in both conventions and the object's coverage (the host adds
    the quality flags, :mod:`invs.quality`)."""
    from mathutils import Matrix

    c2w = spec.c2w()
    camera.matrix_world = Matrix(cameras.opencv_c2w_to_blender(c2w).tolist())
    return {
        "index": i,
        "K": K.tolist(),
        "c2w": c2w.tolist(),
        "blender_matrix_world": np.array(camera.matrix_world).tolist(),
        "azimuth_deg": spec.azimuth_deg,
        "elevation_deg": spec.elevation_deg,
        "radius": spec.radius,
        "alpha_fraction": float((alpha > 0).mean()),
    }


def render_object(req: RenderRequest) -> dict[str, Any]:
    """Render every view of one object into ``req.out_dir``; returns the per-view metadata and stats.

    With ``req.coverage_samples`` > 0 (and no transparent material), each view's alpha comes from a second, cheap
    render of coverage alone (:func:`setup_coverage`) after all colour renders; the colour, depth, normal and
    albedo of pixels that only the coverage render reached are taken from their nearest covered neighbours. An
    object with a transparent material takes its alpha from the colour render, which then takes at least
    ``coverage_samples`` samples.
    ``cpu_s`` records the process's CPU time (all threads) by phase: import, setup, each view's colour and
    coverage renders.
    """
    bpy = _bpy()
    t_start = time.perf_counter()
    cpu = {"start": time.process_time()}
    out_dir = Path(req.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reset_scene()
    t0 = time.perf_counter()
    import_model(Path(req.model_path))
    import_s = time.perf_counter() - t0
    cpu["import"] = time.process_time()
    removed = clean_scene()
    missing_textures = count_missing_textures()
    contents = count_contents()
    contents["default_material"] = assign_default_material()
    normalization = normalize_scene()
    if req.export_mesh:
        export_mesh(out_dir / "mesh.npz")
    rng = np.random.default_rng(req.light_seed)
    lighting = setup_lighting(req.lighting, rng)
    if "albedo" in req.passes:
        contents["materials_without_base_color"] = add_albedo_aov()
    camera, pass_output = setup_render(req, out_dir)
    res = req.resolution
    K = cameras.intrinsics_from_lens(float(req.lens_mm), float(req.sensor_width_mm), res, res)
    dtype = np.float16 if req.depth_dtype == "float16" else np.float32
    cpu["setup"] = time.process_time()
    specs = [
        cameras.CameraSpec(float(v["azimuth_deg"]), float(v["elevation_deg"]), float(v["radius"])) for v in req.views
    ]
    colour_cpu, coverage_cpu, render_s = render_views(req, camera, pass_output, specs, K, box_corners(normalization))
    views = []
    for i, spec in enumerate(specs):
        alpha = write_passes(out_dir, i, req, spec.c2w(), dtype, coverage=bool(coverage_cpu))
        views.append(view_record(i, spec, K, camera, alpha))
    cpu["end"] = time.process_time()
    return {
        "ok": True,
        "views": views,
        "normalization": normalization,
        "lighting": lighting,
        "removed": removed,
        "missing_textures": missing_textures,
        "contents": contents,
        "alpha_from": "coverage render" if coverage_cpu else "colour render",
        "colour_samples": req.samples if coverage_cpu else bpy.context.scene.cycles.samples,
        "blender_version": bpy.app.version_string,
        "import_s": import_s,
        "render_s": render_s,
        "total_s": time.perf_counter() - t_start,
        "cpu_s": {
            "import": cpu["import"] - cpu["start"],
            "setup": cpu["setup"] - cpu["import"],
            "colour": colour_cpu,
            "coverage": coverage_cpu,
            "total": cpu["end"] - cpu["start"],
        },
    }


# ------------------------------------------------------------------------------------------------ main loop


def serve(requests: Any, respond: Any) -> None:
    bpy = _bpy()
    respond({"ready": True, "blender_version": bpy.app.version_string, "pid": os.getpid()})
    for line in requests:
        if not line.strip():
            continue
        message = json.loads(line)
        if message.get("cmd") == "quit":
            return
        try:
            result = render_object(RenderRequest.from_message(message))
        except RenderFailure as exc:
            result = {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - any other error fails this object only; traceback goes to the log
            traceback.print_exc()
            result = {"ok": False, "error": error_line(f"{type(exc).__name__}: {exc}")[:1000]}
        result["id"] = message.get("id")
        respond(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--response-fd", type=int, required=True)
    args = parser.parse_args(argv)
    out = os.fdopen(args.response_fd, "w", buffering=1)

    def respond(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    serve(sys.stdin, respond)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
