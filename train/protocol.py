"""The evaluation protocol on render-stage output: which views are sources and targets, and how pairs are built.

Straight from render shards (any render-stage output of real objects, e.g. Google Scanned Objects renders), no
preprocess run:

* **Objects**: every object the render manifest marks ``ok``, in key order (``limit`` caps the pairs).
* **Views**: view 0 of each object is the source; its targets are views 1..K (``views_per_object`` = K), skipping
  views whose alpha covers less than :data:`invs.images.MIN_ALPHA_FRACTION`. The render stage draws each object's
  cameras from a seed and its uid (:func:`invs.cameras.view_specs`), so the same renders give the same pairs.
  Zero-1-to-3 and iNVS evaluate one source against other rendered views of each object; this is that protocol
  with the sources and targets written down.
* **Resolution and background**: both views resampled to the model's resolution
  (:func:`invs.images.resize_view`), composited on white.
* **Depth**: ``gt`` uses the source view's rendered planar depth; ``zoedepth`` estimates it from the source
  image alone and scales it by the single-image prior (object centre at the source camera's distance,
  :func:`invs.depth.align_to_distance`), as inference does.
* **Partial views and masks**: the core's geometry (:func:`invs.partial_view.partial_view`, the training data's
  own), with the config's ``preprocess.mask_half_angle_deg``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from invs import shards, storage, tables
from invs.errors import InvsError


def render_shards(renders: str) -> list[str]:
    """The render shards holding objects the manifest marks ``ok``; InvsError when there are none."""
    manifest = tables.read_table(storage.join(renders, tables.MANIFEST_DIR), tables.MANIFEST_SCHEMA)
    latest = tables.latest_by_uid(manifest)
    found = sorted({r["shard"] for r in latest.values() if r["status"] == "ok" and r["shard"]})
    if not found:
        raise InvsError(f"no rendered objects under {renders}: --renders must be the --out of render/main.py")
    return found


def protocol_views(sample: shards.RenderSample, views_per_object: int) -> list[int]:
    """Target views of an object under the protocol: views 1..K that show the object."""
    from invs.images import MIN_ALPHA_FRACTION

    shown = [i for i in range(1, sample.num_views) if (sample.rgba[i][..., 3] > 0).mean() >= MIN_ALPHA_FRACTION]
    return shown[:views_per_object]


def protocol_pairs(
    renders: str,
    resolution: int,
    views_per_object: int = 4,
    depth: str = "gt",
    depth_model: str | None = None,
    half_angle_deg: float = 45.0,
    limit: int | None = None,
    device: str = "cpu",
) -> Iterator[tuple[str, str, dict[str, torch.Tensor]]]:
    """``(pair key, object uid, tensors)`` for every protocol pair, tensors as
    :func:`train.batches.pair_to_tensors` gives them (``source``/``target``/``partial`` in [-1, 1], ``mask``)."""
    from invs.images import coverage, on_white, resize_view, to_uint8
    from invs.partial_view import partial_view

    estimator = None
    if depth == "zoedepth":
        from invs.depth import DepthEstimator

        estimator = DepthEstimator.from_pretrained(depth_model or "Intel/zoedepth-nyu-kitti", device=device)
    elif depth != "gt":
        raise InvsError(f"depth must be gt or zoedepth, got {depth!r}")
    count = 0
    for sample in shards.iter_render_samples(render_shards(renders)):
        targets = protocol_views(sample, views_per_object)
        if not targets:
            continue
        views = {
            i: resize_view(sample.rgba[i], sample.depth[i].astype(np.float32), sample.K(i), resolution)
            for i in (0, *targets)
        }
        rgb = {i: on_white(v[0]) for i, v in views.items()}
        d_src = _source_depth(views[0][1], rgb[0], estimator, sample, device)
        n = len(targets)
        to = {"dtype": torch.float32, "device": device}
        pv = partial_view(
            torch.as_tensor(rgb[0], **to).permute(2, 0, 1)[None].expand(n, -1, -1, -1),
            torch.as_tensor(d_src, **to)[None].expand(n, -1, -1),
            torch.as_tensor(views[0][2], **to)[None].expand(n, -1, -1),
            torch.as_tensor(sample.c2w(0), **to)[None].expand(n, -1, -1),
            torch.as_tensor(np.stack([views[j][2] for j in targets]), **to),
            torch.as_tensor(np.stack([sample.c2w(j) for j in targets]), **to),
            resolution,
            resolution,
            half_angle_deg=half_angle_deg,
            alpha_src=torch.as_tensor(coverage(views[0][0]), **to)[None].expand(n, -1, -1),
        )
        partial, mask = pv.partial.permute(0, 2, 3, 1).cpu().numpy(), pv.mask.cpu().numpy()
        for k, j in enumerate(targets):
            yield (
                shards.pair_key(sample.key, 0, j),
                str(sample.meta.get("uid", sample.key)),
                {
                    "source": _image(rgb[0]),
                    "target": _image(rgb[j]),
                    "partial": _image(partial[k]),
                    "mask": torch.from_numpy(to_uint8(mask[k])).float().div(255.0)[None],
                },
            )
            count += 1
            if limit is not None and count >= limit:
                return


def _image(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float in [0, 1] -> (3, H, W) in [-1, 1] through uint8, exactly as a pair shard stores it."""
    from invs.images import to_uint8

    return torch.from_numpy(to_uint8(rgb)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def _source_depth(
    depth_gt: np.ndarray, rgb: np.ndarray, estimator: Any, sample: shards.RenderSample, device: str
) -> np.ndarray:
    if estimator is None:
        return depth_gt
    from invs.depth import align_to_distance

    image = torch.as_tensor(rgb, dtype=torch.float32, device=device).permute(2, 0, 1)[None]
    predicted = estimator(image)[0].float().cpu()
    mask = torch.from_numpy(depth_gt > 0)  # the object's silhouette (its alpha), not its depth
    aligned, _ = align_to_distance(predicted, mask, float(sample.meta["views"][0]["radius"]))
    return aligned.numpy()
