"""Objaverse-XL objects in a render worker: each source's download protocol, written once with retries and a store.

The ``objaverse`` package's own downloaders run whole batches in process pools, with no timeouts, their git errors
sent to DEVNULL, and a GitHub repository cloned again for every call; a render worker needs one object at a time,
verified, with a one-line reason when it fails. So this module speaks the same protocols with the same cache layout
(the package's ``download_dir``: the ``objaverse.cache`` directory), and every file is checked against the
``sha256`` the annotations give (a file that differs fails its row: the dataset's sha256 column is what was
rendered, and deduplication relies on it):

* **github** (``https://github.com/ORG/REPO/blob/COMMIT/PATH``, ORG and REPO plain names, COMMIT a full commit id):
  the repository is fetched at COMMIT (a shallow ``git fetch`` of that commit, then a checkout) once per worker,
  into ``github/repos/ORG/REPO/COMMIT`` (ours: the package keeps one checkout per repository), and all its objects
  are read from that checkout; workers sharing a node's cache take a lock file, so one fetches and the others read.
  git runs in its own process group with a timeout (``objaverse_xl.clone_timeout_s``), without prompts, and its
  error is the row's reason; a repository that cannot be fetched is not tried again by the same worker. Git LFS
  files are pulled when ``git-lfs`` is installed. With a store, each object is kept there as
  ``github/objects/UID.tar``: the file and the files it refers to (a glTF's buffers and images, an OBJ's ``.mtl``
  and textures) inside its folder; other formats' external textures are not bundled.
* **thingiverse** (``https://www.thingiverse.com/thing:T/files?fileId=F``): ``GET
  https://www.thingiverse.com/download:F`` into ``thingiverse/thing-T-file-F.stl``.
* **smithsonian** (the fileIdentifier is the GLB's URL): ``GET`` it into ``smithsonian/objects/UID.glb``.
* **sketchfab**: the Objaverse 1.0 GLB (:func:`render.objaverse_source.fetch_object`, through ``objaverse.mirror``).

HTTP downloads retry transient errors (:class:`render.objaverse_source.RetryPolicy`); ``objaverse_xl.url_rewrites``
sends any of these URLs (git included) to a mirror. With a store (``objaverse.store``) a worker takes each object from
there first, copies each new one there, and keeps no local copy beyond the job (as for Objaverse 1.0).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from invs import storage
from invs.config import Config
from invs.errors import StorageError
from render import formats, gltf_check, objaverse_source
from render.objaverse_source import DownloadError, Fetched
from render.objaverse_xl import cache_base, parse_rewrites, rewrite_url
from render.object_ref import ObjectRef

log = logging.getLogger(__name__)

_LFS_POINTER = b"version https://git-lfs"
#: Marker written into a checkout once it is complete (an interrupted clone never has it).
CHECKOUT_DONE = ".invs-checkout-complete"
#: git errors that another try may not meet.
_GIT_TRANSIENT = (
    "could not resolve host",
    "connection reset",
    "connection timed out",
    "early eof",
    "rpc failed",
    "the remote end hung up",
    "returned error: 5",
    "returned error: 429",
    "failed to connect",
    "connection refused",
)


def sha256_reason(path: Path, expected: str | None) -> str | None:
    """None if ``path``'s sha256 is ``expected`` (or nothing is expected), else the one-line reason."""
    if expected is None:
        return None
    got = storage.sha256_file(path)
    if got == expected:
        return None
    head = path.read_bytes()[:64] if path.stat().st_size < 1024 else b""
    if head.startswith(_LFS_POINTER):
        return "the repository holds a Git LFS pointer, not the file (git-lfs is not installed on the worker)"
    return f"sha256 {got[:12]}... differs from the annotated {expected[:12]}... (the file changed at its source)"


_NAME = re.compile(r"[A-Za-z0-9._-]+")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def github_parts(file_identifier: str) -> tuple[str, str, str, str]:
    """``https://github.com/ORG/REPO/blob/COMMIT/PATH`` -> (ORG, REPO, COMMIT, PATH); DownloadError unless ORG and REPO
    are plain names, COMMIT a full 40-hex commit id (not a branch) and PATH relative inside the repository."""
    parts = urllib.parse.urlsplit(file_identifier).path.strip("/").split("/")
    if len(parts) < 5 or parts[2] != "blob":
        raise DownloadError(f"not a GitHub file URL (ORG/REPO/blob/COMMIT/PATH): {file_identifier[:200]}")
    org, repo, commit = parts[0], parts[1], parts[3].lower()
    if not all(_NAME.fullmatch(n) and n not in (".", "..") for n in (org, repo)) or not _COMMIT.fullmatch(commit):
        raise DownloadError(f"not a GitHub file URL with a full commit id: {file_identifier[:200]}")
    path = urllib.parse.unquote("/".join(parts[4:]))
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in PurePosixPath(path).parts):
        raise DownloadError(f"bad path in GitHub file URL: {file_identifier[:200]}")
    return org, repo, commit, path


def thingiverse_ids(file_identifier: str) -> tuple[str, str]:
    """``https://www.thingiverse.com/thing:T/files?fileId=F`` -> (T, F); DownloadError if not one."""
    thing = file_identifier.split("/")[-2].partition(":")[2] if file_identifier.count("/") >= 4 else ""
    file_id = file_identifier.partition("fileId=")[2]
    if not thing.isdigit() or not file_id.isdigit():
        raise DownloadError(f"not a Thingiverse file URL (thing:T/files?fileId=F): {file_identifier[:200]}")
    return thing, file_id


def referenced_files(model: Path) -> list[Path]:
    """The files a model refers to that exist inside its folder: a glTF's buffers and images, an OBJ's material
    libraries and their texture maps. Other formats: none (their textures are embedded, or missing)."""
    folder = model.parent.resolve()
    names: list[str] = []
    kind = formats.file_type(model.name)
    try:
        if kind == "gltf":
            document = json.loads(model.read_text(encoding="utf-8"))
            for item in [*document.get("buffers", []), *document.get("images", [])]:
                if isinstance(item, dict) and "uri" in item:
                    with contextlib.suppress(gltf_check.GltfError):  # data: URIs, URLs, paths outside the folder
                        target = gltf_check.resolve_uri(item["uri"], model.parent, "reference")
                        if isinstance(target, Path):
                            names.append(str(target))
        elif kind == "obj":
            for lib in _statements(model, ("mtllib",)):
                names.append(lib)
                mtl = model.parent / lib
                if mtl.is_file():
                    maps = ("map_ka", "map_kd", "map_ks", "map_ns", "map_d", "map_bump", "bump", "disp", "norm")
                    names += [str(Path(lib).parent / m) for m in _statements(mtl, maps)]
    except (OSError, ValueError, AttributeError):
        return []
    found = []
    for name in dict.fromkeys(names):
        path = (model.parent / name).resolve()
        if path.is_file() and path.is_relative_to(folder) and path != model.resolve():
            found.append(path)
    return found


def _statements(path: Path, keywords: tuple[str, ...]) -> Iterator[str]:
    """The file names after ``keywords`` in an OBJ/MTL file (the last token: options such as ``-bm 1`` come first)."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        tokens = line.strip().split()
        if len(tokens) >= 2 and tokens[0].lower() in keywords:
            yield from tokens[1:] if tokens[0].lower() == "mtllib" else tokens[-1:]


class XLFetcher:
    """Fetches Objaverse-XL objects for one render worker; thread-safe (the worker fetches on two threads).

    ``scratch``: where objects go that the job deletes after rendering (with a store); ``repos``: where GitHub
    checkouts are kept (the node's cache without a store, else the worker's own folder).
    """

    def __init__(self, config: Config, scratch: Path, repos: Path | None = None) -> None:
        self.source = config.objaverse
        self.store = self.source.store
        self.retry = objaverse_source.RetryPolicy.from_config(self.source)
        self.rewrites = parse_rewrites(config.objaverse_xl.url_rewrites)
        self.clone_timeout_s = config.objaverse_xl.clone_timeout_s
        self.cache = cache_base(self.source.cache)
        self.scratch = scratch
        self.repos = repos or self.cache / "github" / "repos"
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._cloned: set[Path] = set()  # checkouts this fetcher made: their objects count as downloaded
        self._failed: dict[Path, str] = {}  # checkouts that could not be made, with the reason (not tried again)

    @property
    def clones(self) -> int:
        """Repositories this fetcher fetched (each once)."""
        return len(self._cloned)

    def fetch(self, ref: ObjectRef) -> Fetched:
        """The verified file of ``ref`` (an ``objaverse-xl:`` ref). Raises DownloadError with a one-line reason."""
        try:
            return self._fetch(ref)
        except OSError as exc:  # a full disk, a permission: this object's failure, not the job's
            raise DownloadError(objaverse_source.describe_error(exc)) from None

    def _fetch(self, ref: ObjectRef) -> Fetched:
        if ref.file_identifier is None:
            raise DownloadError("the ref has no fileIdentifier")
        reason = formats.unsupported_reason(ref.file_type or formats.file_type(ref.file_identifier))
        if reason is not None:
            raise DownloadError(reason)
        # with a store, each object has a scratch folder of its own (deleted after rendering); else the node's cache
        root = self.scratch / ref.key if self.store else self.cache
        if ref.source == "github":
            return self._github(ref, root)
        if ref.source == "sketchfab":
            if ref.object_path is None:
                raise DownloadError(objaverse_source.UNKNOWN_UID)
            return objaverse_source.fetch_object(
                ref.uid,
                ref.object_path,
                objaverse_source.cache_root(root),
                mirror=self.source.mirror,
                store=self.store,
                retry=self.retry,
                verify=lambda p: sha256_reason(p, ref.sha256),
            )
        if ref.source == "thingiverse":
            thing, file_id = thingiverse_ids(ref.file_identifier)
            rel = f"thingiverse/thing-{thing}-file-{file_id}.{ref.file_type or 'stl'}"  # the package's name
            url = f"https://www.thingiverse.com/download:{file_id}"
        elif ref.source == "smithsonian":
            rel, url = f"smithsonian/objects/{ref.uid}.glb", ref.file_identifier
        else:
            raise DownloadError(f"unknown Objaverse-XL source {ref.source!r}")
        return objaverse_source.fetch_file(
            rel,
            root,
            rewrite_url(url, self.rewrites),
            lambda p: sha256_reason(p, ref.sha256),
            store=self.store,
            retry=self.retry,
            what=f"Objaverse-XL {ref.source} object",
        )

    # -------------------------------------------------------------------------------------------- github

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(name, threading.Lock())

    def _github(self, ref: ObjectRef, root: Path) -> Fetched:
        org, repo, commit, path = github_parts(str(ref.file_identifier))
        checkout = self.repos / org / repo / commit
        if not (checkout / CHECKOUT_DONE).exists() and self.store is not None:
            got = self._from_store(ref, root, path)
            if got is not None:
                return got
        with self._lock(str(checkout)):
            if checkout in self._failed:
                raise DownloadError(self._failed[checkout])
            if not (checkout / CHECKOUT_DONE).exists():
                try:
                    if self._checkout(org, repo, commit, checkout):
                        self._cloned.add(checkout)
                except DownloadError as exc:
                    self._failed[checkout] = str(exc)
                    raise
        model = checkout / path
        if not model.is_file() or not model.resolve().is_relative_to(checkout.resolve()):
            raise DownloadError(f"{path[:200]} is not in {org}/{repo} at commit {commit[:12]}")
        reason = sha256_reason(model, ref.sha256)
        if reason is not None:
            raise DownloadError(reason)
        if self.store is not None:
            self._to_store(ref, model)
        return Fetched(model, "http" if checkout in self._cloned else "cache")

    def _store_uri(self, ref: ObjectRef) -> str:
        return storage.join(str(self.store), "github", "objects", f"{ref.uid}.tar")

    def _from_store(self, ref: ObjectRef, root: Path, path: str) -> Fetched | None:
        """The object from its store bundle, extracted under ``root``; None if the store has no (good) bundle."""
        uri = self._store_uri(ref)
        try:
            if not storage.exists(uri):
                return None
            local = root / "bundle.tar"
            storage.download_file(uri, local)
        except StorageError as exc:
            raise DownloadError(f"objaverse store: {exc}") from exc
        target = root / "files"
        try:
            with tarfile.open(local) as tar:
                tar.extractall(target, filter="data")
        except (tarfile.TarError, OSError) as exc:
            log.warning("bad Objaverse-XL bundle %s in the store (%s); cloning instead", uri, exc)
            shutil.rmtree(target, ignore_errors=True)
            return None
        finally:
            local.unlink(missing_ok=True)
        model = target / PurePosixPath(path).name
        if not model.is_file() or sha256_reason(model, ref.sha256) is not None:
            log.warning("Objaverse-XL bundle %s in the store does not hold the object; cloning instead", uri)
            shutil.rmtree(target, ignore_errors=True)
            return None
        return Fetched(model, "store")

    def _to_store(self, ref: ObjectRef, model: Path) -> None:
        """Copy the object and the files it refers to (paths relative to its folder) to the store as one tar, unless
        the store has it."""
        try:
            if storage.exists(self._store_uri(ref)):
                return
        except StorageError as exc:
            raise DownloadError(f"objaverse store: {exc}") from exc
        with tempfile.TemporaryDirectory(prefix="invs-xl-bundle-") as tmp:
            bundle = Path(tmp) / "bundle.tar"
            with tarfile.open(bundle, "w") as tar:
                tar.add(model.resolve(), arcname=model.name)  # a symlink's target, not the link
                for extra in referenced_files(model):
                    tar.add(extra, arcname=str(extra.relative_to(model.parent.resolve())))
            try:
                storage.upload_file(bundle, self._store_uri(ref))
            except StorageError as exc:
                raise DownloadError(f"objaverse store: {exc}") from exc

    def _checkout(self, org: str, repo: str, commit: str, checkout: Path) -> bool:
        """Make ``checkout`` (``org/repo`` at ``commit``) unless another process on the node did: the node's workers
        share the cache, so one of them fetches while the others wait on a lock file. True if this call fetched."""
        checkout.parent.mkdir(parents=True, exist_ok=True)
        with open(checkout.parent / f".{commit}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if (checkout / CHECKOUT_DONE).exists():
                return False
            for stale in checkout.parent.glob(f".{commit[:12]}-*"):  # left by a process killed mid-fetch
                shutil.rmtree(stale, ignore_errors=True)
            shutil.rmtree(checkout, ignore_errors=True)  # incomplete: it has no marker
            self._clone(org, repo, commit, checkout)
            return True

    def _clone(self, org: str, repo: str, commit: str, checkout: Path) -> None:
        """Fetch ``org/repo`` at ``commit`` into ``checkout`` (a shallow fetch of that commit), retrying transient
        network errors; the checkout appears complete (with its marker) or not at all."""
        url = rewrite_url(f"https://github.com/{org}/{repo}.git", self.rewrites)
        for tries in range(1, self.retry.attempts + 1):
            work = Path(tempfile.mkdtemp(dir=checkout.parent, prefix=f".{commit[:12]}-"))
            try:
                self._git("init", ["-q"], work)
                self._git("fetch", ["-q", "--depth", "1", "--no-tags", "--", url, commit], work)
                self._git("checkout", ["-q", "--detach", "FETCH_HEAD"], work, ["-c", "advice.detachedHead=false"])
                if shutil.which("git-lfs") and "filter=lfs" in _read(work / ".gitattributes"):
                    self._git("lfs", ["pull"], work)
                shutil.rmtree(work / ".git", ignore_errors=True)
                (work / CHECKOUT_DONE).write_text(f"{url} {commit}\n")
                os.replace(work, checkout)
                return
            except DownloadError as exc:
                transient = any(t in str(exc).lower() for t in _GIT_TRANSIENT)
                if not transient:
                    raise DownloadError(f"cannot fetch {org}/{repo} at {commit[:12]}: {exc}") from None
                if tries == self.retry.attempts:
                    raise DownloadError(f"cannot fetch {org}/{repo}: {exc} (gave up after {tries} tries)") from None
                wait = self.retry.delay(tries)
                log.warning("git fetch of %s failed (%s); trying again in %.2f s", url, exc, wait)
                time.sleep(wait)
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def _git(self, command: str, args: list[str], cwd: Path, options: list[str] | None = None) -> None:
        """Run ``git [options] command args`` in its own process group (a timeout kills git's helpers too);
        DownloadError with the last line of its error output when it fails or runs past the timeout."""
        env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_LFS_SKIP_SMUDGE="1", GIT_ASKPASS="/bin/true")
        argv = ["git", *(options or []), command, *args]
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise DownloadError(f"cannot run git: {exc.strerror or exc}") from None
        try:
            out, err = proc.communicate(timeout=self.clone_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise DownloadError(
                f"git {command} ran past objaverse_xl.clone_timeout_s ({self.clone_timeout_s:g} s)"
            ) from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (err or out).splitlines() if ln.strip()]
            raise DownloadError(f"git {command}: {lines[-1][:300] if lines else f'exit status {proc.returncode}'}")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
