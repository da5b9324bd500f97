"""Structural checks of a glTF 2.0 file (``.gltf`` JSON or ``.glb`` binary) before Blender opens it.

A hostile or broken file is rejected in milliseconds with a one-line reason (:class:`GltfError`) instead of
letting Blender's importer read files of the machine, allocate what a 300-byte file claims, or recurse until it
fails. Only the JSON, the GLB chunk table and the first bytes of each image are read; buffer data is never
decoded. Every check and limit, in the order they run:

**Container**

* The file is at most :data:`MAX_FILE_BYTES` (a ``.glb``) and its JSON at most :data:`MAX_JSON_BYTES`.
* GLB: a 12-byte header with magic ``glTF``, version 2 and a declared length equal to the file's size; the
  first chunk is ``JSON``, an optional second chunk ``BIN``; every chunk lies inside the file.
* The JSON is UTF-8, an object, with ``asset.version`` exactly ``"2.0"`` (Blender's importer refuses any
  other, ``"2.1"`` included); every top-level property that holds a list is a list of objects.
* Every extension in ``extensionsRequired`` is also in ``extensionsUsed`` and is one that Blender's importer
  loads (:data:`BLENDER_EXTENSIONS`); the importer refuses the others only after Blender has started.

**Files it may read** (buffers and images)

* A URI is a base64 ``data:`` URI, or a relative path (percent-decoded) that resolves, symlinks followed, to a
  file inside the object's own folder (the folder of the model file). Absolute paths, ``..`` that leave the
  folder, drive letters, backslash paths and any other scheme (``http:``, ``file:``, ...) are rejected.
* A buffer without a URI is the GLB's BIN chunk (buffer 0 only) or a meshopt fallback (``EXT_`` or
  ``KHR_meshopt_compression``, never read); otherwise it is rejected.
* A buffer's data (BIN chunk, decoded data URI or file) holds at least its ``byteLength`` bytes.
* A missing image file inside the folder is allowed (Blender counts it as a missing texture), except as a
  specular-glossiness material's ``specularGlossinessTexture`` (Blender's importer fails the whole file on that
  one); a missing buffer file is not.

**Indices and ranges**

* Every index (scene nodes, node children/mesh/skin/camera, primitive attributes/indices/material/targets,
  Draco buffer views, material textures, texture sources, skin joints and matrices, animation channels and
  samplers, image and accessor buffer views) points at an existing element.
* Buffer views lie inside their buffer (``byteOffset + byteLength <= buffer.byteLength``); a ``byteStride``
  is 4-252 and a multiple of 4 (the specification's range).
* Accessors have a known ``componentType`` and ``type`` and ``count >= 1``. One with a buffer view fits in it:
  ``byteOffset + byteStride * (count - 1) + element size <= bufferView.byteLength``, where the stride of byte and
  short MAT2/MAT3 elements counts the padding of every column to 4 bytes and the last element's size does not
  count the padding after its last column; sparse indices and values
  fit in theirs and ``sparse.count <= count``.
* All accessors together declare at most :data:`ACCESSOR_BYTES_PER_DATA_BYTE` times the object's data (GLB size,
  or JSON plus buffers) plus :data:`ACCESSOR_BYTES_SLACK`: accessors without a buffer view (zeros, sparse,
  Draco-decoded) are bounded only by this, and it stops many accessors aliasing one big view.

**Scene graph**

* At most :data:`MAX_NODES` nodes and :data:`MAX_PRIMITIVES` mesh primitives.
* Every node has at most one parent and no node is its own ancestor (no cycles).
* No chain of nodes is deeper than :data:`MAX_NODE_DEPTH` (Blender's importer recurses per level and fails
  with a RecursionError somewhere between 600 and 3000).

**Images** (dimensions from the PNG ``IHDR``, the JPEG ``SOFn`` or the WebP ``VP8``/``VP8L``/``VP8X`` header)

* Each side at most :data:`MAX_IMAGE_SIDE` pixels; all images together at most :data:`MAX_IMAGE_PIXELS`
  (what Blender would decode into memory). Images of other formats, or whose header cannot be read, are left
  to Blender (an unreadable texture is counted as missing).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import struct
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

MAX_FILE_BYTES = 4 * 2**30
MAX_JSON_BYTES = 64 * 2**20
MAX_NODES = 100_000
MAX_PRIMITIVES = 100_000
MAX_NODE_DEPTH = 256
MAX_IMAGE_SIDE = 16384
MAX_IMAGE_PIXELS = 2**29  # 512 M pixels: 32 textures of 4096 x 4096, 2 GiB as 8-bit RGBA
ACCESSOR_BYTES_PER_DATA_BYTE = 64
ACCESSOR_BYTES_SLACK = 64 * 2**20
#: The extensions that the glTF importer of the pinned Blender (5.0) loads when a file requires them
#: (``io_scene_gltf2/io/imp/gltf2_io_gltf.py``, ``extensions_managed``; a test compares it with the installed one).
BLENDER_EXTENSIONS = frozenset(
    {
        "KHR_materials_pbrSpecularGlossiness",
        "KHR_lights_punctual",
        "KHR_materials_unlit",
        "KHR_texture_transform",
        "KHR_materials_clearcoat",
        "KHR_mesh_quantization",
        "EXT_mesh_gpu_instancing",
        "KHR_draco_mesh_compression",
        "KHR_materials_variants",
        "KHR_materials_emissive_strength",
        "KHR_materials_transmission",
        "KHR_materials_specular",
        "KHR_materials_sheen",
        "KHR_materials_ior",
        "KHR_animation_pointer",
        "KHR_materials_volume",
        "EXT_texture_webp",
        "KHR_materials_anisotropy",
    }
)
#: Extensions whose buffers may have no data: a fallback that decoders never read.
MESHOPT_EXTENSIONS = ("EXT_meshopt_compression", "KHR_meshopt_compression")

COMPONENT_BYTES = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
TYPE_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_GLB_MAGIC = b"glTF"
_JSON_CHUNK = 0x4E4F534A
_BIN_CHUNK = 0x004E4942
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


class GltfError(ValueError):
    """The file is not a safe, well-formed glTF 2.0 asset; the message is the one-line reason."""


@dataclass(frozen=True)
class Report:
    """What the checks measured (for logs and tests)."""

    nodes: int
    depth: int
    primitives: int
    accessor_bytes: int
    image_pixels: int
    files: tuple[str, ...]  # the files besides the model that Blender will read (buffers, images), absolute


def is_gltf(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith((".gltf", ".glb"))


def _column_padding(component_type: int, type_: str) -> tuple[int, int]:
    """(columns, padding bytes after each column): the specification pads every column of a byte or short MAT2 or
    MAT3 to 4 bytes; other types have no padding (one column of all their components)."""
    size = COMPONENT_BYTES[component_type]
    if type_ in ("MAT2", "MAT3") and size < 4:
        rows = 2 if type_ == "MAT2" else 3
        return rows, -(rows * size) % 4
    return 1, 0


def element_bytes(component_type: int, type_: str) -> int:
    """Bytes of one accessor element, with the column padding the specification requires for small matrices."""
    columns, padding = _column_padding(component_type, type_)
    return COMPONENT_BYTES[component_type] * TYPE_COMPONENTS[type_] + columns * padding


def last_element_bytes(component_type: int, type_: str) -> int:
    """Bytes the last element of an accessor occupies: :func:`element_bytes` without the padding after its last
    column (nothing follows the last one)."""
    return element_bytes(component_type, type_) - _column_padding(component_type, type_)[1]


# ------------------------------------------------------------------------------------------------ container


@dataclass(frozen=True)
class GlbHeader:
    """The first 20 bytes of a GLB: the file header and the first chunk's header (missing bytes read as zeros)."""

    magic: bytes
    version: int
    length: int  # the total length the header declares
    json_length: int
    json_type: int


class GlbHeaderError(GltfError):
    """A GLB header failed a check of :func:`read_glb_header`; ``problem`` names which, ``header`` is what was read.

    ``problem`` is one of ``magic``, ``version``, ``length``, ``chunk`` (no first chunk), ``json_type`` and
    ``json_length`` (the JSON chunk runs past the end of the file), so that callers can word their own reason.
    """

    def __init__(self, message: str, problem: str, header: GlbHeader) -> None:
        super().__init__(message)
        self.problem = problem
        self.header = header


def read_glb_header(f: BinaryIO, size: int) -> GlbHeader:
    """Read and check the GLB header at ``f``'s position of a file of ``size`` bytes; GlbHeaderError if bad.

    Checks, in order: magic ``glTF``, version 2, a declared length equal to ``size``, a first chunk of type
    ``JSON`` that lies inside the file. ``f`` is left at the start of the JSON chunk's data.
    """
    head = f.read(20)
    header = GlbHeader(*struct.unpack("<4sIIII", head.ljust(20, b"\0")))

    def fail(problem: str, message: str) -> NoReturn:
        raise GlbHeaderError(message, problem, header)

    if len(head) < 12 or header.magic != _GLB_MAGIC:
        fail("magic", "not a glTF binary (no 'glTF' header)")
    if header.version != 2:
        fail("version", f"glTF binary version {header.version}, only 2 is supported")
    if header.length != size:
        fail("length", f"glTF binary header says {header.length} bytes, the file has {size} (truncated or padded)")
    if len(head) < 20:
        fail("chunk", "glTF binary has no JSON chunk")
    if header.json_type != _JSON_CHUNK:
        fail("json_type", "glTF binary's first chunk is not JSON")
    if 20 + header.json_length > size:
        fail("json_length", f"glTF binary's JSON chunk ({header.json_length} bytes) runs past the end of the file")
    return header


def _read_glb(path: Path, size: int) -> tuple[dict[str, Any], int | None]:
    """(JSON, BIN chunk length or None) of a GLB; the BIN data is not read."""
    with open(path, "rb") as f:
        json_len = read_glb_header(f, size).json_length
        if json_len > MAX_JSON_BYTES:
            raise GltfError(f"glTF JSON is {json_len} bytes, over the {MAX_JSON_BYTES} limit")
        text = f.read(json_len)
        bin_len = None
        offset = 20 + json_len
        if offset + 8 <= size:
            bin_len, kind = struct.unpack("<II", f.read(8))
            if kind != _BIN_CHUNK:
                raise GltfError("glTF binary's second chunk is not BIN")
            if offset + 8 + bin_len > size:
                raise GltfError(f"glTF binary's BIN chunk ({bin_len} bytes) runs past the end of the file")
    return _parse_json(text), bin_len


def _parse_json(text: bytes) -> dict[str, Any]:
    try:
        gltf = json.loads(text.decode("utf-8").rstrip(" \0"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise GltfError(f"glTF JSON is not valid: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(gltf, dict):
        raise GltfError("glTF JSON is not an object")
    return gltf


# ------------------------------------------------------------------------------------------------ URIs


def resolve_uri(uri: Any, folder: Path, what: str) -> Path | bytes:
    """A glTF URI as the bytes of a ``data:`` URI or a path inside ``folder``; GltfError for anything else."""
    if not isinstance(uri, str) or not uri:
        raise GltfError(f"{what} has an empty or non-string uri")
    if uri.startswith("data:"):
        head, sep, payload = uri.partition(",")
        if not sep:
            raise GltfError(f"{what} has a malformed data: URI")
        if head.endswith(";base64"):
            try:
                return base64.b64decode(payload, validate=False)
            except (binascii.Error, ValueError):
                raise GltfError(f"{what} has a data: URI that is not valid base64") from None
        return urllib.parse.unquote_to_bytes(payload)
    shown = uri if len(uri) <= 120 else uri[:117] + "..."
    if _SCHEME.match(uri) or uri.startswith("//"):
        raise GltfError(f"{what} refers to {shown!r}: only data: URIs and files in the object's folder are allowed")
    path_text = urllib.parse.unquote(uri)
    if "\0" in path_text or "\\" in path_text or path_text.startswith("/") or re.match(r"^[A-Za-z]:", path_text):
        raise GltfError(f"{what} refers to {shown!r}: an absolute path, outside the object's folder")
    root = folder.resolve()
    target = (root / path_text).resolve()
    if not target.is_relative_to(root):
        raise GltfError(f"{what} refers to {shown!r}, outside the object's folder")
    return target


# ------------------------------------------------------------------------------------------------ images


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, JPEG or WebP image; None for other or unreadable data."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24 and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            w = int.from_bytes(head[24:27], "little") + 1
            h = int.from_bytes(head[27:30], "little") + 1
            return w, h
        if kind == b"VP8L" and head[20] == 0x2F:
            bits = int.from_bytes(head[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack("<HH", head[26:30])
            return w & 0x3FFF, h & 0x3FFF
        return None
    if head.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                return None
            marker = head[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            if marker == 0xFF:
                i += 1
                continue
            length = struct.unpack(">H", head[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", head[i + 5 : i + 9])
                return w, h
            i += 2 + length
        return None
    return None


#: Bytes read from the start of an image to find its size (JPEG headers may carry large EXIF blocks first).
IMAGE_HEAD_BYTES = 256 * 1024


# ------------------------------------------------------------------------------------------------ the check


def _list(gltf: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = gltf.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise GltfError(f"glTF '{name}' is not a list of objects")
    return value


def _int(value: Any, what: str, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise GltfError(f"{what} must be an integer >= {low}, got {str(value)[:40]}")
    return value


def _index(value: Any, items: list[Any], what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < len(items):
        raise GltfError(f"{what} points at {str(value)[:40]}, which does not exist ({len(items)} defined)")
    return value


def check_gltf(path: str | os.PathLike[str]) -> Report:
    """Run every check in the module docstring on the model file ``path``; GltfError with the reason if one fails."""
    path = Path(path)
    gltf, bin_len, model_bytes = _load(path)
    files: list[str] = []
    buffers, buffer_lengths, file_bytes = _check_buffers(gltf, bin_len, path.parent, files)
    views = _check_buffer_views(gltf, buffers, buffer_lengths)
    accessors, declared = _check_accessors(gltf, views, model_bytes + file_bytes)
    images, materials = _check_textures_and_materials(gltf)
    pixels = _check_images(images, path, buffers, views, bin_len, files)
    _check_specular_glossiness(gltf, materials, images, path.parent)
    meshes, primitives = _check_meshes(gltf, accessors, materials, views)
    nodes, skins, depth = _check_nodes(gltf, meshes)
    _check_skins(skins, nodes, accessors)
    _check_scenes(gltf, nodes)
    _check_animations(gltf, accessors, nodes)
    return Report(
        nodes=len(nodes),
        depth=depth,
        primitives=primitives,
        accessor_bytes=declared,
        image_pixels=pixels,
        files=tuple(files),
    )


def _load(path: Path) -> tuple[dict[str, Any], int | None, int]:
    """(JSON, GLB BIN chunk length or None, file size) of a model file whose container and asset.version pass."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise GltfError(f"glTF file is {size} bytes, over the {MAX_FILE_BYTES} limit")
    if path.suffix.lower() == ".glb":
        gltf, bin_len = _read_glb(path, size)
    else:
        if size > MAX_JSON_BYTES:
            raise GltfError(f"glTF JSON is {size} bytes, over the {MAX_JSON_BYTES} limit")
        gltf, bin_len = _parse_json(path.read_bytes()), None
    asset = gltf.get("asset")
    version = asset.get("version") if isinstance(asset, dict) else None
    if version != "2.0":
        raise GltfError(f"glTF asset.version is {str(version)[:20]!r}; Blender's importer reads only '2.0'")
    _check_required_extensions(gltf)
    return gltf, bin_len, size


def _check_required_extensions(gltf: dict[str, Any]) -> None:
    """Every required extension is used and one that Blender's importer loads (:data:`BLENDER_EXTENSIONS`)."""
    required, used = gltf.get("extensionsRequired", []), gltf.get("extensionsUsed", [])
    for name, value in (("extensionsRequired", required), ("extensionsUsed", used)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise GltfError(f"glTF {name} must be a list of extension names")
    for extension in required:
        if extension not in used:
            raise GltfError(f"glTF requires extension {extension[:80]!r} but does not list it in extensionsUsed")
        if extension not in BLENDER_EXTENSIONS:
            raise GltfError(f"glTF requires extension {extension[:80]!r}, which Blender's glTF importer cannot load")


def _check_buffers(
    gltf: dict[str, Any], bin_len: int | None, folder: Path, files: list[str]
) -> tuple[list[dict[str, Any]], list[int], int]:
    """(buffers, their byteLengths, bytes of buffer files) after checking each buffer's source holds its data."""
    buffers = _list(gltf, "buffers")
    buffer_lengths = []
    file_bytes = 0
    for i, buf in enumerate(buffers):
        what = f"buffer {i}"
        length = _int(buf.get("byteLength"), f"{what} byteLength", 1)
        buffer_lengths.append(length)
        if "uri" not in buf:
            if i == 0 and bin_len is not None:
                if bin_len < length:
                    raise GltfError(f"{what} claims {length} bytes, the GLB's BIN chunk holds {bin_len}")
                continue
            extensions = buf.get("extensions") if isinstance(buf.get("extensions"), dict) else {}
            if any(isinstance(extensions.get(n), dict) and extensions[n].get("fallback") for n in MESHOPT_EXTENSIONS):
                continue
            raise GltfError(f"{what} has no uri and is not the GLB's BIN chunk")
        source = resolve_uri(buf["uri"], folder, what)
        if isinstance(source, bytes):
            actual = len(source)
        else:
            if not source.is_file():
                raise GltfError(f"{what}: file {buf['uri'][:120]!r} does not exist in the object's folder")
            actual = source.stat().st_size
            files.append(str(source))
            file_bytes += actual
        if actual < length:
            raise GltfError(f"{what} claims {length} bytes, its data holds {actual}")
    return buffers, buffer_lengths, file_bytes


def _check_buffer_views(
    gltf: dict[str, Any], buffers: list[dict[str, Any]], buffer_lengths: list[int]
) -> list[dict[str, Any]]:
    """The buffer views, each checked to lie inside its buffer with a valid byteStride."""
    views = _list(gltf, "bufferViews")
    for i, view in enumerate(views):
        what = f"bufferView {i}"
        b = _index(view.get("buffer"), buffers, f"{what} buffer")
        offset = _int(view.get("byteOffset", 0), f"{what} byteOffset")
        length = _int(view.get("byteLength"), f"{what} byteLength", 1)
        if offset + length > buffer_lengths[b]:
            raise GltfError(
                f"{what} (bytes {offset}-{offset + length}) runs past the end of buffer {b} ({buffer_lengths[b]} bytes)"
            )
        if "byteStride" in view:
            stride = _int(view["byteStride"], f"{what} byteStride", 4)
            if stride > 252 or stride % 4:
                raise GltfError(f"{what} byteStride {stride} is not a multiple of 4 in 4-252")
    return views


def _check_accessors(
    gltf: dict[str, Any], views: list[dict[str, Any]], data_bytes: int
) -> tuple[list[dict[str, Any]], int]:
    """(accessors, bytes they declare) after checking each fits its views and all fit the data bound."""
    accessors = _list(gltf, "accessors")
    declared = 0
    for i, acc in enumerate(accessors):
        what = f"accessor {i}"
        ctype, atype = acc.get("componentType"), acc.get("type")
        if ctype not in COMPONENT_BYTES or isinstance(ctype, bool):
            raise GltfError(f"{what} has unknown componentType {str(ctype)[:20]}")
        if atype not in TYPE_COMPONENTS:
            raise GltfError(f"{what} has unknown type {str(atype)[:20]!r}")
        count = _int(acc.get("count"), f"{what} count", 1)
        elem = element_bytes(ctype, atype)
        declared += count * elem
        if "bufferView" in acc:
            v = _index(acc["bufferView"], views, f"{what} bufferView")
            offset = _int(acc.get("byteOffset", 0), f"{what} byteOffset")
            stride = views[v].get("byteStride") or elem
            needed = offset + stride * (count - 1) + last_element_bytes(ctype, atype)
            if needed > views[v]["byteLength"]:
                raise GltfError(
                    f"{what} claims {count} elements of {elem} bytes ({needed} bytes), its bufferView {v} holds "
                    f"{views[v]['byteLength']}"
                )
        sparse = acc.get("sparse")
        if sparse is not None:
            _check_sparse(sparse, what, count, elem, views)
    limit = ACCESSOR_BYTES_PER_DATA_BYTE * data_bytes + ACCESSOR_BYTES_SLACK
    if declared > limit:
        raise GltfError(
            f"accessors declare {declared} bytes for {data_bytes} bytes of data (limit {limit}: "
            f"{ACCESSOR_BYTES_PER_DATA_BYTE} x data + {ACCESSOR_BYTES_SLACK})"
        )
    return accessors, declared


def _check_sparse(sparse: Any, what: str, count: int, elem: int, views: list[dict[str, Any]]) -> None:
    """Check an accessor's ``sparse`` object: its count and that its indices and values fit their views."""
    if not isinstance(sparse, dict):
        raise GltfError(f"{what} sparse is not an object")
    n = _int(sparse.get("count"), f"{what} sparse count", 1)
    if n > count:
        raise GltfError(f"{what} sparse count {n} exceeds its count {count}")
    for part, part_elem in (
        ("indices", COMPONENT_BYTES.get((sparse.get("indices") or {}).get("componentType"), 0)),
        ("values", elem),
    ):
        spec = sparse.get(part)
        if not isinstance(spec, dict) or not part_elem:
            raise GltfError(f"{what} sparse {part} is malformed")
        v = _index(spec.get("bufferView"), views, f"{what} sparse {part} bufferView")
        offset = _int(spec.get("byteOffset", 0), f"{what} sparse {part} byteOffset")
        if offset + n * part_elem > views[v]["byteLength"]:
            raise GltfError(f"{what} sparse {part} ({n} elements) run past the end of bufferView {v}")


def _check_textures_and_materials(gltf: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(images, materials) after checking the indices of textures (sources, samplers) and material textures."""
    images = _list(gltf, "images")
    textures = _list(gltf, "textures")
    samplers = _list(gltf, "samplers")
    for i, tex in enumerate(textures):
        if "source" in tex:
            _index(tex["source"], images, f"texture {i} source")
        if "sampler" in tex:
            _index(tex["sampler"], samplers, f"texture {i} sampler")
        for name, ext in (tex.get("extensions") or {}).items():
            if isinstance(ext, dict) and "source" in ext:
                _index(ext["source"], images, f"texture {i} {name} source")
    materials = _list(gltf, "materials")
    for i, mat in enumerate(materials):
        for ref in _texture_refs(mat):
            _index(ref.get("index"), textures, f"material {i} texture")
    return images, materials


def _check_images(
    images: list[dict[str, Any]],
    path: Path,
    buffers: list[dict[str, Any]],
    views: list[dict[str, Any]],
    bin_len: int | None,
    files: list[str],
) -> int:
    """The pixels of all images whose size can be read, after checking each against the side and total limits."""
    folder = path.parent
    pixels = 0
    for i, image in enumerate(images):
        what = f"image {i}"
        head: bytes | None = None
        if "uri" in image:
            source = resolve_uri(image["uri"], folder, what)
            if isinstance(source, bytes):
                head = source[:IMAGE_HEAD_BYTES]
            elif source.is_file():
                files.append(str(source))
                with open(source, "rb") as f:
                    head = f.read(IMAGE_HEAD_BYTES)
        elif "bufferView" in image:
            v = _index(image["bufferView"], views, f"{what} bufferView")
            head = _view_head(path, buffers, views[v], bin_len, folder)
        if head is None:
            continue
        dims = image_size(head)
        if dims is None:
            continue
        w, h = dims
        if w > MAX_IMAGE_SIDE or h > MAX_IMAGE_SIDE:
            raise GltfError(f"{what} is {w} x {h} pixels, over the {MAX_IMAGE_SIDE} pixel side limit")
        pixels += w * h
        if pixels > MAX_IMAGE_PIXELS:
            raise GltfError(f"images hold more than {MAX_IMAGE_PIXELS} pixels together (at {what}: {w} x {h})")
    return pixels


def _check_specular_glossiness(
    gltf: dict[str, Any], materials: list[dict[str, Any]], images: list[dict[str, Any]], folder: Path
) -> None:
    """A ``KHR_materials_pbrSpecularGlossiness`` material's ``specularGlossinessTexture`` has its image file:
    Blender's importer packs that image while converting the material and fails the whole import when it is
    missing (a missing image anywhere else only counts as a missing texture)."""
    textures = _list(gltf, "textures")
    for i, material in enumerate(materials):
        extensions = material.get("extensions") if isinstance(material.get("extensions"), dict) else {}
        extension = extensions.get("KHR_materials_pbrSpecularGlossiness")
        ref = extension.get("specularGlossinessTexture") if isinstance(extension, dict) else None
        if not isinstance(ref, dict) or "source" not in textures[ref["index"]]:
            continue
        image = images[textures[ref["index"]]["source"]]
        if "uri" not in image:
            continue
        source = resolve_uri(image["uri"], folder, f"material {i} specularGlossinessTexture")
        if isinstance(source, Path) and not source.is_file():
            raise GltfError(
                f"material {i}: its specularGlossinessTexture image {image['uri'][:120]!r} is missing, which fails "
                "Blender's whole import"
            )


def _check_meshes(
    gltf: dict[str, Any],
    accessors: list[dict[str, Any]],
    materials: list[dict[str, Any]],
    views: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], int]:
    """(meshes, number of primitives) after checking the primitive limit and every primitive's indices."""
    meshes = _list(gltf, "meshes")
    primitives = 0
    for i, mesh in enumerate(meshes):
        prims = mesh.get("primitives")
        if not isinstance(prims, list) or not all(isinstance(p, dict) for p in prims):
            raise GltfError(f"mesh {i} primitives is not a list of objects")
        primitives += len(prims)
        if primitives > MAX_PRIMITIVES:
            raise GltfError(f"more than {MAX_PRIMITIVES} mesh primitives")
        for j, prim in enumerate(prims):
            what = f"mesh {i} primitive {j}"
            attributes = prim.get("attributes")
            if not isinstance(attributes, dict):
                raise GltfError(f"{what} has no attributes")
            for name, a in attributes.items():
                _index(a, accessors, f"{what} attribute {name}")
            if "indices" in prim:
                _index(prim["indices"], accessors, f"{what} indices")
            if "material" in prim:
                _index(prim["material"], materials, f"{what} material")
            targets = prim.get("targets", [])
            if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
                raise GltfError(f"{what} targets is not a list of objects")
            for target in targets:
                for name, a in target.items():
                    _index(a, accessors, f"{what} target {name}")
            draco = (prim.get("extensions") or {}).get("KHR_draco_mesh_compression")
            if isinstance(draco, dict):
                _index(draco.get("bufferView"), views, f"{what} Draco bufferView")
    return meshes, primitives


def _check_nodes(
    gltf: dict[str, Any], meshes: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(nodes, skins, hierarchy depth) after checking the node limit, node indices and the hierarchy's shape."""
    nodes = _list(gltf, "nodes")
    if len(nodes) > MAX_NODES:
        raise GltfError(f"{len(nodes)} nodes, over the {MAX_NODES} limit")
    skins, cameras = _list(gltf, "skins"), _list(gltf, "cameras")
    parent: dict[int, int] = {}
    for i, node in enumerate(nodes):
        children = node.get("children", [])
        if not isinstance(children, list):
            raise GltfError(f"node {i} children is not a list")
        for c in children:
            _index(c, nodes, f"node {i} child")
            if c == i:
                raise GltfError(f"node {i} is its own child")
            if c in parent:
                raise GltfError(f"node {c} has two parents ({parent[c]} and {i})")
            parent[c] = i
        if "mesh" in node:
            _index(node["mesh"], meshes, f"node {i} mesh")
        if "skin" in node:
            _index(node["skin"], skins, f"node {i} skin")
        if "camera" in node:
            _index(node["camera"], cameras, f"node {i} camera")
    return nodes, skins, _depths(nodes, parent)


def _check_skins(skins: list[dict[str, Any]], nodes: list[dict[str, Any]], accessors: list[dict[str, Any]]) -> None:
    """Check every skin's joints, inverseBindMatrices and skeleton point at something."""
    for i, skin in enumerate(skins):
        joints = skin.get("joints")
        if not isinstance(joints, list) or not joints:
            raise GltfError(f"skin {i} has no joints")
        for j in joints:
            _index(j, nodes, f"skin {i} joint")
        if "inverseBindMatrices" in skin:
            _index(skin["inverseBindMatrices"], accessors, f"skin {i} inverseBindMatrices")
        if "skeleton" in skin:
            _index(skin["skeleton"], nodes, f"skin {i} skeleton")


def _check_scenes(gltf: dict[str, Any], nodes: list[dict[str, Any]]) -> None:
    """Check every scene's root nodes and the default scene point at something."""
    for i, scene in enumerate(_list(gltf, "scenes")):
        roots = scene.get("nodes", [])
        if not isinstance(roots, list):
            raise GltfError(f"scene {i} nodes is not a list")
        for n in roots:
            _index(n, nodes, f"scene {i} node")
    if "scene" in gltf:
        _index(gltf["scene"], gltf.get("scenes") or [], "the default scene")


def _check_animations(gltf: dict[str, Any], accessors: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> None:
    """Check every animation's samplers (input, output) and channels (sampler, target node) point at something."""
    for i, anim in enumerate(_list(gltf, "animations")):
        anim_samplers = anim.get("samplers", [])
        if not isinstance(anim_samplers, list) or not all(isinstance(s, dict) for s in anim_samplers):
            raise GltfError(f"animation {i} samplers is not a list of objects")
        for s in anim_samplers:
            _index(s.get("input"), accessors, f"animation {i} sampler input")
            _index(s.get("output"), accessors, f"animation {i} sampler output")
        channels = anim.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, dict) for c in channels):
            raise GltfError(f"animation {i} channels is not a list of objects")
        for c in channels:
            _index(c.get("sampler"), anim_samplers, f"animation {i} channel sampler")
            target = c.get("target")
            if isinstance(target, dict) and "node" in target:
                _index(target["node"], nodes, f"animation {i} channel node")


def _texture_refs(material: dict[str, Any]) -> list[dict[str, Any]]:
    """Every texture reference (``{"index": ...}``) in a material, extensions included."""
    refs: list[dict[str, Any]] = []

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            if key.endswith("Texture") and "index" in value:
                refs.append(value)
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)

    walk(material)
    return refs


def _depths(nodes: list[dict[str, Any]], parent: dict[int, int]) -> int:
    """The deepest chain of nodes (a root alone is depth 1); GltfError on cycles or chains over the limit."""
    depth: dict[int, int] = {}
    deepest = 0
    for start in range(len(nodes)):
        chain: list[int] = []
        n: int | None = start
        seen: set[int] = set()
        while n is not None and n not in depth:
            if n in seen:
                raise GltfError(f"the node hierarchy has a cycle through node {n}")
            seen.add(n)
            chain.append(n)
            n = parent.get(n)
        base = depth[n] if n is not None else 0
        for k, node in enumerate(reversed(chain)):
            depth[node] = base + k + 1
            if depth[node] > MAX_NODE_DEPTH:
                raise GltfError(f"the node hierarchy is deeper than {MAX_NODE_DEPTH} levels (at node {node})")
        deepest = max(deepest, depth[start])
    return deepest


def _view_head(
    path: Path,
    buffers: list[dict[str, Any]],
    view: dict[str, Any],
    bin_len: int | None,
    folder: Path,
) -> bytes | None:
    """The first bytes of a buffer view (an embedded image), read from the BIN chunk, a data URI or a file."""
    b, offset = view["buffer"], view.get("byteOffset", 0)
    length = min(view["byteLength"], IMAGE_HEAD_BYTES)
    buf = buffers[b]
    if "uri" not in buf:
        if b != 0 or bin_len is None:
            return None
        with open(path, "rb") as f:
            json_len = read_glb_header(f, os.fstat(f.fileno()).st_size).json_length
            f.seek(20 + json_len + 8 + offset)
            return f.read(length)
    source = resolve_uri(buf["uri"], folder, f"buffer {b}")
    if isinstance(source, bytes):
        return source[offset : offset + length]
    with open(source, "rb") as f:
        f.seek(offset)
        return f.read(length)
