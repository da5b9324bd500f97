"""Convert a model exported in the earlier format (a ``StableDiffusionInpaintPipeline`` folder with ``invs.json``)
to a :class:`inference.pipeline.NovelViewPipeline` that carries its own spec.

python inference/upgrade.py --model OLD_MODEL --config PRESET --out NEW_MODEL

The earlier format recorded resolution, conditioning and known pixels but not the camera, mask or depth: they are
taken from ``--config`` (with ``--set``), which must be the preset the model was trained with; the new folder then
carries them, and nothing reads a config for them again. The prediction type and latent scale come from the old
folder's scheduler and VAE.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invs import cli, storage
from invs.config import Config
from invs.errors import InvsError


def upgrade(model: str, out: str, config: Config) -> dict:
    """Read the earlier export at ``model`` (local or S3), write the new one to ``out``; returns its spec as a dict."""
    from diffusers import StableDiffusionInpaintPipeline

    from inference.conditioning import ImageProjection
    from inference.pipeline import EARLIER_FORMAT_FILE, export_model
    from invs.model_spec import ModelSpec
    from invs.models import ModelUnavailableError, quiet_model_libraries

    quiet_model_libraries()
    with tempfile.TemporaryDirectory(prefix="invs-upgrade-") as tmp:
        local = Path(tmp)
        for uri in storage.list_files(model):
            dest = local / uri[len(model.rstrip("/")) + 1 :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            storage.download_file(uri, dest)
        if not (local / EARLIER_FORMAT_FILE).is_file():
            raise ModelUnavailableError(f"{model} is not an export of the earlier format (no {EARLIER_FORMAT_FILE})")
        info = json.loads((local / EARLIER_FORMAT_FILE).read_text())
        old = StableDiffusionInpaintPipeline.from_pretrained(
            local, local_files_only=True, safety_checker=None, feature_extractor=None
        )
        projection = None
        if info["conditioning"] == "clip_image":
            from safetensors.torch import load_file

            folder = local / "image_projection"
            shape = json.loads((folder / "config.json").read_text())
            projection = ImageProjection(int(shape["in_features"]), int(shape["out_features"]))
            projection.load_state_dict(load_file(str(folder / "model.safetensors")))
    config.train.conditioning = info["conditioning"]
    config.train.known_pixels = info.get("known_pixels", "composite")
    spec = ModelSpec.from_config(
        config,
        int(info["resolution"]),
        prediction_type=old.scheduler.config.prediction_type,
        latent_scale=float(old.vae.config.scaling_factor),
        latent_scale_source="the earlier export's VAE config",
    )
    parts = {k: getattr(old, k) for k in ("vae", "text_encoder", "tokenizer", "scheduler", "image_encoder")}
    training = {k: info[k] for k in ("steps", "ema_decay", "model") if k in info} | {"upgraded_from": model}
    export_model(parts, old.unet, projection, spec, out, training=training)
    return spec.to_dict()


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.stage_parser("inference/upgrade.py", __doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the earlier export (local or s3://)")
    parser.add_argument("--out", required=True, help="where the converted model goes (local or s3://)")
    args = parser.parse_args(argv)
    config = cli.resolve_config(args, {})
    if storage.normalize(args.out) == storage.normalize(args.model):
        raise InvsError("--out must differ from --model (the earlier export is kept)")
    spec = upgrade(args.model, args.out, config)
    camera, mask = spec["camera"], spec["mask"]
    print(
        f"upgrade: {args.model} -> {args.out} ({spec['resolution']} px, lens {camera['lens_mm']} mm on "
        f"{camera['sensor_width_mm']} mm, radius {camera['radius_range']}, mask half-angle {mask['half_angle_deg']})"
    )
    return 0


if __name__ == "__main__":
    cli.exit_with(main)
