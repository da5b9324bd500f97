"""Render 3D objects into multi-view render shards (RGBA, planar depth, cameras) plus a parquet manifest.

    python render/main.py --objects samples --out out/renders
    ray submit ray_cluster.yaml render/main.py --objects objaverse --out s3://BUCKET/invs/renders

Outputs under --out: shards/*.tar (webdataset, one sample per object), manifest/*.parquet (one row per attempt),
config.yaml (the resolved config) and summary.json. Re-running with the same --out resumes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (how `ray submit` calls it): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invs import cli

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
    "workers": "render.workers",
    "timeout": "render.timeout_s",
    "uids_file": "render.uids_file",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.stage_parser("render/main.py", __doc__.splitlines()[0])
    parser.add_argument(
        "--objects", help="samples | objaverse | a directory, glob or model file | a .txt list | an s3:// prefix"
    )
    parser.add_argument("--out", help="output location: a local path or s3://bucket/prefix")
    parser.add_argument("--num-objects", type=int, help="render at most this many objects")
    parser.add_argument("--views", type=int, help="views per object")
    parser.add_argument("--resolution", type=int, help="image width and height in pixels")
    parser.add_argument("--engine", choices=["cycles", "eevee"])
    parser.add_argument("--samples", type=int, help="render samples per pixel")
    parser.add_argument("--device", choices=["cpu", "gpu"])
    parser.add_argument("--seed", type=int, help="camera sampling seed (per object: seed + uid)")
    parser.add_argument("--workers", type=int, help="Blender processes (default: CPUs / threads per worker)")
    parser.add_argument("--timeout", type=float, help="seconds per object before its Blender process is killed")
    parser.add_argument("--uids-file", help="objaverse: render the uids listed in this file")
    parser.add_argument("--lvis", action="append", help="objaverse: only this LVIS category (repeatable)")
    parser.add_argument("--license", action="append", help="objaverse: only this licence (repeatable)")
    args = parser.parse_args(argv)
    if args.lvis:
        args.overrides.append(f"render.lvis_categories={args.lvis!r}")
    if args.license:
        args.overrides.append(f"render.licenses={args.license!r}")
    config = cli.resolve_config(args, FLAGS, locations=("render.out",))
    cli.check_outputs(config, ("render.out",))
    if config.render.engine == "eevee" and config.render.device == "cpu":
        print("warning: EEVEE without a GPU is ~50x slower than Cycles on CPU", file=sys.stderr)
    from render.job import run

    summary = run(config)
    print(
        f"render: {summary['rendered']} rendered, {summary['failed']} failed, {summary['already_done']} already "
        f"done, {len(summary['given_up'])} given up; {summary['views']} views in {summary['wall_s']:.0f} s"
    )
    for failure in summary["failures"][:20]:
        print(f"  failed {failure['uid']}: {failure['error'].splitlines()[0]}")
    print(f"outputs: {summary['out']}/shards, {summary['out']}/manifest, {summary['out']}/summary.json")
    return 0


if __name__ == "__main__":
    cli.run(main)
