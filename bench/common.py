"""What every benchmark script shares."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
#: The real test objects (tests/assets/objects, with their sources and licences).
OBJECTS = Path(__file__).resolve().parent.parent / "tests" / "assets" / "objects"


def render_samples(
    uris: list[str], views: int, resolution: int, tmp: str, settings: dict[str, Any] | None = None
) -> list[Any]:
    """The render stage's samples (:class:`invs.shards.RenderSample`, in shard order) of objects rendered with the
    local config into ``tmp``: file names under :data:`OBJECTS` or ``samples:<name>`` built-in objects."""
    from invs import shards
    from invs.config import load_config
    from render.object_ref import ObjectRef
    from render.worker import RenderWorker

    overrides = {"render.out": tmp, "render.views": views, "render.resolution": resolution} | (settings or {})
    worker = RenderWorker(load_config("local", overrides), job_id="bench", index=0, threads=os.cpu_count() or 1)
    refs = [
        ObjectRef("sample_" + u.split(":", 1)[1], u, "samples")
        if u.startswith("samples:")
        else ObjectRef(Path(u).stem, str(OBJECTS / u), "local")
        for u in uris
    ]
    worker.render_batch([(ref, 1) for ref in refs])
    worker.close()
    return list(shards.iter_render_samples(shards.list_shards(tmp)))


def write_results(results: dict[str, Any], out: str | Path) -> None:
    """Write a benchmark's results as indented JSON (creating the folder) and say where."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
