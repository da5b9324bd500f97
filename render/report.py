"""A static HTML report of a render output, and optionally of the pairs made from it, to look at in a browser.

python render/report.py --renders out/local/renders --out out/local/report
python render/report.py --renders s3://bucket/renders --pairs s3://bucket/pairs --out report --max-objects 48

Writes ``OUT/index.html`` and ``OUT/img/*.png`` (a local folder; open ``index.html``, or copy the folder whole).
From the render manifest (every object): counts, failure reasons, quality flags (:mod:`invs.quality`), cost per view,
histograms of triangles and seconds per object. From the first ``--max-objects`` objects' shards: per object view 0
as RGBA (on a checkerboard), depth (near is bright), normals and albedo where the shard has those passes
(:mod:`invs.passes`), its flags and provenance, and a histogram of the views' object coverage. With ``--pairs``: the
preprocess summary (the sanity law, coverage, objects skipped by flag), pair counts per split, and source | partial
| mask | target for the first pairs. The page needs no network and no script to show; a small inline script marks
images that fail to load.
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invs import cli, passes, quality, shards, storage, tables
from invs.errors import InvsError
from invs.images import on_white, to_uint8
from invs.preview import depth_image

THUMB = 160
SUMMARY = "summary.json"

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 8px 0 20px; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f3f3f3; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.obj { display: inline-block; vertical-align: top; margin: 0 12px 16px 0; } .obj img { width: 120px; }
.obj .cap { font-size: 12px; max-width: 500px; } .flag { background: #fde2c8; border-radius: 3px; padding: 0 4px; }
#broken { display: none; background: #fbb; padding: 6px; } svg text { font-size: 11px; }
"""
_CHECK_IMAGES = """
window.addEventListener("load", () => {
  const broken = [...document.images].filter((im) => !(im.complete && im.naturalWidth > 0));
  document.body.dataset.images = String(document.images.length);
  document.body.dataset.brokenImages = String(broken.length);
  if (broken.length) {
    const note = document.getElementById("broken");
    note.textContent = broken.length + " image(s) did not load: keep img/ beside index.html";
    note.style.display = "block";
  }
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; numbers right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{_e(c)}</td>' if isinstance(c, int | float) else f"<td>{_e(c)}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def histogram_svg(values: Sequence[float], label: str, bins: int = 20, log: bool = False) -> str:
    """An inline SVG histogram of ``values`` (log10-spaced bins with ``log``)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and (x > 0 or not log)], dtype=np.float64)
    if len(v) == 0:
        return f"<p>{_e(label)}: no values</p>"
    data = np.log10(v) if log else v
    lo, hi = float(data.min()), float(data.max())
    counts, edges = np.histogram(data, bins=bins, range=(lo, hi if hi > lo else lo + 1))
    w, h, pad = 480, 140, 30
    bar = (w - 2 * pad) / bins
    top = max(int(counts.max()), 1)
    bars = "".join(
        f'<rect x="{pad + i * bar:.1f}" y="{h - pad - c / top * (h - 2 * pad):.1f}" width="{bar - 1:.1f}" '
        f'height="{c / top * (h - 2 * pad):.1f}" fill="#4a7bd0"><title>{c}</title></rect>'
        for i, c in enumerate(counts)
    )

    def tick(x: float) -> str:
        return f"{10**x:.3g}" if log else f"{x:.3g}"

    axis = (
        f'<text x="{pad}" y="{h - 12}">{tick(edges[0])}</text>'
        f'<text x="{w - pad}" y="{h - 12}" text-anchor="end">{tick(edges[-1])}</text>'
        f'<text x="{w / 2}" y="{h - 2}" text-anchor="middle">{_e(label)} ({len(v)} values, max bin {top})</text>'
    )
    return f'<svg width="{w}" height="{h}" role="img" aria-label="{_e(label)}">{bars}{axis}</svg>'


def checkerboard(rgba: np.ndarray, square: int = 8) -> np.ndarray:
    """RGBA (H, W, 4) uint8 over a grey checkerboard, so transparency shows."""
    h, w = rgba.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    board = np.where(((yy // square + xx // square) % 2)[..., None] == 0, 205.0, 235.0)
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return (rgba[..., :3] * a + board * (1 - a)).astype(np.uint8)


class _Images:
    """Thumbnails written under ``folder/img``; :meth:`add` returns the ``<img>`` tag with a relative path."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder / "img"
        self.dir.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, image: np.ndarray, title: str) -> str:
        im = Image.fromarray(image)
        im.thumbnail((THUMB, THUMB), Image.BILINEAR)
        im.save(self.dir / f"{name}.png")
        return f'<img src="img/{_e(name)}.png" alt="{_e(title)}" title="{_e(title)}">'


def _read_json(uri: str) -> dict[str, Any] | None:
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def _reason(error: str | None) -> str:
    """A failure's kind: its text up to the first colon (``import failed``, ``empty render``, ...)."""
    return (error or "no reason recorded").split(":", 1)[0].strip()[:80]


def _provenance(rows: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    """Rendered objects by source (the manifest's ``origin``), file type and licence, as the manifest records them."""
    return Counter(
        (r.get("origin") or "not recorded", r.get("file_type") or "not recorded", r.get("license") or "none given")
        for r in rows
    )


def render_section(renders: str, images: _Images, max_objects: int) -> str:
    manifest = tables.read_table(storage.join(renders, tables.MANIFEST_DIR), tables.MANIFEST_SCHEMA)
    rows = list(tables.latest_by_uid(manifest).values())
    if not rows:
        raise InvsError(f"no render manifest under {renders}: --renders must be the --out of render/main.py")
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    summary = _read_json(storage.join(renders, SUMMARY)) or {}
    views = sum(r["num_views"] or 0 for r in ok)
    other = len(rows) - len(ok) - len(failed)
    seconds = sum(r["seconds"] or 0.0 for r in ok)
    parts = [
        "<h2>Objects</h2>",
        table(
            ["objects", "rendered", "failed", "other", "views", "render shards"],
            [[len(rows), len(ok), len(failed), other, views, len({r["shard"] for r in ok})]],
        ),
        "<h2>Provenance</h2>",
        table(
            ["source", "file type", "licence", "objects rendered"],
            [[*k, n] for k, n in _provenance(ok).most_common()],
        ),
        "<h2>Cost</h2>",
        table(
            ["measure", "value"],
            [
                ["wall seconds per view, fetch and import included (manifest)", round(seconds / max(views, 1), 4)],
                ["Blender seconds per view (last job's summary)", summary.get("seconds_per_view", "n/a")],
                ["share of that in Blender's render call", summary.get("render_call_share", "n/a")],
                ["Blender process starts (last job)", summary.get("blender_starts", "n/a")],
            ],
        ),
    ]
    reasons = Counter(_reason(r["error"]) for r in failed)
    example = {}
    for r in failed:
        example.setdefault(_reason(r["error"]), r)
    parts += ["<h2>Failure reasons</h2>"]
    parts.append(
        table(
            ["reason", "objects", "example uid", "example message"],
            [[k, n, example[k]["uid"], (example[k]["error"] or "")[:300]] for k, n in reasons.most_common()],
        )
        if failed
        else "<p>No object failed.</p>"
    )
    flagged = Counter(f for r in rows for f in (r.get("flags") or []))
    parts += [
        "<h2>Quality flags</h2>",
        table(
            ["flag", "objects", "rule"],
            [[f, flagged.get(f, 0), quality.RULES[f]] for f in quality.ALL],
        ),
        "<p>A view flag is the object's when at least half its views carry it; "
        "<code>preprocess.skip_flags</code> leaves such objects out.</p>",
        "<h2>Distributions</h2>",
        histogram_svg([r["triangles"] for r in ok if r.get("triangles")], "triangles per object (log)", log=True),
        histogram_svg([r["seconds"] for r in ok if r.get("seconds")], "seconds per object"),
    ]
    parts += object_gallery(renders, images, max_objects)
    return "\n".join(parts)


def object_gallery(renders: str, images: _Images, max_objects: int) -> list[str]:
    """Per object (the first ``max_objects``): view 0's passes and what the manifest knows of it."""
    cards, coverage = [], []
    found = tables.rendered_shards(renders) if max_objects > 0 else []
    for n, sample in enumerate(shards.iter_render_samples(found)):
        if n == max_objects:
            break
        meta = sample.meta
        coverage += [v.get("alpha_fraction") for v in meta["views"]]
        tiles = [
            images.add(f"{sample.key}-rgba", checkerboard(sample.rgba[0]), "RGBA, view 0"),
            images.add(f"{sample.key}-depth", depth_image(sample.depth[0]), "planar depth, view 0 (near is bright)"),
        ]
        if "normal" in sample.images:
            tiles.append(images.add(f"{sample.key}-normal", sample.images["normal"][0], "camera-frame normals"))
        if "albedo" in sample.images:
            albedo = np.dstack([sample.images["albedo"][0], sample.rgba[0][..., 3]])
            tiles.append(images.add(f"{sample.key}-albedo", to_uint8(on_white(albedo)), "albedo on white"))
        flags = "".join(f' <span class="flag">{_e(f)}</span>' for f in meta.get("flags", []))
        contents = meta.get("contents", {})
        about = (
            f"{sample.num_views} views; {meta['normalization'].get('triangles', '?')} triangles, "
            f"{contents.get('materials', '?')} materials, {contents.get('textures', '?')} textures"
        )
        cards.append(
            f'<div class="obj">{"".join(tiles)}<div class="cap"><b>{_e(sample.key)}</b>{flags}<br>{_e(about)}'
            f"<br>{_e(meta.get('source', ''))}</div></div>"
        )
    if not cards:
        return []
    shown = ", ".join(["RGBA", "depth", *(p for p in passes.IMAGE_PASSES if f"-{p}.png" in "".join(cards))])
    return [
        histogram_svg(coverage, f"object coverage per view (first {len(cards)} objects)"),
        f"<h2>Objects, view 0 ({shown})</h2>",
        *cards,
    ]


def pairs_section(pairs: str, images: _Images, max_pairs: int = 8) -> str:
    summary = _read_json(storage.join(pairs, SUMMARY))
    index = tables.read_table(storage.join(pairs, tables.INDEX_DIR), tables.INDEX_SCHEMA).to_pylist()
    if summary is None and not index:
        raise InvsError(f"no preprocess output under {pairs}: --pairs must be the --out of preprocess/main.py")
    splits = Counter(r["split"] for r in index)
    parts = [
        "<h2>Pairs</h2>",
        table(
            ["pairs", "objects", "train", "val"],
            [[len(index), len({r["uid"] for r in index}), splits.get("train", 0), splits.get("val", 0)]],
        ),
    ]
    if summary:
        law = summary.get("law") or {}
        parts += [
            "<h3>The preprocess law and coverage</h3>",
            table(["figure", "value"], [[k, round(v, 4) if isinstance(v, float) else v] for k, v in law.items()]),
            table(
                ["objects skipped by flag", "failures", "empty views skipped", "pairs per second"],
                [
                    [
                        json.dumps(summary.get("objects_skipped_by_flag") or {}),
                        len(summary.get("failures") or []),
                        summary.get("empty_views_skipped", 0),
                        summary.get("pairs_per_s") or 0,
                    ]
                ],
            ),
        ]
    parts.append(histogram_svg([r["visible_fraction"] for r in index], "visible fraction per pair"))
    parts.append(histogram_svg([r["angle_deg"] for r in index], "angle between source and target (degrees)"))
    cards = []
    for n, sample in enumerate(shards.iter_pair_samples(shards.list_shards(pairs))):
        if n == max_pairs:
            break
        tiles = [
            images.add(f"pair-{sample.key}-{name}", getattr(sample, name), name)
            for name in ("source", "partial", "mask", "target")
        ]
        cards.append(f'<div class="obj">{"".join(tiles)}<div class="cap">{_e(sample.key)}</div></div>')
    if cards:
        parts += ["<h3>source | partial view | mask (white: generate) | target</h3>", *cards]
    return "\n".join(parts)


def build_report(renders: str, out: str | Path, pairs: str | None = None, max_objects: int = 24) -> Path:
    """Write the report into ``out`` (replacing one there) and return ``out/index.html``. Built in a temporary
    folder beside ``out`` and renamed into place, so a failure leaves the previous report whole."""
    final = Path(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{final.name}-", dir=final.parent) as tmp:
        folder = Path(tmp) / "report"
        images = _Images(folder)
        body = render_section(renders, images, max_objects)
        if pairs is not None:
            body += pairs_section(pairs, images)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>iNVS dataset report</title>'
            f"<style>{_STYLE}</style><script>{_CHECK_IMAGES}</script></head><body>"
            f'<h1>iNVS dataset report</h1><div id="broken"></div><p>renders: <code>{_e(renders)}</code>'
            + (f"<br>pairs: <code>{_e(pairs)}</code>" if pairs else "")
            + f"<br>made {stamp}</p>{body}</body></html>"
        )
        (folder / "index.html").write_text(page, encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        folder.rename(final)
    return final / "index.html"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", required=True, help="the render stage's --out (local or s3://)")
    parser.add_argument("--pairs", help="the preprocess stage's --out made from those renders (local or s3://)")
    parser.add_argument("--out", required=True, help="a local folder for index.html and its images")
    parser.add_argument("--max-objects", type=int, default=24, help="objects shown with thumbnails (default 24)")
    args = parser.parse_args(argv)
    page = build_report(args.renders, args.out, args.pairs, args.max_objects)
    print(f"report: {page}")
    return 0


if __name__ == "__main__":
    cli.exit_with(main)
