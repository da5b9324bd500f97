"""Model file formats: which ones the render stage imports, with which Blender importer, and the default material.

One table for the job (which files a directory source lists, which Objaverse-XL file types a selection keeps) and
for the Blender side (which operator imports a file). Keys are lower-case extensions without the dot, as
Objaverse-XL's ``fileType`` column writes them.

Formats that carry no material (STL always; PLY, OBJ without an ``.mtl`` and others may) are drawn with
:data:`DEFAULT_MATERIAL`: a Principled BSDF whose base colour is the mesh's colour attribute when it has one (PLY
vertex colours), else mid grey. The render metadata and the ``no_material`` quality flag say when it was used.
"""

from __future__ import annotations

from typing import Final

#: Extension -> (``bpy.ops`` module, operator) of the Blender 5.0 importer for it. ``blend`` opens the file itself
#: (with its scripts off).
IMPORTERS: Final[dict[str, tuple[str, str]]] = {
    "glb": ("import_scene", "gltf"),
    "gltf": ("import_scene", "gltf"),
    "obj": ("wm", "obj_import"),
    "fbx": ("import_scene", "fbx"),
    "ply": ("wm", "ply_import"),
    "stl": ("wm", "stl_import"),
    "usd": ("wm", "usd_import"),
    "usda": ("wm", "usd_import"),
    "usdc": ("wm", "usd_import"),
    "usdz": ("wm", "usd_import"),
    "abc": ("wm", "alembic_import"),
    "blend": ("wm", "open_mainfile"),
}

#: Formats Objaverse-XL lists that Blender 5.0 cannot read, with the reason a row of one fails with.
UNSUPPORTED: Final[dict[str, str]] = {
    "dae": "Blender 5.0 has no COLLADA (.dae) importer (it was removed); convert the file or skip the type",
}

#: Every format the render stage renders (the keys of :data:`IMPORTERS`).
MODEL_TYPES: Final[tuple[str, ...]] = tuple(IMPORTERS)

#: What a mesh without a material is drawn with (Principled BSDF inputs; linear RGB).
DEFAULT_MATERIAL: Final[dict[str, object]] = {
    "name": "invs_default",
    "base_color": [0.8, 0.8, 0.8],  # replaced by the mesh's colour attribute when it has one
    "roughness": 0.5,
    "metallic": 0.0,
}


def file_type(name: str) -> str:
    """The lower-case extension of ``name`` without the dot (``"Model.GLB"`` -> ``"glb"``; ``""`` if none)."""
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


def is_model(name: str) -> bool:
    """True if ``name`` has the extension of a format the render stage imports."""
    return file_type(name) in IMPORTERS


def unsupported_reason(kind: str) -> str | None:
    """None if files of type ``kind`` (an extension without the dot) can be imported, else the one-line reason."""
    kind = kind.lower().lstrip(".")
    if kind in IMPORTERS:
        return None
    return UNSUPPORTED.get(
        kind, f"unsupported model format .{kind} (the render stage imports {', '.join(MODEL_TYPES)})"
    )
