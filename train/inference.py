"""Novel views from a trained model: the diffusers inpainting pipeline fed exactly as in training, export and load.

Inference with ``StableDiffusionInpaintPipeline`` (diffusers 0.42), matched to :mod:`train.loss`:

* ``image`` = the partial view (only its size is used: with ``strength=1`` the start is pure noise);
* ``masked_image_latents`` = VAE posterior *mean* of the partial view (on white) times ``scaling_factor`` — not
  the pipeline's default, which greys out masked pixels of ``image`` before encoding;
* ``mask_image`` = the soft mask max-pooled to latent cells and upsampled back (nearest), with the pipeline's
  mask processor set not to binarise, so the UNet sees the same soft latent mask as in training (the stock
  pipeline binarises at 0.5);
* ``prompt_embeds`` / ``negative_prompt_embeds`` from :mod:`train.conditioning`.

An exported model directory is a regular diffusers pipeline (``StableDiffusionInpaintPipeline.from_pretrained``
loads it) plus ``invs.json`` (conditioning, resolution, these conventions) and, for ``clip_image`` conditioning,
``image_projection/`` (the trained linear map) beside ``image_encoder/``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from invs import storage
from invs.models import ModelUnavailableError, quiet_model_libraries
from train.batches import mask_to_latent
from train.conditioning import Conditioner, ImageProjection

INVS_FILE = "invs.json"
PROJECTION_DIR = "image_projection"
#: What a prediction does with the pixels the source sees: ``composite`` blends the partial view back by the soft
#: mask (``m * generated + (1 - m) * partial``: keep where 0, generate where 1); ``generate`` returns the sampler's
#: output as decoded by the VAE.
KNOWN_PIXELS = ("composite", "generate")
#: The views scored against the target (:meth:`NovelViewModel.score`): the generated view, the same with known
#: pixels composited, the zero-cost baselines (the partial view alone, the source view copied) and the VAE's round
#: trip of the target (the ceiling of any generated view).
SCORED = ("generated", "composite", "partial", "source", "vae")


def delivered_view(known_pixels: str) -> str:
    """The scored view a ``known_pixels`` setting delivers: ``composite`` -> ``"composite"``, ``generate`` ->
    ``"generated"`` (names as in :data:`SCORED`); ``ValueError`` for any other setting."""
    if known_pixels not in KNOWN_PIXELS:
        raise ValueError(f"known_pixels must be one of {', '.join(KNOWN_PIXELS)}, got {known_pixels!r}")
    return "composite" if known_pixels == "composite" else "generated"


def keep_known(generated: torch.Tensor, partial: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask * generated + (1 - mask) * partial`` for images ``(B, 3, H, W)`` in [0, 1] and the soft pixel mask
    ``(B, 1, H, W)`` (1 = generate). Where the mask is 0 the partial view's pixels survive exactly, unblurred by the
    VAE; covered pixels seen at an angle (mask between 0 and 1) blend both."""
    if generated.shape != partial.shape or mask.shape != (generated.shape[0], 1, *generated.shape[2:]):
        raise ValueError(
            f"need generated and partial (B, 3, H, W) and mask (B, 1, H, W), got {tuple(generated.shape)}, "
            f"{tuple(partial.shape)}, {tuple(mask.shape)}"
        )
    mask = mask.to(generated)
    return mask * generated + (1 - mask) * partial.to(generated)


def soft_mask_processor(vae_scale_factor: int) -> Any:
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor(
        vae_scale_factor=vae_scale_factor, do_normalize=False, do_binarize=False, do_convert_grayscale=True
    )


#: Inference scheduler settings for latent diffusion where the model's own scheduler config does not state them
#: (DDIM's class defaults, ``clip_sample=True`` and ``set_alpha_to_one=True``, are for pixel-space models:
#: clipping SD's predicted latents to [-1, 1] damages every sample).
LATENT_DIFFUSION_SCHEDULER = {"clip_sample": False, "set_alpha_to_one": False, "thresholding": False}


def inference_scheduler(scheduler: Any) -> Any:
    """A ``DDIMScheduler`` for sampling with the model whose training scheduler is ``scheduler``: every setting its
    config states (betas, ``steps_offset``, ``prediction_type``, ``clip_sample`` and ``set_alpha_to_one`` when the
    model's file has them), the rest from :data:`LATENT_DIFFUSION_SCHEDULER`, never from DDIM's class defaults.
    A setting counts as stated unless diffusers filled it in (``_use_default_values``) or it is absent."""
    from diffusers import DDIMScheduler

    config = dict(scheduler.config)
    filled = set(config.get("_use_default_values", []))
    for key, value in LATENT_DIFFUSION_SCHEDULER.items():
        if key not in config or key in filled:
            config[key] = value
    config["_use_default_values"] = [k for k in filled if k not in LATENT_DIFFUSION_SCHEDULER]
    return DDIMScheduler.from_config(config)


def build_pipeline(components: dict[str, Any], unet: Any) -> Any:
    """A ``StableDiffusionInpaintPipeline`` from the components, ``unet``, and the DDIM scheduler of
    :func:`inference_scheduler`."""
    quiet_model_libraries()
    from diffusers import StableDiffusionInpaintPipeline
    from transformers import CLIPImageProcessor

    encoder = components.get("image_encoder")
    extractor = None
    if encoder is not None:
        size = encoder.config.image_size
        extractor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    pipe = StableDiffusionInpaintPipeline(
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        unet=unet,
        scheduler=inference_scheduler(components["scheduler"]),
        safety_checker=None,
        feature_extractor=extractor,
        image_encoder=encoder,
        requires_safety_checker=False,
    )
    pipe.mask_processor = soft_mask_processor(pipe.vae_scale_factor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class NovelViewModel:
    """A pipeline plus its conditioning: ``predict`` turns (source, partial, mask) batches into target views."""

    def __init__(
        self,
        pipe: Any,
        conditioning: str,
        projection: ImageProjection | None,
        resolution: int,
        conditioner: Conditioner | None = None,
        known_pixels: str = "composite",
    ) -> None:
        """``conditioner``: one already built from the same parts (training's), instead of building it again;
        ``known_pixels``: the default of :meth:`predict` (:data:`KNOWN_PIXELS`)."""
        delivered_view(known_pixels)
        self.pipe, self.resolution, self.projection = pipe, resolution, projection
        self.known_pixels = known_pixels
        parts = {"tokenizer": pipe.tokenizer, "text_encoder": pipe.text_encoder, "image_encoder": pipe.image_encoder}
        self.conditioner = conditioner or Conditioner(conditioning, parts)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls, uri: str, device: str = "cpu", dtype: torch.dtype | None = None) -> NovelViewModel:
        """Load an exported model directory (local path or ``s3://``; S3 is downloaded to a temporary folder)."""
        quiet_model_libraries()
        from diffusers import StableDiffusionInpaintPipeline

        local = _local_copy(uri)
        try:
            info = json.loads((local / INVS_FILE).read_text())
            pipe = StableDiffusionInpaintPipeline.from_pretrained(local, local_files_only=True, torch_dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelUnavailableError(f"{uri} is not an exported iNVS model ({exc})") from exc
        pipe.mask_processor = soft_mask_processor(pipe.vae_scale_factor)
        pipe.set_progress_bar_config(disable=True)
        projection = None
        if info["conditioning"] == "clip_image":
            projection = load_projection(local / PROJECTION_DIR)
        known = info.get("known_pixels", "composite")
        return cls(pipe.to(device), info["conditioning"], projection, int(info["resolution"]), None, known).to(device)

    def to(self, device: str | torch.device) -> NovelViewModel:
        self.pipe.to(device)
        self.conditioner.to(device)
        if self.projection is not None:
            self.projection.to(device)
        return self

    @torch.no_grad()
    def predict(
        self,
        batch: dict[str, torch.Tensor],
        steps: int = 50,
        guidance_scale: float = 1.0,
        seed: int = 0,
        known_pixels: str | None = None,
        seeds: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Predicted target views ``(B, 3, H, W)`` in [0, 1] for ``source``/``partial`` in [-1, 1] and the soft
        ``mask`` ``(B, 1, H, W)`` (1 = generate); the same ``seed`` gives the same views. ``seeds``: one seed per
        pair instead, so that a pair's view does not depend on the batch it is in. ``known_pixels``
        (:data:`KNOWN_PIXELS`; None: the model's default) says whether the partial view is composited back."""
        known_pixels = known_pixels or self.known_pixels
        delivered_view(known_pixels)
        pipe = self.pipe
        device = pipe.device
        vae = pipe.vae
        partial = batch["partial"].to(device)
        b, _, h, w = partial.shape
        latents = vae.encode(partial.to(vae.dtype)).latent_dist.mode() * vae.config.scaling_factor
        cells = mask_to_latent(batch["mask"].float().to(device), tuple(latents.shape[-2:]))
        mask = F.interpolate(cells, size=(h, w), mode="nearest")
        features = self.conditioner.features({"source": batch["source"].to(device)})
        uncond = self.conditioner.unconditional(b, device)
        if self.projection is not None:
            features, uncond = self.projection(features), self.projection(uncond)
        if seeds is None:
            noise = torch.randn(latents.shape, generator=torch.Generator(device="cpu").manual_seed(seed))
        else:
            if len(seeds) != b:
                raise ValueError(f"got {len(seeds)} seeds for {b} pairs")
            one = (1, *latents.shape[1:])
            noise = torch.cat([torch.randn(one, generator=torch.Generator(device="cpu").manual_seed(s)) for s in seeds])
        noise = noise.to(device, pipe.unet.dtype)
        out = pipe(
            image=(partial + 1) / 2,
            mask_image=mask,
            masked_image_latents=latents,
            prompt_embeds=features.to(pipe.unet.dtype),
            negative_prompt_embeds=uncond.to(pipe.unet.dtype),
            guidance_scale=guidance_scale,
            num_inference_steps=steps,
            height=h,
            width=w,
            latents=noise,
            output_type="pt",
        )
        generated = out.images.float().clamp(0, 1)
        if known_pixels == "generate":
            return generated
        return keep_known(generated, (partial.float() + 1) / 2, batch["mask"].float().to(device))

    def score(
        self,
        batch: dict[str, torch.Tensor],
        steps: int,
        guidance_scale: float = 1.0,
        seed: int = 0,
        lpips: torch.nn.Module | None = None,
        vae_ceiling: bool = True,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Predict ``batch`` and score every view of :data:`SCORED` against its target (without ``"vae"``, the
        VAE round trip of the target, when ``vae_ceiling`` is false: it does not change while the VAE is frozen).

        Returns ``(views, scores)``: ``views[name]`` ``(B, 3, H, W)`` in [0, 1] on the CPU, ``scores`` as
        :func:`invs.metrics.compare` (``psnr_<name>``, ``ssim_<name>`` and, given ``lpips``, ``lpips_<name>``).
        """
        from invs import metrics
        from invs.models import vae_round_trip

        generated = self.predict(batch, steps, guidance_scale, seed, known_pixels="generate").cpu()
        partial = (batch["partial"] + 1) / 2
        views = {
            "generated": generated,
            "composite": keep_known(generated, partial, batch["mask"]),
            "partial": partial,
            "source": (batch["source"] + 1) / 2,
        }
        if vae_ceiling:
            views["vae"] = (vae_round_trip(self.pipe.vae, batch["target"].to(self.pipe.device)).cpu() + 1) / 2
        return views, metrics.compare(views, (batch["target"] + 1) / 2, lpips=lpips)


def save_projection(projection: ImageProjection, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps({"in_features": projection.in_features, "out_features": projection.out_features})
    )
    save_file({k: v.contiguous() for k, v in projection.state_dict().items()}, str(folder / "model.safetensors"))


def load_projection(folder: Path) -> ImageProjection:
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    projection = ImageProjection(int(config["in_features"]), int(config["out_features"]))
    projection.load_state_dict(load_file(str(folder / "model.safetensors")))
    return projection.eval()


def export_model(
    components: dict[str, Any],
    unet: Any,
    projection: ImageProjection | None,
    conditioning: str,
    resolution: int,
    out_uri: str,
    extra: dict[str, Any] | None = None,
    known_pixels: str = "composite",
) -> None:
    """Save a diffusers pipeline directory (+ ``invs.json`` and the projection) to ``out_uri`` (local or S3)."""
    if conditioning != "clip_image":
        components = {k: v for k, v in components.items() if k != "image_encoder"}
    pipe = build_pipeline(components, unet)
    with tempfile.TemporaryDirectory(prefix="invs-export-") as tmp:
        folder = Path(tmp) / "model"
        pipe.save_pretrained(folder, safe_serialization=True)
        if projection is not None:
            save_projection(projection, folder / PROJECTION_DIR)
        info = {
            "conditioning": conditioning,
            "resolution": resolution,
            "mask": "soft, 1 = generate; max-pooled to latent cells; do not binarise",
            "masked_image_latents": "VAE posterior mean of the partial view on white, times scaling_factor",
            "known_pixels": known_pixels,
            **(extra or {}),
        }
        (folder / INVS_FILE).write_text(json.dumps(info, indent=2))
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            storage.upload_file(path, storage.join(out_uri, path.relative_to(folder).as_posix()))


def _local_copy(uri: str) -> Path:
    if not storage.is_s3(uri):
        path = Path(uri).expanduser()
        if not (path / INVS_FILE).is_file():
            raise ModelUnavailableError(f"{uri} is not an exported iNVS model (no {INVS_FILE})")
        return path
    target = Path(tempfile.mkdtemp(prefix="invs-model-"))
    files = storage.list_files(uri)
    if not files:
        raise ModelUnavailableError(f"{uri} is not an exported iNVS model (empty)")
    prefix = uri.rstrip("/") + "/"
    for f in files:
        dest = target / f[len(prefix) :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        storage.download_file(f, dest)
    return target
