"""Novel views of an object from one image: a person's picture and camera moves in, the trained model's views out.

python inference/infer.py --model out/local/train/model --image mug.png --out out/views --azimuth 30 --azimuth -30
python inference/infer.py --model MODEL --image view.png --depth view_depth.npy --turntable 24 --out out/tt

**The model's geometry.** Everything that decides how the inputs are built comes from the model's own spec
(:class:`invs.model_spec.ModelSpec`, in its ``model_index.json``): resolution, camera, source-camera prior, mask
and depth model. A flag (``--lens-mm``, ``--sensor-width-mm``, ``--mask-half-angle``, ``--depth-model``,
``--source-radius``, ``--source-elevation``) overrides one value and prints a line saying so; no config is read for
them (``--config`` / ``--set`` only set the sampling: steps and guidance).

**Cameras** (the conventions of :mod:`invs.cameras`: OpenCV c2w, planar depth, pixel centres at +0.5). The image
is the view of a camera that looks at the object's centre from ``--source-radius`` (default: the model's source
prior, the middle of its training radius range) at ``--source-elevation`` degrees (default: the model's, level with
the object) with the model's field of view (lens on sensor width). A camera move is Zero-1-to-3's: ``--azimuth``
and ``--elevation`` offsets in degrees and an optional ``--radius`` offset in object units, paired by position (a
flag given once applies to every move). Positive azimuth moves the camera to its right around the object
(counter-clockwise seen from above, about world +z), positive elevation moves it up. ``--turntable N`` adds N
moves evenly spaced in azimuth (0, 360/N, ...) at the source's elevation and distance, written as an animated GIF.

**Input.** RGBA with alpha marking the object, or RGB on a plain background (the border's colour; the object is
what differs from it and is not connected to the border: :func:`invs.images.plain_background_alpha`). With
``--depth zoedepth`` (default) the object is framed as the render stage frames a normalised object (its box
centred, the larger side the measured fraction of the frame: :func:`invs.images.framing_fraction`) at the model's
resolution; its depth is the model's depth model's (run at the model's resolution as the preprocess stage runs
it), aligned by the single-image prior :func:`invs.depth.align_to_distance` (median object depth = the source
radius). With ``--depth FILE.npy`` (planar z per pixel of the image in object units, 0 = no surface: the render
stage's ``depth_NNN.npy``) the image is a view as the render stage writes it: square, framed by its own camera,
only resized to the model's resolution (:func:`invs.images.resize_view`); an opaque image then takes its object
from ``depth > 0``. ``--no-reframe`` keeps the framing of an already framed image with ZoeDepth too.

**Views.** Each move's partial view and soft mask are :func:`invs.pair_builder.build_pairs`'s, the code the
preprocess stage makes training pairs with, quantised to 8 bits as the pair shards store them; the model
(:class:`inference.pipeline.NovelViewPipeline`) fills them in, every view with the same ``--seed``, so a view does not
depend on ``--batch-size`` (beyond the network's float rounding, which may differ by one 8-bit level).

**Outputs** under ``--out``, per image a folder named after its file: ``source.png`` (the framed source on white),
``view_NN.png`` (one per move, at the model's resolution), ``turntable.gif`` (and ``turntable.mp4`` where imageio
with ffmpeg is installed), ``views.json`` (every camera); with ``--save-intermediates`` an ``intermediates/``
folder (``NAME_partial.png``, ``NAME_mask.png`` (white = generate) for every view and turntable frame, the frames
as ``turntable_NN.png``, ``depth.npy`` and ``depth.png``). ``grid.png``: one row per image, source | views. Bad
input (an unreadable image, no object, a depth file of the wrong shape, not an exported model) is one ``error:``
line and exit 2 before anything is written.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from invs import cli
from invs.devices import pick_device
from invs.errors import InvsError
from invs.model_spec import ModelSpec

ZOEDEPTH = "zoedepth"
GRID_COLUMNS = 12  # at most this many views per row of grid.png
GIF_MIN_SIDE = 256  # turntable frames are enlarged (nearest, whole factors) to at least this many pixels
TURNTABLE_SECONDS = 4.0  # one revolution


@dataclass(frozen=True)
class Move:
    """A camera move relative to the source camera (Zero-1-to-3's: offsets in degrees and object units)."""

    name: str  # view_00, turntable_03
    azimuth_deg: float
    elevation_deg: float
    radius: float


@dataclass
class Source:
    """One input image as the model's source view: framed RGBA at the model's resolution, and its depth."""

    name: str
    path: str
    rgba: np.ndarray  # (R, R, 4) uint8 straight alpha
    depth: np.ndarray | None  # (R, R) float32 planar depth in object units, 0 = no surface; None: ZoeDepth's, later
    info: dict[str, Any] = field(default_factory=dict)  # how it was read, framed and given depth (views.json)


# ------------------------------------------------------------------------------------------------ cameras


def camera_moves(azimuths: list[float], elevations: list[float], radii: list[float]) -> list[Move]:
    """Moves from the flags, paired by position; a flag given once applies to every move, one not given is 0."""
    lists = {"--azimuth": azimuths, "--elevation": elevations, "--radius": radii}
    count = max(len(v) for v in lists.values())
    if any(len(v) not in (0, 1, count) for v in lists.values()):
        given = ", ".join(f"{len(v)} {flag}" for flag, v in lists.items() if v)
        raise InvsError(f"camera moves are paired by position: got {given}; give each flag once or {count} times")

    def at(values: list[float], i: int) -> float:
        return values[i] if len(values) == count else (values[0] if values else 0.0)

    return [Move(f"view_{i:02d}", at(azimuths, i), at(elevations, i), at(radii, i)) for i in range(count)]


def turntable_moves(frames: int) -> list[Move]:
    return [Move(f"turntable_{i:02d}", 360.0 * i / frames, 0.0, 0.0) for i in range(frames)]


def source_pose(elevation_deg: float, radius: float) -> np.ndarray:
    """The source camera: azimuth 0 (the world frame is chosen so), looking at the object's centre."""
    from invs.cameras import pose_from_spherical

    return pose_from_spherical(0.0, elevation_deg, radius)


def target_pose(move: Move, elevation_deg: float, radius: float) -> np.ndarray:
    """The camera after ``move`` from the source camera at ``elevation_deg`` and ``radius``."""
    from invs.cameras import pose_from_spherical

    return pose_from_spherical(move.azimuth_deg, elevation_deg + move.elevation_deg, radius + move.radius)


def check_moves(moves: list[Move], elevation_deg: float, radius: float) -> None:
    from invs.cameras import BOUNDING_RADIUS

    for m in moves:
        el, r = elevation_deg + m.elevation_deg, radius + m.radius
        if not -90.0 < el < 90.0:
            raise InvsError(f"{m.name}: the camera's elevation would be {el:g} degrees; it must lie in (-90, 90)")
        if not r > BOUNDING_RADIUS:
            raise InvsError(
                f"{m.name}: the camera's distance would be {r:g}; it must exceed the object's bounding radius "
                f"{BOUNDING_RADIUS:.3f} (objects are normalised to a unit box)"
            )


# ------------------------------------------------------------------------------------------------ inputs


def read_image(path: str) -> Any:
    """The image file as a PIL image, fully decoded; InvsError when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except UnidentifiedImageError:
        raise InvsError(f"cannot read the image {path}: not an image file Pillow can open") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InvsError(f"cannot read the image {path}: {reason}") from None


def read_depth(path: str, shape: tuple[int, int]) -> np.ndarray:
    """A depth file (.npy, planar z per pixel of an image of ``shape``), checked; InvsError otherwise."""
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InvsError(f"cannot read the depth file {path}: {reason} (expected a .npy array)") from None
    if depth.ndim != 2 or depth.shape != shape or not np.issubdtype(depth.dtype, np.number):
        raise InvsError(
            f"the depth file {path} holds a {depth.dtype} array of shape {depth.shape}; it must hold one planar "
            f"depth per pixel of its image: shape {shape}"
        )
    depth = depth.astype(np.float32)
    if not np.isfinite(depth).all() or (depth < 0).any():
        raise InvsError(f"the depth file {path} has negative or non-finite values (0 means no surface)")
    return depth


def read_spec(uri: str) -> ModelSpec:
    """The exported model's spec, from its ``model_index.json``, without loading its weights."""
    from inference.pipeline import model_index

    return ModelSpec.from_dict(model_index(uri).get("spec"), uri)


def prepare_source(
    path: str, name: str, depth_arg: str, reframe: bool | None, resolution: int, fraction: float
) -> Source:
    """Read, cut out and frame one image (and read its depth file); ZoeDepth's depth is estimated later."""
    from invs.images import MIN_ALPHA_FRACTION, frame_object, object_rgba, resize_view

    use_file = depth_arg != ZOEDEPTH
    if use_file and reframe:
        raise InvsError(
            f"--reframe with the depth file {depth_arg}: a depth file belongs to its image as it is framed; "
            "drop --reframe, or use --depth zoedepth"
        )
    reframe = (not use_file) if reframe is None else reframe
    image = read_image(path)
    if not reframe and image.width != image.height:
        raise InvsError(
            f"{path} is {image.width}x{image.height}; without reframing (a depth file, or --no-reframe) the image "
            "must be a square view, as the render stage writes them"
        )
    depth = read_depth(depth_arg, (image.height, image.width)) if use_file else None
    rgba = np.asarray(image.convert("RGBA"))
    if depth is not None and rgba[..., 3].min() == 255:  # an opaque image with depth: the object is where it is
        rgba = np.concatenate([rgba[..., :3], np.where(depth > 0, 255, 0).astype(np.uint8)[..., None]], axis=-1)
    try:
        rgba = object_rgba(rgba)
    except ValueError as exc:
        raise InvsError(f"{path}: {exc}") from None
    info: dict[str, Any] = {"image": path, "input_size": [image.width, image.height], "reframed": reframe}
    if reframe:
        rgba = frame_object(rgba, resolution, fraction)
        info["framing_fraction"] = round(fraction, 4)
    else:  # resize_view's K is not used: the source camera is the model's at this resolution
        placeholder = np.zeros(rgba.shape[:2], np.float32)
        rgba, resized, _ = resize_view(rgba, placeholder if depth is None else depth, np.eye(3), resolution)
        depth = None if depth is None else resized.astype(np.float32)
    if float((rgba[..., 3] > 0).mean()) < MIN_ALPHA_FRACTION:
        raise InvsError(f"{path}: the object is too small to see at the model's {resolution} px")
    if depth is not None and not (depth[rgba[..., 3] > 0] > 0).any():
        raise InvsError(f"the depth file {depth_arg} has no depth (> 0) where {path} shows the object")
    info["depth"] = "zoedepth" if depth is None else {"file": depth_arg}
    return Source(name, path, rgba, depth, info)


def estimate_depths(sources: list[Source], spec: ModelSpec, radius: float, device: str, batch_size: int) -> None:
    """The spec's depth model for the sources without depth, at the model's resolution on white (as the preprocess
    stage runs it), aligned so that the median object depth is the source radius
    (:func:`invs.depth.align_to_distance`)."""
    import torch

    from invs.depth import DepthEstimator, align_to_distance, check_available
    from invs.images import on_white

    todo = [s for s in sources if s.depth is None]
    if not todo:
        return
    model_id, flip_average = spec.depth.model, spec.depth.flip_average
    check_available(model_id, alternative="or give the image's depth as --depth FILE.npy")
    dtype = torch.bfloat16 if device == "cuda" else None
    estimator = DepthEstimator.from_pretrained(model_id, device=device, dtype=dtype, flip_average=flip_average)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        images = torch.from_numpy(np.stack([on_white(s.rgba) for s in chunk])).permute(0, 3, 1, 2)
        predicted = estimator(images).float().cpu()
        mask = torch.from_numpy(np.stack([s.rgba[..., 3] > 0 for s in chunk]))
        aligned, alignment = align_to_distance(predicted, mask, radius)
        for k, s in enumerate(chunk):
            s.depth = aligned[k].numpy().astype(np.float32)
            s.info["depth"] = {
                "zoedepth": model_id,
                "aligned": "median object depth = source radius",
                "scale": alignment["scale"][k],
            }


def unique_names(paths: list[str]) -> list[str]:
    """A folder name per image: its file's stem, numbered where stems repeat."""
    stems = [Path(p).stem or "image" for p in paths]
    return [f"{s}_{i:02d}" if stems.count(s) > 1 else s for i, s in enumerate(stems)]


# ------------------------------------------------------------------------------------------------ views


def build_batch(tasks: list[tuple[Source, Move]], spec: ModelSpec, elevation_deg: float, radius: float, device: str):
    """The pairs of a batch of (source, move): :func:`invs.pair_builder.build_pairs` with the model's camera
    and mask."""
    from invs.pair_builder import build_pairs

    K = spec.intrinsics()
    n = len(tasks)
    return build_pairs(
        np.stack([s.rgba for s, _ in tasks]),
        np.stack([s.depth for s, _ in tasks]),
        np.stack([K] * n),
        np.stack([source_pose(elevation_deg, radius)] * n),
        np.stack([K] * n),
        np.stack([target_pose(m, elevation_deg, radius) for _, m in tasks]),
        spec.mask.half_angle_deg,
        cover=spec.mask.cover,
        device=device,
    )


def save_turntable(frames: list[np.ndarray], folder: Path) -> bool:
    """``turntable.gif`` (frames enlarged to at least :data:`GIF_MIN_SIDE` px) and, when imageio with ffmpeg is
    installed, ``turntable.mp4``; returns whether the MP4 was written."""
    from PIL import Image

    factor = max(1, math.ceil(GIF_MIN_SIDE / frames[0].shape[0]))
    big = [Image.fromarray(f).resize((f.shape[1] * factor, f.shape[0] * factor), Image.NEAREST) for f in frames]
    duration = max(20, round(TURNTABLE_SECONDS * 1000 / len(frames)))
    big[0].save(folder / "turntable.gif", save_all=True, append_images=big[1:], duration=duration, loop=0)
    try:
        import imageio.v3 as iio
        import imageio_ffmpeg  # noqa: F401  (the writer's ffmpeg)
    except ImportError:
        return False
    fps = max(1, round(len(frames) / TURNTABLE_SECONDS))
    iio.imwrite(folder / "turntable.mp4", np.stack([np.asarray(b) for b in big]), fps=fps, codec="libx264")
    return True


def write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def move_title(m: Move) -> str:
    radius = f" r{m.radius:+g}" if m.radius else ""
    return f"az {m.azimuth_deg:+g} el {m.elevation_deg:+g}{radius}"


# ------------------------------------------------------------------------------------------------ main


@dataclass
class InferRequest:
    """What to make (see the module docstring): the typed form of the command line."""

    model: str
    images: list[str]
    out: str
    azimuths: list[float] = field(default_factory=list)
    elevations: list[float] = field(default_factory=list)
    radii: list[float] = field(default_factory=list)
    turntable: int | None = None
    depths: list[str] = field(default_factory=list)  # "zoedepth" or a .npy path, once or per image
    reframe: bool | None = None
    steps: int = 20
    guidance_scale: float = 1.0
    seed: int = 0
    device: str | None = None
    batch_size: int = 4
    save_intermediates: bool = False
    #: Overrides of the model's spec (None: the model's own), keys as :meth:`ModelSpec.overridden` takes them.
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """A checked request: the spec in force, the source camera and the moves."""

    spec: ModelSpec
    radius: float
    elevation: float
    moves: list[Move]
    turntable: list[Move]
    depths: list[str]
    notes: list[str]


def plan_request(request: InferRequest) -> Plan:
    """Check everything about ``request`` that needs no image: flags, the model's spec and its overrides, moves."""
    from invs import cameras

    for flag, value in (("--steps", request.steps), ("--batch-size", request.batch_size)):
        if value < 1:
            raise InvsError(f"{flag} must be at least 1, got {value}")
    if request.turntable is not None and request.turntable < 2:
        raise InvsError(f"--turntable needs at least 2 frames, got {request.turntable}")
    spec, notes = read_spec(request.model).overridden(**request.overrides)
    radius, elevation = spec.camera.source_radius, spec.camera.source_elevation_deg
    if not radius > cameras.BOUNDING_RADIUS:
        raise InvsError(
            f"--source-radius {radius:g} must exceed the object's bounding radius {cameras.BOUNDING_RADIUS:.3f}"
        )
    if not -90.0 < elevation < 90.0:
        raise InvsError(f"--source-elevation {elevation:g} must lie in (-90, 90)")
    moves = camera_moves(request.azimuths, request.elevations, request.radii)
    turntable = turntable_moves(request.turntable) if request.turntable else []
    if not moves and not turntable:
        raise InvsError("nothing to make: give camera moves (--azimuth, --elevation, --radius) or --turntable N")
    check_moves(moves + turntable, elevation, radius)
    depths = request.depths or [ZOEDEPTH]
    if len(depths) == 1:
        depths = depths * len(request.images)
    if len(depths) != len(request.images):
        raise InvsError(
            f"--depth is given {len(depths)} times for {len(request.images)} images: give it once or per image"
        )
    out = Path(request.out)
    if out.exists() and not out.is_dir():
        raise InvsError(f"--out {out} exists and is not a directory")
    return Plan(spec, radius, elevation, moves, turntable, depths, notes)


def make_views(
    model: Any, sources: list[Source], plan: Plan, request: InferRequest, out: Path, device: str
) -> dict[tuple[str, str], np.ndarray]:
    """Every (source, move) view, in batches; writes ``view_NN.png`` and the intermediates as they come."""
    from invs.images import on_white, to_uint8
    from invs.pair_builder import model_tensors
    from invs.preview import depth_image
    from invs.progress import Progress

    for s in sources:
        write_png(out / s.name / "source.png", to_uint8(on_white(s.rgba)))
        if request.save_intermediates:
            (out / s.name / "intermediates").mkdir(parents=True, exist_ok=True)
            np.save(out / s.name / "intermediates" / "depth.npy", s.depth)
            write_png(out / s.name / "intermediates" / "depth.png", depth_image(s.depth))
    tasks = [(s, m) for s in sources for m in plan.moves + plan.turntable]
    results: dict[tuple[str, str], np.ndarray] = {}
    progress = Progress("infer", len(tasks), "views")
    for start in range(0, len(tasks), request.batch_size):
        chunk = tasks[start : start + request.batch_size]
        built = build_batch(chunk, plan.spec, plan.elevation, plan.radius, device)
        inputs = model_tensors(built.source, built.partial, built.mask)
        views = model.predict(inputs, request.steps, request.guidance_scale, seeds=[request.seed] * len(chunk))
        views_u8 = to_uint8(views.permute(0, 2, 3, 1).float().cpu().numpy())
        for k, (s, m) in enumerate(chunk):
            results[(s.name, m.name)] = views_u8[k]
            folder = out / s.name
            if m.name.startswith("view_"):
                write_png(folder / f"{m.name}.png", views_u8[k])
            if request.save_intermediates:
                write_png(folder / "intermediates" / f"{m.name}_partial.png", built.partial[k])
                write_png(folder / "intermediates" / f"{m.name}_mask.png", built.mask[k])
                if m in plan.turntable:
                    write_png(folder / "intermediates" / f"{m.name}.png", views_u8[k])
        progress.update(start + len(chunk))
    progress.close()
    return results


def views_record(source: Source, plan: Plan, request: InferRequest) -> dict[str, Any]:
    """``views.json``: how the source was read and placed, the model's spec in force, and every camera."""
    elevation, radius = plan.elevation, plan.radius
    return {
        **source.info,
        "model": request.model,
        "resolution": plan.spec.resolution,
        "spec": plan.spec.to_dict(),
        "steps": request.steps,
        "guidance_scale": request.guidance_scale,
        "seed": request.seed,
        "K": plan.spec.intrinsics().tolist(),
        "source": {
            "azimuth_deg": 0.0,
            "elevation_deg": elevation,
            "radius": radius,
            "c2w": source_pose(elevation, radius).tolist(),
        },
        "views": [
            {
                "name": m.name,
                "azimuth_offset_deg": m.azimuth_deg,
                "elevation_offset_deg": m.elevation_deg,
                "radius_offset": m.radius,
                "c2w": target_pose(m, elevation, radius).tolist(),
            }
            for m in plan.moves + plan.turntable
        ],
    }


def infer(request: InferRequest) -> dict[str, Any]:
    """Everything :func:`main` does after parsing (see the module docstring); returns a summary."""
    from inference.pipeline import NovelViewPipeline
    from invs.images import framing_fraction, on_white, to_uint8
    from invs.preview import image_grid

    plan = plan_request(request)
    for note in plan.notes:
        print(note)
    spec, device, out = plan.spec, pick_device(request.device), Path(request.out)
    # Everything that can fail on bad input is checked before anything is written.
    fraction = framing_fraction(spec.camera.lens_mm, spec.camera.sensor_width_mm, plan.radius)
    sources = [
        prepare_source(path, name, depth, request.reframe, spec.resolution, fraction)
        for path, name, depth in zip(request.images, unique_names(request.images), plan.depths, strict=True)
    ]
    model = NovelViewPipeline.load(request.model, device=device)
    estimate_depths(sources, spec, plan.radius, device, request.batch_size)
    out.mkdir(parents=True, exist_ok=True)
    results = make_views(model, sources, plan, request, out, device)

    mp4 = None
    rows = []
    shown = plan.moves or plan.turntable[:: max(1, math.ceil(len(plan.turntable) / GRID_COLUMNS))]
    for s in sources:
        if plan.turntable:
            mp4 = save_turntable([results[(s.name, m.name)] for m in plan.turntable], out / s.name)
        (out / s.name / "views.json").write_text(json.dumps(views_record(s, plan, request), indent=2))
        rows.append((s.name, [to_uint8(on_white(s.rgba))] + [results[(s.name, m.name)] for m in shown]))
    image_grid(["source", *(move_title(m) for m in shown)], rows).save(out / "grid.png")
    return {
        "images": len(sources),
        "views": len(plan.moves),
        "turntable": len(plan.turntable),
        "resolution": spec.resolution,
        "out": str(out),
        "mp4": mp4,
        "device": device,
    }


def parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = cli.stage_parser("inference/infer.py", __doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="exported model (train/run.py's OUT/model; local or s3://)")
    p.add_argument("--image", action="append", required=True, metavar="PATH", help="source image (repeatable)")
    p.add_argument("--out", required=True, help="output folder (local)")
    p.add_argument(
        "--azimuth", type=float, action="append", metavar="DEG", help="azimuth offset of a move (repeatable)"
    )
    p.add_argument(
        "--elevation", type=float, action="append", metavar="DEG", help="elevation offset of a move (repeatable)"
    )
    p.add_argument(
        "--radius", type=float, action="append", metavar="R", help="distance offset of a move (repeatable; default 0)"
    )
    p.add_argument("--turntable", type=int, metavar="N", help="also N views around the object, as turntable.gif")
    p.add_argument(
        "--depth",
        action="append",
        metavar="zoedepth|PATH.npy",
        help="source depth: the model's depth model (default) or a .npy of planar depth per pixel of the image "
        "(once, or per image)",
    )
    p.add_argument(
        "--reframe",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="frame the object as the renders are (default: with ZoeDepth, not with a depth file)",
    )
    geometry = p.add_argument_group("the model's geometry (default: the model's own spec; a flag overrides it)")
    for flag, metavar, text in (
        ("--source-radius", "R", "distance of the source camera from the object's centre, object units"),
        ("--source-elevation", "DEG", "elevation of the source camera"),
        ("--lens-mm", "MM", "focal length of the model's camera"),
        ("--sensor-width-mm", "MM", "sensor width of the model's camera"),
        ("--mask-half-angle", "DEG", "angle at which the soft mask reaches 0.5"),
    ):
        geometry.add_argument(flag, type=float, metavar=metavar, help=text)
    geometry.add_argument("--depth-model", help="ZoeDepth hub id or local directory")
    flags = cli.add_settings(
        p,
        "train",
        {
            "val_inference_steps": ("steps", "denoising steps per view"),
            "guidance_scale": "classifier-free guidance (1: none)",
        },
    )
    p.set_defaults(setting_flags=flags)
    p.add_argument("--seed", type=int, default=0, help="noise seed (the same for every view)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    p.add_argument("--batch-size", type=int, default=4, metavar="B", help="views per model call")
    p.add_argument("--save-intermediates", action="store_true", help="also the partial views, masks and depth")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = cli.resolve_config(args, args.setting_flags)
    request = InferRequest(
        model=args.model,
        images=args.image,
        out=args.out,
        azimuths=args.azimuth or [],
        elevations=args.elevation or [],
        radii=args.radius or [],
        turntable=args.turntable,
        depths=args.depth or [],
        reframe=args.reframe,
        steps=config.train.val_inference_steps,
        guidance_scale=config.train.guidance_scale,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        save_intermediates=args.save_intermediates,
        overrides={
            "camera.source_radius": args.source_radius,
            "camera.source_elevation_deg": args.source_elevation,
            "camera.lens_mm": args.lens_mm,
            "camera.sensor_width_mm": args.sensor_width_mm,
            "mask.half_angle_deg": args.mask_half_angle,
            "depth.model": args.depth_model,
        },
    )
    summary = infer(request)
    print(
        f"infer: {summary['images']} image(s) x ({summary['views']} views + {summary['turntable']} turntable frames) "
        f"at {summary['resolution']} px on {summary['device']} -> {summary['out']}"
    )
    if summary["mp4"] is False:
        print("note: turntable.mp4 skipped: imageio with ffmpeg is not installed (turntable.gif has the frames)")
    print(f"outputs: {Path(summary['out']) / 'grid.png'}, one folder per image (source.png, view_NN.png, views.json)")
    return 0


if __name__ == "__main__":
    cli.exit_with(main)
