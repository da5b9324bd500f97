"""Parquet manifest and index: append-only part files read back as one dataset, locally and on S3."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from invs import storage, tables
from invs.errors import ShardFormatError


def _rows(status: str, uids: list[str], attempts: int = 1) -> list[dict]:
    return [
        tables.manifest_row(
            u,
            status,
            key=u,
            attempts=attempts,
            error=None if status == "ok" else "boom",
            shard=f"s-{u}.tar" if status == "ok" else None,
            seconds=1.5,
            num_views=12,
        )
        for u in uids
    ]


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def out_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    return f"{request.getfixturevalue('s3_bucket')}/out"


def test_manifest_appends_and_reads_back_as_one_dataset(out_uri: str) -> None:
    manifest = storage.join(out_uri, tables.MANIFEST_DIR)
    assert tables.read_table(manifest, tables.MANIFEST_SCHEMA).num_rows == 0
    assert tables.append_rows(manifest, [], tables.MANIFEST_SCHEMA) is None
    tables.append_rows(manifest, _rows("failed", ["a", "b"]), tables.MANIFEST_SCHEMA)
    tables.append_rows(manifest, _rows("ok", ["a"], attempts=2) + _rows("ok", ["c"]), tables.MANIFEST_SCHEMA)
    t = tables.read_table(manifest, tables.MANIFEST_SCHEMA)
    assert t.num_rows == 4 and t.schema.equals(tables.MANIFEST_SCHEMA)
    latest = tables.latest_by_uid(t)
    assert {u: r["status"] for u, r in latest.items()} == {"a": "ok", "b": "failed", "c": "ok"}
    assert latest["a"]["total_attempts"] == 2
    assert len(storage.list_files(manifest, ".parquet")) == 2


def test_other_readers_see_one_pyarrow_dataset(tmp_path: Path) -> None:
    manifest = str(tmp_path / "manifest")
    for uid in ("x", "y", "z"):
        tables.append_rows(manifest, _rows("ok", [uid]), tables.MANIFEST_SCHEMA)
    assert sorted(pads.dataset(manifest, format="parquet").to_table().column("uid").to_pylist()) == ["x", "y", "z"]


def test_unknown_columns_and_statuses_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ShardFormatError, match="not in the schema: colour"):
        tables.append_rows(str(tmp_path), [{"uid": "a", "colour": "red"}], tables.MANIFEST_SCHEMA)
    with pytest.raises(ValueError, match="status"):
        tables.manifest_row("a", "done")


def test_latest_row_wins_by_time() -> None:
    import pyarrow as pa

    early = tables.manifest_row("a", "ok")
    late = tables.manifest_row("a", "failed")
    early["finished_at"] = late["finished_at"] - dt.timedelta(seconds=5)
    t = pa.Table.from_pylist(
        [{n: r.get(n) for n in tables.MANIFEST_SCHEMA.names} for r in (late, early)], schema=tables.MANIFEST_SCHEMA
    )
    assert tables.latest_by_uid(t)["a"]["status"] == "failed"


def test_split_is_a_deterministic_function_of_the_uid() -> None:
    uids = [f"object-{i}" for i in range(5000)]
    splits = [tables.split_for_uid(u, 0.1) for u in uids]
    assert splits == [tables.split_for_uid(u, 0.1) for u in uids]
    assert 0.08 < splits.count("val") / len(uids) < 0.12
    assert {tables.split_for_uid(u, 0.0) for u in uids} == {"train"}
    assert {tables.split_for_uid(u, 1.0) for u in uids} == {"val"}
    with pytest.raises(ValueError):
        tables.split_for_uid("a", 1.5)
