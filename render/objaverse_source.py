"""Objaverse objects for the render stage: select uids, download them with the ``objaverse`` package, verify them.

The real ``objaverse`` (0.1.7) functions do the work (``load_uids``, ``load_annotations``,
``load_lvis_annotations``, ``load_objects``); this module only controls where they read and write:

* :func:`objaverse_cache` points the package's cache (``objaverse.BASE_PATH`` / ``objaverse._VERSIONED_PATH``,
  read at call time) at a directory of ours, by default ``local_cache_dir() / "objaverse"``, and restores it.
* :func:`objaverse_mirror` installs a ``urllib.request`` opener whose first request processor rewrites every
  ``https://huggingface.co/datasets/allenai/objaverse/resolve/main/...`` URL to the same path under a mirror base
  URL, so the package's ``urlretrieve`` calls go there; the previous opener is restored afterwards. Both are
  process-global (not thread-safe) and reach ``load_objects``' worker processes because Linux forks them inside
  the block; under another start method downloads run in this process instead.

:func:`select_uids` picks uids (a uid file, LVIS categories, licences, a seeded subset); :func:`fetch_objects`
downloads them and checks each file's glTF-binary header (:func:`check_glb`). Bad cached files are deleted and
downloaded once more; unknown uids, HTTP/network errors and corrupt downloads come back as one-line failure
reasons. Errors that stop everything (the index files cannot be fetched, bad arguments) raise :class:`InvsError`.
"""

from __future__ import annotations

import contextlib
import difflib
import gzip
import json
import logging
import multiprocessing
import os
import random
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import objaverse

from invs.errors import InvsError
from invs.storage import local_cache_dir
from render.object_ref import ObjectRef

log = logging.getLogger(__name__)

#: Where the ``objaverse`` package downloads everything from (hard-coded in the package).
HF_BASE_URL = "https://huggingface.co/datasets/allenai/objaverse/resolve/main/"
#: Sub-directory of ``BASE_PATH`` the package keeps its files in (``objaverse._VERSIONED_PATH``).
VERSIONED_DIR = "hf-objaverse-v1"
SOURCE = "objaverse"

_GLB_MAGIC = b"glTF"
_CHUNK_JSON = 0x4E4F534A
_INDEX_FILE = "object-paths.json.gz"
_LVIS_FILE = "lvis-annotations.json.gz"

_T = TypeVar("_T")
_active_caches: list[Path] = []


# ------------------------------------------------------------------------------------------------ cache and mirror


def default_cache_dir() -> Path:
    """``local_cache_dir() / "objaverse"`` (``$INVS_CACHE_DIR/objaverse`` or ``~/.cache/invs/objaverse``)."""
    return local_cache_dir() / "objaverse"


@contextlib.contextmanager
def objaverse_cache(cache_dir: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Point the ``objaverse`` package's cache at ``cache_dir`` for the block; yields the versioned directory.

    ``None`` keeps the cache of an enclosing ``objaverse_cache`` block, else uses :func:`default_cache_dir`.
    """
    if cache_dir is None and _active_caches:
        yield Path(objaverse._VERSIONED_PATH)
        return
    base = Path(cache_dir).expanduser().resolve() if cache_dir is not None else default_cache_dir()
    saved = objaverse.BASE_PATH, objaverse._VERSIONED_PATH
    objaverse.BASE_PATH = str(base)
    objaverse._VERSIONED_PATH = str(base / VERSIONED_DIR)
    _active_caches.append(base)
    try:
        yield base / VERSIONED_DIR
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

    A mirror serves the Hugging Face layout under its base URL: ``object-paths.json.gz``,
    ``lvis-annotations.json.gz``, ``metadata/NNN-NNN.json.gz`` and ``glbs/NNN-NNN/<uid>.glb``.
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


# ------------------------------------------------------------------------------------------------ errors


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
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _gz_json_ok(path: Path) -> bool:
    try:
        with gzip.open(path, "rb") as f:
            json.load(f)
    except (OSError, EOFError, ValueError, zlib.error):
        return False
    return True


def _index_call(what: str, call: Callable[[], _T], files: Callable[[], Iterable[Path]]) -> _T:
    """Run a package call that reads index files; heal a partial/corrupt cached index once, else raise InvsError.

    The package downloads index files straight to their final names, so an interrupted download leaves a broken
    file that every later call would trip over: those in ``files()`` that do not decode are deleted and the call
    is tried once more.
    """
    try:
        return call()
    except Exception as exc:  # urllib, gzip, json and OS errors all mean "this index is unusable"
        broken = [p for p in files() if p.is_file() and not _gz_json_ok(p)]
        if not broken:
            raise InvsError(f"cannot load the Objaverse {what}: {describe_error(exc)}") from exc
        for path in broken:
            log.warning("deleting corrupt Objaverse index file %s", path)
            path.unlink(missing_ok=True)
    try:
        return call()
    except Exception as exc:
        raise InvsError(f"cannot load the Objaverse {what}: {describe_error(exc)}") from exc


def _root() -> Path:
    return Path(objaverse._VERSIONED_PATH)


def _object_paths() -> dict[str, str]:
    """uid -> ``glbs/NNN-NNN/<uid>.glb`` (the package's own index loader, which downloads it if needed)."""
    return _index_call("object index", objaverse._load_object_paths, lambda: [_root() / _INDEX_FILE])


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


def select_uids(
    uids_file: str | os.PathLike[str] | None = None,
    lvis_categories: Sequence[str] = (),
    licenses: Sequence[str] = (),
    num_objects: int | None = None,
    seed: int = 0,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
) -> list[str]:
    """Objaverse uids to render, in a deterministic order.

    The candidates are the uids in ``uids_file`` (file order), else those in any of ``lvis_categories`` (sorted),
    else all uids (sorted). Each further criterion narrows them: ``lvis_categories`` (when a file is given too),
    then ``licenses`` (the metadata ``license`` field, e.g. ``by``, ``by-sa``, ``cc0``; case-insensitive).
    ``num_objects`` keeps a random subset of that size chosen with ``seed``, in candidate order.
    Raises InvsError for an unknown category, an empty selection or an index that cannot be downloaded.
    """
    if num_objects is not None and num_objects < 0:
        raise InvsError(f"num_objects must be >= 0, got {num_objects}")
    with objaverse_session(cache_dir, mirror) as root:
        if uids_file is not None:
            uids = read_uids_file(uids_file)
            if not uids:
                raise InvsError(f"uids file {os.fspath(uids_file)} lists no uids")
            origin = f"uids file {os.fspath(uids_file)}"
        else:
            uids = []
            origin = "Objaverse"
        if lvis_categories:
            in_lvis = _lvis_uids(root, lvis_categories)
            uids = [u for u in uids if u in in_lvis] if uids_file is not None else sorted(in_lvis)
            origin += f" in LVIS categories {', '.join(lvis_categories)}"
        elif uids_file is None:
            uids = sorted(_index_call("uid list", objaverse.load_uids, lambda: [root / _INDEX_FILE]))
        if licenses:
            uids = _filter_licenses(root, uids, licenses)
            origin += f" with licence {', '.join(licenses)}"
    if not uids:
        raise InvsError(f"no objects selected: nothing in {origin}")
    if num_objects is not None and num_objects < len(uids):
        keep = set(random.Random(seed).sample(range(len(uids)), num_objects))
        uids = [u for i, u in enumerate(uids) if i in keep]
    return uids


def _lvis_uids(root: Path, categories: Sequence[str]) -> set[str]:
    lvis = _index_call("LVIS annotations", objaverse.load_lvis_annotations, lambda: [root / _LVIS_FILE])
    unknown = [c for c in categories if c not in lvis]
    if unknown:
        hints = difflib.get_close_matches(unknown[0], list(lvis), n=3)
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise InvsError(f"unknown LVIS category {unknown[0]!r}{hint}")
    return {uid for c in categories for uid in lvis[c]}


def _filter_licenses(root: Path, uids: list[str], licenses: Sequence[str]) -> list[str]:
    wanted = {lic.strip().lower() for lic in licenses}
    paths = _object_paths()
    known = [u for u in uids if u in paths]  # load_annotations raises KeyError on a uid without an object path
    if not known:
        return []

    def shard_files() -> list[Path]:
        shards = {paths[u].split("/")[1] for u in known}
        return [root / _INDEX_FILE, *(root / "metadata" / f"{s}.json.gz" for s in sorted(shards))]

    meta: dict[str, Any] = _index_call("metadata", lambda: objaverse.load_annotations(known), shard_files)
    return [u for u in known if str((meta.get(u) or {}).get("license") or "").strip().lower() in wanted]


# ------------------------------------------------------------------------------------------------ download


def check_glb(path: str | os.PathLike[str]) -> str | None:
    """``None`` if ``path`` is a plausible glTF-binary file, else the reason it is not (one line).

    Checks: the file exists and is not empty; the header has magic ``glTF``, version 2 and a total length equal to
    the file size; the first chunk is a JSON chunk inside the file whose content parses to a JSON object.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        if size < 20:
            return f"too small for a glTF-binary file ({size} bytes)"
        with open(path, "rb") as f:
            magic, version, length = struct.unpack("<4sII", f.read(12))
            if magic != _GLB_MAGIC:
                return f"not a glTF-binary file (starts with {magic!r}, expected b'glTF')"
            if version != 2:
                return f"unsupported glTF-binary version {version} (expected 2)"
            if length != size:
                return f"header says {length} bytes but the file has {size} (truncated or damaged)"
            chunk_length, chunk_type = struct.unpack("<II", f.read(8))
            if chunk_type != _CHUNK_JSON:
                return f"first chunk is not JSON (type 0x{chunk_type:08x})"
            if chunk_length > size - 20:
                return f"JSON chunk of {chunk_length} bytes runs past the end of the file"
            document = json.loads(f.read(chunk_length).decode("utf-8"))
    except FileNotFoundError:
        return "file missing"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    except (UnicodeDecodeError, ValueError) as exc:
        return f"JSON chunk does not parse: {str(exc).splitlines()[0][:200]}"
    if not isinstance(document, dict):
        return "JSON chunk is not a glTF object"
    return None


def fetch_objects(
    uids: Sequence[str],
    processes: int = 4,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
) -> tuple[list[ObjectRef], list[tuple[str, str]]]:
    """Download (or find in the cache) and verify the objects; returns (refs, [(uid, reason), ...]).

    Refs (``uri`` = local path of the verified ``.glb``) and failures keep the order of ``uids``. Cached files that
    fail :func:`check_glb` are deleted and downloaded again; downloads that fail it are deleted and reported.
    ``processes`` > 1 downloads through ``objaverse.load_objects``' process pool; if that batch stops on an error,
    the objects still missing are tried once more one by one, which also gives each its own reason.
    Raises InvsError only when the object index itself cannot be loaded.
    """
    wanted = _dedupe(uids)
    failures: dict[str, str] = {}
    refs: dict[str, ObjectRef] = {}
    with objaverse_session(cache_dir, mirror) as root:
        paths = _object_paths()
        known = []
        for uid in wanted:
            if uid in paths:
                known.append(uid)
            else:
                failures[uid] = "uid not in the Objaverse object index (object-paths.json.gz)"
        for uid in known:  # bad cached files: delete them so that load_objects downloads them again
            local = root / paths[uid]
            if local.exists() and (reason := check_glb(local)) is not None:
                log.warning("deleting bad cached Objaverse object %s (%s); downloading it again", local, reason)
                local.unlink(missing_ok=True)
        to_download = [u for u in known if not (root / paths[u]).exists()]
        errors = _download(known, to_download, processes)
        for uid in known:
            local = root / paths[uid]
            if uid in errors:
                failures[uid] = errors[uid]
                Path(f"{local}.tmp").unlink(missing_ok=True)
            elif (reason := check_glb(local)) is not None:
                failures[uid] = f"corrupt download: {reason}"
                local.unlink(missing_ok=True)
            else:
                refs[uid] = ObjectRef(uid=uid, uri=str(local), source=SOURCE)
    return [refs[u] for u in wanted if u in refs], [(u, failures[u]) for u in wanted if u in failures]


def _download(known: list[str], to_download: list[str], processes: int) -> dict[str, str]:
    """Run ``objaverse.load_objects``; returns {uid: reason} for the objects it could not download."""
    if processes > 1 and multiprocessing.get_start_method() != "fork":
        # worker processes would not inherit the cache location or the mirror: download here instead
        log.warning("multiprocessing start method is not 'fork': downloading Objaverse objects in one process")
        processes = 1
    processes = max(1, min(processes, len(to_download)))
    if processes > 1:
        try:
            objaverse.load_objects(known, download_processes=processes)
            return {}
        except Exception as exc:  # noqa: BLE001 - the pool stops on the first error: retry what is missing below
            log.warning("parallel Objaverse download stopped (%s); retrying one by one", describe_error(exc))
    errors: dict[str, str] = {}
    for uid in known:  # cached objects are found again without a request
        try:
            objaverse.load_objects([uid], download_processes=1)
        except Exception as exc:  # noqa: BLE001 - reported per object, never raised
            errors[uid] = describe_error(exc)
    return errors
