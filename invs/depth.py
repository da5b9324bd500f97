"""Monocular depth for the source views (transformers' ZoeDepth) and the scale alignment objects need.

:class:`DepthEstimator` runs ``ZoeDepthForDepthEstimation`` on batches of RGB images in [0, 1] (composited on
white) and returns planar z-depth (distance along the optical axis, not along the ray) in metres as ZoeDepth sees
the scene, at the input resolution. Pre- and post-processing are done here in torch, mirroring
``ZoeDepthImageProcessor`` (reflect padding of ``int(sqrt(side / 2) * 3)`` pixels, aspect-keeping resize to a
multiple of 32 with ``align_corners=True``, normalisation; then the inverse resize and removal of the padding),
because transformers' own post-processing needs torchvision.

A single object has no metric scale, so the depth is aligned before use. Training pairs have the render's own
depth: :func:`align_robust` fits scale and shift to it over the foreground, robustly to outliers, and so keeps
only the shape errors of the estimate. At inference there is no reference, and :func:`align_to_distance` is the
prior: the median foreground depth equals the camera distance to the object centre. That prior is biased (the
visible surface is nearer than the centre: on renders of the real test objects radius / median foreground depth
is 1.03-1.28, see bench/depth_align_bench.py), which is why training does not use it.
:func:`align_least_squares` is the plain (non-robust) fit and :func:`depth_errors` scores a depth map against a
reference.

Conventions: depth is planar z-depth (along the optical axis) in normalised-object units, the units of the
camera distance; masks are bool with True = foreground; a depth of 0 means no surface. The functions take (H, W)
or batched (B, H, W) tensors; aligned depth outside the mask is set to 0.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from invs.errors import InvsError

if TYPE_CHECKING:
    from transformers import ZoeDepthConfig, ZoeDepthForDepthEstimation

DEFAULT_MODEL = "Intel/zoedepth-nyu-kitti"
NETWORK_MULTIPLE = 32  # the DPT-style neck halves the patch grid: sides must be multiples of 32 to line up
_PAD_FACTOR = 3  # ZoeDepth pads each side by int(sqrt(side / 2) * 3) pixels against border artefacts
_MIN_SIDE = 8  # reflect padding needs pad < side
_RESAMPLE_MODES = {2: "bilinear", 3: "bicubic"}  # PILImageResampling.BILINEAR / BICUBIC


class DepthModelError(InvsError):
    """The ZoeDepth weights or image-processor settings could not be loaded (offline, not cached, bad path)."""


# --------------------------------------------------------------------------------------------------- configs


def tiny_zoedepth_config(nyu_kitti: bool = False) -> ZoeDepthConfig:
    """A ZoeDepth config with a 4-layer, 32-wide BEiT backbone (~165k parameters), built offline.

    ``initializer_range=0.2`` makes the random model's output depend on its input (with the library's 0.02 the
    randomly initialised bin heads predict a constant ln 2 everywhere), which tests need. ``nyu_kitti`` gives it
    two metric heads and the domain classifier that routes between them, like Intel/zoedepth-nyu-kitti (its
    patch transformer must be 4 layers of width 128: transformers hard-codes both).
    """
    from transformers import BeitConfig, ZoeDepthConfig

    backbone = BeitConfig(
        image_size=64,
        patch_size=16,
        num_hidden_layers=4,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        use_relative_position_bias=True,
        reshape_hidden_states=False,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    heads: dict[str, Any] = {"bin_configurations": [{"n_bins": 8, "min_depth": 0.001, "max_depth": 10.0}]}
    if nyu_kitti:
        heads = {
            "bin_configurations": [
                {"name": "nyu", "n_bins": 8, "min_depth": 0.001, "max_depth": 10.0},
                {"name": "kitti", "n_bins": 8, "min_depth": 0.001, "max_depth": 80.0},
            ],
            "num_patch_transformer_layers": 4,
            "patch_transformer_hidden_size": 128,
            "patch_transformer_intermediate_size": 128,
            "patch_transformer_num_attention_heads": 4,
        }
    return ZoeDepthConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        bottleneck_features=16,
        num_relative_features=8,
        bin_embedding_dim=16,
        initializer_range=0.2,
        **heads,
    )


def full_zoedepth_config() -> ZoeDepthConfig:
    """The library's default ZoeDepth config: BEiT-L/16 at 384 px, one 64-bin metric head (~333M parameters)."""
    from transformers import ZoeDepthConfig

    return ZoeDepthConfig()


# ---------------------------------------------------------------------------------------------- processing


@dataclass(frozen=True)
class Preprocessing:
    """The image-processor settings that matter, read once from a ``ZoeDepthImageProcessor(Pil)``."""

    height: int = 384
    width: int = 512
    keep_aspect_ratio: bool = True
    multiple: int = NETWORK_MULTIPLE
    do_pad: bool = True
    do_resize: bool = True
    do_normalize: bool = True
    mode: str = "bilinear"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_processor(cls, processor: Any) -> Preprocessing:
        size = processor.size
        height = size["height"] if isinstance(size, dict) else size.height
        width = size["width"] if isinstance(size, dict) else size.width
        resample = int(processor.resample)
        if resample not in _RESAMPLE_MODES:
            raise DepthModelError(f"unsupported ZoeDepth processor resample={resample}: expected 2 or 3")
        # transformers 5.x defaults ensure_multiple_of to 1/32 (a typo for 32): the checkpoints say 32, and the
        # neck needs sides that are multiples of 32, so anything below 1 means 32.
        multiple = processor.ensure_multiple_of
        multiple = int(multiple) if multiple and multiple >= 1 else NETWORK_MULTIPLE
        return cls(
            height=int(height),
            width=int(width),
            keep_aspect_ratio=bool(processor.keep_aspect_ratio),
            multiple=multiple,
            do_pad=bool(processor.do_pad),
            do_resize=bool(processor.do_resize),
            do_normalize=bool(processor.do_normalize),
            mode=_RESAMPLE_MODES[resample],
            mean=tuple(float(v) for v in processor.image_mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in processor.image_std),  # type: ignore[arg-type]
        )

    def padding(self, height: int, width: int) -> tuple[int, int]:
        """Reflect padding (rows, columns) added on each side of an ``height`` x ``width`` image."""
        if not self.do_pad:
            return 0, 0
        return int(math.sqrt(height / 2) * _PAD_FACTOR), int(math.sqrt(width / 2) * _PAD_FACTOR)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input size for a (padded) ``height`` x ``width`` image, as the image processor computes it."""
        if not self.do_resize:
            return height, width
        scale_h, scale_w = self.height / height, self.width / width
        if self.keep_aspect_ratio:  # scale as little as possible
            if abs(1 - scale_w) < abs(1 - scale_h):
                scale_h = scale_w
            else:
                scale_w = scale_h

        def constrain(value: float) -> int:  # round half to even, like np.round; never 0
            return max(self.multiple, round(value / self.multiple) * self.multiple)

        return constrain(scale_h * height), constrain(scale_w * width)


class DepthEstimator:
    """ZoeDepth metric depth for batches of RGB images; see the module docstring for units and conventions.

    ``dtype`` (bf16 / fp16) turns on autocast on CUDA; on CPU the model always runs in float32. ``flip_average``
    averages each prediction with the one for the mirrored image (twice the network work, in one forward pass).
    A model with several metric heads (the NYU+KITTI checkpoint) runs one image (and its mirror) per forward
    pass, because its head routing is decided per batch.
    Build with :meth:`from_pretrained` (trained weights) or :meth:`from_config` (random weights).
    """

    def __init__(
        self,
        model: ZoeDepthForDepthEstimation,
        processor: Any,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        flip_average: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(device=self.device, dtype=torch.float32).eval()
        self.processor = processor
        self.preprocessing = Preprocessing.from_processor(processor)
        self.flip_average = flip_average
        # Mixed precision only on CUDA (autocast); CPU always runs float32.
        self.autocast_dtype = dtype if self.device.type == "cuda" and dtype not in (None, torch.float32) else None
        # Several metric heads (Intel/zoedepth-nyu-kitti: NYU indoor, KITTI outdoor): the domain classifier's
        # logits are summed over the batch and the winning head predicts every image in it.
        self.routes_per_batch = len(getattr(model.config, "bin_configurations", None) or []) > 1

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str = DEFAULT_MODEL,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        flip_average: bool = False,
    ) -> DepthEstimator:
        """Load the trained model and its image-processor settings (hub id or local directory).

        Raises :class:`DepthModelError` when they cannot be loaded; never falls back to random weights.
        """
        from transformers import ZoeDepthForDepthEstimation, ZoeDepthImageProcessorPil

        source = str(model_id_or_path)
        local = Path(source).expanduser().is_dir()
        if local:
            source = str(Path(source).expanduser())
            absent = [name for name in ("config.json", "preprocessor_config.json") if not Path(source, name).is_file()]
            if absent:
                raise _load_error(model_id_or_path, f"the directory has no {' or '.join(absent)}")
        elif _looks_like_path(source):
            raise _load_error(model_id_or_path, "no such directory")
        try:
            # The PIL variant reads the same preprocessor_config.json and needs no torchvision; only its
            # settings are used.
            processor = ZoeDepthImageProcessorPil.from_pretrained(source)
            model, info = ZoeDepthForDepthEstimation.from_pretrained(
                source, dtype=torch.float32, output_loading_info=True
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise _load_error(model_id_or_path, _reason(exc, local)) from exc
        missing = list(info.get("missing_keys") or [])
        if missing:
            raise _load_error(model_id_or_path, f"the checkpoint lacks {len(missing)} weights (e.g. {missing[0]})")
        return cls(model, processor, device=device, dtype=dtype, flip_average=flip_average)

    @classmethod
    def from_config(
        cls,
        config: ZoeDepthConfig,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        flip_average: bool = False,
        input_size: tuple[int, int] = (384, 512),
        seed: int | None = 0,
    ) -> DepthEstimator:
        """A randomly initialised model (tests, benchmarks) with ZoeDepth's processor settings at ``input_size``."""
        from transformers import ZoeDepthForDepthEstimation, ZoeDepthImageProcessorPil

        if seed is not None:
            torch.manual_seed(seed)
        model = ZoeDepthForDepthEstimation(config)
        processor = ZoeDepthImageProcessorPil(
            size={"height": input_size[0], "width": input_size[1]}, ensure_multiple_of=NETWORK_MULTIPLE
        )
        return cls(model, processor, device=device, dtype=dtype, flip_average=flip_average)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> normalised, padded, resized network input (B, 3, h, w) on the model's device."""
        _check_images(images)
        p = self.preprocessing
        x = images.to(device=self.device, dtype=torch.float32)
        pad_h, pad_w = p.padding(*x.shape[-2:])
        if pad_h or pad_w:
            x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
        size = p.network_size(*x.shape[-2:])
        if size != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode=p.mode, align_corners=True)
        if p.do_normalize:
            mean = torch.tensor(p.mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(p.std, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def postprocess(self, predicted: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Network depth (B, h, w) -> (B, height, width): resize to the padded size, then crop the padding.

        The resize is bilinear with ``align_corners=True``, the exact inverse of the pre-processing resize, so
        depth pixel (y, x) lines up with image pixel (y, x), and it never overshoots at depth edges. (transformers'
        post-processing resizes bicubic with ``align_corners=False``: a sub-pixel shift and ringing at edges.)
        """
        pad_h, pad_w = self.preprocessing.padding(height, width)
        depth = predicted.float().unsqueeze(1)
        size = (height + 2 * pad_h, width + 2 * pad_w)
        if depth.shape[-2:] != size:
            depth = F.interpolate(depth, size=size, mode="bilinear", align_corners=True)
        return depth[:, 0, pad_h : pad_h + height, pad_w : pad_w + width]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Metric planar depth (B, H, W) float32 for images (B, 3, H, W) float in [0, 1], on the images' device."""
        height, width = images.shape[-2:]
        with torch.no_grad():  # not inference_mode: callers may edit the result in place
            x = self.preprocess(images)
            # A multi-head model picks one head for the whole batch: run it image by image so that an image's
            # depth never depends on its batch mates.
            chunks = x.split(1) if self.routes_per_batch else [x]
            predicted = torch.cat([self._predict(chunk) for chunk in chunks])
            depth = self.postprocess(predicted, height, width)
        return depth.to(images.device)

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        """Network depth (B, h, w) float32 for network input ``x``, flip-averaged when asked (one forward pass)."""
        batch = x.shape[0]
        if self.flip_average:
            x = torch.cat([x, x.flip(-1)])
        autocast = (
            torch.autocast("cuda", dtype=self.autocast_dtype) if self.autocast_dtype else contextlib.nullcontext()
        )
        with autocast:
            predicted = self.model(pixel_values=x).predicted_depth.float()
        if self.flip_average:
            predicted = (predicted[:batch] + predicted[batch:].flip(-1)) / 2
        return predicted


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got {images.dtype}")
    if min(images.shape[-2:]) < _MIN_SIDE:
        raise ValueError(f"images must be at least {_MIN_SIDE}x{_MIN_SIDE} pixels, got {tuple(images.shape[-2:])}")


def check_available(model_id_or_path: str, alternative: str = "or use --depth gt") -> None:
    """Fail fast (DepthModelError) when the model's configuration cannot be found, without loading weights;
    ``alternative``: the end of the error's hint, what the caller's user can do instead."""
    from transformers import AutoConfig

    source = str(model_id_or_path)
    local = Path(source).expanduser().is_dir()
    if local:
        absent = [
            n
            for n in ("config.json", "preprocessor_config.json")
            if not Path(source).expanduser().joinpath(n).is_file()
        ]
        if absent:
            raise _load_error(model_id_or_path, f"the directory has no {' or '.join(absent)}", alternative)
        return
    if _looks_like_path(source):
        raise _load_error(model_id_or_path, "no such directory", alternative)
    try:
        AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise _load_error(model_id_or_path, _reason(exc, local), alternative) from exc


def _looks_like_path(source: str) -> bool:
    """A local path rather than a hub id ("namespace/name"): absolute, ./ ../ ~, or more than one '/'."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _reason(exc: BaseException, local: bool) -> str:
    """One short line saying why loading failed (transformers' messages span lines and point at URLs)."""
    if not local and _offline():
        return "it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
    return first if len(first) <= 160 else first[:157] + "..."


def _load_error(model: str, reason: str, alternative: str = "or use --depth gt") -> DepthModelError:
    hub_id = model if not _looks_like_path(model) and model.count("/") == 1 else DEFAULT_MODEL
    return DepthModelError(
        f"cannot load the ZoeDepth model {model!r}: {reason}; download it on a machine with internet "
        f"(`hf download {hub_id} --local-dir DIR`) and pass DIR with --depth-model, {alternative}"
    )


# ------------------------------------------------------------------------------------------------ alignment


def _batched(*tensors: torch.Tensor) -> tuple[list[torch.Tensor], bool]:
    """(H, W) or (B, H, W) tensors of one shape -> (B, H, W) views, and whether the input was batched."""
    shape = tensors[0].shape
    if len(shape) not in (2, 3):
        raise ValueError(f"expected (H, W) or (B, H, W) tensors, got shape {tuple(shape)}")
    for t in tensors[1:]:
        if t.shape != shape:
            raise ValueError(f"shape mismatch: {tuple(shape)} vs {tuple(t.shape)}")
    batched = len(shape) == 3
    return [t if batched else t.unsqueeze(0) for t in tensors], batched


def _check_mask(mask: torch.Tensor) -> None:
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")


def _per_image(values: list[float], batched: bool) -> float | list[float]:
    return values if batched else values[0]


def align_to_distance(
    depth: torch.Tensor, mask: torch.Tensor, distance: float | Sequence[float] | torch.Tensor
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Scale each depth map so that its median over the foreground ``mask`` equals ``distance``.

    The inference-time prior, for an image without reference depth: the object sits at the training camera
    distance. It assumes the median visible surface point is as far as the object centre, which it is not (it
    is nearer, by 3-28% on renders of the real test objects), so training pairs use :func:`align_robust`
    against the render instead.
    ``distance`` is the known camera distance to the object centre (one value, or one per image); the aligned
    depth is planar z-depth in those (normalised-object) units, 0 outside the mask. The median is torch's
    (the lower middle value for an even count). Returns the aligned depth and ``{"kind": "median", "scale": s}``
    (``s`` a float, or a list of floats for batched input).
    """
    _check_mask(mask)
    (d, m), batched = _batched(depth, mask)
    distances = torch.as_tensor(distance, dtype=torch.float64).flatten().tolist()
    if len(distances) == 1:
        distances = distances * d.shape[0]
    if len(distances) != d.shape[0]:
        raise ValueError(f"got {len(distances)} distances for {d.shape[0]} depth maps")
    scales = []
    for b in range(d.shape[0]):
        values = d[b][m[b]]
        if values.numel() == 0:
            raise ValueError(f"mask of depth map {b} is empty: nothing to align")
        median = float(values.median())
        if not median > 0 or not math.isfinite(median):
            raise ValueError(f"median foreground depth of depth map {b} is {median}: cannot scale it")
        scales.append(distances[b] / median)
    s = torch.tensor(scales, dtype=d.dtype, device=d.device).view(-1, 1, 1)
    aligned = torch.where(m, d * s, torch.zeros((), dtype=d.dtype, device=d.device))
    return (aligned if batched else aligned[0]), {"kind": "median", "scale": _per_image(scales, batched)}


def _check_count(x: torch.Tensor, shift: bool, index: int) -> None:
    if x.numel() < (2 if shift else 1):
        raise ValueError(f"mask of depth map {index} has {x.numel()} pixels: too few to fit")


def _fit_scale_shift(
    x: torch.Tensor, y: torch.Tensor, shift: bool, index: int, weights: torch.Tensor | None = None
) -> tuple[float, float]:
    """Weighted least-squares ``(s, t)`` minimising ``sum(w * (s * x + t - y)^2)`` (1-D float64; ``t = 0``
    without ``shift``); ``index`` names the depth map in errors."""
    _check_count(x, shift, index)
    w = torch.ones_like(x) if weights is None else weights
    if not shift:
        norm = float((w * x * x).sum())
        if norm <= 0:
            raise ValueError(f"depth map {index} is zero over the mask: scale is not determined")
        return float((w * x * y).sum()) / norm, 0.0
    total = w.sum()
    x_mean, y_mean = (w * x).sum() / total, (w * y).sum() / total
    xc, yc = x - x_mean, y - y_mean
    var = float((w * xc * xc).sum())
    if var <= 0:
        raise ValueError(f"depth map {index} is constant over the mask: scale and shift are not determined")
    s = float((w * xc * yc).sum()) / var
    return s, float(y_mean) - s * float(x_mean)


def _apply(d: torch.Tensor, m: torch.Tensor, scales: list[float], shifts: list[float], batched: bool) -> torch.Tensor:
    """``s * d + t`` per image (computed in float64, returned in ``d``'s dtype), 0 outside the mask."""
    s = torch.tensor(scales, dtype=torch.float64, device=d.device).view(-1, 1, 1)
    t = torch.tensor(shifts, dtype=torch.float64, device=d.device).view(-1, 1, 1)
    aligned = torch.where(m, (d.double() * s + t).to(d.dtype), torch.zeros((), dtype=d.dtype, device=d.device))
    return aligned if batched else aligned[0]


def align_least_squares(
    depth: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, shift: bool = True
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Least-squares scale (and shift) of ``depth`` onto ``reference`` over ``mask``, per image.

    Minimises ``sum((s * depth + t - reference)^2)`` over masked pixels (``t = 0`` when ``shift`` is false),
    solved in float64. Only masked pixels enter the fit: exclude invalid reference pixels from the mask. The
    aligned depth is in the reference's units, 0 outside the mask. Returns it and
    ``{"kind": "lstsq", "scale": s, "shift": t}`` (floats, or lists of floats for batched input).
    """
    _check_mask(mask)
    (d, r, m), batched = _batched(depth, reference, mask)
    scales, shifts = [], []
    for b in range(d.shape[0]):
        s, t = _fit_scale_shift(d[b][m[b]].double(), r[b][m[b]].double(), shift, b)
        scales.append(s)
        shifts.append(t)
    info = {"kind": "lstsq", "scale": _per_image(scales, batched), "shift": _per_image(shifts, batched)}
    return _apply(d, m, scales, shifts, batched), info


#: Tukey's biweight cut-off, in robust standard deviations of the residual (95% efficiency for Gaussian noise).
TUKEY_CUTOFF = 4.685
_MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation, for Gaussian noise


def _robust_sigma(residual: torch.Tensor, y: torch.Tensor) -> float:
    """Standard deviation of a fit's residual from its median absolute value, at least 1e-9 of a typical ``y``
    (so that an exact fit has a positive scale)."""
    return max(_MAD_TO_SIGMA * float(residual.abs().median()), 1e-9 * float(y.abs().median()), 1e-300)


def _fit_robust(x: torch.Tensor, y: torch.Tensor, shift: bool, index: int, iterations: int) -> tuple[float, float]:
    """Scale (and shift) of ``x`` onto ``y`` by iteratively reweighted least squares with Tukey's biweight."""
    _check_count(x, shift, index)
    # Start from quantiles, which outliers barely move: median and interquartile range (exact for an affine
    # map with positive scale), or the ratio of medians for scale only.
    q = torch.tensor([0.25, 0.5, 0.75], dtype=x.dtype, device=x.device)
    qx, qy = torch.quantile(x, q), torch.quantile(y, q)
    if shift and float(qx[2] - qx[0]) > 0:
        s = float(qy[2] - qy[0]) / float(qx[2] - qx[0])
        t = float(qy[1]) - s * float(qx[1])
    elif not shift and float(qx[1]) > 0:
        s, t = float(qy[1]) / float(qx[1]), 0.0
    else:  # most pixels share one value: least squares says whether the fit is determined at all
        s, t = _fit_scale_shift(x, y, shift, index)
    for _ in range(iterations):
        residual = y - (s * x + t)
        u = residual / (TUKEY_CUTOFF * _robust_sigma(residual, y))
        weights = ((1 - u * u).clamp_min(0)) ** 2
        s_new, t_new = _fit_scale_shift(x, y, shift, index, weights)
        done = abs(s_new - s) <= 1e-9 * abs(s) and abs(t_new - t) <= 1e-9 * (abs(t) + abs(s) * float(qx[1]))
        s, t = s_new, t_new
        if done:
            break
    return s, t


def align_robust(
    depth: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, shift: bool = True, iterations: int = 30
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Scale (and shift) of ``depth`` onto ``reference`` over ``mask``, per image, robust to outliers.

    The fit starts from matched quantiles and refines by iteratively reweighted least squares with Tukey's
    biweight (pixels further than ``TUKEY_CUTOFF`` robust standard deviations from the fit get no weight), in
    float64. It uses the masked pixels with a positive reference (0 = no surface) where both maps are finite.
    The aligned depth is in the reference's units, 0 outside the mask. Returns it and ``{"kind": "robust",
    "scale", "shift", "median_abs_rel", "rmse", "inlier_fraction"}``: median of ``|aligned - ref| / ref`` and
    RMSE (reference units) over the fitted pixels, outliers included, and the share of pixels with weight > 0
    (floats, or lists of floats for batched input).
    """
    _check_mask(mask)
    (d, r, m), batched = _batched(depth, reference, mask)
    if not d.is_floating_point() or not r.is_floating_point():
        raise ValueError(f"depth and reference must be float tensors, got {d.dtype} and {r.dtype}")
    valid = m & (r > 0) & torch.isfinite(r) & torch.isfinite(d)
    stats: dict[str, list[float]] = {k: [] for k in ("scale", "shift", "median_abs_rel", "rmse", "inlier_fraction")}
    for b in range(d.shape[0]):
        x, y = d[b][valid[b]].double(), r[b][valid[b]].double()
        s, t = _fit_robust(x, y, shift, b, iterations)
        residual = s * x + t - y
        inliers = residual.abs() < TUKEY_CUTOFF * _robust_sigma(residual, y)
        stats["scale"].append(s)
        stats["shift"].append(t)
        stats["median_abs_rel"].append(float((residual.abs() / y).median()))
        stats["rmse"].append(float(residual.square().mean().sqrt()))
        stats["inlier_fraction"].append(float(inliers.double().mean()))
    info: dict[str, Any] = {"kind": "robust"} | {k: _per_image(v, batched) for k, v in stats.items()}
    return _apply(d, m, stats["scale"], stats["shift"], batched), info


def depth_errors(depth: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Standard depth errors over the masked pixels whose reference is > 0, pooled over the batch.

    ``abs_rel`` = mean(|d - r| / r), ``rmse`` = sqrt(mean((d - r)^2)) (reference units), ``delta1`` = fraction
    of pixels with max(d / r, r / d) < 1.25 (a depth <= 0 never counts), ``pixels`` = how many were scored.
    """
    _check_mask(mask)
    (d, r, m), _ = _batched(depth, reference, mask)
    valid = m & (r > 0)
    if not bool(valid.any()):
        raise ValueError("no masked pixel with a positive reference depth: nothing to score")
    x, y = d[valid].double(), r[valid].double()
    ratio = torch.maximum(x / y, y / x.clamp_min(1e-300))
    ratio = torch.where(x > 0, ratio, torch.full_like(ratio, math.inf))
    return {
        "abs_rel": float(((x - y).abs() / y).mean()),
        "rmse": float(((x - y) ** 2).mean().sqrt()),
        "delta1": float((ratio < 1.25).double().mean()),
        "pixels": int(valid.sum()),
    }
