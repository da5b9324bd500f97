"""Parquet tables beside the shards: the render manifest (``OUT/manifest/``) and the pair index (``OUT/index/``).

Each table is a directory of part files read as one pyarrow dataset. Writers only ever *add* a part file
(``part-<utc time>-<random>.parquet``, written atomically), so concurrent workers and re-runs never clobber
each other; a reader takes the union, and for the manifest the latest row per ``uid`` wins.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from invs import storage
from invs.errors import InvsError, ShardFormatError

MANIFEST_DIR = "manifest"
INDEX_DIR = "index"
STATUSES = ("ok", "failed", "skipped")

MANIFEST_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("key", pa.string()),
        ("source", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("attempts", pa.int32()),
        ("shard", pa.string()),
        ("seconds", pa.float64()),
        ("num_views", pa.int32()),
        ("sha256", pa.string()),
        ("finished_at", pa.timestamp("ms", tz="UTC")),
        # Quality flags of the object (invs.quality) and its provenance: model file size in bytes, triangles,
        # materials and textures as Blender imported them, the source's licence and annotations (JSON) if it has any.
        ("flags", pa.list_(pa.string())),
        ("file_bytes", pa.int64()),
        ("triangles", pa.int64()),
        ("materials", pa.int32()),
        ("textures", pa.int32()),
        ("license", pa.string()),
        ("annotations", pa.string()),
        # Where the object comes from: the source that listed it (objaverse, github, thingiverse, smithsonian,
        # sketchfab, local, s3, ...), its URL there (Objaverse-XL's fileIdentifier) and its file type (extension).
        ("origin", pa.string()),
        ("file_identifier", pa.string()),
        ("file_type", pa.string()),
    ]
)

INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("uid", pa.string()),
        ("shard", pa.string()),
        ("split", pa.string()),
        ("src", pa.int32()),
        ("tgt", pa.int32()),
        ("visible_fraction", pa.float32()),
        ("angle_deg", pa.float32()),
        ("render_shard", pa.string()),
    ]
)

#: Objects (or whole render shards, ``uid`` null) a stage could not use, with the reason.
FAILURES_DIR = "failures"
FAILURE_SCHEMA = pa.schema(
    [
        ("render_shard", pa.string()),
        ("uid", pa.string()),
        ("error", pa.string()),
        ("finished_at", pa.timestamp("ms", tz="UTC")),
    ]
)


def _conform(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    names = set(schema.names)
    for i, row in enumerate(rows):
        unknown = set(row) - names
        if unknown:
            raise ShardFormatError(f"row {i} has columns not in the schema: {', '.join(sorted(unknown))}")
    return pa.Table.from_pylist([{n: row.get(n) for n in schema.names} for row in rows], schema=schema)


def utc_stamp() -> str:
    """The current UTC time as ``YYYYmmddTHHMMSS`` (sorts as it happened)."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def new_job_id() -> str:
    """``{utc_stamp}-{6 hex}``: names one stage job's shards, unique across re-runs and concurrent jobs."""
    return f"{utc_stamp()}-{uuid.uuid4().hex[:6]}"


def csv_text(rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> str:
    """``rows`` as CSV text with a header of ``fields`` (missing values empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def append_rows(table_uri: str, rows: Iterable[dict[str, Any]], schema: pa.Schema) -> str | None:
    """Write ``rows`` as a new part file under ``table_uri``; returns its URI (None when there are no rows)."""
    return write_part(table_uri, f"{utc_stamp()}-{uuid.uuid4().hex[:12]}", rows, schema)


def write_part(table_uri: str, name: str, rows: Iterable[dict[str, Any]], schema: pa.Schema) -> str | None:
    """Write ``rows`` as ``table_uri/part-{name}.parquet`` (replacing a part of that name, so a retried writer
    that names its part after what it wrote never duplicates rows); returns its URI (None when there are no rows)."""
    rows = list(rows)
    if not rows:
        return None
    uri = storage.join(table_uri, f"part-{name}.parquet")
    write_parquet(uri, _conform(rows, schema))
    return uri


def write_parquet(uri: str, table: pa.Table) -> None:
    """Write ``table`` as one zstd-compressed parquet file at ``uri`` (atomically, through :mod:`invs.storage`)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    storage.write_bytes(uri, buf.getvalue())


def read_table(table_uri: str, schema: pa.Schema) -> pa.Table:
    """All part files under ``table_uri`` as one table (empty with ``schema`` if there are none)."""
    parts = storage.list_files(table_uri, suffix=".parquet")
    if not parts:
        return schema.empty_table()
    fs, _ = storage.arrow_filesystem(table_uri)
    dataset = pads.dataset([storage.arrow_path(p) for p in parts], schema=schema, format="parquet", filesystem=fs)
    return dataset.to_table()


def manifest_row(uid: str, status: str, **fields: Any) -> dict[str, Any]:
    """A manifest row with ``status`` checked and ``finished_at`` stamped now (UTC)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    import datetime as dt

    return {"uid": uid, "status": status, "finished_at": dt.datetime.now(dt.UTC), **fields}


def latest_by_uid(manifest: pa.Table) -> dict[str, dict[str, Any]]:
    """The latest row per uid (by ``finished_at``, then file order), plus ``total_attempts`` so far.

    ``attempts`` in a row is that attempt's number (1 for the first try of an object, 2 for its retry, ...), so
    the total is the largest number recorded.
    """
    out: dict[str, dict[str, Any]] = {}
    attempts: dict[str, int] = {}
    rows = sorted(manifest.to_pylist(), key=lambda r: (r["finished_at"] is None, r["finished_at"]))
    for row in rows:
        uid = row["uid"]
        attempts[uid] = max(attempts.get(uid, 0), row.get("attempts") or 1)
        out[uid] = row
    for uid, row in out.items():
        row["total_attempts"] = attempts[uid]
    return out


def split_for_uid(uid: str, val_fraction: float, salt: str = "invs-split-v1") -> str:
    """``train`` or ``val``, decided by a hash of the uid alone: one object never lands in both splits."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1], got {val_fraction}")
    h = int.from_bytes(hashlib.sha256(f"{salt}:{uid}".encode()).digest()[:8], "big") / 2.0**64
    return "val" if h < val_fraction else "train"


def rendered_shards(renders: str) -> list[str]:
    """The render shards under ``renders`` (the render stage's ``--out``) that hold objects its manifest marks
    ``ok``; InvsError when there are none."""
    from invs.shards import index_shard

    manifest = read_table(storage.join(renders, MANIFEST_DIR), MANIFEST_SCHEMA)
    rows = latest_by_uid(manifest).values()
    found = sorted({index_shard(renders, r["shard"]) for r in rows if r["status"] == "ok" and r["shard"]})
    if not found:
        raise InvsError(f"no rendered objects under {renders}: --renders must be the --out of render/main.py")
    return found
