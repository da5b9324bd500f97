"""Training-data loader benchmark: pair-shard read throughput from local disk and from S3, against what a training
step consumes.

    .venv/bin/python bench/loader_bench.py                  # writes bench/results/loader.json

Writes synthetic pair shards (noise images: PNG cannot compress them, the worst case for decoding) with their
index, once on local disk and once in a bucket of the local S3 server (SeaweedFS on 127.0.0.1), and reads each
through :class:`train.data.PairStream` (the training loop's reader: shard listing, shuffle buffer, PNG decode to
tensors) with one loader process. The ratio ``loader / step`` divides its samples/s by the samples/s one training
worker consumes: the GPU figure the planner uses (an A100 at 512 px, assumed until ``bench/gpu.sh`` has run) and
the tiny CPU model of ``bench/results/train.json``. Above 1, one loader process keeps a worker busy; the config's
``train.loader_workers`` multiplies it. Timings, not tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, write_results
from invs import shards, storage, tables

#: A100 training samples/s per GPU at 512 px the planner assumes (infra/planner.py) until measured.
GPU_STEP_SAMPLES_PER_S = 12.0


def write_pairs(out: str, n: int, size: int, per_shard: int = 16) -> None:
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    with shards.ShardWriter(storage.join(out, "shards"), "bench", max_samples=per_shard) as writer:
        for i in range(n):
            image = lambda: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)  # noqa: E731
            plane = lambda: rng.integers(0, 256, (size, size), dtype=np.uint8)  # noqa: E731
            key = shards.pair_key(f"obj{i // 8:04d}", 0, i % 8 + 1)
            meta = {k: None for k in shards.PAIR_META_KEYS} | {"uid": f"obj{i // 8:04d}"}
            sample = shards.PairSample(
                key,
                image(),
                image(),
                image(),
                plane(),
                plane(),
                plane(),
                rng.random((size, size), dtype=np.float32),
                meta,
            )
            writer.write(key, shards.encode_pair_sample(sample))
            rows.append({"key": key, "uid": meta["uid"], "split": "train", "src": 0, "tgt": i % 8 + 1})
    published = {k: s.uri for s in writer.published for k in s.keys}
    tables.append_rows(
        storage.join(out, tables.INDEX_DIR), [r | {"shard": published[r["key"]]} for r in rows], tables.INDEX_SCHEMA
    )


def read_rate(data: str, n: int) -> float:
    """Samples/s of one PairStream (one loader process) over ``n`` samples, after a warm-up of 4."""
    from train.data import PairStream, plan_data

    plan = plan_data(data, None, val_pairs=0)
    stream = iter(PairStream(plan, rank=0, world_size=1, loader_workers=1, seed=0, shuffle_buffer=16))
    for _ in range(4):
        next(stream)
    started = time.perf_counter()
    for _ in range(n):
        next(stream)
    return n / (time.perf_counter() - started)


def main() -> int:
    from infra import local_s3

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--out", default=str(RESULTS / "loader.json"))
    args = parser.parse_args()
    tiny = (
        json.loads((RESULTS / "train.json").read_text()).get("tiny", []) if (RESULTS / "train.json").is_file() else []
    )
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "pairs": args.pairs,
        "gpu_step_samples_per_s": {"value": GPU_STEP_SAMPLES_PER_S, "source": "assumed: the planner's A100 figure"},
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        server = local_s3.start(Path(tmp) / "s3")
        try:
            os.environ.update(server.env())
            storage.configure_s3(server.endpoint_url)
            local_s3.create_bucket(server, "bench")
            for size in args.sizes:
                local = str(Path(tmp) / f"pairs{size}")
                remote = f"s3://bench/pairs{size}"
                write_pairs(local, args.pairs, size)
                write_pairs(remote, args.pairs, size)
                encode = [r for r in tiny if r["resolution"] == size and r["mode"] == "encode"]
                step = encode[0]["samples_per_s_per_worker"] if encode else None
                run: dict[str, Any] = {}
                for where, data in (("local", local), ("s3", remote)):
                    rate = read_rate(data, args.pairs - 4)
                    run[where] = {
                        "samples_per_s": round(rate, 2),
                        "ratio_to_gpu_step": round(rate / GPU_STEP_SAMPLES_PER_S, 2),
                        "ratio_to_tiny_cpu_step": round(rate / step, 2) if step else None,
                    }
                results["runs"][str(size)] = run
                print(
                    f"{size} px: "
                    + ", ".join(
                        f"{w} {r['samples_per_s']:.1f} samples/s ({r['ratio_to_gpu_step']:.1f}x an A100 step)"
                        for w, r in run.items()
                    ),
                    flush=True,
                )
        finally:
            local_s3.stop(server)
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
