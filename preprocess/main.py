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
from invs.errors import InvsError

FLAGS = {
    "renders": "preprocess.renders",
    "out": "preprocess.out",
    "pairs_per_object": "preprocess.pairs_per_object",
    "depth": "preprocess.depth",
    "depth_model": "preprocess.depth_model",
    "resolution": "preprocess.resolution",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.stage_parser("preprocess/main.py", __doc__.splitlines()[0])
    parser.add_argument("--renders", help="render stage output: a local path or s3://bucket/prefix")
    parser.add_argument("--out", help="output location: a local path or s3://bucket/prefix")
    parser.add_argument("--pairs-per-object", type=int)
    parser.add_argument("--depth", choices=["zoedepth", "gt"], help="ZoeDepth on the source view, or renderer depth")
    parser.add_argument("--depth-model", help="ZoeDepth hub id or local path")
    parser.add_argument("--resolution", type=int)
    args = parser.parse_args(argv)
    config = cli.resolve_config(args, FLAGS, locations=("preprocess.renders", "preprocess.out"))
    cli.check_outputs(config, ("preprocess.out",))
    raise InvsError("the preprocess stage is not implemented yet: only configuration checking runs")


if __name__ == "__main__":
    cli.run(main)
