"""Shard formats: webdataset tar writers and readers for render shards and pair shards.

Render shard sample (one per object, all views together), members ``KEY.<field>``:

* ``meta.json`` — ``uid``, ``source``, ``sha256``, ``width``, ``height``, ``normalization`` (``scale``,
  ``offset``), ``renderer``, ``views`` (one entry per view in index order: ``index``, ``K`` 3x3 pixels, ``c2w``
  4x4 OpenCV, ``blender_matrix_world`` 4x4, ``azimuth_deg``, ``elevation_deg``, ``radius``).
* ``rgba.000.png`` ... — 8-bit RGBA, straight (not premultiplied) alpha.
* ``depth.000.npy`` ... — float16/float32 (H, W) planar z-depth in normalised-object units, **0 where alpha is 0**.
* with ``render.passes`` asking for them (``meta.json``'s ``renderer.passes`` lists what a sample holds):
  ``normal.000.png`` (camera-frame OpenCV unit normals, RGB-encoded) and ``albedo.000.png`` (sRGB base colour);
  encodings in :mod:`invs.passes`.

Pair shard sample (one per (object, source view, target view)), key ``{uid}_{src:03d}_{tgt:03d}``:

* ``source.png``, ``target.png``, ``partial.png`` — RGB on a white background.
* ``mask.png`` — 8-bit L soft inpainting mask, **255 = generate**, 0 = keep.
* ``visible.png`` — L, 255 where the splat covers; ``epipolar.png`` — L, 255 inside the epipolar occlusion region.
* ``depth.npy`` — the source depth used; ``meta.json``; optional ``latents.npy``.

Keys use only ``[A-Za-z0-9_-]`` because webdataset splits a member name at its first dot. Shards are written to
a local temporary file and published atomically (:func:`invs.storage.upload_file`), so a reader never sees a
half-written shard. Readers stream tar members through :mod:`invs.storage` (local or ``s3://``) and raise
:class:`ShardFormatError` naming the shard and the key when a sample breaks the contract.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from invs import passes, storage
from invs.errors import ShardFormatError, StorageError

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
PNG_COMPRESS_LEVEL = 4

# ------------------------------------------------------------------------------------------------ keys


def safe_key(name: str) -> str:
    """A webdataset-safe key for ``name``: unchanged if already ``[A-Za-z0-9_-]+``, else cleaned + hash suffix.

    The hash suffix (8 hex digits of SHA-1 of the original) keeps distinct names distinct after cleaning
    (``a.b`` and ``a_b`` must not collide).
    """
    if not name:
        raise ValueError("cannot make a key from an empty name")
    if KEY_RE.match(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:80] or "x"
    return f"{cleaned}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def check_key(key: str) -> str:
    if not KEY_RE.match(key or ""):
        raise ShardFormatError(f"invalid sample key {key!r}: keys may only use [A-Za-z0-9_-] (see safe_key)")
    return key


def pair_key(uid_key: str, src: int, tgt: int) -> str:
    return f"{check_key(uid_key)}_{src:03d}_{tgt:03d}"


# ------------------------------------------------------------------------------------------------ codecs


def encode_png(image: np.ndarray, mode: str) -> bytes:
    """PNG bytes of a uint8 image; ``mode`` is ``RGBA`` (H, W, 4), ``RGB`` (H, W, 3) or ``L`` (H, W)."""
    channels = {"RGBA": 4, "RGB": 3, "L": None}[mode]
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ShardFormatError(f"{mode} image must be uint8, got {image.dtype}")
    ok = image.ndim == 2 if channels is None else image.ndim == 3 and image.shape[2] == channels
    if not ok:
        raise ShardFormatError(f"{mode} image has shape {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image, mode=mode).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def decode_png(data: bytes, mode: str) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        if im.mode != mode:
            raise ShardFormatError(f"expected a {mode} PNG, found {im.mode}")
        return np.asarray(im).copy()


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_json(obj: Any) -> bytes:
    def default(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    return json.dumps(obj, default=default, sort_keys=True).encode()


def decode_json(data: bytes) -> Any:
    return json.loads(data)


# ------------------------------------------------------------------------------------------------ render samples

RENDER_META_KEYS = ("uid", "source", "sha256", "width", "height", "normalization", "renderer", "views")
RENDER_VIEW_KEYS = ("index", "K", "c2w", "blender_matrix_world", "azimuth_deg", "elevation_deg", "radius")


@dataclass
class RenderSample:
    """All views of one object. ``rgba[i]`` is (H, W, 4) uint8; ``depth[i]`` is (H, W) planar z, 0 off-object;
    ``images[pass][i]`` (H, W, 3) uint8 for the optional image passes (``normal``, ``albedo``; :mod:`invs.passes`)."""

    key: str
    meta: dict[str, Any]
    rgba: list[np.ndarray]
    depth: list[np.ndarray]
    images: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def normals(self, i: int) -> np.ndarray:
        """View ``i``'s unit camera-frame normals (H, W, 3) float32, 0 off-object; needs the ``normal`` pass."""
        if "normal" not in self.images:
            raise ShardFormatError(f"{self.key}: rendered without the normal pass (render.passes)")
        return passes.decode_normals(self.images["normal"][i], self.rgba[i][..., 3])

    @property
    def num_views(self) -> int:
        return len(self.rgba)

    def K(self, i: int) -> np.ndarray:
        return np.asarray(self.meta["views"][i]["K"], dtype=np.float64)

    def c2w(self, i: int) -> np.ndarray:
        return np.asarray(self.meta["views"][i]["c2w"], dtype=np.float64)


def _check_render_meta(meta: dict[str, Any], n_views: int, where: str) -> None:
    missing = [k for k in RENDER_META_KEYS if k not in meta]
    if missing:
        raise ShardFormatError(f"{where}: meta.json lacks {', '.join(missing)}")
    views = meta["views"]
    if not isinstance(views, list) or len(views) != n_views:
        raise ShardFormatError(f"{where}: meta.json lists {len(views)} views, sample has {n_views} images")
    for i, view in enumerate(views):
        missing = [k for k in RENDER_VIEW_KEYS if k not in view]
        if missing:
            raise ShardFormatError(f"{where}: view {i} lacks {', '.join(missing)}")
        if view["index"] != i:
            raise ShardFormatError(f"{where}: view {i} has index {view['index']}")
        for name, shape in (("K", (3, 3)), ("c2w", (4, 4)), ("blender_matrix_world", (4, 4))):
            if np.asarray(view[name]).shape != shape:
                raise ShardFormatError(f"{where}: view {i} {name} is not {shape[0]}x{shape[1]}")


def encode_render_sample(sample: RenderSample) -> dict[str, bytes]:
    """Members (field -> bytes) of a render sample, validated against the contract."""
    check_key(sample.key)
    n = len(sample.rgba)
    if n == 0 or len(sample.depth) != n:
        raise ShardFormatError(f"{sample.key}: need one depth map per RGBA view ({n} RGBA, {len(sample.depth)} depth)")
    _check_render_meta(sample.meta, n, sample.key)
    h, w = int(sample.meta["height"]), int(sample.meta["width"])
    members = {"meta.json": encode_json(sample.meta)}
    for i, (rgba, depth) in enumerate(zip(sample.rgba, sample.depth, strict=True)):
        if rgba.shape != (h, w, 4) or depth.shape != (h, w):
            raise ShardFormatError(f"{sample.key}: view {i} is {rgba.shape}/{depth.shape}, meta says {h}x{w}")
        if depth.dtype not in (np.float16, np.float32):
            raise ShardFormatError(f"{sample.key}: depth must be float16 or float32, got {depth.dtype}")
        members[f"rgba.{i:03d}.png"] = encode_png(rgba, "RGBA")
        members[f"depth.{i:03d}.npy"] = encode_npy(depth)
    for name, images in sample.images.items():
        if name not in passes.IMAGE_PASSES or len(images) != n:
            raise ShardFormatError(f"{sample.key}: {len(images)} {name!r} images for {n} views")
        for i, image in enumerate(images):
            if image.shape[:2] != (h, w):
                raise ShardFormatError(f"{sample.key}: view {i} {name} is {image.shape}, meta says {h}x{w}")
            members[f"{name}.{i:03d}.png"] = encode_png(image, passes.IMAGE_PASSES[name])
    return members


def decode_render_sample(key: str, members: dict[str, bytes], where: str = "") -> RenderSample:
    at = f"{where}:{key}" if where else key
    if "meta.json" not in members:
        raise ShardFormatError(f"{at}: missing meta.json")
    meta = decode_json(members["meta.json"])
    views = meta.get("views") or []
    rgba, depth = [], []
    for i in range(len(views)):
        for name in (f"rgba.{i:03d}.png", f"depth.{i:03d}.npy"):
            if name not in members:
                raise ShardFormatError(f"{at}: missing {name}")
        rgba.append(decode_png(members[f"rgba.{i:03d}.png"], "RGBA"))
        depth.append(decode_npy(members[f"depth.{i:03d}.npy"]))
    _check_render_meta(meta, len(rgba), at)
    images: dict[str, list[np.ndarray]] = {}
    for name in (meta.get("renderer") or {}).get("passes", []):
        if name in passes.IMAGE_PASSES:
            names = [f"{name}.{i:03d}.png" for i in range(len(views))]
            absent = [m for m in names if m not in members]
            if absent:
                raise ShardFormatError(f"{at}: meta.json lists the {name} pass but {absent[0]} is missing")
            images[name] = [decode_png(members[m], passes.IMAGE_PASSES[name]) for m in names]
    return RenderSample(key=key, meta=meta, rgba=rgba, depth=depth, images=images)


# ------------------------------------------------------------------------------------------------ pair samples

PAIR_META_KEYS = (
    "uid",
    "src",
    "tgt",
    "K_src",
    "c2w_src",
    "K_tgt",
    "c2w_tgt",
    "depth_source",
    "depth_alignment",
    "visible_fraction",
)
_PAIR_IMAGES = {"source": "RGB", "target": "RGB", "partial": "RGB", "mask": "L", "visible": "L", "epipolar": "L"}


@dataclass
class PairSample:
    """One training pair. Images are uint8: RGB (H, W, 3) on white; masks L (H, W) with 255 = generate/covered."""

    key: str
    source: np.ndarray
    target: np.ndarray
    partial: np.ndarray
    mask: np.ndarray
    visible: np.ndarray
    epipolar: np.ndarray
    depth: np.ndarray
    meta: dict[str, Any]
    latents: np.ndarray | None = None
    extra: dict[str, bytes] = field(default_factory=dict)


def encode_pair_sample(sample: PairSample) -> dict[str, bytes]:
    check_key(sample.key)
    missing = [k for k in PAIR_META_KEYS if k not in sample.meta]
    if missing:
        raise ShardFormatError(f"{sample.key}: pair meta lacks {', '.join(missing)}")
    shape = sample.target.shape[:2]
    members = {"meta.json": encode_json(sample.meta), "depth.npy": encode_npy(sample.depth)}
    for name, mode in _PAIR_IMAGES.items():
        image = getattr(sample, name)
        if image.shape[:2] != shape:
            raise ShardFormatError(f"{sample.key}: {name} is {image.shape[:2]}, target is {shape}")
        members[f"{name}.png"] = encode_png(image, mode)
    if sample.latents is not None:
        members["latents.npy"] = encode_npy(sample.latents)
    members.update(sample.extra)
    return members


def decode_pair_sample(key: str, members: dict[str, bytes], where: str = "") -> PairSample:
    at = f"{where}:{key}" if where else key
    needed = ["meta.json", "depth.npy", *(f"{n}.png" for n in _PAIR_IMAGES)]
    missing = [m for m in needed if m not in members]
    if missing:
        raise ShardFormatError(f"{at}: missing {', '.join(missing)}")
    images = {name: decode_png(members[f"{name}.png"], mode) for name, mode in _PAIR_IMAGES.items()}
    shape = images["target"].shape[:2]
    wrong = [n for n, im in images.items() if im.shape[:2] != shape]
    if wrong:
        raise ShardFormatError(f"{at}: {', '.join(wrong)} not the target's size {shape}")
    known = {*needed, "latents.npy"}
    return PairSample(
        key=key,
        meta=decode_json(members["meta.json"]),
        depth=decode_npy(members["depth.npy"]),
        latents=decode_npy(members["latents.npy"]) if "latents.npy" in members else None,
        extra={k: v for k, v in members.items() if k not in known},
        **images,
    )


# ------------------------------------------------------------------------------------------------ writing


@dataclass(frozen=True)
class PublishedShard:
    uri: str
    keys: tuple[str, ...]
    num_bytes: int


class ShardWriter:
    """Writes samples into ``{shards_uri}/{prefix}-{n:06d}.tar``, publishing each shard atomically.

    A shard is built in a local temporary file and published (renamed or uploaded) when it reaches
    ``max_samples`` or ``max_bytes``, on :meth:`flush`, or on :meth:`close`. ``on_publish`` is called with each
    published shard; callers record manifest rows there, so a row never points at an unpublished shard.
    ``prefix`` must be unique per writer (e.g. include a worker id and a run id) so concurrent writers and
    re-runs never overwrite each other's shards. Leaving the ``with`` block by an exception discards the
    shard in progress.
    """

    def __init__(
        self,
        shards_uri: str,
        prefix: str,
        max_samples: int = 64,
        max_bytes: int = 1 << 30,
        on_publish: Callable[[PublishedShard], None] | None = None,
    ) -> None:
        check_key(prefix)
        self.shards_uri = storage.normalize(shards_uri)
        self.prefix = prefix
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.on_publish = on_publish
        self.published: list[PublishedShard] = []
        self._index = 0
        self._tmp: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._tar: Any = None  # webdataset.TarWriter
        self._keys: list[str] = []

    def _open(self) -> None:
        import webdataset

        self._tmp = tempfile.NamedTemporaryFile(prefix="shard-", suffix=".tar", delete=False)  # noqa: SIM115
        # Members as given (no encoding), read-only, mtime 0 (same input, same bytes), PAX for long keys.
        self._tar = webdataset.TarWriter(self._tmp, encoder=False, mode=0o444, mtime=0, format="PAX_FORMAT")
        self._keys = []

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Add one sample (``members`` maps field names like ``rgba.000.png`` to bytes)."""
        check_key(key)
        if key in self._keys:
            raise ShardFormatError(f"duplicate key {key!r} in one shard")
        if self._tar is None:
            self._open()
        assert self._tar is not None
        if any(name.startswith("_") for name in members):
            raise ShardFormatError(f"{key}: member names may not start with '_' (webdataset metadata)")
        self._tar.write({"__key__": key, **members})
        self._keys.append(key)
        assert self._tmp is not None
        if len(self._keys) >= self.max_samples or self._tmp.tell() >= self.max_bytes:
            self.flush()

    def flush(self) -> PublishedShard | None:
        """Publish the shard in progress (if any) and return it."""
        if self._tar is None or self._tmp is None:
            return None
        self._tar.close()
        self._tmp.close()
        uri = storage.join(self.shards_uri, f"{self.prefix}-{self._index:06d}.tar")
        try:
            size = os.path.getsize(self._tmp.name)
            storage.upload_file(self._tmp.name, uri)
        finally:
            os.unlink(self._tmp.name)
            self._tar = self._tmp = None
        shard = PublishedShard(uri=uri, keys=tuple(self._keys), num_bytes=size)
        self._index += 1
        self._keys = []
        self.published.append(shard)
        if self.on_publish is not None:
            self.on_publish(shard)
        return shard

    def discard(self) -> None:
        """Drop the shard in progress without publishing it."""
        if self._tar is not None and self._tmp is not None:
            self._tar.close()
            self._tmp.close()
            os.unlink(self._tmp.name)
        self._tar = self._tmp = None
        self._keys = []

    def close(self) -> list[PublishedShard]:
        self.flush()
        return self.published

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


# ------------------------------------------------------------------------------------------------ reading


def split_member_name(name: str) -> tuple[str, str]:
    """webdataset's rule (``webdataset.tariterators.base_plus_ext``): key = the path up to the basename's first dot,
    field = the rest."""
    from webdataset.tariterators import base_plus_ext

    key, field = base_plus_ext(name)
    if key is None:
        raise ShardFormatError(f"tar member {name!r} has no field extension")
    return key, field


def iter_tar_samples(uri: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream (key, members) from one tar shard (local or s3://) with webdataset's own tar iterator and key
    grouping (``tar_file_iterator``, ``group_by_keys``), so our reader and a plain ``webdataset.WebDataset`` see
    the same samples.

    A truncated or corrupt shard, or a member without a field extension, raises :class:`ShardFormatError` naming
    the shard; samples before the damage have already been yielded.
    """
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    def members(stream: Any) -> Iterator[dict[str, Any]]:
        for item in tar_file_iterator(stream, skip_meta=None):
            split_member_name(item["fname"])  # loud about a member webdataset would silently drop
            yield item | {"__url__": uri}

    try:
        with storage.open_read(uri) as f:
            for sample in group_by_keys(members(f), lcase=False):
                key = sample.pop("__key__")
                sample.pop("__url__", None)
                yield key, sample
    except ShardFormatError as exc:
        raise ShardFormatError(f"{uri}: {exc}") from exc
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ShardFormatError(f"corrupt or truncated shard {uri}: {exc}") from exc
    except StorageError:
        raise


def iter_render_samples(uris: list[str]) -> Iterator[RenderSample]:
    for uri in uris:
        for key, members in iter_tar_samples(uri):
            yield decode_render_sample(key, members, where=uri)


def iter_pair_samples(uris: list[str]) -> Iterator[PairSample]:
    for uri in uris:
        for key, members in iter_tar_samples(uri):
            yield decode_pair_sample(key, members, where=uri)


def list_shards(out_uri: str) -> list[str]:
    """All published shards under ``OUT/shards/`` (sorted)."""
    return storage.list_files(storage.join(out_uri, "shards"), suffix=".tar")


def remove_orphan_shards(out_uri: str, referenced: set[str]) -> list[str]:
    """Delete the shards under ``OUT/shards/`` that no table row references; returns their URIs.

    A writer publishes a shard before it appends the rows that point at it, so a run that died in between
    leaves such an orphan; deleting it (its samples are made again) keeps every sample in the shards exactly once.
    Shards are matched by file name: the rows of a moved or copied output still name the place it was written at.
    """
    names = {storage.basename(uri) for uri in referenced}
    orphans = [uri for uri in list_shards(out_uri) if storage.basename(uri) not in names]
    for uri in orphans:
        storage.delete(uri)
    return orphans


# ------------------------------------------------------------------------------------------------ webdataset


def _gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **_: Any) -> Any:
    if mode[0] != "r":
        raise ValueError(f"s3:// shards are read-only through webdataset (mode {mode!r}); write with ShardWriter")
    fs = storage.s3_filesystem()
    bucket, key = storage.parse_s3(url)
    return fs.open(f"{bucket}/{key}", "rb", block_size=8 * 2**20)


def register_webdataset_s3() -> None:
    """Let ``webdataset.WebDataset("s3://bucket/shard-{000000..000009}.tar")`` read through :mod:`invs.storage`.

    webdataset 1.0.2 has no s3 opener; its ``gopen_schemes`` table is extended in place (the module must be
    reached through ``sys.modules`` because ``webdataset.gopen`` is also the name of a function).
    """
    import webdataset  # noqa: F401 - makes sure the module is loaded

    sys.modules["webdataset.gopen"].gopen_schemes["s3"] = _gopen_s3


def index_shard(data: str, recorded: str) -> str:
    """The URI of a shard a table row names (the pair index, the render manifest), under ``DATA/shards/``: rows keep
    the URI the shard was written at, so a moved or copied output is read where it is now."""
    return storage.join(data, "shards", storage.basename(recorded))


def read_samples(shard: str, keys: set[str]) -> list[tuple[str, dict[str, bytes]]]:
    """The raw members of the given keys in one shard (stops reading once all are found)."""
    found = []
    for key, members in iter_tar_samples(shard):
        if key in keys:
            found.append((key, members))
            if len(found) == len(keys):
                break
    return found
