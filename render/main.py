"""Render 3D objects into multi-view render shards, as a Ray job.

python render/main.py --objects samples --out out/renders
ray submit ray_cluster.yaml render/main.py --objects objaverse --out s3://BUCKET/invs/renders
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (how `ray submit` calls it): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invs import cli
from invs.errors import InvsError

FLAGS = {
    "objects": "render.objects",
    "out": "render.out",
    "num_objects": "render.num_objects",
    "views": "render.views",
    "resolution": "render.resolution",
    "engine": "render.engine",
    "samples": "render.samples",
    "device": "render.device",
    "seed": "render.seed",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.stage_parser("render/main.py", __doc__.splitlines()[0])
    parser.add_argument("--objects", help="objaverse | samples | a directory or glob of model files | s3://prefix")
    parser.add_argument("--out", help="output location: a local path or s3://bucket/prefix")
    parser.add_argument("--num-objects", type=int, help="render at most this many objects")
    parser.add_argument("--views", type=int, help="views per object")
    parser.add_argument("--resolution", type=int, help="image width and height in pixels")
    parser.add_argument("--engine", choices=["cycles", "eevee"])
    parser.add_argument("--samples", type=int, help="render samples per pixel")
    parser.add_argument("--device", choices=["cpu", "gpu"])
    parser.add_argument("--seed", type=int, help="camera sampling seed (per object: seed + uid)")
    args = parser.parse_args(argv)
    config = cli.resolve_config(args, FLAGS, locations=("render.out",))
    cli.check_outputs(config, ("render.out",))
    raise InvsError("the render stage is not implemented yet: only configuration checking runs")


if __name__ == "__main__":
    cli.run(main)
