"""Objaverse-XL selection benchmark: the driver's selection over annotation files of Objaverse-XL's size, against the
way the ``objaverse`` package's users select today.

    .venv/bin/python bench/xl_select_bench.py                    # 2M rows; writes bench/results/xl_select.json
    .venv/bin/python bench/xl_select_bench.py --rows 10000000    # the full size (needs ~8 GB for the baseline)

Writes synthetic annotation files in the package's layout (``github/github.parquet`` and the other three sources,
the real columns, a ``metadata`` JSON column of ~200 bytes as the real files have, a share of rows repeating
another's sha256), then, each in a fresh process so that peak memory is its own:

* **baseline**: ``objaverse.xl.get_annotations(download_dir)`` (pandas reads every column of every file), then the
  same filters in pandas (file types, licences) and ``drop_duplicates("sha256")``, then ``sample(n, random_state)``;
* **invs**: :func:`render.objaverse_xl.select` (the five columns, Arrow compute, the same filters, dedup and sample,
  the refs built for the chosen objects).

Both select the same number of objects. Reports wall seconds, peak resident memory (MiB) and the ratios. Timings,
not tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, write_results

SHARES = {"github": 0.6, "thingiverse": 0.33, "smithsonian": 0.002, "sketchfab": 0.068}  # ~XL's mix
TYPES = ["glb", "obj", "fbx", "stl", "ply", "gltf", "dae", "usdz", "blend", "abc"]
LICENSES = ["MIT License", "Apache License 2.0", "GPL", "CC0", "by", "by-nc", "Creative Commons - Attribution"]
KEEP_TYPES = ["glb", "obj", "fbx", "stl"]
KEEP_LICENSES = ["MIT License", "CC0", "by"]
SAMPLE = 100_000


def write_annotations(root: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for source, share in SHARES.items():
        n = max(1, int(rows * share))
        idx = np.arange(n)
        sha_ids = np.where(rng.random(n) < 0.15, rng.integers(0, max(1, n // 2), n), idx + 10 * rows)  # 15% repeats
        ids = [f"https://example.org/{source}/{i}" for i in idx]
        table = pa.table(
            {
                "fileIdentifier": ids,
                "source": [source] * n,
                "license": [LICENSES[i] for i in rng.integers(0, len(LICENSES), n)],
                "fileType": [TYPES[i] for i in rng.integers(0, len(TYPES), n)],
                "sha256": [f"{s:064x}" for s in sha_ids],
                "metadata": [
                    json.dumps({"repo": f"org{i % 9973}/repo{i % 977}", "size": int(i), "pad": "x" * 150}) for i in idx
                ],
            }
        )
        (root / source).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / source / f"{source}.parquet")


#: Peak resident memory of this process image (VmHWM; ``ru_maxrss`` would carry the parent's peak across exec).
PEAK = """
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

BASELINE = (
    PEAK
    + """
import sys, time, json
t0 = time.perf_counter()
import objaverse.xl as oxl
df = oxl.get_annotations(download_dir=sys.argv[1])
df = df[df["fileType"].str.lower().isin({types}) & df["license"].str.lower().isin({licenses})]
df = df.drop_duplicates("sha256")
df = df.sample(min(len(df), {sample}), random_state=0)
print(json.dumps({{"s": time.perf_counter() - t0, "rss_mb": peak_mb(), "selected": len(df)}}))
"""
)

INVS = (
    PEAK
    + """
import sys, time, json
t0 = time.perf_counter()
from invs.config import load_config
from render import objaverse_xl
config = load_config("local", {{"render.objects": "objaverse-xl", "objaverse.cache": sys.argv[1],
    "objaverse_xl.sources": ["github", "thingiverse", "smithsonian"], "objaverse_xl.file_types": {types},
    "objaverse_xl.licenses": {licenses}, "render.num_objects": {sample}}})
selection = objaverse_xl.select(config)
print(json.dumps({{"s": time.perf_counter() - t0, "rss_mb": peak_mb(), "selected": len(selection.refs),
                  "counts": selection.counts()}}))
"""
)


def run(code: str, root: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="annotation rows over the four sources")
    parser.add_argument("--out", default=str(RESULTS / "xl_select.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="invs-xl-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_annotations(root, args.rows)
        print(f"wrote {args.rows:,} annotation rows in {time.perf_counter() - t0:.1f} s")
        # Sketchfab needs Objaverse 1.0's index for object paths; both sides leave it out (same rows compared)
        (root / "sketchfab" / "sketchfab.parquet").unlink()
        (root / "sketchfab").rmdir()
        fmt = {"types": KEEP_TYPES, "licenses": [x.lower() for x in KEEP_LICENSES], "sample": SAMPLE}
        baseline_code = BASELINE.format(**fmt).replace("oxl.get_annotations(", "_get(")
        baseline_code = baseline_code.replace(
            "import objaverse.xl as oxl\n",
            "import objaverse.xl as oxl, pandas as pd\n"
            "_get = lambda download_dir: pd.concat([d.get_annotations(download_dir=download_dir) for s, d in "
            "oxl.downloaders.items() if s != 'sketchfab'], ignore_index=True)\n",
        )
        baseline = run(baseline_code, root)
        ours = run(INVS.format(**fmt), root)
    results = {
        "rows": args.rows,
        "filters": {"file_types": KEEP_TYPES, "licenses": KEEP_LICENSES, "sample": SAMPLE},
        "baseline": {"what": "objaverse.xl get_annotations + pandas filters, drop_duplicates, sample"} | baseline,
        "invs": {"what": "render.objaverse_xl.select (5 columns, Arrow compute)"}
        | {k: v for k, v in ours.items() if k != "counts"},
        "invs_counts": ours["counts"],
        "speedup": round(baseline["s"] / ours["s"], 2),
        "memory_ratio": round(baseline["rss_mb"] / ours["rss_mb"], 2),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }
    print(
        f"baseline {baseline['s']:.1f} s {baseline['rss_mb']:.0f} MiB; "
        f"invs {ours['s']:.1f} s {ours['rss_mb']:.0f} MiB; "
        f"speedup x{results['speedup']}, memory /{results['memory_ratio']}"
    )
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
