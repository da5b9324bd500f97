"""Framing of the render stage: how much of the frame a normalised object fills, measured on the real test objects.

    .venv/bin/python bench/framing_bench.py                # writes bench/results/framing.json

Renders the real test objects (tests/assets/objects, the problem_* files left out) with the render stage's own
camera sampling (the local preset: radius U(2.2, 2.6), elevation -20..60 degrees, 35 mm on 32 mm) and measures,
per view, the larger side of the alpha bounding box (:func:`invs.images.object_bbox`): as a fraction of the
frame, and as an *apparent extent* in object units at the object centre's distance (``side / fx * radius``),
which does not depend on the camera's distance or lens. Inference frames a person's image like this
(:data:`invs.images.OBJECT_EXTENT`, :func:`invs.images.framing_fraction`), as Zero-1-to-3 scales the object's box
to a fixed fraction of the frame. Measurements, not tests: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.common import OBJECTS, render_samples, write_results
from invs.config import load_config
from invs.images import MIN_ALPHA_FRACTION, object_bbox


def quartiles(values: list[float]) -> dict[str, float]:
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return {k: round(float(v), 4) for k, v in zip(("min", "q1", "median", "q3", "max"), q, strict=True)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "framing.json"))
    args = parser.parse_args()
    names = sorted(p.name for p in OBJECTS.glob("*.glb") if not p.name.startswith("problem_"))
    with tempfile.TemporaryDirectory() as tmp:
        samples = render_samples(names, args.views, args.resolution, tmp, {"render.samples": 4})
    fractions: list[float] = []
    extents: list[float] = []
    offsets: list[float] = []
    objects: dict[str, Any] = {}
    for sample in sorted(samples, key=lambda s: s.key):
        object_extents = []
        for i in range(sample.num_views):
            alpha = sample.rgba[i][..., 3]
            if (alpha > 0).mean() < MIN_ALPHA_FRACTION:
                continue
            x0, y0, x1, y1 = object_bbox(alpha)
            side = max(x1 - x0, y1 - y0)
            fx = float(sample.K(i)[0, 0])
            radius = float(sample.meta["views"][i]["radius"])
            fractions.append(side / alpha.shape[1])
            extents.append(side / fx * radius)
            object_extents.append(side / fx * radius)
            centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - np.array(alpha.shape[::-1]) / 2
            offsets.append(float(np.abs(centre).max()) / alpha.shape[1])
        objects[sample.key] = quartiles(object_extents)
        print(sample.key, objects[sample.key], flush=True)
    camera = load_config("local").camera
    results = {
        "views": args.views,
        "resolution": args.resolution,
        "camera": {"lens_mm": camera.lens_mm, "sensor_width_mm": camera.sensor_width_mm, "radius": camera.radius_range},
        "measure": "larger side of the alpha bounding box (alpha >= 0.5) per view",
        "fraction_of_frame": quartiles(fractions),
        "extent_object_units": quartiles(extents),
        "bbox_centre_offset_fraction": quartiles(offsets),
        "per_object_extent": objects,
    }
    print("fraction of frame:", results["fraction_of_frame"])
    print("apparent extent (object units):", results["extent_object_units"])
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
