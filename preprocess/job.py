"""The preprocess job: Ray Data from render shards to pair shards plus the parquet index.

    render shards ──read (tasks)──▶ objects ──pairs (actor pool: depth, splat, masks)──▶ ──write (tasks)──▶ shards
                                                                                                       + index rows

Rows between the stages are plain Arrow columns (:data:`OBJECT_SCHEMA`, :data:`PAIRS_SCHEMA`). Only render
shards that the render manifest marks ``ok`` are read, less the objects whose quality flags
(:mod:`invs.quality`, the manifest's ``flags``) include one of ``preprocess.skip_flags``. Each object's pairs go
into one pair shard together, and the write task writes that shard's index rows right after publishing it
(:class:`PairShardSink`), so an object is either wholly in the index or not at all. Resume: a re-run skips objects
already in the index or recorded as failed, and first deletes *orphan* pair shards (published by a run that died
before writing their index rows).
Bad input (a corrupt render shard, a sample missing members, no usable view pair) becomes a row in
``OUT/failures/*.parquet`` with the reason; the job carries on.

Failures of the environment stop the job with one ``error:`` line instead: no node able to hold a pair maker
within ``preprocess.worker_wait_s`` (:func:`wait_for_a_pair_maker_node`, before the pool starts), S3 down past
the retries of ``storage.*`` (every task applies the config's storage settings in its own process), CUDA missing
where ``preprocess.device`` is ``gpu``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from ray.data import Datasink
from ray.data.datasource.datasink import WriteResult

if TYPE_CHECKING:
    from ray.data._internal.execution.interfaces import TaskContext

from invs import errors, shards, storage, tables
from invs.config import Config, apply_storage_settings, save_resolved
from invs.errors import InvsError, ShardFormatError, StorageError
from preprocess.object_pairs import LAW_KEYS

SUMMARY_NAME = "summary.json"

#: Rows between the stages: one per object, plain Arrow columns (members as parallel name/payload lists).
OBJECT_SCHEMA = pa.schema(
    [
        ("render_shard", pa.string()),
        ("key", pa.string()),
        ("names", pa.list_(pa.string())),
        ("payloads", pa.list_(pa.large_binary())),
        ("error", pa.string()),
    ]
)
#: One row per object after pairing: its pair samples, index rows (JSON) and law figures (JSON), or the error.
PAIRS_SCHEMA = pa.schema(
    [
        ("render_shard", pa.string()),
        ("key", pa.string()),
        ("pair_keys", pa.list_(pa.string())),
        ("pair_names", pa.list_(pa.list_(pa.string()))),
        ("pair_payloads", pa.list_(pa.list_(pa.large_binary()))),
        ("index_rows", pa.string()),
        ("law", pa.string()),
        ("error", pa.string()),
    ]
)


def _failure(render_shard: str, uid: str | None, error: str) -> dict[str, Any]:
    return {"render_shard": render_shard, "uid": uid, "error": error[:2000], "finished_at": dt.datetime.now(dt.UTC)}


def read_objects(batch: pa.Table, config: Config | None = None) -> pa.Table:
    """Ray Data task: one row per object still to do in each render shard, or one row with why it cannot be read.

    ``config``: its storage settings (endpoint, retries) are applied first, as this runs in a Ray worker process.
    """
    if config is not None:
        apply_storage_settings(config)
    rows: list[dict[str, Any]] = []
    for uri, keys in zip(batch["render_shard"].to_pylist(), batch["keys"].to_pylist(), strict=True):
        rows += _shard_objects(uri, set(keys))
    return pa.Table.from_pylist([{"error": ""} | r for r in rows], schema=OBJECT_SCHEMA)


def _shard_objects(uri: str, keys: set[str]) -> list[dict[str, Any]]:
    """The rows of one render shard's objects named in ``keys``; a corrupt or truncated shard is one error row.

    A connection that breaks while the shard streams (S3 down mid-read) is not a corrupt shard: the whole shard is
    read again under the storage retry policy (one ``warning:`` line per retry), then it is a :class:`StorageError`.
    """
    policy = storage.retry_policy()
    started = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            return [
                {"render_shard": uri, "key": key, "names": list(members), "payloads": list(members.values())}
                for key, members in shards.iter_tar_samples(uri)
                if key in keys
            ]
        except StorageError:
            raise  # opening the shard was retried already
        except ShardFormatError as exc:
            broken = exc.__cause__
            if broken is None or not storage.is_transient(broken):
                return [{"render_shard": uri, "key": "", "names": [], "payloads": [], "error": str(exc)}]
        except Exception as exc:  # a backend error while streaming (botocore, aiohttp): transient ones are retried
            if not storage.is_transient(exc):
                raise
            broken = exc
        endpoint = storage.s3_settings().endpoint_url or "AWS S3"
        error = f"cannot read {uri}: the connection to {endpoint} broke mid-read ({type(broken).__name__})"
        if attempt == policy.attempts:
            tries = f"after {attempt} tries over {time.monotonic() - started:.0f} s"
            raise StorageError(f"{error} ({tries})" if attempt > 1 else error) from broken
        wait = policy.wait_s(attempt)
        print(f"warning: {error}; try {attempt + 1} of {policy.attempts} in {wait:.1f} s", file=sys.stderr, flush=True)
        time.sleep(wait)
    raise AssertionError("unreachable")


def _no_cuda_here(torch: Any) -> str:
    """Why a pair maker asked for CUDA cannot run here (never fall back to the CPU silently: 10-100x slower)."""
    import os
    import socket

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
    return (
        f"preprocess.device is gpu but torch sees no CUDA device in the pair maker on {socket.gethostname()} "
        f"(CUDA_VISIBLE_DEVICES={visible}; torch {torch.__version__} built for CUDA {torch.version.cuda or 'none'}): "
        "fix the node's GPU driver or torch build, or set preprocess.device=cpu"
    )


class PairMaker:
    """Ray Data actor: holds the depth model (if any) and turns object rows into encoded pairs."""

    def __init__(self, config: Config) -> None:
        import torch

        apply_storage_settings(config)  # this process's S3 endpoint and retries (a Ray actor does not inherit them)
        self.config = config
        p = config.preprocess
        if p.device == "gpu" and not torch.cuda.is_available():
            raise InvsError(_no_cuda_here(torch))
        self.device = "cuda" if p.device == "gpu" else "cpu"
        self.estimator = None
        if p.depth == "zoedepth":
            from invs.depth import DepthEstimator

            dtype = torch.bfloat16 if self.device == "cuda" else None
            self.estimator = DepthEstimator.from_pretrained(
                p.depth_model, device=self.device, dtype=dtype, flip_average=p.flip_average
            )
        self.vae, self.vae_id = None, None
        if p.latents:
            from invs.latents import load_vae, vae_fingerprint

            self.vae = load_vae(p.latents)
            self.vae_id = vae_fingerprint(self.vae)
            self.vae.to(self.device)

    def pairs_row(self, obj: dict[str, Any]) -> dict[str, Any]:
        """One object's row of :data:`PAIRS_SCHEMA`; bad input becomes ``error``, the job carries on."""
        from preprocess.object_pairs import object_pairs

        shard, key = obj["render_shard"], obj["key"]
        row: dict[str, Any] = {"render_shard": shard, "key": key, "error": obj["error"]}
        if row["error"]:
            return row
        try:
            members = dict(zip(obj["names"], obj["payloads"], strict=True))
            sample = shards.decode_render_sample(key, members, where=shard)
            result = object_pairs(sample, self.config, shard, self.estimator, self.device, self.vae, vae_id=self.vae_id)
        except ShardFormatError as exc:
            return row | {"error": str(exc)}
        except (KeyError, ValueError) as exc:
            return row | {"error": f"{type(exc).__name__}: {exc}"}
        law = result.law | {"pairs": len(result.pairs), "skipped_views": result.skipped_views}
        return row | {
            "pair_keys": [k for k, _ in result.pairs],
            "pair_names": [list(m) for _, m in result.pairs],
            "pair_payloads": [list(m.values()) for _, m in result.pairs],
            "index_rows": json.dumps(result.index_rows, default=float),
            "law": json.dumps(law, default=float),
        }

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self.pairs_row(obj) for obj in batch.to_pylist()], schema=PAIRS_SCHEMA)


class PairShardSink(Datasink[dict[str, Any]]):
    """Ray Data datasink: each write task publishes pair shards of ``objects_per_shard`` objects.

    Right after a shard is published, the task writes that shard's index rows as one part file named after the
    shard, so a job that dies after hours keeps every object it finished, and a retried task (same task index,
    same shard names) overwrites rather than duplicates. ``on_write_complete`` (on the driver) gathers the
    tasks' counts and law figures into :attr:`totals`. ``config``: each write task applies its storage settings
    (endpoint, retries) first, as it runs in a Ray worker process.
    """

    def __init__(self, out: str, job_id: str, objects_per_shard: int, config: Config | None = None) -> None:
        self.out, self.job_id, self.objects_per_shard, self.config = out, job_id, objects_per_shard, config
        self.totals: dict[str, Any] = {"pairs": 0, "failures": [], "law": []}

    @property
    def min_rows_per_write(self) -> int:
        return self.objects_per_shard

    def write(self, blocks: Iterable[pa.Table], ctx: TaskContext) -> dict[str, Any]:
        if self.config is not None:
            apply_storage_settings(self.config)
        prefix = f"{self.job_id}-w{ctx.task_idx:05d}"
        writer = shards.ShardWriter(storage.join(self.out, "shards"), prefix, max_samples=1 << 30)
        group: list[dict[str, Any]] = []
        pairs, failures, law = 0, [], []

        def publish() -> None:
            nonlocal pairs
            for obj in group:
                for key, names, payloads in zip(obj["pair_keys"], obj["pair_names"], obj["pair_payloads"], strict=True):
                    writer.write(key, dict(zip(names, payloads, strict=True)))
            shard = writer.flush()
            if shard is not None:
                rows = [r | {"shard": shard.uri} for obj in group for r in json.loads(obj["index_rows"])]
                stem = shard.uri.rsplit("/", 1)[-1].removesuffix(".tar")
                tables.write_part(storage.join(self.out, tables.INDEX_DIR), stem, rows, tables.INDEX_SCHEMA)
                pairs += len(rows)
                print(f"preprocess: {shard.uri}: {len(group)} objects, {len(rows)} pairs", flush=True)
            group.clear()

        for block in blocks:
            for obj in block.to_pylist():
                if obj["error"]:
                    failures.append(_failure(obj["render_shard"], obj["key"] or None, obj["error"]))
                    continue
                law.append(json.loads(obj["law"]))
                group.append(obj)
                if len(group) >= self.objects_per_shard:
                    publish()
        publish()
        tables.write_part(storage.join(self.out, tables.FAILURES_DIR), prefix, failures, tables.FAILURE_SCHEMA)
        return {"pairs": pairs, "failures": failures, "law": law}

    def on_write_complete(self, write_result: WriteResult[dict[str, Any]]) -> None:
        for r in write_result.write_returns:
            self.totals["pairs"] += r["pairs"]
            self.totals["failures"] += r["failures"]
            self.totals["law"] += r["law"]


def _aggregate_law(entries: list[dict[str, float]]) -> dict[str, float]:
    """Pair-weighted means of the per-object law figures."""
    total = sum(e["pairs"] for e in entries)
    if not total:
        return {}
    return {k: round(sum(e[k] * e["pairs"] for e in entries) / total, 5) for k in LAW_KEYS}


def pair_maker_pool(config: Config, bundle: dict[str, float], alive: int) -> int | tuple[int, int]:
    """Ray Data ``concurrency`` of the pair makers: ``preprocess.workers`` if set; else what the alive nodes hold
    (leaving one CPU for the read and write tasks on a CPU-only cluster), growing as an autoscaling pool up to the
    whole fleet of ``ray.cluster_file`` when that holds more. ``alive``: the bundles the alive nodes hold."""
    from invs import fleet

    if config.preprocess.workers:
        return config.preprocess.workers
    now = max(1, alive - 1 if "GPU" not in bundle else alive)
    cluster = fleet.load_fleet(config.ray.cluster_file) if config.ray.cluster_file else None
    most = fleet.fleet_workers(cluster, bundle) if cluster else 0
    return (min(now, most), most) if most > now else now


def wait_for_a_pair_maker_node(bundle: dict[str, float], wait_s: float, objects: int) -> None:
    """Return once a node can hold one pair maker (``bundle``); a one-line :class:`InvsError` after ``wait_s``.

    Ray Data's actor pool would wait for ever for a bundle no node offers (``preprocess.device: gpu`` and no GPU
    node, a ``preprocess.node_resource`` no node advertises). A placement group of that one bundle is the same
    demand (an autoscaler adds a node for it); it is removed again before the pool starts. ``objects``: how many
    are left to do, for the error line.
    """
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from invs import fleet

    started = time.monotonic()
    group = placement_group([bundle])
    try:
        placed = group.ready()
        ready, _ = ray.wait([placed], timeout=min(wait_s, 2.0))
        if not ready:
            print(
                f"preprocess: waiting up to {wait_s:g} s for a node that can hold a pair maker "
                f"({fleet.describe(bundle)}; an autoscaler adds one if the cluster has such a node type)",
                flush=True,
            )
            ready, _ = ray.wait([placed], timeout=max(0.0, started + wait_s - time.monotonic()))
    finally:
        remove_placement_group(group)
    if not ready:
        raise InvsError(
            f"preprocess: no node could hold a pair maker ({fleet.describe(bundle)}) for {wait_s:g} s: "
            f"{_why_no_node_holds(bundle)}; {objects} objects not preprocessed; re-run with the same --out when one is"
        )


def _why_no_node_holds(bundle: dict[str, float]) -> str:
    """What the alive nodes lack for ``bundle``: a resource none offers, or room on those that could hold it."""
    import ray

    from invs import fleet

    alive = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if any(fleet.per_node(bundle, offered) for offered in alive):
        return "the nodes that can hold one stayed busy"
    missing = [k for k, v in bundle.items() if not any(offered.get(k, 0.0) >= v for offered in alive)]
    if missing:
        return f"no {' and '.join(missing)} node alive or added"
    return "no alive node offers all of it"


#: How an error of ours reads in the text of a Ray error that carries only its traceback (an actor that failed to
#: start, a map task's ``UserCodeException``).
_OUR_ERROR_LINE = re.compile(r"^invs\.errors\.(\w+): (.*)$", re.MULTILINE)


def _job_error(exc: BaseException) -> InvsError | None:
    """The one-line :class:`InvsError` that stopped a preprocess task or actor, from the Ray error carrying it
    (a storage outage past its retries, CUDA missing on a GPU node), worded as the job's end; None when the error
    is not one of ours."""
    import ray

    cause = getattr(exc, "cause", None)
    if isinstance(cause, InvsError) and not isinstance(cause, ray.exceptions.RayError):
        kind, message = type(cause), str(cause)
    else:
        found = _OUR_ERROR_LINE.findall(str(exc))
        if not found:
            return None
        name, message = found[-1]
        kind = getattr(errors, name, InvsError)
        kind = kind if isinstance(kind, type) and issubclass(kind, InvsError) else InvsError
    first = (message.strip().splitlines() or [kind.__name__])[0]
    if issubclass(kind, StorageError):
        return kind(f"{first}; the preprocess job stopped, re-run it with the same --out to finish")
    return kind(f"{first}; the preprocess job stopped")


@dataclass
class Work:
    """What a preprocess run has to do: the rendered objects by render shard, those already done or failed, and
    the orphan shards removed."""

    by_shard: dict[str, list[str]]
    done_keys: set[str]
    orphans: list[str]
    skipped: dict[str, int] = field(default_factory=dict)  # rendered objects left out, by skip flag they carry

    @property
    def todo(self) -> dict[str, list[str]]:
        return {s: keys for s, keys in self.by_shard.items() if set(keys) - self.done_keys}

    @property
    def total_objects(self) -> int:
        return sum(len(k) for k in self.by_shard.values())

    @property
    def left(self) -> int:
        return sum(len(set(k) - self.done_keys) for k in self.todo.values())


def check_models(p: Any) -> None:
    """Fail before any worker starts when the depth model or the latents' VAE cannot be found."""
    if p.depth == "zoedepth":
        from invs.depth import check_available

        check_available(p.depth_model)
    if p.latents and p.latents != "tiny":
        from invs.models import check_model_available

        check_model_available(p.latents, parts=("vae",))


def plan_work(renders: str, out: str, skip_flags: Sequence[str] = ()) -> Work:
    """Compare the render manifest with the pair index and failures; leave out objects flagged with any of
    ``skip_flags``; remove orphan pair shards."""
    manifest = tables.latest_by_uid(
        tables.read_table(storage.join(renders, tables.MANIFEST_DIR), tables.MANIFEST_SCHEMA)
    )
    by_shard: dict[str, list[str]] = defaultdict(list)
    skipped: Counter[str] = Counter()
    rendered = 0
    for row in manifest.values():
        if row["status"] == "ok" and row["shard"]:
            rendered += 1
            hit = [f for f in skip_flags if f in (row.get("flags") or [])]
            if hit:
                skipped.update(hit)
                continue
            by_shard[shards.index_shard(renders, row["shard"])].append(row["key"])  # where the renders are now
    if not rendered:
        raise InvsError(f"preprocess.renders: no rendered objects under {renders} (run render/main.py first)")
    if not by_shard:
        raise InvsError(
            f"preprocess.skip_flags: every rendered object under {renders} carries one of {', '.join(skip_flags)}"
        )
    index = tables.read_table(storage.join(out, tables.INDEX_DIR), tables.INDEX_SCHEMA)
    failed = tables.read_table(storage.join(out, tables.FAILURES_DIR), tables.FAILURE_SCHEMA)
    done_keys = {shards.safe_key(u) for u in index.column("uid").to_pylist()}
    done_keys |= {shards.safe_key(u) for u in failed.column("uid").to_pylist() if u}
    # a render shard that could not be read at all is one failure row without a uid: its objects are failed too
    unreadable = {shards.index_shard(renders, f["render_shard"]) for f in failed.to_pylist() if not f["uid"]}
    done_keys |= {k for shard in unreadable for k in by_shard.get(shard, [])}
    orphans = shards.remove_orphan_shards(out, set(index.column("shard").to_pylist()))
    return Work(dict(by_shard), done_keys, orphans, dict(skipped))


def run_pair_makers(config: Config, work: Work) -> dict[str, Any]:
    """The Ray Data job: read the objects still to do, make their pairs on a pool of pair makers, write shards.
    Returns the sink's totals (``pairs``, ``failures``, ``law``)."""
    import ray
    import ray.data

    from invs import fleet
    from invs.ray_session import init_ray

    p = config.preprocess
    init_ray(config)
    todo = work.todo
    items = [{"render_shard": s, "keys": sorted(set(keys) - work.done_keys)} for s, keys in sorted(todo.items())]
    bundle = fleet.worker_bundle(config.preprocess)
    wait_for_a_pair_maker_node(bundle, p.worker_wait_s, objects=work.left)
    actors = pair_maker_pool(config, bundle, fleet.alive_workers(bundle))
    # Our own progress lines replace Ray Data's per-operator log spam, and its error logs: an error of ours in a
    # task becomes one line (below), any other is raised with its traceback.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    ds = ray.data.from_items(items).map_batches(
        read_objects, fn_kwargs={"config": config}, batch_size=1, batch_format="pyarrow"
    )
    ds = ds.map_batches(
        PairMaker,
        fn_constructor_args=(config,),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        **fleet.ray_options(bundle),
        batch_format="pyarrow",
    )
    sink = PairShardSink(p.out, tables.new_job_id(), p.objects_per_shard, config)
    try:
        ds.write_datasink(sink)
    except ray.exceptions.RayError as exc:
        error = _job_error(exc)
        if error is None:
            raise
        raise error from None
    return sink.totals


def make_pairs(config: Config) -> dict[str, Any]:
    """Make the pairs of every rendered object not yet done (see the module docstring); returns the summary, also
    written as ``OUT/summary.json``."""
    started = time.monotonic()
    p = config.preprocess
    check_models(p)
    work = plan_work(p.renders, p.out, p.skip_flags)
    save_resolved(config, p.out)
    print(
        f"preprocess: {work.total_objects} objects in {len(work.by_shard)} render shards; "
        f"{work.left} to do; {len(work.orphans)} orphan shard(s) removed",
        flush=True,
    )
    totals: dict[str, Any] = {"pairs": 0, "failures": [], "law": []}
    if work.todo:
        totals = run_pair_makers(config, work)
    wall = time.monotonic() - started
    written, law = totals["pairs"], totals["law"]
    summary = {
        "out": p.out,
        "renders": p.renders,
        "objects": work.total_objects,
        "pairs_written": written,
        "objects_done": len(law),
        "failures": [
            {"render_shard": f["render_shard"], "uid": f["uid"], "error": f["error"]} for f in totals["failures"]
        ],
        "orphan_shards_removed": len(work.orphans),
        "depth": p.depth,
        "resolution": p.resolution,
        "empty_views_skipped": sum(e["skipped_views"] for e in law),
        "objects_skipped_by_flag": work.skipped,
        "law": _aggregate_law(law),
        "wall_s": round(wall, 2),
        "pairs_per_s": round(written / wall, 3) if written else None,
    }
    storage.write_text(storage.join(p.out, SUMMARY_NAME), json.dumps(summary, indent=2))
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """What a preprocess job did, and its sanity-law figures (printed by preprocess/main.py and the driver)."""
    lines = [
        f"{summary['pairs_written']} pairs from {summary['objects_done']} objects, {len(summary['failures'])} "
        f"failures, {summary['pairs_per_s'] or 0:.2f} pairs/s"
    ]
    skipped = summary.get("objects_skipped_by_flag") or {}
    if skipped:
        lines.append("skipped by flag: " + ", ".join(f"{n} {flag}" for flag, n in sorted(skipped.items())))
    law = summary["law"]
    if law:
        lines.append(
            f"law: PSNR partial {law['psnr_partial']:.2f} dB vs backward warp {law['psnr_backward']:.2f} dB; "
            f"stray {law['stray_fraction']:.3%} of covered; unseen pixels with mask < 0.5: "
            f"{law['unseen_below_half']:.3%}; visible fraction {law['visible_fraction']:.2f}"
        )
        if "seen_covered" in law:
            lines.append(
                f"coverage: {law['seen_covered']:.1%} of what the source sees is in the partial view; "
                f"{law['seen_cells_kept']:.1%} of the latent cells it sees whole stay below mask 0.5"
            )
    return lines
