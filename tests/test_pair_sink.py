"""The preprocess datasink: one index part per published shard, failures kept, a retried write task idempotent."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa

from invs import shards, storage, tables
from preprocess.job import PAIRS_SCHEMA, PairShardSink


def object_row(uid: str, n_pairs: int, error: str = "") -> dict:
    keys = [shards.pair_key(uid, 0, i + 1) for i in range(n_pairs)]
    index = [
        {
            "key": k,
            "uid": uid,
            "split": "train",
            "src": 0,
            "tgt": i + 1,
            "visible_fraction": 0.5,
            "angle_deg": 30.0,
            "render_shard": "renders/shards/r-000000.tar",
        }
        for i, k in enumerate(keys)
    ]
    return {
        "render_shard": "renders/shards/r-000000.tar",
        "key": uid,
        "pair_keys": keys,
        "pair_names": [["meta.json"]] * n_pairs,
        "pair_payloads": [[json.dumps({"pair": k}).encode()] for k in keys],
        "index_rows": json.dumps(index),
        "law": json.dumps({"pairs": n_pairs, "skipped_views": 0}),
        "error": error,
    }


def test_shards_hold_objects_per_shard_and_a_retry_overwrites(tmp_path: Path) -> None:
    out = str(tmp_path / "pairs")
    block = pa.Table.from_pylist(
        [
            object_row("a", 2),
            object_row("b", 3),
            object_row("bad", 0, error="ShardFormatError: broken"),
            object_row("c", 1),
        ],
        schema=PAIRS_SCHEMA,
    )
    sink = PairShardSink(out, "run1", objects_per_shard=2)
    ctx = SimpleNamespace(task_idx=7)  # what a write task reads of its TaskContext
    first = sink.write([block], ctx)
    assert first["pairs"] == 6 and [f["uid"] for f in first["failures"]] == ["bad"] and len(first["law"]) == 3
    sink.write([block], ctx)  # the same task again (a Ray retry): same names, nothing duplicated

    uris = shards.list_shards(out)
    assert [u.rsplit("/", 1)[-1] for u in uris] == ["run1-w00007-000000.tar", "run1-w00007-000001.tar"]
    index = tables.read_table(storage.join(out, tables.INDEX_DIR), tables.INDEX_SCHEMA).to_pylist()
    assert sorted(r["key"] for r in index) == sorted(k for u in uris for k, _ in shards.iter_tar_samples(u))
    assert len(index) == 6 and {r["shard"] for r in index} == set(uris)
    assert {r["uid"] for r in index if r["shard"] == uris[0]} == {"a", "b"}
    failures = tables.read_table(storage.join(out, tables.FAILURES_DIR), tables.FAILURE_SCHEMA).to_pylist()
    assert [(f["uid"], f["error"]) for f in failures] == [("bad", "ShardFormatError: broken")]


def test_pair_maker_pool_grows_to_the_fleet_of_the_cluster_file(tmp_path: Path) -> None:
    import yaml

    from invs import fleet
    from invs.config import load_config
    from preprocess.job import pair_maker_pool

    cluster = tmp_path / "cluster.yaml"
    nodes = {"head": {"resources": {"CPU": 2}}, "cpu": {"resources": {"CPU": 4, "pairs": 1}, "max_workers": 3}}
    cluster.write_text(yaml.safe_dump({"head_node_type": "head", "available_node_types": nodes}))
    config = load_config("local")
    bundle = fleet.worker_bundle(config.preprocess)
    assert pair_maker_pool(config, bundle, alive=3) == 2  # the alive CPUs, one left for the read and write tasks
    config.ray.cluster_file = str(cluster)
    assert pair_maker_pool(config, bundle, alive=3) == (2, 2 + 3 * 4)  # autoscaling up to the whole fleet
    config.preprocess.node_resource = "pairs"
    pinned = fleet.worker_bundle(config.preprocess)
    assert pair_maker_pool(config, pinned, alive=0) == (1, 12)  # no alive node offers 'pairs' yet
    config.preprocess.workers = 5
    assert pair_maker_pool(config, pinned, alive=0) == 5
