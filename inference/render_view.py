"""Take one rendered view out of the render stage's shards: its image, its depth and its camera, ready for infer.py.

python inference/render_view.py --renders out/local/renders --uid sample_mug --view 3 --out out/view

Writes ``OUT/UID_view_NN.png`` (straight-alpha RGBA, as rendered), ``OUT/UID_view_NN_depth.npy`` (planar z per
pixel in object units, 0 = no surface, float32) and ``OUT/UID_view_NN.json`` (the view's camera: ``K``, OpenCV
``c2w``, azimuth, elevation and radius), and prints the ``inference/infer.py`` flags that place the source camera
where this view was taken (``--depth``, ``--source-radius``, ``--source-elevation``). Without ``--uid`` it lists
the objects the shards hold.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from invs import cli, shards, tables
from invs.errors import InvsError


def find_sample(renders: str, uid: str | None) -> shards.RenderSample | list[str]:
    """The render sample of ``uid``, or (``uid`` None) the uids the shards hold."""
    uids = []
    for sample in shards.iter_render_samples(tables.rendered_shards(renders)):
        found = str(sample.meta.get("uid", sample.key))
        if uid is None:
            uids.append(found)
        elif uid in (found, sample.key):
            return sample
    if uid is None:
        return uids
    raise InvsError(f"no object {uid!r} in the renders at {renders} (run without --uid to list them)")


def write_view(sample: shards.RenderSample, view: int, out: Path) -> tuple[Path, Path, dict]:
    """The view's PNG, depth and camera files under ``out``; returns (image, depth, camera)."""
    from PIL import Image

    if not 0 <= view < sample.num_views:
        raise InvsError(f"{sample.key} has views 0..{sample.num_views - 1}, not {view}")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{sample.key}_view_{view:02d}"
    image, depth = out / f"{stem}.png", out / f"{stem}_depth.npy"
    Image.fromarray(sample.rgba[view]).save(image)
    np.save(depth, np.asarray(sample.depth[view], dtype=np.float32))
    meta = sample.meta["views"][view]
    camera = {k: meta[k] for k in ("K", "c2w", "azimuth_deg", "elevation_deg", "radius")}
    (out / f"{stem}.json").write_text(json.dumps(camera, indent=2))
    return image, depth, camera


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.stage_parser("inference/render_view.py", __doc__.splitlines()[0])
    parser.add_argument("--renders", required=True, help="the render stage's --out (local or s3://)")
    parser.add_argument("--uid", help="the object (default: list the objects)")
    parser.add_argument("--view", type=int, default=0, help="the view's index (default 0)")
    parser.add_argument("--out", default="out/view", help="where the files go (local; default out/view)")
    args = parser.parse_args(argv)
    cli.resolve_config(args, {})
    found = find_sample(args.renders, args.uid)
    if isinstance(found, list):
        print("\n".join(found))
        return 0
    image, depth, camera = write_view(found, args.view, Path(args.out))
    print(f"render_view: {found.key} view {args.view} -> {image}, {depth}")
    print(
        f"infer flags: --image {image} --depth {depth} --source-radius {camera['radius']:.4f} "
        f"--source-elevation {camera['elevation_deg']:.4f}"
    )
    return 0


if __name__ == "__main__":
    cli.exit_with(main)
