"""Render-job memory benchmark: peak memory of the driver, the render actors and their Blender processes for N
objects against 4N, so that a long run is seen to stay bounded (nothing here asserts a number).

    .venv/bin/python bench/render_memory_bench.py                  # N = 25: writes bench/results/render_memory.json
    .venv/bin/python bench/render_memory_bench.py --objects 100 --resolution 128

Each size runs in a fresh process (the job as ``render/main.py`` runs it: :func:`render.job.render_objects` on a
local Ray instance with one Blender worker), sampling every process it starts every 0.2 s: the driver (this
process), the Ray actors that hold ``RenderWorker``, the Blender processes (``render.blender_worker``, also their
kernel high-water mark ``VmHWM``, and its peak in each quarter of the run: flat when nothing accumulates) and
Ray's own processes. Objects: copies of the real glTF files in
tests/assets/objects, rendered at 64 px with 2 views unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, write_results

OBJECTS = Path(__file__).resolve().parents[1] / "tests" / "assets" / "objects"


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Sampler:
    """Peak resident memory (MiB) of this process and of its descendants, by kind, sampled in a thread."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak = {"driver": 0.0, "render_actor": 0.0, "blender": 0.0, "blender_hwm": 0.0, "ray_other": 0.0}
        self.peak_total = 0.0
        self.blender_pids: set[int] = set()
        self.blender_series: list[tuple[float, float]] = []  # (seconds since start, Blender RSS)
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _kind(self, cmdline: str) -> str:
        if "render.blender_worker" in cmdline:
            return "blender"
        if "RenderWorker" in cmdline:
            return "render_actor"
        return "ray_other"

    def sample(self) -> None:
        import psutil

        me = psutil.Process()
        sums = {"driver": me.memory_info().rss / 2**20, "render_actor": 0.0, "blender": 0.0, "ray_other": 0.0}
        largest = dict.fromkeys(sums, 0.0)
        largest["driver"] = sums["driver"]
        for proc in me.children(recursive=True):
            try:
                rss = proc.memory_info().rss / 2**20
                kind = self._kind(" ".join(proc.cmdline()))
            except psutil.Error:
                continue
            sums[kind] += rss
            largest[kind] = max(largest[kind], rss)
            if kind == "blender":
                self.blender_pids.add(proc.pid)
                self.peak["blender_hwm"] = max(self.peak["blender_hwm"], _hwm_mb(proc.pid))
        for kind in ("driver", "render_actor", "blender", "ray_other"):
            self.peak[kind] = max(self.peak[kind], largest[kind] if kind != "ray_other" else sums[kind])
        self.peak_total = max(self.peak_total, sum(sums.values()))
        if sums["blender"]:
            self.blender_series.append((time.monotonic() - self._t0, sums["blender"]))

    def blender_by_quarter(self) -> list[float]:
        """Peak Blender RSS in each quarter of the time Blender ran: flat when memory stays bounded."""
        if not self.blender_series:
            return []
        t0, t1 = self.blender_series[0][0], self.blender_series[-1][0]
        span = max(t1 - t0, 1e-9)
        quarters = [0.0] * 4
        for t, rss in self.blender_series:
            q = min(3, int(4 * (t - t0) / span))
            quarters[q] = max(quarters[q], rss)
        return [round(q, 1) for q in quarters]

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


def one_run(n: int, resolution: int, views: int, samples: int) -> dict[str, Any]:
    """Render ``n`` objects with the job (this process is its driver) and return the peaks."""
    from invs.config import load_config
    from render.job import render_objects

    work = Path(tempfile.mkdtemp(prefix="invs-membench-"))
    glbs = sorted(p for p in OBJECTS.glob("*.glb") if not p.name.startswith("problem_"))
    (work / "objects").mkdir()
    for i in range(n):
        shutil.copy(glbs[i % len(glbs)], work / "objects" / f"obj{i:04d}.glb")
    config = load_config(
        "local",
        {
            "render.objects": str(work / "objects"),
            "render.out": str(work / "out"),
            "render.views": views,
            "render.resolution": resolution,
            "render.samples": samples,
            "render.workers": 1,
        },
    )
    started = time.perf_counter()
    with Sampler() as sampler:
        summary = render_objects(config)
        sampler.sample()
    wall = time.perf_counter() - started
    shutil.rmtree(work, ignore_errors=True)
    return {
        "objects": n,
        "rendered": summary["rendered"],
        "failed": summary["failed"],
        "wall_s": round(wall, 1),
        "blender_starts": summary["blender_starts"],
        "driver_peak_mb": round(sampler.peak["driver"], 1),
        "render_actor_peak_mb": round(sampler.peak["render_actor"], 1),
        "blender_peak_rss_mb": round(sampler.peak["blender"], 1),
        "blender_peak_hwm_mb": round(sampler.peak["blender_hwm"], 1),
        "blender_peak_rss_by_quarter_mb": sampler.blender_by_quarter(),
        "ray_other_peak_mb": round(sampler.peak["ray_other"], 1),
        "all_processes_peak_mb": round(sampler.peak_total, 1),
        "blender_memory_cap_mb": summary["blender_memory_cap_mb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=25, help="N (the second run renders 4N)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a single size, as a child
    parser.add_argument("--out", default=str(RESULTS / "render_memory.json"))
    args = parser.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(one_run(args.one, args.resolution, args.views, args.samples)), flush=True)
        return
    runs = {}
    for label, n in (("N", args.objects), ("4N", 4 * args.objects)):
        cmd = [sys.executable, __file__, "--one", str(n), "--resolution", str(args.resolution)]
        cmd += ["--views", str(args.views), "--samples", str(args.samples)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"the {label} run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        runs[label] = json.loads(lines[-1][len("RESULT ") :])
        print(f"{label}: {runs[label]}")
    keys = ("driver_peak_mb", "render_actor_peak_mb", "blender_peak_rss_mb", "blender_peak_hwm_mb")
    results = {
        "settings": {"resolution": args.resolution, "views": args.views, "samples": args.samples, "workers": 1},
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "runs": runs,
        "ratio_4N_over_N": {k: round(runs["4N"][k] / runs["N"][k], 3) for k in keys if runs["N"][k]},
    }
    write_results(results, args.out)


if __name__ == "__main__":
    main()
