"""Pictures a person can open: camera rigs drawn around the normalised object's bounding box.

Drawn with our own projection (:func:`invs.cameras.project_points`) through an overview camera, so the picture
also shows the conventions at work: each frustum points at the origin, its top edge (red) is the image's top
row, and world +z is up.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from invs import cameras as C
from invs.images import on_white, to_uint8

_CUBE_EDGES = [(0, 1), (1, 3), (3, 2), (2, 0), (4, 5), (5, 7), (7, 6), (6, 4), (0, 4), (1, 5), (2, 6), (3, 7)]


def _frustum(K: np.ndarray, c2w: np.ndarray, width: int, height: int, depth: float) -> np.ndarray:
    """Camera centre followed by the four image corners (TL, TR, BR, BL) unprojected to ``depth``."""
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    x = (corners[:, 0] - K[0, 2]) / K[0, 0] * depth
    y = (corners[:, 1] - K[1, 2]) / K[1, 1] * depth
    cam = np.stack([x, y, np.full(4, depth)], axis=-1)
    return np.vstack([c2w[:3, 3], cam @ c2w[:3, :3].T + c2w[:3, 3]])


def png_bytes(image: Image.Image) -> bytes:
    """The image encoded as PNG."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def draw_camera_rig(
    specs: list[C.CameraSpec],
    K: np.ndarray,
    width: int,
    height: int,
    size: int = 512,
    view: tuple[float, float, float] = (35.0, 25.0, 7.5),
) -> Image.Image:
    """An overview image of ``specs`` (cameras with intrinsics ``K`` at ``width x height``) and the unit cube."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    K_view = C.intrinsics_from_fov(40.0, size, size)
    c2w_view = C.pose_from_spherical(*view)

    def px(points: np.ndarray) -> list[tuple[float, float]]:
        uv, _ = C.project_points(points, K_view, c2w_view)
        return [(float(u), float(v)) for u, v in uv]

    cube = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    pc = px(cube)
    for a, b in _CUBE_EDGES:
        draw.line([pc[a], pc[b]], fill=(90, 90, 90), width=2)
    o, ax, ay, az = px(np.array([[0, 0, 0], [0.4, 0, 0], [0, 0.4, 0], [0, 0, 0.4]]))
    for end, colour in ((ax, (220, 0, 0)), (ay, (0, 170, 0)), (az, (0, 0, 230))):
        draw.line([o, end], fill=colour, width=3)
    for spec in specs:
        f = px(_frustum(K, spec.c2w(), width, height, depth=0.35))
        for corner in f[1:]:
            draw.line([f[0], corner], fill=(40, 40, 160), width=1)
        draw.line([f[1], f[2]], fill=(220, 0, 0), width=2)  # top edge of the image
        draw.line([f[2], f[3], f[4], f[1]], fill=(40, 40, 160), width=1)
    draw.text((8, 8), f"{len(specs)} cameras; axes x red, y green, z blue; red edge = image top", fill="black")
    return image


def depth_image(depth: np.ndarray) -> np.ndarray:
    """Planar depth (H, W) as a grey picture: near is bright, far is dark, no surface (0) is white."""
    d = depth.astype(np.float32)
    valid = d > 0
    out = np.full(d.shape, 255, dtype=np.uint8)
    if valid.any():
        lo, hi = float(d[valid].min()), float(d[valid].max())
        scaled = (hi - d[valid]) / max(hi - lo, 1e-6)
        out[valid] = (40 + 180 * scaled).astype(np.uint8)
    return np.stack([out] * 3, axis=-1)


def contact_sheet(samples: list, max_views: int = 6, cell: int = 128) -> Image.Image:
    """One row per object (:class:`invs.shards.RenderSample`): views on white, then the depth of view 0."""
    cols = max_views + 1
    sheet = Image.new("RGB", (cols * cell, max(1, len(samples)) * (cell + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, sample in enumerate(samples):
        y = row * (cell + 14)
        draw.text((4, y), f"{sample.key}  ({sample.num_views} views; last column: depth of view 0)", fill="black")
        tiles = [to_uint8(on_white(im)) for im in sample.rgba[:max_views]] + [depth_image(sample.depth[0])]
        for col, tile in enumerate(tiles):
            x = col * cell if col < len(tiles) - 1 else max_views * cell
            sheet.paste(Image.fromarray(tile).resize((cell, cell), Image.BILINEAR), (x, y + 14))
    return sheet


def image_grid(titles: list[str], rows: list[tuple[str, list[np.ndarray]]], cell: int = 128) -> Image.Image:
    """Titled columns of uint8 tiles (RGB ``(H, W, 3)`` or L ``(H, W)``), one labelled row per entry."""
    sheet = Image.new("RGB", (len(titles) * cell, 14 + max(1, len(rows)) * (cell + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(titles):
        draw.text((col * cell + 4, 2), title, fill="black")
    for row, (label, tiles) in enumerate(rows):
        y = 14 + row * (cell + 14)
        draw.text((4, y), label, fill="black")
        for col, tile in enumerate(tiles):
            tile = np.stack([tile] * 3, -1) if tile.ndim == 2 else tile
            sheet.paste(Image.fromarray(tile).resize((cell, cell), Image.NEAREST), (col * cell, y + 14))
    return sheet


def pair_sheet(samples: list, cell: int = 128) -> Image.Image:
    """One row per :class:`invs.shards.PairSample`: source | partial | mask | epipolar region | target."""
    titles = ["source", "partial (splatted)", "mask (white = generate)", "epipolar region", "target"]
    rows = [
        (f"{s.key}  visible {s.meta['visible_fraction']:.2f}", [s.source, s.partial, s.mask, s.epipolar, s.target])
        for s in samples
    ]
    return image_grid(titles, rows, cell)


def prediction_sheet(batch: dict, prediction, labels: list[str] | None = None, cell: int = 128) -> Image.Image:
    """One row per pair: source | partial | mask | prediction | target, from training tensors (images in [-1, 1],
    mask (B, 1, H, W) in [0, 1]) and predictions (B, 3, H, W) in [0, 1]."""

    def rgb(x) -> np.ndarray:
        return to_uint8(x.detach().float().cpu().permute(1, 2, 0).clamp(0, 1).numpy())

    titles = ["source", "partial", "mask (white = generate)", "prediction", "target"]
    rows = []
    for i in range(prediction.shape[0]):
        tiles = [rgb((batch[n][i] + 1) / 2) for n in ("source", "partial")]
        mask = to_uint8(batch["mask"][i, 0].float().cpu().numpy())
        tiles += [mask, rgb(prediction[i]), rgb((batch["target"][i] + 1) / 2)]
        rows.append((labels[i] if labels else f"pair {i}", tiles))
    return image_grid(titles, rows, cell)


def metrics_plot_png(metrics_csv: str) -> bytes:
    """PNG of a training run's ``logs/metrics.csv``: the loss per step (and its running mean) on the left; the
    validation PSNR and SSIM of the model, of its generated views before known pixels are kept, and of the partial
    view alone on the right (a model that learns climbs above the partial view's line)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = list(csv.DictReader(io.StringIO(metrics_csv)))

    def series(name: str) -> tuple[list[int], list[float]]:
        points = [(int(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "")]
        return [p[0] for p in points], [p[1] for p in points]

    figure = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    loss_ax, psnr_ax = figure.subplots(1, 2)
    steps, loss = series("loss")
    loss_ax.plot(steps, loss, color="0.75", linewidth=0.8, label="loss")
    window = max(1, len(loss) // 20)
    if loss:
        # Mean of the last `window` losses (fewer at the start), from cumulative sums: linear in the number of steps.
        sums = np.concatenate([[0.0], np.cumsum(loss)])
        ends = np.arange(1, len(loss) + 1)
        starts = np.maximum(0, ends - window)
        smooth = (sums[ends] - sums[starts]) / (ends - starts)
        loss_ax.plot(steps, smooth, color="C0", label=f"running mean ({window} steps)")
    loss_ax.set(xlabel="step", ylabel="denoising loss", yscale="log", title="training loss")
    loss_ax.legend(loc="upper right", fontsize=8)
    ssim_ax = psnr_ax.twinx()
    styles = {"": ("C1", "model"), "_generated": ("C2", "model, generated"), "_partial": ("0.4", "partial view alone")}
    for suffix, (color, label) in styles.items():
        x, y = series(f"val_psnr{suffix}")
        psnr_ax.plot(x, y, "o-", color=color, label=f"PSNR: {label}")
        x, y = series(f"val_ssim{suffix}")
        ssim_ax.plot(x, y, "s--", color=color, alpha=0.6, label=f"SSIM: {label}")
    psnr_ax.set(xlabel="step", ylabel="PSNR (dB)", title="validation (solid: PSNR, dashed: SSIM)")
    ssim_ax.set_ylabel("SSIM")
    handles = psnr_ax.get_legend_handles_labels()[0] + ssim_ax.get_legend_handles_labels()[0]
    psnr_ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=7, ncol=3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
