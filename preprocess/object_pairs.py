"""Per-object work of the preprocess stage, as plain functions (the Ray Data job in :mod:`preprocess.job` maps them).

For one render sample: choose view pairs, get the source views' depth (ground truth, or ZoeDepth aligned to the
render's depth by a robust scale and shift), build the partial target views and masks (:mod:`invs.partial_view`),
measure the sanity law against the target's ground truth (:mod:`preprocess.law`), and encode the pair samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from invs import cameras, shards, tables
from invs.config import Config
from invs.errors import ShardFormatError
from invs.images import MIN_ALPHA_FRACTION, coverage, on_white, resize_view, to_uint8
from invs.latents import LAYOUT as LATENTS_LAYOUT
from invs.latents import posterior_moments, vae_fingerprint
from invs.pair_builder import BuiltPairs, build_pairs
from preprocess.law import law_metrics
from preprocess.pairs import sample_pairs

#: The sanity law's figures kept per object (:func:`preprocess.law.law_metrics`).
LAW_KEYS = (
    "psnr_partial",
    "psnr_backward",
    "stray_fraction",
    "unseen_below_half",
    "visible_fraction",
    "seen_covered",
    "seen_cells_kept",
)


@dataclass
class ObjectPairs:
    """The encoded pairs of one object, their index rows and law figures."""

    uid: str
    pairs: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)
    index_rows: list[dict[str, Any]] = field(default_factory=list)
    law: dict[str, float] = field(default_factory=dict)
    skipped_views: int = 0


def source_depths(
    estimator: Any,
    sample: shards.RenderSample,
    views: list[int],
    rgb: dict[int, np.ndarray],
    depth_gt: dict[int, np.ndarray],
) -> tuple[dict[int, np.ndarray], dict[int, dict[str, Any]]]:
    """Depth of each source view and how it was obtained: GT as is, or the estimate aligned to GT.

    ``estimator(images (B, 3, H, W) in [0, 1]) -> depth (B, H, W)``. Its depth gets the robust scale and shift
    that fit it to the render's depth over the foreground (:func:`invs.depth.align_robust`: training pairs
    keep the estimate's shape errors, not a scale error). The alignment records that fit, the stored depth's
    errors against GT (``errors``) and those the inference-time prior, the camera distance, would have given
    (``errors_distance_prior``).
    """
    if estimator is None:
        return {i: depth_gt[i] for i in views}, {i: {"kind": "gt"} for i in views}
    from invs.depth import align_robust, align_to_distance, depth_errors

    images = torch.from_numpy(np.stack([rgb[i] for i in views])).permute(0, 3, 1, 2)
    predicted = estimator(images)
    out, info = {}, {}
    for k, i in enumerate(views):
        mask = torch.from_numpy(depth_gt[i] > 0)
        gt = torch.from_numpy(depth_gt[i].astype(np.float32))
        aligned, alignment = align_robust(predicted[k], gt, mask)
        prior, _ = align_to_distance(predicted[k], mask, float(sample.meta["views"][i]["radius"]))
        alignment["errors"] = depth_errors(aligned, gt, mask)
        alignment["errors_distance_prior"] = depth_errors(prior, gt, mask)
        out[i] = aligned.numpy().astype(np.float32)
        info[i] = alignment
    return out, info


@dataclass
class ObjectViews:
    """An object's views at the pair resolution: straight-alpha RGBA uint8, planar depth, ``K`` and OpenCV
    ``c2w``, and which views show enough of the object to be used."""

    rgba: list[np.ndarray]
    depth: list[np.ndarray]
    K: list[np.ndarray]
    c2w: list[np.ndarray]
    usable: list[bool]

    @classmethod
    def of(cls, sample: shards.RenderSample, resolution: int) -> ObjectViews:
        views = cls([], [], [], [], [])
        for i in range(sample.num_views):
            rgba, depth, K = resize_view(sample.rgba[i], sample.depth[i].astype(np.float32), sample.K(i), resolution)
            views.rgba.append(rgba)
            views.depth.append(depth)
            views.K.append(K)
            views.c2w.append(sample.c2w(i))
            views.usable.append(float((rgba[..., 3] > 0).mean()) >= MIN_ALPHA_FRACTION)
        return views


def object_pairs(
    sample: shards.RenderSample,
    config: Config,
    render_shard: str,
    estimator: Any = None,
    device: str = "cpu",
    vae: Any = None,
    cover: str = "mesh",
    vae_id: str | None = None,
) -> ObjectPairs:
    """All training pairs of one rendered object (see the module docstring); with ``vae``, each pair also stores the
    VAE posterior moments of its target and partial view (:mod:`invs.latents`), recorded as made by ``vae_id`` (its
    :func:`~invs.latents.vae_fingerprint`, computed here when not given). ``cover`` picks the partial view's
    coverage (:func:`invs.partial_view.partial_view`; ``"points"``, the former one, for comparisons)."""
    p = config.preprocess
    uid = str(sample.meta["uid"])
    views = ObjectViews.of(sample, p.resolution)
    result = ObjectPairs(uid=uid, skipped_views=views.usable.count(False))
    chosen = sample_pairs(views.c2w, views.usable, p.pairs_per_object, uid, p.seed, p.min_angle_deg, p.max_angle_deg)
    if not chosen:
        raise ShardFormatError(f"{uid}: no usable view pair ({result.skipped_views} empty views)")
    rgb = {i: on_white(rgba) for i, rgba in enumerate(views.rgba)}
    depth_gt = dict(enumerate(views.depth))
    depth_src, alignment = source_depths(estimator, sample, sorted({s for s, _ in chosen}), rgb, depth_gt)
    s, t = [a for a, _ in chosen], [b for _, b in chosen]
    built = build_pairs(
        np.stack([views.rgba[i] for i in s]),
        np.stack([depth_src[i] for i in s]),
        np.stack([views.K[i] for i in s]),
        np.stack([views.c2w[i] for i in s]),
        np.stack([views.K[j] for j in t]),
        np.stack([views.c2w[j] for j in t]),
        p.mask_half_angle_deg,
        cover=cover,
        device=device,
    )
    result.law = measure_law(built, views, s, t, depth_gt, device)
    moments = None
    if vae is not None:
        targets_u8 = np.stack([to_uint8(rgb[j]) for j in t])
        moments = np.stack(
            [posterior_moments(vae, targets_u8, device), posterior_moments(vae, built.partial, device)], 1
        )
        vae_id = vae_id or vae_fingerprint(vae)
    split = tables.split_for_uid(uid, p.val_fraction)
    for k, (i, j) in enumerate(chosen):
        visible = built.views.visible[k].cpu().numpy()
        visible_fraction = float(visible.sum()) / max(int((views.rgba[j][..., 3] > 0).sum()), 1)
        pair_meta = {
            "uid": uid,
            "src": i,
            "tgt": j,
            "K_src": views.K[i],
            "c2w_src": views.c2w[i],
            "K_tgt": views.K[j],
            "c2w_tgt": views.c2w[j],
            "depth_source": "gt" if estimator is None else p.depth_model,
            "depth_alignment": alignment[i],
            "visible_fraction": visible_fraction,
            "angle_deg": cameras.angle_between_views_deg(views.c2w[i], views.c2w[j]),
            "mask": {"polarity": "255 = generate", "half_angle_deg": p.mask_half_angle_deg},
        }
        if moments is not None:
            pair_meta["latents"] = {"vae": vae_id, "model": str(p.latents), "layout": LATENTS_LAYOUT}
        pair = shards.PairSample(
            key=shards.pair_key(sample.key, i, j),
            source=built.source[k],
            target=to_uint8(rgb[j]),
            partial=built.partial[k],
            mask=built.mask[k],
            visible=visible.astype(np.uint8) * 255,
            epipolar=built.views.region[k].cpu().numpy().astype(np.uint8) * 255,
            depth=depth_src[i].astype(np.float16),
            meta=pair_meta,
            latents=moments[k] if moments is not None else None,
        )
        result.pairs.append((pair.key, shards.encode_pair_sample(pair)))
        result.index_rows.append(index_row(pair, split, render_shard))
    return result


def measure_law(
    built: BuiltPairs,
    views: ObjectViews,
    s: list[int],
    t: list[int],
    depth_gt: dict[int, np.ndarray],
    device: str,
) -> dict[str, float]:
    """The sanity law's figures (:mod:`preprocess.law`) of built pairs against the targets' ground truth."""

    def stack(items: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(items)).float().to(device)

    law = law_metrics(
        built.views,
        built.rgb_source,
        stack([depth_gt[i] for i in s]),
        stack([views.K[i] for i in s]),
        stack([views.c2w[i] for i in s]),
        stack([on_white(views.rgba[j]) for j in t]).permute(0, 3, 1, 2),
        stack([coverage(views.rgba[j]) for j in t]),
        stack([depth_gt[j] for j in t]),
        stack([views.K[j] for j in t]),
        stack([views.c2w[j] for j in t]),
    )
    return {k: law[k] for k in LAW_KEYS} | {"compared_pixels": law["compared_pixels"]}


def index_row(pair: shards.PairSample, split: str, render_shard: str) -> dict[str, Any]:
    """The pair's row in the pair index (:data:`invs.tables.INDEX_SCHEMA`)."""
    meta = pair.meta
    return {
        "key": pair.key,
        "uid": meta["uid"],
        "split": split,
        "src": meta["src"],
        "tgt": meta["tgt"],
        "visible_fraction": meta["visible_fraction"],
        "angle_deg": meta["angle_deg"],
        "render_shard": render_shard,
    }
