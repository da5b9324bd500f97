"""Render 3D objects into multi-view render shards (RGBA, planar depth, cameras) plus a parquet manifest.

    python render/main.py --objects samples --out out/renders
    ray submit ray_cluster.yaml render/main.py --objects objaverse --out s3://BUCKET/invs/renders
    ray submit ray_cluster.yaml render/main.py --objects objaverse-xl --xl-alignment --out s3://BUCKET/invs/xl

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.stage_parser("render/main.py", __doc__.splitlines()[0])
    flags = cli.add_settings(
        parser,
        "render",
        {
            "objects": "samples | objaverse | objaverse-xl | a folder, glob or model file | a .txt list | s3:// prefix",
            "out": "output location: a local path or s3://bucket/prefix",
            "num_objects": "render at most this many objects",
            "views": "views per object",
            "resolution": "image width and height in pixels",
            "engine": "",
            "samples": "render samples per pixel",
            "device": "",
            "seed": "camera sampling seed (per object: seed + uid)",
            "workers": "Blender processes (default: CPUs / threads per worker)",
            "timeout_s": ("timeout", "seconds per object before its Blender process is killed"),
        },
    )
    flags |= cli.add_settings(
        parser,
        "objaverse",
        {
            "uids_file": "objaverse: render the uids listed in this file",
            "lvis_categories": ("lvis", "objaverse: only this LVIS category (repeatable)"),
            "licenses": ("license", "objaverse: only this licence (repeatable)"),
            "store": ("objaverse-store", "objaverse: s3://bucket/prefix keeping a copy of every object fetched"),
        },
    )
    flags |= cli.add_settings(
        parser,
        "objaverse_xl",
        {
            "sources": ("xl-source", "objaverse-xl: only this source (repeatable)"),
            "licenses": ("xl-license", "objaverse-xl: only this licence, as the annotations write it (repeatable)"),
            "file_types": ("xl-type", "objaverse-xl: only this file type, e.g. glb, obj, stl (repeatable)"),
            "alignment": ("xl-alignment", "objaverse-xl: only the alignment subset (Zero-1-to-3-XL's fine-tuning set)"),
            "ids_file": (
                "xl-ids-file",
                "objaverse-xl: only the fileIdentifiers/sha256s/uids listed (or a selection.parquet)",
            ),
        },
    )
    parser.add_argument(
        "--select-only",
        action="store_true",
        help="choose the objects, print and write the selection (OUT/selection.parquet for objaverse-xl), render none",
    )
    args = parser.parse_args(argv)
    config = cli.resolve_config(args, flags, locations=("render.out",))
    cli.check_outputs(config, ("render.out",))
    if config.render.engine == "eevee" and config.render.device == "cpu":
        print("warning: EEVEE without a GPU is ~50x slower than Cycles on CPU", file=sys.stderr)
    from render.job import render_objects, select_objects, summary_line

    if args.select_only:
        select_objects(config)
        return 0
    summary = render_objects(config)
    print(f"render: {summary_line(summary)}")
    for failure in summary["failures"][:20]:
        print(f"  failed {failure['uid']}: {failure['error'].splitlines()[0]}")
    print(f"outputs: {summary['out']}/shards, {summary['out']}/manifest, {summary['out']}/summary.json")
    return 0


if __name__ == "__main__":
    cli.exit_with(main)
