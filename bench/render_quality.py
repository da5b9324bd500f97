"""Render quality per core-second: a grid of Cycles settings against a high-sample reference, on real objects.

    .venv/bin/python bench/render_quality.py                 # writes bench/results/render_quality.json

Fixed objects (the repo's real test objects), the paper preset's cameras and lighting, 512 px, Cycles on CPU.
Each setting renders the same views as a 512-spp reference in the same run. Per setting: core-seconds per view
(the Blender process's CPU time per view, import and set-up shared by this run's ``--views``, so other load on
the machine does not count); ``cpu_s``, where that time goes by Blender's own CPU clock: ``per_object`` (import,
normalisation, scene and compositor set-up), ``per_view`` (the rest: ``colour`` and ``coverage`` renders, writing
the files), and ``at_paper_views``, the core-seconds per view when the per-object part is shared by the paper
preset's 24 views per object (what a dataset run pays). Against the reference: PSNR overall (RGB on white), PSNR
on object pixels (reference alpha > 0), PSNR on alpha edges (premultiplied RGBA within one pixel of the reference
silhouette), SSIM overall and alpha IoU (alpha >= 128). Whole-image PSNR flatters cheap settings (the background
is most of a frame), so the choice uses object and edge pixels.

The grid prices colour and coverage separately: ``+coverageN`` takes alpha from a second render of coverage alone
(``render.coverage_samples``: every surface an unlit emission, no bounces, N samples, no denoising), so colour can
take few samples and OpenImageDenoise (guided by albedo and normals, Blender's default) without losing the
silhouette; ``no-persistent-data`` rebuilds Cycles' scene for every view as the stage did before; ``32spp`` and
``64spp+denoise`` sample the whole frame, as the stage did before ``render.crop_to_object``, and every other setting
samples only the pixels inside the projection of the object's bounding box (the images are the same).

``chosen``: the cheapest setting (at the paper preset's views per object) with object PSNR >= 36 dB and edge PSNR
no worse than 32 spp without denoising in the same run (costs within 5% count as equal, then the better image and
the fewer settings win), with its costs, ``object_psnr_db``, ``edge_psnr_db`` and ``speedup_vs_64spp_denoise``
(the paper preset's former setting; ``..._measured_views`` on this run's views per object). ``pareto``: the
settings no other is both cheaper and better on object pixels (edges aside). ``--only NAME ...`` runs part of the
grid (with the two settings the choice compares against). Timings and quality, not tests.

    .venv/bin/python bench/render_quality.py --passes-cost   # writes bench/results/render_passes.json

The cost of the optional passes (:mod:`invs.passes`): the paper preset's setting with ``rgba, depth`` (the
baseline) and with ``normal`` and ``albedo`` added, in alternating rounds on the same objects and views; core-seconds
per view of each, their ratio, and whether the RGBA views stay the same.
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

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_results
from invs.config import load_config
from invs.passes import ALL as ALL_PASSES
from render.blender_process import BlenderProcess
from render.object_ref import ObjectRef
from render.worker import build_request, fetch

OBJECTS = Path(__file__).resolve().parents[1] / "tests" / "assets" / "objects"
DEFAULT_OBJECTS = ("SpotCow", "BoxTextured", "CesiumMilkTruck")
REFERENCE = {"samples": 512, "denoise": False}
#: name -> render settings; ``64spp+denoise`` was the paper preset's, ``32spp`` the planner's old basis.
GRID = {
    # the former choice and the former paper setting, rendered as they were (the whole frame sampled)
    "32spp": {"samples": 32, "denoise": False, "crop_to_object": False},
    "64spp+denoise": {"samples": 64, "denoise": True, "crop_to_object": False},
    # from here on, only the pixels the object's bounding box can reach are sampled (render.crop_to_object)
    "32spp,crop": {"samples": 32, "denoise": False},
    "64spp+denoise,crop": {"samples": 64, "denoise": True},
    "32spp+denoise": {"samples": 32, "denoise": True},
    "24spp+denoise": {"samples": 24, "denoise": True},
    "24spp": {"samples": 24, "denoise": False},
    "32spp+denoise,adaptive0.05": {"samples": 32, "denoise": True, "adaptive_threshold": 0.05},
    "16spp+denoise": {"samples": 16, "denoise": True},
    "16spp+denoise(accurate)": {"samples": 16, "denoise": True, "denoise_prefilter": "accurate"},
    "16spp+denoise,adaptive0.05": {"samples": 16, "denoise": True, "adaptive_threshold": 0.05},
    "8spp+denoise": {"samples": 8, "denoise": True},
    "32spp,adaptive0.05": {"samples": 32, "denoise": False, "adaptive_threshold": 0.05},
    "32spp,no-adaptive": {"samples": 32, "denoise": False, "adaptive_threshold": 0.0},
    "32spp,no-persistent-data": {"samples": 32, "denoise": False, "persistent_data": False},
    # colour from few denoised samples, alpha from a coverage render (render.coverage_samples)
    "16spp+denoise+coverage32": {"samples": 16, "denoise": True, "coverage_samples": 32},
    "8spp+denoise+coverage32": {"samples": 8, "denoise": True, "coverage_samples": 32},
    "8spp+denoise+coverage64": {"samples": 8, "denoise": True, "coverage_samples": 64},
    "4spp+denoise+coverage32": {"samples": 4, "denoise": True, "coverage_samples": 32},
}
MIN_OBJECT_PSNR = 36.0
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "render_quality.json"
TIE = 0.05


def render_views(
    settings: dict[str, Any], refs: list[ObjectRef], args: argparse.Namespace, tmp: Path
) -> tuple[list[np.ndarray], float, dict[str, float]]:
    """RGBA views (uint8) of every object under ``settings``, the core-seconds per view (the Blender process's CPU
    time, import and set-up shared by this run's views), and where the time goes (Blender's own CPU clock by phase,
    seconds): ``per_object`` (import and set-up, per object), ``per_view`` (everything else, per view: colour and
    coverage renders, writing), ``colour`` and ``coverage`` (per view), and ``at_paper_views`` (core-s per view
    when the per-object part is shared by the paper preset's views per object)."""
    overrides = {f"render.{k}": v for k, v in settings.items()}
    config = load_config("paper", {**overrides, "render.resolution": args.resolution, "render.views": args.views})
    paper_views = load_config("paper").render.views
    import psutil

    views: list[np.ndarray] = []
    cpu_s = 0.0
    phases = {"per_object": 0.0, "per_view": 0.0, "colour": 0.0, "coverage": 0.0}
    with BlenderProcess(threads=args.threads, log_dir=str(tmp / "logs")) as blender:
        for ref in refs:
            out_dir = tmp / f"{ref.key}-{time.monotonic_ns()}"
            request = build_request(config, ref, fetch(ref, tmp, config), out_dir, args.threads)
            if not blender.alive:
                blender.start()
            process = psutil.Process(blender.pid)  # CPU time, not wall time: other load does not count
            before = sum(process.cpu_times()[:2])
            result = blender.render(request, timeout_s=3600)
            cpu_s += sum(process.cpu_times()[:2]) - before
            c = result["cpu_s"]
            phases["per_object"] += (c["import"] + c["setup"]) / len(refs)
            phases["per_view"] += (c["total"] - c["import"] - c["setup"]) / (len(refs) * args.views)
            phases["colour"] += sum(c["colour"]) / (len(refs) * args.views)
            phases["coverage"] += sum(c["coverage"]) / (len(refs) * args.views)
            views += [np.asarray(Image.open(out_dir / f"rgba_{i:03d}.png")) for i in range(args.views)]
    phases["at_paper_views"] = phases["per_object"] / paper_views + phases["per_view"]
    return views, cpu_s / len(views), {k: round(v, 3) for k, v in phases.items()}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2)) if a.size else float("nan")
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def _edges(solid: np.ndarray) -> np.ndarray:
    """Pixels within one pixel of the silhouette's boundary (3x3 dilation minus erosion)."""
    padded = np.pad(solid, 1)
    shifts = [
        padded[1 + dy : 1 + dy + solid.shape[0], 1 + dx : 1 + dx + solid.shape[1]]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    ]
    return np.any(shifts, axis=0) & ~np.all(shifts, axis=0)


def scores(views: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    import torch

    from invs.images import on_white
    from invs.metrics import ssim

    def premultiplied(rgba: np.ndarray) -> np.ndarray:  # straight alpha leaves RGB arbitrary where alpha ~ 0
        x = rgba.astype(np.float64) / 255
        return np.concatenate([x[..., :3] * x[..., 3:], x[..., 3:]], axis=-1)

    got = [premultiplied(v) for v in views]
    ref = [premultiplied(r) for r in reference]
    white_got = np.stack([on_white(v) for v in views]).astype(np.float64)
    white_ref = np.stack([on_white(r) for r in reference]).astype(np.float64)
    objects = np.stack([r[..., 3] > 0 for r in ref])
    edges = np.stack([_edges(r[..., 3] >= 0.5) for r in ref])
    g_solid, r_solid = np.stack([g[..., 3] >= 0.5 for g in got]), np.stack([r[..., 3] >= 0.5 for r in ref])
    as_t = [torch.from_numpy(x).permute(0, 3, 1, 2).float() for x in (white_got, white_ref)]
    return {
        "psnr_all_db": round(_psnr(white_got, white_ref), 3),
        "psnr_object_db": round(_psnr(white_got[objects], white_ref[objects]), 3),
        "psnr_edge_db": round(_psnr(np.stack(got)[edges], np.stack(ref)[edges]), 3),
        "ssim_all": round(float(ssim(*as_t).mean()), 4),
        "alpha_iou": round(float((g_solid & r_solid).sum() / max(1, (g_solid | r_solid).sum())), 4),
    }


def cost(r: dict[str, Any]) -> float:
    """The cost a choice is made on: core-seconds per view with import and set-up shared by the paper preset's
    views per object (what a dataset run pays), else (older results) the measured core-seconds per view."""
    return r["cpu_s"]["at_paper_views"] if "cpu_s" in r else r["core_s_per_view"]


def choose(results: dict[str, dict[str, Any]]) -> tuple[str | None, list[str]]:
    """(the chosen setting, the Pareto front by cost and object PSNR)."""
    front = [
        name
        for name, r in results.items()
        if not any(
            cost(o) <= cost(r)
            and o["psnr_object_db"] >= r["psnr_object_db"]
            and (cost(o), o["psnr_object_db"]) != (cost(r), r["psnr_object_db"])
            for o in results.values()
        )
    ]
    edge_floor = results["32spp"]["psnr_edge_db"]
    good = [n for n, r in results.items() if r["psnr_object_db"] >= MIN_OBJECT_PSNR and r["psnr_edge_db"] >= edge_floor]
    if not good:
        return None, sorted(front, key=lambda n: cost(results[n]))
    # Costs within TIE of the cheapest are one cost (CPU-time noise): then the better image, then fewer settings.
    cheapest = min(cost(results[n]) for n in good)
    tied = [n for n in good if cost(results[n]) <= cheapest * (1 + TIE)]
    chosen = min(tied, key=lambda n: (-round(results[n]["psnr_object_db"], 1), len(results[n]["settings"])))
    return chosen, sorted(front, key=lambda n: cost(results[n]))


def summary_of(results: dict[str, dict[str, Any]]) -> tuple[dict[str, Any] | None, list[str]]:
    """(the ``chosen`` entry, the Pareto front)."""
    chosen, front = choose(results)
    if chosen is None:
        return None, front
    r, old = results[chosen], results["64spp+denoise"]
    return {
        "name": chosen,
        "settings": r["settings"],
        "core_s_per_view": r["core_s_per_view"],
        "core_s_per_view_at_paper_views": cost(r),
        "object_psnr_db": r["psnr_object_db"],
        "edge_psnr_db": r["psnr_edge_db"],
        # at the paper preset's views per object (the choice's basis), and as measured (import shared by --views)
        "speedup_vs_64spp_denoise": round(cost(old) / cost(r), 3),
        "speedup_vs_64spp_denoise_measured_views": round(old["core_s_per_view"] / r["core_s_per_view"], 3),
    }, front


def passes_cost(args: argparse.Namespace) -> int:
    """Core-seconds per view without and with the optional passes (see the module docstring)."""
    refs = [ObjectRef(uid=n, uri=str(OBJECTS / f"{n}.glb"), source="local") for n in args.objects]
    settings = {"rgba+depth": {"passes": ["rgba", "depth"]}, "all passes": {"passes": list(ALL_PASSES)}}
    costs: dict[str, list[float]] = {name: [] for name in settings}
    views: dict[str, list[np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        render_views({"samples": 4}, refs[:1], args, tmp)  # warm-up
        for _ in range(args.rounds):
            for name, extra in settings.items():
                views[name], core_s, _ = render_views(extra, refs, args, tmp)
                costs[name].append(core_s)
                print(f"{name:12} {core_s:6.3f} core-s/view", flush=True)
    base, full = (float(np.median(costs[n])) for n in settings)
    diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(*views.values(), strict=True))
    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "threads": args.threads},
        "objects": args.objects,
        "views_per_object": args.views,
        "resolution": args.resolution,
        "setting": "the paper preset's",
        "core_s_per_view": {n: [round(c, 3) for c in costs[n]] for n in settings},
        "median_core_s_per_view": {"rgba+depth": round(base, 3), "all passes": round(full, 3)},
        "cost_ratio_all_vs_rgba_depth": round(full / base, 3),
        "rgba_max_abs_diff": diff,
    }
    print(f"all passes cost {full / base:.3f}x rgba+depth; RGBA differs by at most {diff} levels")
    write_results(out, args.out if args.out != str(DEFAULT_OUT) else str(DEFAULT_OUT.with_name("render_passes.json")))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", nargs="+", default=list(DEFAULT_OBJECTS), help="names in tests/assets/objects")
    parser.add_argument("--views", type=int, default=2, help="views per object (the paper preset's cameras)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--rechoose", action="store_true", help="only recompute chosen/pareto of --out's results")
    parser.add_argument("--passes-cost", action="store_true", help="measure the normal and albedo passes' cost")
    parser.add_argument(
        "--only", nargs="+", choices=list(GRID), help="only these settings (with 32spp and 64spp+denoise)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="--passes-cost: alternating rounds of each")
    args = parser.parse_args()
    if args.passes_cost:
        return passes_cost(args)
    if args.rechoose:
        import json

        out = json.loads(Path(args.out).read_text())
        out["chosen"], out["pareto"] = summary_of(out["results"])
        write_results(out, args.out)
        return 0
    refs = [ObjectRef(uid=n, uri=str(OBJECTS / f"{n}.glb"), source="local") for n in args.objects]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        render_views({"samples": 4, "denoise": True}, refs[:1], args, tmp)  # warm-up: caches, OIDN, first import
        reference, ref_core_s, _ = render_views(REFERENCE, refs, args, tmp)
        print(f"reference {REFERENCE}: {ref_core_s:.1f} core-s/view", flush=True)
        results: dict[str, dict[str, Any]] = {}
        grid = {n: g for n, g in GRID.items() if not args.only or n in {*args.only, "32spp", "64spp+denoise"}}
        for name, settings in grid.items():
            views, core_s, phases = render_views(settings, refs, args, tmp)
            results[name] = {"settings": settings, "core_s_per_view": round(core_s, 3), "cpu_s": phases}
            results[name] |= scores(views, reference)
            r = results[name]
            print(
                f"{name:28} {core_s:6.2f} core-s/view  object {r['psnr_object_db']:.1f} dB  edge "
                f"{r['psnr_edge_db']:.1f} dB  all {r['psnr_all_db']:.1f} dB  IoU {r['alpha_iou']:.4f}",
                flush=True,
            )
    chosen_entry, front = summary_of(results)
    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "threads": args.threads},
        "objects": args.objects,
        "views_per_object": args.views,
        "resolution": args.resolution,
        "reference": REFERENCE | {"core_s_per_view": round(ref_core_s, 3)},
        "results": results,
        "pareto": front,
        "chosen": chosen_entry,
    }
    print(f"chosen: {chosen_entry}; Pareto front: {', '.join(front)}")
    write_results(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
