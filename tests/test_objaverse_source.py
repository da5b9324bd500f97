"""The Objaverse source against a local HTTP mirror on 127.0.0.1 with the Hugging Face layout.

Everything (index, metadata, LVIS annotations, GLBs) comes through the mirror, the index parsed by the real
``objaverse`` package; the objects are the real GLB files in tests/assets/objects under fake uids, plus one
corrupt object and one whose file the mirror does not have. The mirror can be told to fail the next requests for
a file (5xx, 429, a reset connection, a stalled answer) to exercise the retries, and the store tests use the real
local S3 server (SeaweedFS, tests/conftest.py). HTTPS connections are refused and the package's default cache
location is replaced by a directory that must never appear, so no test can reach the internet or touch
~/.objaverse.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.client
import http.server
import json
import random
import socket
import struct
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import objaverse
import pytest

from invs.errors import InvsError
from render import objaverse_source as src
from tests.http_mirror import HTTPMirror, serve

# name -> (licence, LVIS category)
OBJECTS = {
    "BoxTextured": ("by", "toy"),
    "CesiumMilkTruck": ("by", "truck"),
    "Fox": ("by-nc", "animal"),
    "GolfBall": ("by", "ball"),
    "SpotCow": ("by-nc", "animal"),
    "kenney_alien": ("by", "toy"),
    "kenney_cakeBirthday": ("by-nc", "cake"),
}
UNKNOWN = "f" * 32  # not in object-paths.json.gz


def fake_uid(name: str) -> str:
    return hashlib.md5(f"invs-test-{name}".encode()).hexdigest()


CORRUPT = fake_uid("corrupt")  # served, but random bytes
MISSING = fake_uid("missing")  # in the index, but the mirror has no file (404)


@dataclass
class Mirror:
    """The served Objaverse repository (under ``/objaverse/``) and what it holds."""

    http: HTTPMirror
    uids: dict[str, str]  # object name -> uid
    originals: dict[str, Path]  # uid -> the real file served for it
    licenses: dict[str, str] = field(default_factory=dict)  # uid -> licence

    @property
    def url(self) -> str:
        return self.http.url + "objaverse/"

    def glb_requests(self) -> Counter[str]:
        """uid -> number of GET requests for its GLB so far."""
        return Counter(p.rsplit("/", 1)[-1].removesuffix(".glb") for p in self.requests() if p.endswith(".glb"))

    def requests(self) -> list[str]:
        return self.http.requests()

    def failing(self, rel: str, *actions: str) -> contextlib.AbstractContextManager[None]:
        """The next requests for ``rel`` (``glbs/...``) fail as ``actions`` say (:mod:`tests.http_mirror`)."""
        return self.http.failing("/objaverse/" + rel, *actions)

    def count(self, rel: str) -> int:
        """GET requests for ``rel`` so far."""
        return self.http.count("/objaverse/" + rel)


def _write_gz_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(data, f)


@pytest.fixture(scope="module")
def mirror(real_objects: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    """A threaded HTTP server on 127.0.0.1 serving ``/objaverse/`` in the Hugging Face layout."""
    served = tmp_path_factory.mktemp("mirror")
    root = served / "objaverse"
    uids = {name: fake_uid(name) for name in OBJECTS}
    originals: dict[str, Path] = {}
    object_paths: dict[str, str] = {}
    for name, uid in uids.items():
        rel = f"glbs/000-000/{uid}.glb"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((real_objects / f"{name}.glb").read_bytes())
        object_paths[uid] = rel
        originals[uid] = real_objects / f"{name}.glb"
    object_paths[CORRUPT] = f"glbs/000-000/{CORRUPT}.glb"
    (root / object_paths[CORRUPT]).write_bytes(random.Random(7).randbytes(4096))
    object_paths[MISSING] = f"glbs/000-000/{MISSING}.glb"  # never written: the mirror answers 404
    licenses = {uids[n]: lic for n, (lic, _) in OBJECTS.items()} | {CORRUPT: "by", MISSING: "by-nc"}
    lvis: dict[str, list[str]] = {}
    for name, (_, category) in OBJECTS.items():
        lvis.setdefault(category, []).append(uids[name])
    _write_gz_json(root / "object-paths.json.gz", object_paths)
    _write_gz_json(
        root / "metadata" / "000-000.json.gz",
        {uid: {"uid": uid, "name": f"object {uid[:6]}", "license": lic} for uid, lic in licenses.items()},
    )
    _write_gz_json(root / "lvis-annotations.json.gz", lvis)

    with serve(served) as server:
        yield Mirror(server, uids, originals, licenses)


@pytest.fixture(autouse=True)
def sealed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No HTTPS (so no Hugging Face), no proxies, no default objaverse cache, INVS_CACHE_DIR in tmp_path."""
    attempts: list[str] = []

    def refuse(self: http.client.HTTPSConnection) -> None:
        attempts.append(self.host)
        raise OSError(f"test refused an HTTPS connection to {self.host}")

    monkeypatch.setattr(http.client.HTTPSConnection, "connect", refuse)
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    forbidden = tmp_path / "default-objaverse-home"
    monkeypatch.setattr(objaverse, "BASE_PATH", str(forbidden))
    monkeypatch.setattr(objaverse, "_VERSIONED_PATH", str(forbidden / "hf-objaverse-v1"))
    monkeypatch.setenv("INVS_CACHE_DIR", str(tmp_path / "invs-cache"))
    opener = getattr(urllib.request, "_opener", None)
    yield
    assert not attempts, f"a test tried to reach {attempts}"
    assert _package_paths() == (str(forbidden), str(forbidden / "hf-objaverse-v1"))
    assert getattr(urllib.request, "_opener", None) is opener
    assert not forbidden.exists()


def _package_paths() -> tuple[str, str]:
    """The ``objaverse`` package's cache location as it stands: (BASE_PATH, _VERSIONED_PATH)."""
    return objaverse.BASE_PATH, objaverse._VERSIONED_PATH


def _cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _cached_root(tmp_path: Path) -> Path:
    return _cache(tmp_path) / "hf-objaverse-v1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ GLB check


def test_check_glb_accepts_real_objects_and_names_the_damage(real_objects: Path, tmp_path: Path) -> None:
    for name in OBJECTS:
        assert src.check_glb(real_objects / f"{name}.glb") is None, name
    good = (real_objects / "BoxTextured.glb").read_bytes()
    json_len = struct.unpack_from("<I", good, 12)[0]

    def damaged(data: bytes) -> str | None:
        path = tmp_path / "x.glb"
        path.write_bytes(data)
        return src.check_glb(path)

    assert src.check_glb(tmp_path / "absent.glb") == "file missing"
    assert damaged(b"") == "empty file"
    assert "too small" in (damaged(good[:16]) or "")
    assert "not a glTF-binary file" in (damaged(b"PK\x03\x04" + good[4:]) or "")
    assert "version 1" in (damaged(good[:4] + struct.pack("<I", 1) + good[8:]) or "")
    assert "truncated" in (damaged(good[:-100]) or "")
    assert "truncated" in (damaged(good + b"\0\0\0\0") or "")
    assert "not JSON" in (damaged(good[:16] + struct.pack("<I", 0x004E4942) + good[20:]) or "")
    huge = good[:12] + struct.pack("<I", len(good)) + good[16:]
    assert "past the end" in (damaged(huge) or "")
    broken_json = good[:20] + b"{" + b" " * (json_len - 1) + good[20 + json_len :]
    assert "does not parse" in (damaged(broken_json) or "")
    array_json = good[:20] + b"[]" + b" " * (json_len - 2) + good[20 + json_len :]
    assert damaged(array_json) == "JSON chunk is not a glTF object"


# ------------------------------------------------------------------------------------------------ cache / mirror


def test_cache_and_mirror_are_set_for_the_block_and_restored(mirror: Mirror, tmp_path: Path) -> None:
    before = objaverse.BASE_PATH, objaverse._VERSIONED_PATH, getattr(urllib.request, "_opener", None)
    with src.objaverse_session(tmp_path / "c", mirror.url.rstrip("/")) as root:
        assert root == (tmp_path / "c" / "hf-objaverse-v1").resolve()
        assert _package_paths() == (str(root.parent), str(root))
        with src.objaverse_cache() as inner:  # no directory given: an enclosing block's cache stays
            assert inner == root
        # the package's own urlretrieve call, with its hard-coded Hugging Face URL, lands on the mirror
        target = tmp_path / "lvis.json.gz"
        urllib.request.urlretrieve(src.HF_BASE_URL + "lvis-annotations.json.gz", target)
        assert target.read_bytes() == urllib.request.urlopen(mirror.url + "lvis-annotations.json.gz").read()
    assert (objaverse.BASE_PATH, objaverse._VERSIONED_PATH, getattr(urllib.request, "_opener", None)) == before

    with pytest.raises(RuntimeError), src.objaverse_session(tmp_path / "c", mirror.url):
        raise RuntimeError("boom")
    assert (objaverse.BASE_PATH, objaverse._VERSIONED_PATH, getattr(urllib.request, "_opener", None)) == before

    with src.objaverse_cache() as default_root:
        assert default_root == tmp_path / "invs-cache" / "objaverse" / "hf-objaverse-v1"

    for bad in ("127.0.0.1:8000/objaverse/", "ftp://host/x/", "http:///x/"):
        with pytest.raises(InvsError, match="bad Objaverse mirror URL"), src.objaverse_mirror(bad):
            pass


# ------------------------------------------------------------------------------------------------ selection


def test_select_from_a_uids_file(mirror: Mirror, tmp_path: Path) -> None:
    truck, fox = mirror.uids["CesiumMilkTruck"], mirror.uids["Fox"]
    uids_file = tmp_path / "uids.txt"
    uids_file.write_text(f"# objects to render\n{truck}\n\n  {fox}.glb   # the fox\n{truck}\n{UNKNOWN}\n")
    select = functools.partial(src.select_uids, cache_dir=_cache(tmp_path), mirror=mirror.url)

    assert select(uids_file) == [truck, fox, UNKNOWN]  # file order, duplicates and comments dropped
    assert select(uids_file, lvis_categories=["animal"]) == [fox]
    assert select(uids_file, licenses=["by"]) == [truck]
    with pytest.raises(InvsError, match="lists no uids"):
        (tmp_path / "empty.txt").write_text("# nothing\n")
        select(tmp_path / "empty.txt")
    with pytest.raises(InvsError, match="cannot read uids file"):
        select(tmp_path / "absent.txt")


def test_select_by_lvis_category_and_licence(mirror: Mirror, tmp_path: Path) -> None:
    u = mirror.uids
    select = functools.partial(src.select_uids, cache_dir=_cache(tmp_path), mirror=mirror.url)
    seen = len(mirror.requests())

    assert select(lvis_categories=["animal"]) == sorted([u["Fox"], u["SpotCow"]])
    assert select(lvis_categories=["truck", "animal"]) == sorted([u["Fox"], u["SpotCow"], u["CesiumMilkTruck"]])
    assert select(lvis_categories=["toy", "animal"], licenses=["BY"]) == sorted([u["BoxTextured"], u["kenney_alien"]])
    assert select(licenses=["by-nc"]) == sorted([u["Fox"], u["SpotCow"], u["kenney_cakeBirthday"], MISSING])
    with pytest.raises(InvsError, match=r"unknown LVIS category 'animl' \(did you mean animal"):
        select(lvis_categories=["animl"])
    with pytest.raises(InvsError, match="no objects selected"):
        select(licenses=["cc0"])

    fetched = [p.removeprefix("/objaverse/") for p in mirror.requests()[seen:]]
    assert sorted(fetched) == ["lvis-annotations.json.gz", "metadata/000-000.json.gz", "object-paths.json.gz"]


def test_select_all_and_a_seeded_subset(mirror: Mirror, tmp_path: Path) -> None:
    select = functools.partial(src.select_uids, cache_dir=_cache(tmp_path), mirror=mirror.url)
    everything = sorted([*mirror.uids.values(), CORRUPT, MISSING])
    assert select() == everything
    assert select(num_objects=100) == everything

    subset = select(num_objects=3, seed=0)
    assert len(subset) == 3 and subset == select(num_objects=3, seed=0)
    assert subset == [u for u in everything if u in subset]  # candidate order is kept
    assert len({tuple(select(num_objects=3, seed=s)) for s in range(10)}) > 1
    assert select(num_objects=0) == []
    with pytest.raises(InvsError, match="num_objects must be >= 0"):
        select(num_objects=-1)


def test_a_partial_index_in_the_cache_is_downloaded_again(mirror: Mirror, tmp_path: Path) -> None:
    index = _cached_root(tmp_path) / "object-paths.json.gz"
    index.parent.mkdir(parents=True)
    index.write_bytes(gzip.compress(b'{"abc": "glbs/000-000/abc.glb", "tr')[:-10])  # an interrupted download
    seen = len(mirror.requests())
    assert len(src.select_uids(cache_dir=_cache(tmp_path), mirror=mirror.url)) == len(mirror.uids) + 2
    assert mirror.requests()[seen:] == ["/objaverse/object-paths.json.gz"]


# ------------------------------------------------------------------------------------------------ fetch

#: Retries without real waiting: 3 tries, 10 ms then 20 ms backoff (times a jitter factor), 0.3 s request timeout.
FAST = src.RetryPolicy(attempts=3, backoff_s=0.01, timeout_s=0.3)


def _glb(uid: str) -> str:
    return f"glbs/000-000/{uid}.glb"


def test_select_objects_gives_each_uid_its_object_path(mirror: Mirror, tmp_path: Path) -> None:
    truck, fox = mirror.uids["CesiumMilkTruck"], mirror.uids["Fox"]
    uids_file = tmp_path / "uids.txt"
    uids_file.write_text(f"{truck}\n{UNKNOWN}\n{fox}\n")
    seen = len(mirror.requests())
    selected = src.select_objects(uids_file, cache_dir=_cache(tmp_path), mirror=mirror.url)
    assert selected == [(truck, _glb(truck)), (UNKNOWN, None), (fox, _glb(fox))]
    assert src.object_paths([fox, UNKNOWN], cache_dir=_cache(tmp_path), mirror=mirror.url) == {fox: _glb(fox)}
    assert mirror.requests()[seen:] == ["/objaverse/object-paths.json.gz"]  # read once, then from the cache


@pytest.mark.parametrize("workers", [1, 3])
def test_fetch_downloads_verifies_and_reports_failures(mirror: Mirror, tmp_path: Path, workers: int) -> None:
    good = list(mirror.uids.values())
    wanted = [good[0], CORRUPT, *good[1:4], UNKNOWN, MISSING, *good[4:], good[0]]
    fetch = functools.partial(src.fetch_objects, cache_dir=_cache(tmp_path), mirror=mirror.url, retry=FAST)
    before = mirror.glb_requests()

    refs, failures = fetch(wanted, workers)

    assert [r.uid for r in refs] == good  # input order, duplicates dropped
    for ref in refs:
        assert ref.source == "objaverse" and ref.key == ref.uid and ref.object_path == _glb(ref.uid)
        assert Path(ref.uri) == _cached_root(tmp_path) / _glb(ref.uid)
        assert Path(ref.uri).read_bytes() == mirror.originals[ref.uid].read_bytes()
    reasons = dict(failures)
    assert [uid for uid, _ in failures] == [CORRUPT, UNKNOWN, MISSING]
    assert reasons[CORRUPT].startswith("corrupt download: not a glTF-binary file")
    assert reasons[UNKNOWN] == "uid not in the Objaverse object index (object-paths.json.gz)"
    assert reasons[MISSING] == f"HTTP 404 File not found for {mirror.url}{_glb(MISSING)}"
    assert all("\n" not in r for r in reasons.values())
    leftovers = sorted(p.name for p in (_cached_root(tmp_path) / "glbs" / "000-000").iterdir())
    assert leftovers == sorted(f"{u}.glb" for u in good)  # no corrupt file, no temporary file
    new = mirror.glb_requests() - before
    assert all(new[u] == 1 for u in good)
    assert new[MISSING] == 1  # a 404 is not retried
    assert new[CORRUPT] == 2  # a corrupt download is downloaded once more, then reported

    seen, before = len(mirror.requests()), mirror.glb_requests()
    again, failures_again = fetch(good, workers)
    assert again == refs and failures_again == []
    assert mirror.glb_requests() == before and len(mirror.requests()) == seen  # all from the cache


def test_a_bad_cached_object_is_deleted_and_downloaded_again(mirror: Mirror, tmp_path: Path) -> None:
    box, fox, cow = mirror.uids["BoxTextured"], mirror.uids["Fox"], mirror.uids["SpotCow"]
    fetch = functools.partial(src.fetch_objects, cache_dir=_cache(tmp_path), mirror=mirror.url)
    refs, _ = fetch([box, fox, cow], 1)
    paths = {r.uid: Path(r.uri) for r in refs}
    paths[box].write_bytes(paths[box].read_bytes()[:-1000])  # truncated
    paths[fox].write_bytes(b"")  # empty

    before = mirror.glb_requests()
    refs, failures = fetch([box, fox, cow], 2)
    assert failures == [] and [r.uid for r in refs] == [box, fox, cow]
    assert mirror.glb_requests() - before == Counter([box, fox])
    assert all(Path(r.uri).read_bytes() == mirror.originals[r.uid].read_bytes() for r in refs)


@pytest.mark.parametrize(
    "failures",
    [("503", "503"), ("429",), ("500", "502"), ("reset",), ("stall",), ("503", "reset")],
    ids=["503-twice", "429", "500-502", "connection-reset", "timeout", "503-then-reset"],
)
def test_transient_errors_are_retried_with_backoff(mirror: Mirror, tmp_path: Path, failures: tuple[str, ...]) -> None:
    uid = mirror.uids["Fox"]
    retry = src.RetryPolicy(attempts=3, backoff_s=0.05, timeout_s=0.3)
    before = mirror.count(_glb(uid))
    with mirror.failing(_glb(uid), *failures):
        started = time.monotonic()
        got = src.fetch_object(uid, _glb(uid), _cached_root(tmp_path), mirror=mirror.url, retry=retry)
        waited = time.monotonic() - started
    assert got.origin == "http" and got.http_requests == len(failures) + 1 == mirror.count(_glb(uid)) - before
    assert got.path.read_bytes() == mirror.originals[uid].read_bytes()
    # backoff: 50 ms, then 100 ms, each times a jitter factor in [0.5, 1]
    assert waited >= sum(0.5 * 0.05 * 2**i for i in range(len(failures)))


def test_retries_are_bounded_and_permanent_errors_fail_fast(mirror: Mirror, tmp_path: Path) -> None:
    box = mirror.uids["BoxTextured"]
    root = _cached_root(tmp_path)
    counts = {u: mirror.count(_glb(u)) for u in (box, MISSING, CORRUPT)}
    with mirror.failing(_glb(box), "503", "503", "503", "503"), pytest.raises(src.DownloadError) as err:
        src.fetch_object(box, _glb(box), root, mirror=mirror.url, retry=FAST)
    assert str(err.value) == f"HTTP 503 planned failure for {mirror.url}{_glb(box)} (gave up after 3 tries)"
    assert mirror.count(_glb(box)) - counts[box] == 3

    slow = src.RetryPolicy(attempts=5, backoff_s=30.0, timeout_s=5.0)  # a retry would take 15 s or more
    started = time.monotonic()
    with mirror.failing(_glb(box), "403"), pytest.raises(src.DownloadError, match=r"^HTTP 403 planned failure for "):
        src.fetch_object(box, _glb(box), root, mirror=mirror.url, retry=slow)
    with pytest.raises(src.DownloadError) as err:
        src.fetch_object(MISSING, _glb(MISSING), root, mirror=mirror.url, retry=slow)
    assert time.monotonic() - started < 5
    assert str(err.value) == f"HTTP 404 File not found for {mirror.url}{_glb(MISSING)}"
    assert mirror.count(_glb(box)) - counts[box] == 4 and mirror.count(_glb(MISSING)) - counts[MISSING] == 1

    with pytest.raises(src.DownloadError, match="corrupt download: not a glTF-binary file"):
        src.fetch_object(CORRUPT, _glb(CORRUPT), root, mirror=mirror.url, retry=slow)
    assert mirror.count(_glb(CORRUPT)) - counts[CORRUPT] == 2
    with pytest.raises(src.DownloadError, match=r"^bad object path '\.\./x\.glb'"):
        src.fetch_object("x", "../x.glb", root, mirror=mirror.url)
    assert not [p for p in root.rglob("*") if p.is_file()]  # nothing half-written, no temporary file


def test_backoff_doubles_is_capped_jittered_and_honours_retry_after() -> None:
    policy = src.RetryPolicy(attempts=10, backoff_s=1.0)
    rng = random.Random(0)
    for failed, full in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (9, 60.0)]:
        delays = [policy.delay(failed, rng=rng) for _ in range(200)]
        assert 0.5 * full <= min(delays) < max(delays) <= full
    assert 5.0 <= policy.delay(1, retry_after=10, rng=rng) <= 10.0
    assert policy.delay(1, retry_after=3600, rng=rng) <= src.MAX_BACKOFF_S
    assert src.RetryPolicy(backoff_s=0).delay(3) == 0
    with pytest.raises(InvsError, match="bad download retry settings"):
        src.RetryPolicy(attempts=0)


def test_network_errors_are_one_line_reasons(mirror: Mirror, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_free_port()}/objaverse/"
    box, fox = mirror.uids["BoxTextured"], mirror.uids["Fox"]

    with pytest.raises(
        InvsError,
        match=r"^cannot load the Objaverse object index: network error: .*refused.* \(gave up after 3 tries\)$",
    ):
        src.fetch_objects([box], cache_dir=_cache(tmp_path), mirror=dead, retry=FAST)
    src.select_uids(cache_dir=_cache(tmp_path), mirror=mirror.url)  # the index is cached now; the objects are not
    with pytest.raises(InvsError, match=r"^cannot load the Objaverse LVIS annotations: HTTP 404 "):
        src.select_uids(lvis_categories=["animal"], cache_dir=_cache(tmp_path), mirror=mirror.url + "nothing-here/")

    for workers in (1, 2):
        refs, failures = src.fetch_objects([box, fox], workers, cache_dir=_cache(tmp_path), mirror=dead, retry=FAST)
        assert refs == [] and [u for u, _ in failures] == [box, fox]
        for _, reason in failures:
            assert reason.startswith("network error: ") and "refused" in reason and "\n" not in reason
            assert reason.endswith("(gave up after 3 tries)")
    assert not [p for p in (_cached_root(tmp_path) / "glbs").rglob("*") if p.is_file()]  # nothing half-written


# ------------------------------------------------------------------------------------------------ store


def _listing(store: str) -> set[str]:
    from invs import storage

    return {uri.removeprefix(store + "/") for uri in storage.list_files(store)}


@pytest.mark.s3
def test_a_store_is_filled_once_and_serves_later_runs_without_http(
    mirror: Mirror, s3_bucket: str, tmp_path: Path
) -> None:
    from invs import storage

    store = f"{s3_bucket}/objaverse"
    selection = {"lvis_categories": ["animal", "toy", "cake"], "licenses": ["by", "by-nc"]}
    first = {"cache_dir": tmp_path / "first", "mirror": mirror.url, "store": store, "retry": FAST}
    seen, before = len(mirror.requests()), mirror.glb_requests()

    selected = src.select_objects(**selection, **first)  # the driver: index, LVIS, metadata over HTTP -> store
    uids = [u for u, _ in selected]
    assert sorted(uids) == sorted(
        mirror.uids[n] for n in ("Fox", "SpotCow", "BoxTextured", "kenney_alien", "kenney_cakeBirthday")
    )
    root = src.cache_root(tmp_path / "first")
    got = [src.fetch_object(u, p, root, mirror=mirror.url, store=store, retry=FAST) for u, p in selected]
    assert [g.origin for g in got] == ["http"] * len(uids)
    assert mirror.glb_requests() - before == Counter(uids)
    index = {"object-paths.json.gz", "lvis-annotations.json.gz", "metadata/000-000.json.gz"}
    assert {p.removeprefix("/objaverse/") for p in mirror.requests()[seen:]} == index | {_glb(u) for u in uids}
    assert _listing(store) == index | {_glb(u) for u in uids}
    for uid in uids:
        assert storage.read_bytes(f"{store}/{_glb(uid)}") == mirror.originals[uid].read_bytes()

    # a later run on another machine: empty cache, the HTTP source gone; everything comes from the store
    dead = f"http://127.0.0.1:{_free_port()}/objaverse/"
    later = {"cache_dir": tmp_path / "later", "mirror": dead, "store": store, "retry": FAST}
    seen = len(mirror.requests())
    assert src.select_objects(**selection, **later) == selected
    root = src.cache_root(tmp_path / "later")
    got = [src.fetch_object(u, p, root, mirror=dead, store=store, retry=FAST) for u, p in selected]
    assert [g.origin for g in got] == ["store"] * len(uids) and all(g.http_requests == 0 for g in got)
    assert all(g.path.read_bytes() == mirror.originals[u].read_bytes() for u, g in zip(uids, got, strict=True))
    assert len(mirror.requests()) == seen
    refs, failures = src.fetch_objects(uids, 2, **later)  # the batch helper too (index from the cache now)
    assert failures == [] and [r.uid for r in refs] == uids


@pytest.mark.s3
def test_a_bad_store_copy_is_replaced_and_store_errors_are_reasons(
    mirror: Mirror, s3_bucket: str, tmp_path: Path
) -> None:
    from invs import storage

    store = f"{s3_bucket}/objaverse"
    fox = mirror.uids["Fox"]
    storage.write_bytes(f"{store}/{_glb(fox)}", b"not a model")
    got = src.fetch_object(fox, _glb(fox), tmp_path / "a", mirror=mirror.url, store=store, retry=FAST)
    assert got.origin == "http" and got.http_requests == 1
    assert storage.read_bytes(f"{store}/{_glb(fox)}") == mirror.originals[fox].read_bytes()

    before = mirror.count(_glb(MISSING))
    with pytest.raises(src.DownloadError, match=r"^HTTP 404 "):
        src.fetch_object(MISSING, _glb(MISSING), tmp_path / "b", mirror=mirror.url, store=store, retry=FAST)
    assert mirror.count(_glb(MISSING)) == before + 1 and not storage.exists(f"{store}/{_glb(MISSING)}")

    nowhere = "s3://invs-no-such-bucket-here/objaverse"
    with pytest.raises(
        src.DownloadError, match=r"^objaverse store: .*bucket 'invs-no-such-bucket-here' does not exist"
    ):
        src.fetch_object(fox, _glb(fox), tmp_path / "c", mirror=mirror.url, store=nowhere, retry=FAST)
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]


# ------------------------------------------------------------------------------------------------ render job


def _render_config(tmp_path: Path, mirror_url: str, **render: Any) -> Any:
    from invs.config import load_config

    return load_config(
        "local",
        {
            "objaverse.cache": str(tmp_path / "driver-cache"),
            "objaverse.mirror": mirror_url,
            "objaverse.download_backoff_s": 0.01,
            "objaverse.download_attempts": 3,
            **{f"render.{k}": v for k, v in render.items()},
        },
    )


def test_workers_fetch_by_the_path_in_the_ref_without_the_index(mirror: Mirror, tmp_path: Path) -> None:
    """The driver reads the index once; a worker gets each object's path in its ref and downloads just the object."""
    from render import worker
    from render.sources import resolve_objects

    box, fox = mirror.uids["BoxTextured"], mirror.uids["Fox"]
    uids_file = tmp_path / "uids.txt"
    uids_file.write_text(f"{box}\n{fox}\n{UNKNOWN}\n")
    config = _render_config(tmp_path, mirror.url, objects="objaverse", uids_file=str(uids_file))
    refs = resolve_objects(config)
    assert [(r.uid, r.uri, r.object_path) for r in refs] == [
        (box, f"objaverse:{box}", _glb(box)),
        (fox, f"objaverse:{fox}", _glb(fox)),
        (UNKNOWN, f"objaverse:{UNKNOWN}", None),
    ]

    listed = tmp_path / "objects.txt"  # objaverse: URIs in a list file get their paths from the driver too
    listed.write_text(f"objaverse:{fox}\nobjaverse:{UNKNOWN}\n")
    config.render.objects = str(listed)
    assert [(r.uid, r.source, r.object_path) for r in resolve_objects(config)] == [
        (fox, "list", _glb(fox)),
        (UNKNOWN, "list", None),
    ]

    config.objaverse.cache = str(tmp_path / "worker-cache")  # another node: nothing cached there
    seen = len(mirror.requests())
    origins: list[str] = []
    paths = [worker.fetch(r, tmp_path / "fetch", config, lambda got: origins.append(got.origin)) for r in refs[:2]]
    assert [p.read_bytes() for p in paths] == [mirror.originals[box].read_bytes(), mirror.originals[fox].read_bytes()]
    assert paths[0] == src.cache_root(tmp_path / "worker-cache") / _glb(box) and origins == ["http", "http"]
    with pytest.raises(worker.FetchError, match=r"^uid not in the Objaverse object index"):
        worker.fetch(refs[2], tmp_path / "fetch", config)
    assert mirror.requests()[seen:] == [f"/objaverse/{_glb(box)}", f"/objaverse/{_glb(fox)}"]  # no index
    assert not (src.cache_root(tmp_path / "worker-cache") / "object-paths.json.gz").exists()


@pytest.mark.s3
def test_with_a_store_workers_keep_no_local_copy_and_a_bad_store_fails_first(
    mirror: Mirror, s3_bucket: str, tmp_path: Path
) -> None:
    from invs import storage
    from invs.errors import StorageError
    from render import worker
    from render.sources import resolve_objects

    cow = mirror.uids["SpotCow"]
    store = f"{s3_bucket}/objaverse"
    config = _render_config(
        tmp_path, mirror.url, objects="objaverse", lvis_categories=["animal"], objaverse_store=store
    )
    refs = resolve_objects(config)
    assert storage.exists(f"{store}/object-paths.json.gz") and storage.exists(f"{store}/lvis-annotations.json.gz")
    ref = next(r for r in refs if r.uid == cow)
    origins: list[str] = []
    for _ in range(2):
        path = worker.fetch(ref, tmp_path / "fetch", config, lambda got: origins.append(got.origin))
        assert path.is_relative_to(tmp_path / "fetch") and path.read_bytes() == mirror.originals[cow].read_bytes()
        path.unlink()  # as the worker does after rendering
    assert origins == ["http", "store"]
    assert not (src.cache_root(config.objaverse.cache) / "glbs").exists()

    config.objaverse.store = "s3://invs-no-such-bucket-here/objaverse"
    with pytest.raises(StorageError, match=r"^objaverse\.store: .*does not exist"):
        resolve_objects(config)


@pytest.mark.slow  # the Objaverse-XL job test runs the same job machinery (Objaverse GLBs, mirror, then store)
@pytest.mark.blender
@pytest.mark.s3
def test_the_render_job_fetches_objaverse_objects_through_the_mirror_then_the_store(
    mirror: Mirror, s3_bucket: str, tmp_path: Path
) -> None:
    """`render/main.py --objects objaverse`: real package, local mirror, verified files, failed rows for the rest;
    with a store, a second job (fresh caches, the mirror gone) renders the same objects from S3 alone."""
    from invs import shards, storage, tables
    from tests.helpers import render

    good = [mirror.uids["BoxTextured"], mirror.uids["kenney_alien"]]
    uids_file = tmp_path / "uids.txt"
    uids_file.write_text("\n".join([*good, MISSING, CORRUPT]) + "\n")
    store = f"{s3_bucket}/objaverse"

    def job(out: str, uids: Path, mirror_url: str, cache: str) -> dict[str, Any]:
        proc = render(
            "objaverse",
            out,
            "--uids-file",
            str(uids),
            "--objaverse-store",
            store,
            "--set",
            f"render.objaverse_mirror={mirror_url}",
            "--set",
            f"render.objaverse_cache={tmp_path / cache}",
            "--set",
            "render.download_backoff_s=0.01",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(storage.read_text(f"{out}/summary.json"))

    out = str(tmp_path / "out")
    summary = job(out, uids_file, mirror.url, "cache")
    rows = tables.latest_by_uid(tables.read_table(storage.join(out, "manifest"), tables.MANIFEST_SCHEMA))
    assert {u: r["status"] for u, r in rows.items()} == {
        good[0]: "ok",
        good[1]: "ok",
        MISSING: "failed",
        CORRUPT: "failed",
    }
    assert "404" in rows[MISSING]["error"] and "corrupt" in rows[CORRUPT]["error"]
    for uid in good:  # provenance from Objaverse's metadata, read by the driver
        assert rows[uid]["license"] == mirror.licenses[uid]
        assert json.loads(rows[uid]["annotations"]) == {"name": f"object {uid[:6]}"}
    for sample in shards.iter_render_samples(shards.list_shards(out)):
        original = mirror.originals[sample.meta["uid"]]
        assert sample.meta["sha256"] == hashlib.sha256(original.read_bytes()).hexdigest()
        assert sample.meta["source"] == f"objaverse:{sample.meta['uid']}"
    # counts are of the objects fetched: the 404 and the corrupt object are failed rows instead
    assert summary["objaverse"] == {"cache": 0, "store": 0, "http": 2, "http_requests": 2, "clones": 0}
    assert {_glb(u) for u in good} <= _listing(store) and not (tmp_path / "cache" / "hf-objaverse-v1" / "glbs").exists()

    good_file = tmp_path / "good.txt"
    good_file.write_text("\n".join(good) + "\n")
    dead = f"http://127.0.0.1:{_free_port()}/objaverse/"
    seen = len(mirror.requests())
    summary = job(str(tmp_path / "again"), good_file, dead, "fresh-cache")
    assert summary["rendered"] == 2 and summary["failed"] == 0, summary["failures"]
    assert summary["objaverse"] == {"cache": 0, "store": 2, "http": 0, "http_requests": 0, "clones": 0}
    assert len(mirror.requests()) == seen
