"""Objaverse objects for the render stage: select uids in the driver, fetch single objects in the workers.

Index and selection (the job's driver, once per run): :func:`select_objects` reads ``object-paths.json.gz``
(uid -> ``glbs/NNN-NNN/<uid>.glb``), ``lvis-annotations.json.gz`` and, for licences, the ``metadata/NNN-NNN.json.gz``
shards it needs, and returns each selected uid with its object path; the render workers get that path in the
:class:`~render.object_ref.ObjectRef` and never read the index. The real ``objaverse`` (0.1.7) package parses
the index files (``_load_object_paths``, ``load_lvis_annotations``) in a cache of ours (:func:`objaverse_cache`);
this module puts the files there first (:func:`_index_file`), so that they are fetched with retries, atomically,
and from the store when one is set. Metadata shards are read one at a time and only the licence is kept (the
package's ``load_annotations`` would hold the full metadata of every selected object).

Objects (each render worker, per object): :func:`fetch_object` takes the file from the local cache, else from the
store (``objaverse.store``), else over HTTP from Hugging Face (or ``objaverse.mirror``, a base URL
with the same layout), checks it (:func:`check_glb`) and copies a download into the store. The download is ours,
not the package's ``load_objects``: that one has no timeout or retry, writes a fixed ``.tmp`` name that two
processes sharing a cache collide on, globs the whole cache after every file and needs the index in each process.
The URLs and the cache layout are the package's, so caches are interchangeable.

Failures: transient HTTP/network errors (5xx, 408, 425, 429, timeouts, resets, refused connections, short
reads) are retried with exponential backoff and jitter (:class:`RetryPolicy`); permanent ones (404 and other
4xx, a file still corrupt after a second download) fail at once. Per-object failures are one-line reasons
(:class:`DownloadError`); errors that stop everything (the index cannot be fetched, bad arguments) raise
:class:`InvsError`.

The store (``s3://bucket/prefix`` or a shared directory) has the Hugging Face layout under its prefix: the index
files and ``glbs/NNN-NNN/<uid>.glb``. Writes go through :mod:`invs.storage` (atomic). A run with a store reads
everything it has from there, so a later run with the same store and selection makes no HTTP request.
"""

from __future__ import annotations

import contextlib
import difflib
import gzip
import http.client
import json
import logging
import os
import random
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import objaverse

from invs import retry as invs_retry
from invs import storage
from invs.errors import InvsError, StorageError
from invs.storage import local_cache_dir
from render import gltf_check
from render.object_ref import ObjectRef

if TYPE_CHECKING:
    from invs.config import RenderConfig

log = logging.getLogger(__name__)

#: Where the ``objaverse`` package downloads everything from (hard-coded in the package).
HF_BASE_URL = "https://huggingface.co/datasets/allenai/objaverse/resolve/main/"
#: Sub-directory of ``BASE_PATH`` the package keeps its files in (``objaverse._VERSIONED_PATH``).
VERSIONED_DIR = "hf-objaverse-v1"
SOURCE = "objaverse"
#: The reason given for a uid that the object index does not list.
UNKNOWN_UID = "uid not in the Objaverse object index (object-paths.json.gz)"
#: Longest wait between two tries of a download, whatever the backoff and a server's Retry-After say.
MAX_BACKOFF_S = 60.0

_INDEX_FILE = "object-paths.json.gz"
_LVIS_FILE = "lvis-annotations.json.gz"
_TRANSIENT_HTTP = frozenset({408, 425, 429})

_T = TypeVar("_T")
_active_caches: list[Path] = []


# ------------------------------------------------------------------------------------------------ cache and mirror


def default_cache_dir() -> Path:
    """``local_cache_dir() / "objaverse"`` (``$INVS_CACHE_DIR/objaverse`` or ``~/.cache/invs/objaverse``)."""
    return local_cache_dir() / "objaverse"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The versioned cache directory (``<cache_dir>/hf-objaverse-v1``) objects and index files are kept in."""
    base = Path(cache_dir).expanduser().resolve() if cache_dir is not None else default_cache_dir()
    return base / VERSIONED_DIR


@contextlib.contextmanager
def objaverse_cache(cache_dir: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Point the ``objaverse`` package's cache at ``cache_dir`` for the block; yields the versioned directory.

    ``None`` keeps the cache of an enclosing ``objaverse_cache`` block, else uses :func:`default_cache_dir`.
    The package reads ``BASE_PATH`` / ``_VERSIONED_PATH`` at call time; both are restored afterwards.
    """
    if cache_dir is None and _active_caches:
        yield Path(objaverse._VERSIONED_PATH)
        return
    root = cache_root(cache_dir)
    saved = objaverse.BASE_PATH, objaverse._VERSIONED_PATH
    objaverse.BASE_PATH = str(root.parent)
    objaverse._VERSIONED_PATH = str(root)
    _active_caches.append(root.parent)
    try:
        yield root
    finally:
        _active_caches.pop()
        objaverse.BASE_PATH, objaverse._VERSIONED_PATH = saved


def normalize_mirror(base_url: str) -> str:
    """Check a mirror base URL (``http(s)://host[:port]/path/``) and return it with a trailing slash."""
    url = base_url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise InvsError(f"bad Objaverse mirror URL {base_url!r}: expected http(s)://HOST[:PORT]/PATH/")
    return url if url.endswith("/") else url + "/"


class _MirrorHandler(urllib.request.BaseHandler):
    """Request pre-processor that sends Hugging Face Objaverse URLs to a mirror with the same layout."""

    handler_order = 100  # before the HTTP(S) handlers' own pre-processing, which sets the Host header

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def _rewrite(self, req: urllib.request.Request) -> urllib.request.Request:
        if req.full_url.startswith(HF_BASE_URL):
            req.full_url = self.base_url + req.full_url[len(HF_BASE_URL) :]
        return req

    http_request = _rewrite
    https_request = _rewrite


@contextlib.contextmanager
def objaverse_mirror(base_url: str | None) -> Iterator[None]:
    """Send every download the ``objaverse`` package makes to ``base_url`` for the block (``None``: no change).

    A safety net: this module puts the files the package reads in the cache before calling it, and its own
    downloads (:func:`download`) take the mirror URL from :func:`source_url`. A mirror serves the Hugging Face
    layout under its base URL: ``object-paths.json.gz``, ``lvis-annotations.json.gz``,
    ``metadata/NNN-NNN.json.gz`` and ``glbs/NNN-NNN/<uid>.glb``.
    """
    if base_url is None:
        yield
        return
    opener = urllib.request.build_opener(_MirrorHandler(normalize_mirror(base_url)))
    previous = getattr(urllib.request, "_opener", None)  # what urlopen/urlretrieve use; None: the default one
    urllib.request.install_opener(opener)
    try:
        yield
    finally:
        urllib.request.install_opener(previous)


@contextlib.contextmanager
def objaverse_session(cache_dir: str | os.PathLike[str] | None = None, mirror: str | None = None) -> Iterator[Path]:
    """:func:`objaverse_cache` and :func:`objaverse_mirror` together; yields the versioned cache directory."""
    with objaverse_cache(cache_dir) as root, objaverse_mirror(mirror):
        yield root


def source_url(rel: str, mirror: str | None = None) -> str:
    """The URL of a file of the Objaverse repository (``glbs/...``, ``metadata/...``) on Hugging Face or ``mirror``."""
    return (normalize_mirror(mirror) if mirror is not None else HF_BASE_URL) + rel


# ------------------------------------------------------------------------------------------------ errors and retries


class DownloadError(InvsError):
    """One file could not be obtained; the message is the one-line reason."""


@dataclass(frozen=True)
class RetryPolicy(invs_retry.RetryPolicy):
    """How HTTP downloads are tried: the core :class:`invs.retry.RetryPolicy` with ``attempts`` tries in all; before
    try ``n + 1`` a wait of ``backoff_s * 2 ** (n - 1)`` seconds (at most :data:`MAX_BACKOFF_S`, longer if the server
    asks with ``Retry-After``) times a random factor in [0.5, 1] so that many workers do not retry in step.
    ``timeout_s`` bounds connecting and each read of one request."""

    attempts: int = 5
    max_wait_s: float = field(default=MAX_BACKOFF_S, kw_only=True, repr=False)
    jitter: tuple[float, float] = field(default=(0.5, 1.0), kw_only=True, repr=False)
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.timeout_s <= 0:
            raise InvsError(f"bad download retry settings {self}: need attempts >= 1, backoff >= 0, timeout > 0")

    @classmethod
    def from_config(cls, cfg: RenderConfig) -> RetryPolicy:
        """``objaverse.download_attempts``, ``objaverse.download_backoff_s`` and ``objaverse.download_timeout_s``."""
        return cls(cfg.download_attempts, cfg.download_backoff_s, cfg.download_timeout_s)

    def delay(self, failed_tries: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``failed_tries`` failed tries (1, 2, ...): :meth:`wait_s`."""
        return self.wait_s(failed_tries, retry_after, rng)


def describe_error(exc: BaseException) -> str:
    """One line for a download error: the HTTP status and URL, or the network/OS error."""
    if isinstance(exc, urllib.error.HTTPError):
        with contextlib.suppress(Exception):
            exc.close()  # the error holds the open response
        return f"HTTP {exc.code} {exc.reason} for {exc.url}"
    if isinstance(exc, urllib.error.ContentTooShortError):
        return f"download incomplete: {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"network error: {exc.reason}"
    if isinstance(exc, TimeoutError | ConnectionError | http.client.HTTPException):
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return f"network error: {text}"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """True for errors that another try may not meet: 5xx, 408, 425, 429, timeouts, resets, refused connections,
    short reads, name lookups. False for other HTTP statuses (404, 403, ...), certificate errors and local OS errors
    (a full disk)."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code in _TRANSIENT_HTTP
    if isinstance(exc, urllib.error.URLError):
        return not isinstance(exc.reason, ssl.SSLCertVerificationError)
    return isinstance(exc, TimeoutError | ConnectionError | http.client.HTTPException)


def _retry_after(exc: BaseException) -> float | None:
    """A server's ``Retry-After: <seconds>`` on a 429/503 answer (the HTTP-date form is not used)."""
    if isinstance(exc, urllib.error.HTTPError) and exc.headers is not None:
        value = (exc.headers.get("Retry-After") or "").strip()
        if value.isdigit():
            return float(value)
    return None


def _download_once(url: str, dest: Path, timeout_s: float) -> None:
    """GET ``url`` into ``dest`` atomically (a temporary name in the same directory, renamed when complete)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        # our own opener: the one urlopen uses is process-global and may be a mirror block's (not thread-safe)
        with os.fdopen(fd, "wb") as f, urllib.request.build_opener().open(url, timeout=timeout_s) as response:
            expected = (response.headers.get("Content-Length") or "").strip()
            shutil.copyfileobj(response, f, 1 << 20)
            received = f.tell()
        if expected.isdigit() and received != int(expected):
            raise urllib.error.ContentTooShortError(f"{received} of {expected} bytes from {url}", None)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def download(url: str, dest: Path, retry: RetryPolicy | None = None, *, rng: random.Random | None = None) -> int:
    """Download ``url`` to ``dest`` (atomically), retrying transient errors; returns the number of tries.

    Raises :class:`DownloadError` with a one-line reason for a permanent error or when the tries are used up.
    """
    retry = retry or RetryPolicy()
    for tries in range(1, retry.attempts + 1):
        try:
            _download_once(url, dest, retry.timeout_s)
            return tries
        except (OSError, http.client.HTTPException) as exc:  # URLError/HTTPError, timeouts and resets are OSErrors
            reason = describe_error(exc)
            if not is_transient(exc):
                raise DownloadError(reason) from exc
            if tries == retry.attempts:
                raise DownloadError(f"{reason} (gave up after {tries} tries)") from exc
            wait = retry.delay(tries, _retry_after(exc), rng)
            log.warning("%s; trying again in %.2f s (try %d of %d)", reason, wait, tries + 1, retry.attempts)
            time.sleep(wait)
    raise AssertionError("unreachable: the loop returns or raises")


def _store_uri(store: str, rel: str) -> str:
    return storage.join(store, *rel.split("/"))


def _check_rel(rel: str) -> str:
    """``rel`` if it is a plain relative path inside the repository layout, else DownloadError."""
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise DownloadError(f"bad object path {rel!r} in the Objaverse index (expected glbs/NNN-NNN/UID.glb)")
    return rel


# ------------------------------------------------------------------------------------------------ index files


@dataclass(frozen=True)
class _Where:
    """Where one call reads and writes: the cache directory, the HTTP source, the store, the retry policy."""

    root: Path
    mirror: str | None
    store: str | None
    retry: RetryPolicy


def _index_file(where: _Where, rel: str, use_store: bool = True) -> Literal["cache", "store", "http"]:
    """Make sure the index file ``rel`` is in the cache (from the store if allowed, else over HTTP); says whence."""
    local = where.root / rel
    if local.exists():
        return "cache"
    if where.store is not None and use_store:
        uri = _store_uri(where.store, rel)
        if storage.exists(uri):
            storage.download_file(uri, local)
            return "store"
    download(source_url(rel, where.mirror), local, where.retry)
    return "http"


def _gz_json_ok(path: Path) -> bool:
    try:
        with gzip.open(path, "rb") as f:
            json.load(f)
    except (OSError, EOFError, ValueError, zlib.error):
        return False
    return True


def _index_call(what: str, where: _Where, rels: Sequence[str], call: Callable[[], _T]) -> _T:
    """Put the index files ``rels`` in the cache, run ``call`` (which reads them), copy new files to the store.

    Downloads are written atomically, but a cache may hold a broken file (an older interrupted download, a damaged
    store copy): if ``call`` fails and some of the files do not decode, those are deleted and fetched once more,
    over HTTP when the broken copy came from the store (which then gets the new one). Anything else raises InvsError.
    """
    from_store: set[str] = set()
    for attempt in (1, 2):
        to_store = []
        try:
            for rel in rels:
                origin = _index_file(where, rel, use_store=rel not in from_store)
                if origin == "store":
                    from_store.add(rel)
                elif where.store is not None and (origin == "http" or not storage.exists(_store_uri(where.store, rel))):
                    to_store.append(rel)
        except (DownloadError, StorageError) as exc:
            raise InvsError(f"cannot load the Objaverse {what}: {exc}") from exc
        try:
            result = call()
        except (OSError, EOFError, ValueError, zlib.error) as exc:  # gzip, json and OS errors: unusable files
            broken = [where.root / rel for rel in rels if not _gz_json_ok(where.root / rel)]
            if attempt == 2 or not broken:
                raise InvsError(f"cannot load the Objaverse {what}: {describe_error(exc)}") from exc
            for path in broken:
                log.warning("deleting corrupt Objaverse index file %s", path)
                path.unlink(missing_ok=True)
            continue
        if where.store is not None:
            for rel in to_store:
                try:
                    storage.upload_file(where.root / rel, _store_uri(where.store, rel))
                except StorageError as exc:
                    raise InvsError(f"cannot copy the Objaverse {what} to the store: {exc}") from exc
        return result
    raise AssertionError("unreachable: the loop returns or raises")


def _object_paths(where: _Where) -> dict[str, str]:
    """uid -> ``glbs/NNN-NNN/<uid>.glb`` (parsed by the package's own index loader)."""
    return _index_call("object index", where, [_INDEX_FILE], objaverse._load_object_paths)


def _read_gz_json(path: Path) -> Any:
    with gzip.open(path, "rb") as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------------ selection


def read_uids_file(path: str | os.PathLike[str]) -> list[str]:
    """uids from a text file: one per line, ``#`` starts a comment, blank lines and a ``.glb`` suffix ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvsError(f"cannot read uids file {os.fspath(path)}: {exc.strerror or exc}") from exc
    return _dedupe(line.split("#", 1)[0] for line in text.splitlines())


def _dedupe(uids: Iterable[str]) -> list[str]:
    out: dict[str, None] = {}
    for raw in uids:
        uid = raw.strip()
        uid = uid.removesuffix(".glb")
        if uid:
            out[uid] = None
    return list(out)


def select_objects(
    uids_file: str | os.PathLike[str] | None = None,
    lvis_categories: Sequence[str] = (),
    licenses: Sequence[str] = (),
    num_objects: int | None = None,
    seed: int = 0,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    store: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[tuple[str, str | None]]:
    """Objaverse objects to render, in a deterministic order: ``(uid, object path)`` pairs.

    The object path (``glbs/NNN-NNN/<uid>.glb``) is what a worker needs to fetch the object; it is None for a uid
    of ``uids_file`` that the index does not list (the worker reports it). The index is read once.
    The candidates are the uids in ``uids_file`` (file order), else those in any of ``lvis_categories`` (sorted),
    else all uids (sorted). Each further criterion narrows them: ``lvis_categories`` (when a file is given too),
    then ``licenses`` (the metadata ``license`` field, e.g. ``by``, ``by-sa``, ``cc0``; case-insensitive).
    ``num_objects`` keeps a random subset of that size chosen with ``seed``, in candidate order.
    Raises InvsError for an unknown category, an empty selection or an index that cannot be downloaded.
    """
    if num_objects is not None and num_objects < 0:
        raise InvsError(f"num_objects must be >= 0, got {num_objects}")
    with objaverse_session(cache_dir, mirror) as root:
        where = _Where(root, mirror, store, retry or RetryPolicy())
        paths = _object_paths(where)
        if uids_file is not None:
            uids = read_uids_file(uids_file)
            if not uids:
                raise InvsError(f"uids file {os.fspath(uids_file)} lists no uids")
            origin = f"uids file {os.fspath(uids_file)}"
        else:
            uids = []
            origin = "Objaverse"
        if lvis_categories:
            in_lvis = _lvis_uids(where, lvis_categories)
            uids = [u for u in uids if u in in_lvis] if uids_file is not None else sorted(in_lvis)
            origin += f" in LVIS categories {', '.join(lvis_categories)}"
        elif uids_file is None:
            uids = sorted(paths)
        if licenses:
            uids = _filter_licenses(where, paths, uids, licenses)
            origin += f" with licence {', '.join(licenses)}"
    if not uids:
        raise InvsError(f"no objects selected: nothing in {origin}")
    if num_objects is not None and num_objects < len(uids):
        keep = set(random.Random(seed).sample(range(len(uids)), num_objects))
        uids = [u for i, u in enumerate(uids) if i in keep]
    return [(u, paths.get(u)) for u in uids]


def select_uids(
    uids_file: str | os.PathLike[str] | None = None,
    lvis_categories: Sequence[str] = (),
    licenses: Sequence[str] = (),
    num_objects: int | None = None,
    seed: int = 0,
    **where: Any,
) -> list[str]:
    """The uids of :func:`select_objects` (same arguments)."""
    return [uid for uid, _ in select_objects(uids_file, lvis_categories, licenses, num_objects, seed, **where)]


def object_paths(
    uids: Iterable[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    store: str | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, str]:
    """uid -> object path for those of ``uids`` that the index lists (the index is read once)."""
    with objaverse_session(cache_dir, mirror) as root:
        paths = _object_paths(_Where(root, mirror, store, retry or RetryPolicy()))
    return {u: paths[u] for u in uids if u in paths}


def _lvis_uids(where: _Where, categories: Sequence[str]) -> set[str]:
    lvis = _index_call("LVIS annotations", where, [_LVIS_FILE], objaverse.load_lvis_annotations)
    unknown = [c for c in categories if c not in lvis]
    if unknown:
        hints = difflib.get_close_matches(unknown[0], list(lvis), n=3)
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise InvsError(f"unknown LVIS category {unknown[0]!r}{hint}")
    return {uid for c in categories for uid in lvis[c]}


def _metadata(where: _Where, paths: dict[str, str], uids: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(uid, its Objaverse metadata) for those of ``uids`` the metadata lists; one metadata shard in memory at a
    time."""
    by_shard: dict[str, list[str]] = {}
    for uid in uids:
        if uid in paths:  # a uid without an object path has no metadata either
            by_shard.setdefault(paths[uid].split("/")[1], []).append(uid)
    for shard, members in sorted(by_shard.items()):
        rel = f"metadata/{shard}.json.gz"
        meta: dict[str, Any] = _index_call(
            f"metadata shard {shard}", where, [rel], lambda r=rel: _read_gz_json(where.root / r)
        )
        yield from ((u, meta[u]) for u in members if isinstance(meta.get(u), dict))
        del meta


def _filter_licenses(where: _Where, paths: dict[str, str], uids: list[str], licenses: Sequence[str]) -> list[str]:
    """The uids whose metadata licence is one of ``licenses``."""
    wanted = {lic.strip().lower() for lic in licenses}
    keep = {u for u, m in _metadata(where, paths, uids) if str(m.get("license") or "").strip().lower() in wanted}
    return [u for u in uids if u in keep]


#: Objaverse metadata fields kept as an object's annotations (the rest, e.g. thumbnails, is bulky).
ANNOTATION_FIELDS = (
    "name",
    "viewerUrl",
    "tags",
    "categories",
    "user",
    "faceCount",
    "vertexCount",
    "animationCount",
    "publishedAt",
    "isAgeRestricted",
)


def _annotation(meta: dict[str, Any]) -> dict[str, Any]:
    kept = {k: meta[k] for k in ANNOTATION_FIELDS if meta.get(k) is not None}
    for k in ("tags", "categories"):  # lists of {"name": ..., "slug": ..., ...}
        if isinstance(kept.get(k), list):
            kept[k] = [t.get("name") if isinstance(t, dict) else t for t in kept[k]]
    if isinstance(kept.get("user"), dict):
        kept["user"] = kept["user"].get("username")
    return kept


def object_annotations(
    uids: Iterable[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    store: str | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """uid -> (licence, annotations) from Objaverse's metadata for those of ``uids`` it lists: the licence string
    as published (``by``, ``by-nc``, ``cc0``, ...) and :data:`ANNOTATION_FIELDS` (tags and categories as names, the
    user as a username)."""
    with objaverse_session(cache_dir, mirror) as root:
        where = _Where(root, mirror, store, retry or RetryPolicy())
        return {u: (m.get("license"), _annotation(m)) for u, m in _metadata(where, _object_paths(where), uids)}


# ------------------------------------------------------------------------------------------------ objects


def check_glb(path: str | os.PathLike[str]) -> str | None:
    """``None`` if ``path`` is a plausible glTF-binary file, else the reason it is not (one line).

    Checks: the file exists and is not empty; the header has magic ``glTF``, version 2 and a total length equal to
    the file size; the first chunk is a JSON chunk inside the file whose content parses to a JSON object. The header
    is read by :func:`render.gltf_check.read_glb_header`.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        if size < 20:
            return f"too small for a glTF-binary file ({size} bytes)"
        with open(path, "rb") as f:
            header = gltf_check.read_glb_header(f, size)
            document = json.loads(f.read(header.json_length).decode("utf-8"))
    except FileNotFoundError:
        return "file missing"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    except gltf_check.GlbHeaderError as exc:  # a ValueError: before the JSON errors
        return _glb_header_reason(exc, size)
    except (UnicodeDecodeError, ValueError) as exc:
        return f"JSON chunk does not parse: {str(exc).splitlines()[0][:200]}"
    if not isinstance(document, dict):
        return "JSON chunk is not a glTF object"
    return None


def _glb_header_reason(exc: gltf_check.GlbHeaderError, size: int) -> str:
    """:func:`check_glb`'s one-line reason for a GLB header that failed a check."""
    h = exc.header
    if exc.problem == "magic":
        return f"not a glTF-binary file (starts with {h.magic!r}, expected b'glTF')"
    if exc.problem == "version":
        return f"unsupported glTF-binary version {h.version} (expected 2)"
    if exc.problem == "length":
        return f"header says {h.length} bytes but the file has {size} (truncated or damaged)"
    if exc.problem == "json_type":
        return f"first chunk is not JSON (type 0x{h.json_type:08x})"
    if exc.problem == "json_length":
        return f"JSON chunk of {h.json_length} bytes runs past the end of the file"
    return str(exc)


@dataclass(frozen=True)
class Fetched:
    """A verified object file: where it is, where it came from, how many HTTP requests it took (retries included)."""

    path: Path
    origin: Literal["cache", "store", "http"]
    http_requests: int = 0


def fetch_file(
    rel: str,
    root: str | os.PathLike[str],
    url: str,
    verify: Callable[[Path], str | None],
    *,
    store: str | None = None,
    retry: RetryPolicy | None = None,
    what: str = "object",
) -> Fetched:
    """One verified file at ``root / rel``: from there, else ``store / rel``, else downloaded from ``url``.

    ``verify`` returns None for a good file, else the one-line reason it is not. A file that fails it is deleted and
    the next source is tried; a download that fails it is downloaded once more; a verified download is copied to
    ``store`` (``objaverse.store``, which Objaverse and Objaverse-XL share). Needs no package state, so threads may
    call it concurrently. Raises :class:`DownloadError`.
    """
    local = Path(root) / rel
    if local.exists():
        reason = verify(local)
        if reason is None:
            return Fetched(local, "cache")
        log.warning("deleting bad cached %s %s (%s); fetching it again", what, local, reason)
        local.unlink(missing_ok=True)
    uri = _store_uri(store, rel) if store is not None else None
    if uri is not None:
        try:
            found = storage.exists(uri)
            if found:
                storage.download_file(uri, local)
        except StorageError as exc:
            raise DownloadError(f"objaverse store: {exc}") from exc
        if found:
            reason = verify(local)
            if reason is None:
                return Fetched(local, "store")
            log.warning("bad %s %s in the store (%s); downloading it again", what, uri, reason)
            local.unlink(missing_ok=True)
    requests = 0
    for tries in (1, 2):
        requests += download(url, local, retry)
        reason = verify(local)
        if reason is None:
            break
        local.unlink(missing_ok=True)
        if tries == 2:
            raise DownloadError(f"corrupt download: {reason}")
        log.warning("corrupt download of %s (%s); downloading it once more", url, reason)
    if uri is not None:
        try:
            storage.upload_file(local, uri)
        except StorageError as exc:
            local.unlink(missing_ok=True)
            raise DownloadError(f"objaverse store: {exc}") from exc
    return Fetched(local, "http", requests)


def fetch_object(
    uid: str,
    object_path: str,
    root: str | os.PathLike[str],
    *,
    mirror: str | None = None,
    store: str | None = None,
    retry: RetryPolicy | None = None,
    verify: Callable[[Path], str | None] | None = None,
) -> Fetched:
    """One verified Objaverse object at ``root / object_path``: from there, else the store, else over HTTP
    (:func:`fetch_file`, checked by :func:`check_glb` and then ``verify`` if given).

    ``object_path`` is the object's path in the repository layout (``glbs/NNN-NNN/<uid>.glb``, from the index the
    driver read). Needs no index. Raises :class:`DownloadError` with a one-line reason.
    """
    rel = _check_rel(object_path)

    def check(path: Path) -> str | None:
        reason = check_glb(path)
        return reason if reason is not None or verify is None else verify(path)

    return fetch_file(rel, root, source_url(rel, mirror), check, store=store, retry=retry, what="Objaverse object")


def fetch_objects(
    uids: Sequence[str],
    workers: int = 4,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    store: str | None = None,
    retry: RetryPolicy | None = None,
) -> tuple[list[ObjectRef], list[tuple[str, str]]]:
    """Fetch and verify objects into the cache; returns (refs, [(uid, reason), ...]).

    Reads the index once, then runs :func:`fetch_object` for each uid in ``workers`` threads. Refs (``uri`` = local
    path of the verified ``.glb``) and failures keep the order of ``uids`` (duplicates dropped).
    Raises InvsError only when the object index itself cannot be loaded.
    """
    wanted = _dedupe(uids)
    retry = retry or RetryPolicy()
    with objaverse_session(cache_dir, mirror) as root:
        paths = _object_paths(_Where(root, mirror, store, retry))
    known = [u for u in wanted if u in paths]

    def one(uid: str) -> ObjectRef | str:
        try:
            got = fetch_object(uid, paths[uid], root, mirror=mirror, store=store, retry=retry)
        except DownloadError as exc:
            return str(exc)
        return ObjectRef(uid=uid, uri=str(got.path), source=SOURCE, object_path=paths[uid])

    with ThreadPoolExecutor(max(1, min(workers, len(known))), thread_name_prefix="objaverse-fetch") as pool:
        results = dict(zip(known, pool.map(one, known), strict=True))
    refs = [r for u in wanted if isinstance(r := results.get(u, UNKNOWN_UID), ObjectRef)]
    failures = [(u, r) for u in wanted if isinstance(r := results.get(u, UNKNOWN_UID), str)]
    return refs, failures
