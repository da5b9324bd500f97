"""Render-stage benchmark: a long-lived Blender process versus a fresh Blender process per object.

    .venv/bin/python bench/render_bench.py                      # writes bench/results/render.json
    .venv/bin/python bench/render_bench.py --resolutions 512 --samples 64 --denoise \
        --out bench/results/render_paper.json                    # the paper preset's settings (the planner's)

For each resolution it renders the same objects twice on this machine, in one run:
* ``long_lived``: the production path (:class:`render.worker.RenderWorker`: one Blender process for all objects,
  shards and manifest written), and
* ``fresh_process``: the same requests, each in a newly started Blender (what per-object scripts do),
and reports seconds per view, objects per hour, the share of wall time spent inside Blender's render call, and
the ratio fresh / long-lived. Objects: the real glTF files shipped in tests/assets/objects. Timings, not tests:
nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_results
from invs.config import load_config
from render.blender_process import BlenderProcess
from render.object_ref import ObjectRef
from render.worker import RenderWorker, build_request, fetch

OBJECTS = Path(__file__).resolve().parents[1] / "tests" / "assets" / "objects"


def objects(limit: int) -> list[ObjectRef]:
    if OBJECTS.is_dir():
        files = sorted(p for p in OBJECTS.glob("*.glb") if not p.name.startswith("problem_"))[:limit]
        return [ObjectRef(uid=p.stem, uri=str(p), source="local") for p in files]
    from render import samples

    return [ObjectRef(uid=f"sample_{n}", uri=f"samples:{n}", source="samples") for n in samples.SAMPLE_NAMES[:limit]]


def long_lived(config: Any, refs: list[ObjectRef], threads: int) -> dict[str, Any]:
    worker = RenderWorker(config, job_id="bench", index=0, threads=threads)
    started = time.perf_counter()
    results = worker.render_batch([(r, 1) for r in refs])
    stats = worker.close()
    wall = time.perf_counter() - started
    failed = [r for r in results if r["status"] != "ok"]
    shard_bytes = sum(p.stat().st_size for p in Path(config.render.out, "shards").glob("*.tar"))
    return {
        "wall_s": wall,
        "views": stats["views"],
        "bytes_per_view": round(shard_bytes / max(1, stats["views"])),
        "render_call_s": stats["render_s"],
        "failed": len(failed),
        "blender_starts": stats["blender_starts"],
    }


def fresh_process(config: Any, refs: list[ObjectRef], threads: int, tmp: Path) -> dict[str, Any]:
    wall = render_call = 0.0
    views = 0
    for ref in refs:
        request = build_request(config, ref, fetch(ref, tmp, config), tmp / ref.key, threads)
        started = time.perf_counter()
        with BlenderProcess(threads=threads, log_dir=str(tmp / "logs")) as bp:
            result = bp.render(request, timeout_s=config.render.timeout_s)
        wall += time.perf_counter() - started
        render_call += result.get("render_s", 0.0)
        views += len(result.get("views", []))
    return {"wall_s": wall, "views": views, "render_call_s": render_call}


def config_for(args: argparse.Namespace, resolution: int, out: str) -> Any:
    return load_config(
        "local",
        {
            "render.out": out,
            "render.views": args.views,
            "render.resolution": resolution,
            "render.samples": args.samples,
            "render.denoise": args.denoise,
            "render.limited_bounces": not args.full_bounces,
        },
    )


def summarize(run: dict[str, Any], n_objects: int) -> dict[str, Any]:
    return {
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()},
        "seconds_per_view": round(run["wall_s"] / run["views"], 4),
        "objects_per_hour": round(3600 * n_objects / run["wall_s"], 1),
        "render_call_share": round(run["render_call_s"] / run["wall_s"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--views", type=int, default=6)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--denoise", action="store_true", help="OpenImageDenoise after sampling (the paper preset)")
    parser.add_argument("--full-bounces", action="store_true", help="Blender's default light paths (12 bounces)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "render.json"))
    args = parser.parse_args()
    refs = objects(args.objects)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "objects": [r.uid for r in refs],
        "views_per_object": args.views,
        "samples": args.samples,
        "denoise": args.denoise,
        "engine": "cycles",
        "device": "cpu",
        "limited_bounces": not args.full_bounces,
        "threads": args.threads,
        "runs": {},
    }
    for res in args.resolutions:
        with tempfile.TemporaryDirectory() as tmp:
            long_lived(config_for(args, res, f"{tmp}/warm-up"), refs[:1], args.threads)  # disk caches, first bpy import
            config = config_for(args, res, f"{tmp}/out")
            ll = summarize(long_lived(config, refs, args.threads), len(refs))
            fp = summarize(fresh_process(config, refs, args.threads, Path(tmp)), len(refs))
        ratio = round(fp["wall_s"] / ll["wall_s"], 3)
        results["runs"][str(res)] = {"long_lived": ll, "fresh_process": fp, "fresh_over_long_lived_wall": ratio}
        print(
            f"{res}px: long-lived {ll['seconds_per_view']:.3f} s/view ({ll['objects_per_hour']:.0f} objects/h, "
            f"render call {ll['render_call_share']:.0%} of wall); fresh process per object "
            f"{fp['seconds_per_view']:.3f} s/view; fresh/long-lived = {ratio:.2f}x",
            flush=True,
        )
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
