"""The render job: plan which objects to render, run Ray actors that render them, report progress, summarise.

Resume and exactly-once: the manifest (``OUT/manifest/*.parquet``) is the record of what is done. A run skips
objects whose latest row is ``ok``, retries ``failed`` ones until ``render.max_attempts`` attempts, and first
deletes *orphan* shards (published by a worker that died before writing their manifest rows), so after any
mix of crashes and re-runs every object is in the shards exactly once. One run per output location at a time.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from invs import shards, storage, tables
from invs.config import Config, save_resolved
from invs.progress import Progress
from render.object_ref import ObjectRef
from render.sources import resolve_objects

SUMMARY_NAME = "summary.json"


@dataclass
class Plan:
    """What a run will do: ``todo`` holds (object, attempt number) pairs."""

    objects: list[ObjectRef]
    todo: list[tuple[ObjectRef, int]] = field(default_factory=list)
    done: int = 0
    given_up: list[ObjectRef] = field(default_factory=list)
    referenced_shards: set[str] = field(default_factory=set)


def plan(config: Config, objects: list[ObjectRef]) -> Plan:
    """Compare the objects with the manifest: what is done, what to (re)try, what has failed too often."""
    out = storage.normalize(config.render.out)
    latest = tables.latest_by_uid(tables.read_table(storage.join(out, tables.MANIFEST_DIR), tables.MANIFEST_SCHEMA))
    referenced = {row["shard"] for row in latest.values() if row["status"] == "ok"}
    result = Plan(objects=objects, referenced_shards=referenced)
    for ref in objects:
        row = latest.get(ref.uid)
        if row is None:
            result.todo.append((ref, 1))
        elif row["status"] == "ok":
            result.done += 1
        elif row["total_attempts"] >= config.render.max_attempts:
            result.given_up.append(ref)
        else:
            result.todo.append((ref, row["total_attempts"] + 1))
    return result


def worker_pool(config: Config) -> tuple[int, int]:
    """(Blender processes, render threads each) for the fleet this job can reach.

    ``render.workers`` if set; else every worker bundle (:func:`invs.fleet.worker_bundle`: ``threads_per_worker``
    CPUs, a GPU with ``device: gpu``, the node resource) that the nodes alive now hold, or the whole fleet of
    ``ray.cluster_file`` (every node the autoscaler may start), whichever is larger. Without a cluster file,
    threads are capped at the largest alive node's CPUs, so a small machine still renders.
    """
    from invs import fleet
    from invs.ray_session import nodes_with

    r = config.render
    threads = r.threads_per_worker
    cluster = fleet.load_fleet(config.ray.cluster_file) if config.ray.cluster_file else None
    if cluster is None:
        largest = max((n["Resources"].get("CPU", 0) for n in nodes_with(r.node_resource)), default=1)
        threads = max(1, min(threads, int(largest) or 1))
    if r.workers:
        return r.workers, threads
    bundle = fleet.worker_bundle(config, "render") | {"CPU": float(threads)}
    capacity = max(fleet.alive_workers(bundle), fleet.fleet_workers(cluster, bundle) if cluster else 0)
    return max(1, capacity), threads


def render_objects(config: Config, chunk_size: int = 2) -> dict[str, Any]:
    """Render what the manifest says is not done yet; returns the summary (also written as OUT/summary.json)."""
    import ray

    from invs import fleet
    from invs.ray_session import init_ray
    from render.worker import RenderWorker

    started = time.monotonic()
    out = storage.normalize(config.render.out)
    objects = resolve_objects(config.render)
    p = plan(config, objects)
    orphans = shards.remove_orphan_shards(out, p.referenced_shards)
    if orphans:
        print(f"render: removed {len(orphans)} orphan shard(s) left by an interrupted run", flush=True)
    save_resolved(config, out)
    print(
        f"render: {len(objects)} objects: {p.done} already done, {len(p.todo)} to render, "
        f"{len(p.given_up)} given up after {config.render.max_attempts} attempts",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    worker_stats: list[dict[str, Any]] = []
    if p.todo:
        init_ray(config)
        workers, threads = worker_pool(config)
        workers = min(workers, len(p.todo))
        # With device gpu each worker holds one GPU: Ray sets CUDA_VISIBLE_DEVICES, which its Blender inherits.
        bundle = fleet.worker_bundle(config, "render") | {"CPU": float(threads)}
        actor_cls = ray.remote(RenderWorker).options(**fleet.ray_options(bundle))
        job_id = tables.new_job_id()
        starting = {}  # actors not started yet: Ray (and its autoscaler) place them as nodes come
        for i in range(workers):
            actor = actor_cls.remote(config, job_id, i, threads)
            starting[actor.ready.remote()] = actor
        waiting = workers - fleet.alive_workers(bundle)
        if waiting > 0:
            print(f"render: {workers} workers, {waiting} waiting for nodes (the autoscaler adds them)", flush=True)
        actors: list[Any] = []
        queue = list(p.todo)
        progress = Progress("render", len(queue), "objects", rate_per="h")
        ok = failed = 0
        in_flight: dict[Any, tuple[Any, list[tuple[ObjectRef, int]]]] = {}

        def submit(actor: Any) -> None:
            batch, queue[:] = queue[:chunk_size], queue[chunk_size:]
            if batch:
                in_flight[actor.render_batch.remote(batch)] = (actor, batch)

        while in_flight or (queue and starting):
            ready, _ = ray.wait([*in_flight, *starting], num_returns=1)
            if ready[0] in starting:
                actor = starting.pop(ready[0])
                try:
                    ray.get(ready[0])
                except ray.exceptions.RayActorError as exc:
                    print(f"render: a worker failed to start: {str(exc).splitlines()[0][:300]}", flush=True)
                    continue
                actors.append(actor)
                submit(actor)
                continue
            actor, batch = in_flight.pop(ready[0])
            try:
                batch_results = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:
                # The worker process itself died: its unpublished objects are rendered again by the next run.
                reason = f"render worker died: {str(exc).splitlines()[0][:300]}"
                batch_results = [{"uid": ref.uid, "status": "failed", "error": reason} for ref, _ in batch]
                actors.remove(actor)
                actor = actor_cls.remote(config, job_id, len(actors) + 1000 + len(results), threads)
                starting[actor.ready.remote()] = actor
                actor = None
            results += batch_results
            ok += sum(r["status"] == "ok" for r in batch_results)
            failed += sum(r["status"] != "ok" for r in batch_results)
            progress.update(ok + failed, f"{ok} ok, {failed} failed")
            if actor is not None:
                submit(actor)
        for actor in starting.values():  # never placed: nothing to close
            ray.kill(actor)
        if queue:  # every worker failed to start
            reason = "no render worker could start (see the lines above)"
            results += [{"uid": ref.uid, "status": "failed", "error": reason} for ref, _ in queue]
        progress.close()
        worker_stats = ray.get([a.close.remote() for a in actors])
    summary = _summary(config, p, orphans, results, worker_stats, time.monotonic() - started)
    storage.write_text(storage.join(out, SUMMARY_NAME), json.dumps(summary, indent=2))
    return summary


def _summary(
    config: Config,
    p: Plan,
    orphans: list[str],
    results: list[dict[str, Any]],
    worker_stats: list[dict[str, Any]],
    wall_s: float,
) -> dict[str, Any]:
    from render.worker import OBJAVERSE_COUNTS

    counts = Counter(r["status"] for r in results)
    blender_s = sum(s["blender_s"] for s in worker_stats)
    render_s = sum(s["render_s"] for s in worker_stats)
    views = sum(s["views"] for s in worker_stats)
    return {
        "out": storage.normalize(config.render.out),
        "objects": len(p.objects),
        "already_done": p.done,
        "rendered": counts.get("ok", 0),
        "failed": counts.get("failed", 0),
        "given_up": [r.uid for r in p.given_up],
        "orphan_shards_removed": len(orphans),
        "failures": [{"uid": r["uid"], "error": r["error"]} for r in results if r["status"] == "failed"],
        "missing_textures": sum(r.get("missing_textures", 0) for r in results),
        "cropped_views": sum(r.get("cropped_views", 0) for r in results),
        "views": views,
        "wall_s": round(wall_s, 2),
        "seconds_per_view": round(blender_s / views, 4) if views else None,
        "render_call_share": round(render_s / blender_s, 3) if blender_s else None,
        "blender_starts": sum(s["blender_starts"] for s in worker_stats),
        # Objaverse objects fetched from the workers' caches, the store and over HTTP, and the HTTP requests made
        "objaverse": {k: sum(s["objaverse"][k] for s in worker_stats) for k in OBJAVERSE_COUNTS},
        "workers": len(worker_stats),
        "worker_nodes": sorted({s["node_ip"] for s in worker_stats}),
    }


def summary_line(summary: dict[str, Any]) -> str:
    """One line of what a render job did (printed by render/main.py and the all-stages driver)."""
    return (
        f"{summary['rendered']} rendered, {summary['failed']} failed, {summary['already_done']} already done, "
        f"{len(summary['given_up'])} given up; {summary['views']} views, "
        f"{summary['seconds_per_view'] or 0:.2f} s/view, {summary['wall_s']:.0f} s"
    )
