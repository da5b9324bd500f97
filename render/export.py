"""Export render shards into the layouts other trainers read: Zero-1-to-3's and nerfstudio's.

python render/export.py --renders out/local/renders --format zero123 --out out/export/zero123
python render/export.py --renders s3://bucket/renders --format nerfstudio --out out/export/nerfstudio

Reads the objects that the render manifest marks ``ok`` (local or ``s3://``) and writes, per object, a folder named by
its key:

* ``zero123``: ``NNN.png`` (the RGBA view as rendered) and ``NNN.npy`` (3x4 float32 world-to-camera ``[R | t]`` of
  the Blender camera: x right, y up, looking down -z; what Zero-1-to-3's Blender script saves and its loader turns
  into relative poses), and ``valid_paths.json`` at the top (the object folders, as its ``ObjaverseData`` reads).
* ``nerfstudio``: ``transforms.json`` (``camera_model`` OPENCV with zero distortion, ``fl_x``/``fl_y``/``cx``/``cy``
  in pixels, ``w``/``h``; per frame ``file_path``, ``depth_file_path`` and ``transform_matrix``, the 4x4
  camera-to-world in nerfstudio's convention, OpenGL axes: x right, y up, z backward), ``images/frame_NNNNN.png``
  (RGBA) and ``depth/frame_NNNNN.png`` (16-bit planar z-depth in thousandths of the normalised object's units, 0
  off the object: nerfstudio's default ``depth_unit_scale_factor`` of 1e-3 reads it back in those units).

World frame: the normalised object's (unit bounding sphere about the origin, z up), the same for every view of an
object. Objects already exported are written again; a failure leaves the object's folder absent, not half-written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invs import cli, shards, tables
from invs.cameras import invert_rigid, opencv_c2w_to_blender
from invs.errors import InvsError

#: nerfstudio's default ``depth_unit_scale_factor``: stored depth x this = depth in scene units.
DEPTH_UNIT = 1e-3


def zero123_matrix(c2w: np.ndarray) -> np.ndarray:
    """Zero-1-to-3's 3x4 world-to-camera ``[R | t]`` of the Blender camera for an OpenCV camera-to-world ``c2w``."""
    return invert_rigid(opencv_c2w_to_blender(c2w))[:3, :4].astype(np.float32)


def nerfstudio_matrix(c2w: np.ndarray) -> list[list[float]]:
    """nerfstudio's 4x4 camera-to-world (OpenGL axes: x right, y up, z backward) for an OpenCV ``c2w``."""
    return opencv_c2w_to_blender(c2w).tolist()


def depth_png(depth: np.ndarray) -> np.ndarray:
    """Planar depth in object units -> uint16 in units of :data:`DEPTH_UNIT` (0 stays 0: no depth)."""
    scaled = np.rint(np.asarray(depth, dtype=np.float64) / DEPTH_UNIT)
    if scaled.max(initial=0) > np.iinfo(np.uint16).max:
        raise InvsError(f"depth up to {float(np.max(depth)):.1f} does not fit 16 bits at {DEPTH_UNIT} per step")
    return scaled.astype(np.uint16)


def write_zero123(sample: shards.RenderSample, folder: Path) -> None:
    from PIL import Image

    for i in range(sample.num_views):
        Image.fromarray(sample.rgba[i], "RGBA").save(folder / f"{i:03d}.png")
        np.save(folder / f"{i:03d}.npy", zero123_matrix(sample.c2w(i)))


def write_nerfstudio(sample: shards.RenderSample, folder: Path) -> None:
    from PIL import Image

    (folder / "images").mkdir()
    (folder / "depth").mkdir()
    frames = []
    for i in range(sample.num_views):
        K, (h, w) = sample.K(i), sample.rgba[i].shape[:2]
        name = f"frame_{i + 1:05d}.png"
        Image.fromarray(sample.rgba[i], "RGBA").save(folder / "images" / name)
        Image.fromarray(depth_png(sample.depth[i])).save(folder / "depth" / name)
        frames.append(
            {
                "file_path": f"images/{name}",
                "depth_file_path": f"depth/{name}",
                "transform_matrix": nerfstudio_matrix(sample.c2w(i)),
                **{"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "w": w, "h": h},
            }
        )
    first = {k: frames[0][k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")}
    transforms = {"camera_model": "OPENCV", **first, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(transforms, indent=2) + "\n")


WRITERS: dict[str, Callable[[shards.RenderSample, Path], None]] = {
    "zero123": write_zero123,
    "nerfstudio": write_nerfstudio,
}
FORMATS = tuple(WRITERS)


def export(renders: str, fmt: str, out: str | Path) -> list[str]:
    """Write every ``ok`` object of ``renders`` in layout ``fmt`` under ``out``; returns the object folders written.
    Each object is written to a temporary folder beside its final one and renamed into place."""
    if fmt not in WRITERS:
        raise InvsError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    found = tables.rendered_shards(renders)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for sample in shards.iter_render_samples(found):
        final = root / sample.key
        with tempfile.TemporaryDirectory(prefix=f".{sample.key}-", dir=root) as tmp:
            folder = Path(tmp) / sample.key
            folder.mkdir()
            WRITERS[fmt](sample, folder)
            if final.exists():
                shutil.rmtree(final)
            folder.rename(final)
        written.append(sample.key)
    if fmt == "zero123":
        listed = set(written)
        if (root / "valid_paths.json").is_file():
            listed |= set(json.loads((root / "valid_paths.json").read_text()))
        (root / "valid_paths.json").write_text(json.dumps(sorted(listed)) + "\n")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", required=True, help="the render stage's --out (local or s3://)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="the layout to write")
    parser.add_argument("--out", required=True, help="a local folder; one sub-folder per object")
    args = parser.parse_args(argv)
    written = export(args.renders, args.format, args.out)
    print(f"export: {len(written)} objects in the {args.format} layout under {args.out}")
    return 0


if __name__ == "__main__":
    cli.exit_with(main)
