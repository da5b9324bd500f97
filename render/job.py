"""The render job: plan which objects to render, run Ray actors that render them, report progress, summarise.

Resume and exactly-once: the manifest (``OUT/manifest/*.parquet``) is the record of what is done. A run skips
objects whose latest row is ``ok``, retries ``failed`` ones until ``render.max_attempts`` attempts, and first
deletes *orphan* shards (published by a worker that died before writing their manifest rows), so after any
mix of crashes and re-runs every object is in the shards exactly once. One run per output location at a time.

Lost workers (a node gone): the objects a dead worker held without a manifest row go back to the queue and other
workers render them in the same run (:class:`_Pool`); shards it published without rows are deleted at the end. With
no worker left and none starting for ``render.worker_wait_s``, or a worker's storage error (S3 down past its
retries), the job stops with one line and a re-run finishes it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from invs import shards, storage, tables
from invs.config import Config, save_resolved
from invs.errors import InvsError
from invs.progress import Progress
from render.object_ref import ObjectRef
from render.sources import resolve

if TYPE_CHECKING:
    from render.objaverse_xl import Selection

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
    out = config.render.out
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
    bundle = fleet.worker_bundle(config.render) | {"CPU": float(threads)}
    capacity = max(fleet.alive_workers(bundle), fleet.fleet_workers(cluster, bundle) if cluster else 0)
    return max(1, capacity), threads


#: An object whose worker is lost (its process or node died) this many times while holding it fails for this run.
MAX_LOSSES = 2
#: Most objects of one download group (a GitHub repository) given to a worker at once.
MAX_GROUP_BATCH = 32


def batch_size(queue: list[tuple[ObjectRef, int]], chunk_size: int) -> int:
    """How many objects from the head of ``queue`` go to the next worker: a batch never mixes download groups
    (:attr:`ObjectRef.group`, a GitHub repository). Objects of no group go ``chunk_size`` at a time; a group's
    objects that lie together (a selection lists a repository's objects together) go up to
    :data:`MAX_GROUP_BATCH` at a time, so that one worker fetches the repository for all of them."""
    if not queue:
        return 0
    group = queue[0][0].group
    limit = min(len(queue), chunk_size if group is None else MAX_GROUP_BATCH)
    take = 1
    while take < limit and queue[take][0].group == group:
        take += 1
    return take


class WorkersLost(InvsError):
    """Every render worker is gone and none could start within ``render.worker_wait_s``."""


class _Pool:
    """The render actors of one job and the objects each holds; survives workers lost with their nodes.

    Every object given to an actor stays *held* by it until the actor has flushed (published its shard and
    written its rows). When an actor dies, the manifest says which of its objects were recorded (a row with the
    attempt number this run gave them); the others go back to the queue, in this run, to another worker. An object
    lost :data:`MAX_LOSSES` times gets a failed row instead, so no object can take the job down with it.
    """

    def __init__(self, config: Config, todo: list[tuple[ObjectRef, int]], workers: int, threads: int) -> None:
        import ray

        from invs import fleet
        from render.worker import RenderWorker

        self.config, self.threads, self.workers = config, threads, workers
        self.manifest_uri = storage.join(config.render.out, tables.MANIFEST_DIR)
        # With device gpu each worker holds one GPU: Ray sets CUDA_VISIBLE_DEVICES, which its Blender inherits.
        self.bundle = fleet.worker_bundle(config.render) | {"CPU": float(threads)}
        self.actor_cls = ray.remote(RenderWorker).options(**fleet.ray_options(self.bundle))
        self.job_id = tables.new_job_id()
        self.queue = list(todo)
        self.starting: dict[Any, Any] = {}  # ready() ref -> actor not placed yet (Ray and its autoscaler place them)
        self.actors: list[Any] = []  # started
        self.idle: list[Any] = []  # started, nothing in flight
        self.in_flight: dict[Any, tuple[Any, list[tuple[ObjectRef, int]]]] = {}
        self.held: dict[Any, dict[str, tuple[ObjectRef, int]]] = {}  # actor -> objects given since its last flush
        self.outcome: dict[str, dict[str, Any]] = {}  # uid -> its result in this run
        self.losses: Counter[str] = Counter()
        self.lost_workers = 0
        self.requeued = 0
        self.failed_to_start = 0
        self.max_restarts = max(10, 3 * workers)  # workers started in place of lost ones that failed to start
        self._next_index = 0
        for _ in range(workers):
            self._start_actor()

    def _start_actor(self) -> None:
        actor = self.actor_cls.remote(self.config, self.job_id, self._next_index, self.threads)
        self._next_index += 1
        self.starting[actor.ready.remote()] = actor

    def _submit(self, actor: Any, chunk_size: int) -> None:
        take = batch_size(self.queue, chunk_size)
        batch, self.queue[:] = self.queue[:take], self.queue[take:]
        self.held.setdefault(actor, {}).update({ref.uid: (ref, attempt) for ref, attempt in batch})
        self.in_flight[actor.render_batch.remote(batch)] = (actor, batch)

    def counts(self) -> tuple[int, int]:
        ok = sum(r["status"] == "ok" for r in self.outcome.values())
        return ok, len(self.outcome) - ok

    def run(self, progress: Progress, chunk_size: int) -> None:
        """Render the queue; return when every object is recorded, or when no worker can start (queue left)."""
        import ray

        no_worker_since: float | None = None
        while True:
            while self.idle and self.queue:
                self._submit(self.idle.pop(), chunk_size)
            if not self.in_flight and not self.queue:
                self._flush_all()  # a worker lost now gives its objects back to the queue
                if not self.queue:
                    return
                continue
            if not self.in_flight and not self.starting:
                return  # objects left and no worker to take them (every one failed to start)
            timeout = None
            if not self.in_flight:  # objects wait and no worker runs: nodes lost, or not added yet
                no_worker_since = no_worker_since or time.monotonic()
                timeout = max(0.0, no_worker_since + self.config.render.worker_wait_s - time.monotonic())
            ready, _ = ray.wait([*self.in_flight, *self.starting], num_returns=1, timeout=timeout)
            if not ready:
                raise WorkersLost(
                    f"render: no render worker ran for {self.config.render.worker_wait_s:.0f} s (no node could "
                    f"hold one: nodes lost, or none added): {len(self.queue)} objects not rendered; re-run with the "
                    "same --out to finish"
                )
            no_worker_since = None
            if ready[0] in self.starting:
                actor = self.starting.pop(ready[0])
                try:
                    ray.get(ready[0])
                except ray.exceptions.RayActorError as exc:
                    self.failed_to_start += 1
                    print(f"render: a worker failed to start: {_first_line(exc)}", flush=True)
                    # Its node died under it (not an error of its own): another may start elsewhere.
                    if not exc.actor_init_failed and self.failed_to_start <= self.max_restarts:
                        self._replace()
                    continue
                self.actors.append(actor)
                self.idle.append(actor)
                continue
            actor, _ = self.in_flight.pop(ready[0])
            try:
                results = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:
                self._lose(actor, f"render worker died: {_first_line(exc)}")
            else:
                self.outcome.update({r["uid"]: r for r in results})
                self.idle.append(actor)
            ok, failed = self.counts()
            progress.update(ok + failed, f"{ok} ok, {failed} failed")

    def _flush_all(self) -> None:
        import ray

        refs = {actor.flush.remote(): actor for actor in self.actors}
        for ref, actor in refs.items():
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                self._lose(actor, f"render worker died: {_first_line(exc)}")
            else:
                self.held[actor] = {}

    def _lose(self, actor: Any, reason: str) -> None:
        """A dead worker: its unrecorded objects go back to the queue (or fail after MAX_LOSSES); start another."""
        import contextlib

        import ray

        with contextlib.suppress(Exception):  # make sure it never writes again (it may only be unreachable)
            ray.kill(actor, no_restart=True)
        for group in (self.actors, self.idle):
            if actor in group:
                group.remove(actor)
        for ref in [r for r, (a, _) in self.in_flight.items() if a == actor]:
            del self.in_flight[ref]
        held = self.held.pop(actor, {})
        self.lost_workers += 1
        recorded: dict[str, dict[int, dict[str, Any]]] = {}
        if held:
            manifest = tables.read_table(self.manifest_uri, tables.MANIFEST_SCHEMA)
            for row in manifest.filter(pc.is_in(manifest["uid"], pa.array(list(held)))).to_pylist():
                recorded.setdefault(row["uid"], {})[row["attempts"]] = row
        back, given_up = [], []
        for uid, (ref, attempt) in held.items():
            row = recorded.get(uid, {}).get(attempt)
            if row is not None:  # its row was written before the worker died: done (ok or failed)
                self.outcome[uid] = {
                    "uid": uid,
                    "status": row["status"],
                    "error": row["error"],
                    "views": row["num_views"] or 0,
                }
                continue
            self.outcome.pop(uid, None)
            self.losses[uid] += 1
            if self.losses[uid] < MAX_LOSSES:
                back.append((ref, attempt))
                continue
            error = f"the render worker holding it was lost {self.losses[uid]} times (last: {reason})"
            from render.worker import provenance

            given_up.append(
                tables.manifest_row(
                    uid, "failed", **provenance(ref), error=error, attempts=attempt, seconds=0.0, num_views=0
                )
            )
            self.outcome[uid] = {"uid": uid, "status": "failed", "error": error}
        tables.append_rows(self.manifest_uri, given_up, tables.MANIFEST_SCHEMA)
        self.queue[:0] = back
        self.requeued += len(back)
        print(
            f"render: {reason}; {len(held) - len(back) - len(given_up)} of its objects were recorded, "
            f"{len(back)} go back to the queue, {len(given_up)} failed",
            flush=True,
        )
        self._replace()

    def _replace(self) -> None:
        """Start a worker in place of a lost one, while objects wait and the pool is short."""
        if self.queue and len(self.actors) + len(self.starting) < self.workers:
            self._start_actor()

    def close(self) -> list[dict[str, Any]]:
        """Close every started worker (stats); forget the ones never placed."""
        import ray

        for actor in self.starting.values():
            ray.kill(actor)
        self.starting = {}
        stats = []
        for actor in self.actors:
            try:
                stats.append(ray.get(actor.close.remote()))
            except ray.exceptions.RayActorError as exc:  # lost after its last flush: nothing of it is missing
                self.lost_workers += 1
                print(f"render: a worker was lost after its work was recorded: {_first_line(exc)}", flush=True)
        return stats

    def kill(self) -> None:
        import ray

        for actor in [*self.actors, *self.starting.values()]:
            ray.kill(actor)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _worker_error(exc: BaseException) -> BaseException:
    """A worker's own error as one line: an InvsError (storage down past its retries, ...) stops the job."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, InvsError):
        return type(cause)(f"{cause}; the render job stopped, re-run it with the same --out to finish")
    return exc


def select_objects(config: Config, count: bool = True) -> tuple[list[ObjectRef], Selection | None]:
    """The objects a render job takes, printed before anything is downloaded: an Objaverse-XL selection with its
    counts (also written as ``OUT/selection.parquet``), else (``count``) their number."""
    objects, selection = resolve(config)
    if selection is not None:
        print(selection.describe(), flush=True)
        print(f"objaverse-xl: selection written to {selection.write(config.render.out)}", flush=True)
    elif count:
        print(f"render: {len(objects)} objects from {config.render.objects}", flush=True)
    return objects, selection


def render_objects(config: Config, chunk_size: int = 2) -> dict[str, Any]:
    """Render what the manifest says is not done yet; returns the summary (also written as OUT/summary.json)."""
    import ray

    from invs.ray_session import init_ray

    started = time.monotonic()
    out = config.render.out
    objects, selection = select_objects(config, count=False)
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
    losses = {"workers_lost": 0, "objects_requeued": 0}
    if p.todo:
        from invs import fleet

        init_ray(config)
        workers, threads = worker_pool(config)
        workers = min(workers, len(p.todo))
        pool = _Pool(config, p.todo, workers, threads)
        waiting = workers - fleet.alive_workers(pool.bundle)
        if waiting > 0:
            print(f"render: {workers} workers, {waiting} waiting for nodes (the autoscaler adds them)", flush=True)
        progress = Progress("render", len(p.todo), "objects", rate_per="h")
        try:
            pool.run(progress, chunk_size)
        except ray.exceptions.RayTaskError as exc:
            pool.kill()
            raise _worker_error(exc) from None
        except InvsError:
            pool.kill()
            raise
        progress.close()
        worker_stats = pool.close()
        results = list(pool.outcome.values())
        if pool.queue:  # every worker failed to start
            reason = "no render worker could start (see the lines above)"
            results += [{"uid": ref.uid, "status": "failed", "error": reason} for ref, _ in pool.queue]
        losses = {"workers_lost": pool.lost_workers, "objects_requeued": pool.requeued}
        if pool.lost_workers:  # a worker that died between publishing a shard and writing its rows left an orphan
            latest = tables.latest_by_uid(
                tables.read_table(storage.join(out, tables.MANIFEST_DIR), tables.MANIFEST_SCHEMA)
            )
            lost = shards.remove_orphan_shards(out, {r["shard"] for r in latest.values() if r["status"] == "ok"})
            if lost:
                print(f"render: removed {len(lost)} shard(s) a lost worker published without rows", flush=True)
            orphans += lost
    summary = _summary(config, p, orphans, results, worker_stats, time.monotonic() - started) | losses
    if selection is not None:
        summary["objaverse_xl"] = selection.counts()
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
    views = sum(r.get("views", 0) for r in results if r["status"] == "ok")
    timed_views = sum(s["views"] for s in worker_stats)  # by the workers that lived to report their times
    return {
        "out": config.render.out,
        "objects": len(p.objects),
        "already_done": p.done,
        "rendered": counts.get("ok", 0),
        "failed": counts.get("failed", 0),
        "given_up": [r.uid for r in p.given_up],
        "orphan_shards_removed": len(orphans),
        "failures": [{"uid": r["uid"], "error": r["error"]} for r in results if r["status"] == "failed"],
        "missing_textures": sum(r.get("missing_textures", 0) for r in results),
        "cropped_views": sum(r.get("cropped_views", 0) for r in results),
        "flags": dict(sorted(Counter(f for r in results for f in r.get("flags", [])).items())),  # objects by flag
        "views": views,
        "wall_s": round(wall_s, 2),
        "seconds_per_view": round(blender_s / timed_views, 4) if timed_views else None,
        "render_call_share": round(render_s / blender_s, 3) if blender_s else None,
        "blender_starts": sum(s["blender_starts"] for s in worker_stats),
        # Objaverse objects fetched from the workers' caches, the store and over HTTP, and the HTTP requests made
        "objaverse": {k: sum(s["objaverse"][k] for s in worker_stats) for k in OBJAVERSE_COUNTS},
        "workers": len(worker_stats),
        "worker_nodes": sorted({s["node_ip"] for s in worker_stats}),
        "blender_memory_cap_mb": {s["node_ip"]: s["blender_memory_cap_mb"] for s in worker_stats},
    }


def summary_line(summary: dict[str, Any]) -> str:
    """One line of what a render job did (printed by render/main.py and the all-stages driver)."""
    return (
        f"{summary['rendered']} rendered, {summary['failed']} failed, {summary['already_done']} already done, "
        f"{len(summary['given_up'])} given up; {summary['views']} views, "
        f"{summary['seconds_per_view'] or 0:.2f} s/view, {summary['wall_s']:.0f} s"
    )
