"""The render request: one object's views as the render job asks for them and Blender's side reads them.

One typed message with no defaults of its own (the config's are the only ones): the job builds it from the config
(:meth:`RenderRequest.from_config`), sends it as one JSON line, and the Blender process reads it back
(:meth:`RenderRequest.from_message`), refusing unknown or missing fields. The render shard's metadata is written
from the request that was rendered, not from the config.

Units and conventions: ``resolution`` in pixels (square); ``lens_mm`` on ``sensor_width_mm`` (Blender's
``sensor_fit='HORIZONTAL'``); each view a :class:`invs.cameras.ViewSpec` (azimuth and elevation in degrees, radius
in object units, the camera looking at the origin); depth written as planar z in ``depth_dtype``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RenderRequest:
    """Everything Blender needs to render one object (see the module docstring)."""

    id: str
    model_path: str
    out_dir: str
    views: list[dict[str, float]]  # ViewSpec fields: azimuth_deg, elevation_deg, radius
    resolution: int
    lens_mm: float
    sensor_width_mm: float
    light_seed: int
    engine: str
    samples: int
    denoise: bool
    denoise_prefilter: str
    adaptive_threshold: float | None  # None: Blender's own (adaptive sampling on, threshold 0.01)
    limited_bounces: bool
    device: str
    lighting: str
    threads: int  # 0: Blender's default (all cores)
    depth_dtype: str
    passes: list[str]  # invs.passes names, rgba and depth included
    coverage_samples: int  # > 0: alpha from a coverage render with this many samples (render.coverage_samples)
    persistent_data: bool  # keep Cycles' scene (BVH, images, shaders) between the renders of one object
    crop_to_object: bool  # sample only the pixels the object's bounding box can reach (render.crop_to_object)
    export_mesh: bool = False  # also write mesh.npz (the normalised scene's triangles; for tests and benchmarks)

    @classmethod
    def from_config(cls, config: Any, uid: str, model: Path, out_dir: Path, threads: int) -> RenderRequest:
        """The request for object ``uid`` under ``config`` (its ``camera`` and ``render`` sections)."""
        from invs import cameras

        c, r = config.camera, config.render
        return cls(
            id=uid,
            model_path=str(model),
            out_dir=str(out_dir),
            views=[asdict(s) for s in cameras.view_specs(config, uid)],
            resolution=r.resolution,
            lens_mm=c.lens_mm,
            sensor_width_mm=c.sensor_width_mm,
            light_seed=cameras.object_seed(uid, r.seed + 1),
            engine=r.engine,
            samples=r.samples,
            denoise=r.denoise,
            denoise_prefilter=r.denoise_prefilter,
            adaptive_threshold=r.adaptive_threshold,
            limited_bounces=r.limited_bounces,
            device=r.device,
            lighting=r.lighting,
            threads=threads,
            depth_dtype=r.depth_dtype,
            passes=list(r.passes),
            coverage_samples=r.coverage_samples,
            persistent_data=r.persistent_data,
            crop_to_object=r.crop_to_object,
        )

    def message(self) -> dict[str, Any]:
        """The JSON-ready message (what :meth:`from_message` reads back)."""
        return asdict(self)

    def replace(self, **changes: Any) -> RenderRequest:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> RenderRequest:
        """The request a message holds; ``ValueError`` naming unknown or missing fields."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(message) - known)
        if unknown:
            raise ValueError(f"unknown render request fields: {', '.join(unknown)}")
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(message))
        if missing:
            raise ValueError(f"render request without {', '.join(missing)}")
        return cls(**message)

    def renderer(self) -> dict[str, Any]:
        """What a render shard records of how its views were made (with Blender's own answers added there)."""
        return {
            "engine": self.engine,
            "samples": self.samples,
            "denoise": self.denoise,
            "limited_bounces": self.limited_bounces,
            "device": self.device,
            "passes": list(self.passes),
            "coverage_samples": self.coverage_samples,
            "crop_to_object": self.crop_to_object,
        }
