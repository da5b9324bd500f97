"""Stand-ins for the paper preset's two models, built offline: the real classes and the real models' config keys,
small sizes and random weights. ``configs/rehearsal.yaml`` points the paper preset at them, so every code path that
loads ``stabilityai/stable-diffusion-2-inpainting`` or ``Intel/zoedepth-nyu-kitti`` runs here unchanged.

    python -m invs.standins --out out/standins      # writes sd2-inpainting/ and zoedepth-nyu-kitti/

* **Inpainting pipeline** (:func:`save_inpainting_standin`): a ``StableDiffusionInpaintPipeline`` directory with
  the layout and component classes of SD 2 inpainting (``model_index.json``, ``unet/ vae/ text_encoder/
  tokenizer/ scheduler/``). The UNet has SD's 9 input channels and linear attention projections; the VAE has SD's
  four encoder blocks (downsampling 8, 4 latent channels, ``scaling_factor`` 0.18215), so latents are
  resolution / 8 as with the real model; the text encoder is a 2-layer CLIP. ``scheduler/scheduler_config.json``
  is SD 2 inpainting's file verbatim (a ``PNDMScheduler`` config that states ``clip_sample: false`` and
  ``set_alpha_to_one: false``, keys that class does not take). Unlike the real model, its scaled latents do not
  have unit std (random VAE): training's latent-scale check says so.
* **ZoeDepth** (:func:`save_zoedepth_standin`): ``ZoeDepthForDepthEstimation`` with two metric heads (NYU, KITTI)
  and the domain classifier between them, like ``Intel/zoedepth-nyu-kitti``, on a 4-layer BEiT, plus its
  ``preprocessor_config.json``. Random weights give almost flat depth; the preprocess stage aligns it to the
  rendered depth, inference by the single-image prior.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

#: ``scheduler/scheduler_config.json`` of stabilityai/stable-diffusion-2-inpainting, as published.
SD2_INPAINT_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.8.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
INPAINTING_DIR = "sd2-inpainting"
ZOEDEPTH_DIR = "zoedepth-nyu-kitti"


def standin_spec(
    resolution: int,
    conditioning: str = "empty_prompt",
    known_pixels: str = "composite",
    prediction_type: str = "epsilon",
    latent_scale: float = 0.18215,
    preset: str = "local",
) -> Any:
    """The :class:`~invs.model_spec.ModelSpec` of a stand-in model at ``resolution``: ``preset``'s camera, mask and
    depth model, SD's latent scale unless told."""
    from invs.config import load_config
    from invs.model_spec import ModelSpec

    config = load_config(preset, {"train.conditioning": conditioning, "train.known_pixels": known_pixels})
    return ModelSpec.from_config(config, resolution, prediction_type, latent_scale, "stand-in")


def standin_vae(seed: int = 0) -> Any:
    """An ``AutoencoderKL`` with SD's VAE layout (four blocks: downsampling 8, 4 latent channels, SD's
    ``scaling_factor``) at small widths."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.18215,
    ).eval()


def save_inpainting_standin(folder: str | Path, seed: int = 0) -> Path:
    """Write the inpainting stand-in (see the module docstring) to ``folder``; returns it."""
    from diffusers import PNDMScheduler, StableDiffusionInpaintPipeline

    from invs.models import build_tiny_components

    folder = Path(folder)
    parts = build_tiny_components(seed=seed)
    scheduler = PNDMScheduler.from_config({k: v for k, v in SD2_INPAINT_SCHEDULER_CONFIG.items()})
    pipe = StableDiffusionInpaintPipeline(
        vae=standin_vae(seed + 3),
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=parts["unet"],
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    # The published file, keys the class does not take included (save_pretrained drops them).
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD2_INPAINT_SCHEDULER_CONFIG, indent=2))
    return folder


def save_zoedepth_standin(folder: str | Path, seed: int = 0) -> Path:
    """Write the ZoeDepth stand-in (see the module docstring) to ``folder``; returns it."""
    from invs.depth import DepthEstimator, tiny_zoedepth_config

    folder = Path(folder)
    estimator = DepthEstimator.from_config(tiny_zoedepth_config(nyu_kitti=True), input_size=(64, 64), seed=seed)
    estimator.model.save_pretrained(folder)
    estimator.processor.save_pretrained(folder)
    return folder


def save_standins(out: str | Path, seed: int = 0) -> dict[str, Path]:
    """Both stand-ins under ``out`` (``sd2-inpainting/``, ``zoedepth-nyu-kitti/``), rebuilt only when absent:
    ``{"inpainting": path, "zoedepth": path}``."""
    from invs.models import quiet_model_libraries

    quiet_model_libraries()
    out = Path(out)
    made = {"inpainting": out / INPAINTING_DIR, "zoedepth": out / ZOEDEPTH_DIR}
    if not (made["inpainting"] / "model_index.json").is_file():
        save_inpainting_standin(made["inpainting"], seed)
    if not (made["zoedepth"] / "preprocessor_config.json").is_file():
        save_zoedepth_standin(made["zoedepth"], seed)
    return made


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m invs.standins", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/standins", help="folder for sd2-inpainting/ and zoedepth-nyu-kitti/")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in save_standins(args.out, args.seed).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
