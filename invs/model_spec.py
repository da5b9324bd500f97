"""What a trained model needs to build its inputs, saved with its weights: camera, mask, depth, diffusion.

A model learns from pairs built with one camera model, one mask construction and one kind of depth; inputs built any
other way are out of its distribution. :class:`ModelSpec` holds all of it, and the exported pipeline stores it in
its ``model_index.json`` (under ``spec``), so inference and evaluation read it from the model, never from a config.
Units: lengths in object units (objects normalised to a unit box centred at the origin), angles in degrees, lens
and sensor in millimetres; cameras follow :mod:`invs.cameras` (OpenCV ``c2w``, planar depth, pixel centres +0.5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from invs.errors import InvsError

#: The spec's format; a model written with another one is refused with a line saying how to convert it.
SPEC_VERSION = 1
#: What a prediction does with the pixels the source sees: ``composite`` blends the partial view back by the soft
#: mask (``m * generated + (1 - m) * partial``: keep where 0, generate where 1); ``generate`` returns the sampler's
#: output as decoded by the VAE.
KNOWN_PIXELS = ("composite", "generate")
CONDITIONINGS = ("empty_prompt", "clip_image")
PREDICTION_TYPES = ("epsilon", "v_prediction")
DEPTH_ALIGNMENT = "median object depth = source camera distance"


@dataclass(frozen=True)
class CameraSpec:
    """The camera model of the training views and the prior for a source image's camera.

    ``radius_range``, ``elevation_range_deg``: where the training cameras were (distance from the object's centre,
    elevation above its equator). A single image has no camera; inference places it at ``source_radius`` (the
    middle of ``radius_range``) and ``source_elevation_deg`` (level), looking at the object's centre."""

    lens_mm: float
    sensor_width_mm: float
    radius_range: tuple[float, float]
    elevation_range_deg: tuple[float, float]
    source_radius: float
    source_elevation_deg: float = 0.0


@dataclass(frozen=True)
class MaskSpec:
    """The soft inpainting mask (:func:`invs.partial_view.soft_mask`): 1 = generate, 0 = keep, never binarised;
    covered pixels reach 0.5 at ``half_angle_deg`` between source and target rays. ``cover``: the partial view's
    coverage (``mesh`` or ``points``)."""

    half_angle_deg: float
    cover: str = "mesh"


@dataclass(frozen=True)
class DepthSpec:
    """The source view's depth (planar, object units). ``training``: what the training pairs used (``gt``, the
    renders' own, or ``zoedepth``); ``model``: the monocular model a single image's depth comes from, run on the
    image on white at the model's resolution (``flip_average``: averaged with the mirrored image's), scaled by
    :data:`DEPTH_ALIGNMENT` (:func:`invs.depth.align_to_distance`)."""

    model: str
    training: str
    flip_average: bool = False
    alignment: str = DEPTH_ALIGNMENT


@dataclass(frozen=True)
class ModelSpec:
    """Everything besides the weights that inference and evaluation need (see the module docstring).

    ``resolution``: square images, pixels. ``prediction_type``: the UNet's target (``epsilon`` or ``v_prediction``).
    ``latent_scale``: the VAE's ``scaling_factor`` the UNet was trained with; ``latent_scale_source``: where it came
    from. ``conditioning``: the cross-attention input (:mod:`inference.conditioning`). ``known_pixels``: the default
    of :data:`KNOWN_PIXELS`."""

    resolution: int
    camera: CameraSpec
    mask: MaskSpec
    depth: DepthSpec
    prediction_type: str
    latent_scale: float
    latent_scale_source: str
    conditioning: str
    known_pixels: str = "composite"
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        for name, value, valid in (
            ("known_pixels", self.known_pixels, KNOWN_PIXELS),
            ("conditioning", self.conditioning, CONDITIONINGS),
            ("prediction_type", self.prediction_type, PREDICTION_TYPES),
        ):
            if value not in valid:
                raise ValueError(f"{name} must be one of {', '.join(valid)}, got {value!r}")
        if self.resolution < 8 or self.camera.lens_mm <= 0 or self.camera.sensor_width_mm <= 0:
            raise ValueError("resolution, lens_mm and sensor_width_mm must be positive (resolution >= 8)")

    def intrinsics(self) -> np.ndarray:
        """``K`` (3x3, pixels) of the model's camera at its resolution."""
        from invs.cameras import intrinsics_from_lens

        c = self.camera
        return intrinsics_from_lens(c.lens_mm, c.sensor_width_mm, self.resolution, self.resolution)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (tuples as lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "the model") -> ModelSpec:
        """The spec from :meth:`to_dict`'s output; :class:`InvsError` naming ``where`` when it is not one."""
        if not isinstance(data, dict):
            raise InvsError(f"{where} has no model spec (got {type(data).__name__})")
        version = data.get("version")
        if version != SPEC_VERSION:
            raise InvsError(f"{where} has a model spec of version {version!r}; this code reads {SPEC_VERSION}")
        try:
            parts = {
                "camera": CameraSpec(**_tuples(data["camera"])),
                "mask": MaskSpec(**data["mask"]),
                "depth": DepthSpec(**data["depth"]),
            }
            rest = {f.name: data[f.name] for f in fields(cls) if f.name not in parts}
            return cls(**parts, **rest)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvsError(f"{where} has an incomplete or invalid model spec ({type(exc).__name__}: {exc})") from None

    def overridden(self, **changes: Any) -> tuple[ModelSpec, list[str]]:
        """A copy with ``changes`` (keys ``section.field`` or ``field``; None values ignored) and one line per value
        that differs from the model's own, for the user to see."""
        spec, lines = self, []
        for key, value in changes.items():
            if value is None:
                continue
            section, _, name = key.rpartition(".")
            holder = getattr(spec, section) if section else spec
            old = getattr(holder, name)
            if old == value:
                continue
            lines.append(f"note: {key} = {_shown(value)} overrides the model's {_shown(old)}")
            new = replace(holder, **{name: value})
            spec = replace(spec, **{section: new}) if section else new
        return spec, lines

    @classmethod
    def from_config(
        cls,
        config: Any,
        resolution: int,
        prediction_type: str,
        latent_scale: float,
        latent_scale_source: str,
        half_angle_deg: float | None = None,
        depth_training: str | None = None,
    ) -> ModelSpec:
        """The spec of a model trained under ``config`` (its ``camera``, ``preprocess`` and ``train`` sections) on
        pairs at ``resolution``. ``half_angle_deg`` / ``depth_training``: what the pairs themselves record, which
        wins over the config (the pairs may have been made under another one)."""
        cam, p, t = config.camera, config.preprocess, config.train
        radius_range = (float(cam.radius_range[0]), float(cam.radius_range[1]))
        return cls(
            resolution=int(resolution),
            camera=CameraSpec(
                lens_mm=float(cam.lens_mm),
                sensor_width_mm=float(cam.sensor_width_mm),
                radius_range=radius_range,
                elevation_range_deg=(float(cam.elevation_range_deg[0]), float(cam.elevation_range_deg[1])),
                source_radius=sum(radius_range) / 2,
            ),
            mask=MaskSpec(half_angle_deg=float(p.mask_half_angle_deg if half_angle_deg is None else half_angle_deg)),
            depth=DepthSpec(model=p.depth_model, training=depth_training or p.depth, flip_average=bool(p.flip_average)),
            prediction_type=prediction_type,
            latent_scale=float(latent_scale),
            latent_scale_source=latent_scale_source,
            conditioning=t.conditioning,
            known_pixels=t.known_pixels,
        )


def _shown(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def _tuples(section: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
