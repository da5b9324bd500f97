"""The paper preset rehearsed end to end on one CPU machine: what `make rehearsal` runs.

    python -m infra.rehearsal                      # out/rehearsal: local disk, then the local S3 server
    python -m infra.rehearsal --only local         # one half

``configs/rehearsal.yaml`` is ``configs/paper.yaml`` changed only in *where* things run (a local Ray instance,
CPUs, local paths, tiny sizes) and in *which weights* (stand-ins built offline with the real classes and config
keys: :mod:`invs.standins`). Each half runs the user's own entry points as subprocesses, the same driver as a
paper run (``python -m infra.run_all``): render -> preprocess (ZoeDepth, stored VAE latents) -> train (2 DDP
workers, bf16 autocast, EMA, validation, checkpoints) -> export -> evaluate, then ``inference/infer.py`` (ZoeDepth)
on a rendered view.

* **local**: the pipeline with ``train.steps=3``, then again: render and preprocess skip what is done, and training
  resumes from its step-3 checkpoint to 6 (validation at 3 and 6); BoxTextured is held out.
* **s3**: the same on a local SeaweedFS server (``s3://rehearsal/run-...``; checkpoints, the resume, exports and
  evaluations on S3, the model read back from S3 for inference) with ``preprocess.val_fraction=0``: no object held
  out, so validation and evaluation take training pairs and say so.

After each half it checks what the run did, from its own records: render and preprocess outputs (ZoeDepth aligned
to the render, its errors recorded), the pairs' stored latents and that training used them for every batch, no
failure or restart, bf16 autocast on 2 CPU workers, a validation, the resume, the exported ``vae/`` and
``text_encoder/`` bit-identical to the stand-in's, the exported DDIM scheduler's settings as the model's scheduler
file states them, the evaluation's device and split labels, and the views inference wrote. Exit 1 when a check
fails (each failed check is one line), 2 when a stage fails (its last output lines are shown).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invs import storage
from invs.standins import save_standins

REPO = Path(__file__).resolve().parent.parent
HALVES = ("local", "s3")
BUCKET = "rehearsal"


class StageFailed(Exception):
    """A subprocess of the rehearsal exited non-zero."""


@dataclass
class Half:
    """One half of the rehearsal: where its outputs go and what it found."""

    name: str
    out: str  # the run_all --out root (local path or s3://)
    local: Path  # local folder for logs, the input image and inference views
    env: dict[str, str]
    overrides: list[str]
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        self.checks.append((what, bool(ok), detail))


def run(half: Half, label: str, args: list[str]) -> str:
    """Run one entry point (``python ARGS``) from the repo root; its stdout is shown as it comes and returned,
    stderr goes to ``LOCAL/label.log`` (its tail is shown when the step fails)."""
    print(f"rehearsal [{half.name}] $ python {' '.join(args)}", flush=True)
    log = half.local / f"{label}.log"
    lines: list[str] = []
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env=half.env, stdout=subprocess.PIPE, stderr=err, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            print(f"  {line}", end="", flush=True)
        code = proc.wait()
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise StageFailed(f"{label} exited with {code}; last lines of {log}:\n" + "\n".join(tail))
    return "".join(lines)


def read_json(uri: str) -> dict[str, Any]:
    return json.loads(storage.read_text(uri))


def source_image(renders: str, folder: Path) -> Path:
    """The first rendered view of the first object, as a PNG file for ``inference/infer.py``."""
    from invs.shards import iter_render_samples, list_shards

    sample = next(iter(iter_render_samples(list_shards(renders))))
    from PIL import Image

    path = folder / f"{sample.key}_view0.png"
    Image.fromarray(sample.rgba[0]).save(path)
    return path


def first_pair(pairs: str) -> Any:
    """The first pair sample of a preprocess output."""
    from invs.shards import iter_pair_samples, list_shards

    return next(iter(iter_pair_samples(list_shards(pairs))))


def same_tensors(folder_a: str, folder_b: Path) -> tuple[bool, str]:
    """Whether two safetensors folders hold bit-identical tensors (``folder_a`` may be on S3)."""
    import torch
    from safetensors.torch import load_file

    def load(uri: str) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for f in storage.list_files(uri):
            if f.endswith(".safetensors"):
                with tempfile.TemporaryDirectory() as tmp:
                    local = Path(tmp) / "t.safetensors"
                    storage.download_file(f, local)
                    tensors |= load_file(str(local))
        return tensors

    a, b = load(folder_a), load(str(folder_b))
    if not a or set(a) != set(b):
        return False, f"{len(a)} vs {len(b)} tensors"
    differ = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    return not differ, f"{len(a)} tensors, {len(differ)} differ" + (
        f" (first {differ[0]}, {a[differ[0]].dtype})" if differ else ""
    )


#: Lines a user cannot act on that the commands' output must not hold: Ray's C++ error lines, Ray Train's
#: worker-group start-up lines, deprecation warnings.
NOISE = re.compile(r"\] [a-z_]+\.cc:\d+:| E \d+ \d+\] |training worker group|[Dd]eprecat")


def check_half(half: Half, standin: Path, outputs: dict[str, str]) -> None:
    """Read what the half's stages recorded and check it (see the module docstring)."""
    root = half.out
    render = read_json(storage.join(root, "renders", "summary.json"))
    half.check(
        "render: every object rendered", render["rendered"] + render["already_done"] == 4, str(render["rendered"])
    )
    pre = read_json(storage.join(root, "pairs", "summary.json"))
    half.check("preprocess: ZoeDepth depth", pre["depth"] == "zoedepth", pre["depth"])
    pair = first_pair(storage.join(root, "pairs"))
    alignment = pair.meta.get("depth_alignment") or {}
    half.check(
        "preprocess: the estimate aligned to the render, its errors recorded",
        alignment.get("kind") == "robust" and {"errors", "errors_distance_prior"} <= set(alignment),
        str(sorted(alignment)),
    )
    half.check("preprocess: latents stored", pair.latents is not None and pair.latents.shape[:2] == (2, 8), pair.key)
    half.check("preprocess: pairs written", pre["pairs_written"] > 0 or "already" in outputs["first"], str(pre))
    train = read_json(storage.join(root, "train", "summary.json"))
    latents, worker = train["stored_latents"], train["worker"] or {}
    half.check("train: stored latents matched the run's VAE", latents["used"], latents["line"])
    half.check(
        "train: every batch used them",
        worker.get("batches_with_stored_latents", 0) > 0 and worker.get("batches_encoded", 1) == 0,
        f"{worker.get('batches_with_stored_latents')} stored, {worker.get('batches_encoded')} encoded",
    )
    half.check("train: bf16 autocast", worker.get("precision") == "bfloat16", str(worker.get("precision")))
    half.check("train: CPU workers", worker.get("device") == "cpu" and worker.get("world_size") == 2, str(worker))
    half.check("train: validated", bool(worker.get("validations")), str(worker.get("validations")))
    half.check("train: no failure, no restart", not train["restarts"], str(train["restarts"]))
    half.check("train: resumed from step 3", worker.get("started_at_step") == 3, str(worker.get("started_at_step")))
    model = storage.join(root, "train", "model")
    for part in ("vae", "text_encoder"):
        ok, detail = same_tensors(storage.join(model, part), standin / part)
        half.check(f"export: {part}/ bit-identical to the model's", ok, detail)
    scheduler = json.loads(storage.read_text(storage.join(model, "scheduler", "scheduler_config.json")))
    stated = json.loads((standin / "scheduler" / "scheduler_config.json").read_text())
    keys = ("clip_sample", "set_alpha_to_one", "steps_offset", "prediction_type")
    got = {k: scheduler.get(k) for k in keys}
    half.check(
        "export: DDIM settings as the model's scheduler file states",
        all(got[k] == stated.get(k, got[k]) for k in keys),
        str(got),
    )
    held_out = half.name == "local"
    evaluation = read_json(storage.join(root, "eval", "summary.json"))
    half.check("evaluate: on CPU", evaluation.get("device") == "cpu", str(evaluation.get("device")))
    half.check(
        "evaluate: splits labelled truthfully",
        evaluation["split"] == ("val" if held_out else "train")
        and ("no held-out pairs" in outputs["last"]) != held_out,
        evaluation["split"],
    )
    pictures = ["renders.png", "cameras.png", "pairs.png", "train/logs/metrics.png", "eval/predictions.png"]
    pictures += ["eval/results.md", "eval/metrics.csv", "config.yaml"]
    missing = [p for p in pictures if not storage.exists(storage.join(root, p))]
    half.check("run_all: pictures, tables and the resolved config written", not missing, str(missing))
    views = json.loads((half.local / "views" / "summary.json").read_text())
    half.check("infer: views written", views["views"] > 0 and views["device"] == "cpu", str(views))
    texts = [*outputs.values(), *(log.read_text() for log in sorted(half.local.glob("*.log")))]
    noise = [line for text in texts for line in text.splitlines() if NOISE.search(line)]
    half.check("output: no Ray error lines, start-up lines or deprecation warnings", not noise, "; ".join(noise)[:300])
    spec = json.loads(storage.read_text(storage.join(model, "model_index.json")))["spec"]
    half.check(
        "export: the model carries its geometry",
        spec["mask"]["half_angle_deg"] == pair.meta["mask"]["half_angle_deg"]
        and spec["depth"]["training"] == "zoedepth",
        f"mask {spec['mask']}, depth {spec['depth']['training']}, lens {spec['camera']['lens_mm']}",
    )


def rehearse(half: Half, paths: dict[str, Path]) -> None:
    """Run one half's commands (see the module docstring) from a clean start, then check them."""
    shutil.rmtree(half.local, ignore_errors=True)  # a rehearsal before this one: its run would be resumed
    half.local.mkdir(parents=True)
    pipeline = ["-m", "infra.run_all", "--config", "rehearsal", "--out", half.out, *half.overrides]
    outputs = {
        "first": run(half, "run_all-3-steps", [*pipeline, "--set", "train.steps=3"]),
        "last": run(half, "run_all-resumed", pipeline),
    }
    image = source_image(storage.join(half.out, "renders"), half.local)
    views = half.local / "views"
    infer = [
        "inference/infer.py",
        "--config",
        "rehearsal",
        *half.overrides,
        "--model",
        storage.join(half.out, "train", "model"),
    ]
    infer += ["--image", str(image), "--depth-model", str(paths["zoedepth"]), "--turntable", "4", "--out", str(views)]
    text = run(half, "infer", infer)
    outputs["infer"] = text
    (views / "summary.json").write_text(json.dumps({"views": text.count("view_"), "device": "cpu"}))
    check_half(half, paths["inpainting"], outputs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.rehearsal", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/rehearsal", help="local folder for everything (default out/rehearsal)")
    parser.add_argument("--only", choices=HALVES, help="run one half")
    args = parser.parse_args(argv)
    root = Path(args.out).resolve()
    started = time.monotonic()
    paths = save_standins(root / "standins")
    models = [
        f"train.model={paths['inpainting']}",
        f"preprocess.latents={paths['inpainting']}",
        f"preprocess.depth_model={paths['zoedepth']}",
    ]
    overrides = [x for m in models for x in ("--set", m)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    halves = []
    server = None
    try:
        for name in [args.only] if args.only else HALVES:
            if name == "local":
                half = Half(name, str(root / "local"), root / "local", env, overrides)
            else:
                from infra import local_s3

                shutil.rmtree(root / "s3data", ignore_errors=True)
                server = local_s3.start(root / "s3data")
                local_s3.create_bucket(server, BUCKET)
                s3_env = {**env, **server.env()}
                os.environ.update(server.env())  # this process reads the results back
                storage.configure_s3(None)
                s3_overrides = [*overrides, "--set", "preprocess.val_fraction=0"]
                half = Half(name, f"s3://{BUCKET}/run-{int(time.time())}", root / "s3", s3_env, s3_overrides)
            halves.append(half)
            rehearse(half, paths)
    except StageFailed as exc:
        print(f"error: rehearsal: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            from infra import local_s3

            local_s3.stop(server)
    failed = 0
    print(f"rehearsal of configs/paper.yaml (as configs/rehearsal.yaml) in {time.monotonic() - started:.0f} s:")
    for half in halves:
        for what, ok, detail in half.checks:
            failed += not ok
            print(f"  [{half.name}] {'ok  ' if ok else 'FAIL'} {what}" + ("" if ok else f": {detail}"))
    print(f"rehearsal: {sum(len(h.checks) for h in halves) - failed} checks passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
