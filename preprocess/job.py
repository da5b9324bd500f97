"""The preprocess job: a Ray Data pipeline from render shards to pair shards plus the parquet index.

    render shards ──read (tasks)──▶ objects ──pairs (actor pool: depth, splat, masks)──▶ ──write (tasks)──▶ shards
                                                                                                       + index rows

Only render shards that the render manifest marks ``ok`` are read. Each object's pairs go into one pair shard
together, and their index rows are appended by the driver after that shard is published, so an object is either
wholly in the index or not at all. Resume: a re-run skips objects already in the index or recorded as failed,
and first deletes *orphan* pair shards (published by a run that died before writing their index rows).
Bad input (a corrupt render shard, a sample missing members, no usable view pair) becomes a row in
``OUT/failures/*.parquet`` with the reason; the job carries on.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
import uuid
from collections import defaultdict
from typing import Any

from invs import shards, storage, tables
from invs.config import Config, save_resolved
from invs.errors import InvsError, ShardFormatError
from preprocess.object_pairs import LAW_KEYS

SUMMARY_NAME = "summary.json"


def _failure(render_shard: str, uid: str | None, error: str) -> dict[str, Any]:
    import datetime as dt

    return {"render_shard": render_shard, "uid": uid, "error": error[:2000], "finished_at": dt.datetime.now(dt.UTC)}


def read_objects(item: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per object of a render shard still to do: its tar members, or the reason it cannot be read."""
    uri, skip = item["render_shard"], set(item["skip"])
    rows: list[dict[str, Any]] = []
    try:
        for key, members in shards.iter_tar_samples(uri):
            rows.append({"render_shard": uri, "key": key, "blob": pickle.dumps(members), "error": ""})
    except ShardFormatError as exc:
        rows.append({"render_shard": uri, "key": "", "blob": b"", "error": str(exc)})
    return [r for r in rows if r["key"] not in skip]


class PairMaker:
    """Ray Data actor: holds the depth model (if any) and turns object rows into encoded pairs."""

    def __init__(self, config: Config) -> None:
        import torch

        self.config = config
        p = config.preprocess
        self.device = "cuda" if torch.cuda.is_available() and p.device == "cuda" else "cpu"
        self.estimator = None
        if p.depth == "zoedepth":
            from preprocess.depth import DepthEstimator

            dtype = torch.bfloat16 if self.device == "cuda" else None
            self.estimator = DepthEstimator.from_pretrained(
                p.depth_model, device=self.device, dtype=dtype, flip_average=p.flip_average
            )
        self.vae = None
        if p.latents:
            from invs.latents import load_vae

            self.vae = load_vae(p.latents).to(self.device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        from preprocess.object_pairs import object_pairs

        out: dict[str, list[Any]] = {"render_shard": [], "key": [], "blob": [], "error": []}
        for shard, key, blob, error in zip(
            batch["render_shard"], batch["key"], batch["blob"], batch["error"], strict=True
        ):
            result, reason = b"", str(error)
            if not reason:
                try:
                    sample = shards.decode_render_sample(str(key), pickle.loads(blob), where=str(shard))
                    result = pickle.dumps(
                        object_pairs(sample, self.config, str(shard), self.estimator, self.device, self.vae)
                    )
                except (ShardFormatError, KeyError, ValueError) as exc:
                    reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ShardFormatError) else str(exc)
            for name, value in (("render_shard", str(shard)), ("key", str(key)), ("blob", result), ("error", reason)):
                out[name].append(value)
        return out


def write_shard(batch: dict[str, Any], out: str, run_id: str) -> dict[str, list[Any]]:
    """Ray Data task: write the batch's objects into one pair shard; return its index rows and failures."""
    index: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    law: list[dict[str, float]] = []
    writer = shards.ShardWriter(storage.join(out, "shards"), f"{run_id}-{uuid.uuid4().hex[:8]}", max_samples=1 << 30)
    for shard, key, blob, error in zip(batch["render_shard"], batch["key"], batch["blob"], batch["error"], strict=True):
        if error:
            failures.append(_failure(str(shard), str(key) or None, str(error)))
            continue
        result = pickle.loads(blob)
        for pair_key, members in result.pairs:
            writer.write(pair_key, members)
        index += result.index_rows
        law.append(result.law | {"pairs": len(result.pairs), "skipped_views": result.skipped_views})
    published = writer.close()
    shard_uri = published[0].uri if published else None
    for row in index:
        row["shard"] = shard_uri
    return {"rows": [pickle.dumps({"index": index, "failures": failures, "law": law})]}


def _aggregate_law(entries: list[dict[str, float]]) -> dict[str, float]:
    """Pair-weighted means of the per-object law figures."""
    total = sum(e["pairs"] for e in entries)
    if not total:
        return {}
    return {k: round(sum(e[k] * e["pairs"] for e in entries) / total, 5) for k in LAW_KEYS}


def run(config: Config) -> dict[str, Any]:
    import ray

    from invs.ray_session import cpus_on_nodes_with, init_ray, node_resources

    started = time.monotonic()
    p = config.preprocess
    out, renders = storage.normalize(p.out), storage.normalize(p.renders)
    if p.depth == "zoedepth":
        from preprocess.depth import check_available

        check_available(p.depth_model)  # before any worker starts
    if p.latents and p.latents != "tiny":
        from invs.models import check_model_available

        check_model_available(p.latents, parts=("vae",))
    manifest = tables.latest_by_uid(
        tables.read_table(storage.join(renders, tables.MANIFEST_DIR), tables.MANIFEST_SCHEMA)
    )
    by_shard: dict[str, list[str]] = defaultdict(list)
    for row in manifest.values():
        if row["status"] == "ok" and row["shard"]:
            by_shard[row["shard"]].append(row["key"])
    if not by_shard:
        raise InvsError(f"preprocess.renders: no rendered objects under {renders} (run render/main.py first)")
    index = tables.read_table(storage.join(out, tables.INDEX_DIR), tables.INDEX_SCHEMA)
    failed = tables.read_table(storage.join(out, tables.FAILURES_DIR), tables.FAILURE_SCHEMA)
    done_keys = {shards.safe_key(u) for u in index.column("uid").to_pylist()}
    done_keys |= {shards.safe_key(u) for u in failed.column("uid").to_pylist() if u}
    referenced = set(index.column("shard").to_pylist())
    orphans = shards.remove_orphan_shards(out, referenced)
    todo = {s: keys for s, keys in by_shard.items() if set(keys) - done_keys}
    total_objects = sum(len(k) for k in by_shard.values())
    save_resolved(config, out)
    print(
        f"preprocess: {total_objects} objects in {len(by_shard)} render shards; "
        f"{sum(len(set(k) - done_keys) for k in todo.values())} to do; {len(orphans)} orphan shard(s) removed",
        flush=True,
    )
    written, new_failures, law = 0, [], []
    if todo:
        init_ray(config)
        run_id = tables.new_run_id()
        items = [{"render_shard": s, "skip": sorted(set(keys) & done_keys)} for s, keys in sorted(todo.items())]
        cpus = cpus_on_nodes_with(p.node_resource) or ray.cluster_resources().get("CPU", 1)
        actors = p.workers or max(1, int(cpus) - 1)
        gpu = 1 if p.device == "cuda" else 0
        import ray.data

        # Our own progress lines (below) replace Ray Data's per-operator log spam.
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ds = ray.data.from_items(items).flat_map(read_objects)
        ds = ds.map_batches(
            PairMaker,
            fn_constructor_args=(config,),
            batch_size=1,
            concurrency=actors,
            num_gpus=gpu,
            resources=node_resources(p.node_resource) or None,
            batch_format="numpy",
        )
        ds = ds.map_batches(
            write_shard, fn_kwargs={"out": out, "run_id": run_id}, batch_size=p.objects_per_shard, batch_format="numpy"
        )
        for row in ds.iter_rows():
            result = pickle.loads(row["rows"])
            tables.append_rows(storage.join(out, tables.INDEX_DIR), result["index"], tables.INDEX_SCHEMA)
            tables.append_rows(storage.join(out, tables.FAILURES_DIR), result["failures"], tables.FAILURE_SCHEMA)
            written += len(result["index"])
            new_failures += result["failures"]
            law += result["law"]
            print(f"preprocess: {written} pairs written, {len(new_failures)} failures", flush=True)
    wall = time.monotonic() - started
    summary = {
        "out": out,
        "renders": renders,
        "objects": total_objects,
        "pairs_written": written,
        "objects_done": len(law),
        "failures": [{"render_shard": f["render_shard"], "uid": f["uid"], "error": f["error"]} for f in new_failures],
        "orphan_shards_removed": len(orphans),
        "depth": p.depth,
        "resolution": p.resolution,
        "empty_views_skipped": sum(e["skipped_views"] for e in law),
        "law": _aggregate_law(law),
        "wall_s": round(wall, 2),
        "pairs_per_s": round(written / wall, 3) if written else None,
    }
    storage.write_text(storage.join(out, SUMMARY_NAME), json.dumps(summary, indent=2))
    return summary
