"""Fine-tune a Stable Diffusion inpainting model on pair shards with Ray Train.

ray job submit --address http://HEAD:8265 --working-dir . -- python train/run.py --data s3://B/pairs --out s3://B/train
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (how `ray job submit` calls it): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invs import cli
from invs.errors import InvsError

FLAGS = {
    "data": "train.data",
    "out": "train.out",
    "model": "train.model",
    "tiny": "train.tiny",
    "steps": "train.steps",
    "batch_size": "train.batch_size",
    "num_workers": "train.num_workers",
    "use_gpu": "train.use_gpu",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.stage_parser("train/run.py", __doc__.splitlines()[0])
    parser.add_argument("--data", help="pair shards from the preprocess stage: local path or s3://bucket/prefix")
    parser.add_argument("--out", help="checkpoints and the exported pipeline: local path or s3://bucket/prefix")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model", help="diffusers inpainting model: hub id or local path")
    model.add_argument("--tiny", action="store_const", const=True, help="small random-config model built offline")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int, help="per worker")
    parser.add_argument("--num-workers", type=int, help="Ray Train workers")
    parser.add_argument("--use-gpu", action="store_const", const=True)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    args = parser.parse_args(argv)
    config = cli.resolve_config(args, FLAGS, locations=("train.data", "train.out"))
    cli.check_outputs(config, ("train.out",))
    raise InvsError("the train stage is not implemented yet: only configuration checking runs")


if __name__ == "__main__":
    cli.run(main)
