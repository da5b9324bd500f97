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
* **Partial views and masks**: the core's pair builder (:func:`invs.pair_builder.build_pairs`, the training
  data's own), with the model's mask (its spec's half-angle); ZoeDepth is the model's depth model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from invs import shards, tables
from invs.errors import InvsError
from invs.images import on_white, to_uint8
from invs.model_spec import ModelSpec


def protocol_views(sample: shards.RenderSample, views_per_object: int) -> list[int]:
    """Target views of an object under the protocol: views 1..K that show the object."""
    from invs.images import MIN_ALPHA_FRACTION

    shown = [i for i in range(1, sample.num_views) if (sample.rgba[i][..., 3] > 0).mean() >= MIN_ALPHA_FRACTION]
    return shown[:views_per_object]


def protocol_pairs(
    renders: str,
    spec: ModelSpec,
    views_per_object: int = 4,
    depth: str = "gt",
    limit: int | None = None,
    device: str = "cpu",
) -> Iterator[tuple[str, str, dict[str, torch.Tensor]]]:
    """``(pair key, object uid, tensors)`` for every protocol pair, built as the model ``spec`` says (its
    resolution, mask and depth model) with the renders' own cameras; tensors as
    :func:`invs.pair_builder.pair_to_tensors` gives them (``source``/``target``/``partial`` in [-1, 1], ``mask``)."""
    from invs.images import resize_view
    from invs.pair_builder import build_pairs, image_tensor, mask_tensor

    estimator = None
    if depth == "zoedepth":
        from invs.depth import DepthEstimator

        estimator = DepthEstimator.from_pretrained(spec.depth.model, device=device)
    elif depth != "gt":
        raise InvsError(f"depth must be gt or zoedepth, got {depth!r}")
    res, count = spec.resolution, 0
    for sample in shards.iter_render_samples(tables.rendered_shards(renders)):
        targets = protocol_views(sample, views_per_object)
        if not targets:
            continue
        views = {
            i: resize_view(sample.rgba[i], sample.depth[i].astype(np.float32), sample.K(i), res) for i in (0, *targets)
        }
        d_src = _source_depth(views[0][1], views[0][0], estimator, sample, device)
        n = len(targets)
        built = build_pairs(
            np.stack([views[0][0]] * n),
            np.stack([d_src] * n),
            np.stack([views[0][2]] * n),
            np.stack([sample.c2w(0)] * n),
            np.stack([views[j][2] for j in targets]),
            np.stack([sample.c2w(j) for j in targets]),
            spec.mask.half_angle_deg,
            cover=spec.mask.cover,
            device=device,
        )
        for k, j in enumerate(targets):
            yield (
                shards.pair_key(sample.key, 0, j),
                str(sample.meta.get("uid", sample.key)),
                {
                    "source": image_tensor(built.source[k]),
                    "target": image_tensor(to_uint8(on_white(views[j][0]))),
                    "partial": image_tensor(built.partial[k]),
                    "mask": mask_tensor(built.mask[k]),
                },
            )
            count += 1
            if limit is not None and count >= limit:
                return


def _source_depth(
    depth_gt: np.ndarray, rgba: np.ndarray, estimator: Any, sample: shards.RenderSample, device: str
) -> np.ndarray:
    if estimator is None:
        return depth_gt
    from invs.depth import align_to_distance

    image = torch.as_tensor(on_white(rgba), dtype=torch.float32, device=device).permute(2, 0, 1)[None]
    predicted = estimator(image)[0].float().cpu()
    mask = torch.from_numpy(depth_gt > 0)  # the object's silhouette (its alpha), not its depth
    aligned, _ = align_to_distance(predicted, mask, float(sample.meta["views"][0]["radius"]))
    return aligned.numpy()
