"""Objaverse-XL objects for the render stage: the selection, made once in the job's driver.

Objaverse-XL (``objaverse.xl`` in the ``objaverse`` package) annotates ~10M objects from GitHub, Thingiverse, the
Smithsonian and Sketchfab, one row per file: ``fileIdentifier`` (its URL at the source), ``source``, ``license``,
``fileType`` and ``sha256``. The annotation files are the package's parquet files, kept where the package keeps
them (its ``download_dir`` layout under the ``objaverse.cache`` directory: ``github/github.parquet``,
``sketchfab/alignment.parquet``, ...), fetched once per run by the driver through :func:`render.objaverse_source.
fetch_file` (retries, atomic writes, the store) and read with column projection and the filters applied batch by
batch (the bulky ``metadata`` column is never loaded, rows that do not match are never held). Only the files of the
selected sources are fetched.

:func:`select` applies the ``objaverse_xl`` settings in this order: sources (or the alignment subset), file types,
licences, the ids file; then keeps one object per ``sha256`` (the first by source rank, :data:`SOURCE_RANK`, then
``fileIdentifier``), then draws ``render.num_objects`` of them with ``render.seed``. Each selected row becomes an
:class:`~render.object_ref.ObjectRef` carrying everything a worker needs to fetch it (:mod:`render.xl_fetch`), so
workers never read the annotations. The uid of an XL object is the one Objaverse-XL's own rendering script uses:
``uuid5(NAMESPACE_DNS, fileIdentifier)``.

The selection is printed with its counts and written as ``OUT/selection.parquet`` (uid, fileIdentifier, source,
fileType, license, sha256; the settings and counts in the file's metadata); ``objaverse_xl.ids_file`` takes that file
back, so a selection can be rendered again or elsewhere exactly.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from invs import storage, tables
from invs.errors import InvsError
from render import formats, objaverse_source
from render.object_ref import ObjectRef

if TYPE_CHECKING:
    from invs.config import Config, ObjaverseXLConfig

#: Where the ``objaverse`` package downloads Objaverse-XL's annotation files from.
XL_BASE_URL: Final = "https://huggingface.co/datasets/allenai/objaverse-xl/resolve/main/"
SOURCES: Final = ("github", "thingiverse", "smithsonian", "sketchfab")
#: Which copy of a file seen at several sources is kept: curated sources first (lower is kept).
SOURCE_RANK: Final = {"sketchfab": 0, "smithsonian": 1, "github": 2, "thingiverse": 3}
#: The columns read from the annotation files (their ``metadata`` column is not read).
COLUMNS: Final = ("fileIdentifier", "source", "license", "fileType", "sha256")
#: The annotation files of each source, and of its alignment subset (Thingiverse and the Smithsonian have none).
ANNOTATIONS: Final = {s: f"{s}/{s}.parquet" for s in SOURCES}
ALIGNMENT: Final = {"github": "github/alignment.parquet", "sketchfab": "sketchfab/alignment.parquet"}
SELECTION_NAME: Final = "selection.parquet"
SELECTION_SCHEMA: Final = pa.schema(
    [(name, pa.string()) for name in ("uid", "fileIdentifier", "source", "fileType", "license", "sha256")]
)


def xl_uid(file_identifier: str) -> str:
    """The uid of an Objaverse-XL object: ``uuid5(NAMESPACE_DNS, fileIdentifier)`` (``objaverse.utils``'s rule)."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, file_identifier))


def parse_rewrites(rewrites: list[str]) -> list[tuple[str, str]]:
    """``["FROM=TO", ...]`` -> ``[(FROM, TO), ...]``; InvsError for an entry without ``=`` or with an empty side."""
    pairs = []
    for entry in rewrites:
        old, sep, new = entry.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise InvsError(f"objaverse_xl.url_rewrites: {entry!r} is not FROM=TO (two URL prefixes)")
        pairs.append((old.strip(), new.strip()))
    return pairs


def rewrite_url(url: str, rewrites: list[tuple[str, str]]) -> str:
    """``url`` with the first matching ``FROM`` prefix replaced by its ``TO`` (unchanged if none matches)."""
    for old, new in rewrites:
        if url.startswith(old):
            return new + url[len(old) :]
    return url


def cache_base(cache_dir: str | None) -> Path:
    """The package's ``download_dir`` in our cache: the parent of the Objaverse 1.0 cache (``hf-objaverse-v1``)."""
    return objaverse_source.cache_root(cache_dir).parent


# ------------------------------------------------------------------------------------------------ annotations


def _parquet_ok(path: Path) -> str | None:
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        return f"not a parquet file ({str(exc).splitlines()[0][:200]})"
    missing = [c for c in COLUMNS if c not in schema.names]
    return f"annotation file without column(s) {', '.join(missing)}" if missing else None


def annotation_table(rel: str, config: Config, keep: pc.Expression) -> tuple[pa.Table, int, str]:
    """The :data:`COLUMNS` of the rows of the annotation file ``rel`` (fetched into the cache first) that ``keep``
    holds for, filtered batch by batch as the file is read; the file's row count; and whence the file came."""
    source = config.objaverse
    rewrites = parse_rewrites(config.objaverse_xl.url_rewrites)
    try:
        got = objaverse_source.fetch_file(
            rel,
            cache_base(source.cache),
            rewrite_url(XL_BASE_URL + rel, rewrites),
            _parquet_ok,
            store=source.store,
            retry=objaverse_source.RetryPolicy.from_config(source),
            what="Objaverse-XL annotation file",
        )
    except objaverse_source.DownloadError as exc:
        raise InvsError(f"cannot load the Objaverse-XL annotations {rel}: {exc}") from None
    rows = pq.ParquetFile(got.path).metadata.num_rows
    table = ds.dataset(got.path, format="parquet").to_table(columns=list(COLUMNS), filter=keep)
    return table.cast(pa.schema([(c, pa.string()) for c in COLUMNS])), rows, got.origin


def _lower_in(name: str, values: list[str]) -> pc.Expression:
    """``name``'s value, lower-cased, is one of ``values`` (lower-cased); a null is not."""
    wanted = pa.array(sorted({v.strip().lower() for v in values}), pa.string())
    return pc.utf8_lower(pc.field(name).cast(pa.string())).isin(wanted)


# ------------------------------------------------------------------------------------------------ selection


@dataclass
class Selection:
    """What :func:`select` chose: the refs, and the counts printed and written in the summary."""

    refs: list[ObjectRef]
    settings: dict[str, Any]
    annotated: int = 0  # rows in the annotation files read
    matched: int = 0  # rows that pass the filters
    unique: int = 0  # of those, left after deduplication by sha256 (before the sample)
    annotations_from: dict[str, str] = field(default_factory=dict)  # file -> cache | store | http

    def counts(self) -> dict[str, Any]:
        """The selection's figures (``summary.json``'s ``objaverse_xl``)."""
        return {
            "annotated": self.annotated,
            "matched": self.matched,
            "duplicates_dropped": self.matched - self.unique,
            "unique": self.unique,
            "selected": len(self.refs),
            "by_source": dict(sorted(Counter(r.source for r in self.refs).items())),
            "by_type": dict(sorted(Counter(r.file_type for r in self.refs).items())),
            "annotations_from": self.annotations_from,
        }

    def describe(self) -> str:
        """Lines saying what was selected, for the console before anything is downloaded."""
        c = self.counts()
        per = ", ".join(f"{k} {v}" for k, v in c["by_source"].items()) or "none"
        types = ", ".join(f"{k} {v}" for k, v in c["by_type"].items()) or "none"
        return (
            f"objaverse-xl: {c['selected']} objects selected of {c['annotated']} annotated: {c['matched']} match the "
            f"filters, {c['duplicates_dropped']} duplicates (same sha256) dropped, {c['unique']} unique\n"
            f"objaverse-xl: by source: {per}\nobjaverse-xl: by file type: {types}"
        )

    def write(self, out: str) -> str:
        """Write ``OUT/selection.parquet`` (settings and counts in its metadata); returns its URI."""
        rows = [
            {
                "uid": r.uid,
                "fileIdentifier": r.file_identifier,
                "source": r.source,
                "fileType": r.file_type,
                "license": r.license,
                "sha256": r.sha256,
            }
            for r in self.refs
        ]
        table = pa.Table.from_pylist(rows, schema=SELECTION_SCHEMA).replace_schema_metadata(
            {"invs": json.dumps({"settings": self.settings, "counts": self.counts()}, sort_keys=True)}
        )
        uri = storage.join(out, SELECTION_NAME)
        tables.write_parquet(uri, table)
        return uri


def _read_ids(uri: str) -> list[str]:
    """The entries of an ids file: a ``.parquet`` with a ``fileIdentifier`` column (a ``selection.parquet``), else
    text with one fileIdentifier, sha256 or uid per line (``#`` starts a comment)."""
    if not storage.exists(uri):
        raise InvsError(f"objaverse_xl.ids_file {uri} does not exist")
    if uri.endswith(".parquet"):
        try:
            parquet = pq.ParquetFile(pa.BufferReader(storage.read_bytes(uri)))
        except pa.ArrowException as exc:
            raise InvsError(f"objaverse_xl.ids_file {uri} is not a parquet file: {str(exc).splitlines()[0]}") from None
        if "fileIdentifier" not in parquet.schema_arrow.names:
            raise InvsError(f"objaverse_xl.ids_file {uri} has no fileIdentifier column (a selection.parquet has one)")
        return [v for v in parquet.read(columns=["fileIdentifier"]).column(0).to_pylist() if v]
    lines = (line.split("#", 1)[0].strip() for line in storage.read_text(uri).splitlines())
    return [line for line in lines if line]


def _ids_mask(table: pa.Table, ids: list[str]) -> pa.ChunkedArray:
    """Rows whose fileIdentifier, sha256 or uid (computed only when ``ids`` has uids) is in ``ids``."""
    by_url = {i for i in ids if "://" in i}
    by_sha = {i.lower() for i in ids if len(i) == 64 and all(c in "0123456789abcdefABCDEF" for c in i)}
    by_uid = {i.lower() for i in ids} - by_url - by_sha
    mask = pc.or_(
        pc.is_in(table["fileIdentifier"], pa.array(sorted(by_url), pa.string())),
        pc.is_in(table["sha256"], pa.array(sorted(by_sha), pa.string())),
    )
    if by_uid:
        uids = [xl_uid(f) if f else "" for f in table["fileIdentifier"].to_pylist()]
        mask = pc.or_(mask, pa.array([u in by_uid for u in uids]))
    return pc.fill_null(mask, False)


def _dedupe(table: pa.Table) -> pa.Table:
    """One row per sha256 (rows without one are all kept): the first by source rank, then fileIdentifier."""
    by_rank = pa.array(sorted(SOURCE_RANK, key=SOURCE_RANK.__getitem__), pa.string())
    rank = pc.fill_null(pc.index_in(table["source"], value_set=by_rank), len(SOURCE_RANK))
    table = table.append_column("_rank", rank).sort_by([("_rank", "ascending"), ("fileIdentifier", "ascending")])
    table = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    has_sha = table.filter(pc.is_valid(table["sha256"]))
    first = has_sha.group_by("sha256", use_threads=False).aggregate([("_row", "min")])["_row_min"]
    keep = pc.or_(pc.is_null(table["sha256"]), pc.is_in(table["_row"], first))
    return table.filter(keep).drop_columns(["_rank", "_row"])


def select(config: Config) -> Selection:
    """The Objaverse-XL objects ``config`` asks for (see the module docstring), in a deterministic order.

    Raises InvsError for bad settings, annotation files that cannot be fetched, or an empty selection.
    """
    from render.sources import objaverse_where

    xl: ObjaverseXLConfig = config.objaverse_xl
    parse_rewrites(xl.url_rewrites)  # bad entries stop the run before anything is fetched
    where = objaverse_where(config.objaverse)  # checks the store before anything is fetched
    sources = list(dict.fromkeys(xl.sources)) or list(SOURCES)
    files = (
        {s: ALIGNMENT[s] for s in sources if s in ALIGNMENT} if xl.alignment else {s: ANNOTATIONS[s] for s in sources}
    )
    if not files:
        raise InvsError(
            f"objaverse_xl: the alignment subset has no objects from {', '.join(sources)} (only github, sketchfab)"
        )
    types = [t.lower().lstrip(".") for t in xl.file_types] or list(formats.MODEL_TYPES)
    settings = {
        "sources": sources,
        "alignment": xl.alignment,
        "file_types": types,
        "licenses": list(xl.licenses),
        "ids_file": xl.ids_file,
        "dedupe": xl.dedupe,
        "num_objects": config.render.num_objects,
        "seed": config.render.seed,
    }
    keep = _lower_in("fileType", types)
    if xl.licenses:
        keep = keep & _lower_in("license", xl.licenses)
    tables, annotated, whence = [], 0, {}
    for source, rel in files.items():
        table, rows, whence[rel] = annotation_table(rel, config, keep & (pc.field("source") == source))
        tables.append(table)
        annotated += rows
    table = pa.concat_tables(tables)
    if xl.ids_file is not None:
        ids = _read_ids(storage.normalize(xl.ids_file))
        if not ids:
            raise InvsError(f"objaverse_xl.ids_file {xl.ids_file} lists nothing")
        table = table.filter(_ids_mask(table, ids))
    matched = table.num_rows
    table = _dedupe(table) if xl.dedupe else table.sort_by([("fileIdentifier", "ascending")])
    unique = table.num_rows
    if unique == 0:
        raise InvsError(f"objaverse_xl: no objects match {json.dumps(settings)}")
    n = config.render.num_objects
    if n is not None and n < unique:
        keep = sorted(random.Random(config.render.seed).sample(range(unique), n))
        table = table.take(pa.array(keep, pa.int64()))
    refs = _refs(table.to_pylist(), where)
    return Selection(refs, settings, annotated, matched, unique, whence)


def _refs(rows: list[dict[str, Any]], where: dict[str, Any]) -> list[ObjectRef]:
    """The refs of selected annotation rows; Sketchfab rows get their object path from the Objaverse 1.0 index
    (read once, from ``where``: :func:`render.sources.objaverse_where`)."""
    sketchfab = [r["fileIdentifier"].rstrip("/").rsplit("/", 1)[-1] for r in rows if r["source"] == "sketchfab"]
    paths = objaverse_source.object_paths(sketchfab, **where) if sketchfab else {}
    refs = []
    for r in rows:
        uid = xl_uid(r["fileIdentifier"])
        sketchfab_uid = r["fileIdentifier"].rstrip("/").rsplit("/", 1)[-1] if r["source"] == "sketchfab" else None
        refs.append(
            ObjectRef(
                uid=uid,
                uri=f"objaverse-xl:{uid}",
                source=r["source"],
                object_path=paths.get(sketchfab_uid) if sketchfab_uid else None,
                license=r["license"],
                file_identifier=r["fileIdentifier"],
                sha256=r["sha256"].lower() if r["sha256"] else None,
                file_type=(r["fileType"] or formats.file_type(r["fileIdentifier"])).lower(),
            )
        )
    return refs
