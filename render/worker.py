"""One render worker: fetches objects, renders them in its long-lived Blender, writes shards and manifest rows.

:class:`RenderWorker` is plain Python (testable without Ray); the job runs one per Ray actor. Exactly-once
bookkeeping: a sample's ``ok`` manifest row is written only after the shard holding it is published, and
failure rows are written with the next shard (or at :meth:`close`). A worker that dies before publishing
leaves neither shard nor rows, so its objects are simply rendered again by the next run; a shard published
without its rows (death between the two writes) is an orphan that the next run deletes before it starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from invs import passes, quality, shards, storage, tables
from invs.config import Config, apply_storage_settings
from invs.images import MIN_ALPHA_FRACTION
from render import formats, objaverse_source, xl_fetch
from render.blender_process import BlenderError, BlenderProcess
from render.object_ref import ObjectRef
from render.request import RenderRequest


class FetchError(Exception):
    """The model file could not be obtained (missing, download failed, failed verification)."""


def fetch(
    ref: ObjectRef,
    directory: Path,
    config: Config,
    on_objaverse: Callable[[objaverse_source.Fetched], None] | None = None,
    xl: xl_fetch.XLFetcher | None = None,
) -> Path:
    """A local file for ``ref`` (downloaded or generated into ``directory/KEY/`` when it is not local).

    Objaverse objects are fetched by the path in ``ref.object_path`` (no index read here): with a store
    (``objaverse.store``) into ``directory`` (deleted after rendering; the store keeps them), else into
    the node's Objaverse cache. Objaverse-XL objects are fetched by ``xl`` (:mod:`render.xl_fetch`; one is made
    for the call if not given). ``on_objaverse`` is told where each Objaverse or XL object came from.
    """
    if ref.uri.startswith("objaverse-xl:"):
        try:
            got = (xl or xl_fetch.XLFetcher(config, directory)).fetch(ref)
        except objaverse_source.DownloadError as exc:
            raise FetchError(str(exc)) from None
        if on_objaverse is not None:
            on_objaverse(got)
        return got.path
    if ref.uri.startswith(("samples:", "procedural:")):
        from render import procedural, samples

        path = directory / ref.key / f"{ref.key}.glb"
        path.parent.mkdir(parents=True, exist_ok=True)
        kind, name = ref.uri.split(":", 1)
        data = samples.sample_bytes(name) if kind == "samples" else procedural.procedural_bytes(int(name))
        path.write_bytes(data)
        return path
    if ref.uri.startswith("objaverse:"):
        source = config.objaverse
        if ref.object_path is None:
            raise FetchError(objaverse_source.UNKNOWN_UID)
        root = directory / "objaverse" if source.store else objaverse_source.cache_root(source.cache)
        try:
            got = objaverse_source.fetch_object(
                ref.uid,
                ref.object_path,
                root,
                mirror=source.mirror,
                store=source.store,
                retry=objaverse_source.RetryPolicy.from_config(source),
            )
        except objaverse_source.DownloadError as exc:
            raise FetchError(str(exc)) from None
        if on_objaverse is not None:
            on_objaverse(got)
        return got.path
    if ref.uri.startswith("s3://"):
        path = directory / ref.key / f"{ref.key}{ref.suffix}"  # a folder of its own: it may read nothing else
        try:
            storage.download_file(ref.uri, path)
        except storage.StorageError as exc:
            raise FetchError(str(exc)) from None
        return path
    path = Path(ref.uri)
    if not path.is_file():
        raise FetchError(f"model file not found: {ref.uri}")
    return path


def build_request(config: Config, ref: ObjectRef, model: Path, out_dir: Path, threads: int) -> RenderRequest:
    """The Blender worker's request for one object (:class:`render.request.RenderRequest`)."""
    return RenderRequest.from_config(config, ref.uid, model, out_dir, threads)


#: Share of a node's memory that its Blender processes may use together when ``render.max_memory_mb`` is null.
MEMORY_SHARE = 0.8


def node_memory_mb() -> float:
    """This node's memory in MiB: the physical memory, or the container's cgroup limit when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total / 2**20


def workers_on_node(config: Config, threads: int) -> int:
    """How many render workers (bundles of ``threads`` CPUs, a GPU with ``device: gpu``) this node holds.

    Inside a Ray actor: from this node's resources as Ray sees them; elsewhere: this machine's CPUs.
    """
    from invs import fleet

    bundle = fleet.worker_bundle(config.render) | {"CPU": float(threads)}
    try:
        import ray

        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
            node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
            return max(1, fleet.per_node(bundle, node["Resources"]))
    except (ImportError, StopIteration, RuntimeError):
        pass
    return max(1, (os.cpu_count() or 1) // max(1, threads))


def memory_cap_mb(setting: float | None, node_mb: float, workers: int) -> float:
    """A Blender process's memory ceiling: ``setting`` when given, else :data:`MEMORY_SHARE` of the node's memory
    shared by the render workers the node holds."""
    if setting is not None:
        return float(setting)
    return MEMORY_SHARE * node_mb / max(1, workers)


#: Keys of a worker's Objaverse and Objaverse-XL fetch counts (summed into the job summary's ``objaverse``): objects
#: from the local cache, the store and their source, HTTP requests (retries included) and git repositories fetched.
OBJAVERSE_COUNTS = ("cache", "store", "http", "http_requests", "clones")


def provenance(ref: ObjectRef) -> dict[str, Any]:
    """What the manifest records of where ``ref`` comes from: its URI (``source``), the source that listed it
    (``origin``), its ``file_identifier`` (Objaverse objects: their Sketchfab URL), ``file_type``, licence and
    annotations."""
    identifier = ref.file_identifier
    if identifier is None and ref.uri.startswith("objaverse:"):
        identifier = f"https://sketchfab.com/3d-models/{ref.uid}"  # Objaverse-XL's fileIdentifier of the object
    return {
        "key": ref.key,
        "source": ref.uri,
        "origin": ref.source,
        "file_identifier": identifier,
        "file_type": ref.suffix.lstrip(".") or None,
        "license": ref.license,
        "annotations": ref.annotations,
    }


def _row(ref: ObjectRef, status: str, **columns: Any) -> dict[str, Any]:
    """A manifest row of ``ref`` with its :func:`provenance` and ``columns``."""
    return tables.manifest_row(ref.uid, status, **provenance(ref), **columns)


class RenderWorker:
    """Renders objects into ``OUT/shards/{job_id}-w{index}-NNNNNN.tar`` and appends ``OUT/manifest`` rows."""

    def __init__(self, config: Config, job_id: str, index: int, threads: int = 0) -> None:
        apply_storage_settings(config)  # this process's S3 endpoint and retries (a Ray actor does not inherit them)
        self.config = config
        self.index = index
        self.cfg = config.render
        self.out = self.cfg.out
        self.manifest_uri = storage.join(self.out, tables.MANIFEST_DIR)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"invs-render-w{index}-"))
        self.max_memory_mb = memory_cap_mb(self.cfg.max_memory_mb, node_memory_mb(), workers_on_node(config, threads))
        self.blender = BlenderProcess(threads=threads, max_memory_mb=self.max_memory_mb, log_dir=str(self.tmp / "logs"))
        self.writer = shards.ShardWriter(
            storage.join(self.out, "shards"),
            f"{job_id}-w{index:03d}",
            max_samples=self.cfg.objects_per_shard,
            on_publish=self._on_publish,
        )
        self._pending: dict[str, dict[str, Any]] = {}  # rows of samples in the unpublished shard, by key
        self._failures: list[dict[str, Any]] = []
        self._shard_opened: float | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fetch")
        # Objaverse-XL: GitHub checkouts live as long as the worker (in the node's cache without a store)
        store = config.objaverse.store
        self.xl = xl_fetch.XLFetcher(config, self.tmp / "fetch", self.tmp / "repos" if store else None)
        self.stats = {"render_s": 0.0, "blender_s": 0.0, "fetch_wait_s": 0.0, "objects": 0, "views": 0}
        # Objaverse objects by origin (local cache, store, HTTP) and HTTP requests made for them (retries included)
        self.objaverse = dict.fromkeys(OBJAVERSE_COUNTS, 0)
        self._objaverse_lock = threading.Lock()

    # -------------------------------------------------------------------------------------------- bookkeeping

    def _on_publish(self, shard: shards.PublishedShard) -> None:
        rows = [dict(self._pending.pop(k), shard=shard.uri) for k in shard.keys]
        rows += self._failures
        self._failures = []
        tables.append_rows(self.manifest_uri, rows, tables.MANIFEST_SCHEMA)
        self._shard_opened = None

    def _fail(
        self, ref: ObjectRef, attempt: int, error: str, seconds: float, sha: str | None = None, **known: Any
    ) -> dict:
        """Record a failed attempt; ``known``: manifest columns measured before it failed (provenance, flags)."""
        row = _row(
            ref, "failed", error=error[:4000], attempts=attempt, seconds=seconds, num_views=0, sha256=sha, **known
        )
        self._failures.append(row)
        return {"uid": ref.uid, "status": "failed", "error": error, "seconds": seconds}

    # -------------------------------------------------------------------------------------------- rendering

    def _sample(
        self, ref: ObjectRef, sha: str, request: RenderRequest, result: dict[str, Any], out_dir: Path
    ) -> shards.RenderSample:
        """The render shard's sample: the images Blender wrote, described by the request it rendered and its answer."""
        rgba = [np.asarray(Image.open(out_dir / f"rgba_{i:03d}.png")) for i in range(len(result["views"]))]
        flags = [quality.view_flags(image) for image in rgba]
        views = [dict(v, flags=f, cropped="cropped" in f) for v, f in zip(result["views"], flags, strict=True)]
        depth = [np.load(out_dir / f"depth_{i:03d}.npy") for i in range(len(views))]
        images = {
            name: [np.asarray(Image.open(out_dir / f"{name}_{i:03d}.png")) for i in range(len(views))]
            for name in request.passes
            if name in passes.IMAGE_PASSES
        }
        about = provenance(ref)
        meta = {
            "uid": ref.uid,
            "source": ref.uri,
            "sha256": sha,
            "provenance": {k: about[k] for k in ("origin", "file_identifier", "file_type", "license")},
            "width": request.resolution,
            "height": request.resolution,
            "normalization": result["normalization"],
            "views": views,
            "renderer": request.renderer()
            | {"blender_version": result["blender_version"], "lighting": result["lighting"]},
            "camera": {
                "lens_mm": request.lens_mm,
                "sensor_width_mm": request.sensor_width_mm,
                "convention": "opencv_c2w",
            },
            "depth": {"kind": "planar_z", "units": "normalized_object", "background": 0.0},
            **{name: passes.DESCRIPTIONS[name] for name in request.passes if name in passes.IMAGE_PASSES},
            "missing_textures": result["missing_textures"],
            "contents": result["contents"],
            "default_material": formats.DEFAULT_MATERIAL if result["contents"]["default_material"] else None,
            "removed": result["removed"],
            "empty_views": sum("empty" in f for f in flags),
            "cropped_views": sum("cropped" in f for f in flags),
            "flags": quality.object_flags(
                flags, result["missing_textures"], result["contents"]["meshes_without_material"]
            ),
        }
        return shards.RenderSample(key=ref.key, meta=meta, rgba=rgba, depth=depth, images=images)

    def _render_one(self, ref: ObjectRef, attempt: int, fetched: Future[Path]) -> dict[str, Any]:
        started = time.monotonic()
        t0 = time.monotonic()
        try:
            model = fetched.result()
        except FetchError as exc:
            shutil.rmtree(self.tmp / "fetch" / ref.key, ignore_errors=True)  # what a failed fetch left
            return self._fail(ref, attempt, f"fetch failed: {exc}", time.monotonic() - started)
        self.stats["fetch_wait_s"] += time.monotonic() - t0
        sha = ref.sha256 or storage.sha256_file(model)  # a ref's own sha256 is what its fetch verified (XL)
        file_bytes = model.stat().st_size
        out_dir = self.tmp / "views" / ref.key
        shutil.rmtree(out_dir, ignore_errors=True)
        try:
            t0 = time.monotonic()
            request = build_request(self.config, ref, model, out_dir, self.blender.threads)
            result = self.blender.render(request, timeout_s=self.cfg.timeout_s)
            self.stats["blender_s"] += time.monotonic() - t0
            if not result.get("ok"):
                error = result.get("error", "unknown error")
                return self._fail(ref, attempt, error, time.monotonic() - started, sha, file_bytes=file_bytes)
            provenance = {
                "file_bytes": file_bytes,
                "triangles": result["normalization"]["triangles"],
                "materials": result["contents"]["materials"],
                "textures": result["contents"]["textures"],
            }
            self.stats["render_s"] += result["render_s"]
            coverage = max(v["alpha_fraction"] for v in result["views"])
            if coverage < MIN_ALPHA_FRACTION:
                return self._fail(
                    ref,
                    attempt,
                    f"empty render: the object covers at most {coverage:.2e} of any view "
                    "(out of frame or invisible materials)",
                    time.monotonic() - started,
                    sha,
                    flags=["empty"],
                    **provenance,
                )
            sample = self._sample(ref, sha, request, result, out_dir)
            with self._lock:
                if self._shard_opened is None:
                    self._shard_opened = time.monotonic()
                self._pending[ref.key] = _row(
                    ref,
                    "ok",
                    error=None,
                    attempts=attempt,
                    seconds=time.monotonic() - started,
                    num_views=sample.num_views,
                    sha256=sha,
                    flags=sample.meta["flags"],
                    **provenance,
                )
                self.writer.write(ref.key, shards.encode_render_sample(sample))
            self.stats["objects"] += 1
            self.stats["views"] += sample.num_views
            return {
                "uid": ref.uid,
                "status": "ok",
                "error": None,
                "seconds": time.monotonic() - started,
                "missing_textures": result["missing_textures"],
                "cropped_views": sample.meta["cropped_views"],
                "flags": sample.meta["flags"],
                "views": sample.num_views,
            }
        except BlenderError as exc:
            return self._fail(ref, attempt, str(exc), time.monotonic() - started, sha)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
            shutil.rmtree(self.tmp / "fetch" / ref.key, ignore_errors=True)  # the object's own scratch folder
            if model.is_relative_to(self.tmp / "fetch") and model.exists():  # an Objaverse download of ours
                model.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    model.parent.rmdir()  # the object's own folder, once empty

    def ready(self) -> int:
        """Answers once the actor runs (the job gives work only to started workers)."""
        return self.index

    def _count_objaverse(self, got: objaverse_source.Fetched) -> None:
        with self._objaverse_lock:  # two fetch threads
            self.objaverse[got.origin] += 1
            self.objaverse["http_requests"] += got.http_requests

    def render_batch(self, items: list[tuple[ObjectRef, int]]) -> list[dict[str, Any]]:
        """Render ``(object, attempt number)`` pairs; downloads of the next objects overlap with rendering."""
        fetch_dir = self.tmp / "fetch"
        fetch_dir.mkdir(exist_ok=True)
        futures = [
            self._pool.submit(fetch, ref, fetch_dir, self.config, self._count_objaverse, self.xl) for ref, _ in items
        ]
        results = [self._render_one(ref, attempt, fut) for (ref, attempt), fut in zip(items, futures, strict=True)]
        if self._shard_opened is not None and time.monotonic() - self._shard_opened > self.cfg.shard_flush_s:
            self.flush()
        return results

    def flush(self) -> None:
        """Publish the shard in progress (and its rows); write pending failure rows."""
        with self._lock:
            if self.writer.flush() is None and self._failures:
                tables.append_rows(self.manifest_uri, self._failures, tables.MANIFEST_SCHEMA)
                self._failures = []

    def close(self) -> dict[str, Any]:
        self.flush()
        self.blender.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        import ray.util

        stats = dict(
            self.stats,
            objaverse=dict(self.objaverse, clones=self.xl.clones),
            blender_starts=self.blender.starts,
            blender_memory_cap_mb=round(self.max_memory_mb),
            node_ip=ray.util.get_node_ip_address(),
        )
        shutil.rmtree(self.tmp, ignore_errors=True)
        return stats
