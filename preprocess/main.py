"""Turn render shards into training pairs (depth, softmax-splatted partial views, masks), as a Ray job.

python preprocess/main.py --renders out/renders --out out/pairs --depth gt
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (how `ray submit` calls it): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invs import cli


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.stage_parser("preprocess/main.py", __doc__.splitlines()[0])
    flags = cli.add_settings(
        parser,
        "preprocess",
        {
            "renders": "render stage output: a local path or s3://bucket/prefix",
            "out": "output location: a local path or s3://bucket/prefix",
            "pairs_per_object": "view pairs drawn per object",
            "depth": "ZoeDepth on the source view, or the renderer's depth",
            "depth_model": "ZoeDepth hub id or local path",
            "resolution": "pair image size in pixels",
            "latents": "also store VAE latents of target and partial view: 'tiny' or a diffusers model id/path",
            "workers": "pair-making actors (default: CPUs - 1)",
            "device": "where depth, splatting and masks run",
        },
    )
    args = parser.parse_args(argv)
    config = cli.resolve_config(args, flags, locations=("preprocess.renders", "preprocess.out"))
    cli.check_outputs(config, ("preprocess.out",))
    from preprocess.job import make_pairs, summary_lines

    summary = make_pairs(config)
    first, *rest = summary_lines(summary)
    print(f"preprocess: {first}")
    for line in rest:
        print(f"  {line}")
    for failure in summary["failures"][:20]:
        print(f"  failed {failure['uid'] or failure['render_shard']}: {failure['error'].splitlines()[0]}")
    print(f"outputs: {summary['out']}/shards, {summary['out']}/index, {summary['out']}/summary.json")
    return 0


if __name__ == "__main__":
    cli.exit_with(main)
