"""The Objaverse source against a local HTTP mirror on 127.0.0.1 with the Hugging Face layout.

The real ``objaverse`` package downloads everything (index, metadata, LVIS annotations, GLBs) through the mirror;
the objects are the real GLB files in tests/assets/objects under fake uids, plus one corrupt object and one
whose file the mirror does not have. HTTPS connections are refused and the package's default cache location is
replaced by a directory that must never appear, so no test can reach the internet or touch ~/.objaverse.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import http.server
import json
import random
import socket
import struct
import threading
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


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.requests.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Mirror:
    url: str
    server: http.server.ThreadingHTTPServer
    uids: dict[str, str]  # object name -> uid
    originals: dict[str, Path]  # uid -> the real file served for it
    licenses: dict[str, str] = field(default_factory=dict)  # uid -> licence

    def glb_requests(self) -> Counter[str]:
        """uid -> number of GET requests for its GLB so far."""
        with self.server.lock:  # type: ignore[attr-defined]
            paths = list(self.server.requests)  # type: ignore[attr-defined]
        return Counter(p.rsplit("/", 1)[-1].removesuffix(".glb") for p in paths if p.endswith(".glb"))

    def requests(self) -> list[str]:
        with self.server.lock:  # type: ignore[attr-defined]
            return list(self.server.requests)  # type: ignore[attr-defined]


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

    handler = functools.partial(_Handler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="objaverse-mirror", daemon=True)
    thread.start()
    try:
        yield Mirror(f"http://127.0.0.1:{server.server_port}/objaverse/", server, uids, originals, licenses)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


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


@pytest.mark.parametrize("processes", [1, 2])
def test_fetch_downloads_verifies_and_reports_failures(
    mirror: Mirror, tmp_path: Path, processes: int, capsys: pytest.CaptureFixture[str]
) -> None:
    good = list(mirror.uids.values())
    wanted = [good[0], CORRUPT, *good[1:4], UNKNOWN, MISSING, *good[4:], good[0]]
    fetch = functools.partial(src.fetch_objects, cache_dir=_cache(tmp_path), mirror=mirror.url)
    before = mirror.glb_requests()

    refs, failures = fetch(wanted, processes=processes)

    assert [r.uid for r in refs] == good  # input order, duplicates dropped
    for ref in refs:
        assert ref.source == "objaverse" and ref.key == ref.uid
        assert Path(ref.uri) == _cached_root(tmp_path) / "glbs" / "000-000" / f"{ref.uid}.glb"
        assert Path(ref.uri).read_bytes() == mirror.originals[ref.uid].read_bytes()
    reasons = dict(failures)
    assert [uid for uid, _ in failures] == [CORRUPT, UNKNOWN, MISSING]
    assert reasons[CORRUPT].startswith("corrupt download: not a glTF-binary file")
    assert reasons[UNKNOWN] == "uid not in the Objaverse object index (object-paths.json.gz)"
    assert reasons[MISSING] == f"HTTP 404 File not found for {mirror.url}glbs/000-000/{MISSING}.glb"
    assert all("\n" not in r for r in reasons.values())
    leftovers = sorted(p.name for p in (_cached_root(tmp_path) / "glbs" / "000-000").iterdir())
    assert leftovers == sorted(f"{u}.glb" for u in good)  # no corrupt file, no .tmp
    new = mirror.glb_requests() - before
    assert all(new[u] == 1 for u in good)
    if processes > 1:  # the pool stopped on the 404; the missing object was tried once more on its own
        assert "with 2 processes" in capsys.readouterr().out
        assert new[MISSING] == 2

    seen, before = len(mirror.requests()), mirror.glb_requests()
    again, failures_again = fetch(good, processes=processes)
    assert again == refs and failures_again == []
    assert mirror.glb_requests() == before and len(mirror.requests()) == seen  # all from the cache


def test_parallel_download_runs_in_forked_workers_through_the_mirror(
    mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = list(mirror.uids.values())
    before = mirror.glb_requests()
    refs, failures = src.fetch_objects(good, processes=3, cache_dir=_cache(tmp_path), mirror=mirror.url)
    assert failures == [] and [r.uid for r in refs] == good
    assert "starting download of 7 objects with 3 processes" in capsys.readouterr().out
    assert mirror.glb_requests() - before == Counter(good)  # each exactly once: no serial retry was needed
    assert all(Path(r.uri).read_bytes() == mirror.originals[r.uid].read_bytes() for r in refs)


def test_a_bad_cached_object_is_deleted_and_downloaded_again(mirror: Mirror, tmp_path: Path) -> None:
    box, fox, cow = mirror.uids["BoxTextured"], mirror.uids["Fox"], mirror.uids["SpotCow"]
    fetch = functools.partial(src.fetch_objects, cache_dir=_cache(tmp_path), mirror=mirror.url)
    refs, _ = fetch([box, fox, cow], processes=1)
    paths = {r.uid: Path(r.uri) for r in refs}
    paths[box].write_bytes(paths[box].read_bytes()[:-1000])  # truncated
    paths[fox].write_bytes(b"")  # empty

    before = mirror.glb_requests()
    refs, failures = fetch([box, fox, cow], processes=2)
    assert failures == [] and [r.uid for r in refs] == [box, fox, cow]
    assert mirror.glb_requests() - before == Counter([box, fox])
    assert all(Path(r.uri).read_bytes() == mirror.originals[r.uid].read_bytes() for r in refs)


def test_network_errors_are_one_line_reasons(mirror: Mirror, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_free_port()}/objaverse/"
    box, fox = mirror.uids["BoxTextured"], mirror.uids["Fox"]

    with pytest.raises(InvsError, match=r"^cannot load the Objaverse object index: network error: .*refused"):
        src.fetch_objects([box], cache_dir=_cache(tmp_path), mirror=dead)
    with pytest.raises(InvsError, match=r"^cannot load the Objaverse LVIS annotations: HTTP 404 "):
        src.select_uids(lvis_categories=["animal"], cache_dir=_cache(tmp_path), mirror=mirror.url + "nothing-here/")

    src.select_uids(cache_dir=_cache(tmp_path), mirror=mirror.url)  # the index is cached now; the objects are not
    for processes in (1, 2):
        refs, failures = src.fetch_objects([box, fox], processes, cache_dir=_cache(tmp_path), mirror=dead)
        assert refs == [] and [u for u, _ in failures] == [box, fox]
        for _, reason in failures:
            assert reason.startswith("network error: ") and "refused" in reason and "\n" not in reason
    assert not [p for p in (_cached_root(tmp_path) / "glbs").rglob("*") if p.is_file()]  # nothing half-written


@pytest.mark.blender
def test_the_render_job_downloads_objaverse_objects_through_the_mirror(mirror: Mirror, tmp_path: Path) -> None:
    """`render/main.py --objects objaverse`: real package, local mirror, verified files, failed rows for the rest."""
    from invs import shards, storage, tables
    from tests.helpers import render

    good = [mirror.uids["BoxTextured"], mirror.uids["kenney_alien"]]
    uids_file = tmp_path / "uids.txt"
    uids_file.write_text("\n".join([*good, MISSING, CORRUPT]) + "\n")
    out = str(tmp_path / "out")
    proc = render(
        "objaverse",
        out,
        "--uids-file",
        str(uids_file),
        "--set",
        f"render.objaverse_mirror={mirror.url}",
        "--set",
        f"render.objaverse_cache={tmp_path / 'cache'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = tables.latest_by_uid(tables.read_table(storage.join(out, "manifest"), tables.MANIFEST_SCHEMA))
    assert {u: r["status"] for u, r in rows.items()} == {
        good[0]: "ok",
        good[1]: "ok",
        MISSING: "failed",
        CORRUPT: "failed",
    }
    assert "404" in rows[MISSING]["error"] and "corrupt" in rows[CORRUPT]["error"]
    for sample in shards.iter_render_samples(shards.list_shards(out)):
        original = mirror.originals[sample.meta["uid"]]
        assert sample.meta["sha256"] == hashlib.sha256(original.read_bytes()).hexdigest()
        assert sample.meta["source"] == f"objaverse:{sample.meta['uid']}"
