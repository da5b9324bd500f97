"""Objaverse-XL against a local stand-in laid out as the real thing: the annotation parquet files as the ``objaverse``
package caches them, served with Objaverse 1.0's Sketchfab GLBs, Thingiverse downloads and Smithsonian files by an
HTTP mirror on 127.0.0.1 that fails chosen requests; GitHub repositories as real git repositories reached by
``file://`` URLs, at the annotated commit (their branch has moved on since). Every URL reaches them through
``objaverse_xl.url_rewrites`` and ``objaverse.mirror``, as a user's mirror would; HTTPS is refused.

The objects are real files: the glTF samples of tests/assets/objects, a glTF with its buffer and texture beside it,
an OBJ with its .mtl and texture, an STL and a vertex-coloured PLY. The annotations hold a duplicate inside a
repository and one across sources, a repository that no longer exists, a file changed since it was annotated and a
COLLADA file.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from invs import storage, tables
from invs.config import Config, load_config
from invs.errors import InvsError
from render import objaverse_xl, xl_fetch
from render.object_ref import ObjectRef
from tests.helpers import png_header, write_gltf
from tests.http_mirror import HTTPMirror, serve

GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
ANNOTATION_FILES = ("github/github.parquet", "github/alignment.parquet", "thingiverse/thingiverse.parquet")
ANNOTATION_FILES += ("smithsonian/smithsonian.parquet", "sketchfab/sketchfab.parquet", "sketchfab/alignment.parquet")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git(cwd: Path, *args: str) -> str:
    import os

    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=os.environ | GIT, check=True)
    return proc.stdout.strip()


def _repo(root: Path, name: str, files: dict[str, bytes], later: dict[str, bytes] | None = None) -> str:
    """A bare repository ``root/NAME.git`` with ``files`` committed (then ``later`` in a second commit, so the
    branch has moved on); returns the first commit's sha."""
    work = root / "work" / name
    work.mkdir(parents=True)
    _git(work, "init", "-q", "-b", "main")
    for rel, data in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "objects")
    commit = _git(work, "rev-parse", "HEAD")
    if later:
        for rel, data in later.items():
            (work / rel).write_bytes(data)
        _git(work, "commit", "-qam", "changed")
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    _git(root, "clone", "-q", "--bare", str(work), f"{name}.git")
    return commit


@dataclass
class World:
    """The stand-in: where it is served from and what the annotations say."""

    http: HTTPMirror
    git: Path
    rows: list[dict[str, Any]]  # every annotation row
    files: dict[str, bytes] = field(default_factory=dict)  # fileIdentifier -> the bytes behind it

    def rewrites(self, http_base: str | None = None, git_base: str | None = None) -> list[str]:
        http = http_base or self.http.url
        return [
            f"{objaverse_xl.XL_BASE_URL}=" + http + "hf/",
            f"https://github.com/=file://{git_base or self.git}/",
            "https://www.thingiverse.com/=" + http + "thingiverse/",
            "https://3d-api.si.edu/=" + http + "si/",
        ]

    def config(self, tmp_path: Path, cache: str = "cache", **settings: Any) -> Config:
        base = {
            "render.objects": "objaverse-xl",
            "objaverse.cache": str(tmp_path / cache),
            "objaverse.mirror": self.http.url + "objaverse/",
            "objaverse.download_backoff_s": 0.01,
            "objaverse.download_timeout_s": 5.0,
            "objaverse_xl.url_rewrites": self.rewrites(),
        }
        return load_config("local", base | settings)

    def row(self, name: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["fileIdentifier"].endswith(name))


@pytest.fixture(scope="module")
def world(real_objects: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import numpy as np
    import trimesh

    served = tmp_path_factory.mktemp("xl-served")
    git = tmp_path_factory.mktemp("xl-git")
    blobs = {
        name: (real_objects / f"{name}.glb").read_bytes()
        for name in ("BoxTextured", "CesiumMilkTruck", "Fox", "GolfBall", "kenney_alien")
    }

    # GitHub: alice/props (glb, its copy, a glTF with buffer and texture, an OBJ with .mtl and texture, a .dae, a file
    # changed since it was annotated) and bob/shapes (a PLY, a Sketchfab object's bytes); carol/gone does not exist
    gltf_dir = tmp_path_factory.mktemp("gltf")
    write_gltf(gltf_dir / "cube.gltf", buffer_uri="cube.bin", image_uri="skin.png", image_bytes=png_header(4, 4))
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 40, 40)).save(gltf_dir / "skin.png")
    corners = [(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    quads = [(1, 3, 4, 2), (5, 6, 8, 7), (1, 2, 6, 5), (3, 7, 8, 4), (1, 5, 7, 3), (2, 4, 8, 6)]
    obj = "\n".join(
        ["mtllib box.mtl", *(f"v {x} {y} {z}" for x, y, z in corners), "vt 0 0", "usemtl m"]
        + ["f " + " ".join(f"{i}/1" for i in quad) for quad in quads]
    )
    stl = trimesh.creation.box().export(file_type="stl")
    red = trimesh.creation.box()
    red.visual.vertex_colors = np.tile([230, 20, 20, 255], (len(red.vertices), 1)).astype(np.uint8)
    ply = red.export(file_type="ply")
    props = {
        "models/box.glb": blobs["BoxTextured"],
        "models/copy/box_copy.glb": blobs["BoxTextured"],
        "models/gltf/cube.gltf": (gltf_dir / "cube.gltf").read_bytes(),
        "models/gltf/cube.bin": (gltf_dir / "cube.bin").read_bytes(),
        "models/gltf/skin.png": (gltf_dir / "skin.png").read_bytes(),
        "models/obj/box.obj": obj.encode(),
        "models/obj/box.mtl": b"newmtl m\nKd 1 1 1\nmap_Kd tex/wood.png\n",
        "models/obj/tex/wood.png": (gltf_dir / "skin.png").read_bytes(),
        "models/scene.dae": b"<COLLADA/>",
        "models/changed.glb": blobs["GolfBall"],
    }
    alice = _repo(git, "alice/props", props, later={"models/box.glb": blobs["Fox"]})
    bob = _repo(git, "bob/shapes", {"red.ply": ply, "fox.glb": blobs["Fox"]})

    def gh(owner: str, commit: str, path: str) -> str:
        return f"https://github.com/{owner}/blob/{commit}/{path}"

    rows: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}

    def add(fid: str, source: str, lic: str, data: bytes, kind: str, sha: str | None = None) -> None:
        rows.append(
            {
                "fileIdentifier": fid,
                "source": source,
                "license": lic,
                "fileType": kind,
                "sha256": sha or _sha(data),
                "metadata": "{}",
            }
        )
        files[fid] = data

    for path, lic in [
        ("models/box.glb", "MIT License"),
        ("models/copy/box_copy.glb", "MIT License"),
        ("models/gltf/cube.gltf", "MIT License"),
        ("models/obj/box.obj", "Apache License 2.0"),
        ("models/scene.dae", "MIT License"),
    ]:
        add(gh("alice/props", alice, path), "github", lic, props[path], path.rsplit(".", 1)[1])
    add(
        gh("alice/props", alice, "models/changed.glb"),
        "github",
        "MIT License",
        props["models/changed.glb"],
        "glb",
        sha=_sha(b"what the file was when it was annotated"),
    )
    add(gh("bob/shapes", bob, "red.ply"), "github", "GPL", ply, "ply")
    add(gh("bob/shapes", bob, "fox.glb"), "github", "GPL", blobs["Fox"], "glb")
    add(gh("carol/gone", "0" * 40, "model.glb"), "github", "MIT License", blobs["CesiumMilkTruck"], "glb")
    add(
        "https://www.thingiverse.com/thing:11/files?fileId=22",
        "thingiverse",
        "Creative Commons - Attribution",
        stl,
        "stl",
    )
    add(
        "https://3d-api.si.edu/content/document/3d_package:abc/golf.glb", "smithsonian", "CC0", blobs["GolfBall"], "glb"
    )
    sketchfab_uids = {"Fox": "f0" * 16, "kenney_alien": "a1" * 16}
    for name, uid in sketchfab_uids.items():
        add(
            f"https://sketchfab.com/3d-models/{uid}",
            "sketchfab",
            "by" if name == "Fox" else "by-nc",
            blobs[name],
            "glb",
        )

    hf = served / "hf"
    for source in objaverse_xl.SOURCES:
        (hf / source).mkdir(parents=True)
        pq.write_table(
            pa.Table.from_pylist([r for r in rows if r["source"] == source]), hf / source / f"{source}.parquet"
        )
    aligned = {gh("alice/props", alice, "models/box.glb"), f"https://sketchfab.com/3d-models/{sketchfab_uids['Fox']}"}
    for source in ("github", "sketchfab"):
        pq.write_table(
            pa.Table.from_pylist([r for r in rows if r["source"] == source and r["fileIdentifier"] in aligned]),
            hf / source / "alignment.parquet",
        )
    (served / "thingiverse" / "download:22").parent.mkdir()
    (served / "thingiverse" / "download:22").write_bytes(stl)
    (served / "si" / "content" / "document" / "3d_package:abc").mkdir(parents=True)
    (served / "si" / "content" / "document" / "3d_package:abc" / "golf.glb").write_bytes(blobs["GolfBall"])
    paths = {}
    for name, uid in sketchfab_uids.items():
        rel = f"glbs/000-000/{uid}.glb"
        (served / "objaverse" / rel).parent.mkdir(parents=True, exist_ok=True)
        (served / "objaverse" / rel).write_bytes(blobs[name])
        paths[uid] = rel
    with gzip.open(served / "objaverse" / "object-paths.json.gz", "wt") as f:
        json.dump(paths, f)
    with serve(served) as http:
        yield World(http, git, rows, files)


@pytest.fixture(autouse=True)
def sealed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No HTTPS (so no Hugging Face, GitHub or Thingiverse) and the invs cache in tmp_path."""

    def refuse(self: http.client.HTTPSConnection) -> None:
        raise OSError(f"test refused an HTTPS connection to {self.host}")

    monkeypatch.setattr(http.client.HTTPSConnection, "connect", refuse)
    monkeypatch.setenv("INVS_CACHE_DIR", str(tmp_path / "invs-cache"))


def _ids(refs: list[ObjectRef]) -> set[str]:
    return {str(r.file_identifier).rsplit("/", 1)[-1] for r in refs}


# ------------------------------------------------------------------------------------------------ selection


def test_the_selection_filters_drops_duplicates_and_counts_what_it_chose(world: World, tmp_path: Path) -> None:
    seen = {rel: world.http.count(f"/hf/{rel}") for rel in ANNOTATION_FILES}
    with world.http.failing("/hf/github/github.parquet", "503", "reset"):
        selection = objaverse_xl.select(world.config(tmp_path))
    assert world.http.count("/hf/github/github.parquet") == seen["github/github.parquet"] + 3  # 2 failures, 1 good
    # defaults: every source, every type Blender imports (not the .dae); one copy of each file: the box's copy and
    # bob's fox (a Sketchfab object's bytes; Sketchfab's copy is kept) are dropped
    assert _ids(selection.refs) == {
        "box.glb", "cube.gltf", "box.obj", "changed.glb", "red.ply", "model.glb", "files?fileId=22", "golf.glb",
        "f0" * 16, "a1" * 16,
    }  # fmt: skip
    counts = selection.counts()
    assert counts["annotated"] == len(world.rows) == 13
    assert (counts["matched"], counts["duplicates_dropped"], counts["unique"], counts["selected"]) == (12, 2, 10, 10)
    assert counts["by_source"] == {"github": 6, "sketchfab": 2, "smithsonian": 1, "thingiverse": 1}
    assert counts["by_type"] == {"glb": 6, "gltf": 1, "obj": 1, "ply": 1, "stl": 1}
    box = next(r for r in selection.refs if r.file_identifier.endswith("models/box.glb"))
    assert box.uid == objaverse_xl.xl_uid(box.file_identifier) and box.uri == f"objaverse-xl:{box.uid}"
    assert (box.source, box.license, box.file_type, box.sha256) == (
        "github",
        "MIT License",
        "glb",
        world.row("models/box.glb")["sha256"],
    )
    fox = next(r for r in selection.refs if r.source == "sketchfab" and r.file_identifier.endswith("f0" * 16))
    assert fox.object_path == f"glbs/000-000/{'f0' * 16}.glb"  # from Objaverse 1.0's index, read by the driver
    described = selection.describe()
    assert "10 objects selected of 13 annotated" in described and "2 duplicates" in described
    assert "github 6" in described and "stl 1" in described

    # the cache has the package's layout: its own reader takes our files, without a download
    import objaverse.xl

    package = objaverse.xl.downloaders["github"].get_annotations(download_dir=str(tmp_path / "cache"))
    assert len(package) == sum(r["source"] == "github" for r in world.rows)

    # a second selection reads the cached annotation files: no request
    before = world.http.requests()
    narrow = objaverse_xl.select(
        world.config(tmp_path, **{"objaverse_xl.sources": ["github"], "objaverse_xl.licenses": ["mit license", "GPL"]})
    )
    assert not [p for p in world.http.requests()[len(before) :] if p.startswith("/hf/")]
    assert _ids(narrow.refs) == {"box.glb", "cube.gltf", "changed.glb", "red.ply", "fox.glb", "model.glb"}
    assert narrow.counts()["duplicates_dropped"] == 1  # only the box's copy: Sketchfab was not asked for

    aligned = objaverse_xl.select(world.config(tmp_path, **{"objaverse_xl.alignment": True}))
    assert _ids(aligned.refs) == {"box.glb", "f0" * 16}
    typed = objaverse_xl.select(world.config(tmp_path, **{"objaverse_xl.file_types": ["dae", "STL"]}))
    assert _ids(typed.refs) == {"scene.dae", "files?fileId=22"}


def test_a_seeded_sample_and_an_ids_file_reproduce_a_selection(world: World, tmp_path: Path) -> None:
    sample = objaverse_xl.select(world.config(tmp_path, **{"render.num_objects": 4, "render.seed": 3}))
    again = objaverse_xl.select(world.config(tmp_path, **{"render.num_objects": 4, "render.seed": 3}))
    other = objaverse_xl.select(world.config(tmp_path, **{"render.num_objects": 4, "render.seed": 4}))
    assert [r.uid for r in sample.refs] == [r.uid for r in again.refs] and len(sample.refs) == 4
    assert [r.uid for r in other.refs] != [r.uid for r in sample.refs]
    written = sample.write(str(tmp_path / "out"))
    assert written == storage.join(str(tmp_path / "out"), "selection.parquet")
    meta = json.loads(pq.read_schema(written).metadata[b"invs"])
    assert meta["settings"]["seed"] == 3 and meta["counts"]["selected"] == 4
    rerun = objaverse_xl.select(world.config(tmp_path, **{"objaverse_xl.ids_file": written}))
    assert rerun.refs == sample.refs

    # a text list mixing a fileIdentifier, a sha256 and a uid
    box = world.row("models/box.glb")
    listed = tmp_path / "ids.txt"
    listed.write_text(
        f"# three ways to name an object\n{box['fileIdentifier']}\n{world.row('red.ply')['sha256']}\n"
        f"{objaverse_xl.xl_uid(world.row('files?fileId=22')['fileIdentifier'])}  # the STL\n"
    )
    chosen = objaverse_xl.select(world.config(tmp_path, **{"objaverse_xl.ids_file": str(listed)}))
    assert _ids(chosen.refs) == {"box.glb", "red.ply", "files?fileId=22"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"objaverse_xl.url_rewrites": ["https://github.com/"]}, "is not FROM=TO"),
        ({"objaverse_xl.licenses": ["WTFPL"]}, "no objects match"),
        ({"objaverse_xl.alignment": True, "objaverse_xl.sources": ["thingiverse"]}, "alignment subset has no objects"),
        ({"objaverse_xl.ids_file": "/nonexistent/ids.txt"}, "does not exist"),
    ],
)
def test_bad_settings_stop_with_one_line(world: World, tmp_path: Path, settings: dict, message: str) -> None:
    with pytest.raises(InvsError, match=message) as info:
        objaverse_xl.select(world.config(tmp_path, **settings))
    assert "\n" not in str(info.value)


def test_annotations_that_cannot_be_fetched_stop_the_run(world: World, tmp_path: Path) -> None:
    with (
        world.http.failing("/hf/smithsonian/smithsonian.parquet", "404"),
        pytest.raises(
            InvsError, match=r"cannot load the Objaverse-XL annotations smithsonian/smithsonian.parquet: HTTP 404"
        ),
    ):
        objaverse_xl.select(world.config(tmp_path, **{"objaverse_xl.sources": ["smithsonian"]}))


# ------------------------------------------------------------------------------------------------ fetching


def test_workers_fetch_every_source_verified_and_clone_each_repository_once(world: World, tmp_path: Path) -> None:
    config = world.config(tmp_path, **{"objaverse_xl.file_types": [*objaverse_xl.formats.MODEL_TYPES, "dae"]})
    refs = objaverse_xl.select(config).refs
    fetcher = xl_fetch.XLFetcher(config, tmp_path / "scratch")
    got: dict[str, Any] = {}
    with world.http.failing("/thingiverse/download:22", "503", "429"):
        for ref in refs:
            try:
                got[ref.file_identifier.rsplit("/", 1)[-1]] = fetcher.fetch(ref)
            except xl_fetch.DownloadError as exc:
                got[ref.file_identifier.rsplit("/", 1)[-1]] = str(exc)
    reasons = {k: v for k, v in got.items() if isinstance(v, str)}
    assert set(reasons) == {"changed.glb", "model.glb", "scene.dae"}, reasons
    assert "differs from the annotated" in reasons["changed.glb"]
    assert reasons["model.glb"].startswith("cannot fetch carol/gone at 000000000000: git fetch:")
    assert "COLLADA" in reasons["scene.dae"]
    assert all("\n" not in r for r in reasons.values())
    for name, fetched in got.items():
        if not isinstance(fetched, str):
            ref = next(r for r in refs if r.file_identifier.endswith(name))
            assert fetched.path.read_bytes() == world.files[ref.file_identifier], name  # the annotated bytes
    # alice/props holds four of the objects and was fetched once, at the annotated commit (its branch moved on)
    assert fetcher.clones == 2
    assert got["files?fileId=22"].http_requests == 3 and got["files?fileId=22"].origin == "http"  # two failures retried
    # everything is in the node's cache in the package's layout: a second worker downloads nothing
    seen = len(world.http.requests())
    second = xl_fetch.XLFetcher(config, tmp_path / "scratch2")
    origins = {ref.file_identifier.rsplit("/", 1)[-1]: second.fetch(ref).origin for ref in refs
               if ref.file_identifier.rsplit("/", 1)[-1] not in reasons}  # fmt: skip
    assert set(origins.values()) == {"cache"} and len(world.http.requests()) == seen
    cache = tmp_path / "cache"
    assert (cache / "thingiverse" / "thing-11-file-22.stl").is_file()
    assert (
        cache / "smithsonian" / "objects" / f"{objaverse_xl.xl_uid(world.row('golf.glb')['fileIdentifier'])}.glb"
    ).is_file()
    assert (cache / "hf-objaverse-v1" / "glbs" / "000-000" / f"{'f0' * 16}.glb").is_file()


@pytest.mark.s3
def test_a_store_serves_a_fresh_worker_with_the_sources_gone(world: World, s3_bucket: str, tmp_path: Path) -> None:
    store = f"{s3_bucket}/xl"
    config = world.config(
        tmp_path,
        **{"objaverse.store": store, "objaverse_xl.licenses": ["MIT License", "Apache License 2.0", "CC0", "by"]},
    )
    refs = [r for r in objaverse_xl.select(config).refs if not r.file_identifier.endswith(("changed.glb", "model.glb"))]
    first = xl_fetch.XLFetcher(config, tmp_path / "scratch", tmp_path / "repos")
    assert {first.fetch(r).origin for r in refs} == {"http"}  # alice's objects: all from the one clone it made
    assert first.clones == 1
    assert storage.exists(storage.join(store, "github", "github.parquet"))  # the annotations too
    dead = "http://127.0.0.1:9/"
    gone = world.config(
        tmp_path,
        "fresh-cache",
        **{
            "objaverse.store": store,
            "objaverse.mirror": dead + "objaverse/",
            "objaverse.download_attempts": 1,
            "objaverse_xl.url_rewrites": world.rewrites(http_base=dead, git_base=str(tmp_path / "no-git")),
            "objaverse_xl.licenses": config.objaverse_xl.licenses,
        },
    )
    again = objaverse_xl.select(gone)  # annotations and the Objaverse index from the store
    assert again.refs == objaverse_xl.select(config).refs
    second = xl_fetch.XLFetcher(gone, tmp_path / "scratch2", tmp_path / "repos2")
    for ref in refs:
        fetched = second.fetch(ref)
        assert fetched.origin == "store" and fetched.path.read_bytes() == world.files[ref.file_identifier]
        if ref.file_type == "gltf":  # its buffer and texture came with it
            from render import gltf_check

            gltf_check.check_gltf(fetched.path)
            assert {p.name for p in fetched.path.parent.iterdir()} >= {"cube.gltf", "cube.bin", "skin.png"}
        if ref.file_type == "obj":
            assert (fetched.path.parent / "tex" / "wood.png").is_file() and (fetched.path.parent / "box.mtl").is_file()
    assert not (tmp_path / "repos2").exists() and second.clones == 0  # nothing was cloned


def test_workers_sharing_a_node_cache_fetch_a_repository_once_and_all_read_it(world: World, tmp_path: Path) -> None:
    """Four workers (fetchers of their own, on threads: their lock files exclude each other like processes) ask for
    the same repository's objects at once: one fetches it, the others wait and read the same checkout; a repository
    that cannot be fetched is tried once per worker, not once per object."""
    import concurrent.futures

    config = world.config(tmp_path, **{"objaverse_xl.sources": ["github"], "objaverse_xl.licenses": ["MIT License"]})
    refs = [r for r in objaverse_xl.select(config).refs if "alice/props" in r.file_identifier]
    refs = [r for r in refs if not r.file_identifier.endswith("changed.glb")]
    gone = next(r for r in objaverse_xl.select(config).refs if "carol/gone" in r.file_identifier)
    fetchers = [xl_fetch.XLFetcher(config, tmp_path / f"scratch{i}") for i in range(4)]

    def work(fetcher: xl_fetch.XLFetcher) -> list[Any]:
        out = [fetcher.fetch(ref).path.read_bytes() for ref in refs]
        for _ in range(2):
            with pytest.raises(xl_fetch.DownloadError, match="cannot fetch carol/gone"):
                fetcher.fetch(gone)
        return out

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, fetchers))
    assert all(r == [world.files[ref.file_identifier] for ref in refs] for r in results)
    assert sum(f.clones for f in fetchers) == 1
    repos = tmp_path / "cache" / "github" / "repos"
    assert [p.name for p in (repos / "alice" / "props").iterdir() if not p.name.endswith(".lock")] == [
        world.row("models/box.glb")["fileIdentifier"].split("/")[6]
    ]  # one checkout, no temporary folder left


def test_a_repositorys_objects_go_to_one_worker_together(world: World, tmp_path: Path) -> None:
    from render.job import MAX_GROUP_BATCH, batch_size

    refs = objaverse_xl.select(world.config(tmp_path)).refs  # Sketchfab, Smithsonian, GitHub by URL, Thingiverse
    queue = [(r, 1) for r in refs]
    batches = []
    while queue:
        take = batch_size(queue, 2)
        batches.append([r.file_identifier.split("/")[4] if r.source == "github" else r.source for r, _ in queue[:take]])
        queue = queue[take:]
    assert batches == [
        ["sketchfab", "sketchfab"],  # objects fetched on their own: two at a time
        ["smithsonian"],
        ["props", "props", "props", "props"],  # alice/props: one batch, one worker, one fetch
        ["shapes"],
        ["gone"],
        ["thingiverse"],
    ]
    many = [
        (
            dataclasses.replace(
                refs[0], source="github", file_identifier=f"https://github.com/o/r/blob/{'a' * 40}/{i}.glb"
            ),
            1,
        )
        for i in range(50)
    ]
    assert batch_size(many, 2) == MAX_GROUP_BATCH


def test_referenced_files_stay_inside_the_objects_folder(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "secret.png").write_bytes(b"x")
    (tmp_path / "m" / "a.mtl").write_text("newmtl a\nmap_Kd -bm 1 ../secret.png\nmap_Ks spec.png\n")
    (tmp_path / "m" / "spec.png").write_bytes(b"x")
    (tmp_path / "m" / "a.obj").write_text("mtllib a.mtl\nv 0 0 0\n")
    assert [p.name for p in xl_fetch.referenced_files(tmp_path / "m" / "a.obj")] == ["a.mtl", "spec.png"]
    assert xl_fetch.referenced_files(tmp_path / "m" / "missing.gltf") == []


def test_file_identifiers_that_are_not_what_their_source_says_fail_cleanly() -> None:
    """Annotation data never reaches git as an option nor the cache as a path outside it."""
    sha = "0123456789abcdef" * 2 + "01234567"
    assert xl_fetch.github_parts(f"https://github.com/o/r.js/blob/{sha}/d/e%20f.glb") == ("o", "r.js", sha, "d/e f.glb")
    assert xl_fetch.thingiverse_ids("https://www.thingiverse.com/thing:11/files?fileId=22") == ("11", "22")
    for bad in (
        f"https://github.com/o/r/tree/{sha}/e.glb",  # not a file URL
        f"https://github.com/o/r/blob/{sha}/../e.glb",  # out of the repository
        f"https://github.com/../../blob/{sha}/a.glb",  # out of the cache
        "https://github.com/o/r/blob/main/a.glb",  # a branch moves: not reproducible
        "https://github.com/o/r/blob/--upload-pack=touch${IFS}x;git-upload-pack/a.glb",  # an option for git
    ):
        with pytest.raises(xl_fetch.DownloadError):
            xl_fetch.github_parts(bad)
    with pytest.raises(xl_fetch.DownloadError, match="not a Thingiverse file URL"):
        xl_fetch.thingiverse_ids("https://www.thingiverse.com/thing:x")


# ------------------------------------------------------------------------------------------------ the render job


@pytest.mark.ray
@pytest.mark.blender
@pytest.mark.s3
def test_the_render_job_renders_an_xl_selection_once_with_provenance_and_a_rerun_downloads_nothing(
    world: World, s3_bucket: str, tmp_path: Path
) -> None:
    """`render/main.py --objects objaverse-xl`: sources, licences and duplicates filtered as asked, each object once,
    its provenance in the manifest; a second job (fresh out and cache, every source gone) renders the same objects
    from the store without a download."""
    from invs import shards
    from tests.helpers import render

    store = f"{s3_bucket}/xl-job"

    def job(out: Path, cache: str, rewrites: list[str], mirror: str) -> tuple[Any, dict[str, Any]]:
        args = ["--xl-source", "github", "--xl-source", "smithsonian", "--xl-source", "sketchfab"]
        for lic in ("MIT License", "Apache License 2.0", "GPL", "CC0", "by"):
            args += ["--xl-license", lic]
        settings = {
            "objaverse.store": store,
            "objaverse.cache": str(tmp_path / cache),
            "objaverse.mirror": mirror,
            "objaverse.download_backoff_s": 0.01,
            "objaverse_xl.url_rewrites": json.dumps(rewrites),
            "render.views": 1,
            "render.resolution": 32,
        }
        for key, value in settings.items():
            args += ["--set", f"{key}={value}"]
        proc = render("objaverse-xl", str(out), *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc, json.loads(storage.read_text(str(out / "summary.json")))

    with world.http.failing("/si/content/document/3d_package:abc/golf.glb", "503"):
        proc, summary = job(tmp_path / "out", "cache", world.rewrites(), world.http.url + "objaverse/")
    assert "objaverse-xl: 8 objects selected of 12 annotated" in proc.stdout  # printed before any download
    rows = tables.latest_by_uid(tables.read_table(str(tmp_path / "out" / "manifest"), tables.MANIFEST_SCHEMA))
    by_name = {r["file_identifier"].rsplit("/", 1)[-1]: r for r in rows.values()}
    # thingiverse (not asked for), kenney (by-nc), bob's fox (a duplicate of the Sketchfab fox) are not there
    assert set(by_name) == {
        "box.glb",
        "cube.gltf",
        "box.obj",
        "changed.glb",
        "red.ply",
        "model.glb",
        "golf.glb",
        "f0" * 16,
    }
    failed = {k: r["error"] for k, r in by_name.items() if r["status"] != "ok"}
    assert set(failed) == {"changed.glb", "model.glb"}, failed
    for name, row in by_name.items():
        annotated = world.row(name)
        assert row["uid"] == objaverse_xl.xl_uid(annotated["fileIdentifier"])
        assert (row["origin"], row["license"], row["file_type"]) == (
            annotated["source"],
            annotated["license"],
            annotated["fileType"],
        )
        if row["status"] == "ok":
            assert row["sha256"] == annotated["sha256"]
    assert summary["objaverse_xl"]["duplicates_dropped"] == 2 and summary["objaverse_xl"]["selected"] == 8
    # a repository's objects go to one worker (render.job.batch_size): each of the two that exist is fetched once;
    # six objects downloaded (four from those clones), three HTTP requests (the golf ball's 503 retried, the fox)
    assert summary["objaverse"] == {"cache": 0, "store": 0, "http": 6, "http_requests": 3, "clones": 2}
    samples = {s.meta["uid"]: s.meta for s in shards.iter_render_samples(shards.list_shards(str(tmp_path / "out")))}
    ply = samples[by_name["red.ply"]["uid"]]
    assert ply["default_material"]["name"] == "invs_default" and "no_material" in ply["flags"]
    assert (
        samples[by_name["box.glb"]["uid"]]["provenance"]["file_identifier"]
        == world.row("models/box.glb")["fileIdentifier"]
    )
    selection = pq.read_table(str(tmp_path / "out" / "selection.parquet"))
    assert selection.num_rows == 8

    seen = len(world.http.requests())
    dead = "http://127.0.0.1:9/"
    _, again = job(
        tmp_path / "again", "fresh-cache", world.rewrites(dead, str(tmp_path / "no-git")), dead + "objaverse/"
    )
    assert again["rendered"] == 6 and again["failed"] == 2, again["failures"]
    assert again["objaverse"] == {"cache": 0, "store": 6, "http": 0, "http_requests": 0, "clones": 0}
    assert len(world.http.requests()) == seen


def test_select_only_prints_and_writes_the_selection_and_the_planner_prices_it(world: World, tmp_path: Path) -> None:
    """`render/main.py --objects objaverse-xl --select-only` downloads no object and renders nothing; the planner
    takes the selection's size from the file it wrote."""
    import subprocess
    import sys

    from tests.helpers import REPO

    out = tmp_path / "out"
    command = [sys.executable, "render/main.py", "--objects", "objaverse-xl", "--out", str(out), "--select-only"]
    command += ["--xl-type", "glb", "--set", f"objaverse.cache={tmp_path / 'cache'}"]
    command += ["--set", f"objaverse.mirror={world.http.url}objaverse/"]
    command += ["--set", f"objaverse_xl.url_rewrites={json.dumps(world.rewrites())}"]
    seen = len(world.http.requests())
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "objaverse-xl: 6 objects selected of 13 annotated" in proc.stdout
    assert "by file type: glb 6" in proc.stdout
    fetched = world.http.requests()[seen:]
    assert fetched and all(p.startswith(("/hf/", "/objaverse/object-paths")) for p in fetched), fetched
    assert not (out / "manifest").exists() and not (tmp_path / "cache" / "github" / "repos").exists()
    plan = subprocess.run(
        [sys.executable, "-m", "infra.planner", "--selection", str(out / "selection.parquet"), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert json.loads(plan.stdout)["workload"]["objects"] == 6
