"""The trained model as a diffusers pipeline: registered modules, its own spec, export and load, sampling as trained.

:class:`NovelViewPipeline` is a ``DiffusionPipeline``: ``save_pretrained`` writes a standard folder (one sub-folder
per module, ``model_index.json``) whose ``spec`` entry is the :class:`invs.model_spec.ModelSpec` (camera model and
source-camera prior, mask, depth, resolution, prediction type, latent scale, conditioning, known pixels), and
``from_pretrained`` (or :meth:`NovelViewPipeline.load`, which also reads ``s3://``) gives it back. The sampler is
fed exactly as :mod:`train.loss` trains (diffusers 0.42 ``StableDiffusionInpaintPipeline``'s denoising loop, with
the UNet's 9-channel input of :func:`inpaint_unet_input`):

* masked-image latents = VAE posterior *mean* of the partial view (on white) times ``scaling_factor``;
* the mask = the soft pixel mask max-pooled to latent cells (:func:`mask_to_latent`), never binarised;
* cross-attention = :class:`inference.conditioning.Conditioner`'s features (through ``image_projection`` for
  ``clip_image``), the unconditional ones for classifier-free guidance;
* DDIM (:func:`inference_scheduler`), one noise seed per pair, so a view does not depend on its batch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline

from invs import storage
from invs.errors import InvsError
from invs.model_spec import KNOWN_PIXELS, ModelSpec
from invs.models import ModelUnavailableError, quiet_model_libraries

#: The views scored against the target (:meth:`NovelViewPipeline.score`): the generated view, the same with known
#: pixels composited, the zero-cost baselines (the partial view alone, the source view copied), the VAE's round
#: trip of the target (the ceiling of any generated view) and the same with known pixels composited (the ceiling of
#: the composited view: a model that generated the target itself, up to the VAE's loss).
SCORED = ("generated", "composite", "partial", "source", "vae", "vae_composite")
INDEX_FILE = "model_index.json"
#: The file an export of the earlier format held beside a plain ``StableDiffusionInpaintPipeline``.
EARLIER_FORMAT_FILE = "invs.json"


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


def mask_to_latent(
    mask: torch.Tensor, latent_hw: tuple[int, int], mode: Literal["max", "area"] = "max"
) -> torch.Tensor:
    """Downsample a soft pixel mask ``(B, 1, H, W)`` to latent resolution ``(B, 1, h, w)``.

    ``max`` (default): each latent cell takes the largest mask value among its pixels, so any pixel to generate
    marks its cell. A latent cell encodes its whole pixel patch (and more, through the VAE's receptive field); if
    any of it must be generated, the partial-view latent there is not trustworthy and the UNet has to know it.
    Soft values survive (a cell whose pixels are all 0.3 gets 0.3). ``area``: the cell's mean (the fraction to
    generate), which dilutes thin regions. (diffusers' stock inpainting pipeline binarises at 0.5 and downsamples
    by nearest pixel, which can drop thin regions.)
    """
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (B, 1, H, W), got {tuple(mask.shape)}")
    h, w = latent_hw
    H, W = mask.shape[-2:]
    if H % h or W % w:
        raise ValueError(f"mask size {(H, W)} is not a multiple of the latent size {(h, w)}")
    if mode == "max":
        return F.max_pool2d(mask, kernel_size=(H // h, W // w))
    if mode == "area":
        return F.avg_pool2d(mask, kernel_size=(H // h, W // w))
    raise ValueError(f"unknown mask downsampling mode {mode!r}; valid: max, area")


def inpaint_unet_input(
    noisy_latents: torch.Tensor, mask_latent: torch.Tensor, partial_latents: torch.Tensor
) -> torch.Tensor:
    """The inpainting UNet's 9-channel input ``(B, 4 + 1 + 4, h, w)``: noisy latents, mask, partial-view latents
    (the order of diffusers' ``StableDiffusionInpaintPipeline``: ``torch.cat([latent_model_input, mask,
    masked_image_latents], dim=1)``; for iNVS the masked image is the partial target view)."""
    if noisy_latents.ndim != 4 or mask_latent.ndim != 4 or partial_latents.ndim != 4:
        raise ValueError("noisy_latents, mask_latent and partial_latents must all be (B, C, h, w)")
    if mask_latent.shape[1] != 1 or noisy_latents.shape[1] != partial_latents.shape[1]:
        raise ValueError(
            f"channel mismatch: noisy {noisy_latents.shape[1]}, mask {mask_latent.shape[1]} (must be 1), "
            f"partial {partial_latents.shape[1]}"
        )
    shapes = {tuple(t.shape[i] for i in (0, 2, 3)) for t in (noisy_latents, mask_latent, partial_latents)}
    if len(shapes) != 1:
        raise ValueError(f"batch/spatial sizes differ: {sorted(shapes)}")
    mask_latent = mask_latent.to(dtype=noisy_latents.dtype)
    partial_latents = partial_latents.to(dtype=noisy_latents.dtype)
    return torch.cat([noisy_latents, mask_latent, partial_latents], dim=1)


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


class NovelViewPipeline(DiffusionPipeline):
    """Novel views from (source, partial view, soft mask) batches; its ``spec`` says how to build them.

    Modules: ``vae``, ``text_encoder``, ``tokenizer``, ``unet`` (9 input channels), ``scheduler`` (DDIM), and for
    ``clip_image`` conditioning ``image_encoder`` and ``image_projection``. Config: ``spec`` (a
    :class:`~invs.model_spec.ModelSpec` as a dict) and ``training`` (where the weights came from; informative).
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->unet->vae"
    _optional_components: ClassVar[list[str]] = ["image_encoder", "image_projection"]

    def __init__(
        self,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        unet: Any,
        scheduler: Any,
        image_encoder: Any = None,
        image_projection: Any = None,
        spec: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            image_encoder=image_encoder,
            image_projection=image_projection,
        )
        self.register_to_config(spec=spec, training=training or {})
        self.spec = ModelSpec.from_dict(spec or {}, "the pipeline")
        if self.spec.conditioning == "clip_image" and (image_encoder is None or image_projection is None):
            raise InvsError("clip_image conditioning needs the image_encoder and image_projection modules")
        if int(unet.config.in_channels) != 9:
            raise InvsError(f"the UNet takes {unet.config.in_channels} input channels; an inpainting UNet takes 9")
        self._conditioner: Any = None
        self.set_progress_bar_config(disable=True)

    # ---------------------------------------------------------------------------------------------- building

    @classmethod
    def from_parts(
        cls,
        components: dict[str, Any],
        unet: Any,
        spec: ModelSpec,
        projection: Any = None,
        conditioner: Any = None,
        training: dict[str, Any] | None = None,
    ) -> NovelViewPipeline:
        """A pipeline from training's components (``vae``, ``text_encoder``, ``tokenizer``, ``scheduler`` (its
        training scheduler; sampling uses :func:`inference_scheduler`), ``image_encoder``), ``unet`` and, for
        ``clip_image``, the trained ``projection``. ``conditioner``: one already built from the same parts."""
        quiet_model_libraries()
        clip = spec.conditioning == "clip_image"
        pipe = cls(
            vae=components["vae"],
            text_encoder=components["text_encoder"],
            tokenizer=components["tokenizer"],
            unet=unet,
            scheduler=inference_scheduler(components["scheduler"]),
            image_encoder=components.get("image_encoder") if clip else None,
            image_projection=projection if clip else None,
            spec=spec.to_dict(),
            training=training,
        )
        pipe._conditioner = conditioner
        return pipe

    @classmethod
    def load(cls, uri: str, device: str = "cpu", dtype: torch.dtype | None = None) -> NovelViewPipeline:
        """Load an exported model (a local folder or ``s3://``, read through a temporary folder that is removed);
        :class:`ModelUnavailableError` in one line when ``uri`` is not one."""
        import inference.conditioning  # noqa: F401  diffusers finds the image_projection's module in sys.modules only

        quiet_model_libraries()
        model_index(uri)  # a folder of another format fails here, before anything is downloaded
        with tempfile.TemporaryDirectory(prefix="invs-model-") as tmp:
            local = _local_folder(uri, Path(tmp))
            try:
                pipe = cls.from_pretrained(local, local_files_only=True, torch_dtype=dtype)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise ModelUnavailableError(f"{uri} is not an exported iNVS model ({reason})") from None
        return pipe.to(device)

    def save(self, out_uri: str) -> None:
        """``save_pretrained`` to ``out_uri`` (a local folder or ``s3://``)."""
        with tempfile.TemporaryDirectory(prefix="invs-export-") as tmp:
            folder = Path(tmp) / "model"
            self.save_pretrained(folder, safe_serialization=True)
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                storage.upload_file(path, storage.join(out_uri, path.relative_to(folder).as_posix()))

    @property
    def conditioner(self) -> Any:
        """The frozen part of the conditioning (:class:`inference.conditioning.Conditioner`), built on first use."""
        if self._conditioner is None:
            from inference.conditioning import Conditioner

            parts = {
                "tokenizer": self.tokenizer,
                "text_encoder": self.text_encoder,
                "image_encoder": self.image_encoder,
            }
            self._conditioner = Conditioner(self.spec.conditioning, parts)  # type: ignore[arg-type]
        return self._conditioner.to(self.device)

    @property
    def resolution(self) -> int:
        return self.spec.resolution

    @property
    def known_pixels(self) -> str:
        return self.spec.known_pixels

    # ---------------------------------------------------------------------------------------------- sampling

    def check_inputs(self, batch: dict[str, torch.Tensor], seeds: Sequence[int] | None) -> None:
        """One clear ``ValueError`` for a batch the model cannot take: ``source`` and ``partial`` ``(B, 3, R, R)``,
        ``mask`` ``(B, 1, R, R)``, ``R`` the model's resolution; one seed per pair when seeds are given."""
        missing = [k for k in ("source", "partial", "mask") if k not in batch]
        if missing:
            raise ValueError(f"the batch has no {', '.join(missing)}")
        b = batch["partial"].shape[0]
        r = self.resolution
        for name, channels in (("source", 3), ("partial", 3), ("mask", 1)):
            if tuple(batch[name].shape) != (b, channels, r, r):
                raise ValueError(f"{name} is {tuple(batch[name].shape)}; the model takes {(b, channels, r, r)}")
        if seeds is not None and len(seeds) != b:
            raise ValueError(f"got {len(seeds)} seeds for {b} pairs")

    def _embeddings(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.conditioner.features({"source": source})
        uncond = self.conditioner.unconditional(source.shape[0], self.device)
        if self.image_projection is not None:
            dtype = self.image_projection.dtype
            features, uncond = self.image_projection(features.to(dtype)), self.image_projection(uncond.to(dtype))
        return features, uncond

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
        (:data:`~invs.model_spec.KNOWN_PIXELS`; None: the model's own) says whether the partial view is composited
        back."""
        known_pixels = known_pixels or self.known_pixels
        delivered_view(known_pixels)
        self.check_inputs(batch, seeds)
        device, vae, unet = self.device, self.vae, self.unet
        partial = batch["partial"].to(device)
        latents_in = vae.encode(partial.to(vae.dtype)).latent_dist.mode() * vae.config.scaling_factor
        mask = mask_to_latent(batch["mask"].float().to(device), tuple(latents_in.shape[-2:]))
        features, uncond = self._embeddings(batch["source"].to(device))
        noise = _noise(latents_in.shape, seed, seeds).to(device, unet.dtype)
        cfg = guidance_scale > 1.0
        embeddings = torch.cat([uncond, features]) if cfg else features
        latents = _denoise(unet, self.scheduler, noise, mask, latents_in, embeddings, steps, guidance_scale)
        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        generated = (decoded.float() / 2 + 0.5).clamp(0, 1)
        if known_pixels == "generate":
            return generated
        return keep_known(generated, (partial.float() + 1) / 2, batch["mask"].float().to(device))

    __call__ = predict

    def score(
        self,
        batch: dict[str, torch.Tensor],
        steps: int,
        guidance_scale: float = 1.0,
        seed: int = 0,
        lpips: torch.nn.Module | None = None,
        vae_ceiling: bool = True,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Predict ``batch`` and score every view of :data:`SCORED` against its target (without ``"vae"`` and
        ``"vae_composite"``, the VAE round trip of the target, when ``vae_ceiling`` is false: it does not change
        while the VAE is frozen).

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
            views["vae"] = (vae_round_trip(self.vae, batch["target"].to(self.device)).cpu() + 1) / 2
            views["vae_composite"] = keep_known(views["vae"], partial, batch["mask"])
        return views, metrics.compare(views, (batch["target"] + 1) / 2, lpips=lpips)


def _noise(shape: torch.Size, seed: int, seeds: Sequence[int] | None) -> torch.Tensor:
    """The starting latents, drawn on the CPU (the same on every device): from ``seed`` for the batch, or one
    ``seeds`` entry per pair."""
    if seeds is None:
        return torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(seed))
    one = (1, *shape[1:])
    return torch.cat([torch.randn(one, generator=torch.Generator(device="cpu").manual_seed(s)) for s in seeds])


def _denoise(
    unet: Any,
    scheduler: Any,
    latents: torch.Tensor,
    mask: torch.Tensor,
    partial_latents: torch.Tensor,
    embeddings: torch.Tensor,
    steps: int,
    guidance_scale: float,
) -> torch.Tensor:
    """The sampling loop of diffusers' inpainting pipeline (strength 1): ``embeddings`` are ``[uncond, cond]``
    stacked when ``guidance_scale > 1`` (classifier-free guidance), else the conditional ones."""
    cfg = guidance_scale > 1.0
    scheduler.set_timesteps(steps, device=latents.device)
    latents = latents * scheduler.init_noise_sigma
    dtype = unet.dtype
    mask, partial_latents = mask.to(dtype), partial_latents.to(dtype)
    if cfg:
        mask, partial_latents = torch.cat([mask] * 2), torch.cat([partial_latents] * 2)
    embeddings = embeddings.to(dtype)
    for t in scheduler.timesteps:
        x = torch.cat([latents] * 2) if cfg else latents
        x = inpaint_unet_input(scheduler.scale_model_input(x, t), mask, partial_latents)
        prediction = unet(x, t, encoder_hidden_states=embeddings, return_dict=False)[0]
        if cfg:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
    return latents


def _local_folder(uri: str, scratch: Path) -> Path:
    """The model folder on this machine: ``uri`` itself, or an ``s3://`` model downloaded under ``scratch``."""
    if not storage.is_s3(uri):
        return Path(uri).expanduser()
    prefix = uri.rstrip("/") + "/"
    for f in storage.list_files(uri):
        dest = scratch / f[len(prefix) :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        storage.download_file(f, dest)
    return scratch


def model_index(uri: str) -> dict[str, Any]:
    """An export's ``model_index.json`` (its modules and its ``spec``), read without the weights, local or S3;
    :class:`ModelUnavailableError` in one line for a folder that is not an export of this format: no index,
    another pipeline, or the earlier format (which says how to convert it)."""
    import json

    try:
        index = json.loads(storage.read_text(storage.join(uri, INDEX_FILE)))
    except (InvsError, OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelUnavailableError(f"{uri} is not an exported iNVS model (its {INDEX_FILE}: {reason})") from None
    if isinstance(index, dict) and index.get("_class_name") == NovelViewPipeline.__name__:
        return index
    if storage.exists(storage.join(uri, EARLIER_FORMAT_FILE)):
        raise ModelUnavailableError(
            f"{uri} was exported in the earlier format (no model spec); convert it once with the preset it was "
            f"trained with: python inference/upgrade.py --model {uri} --config PRESET --out NEW_FOLDER"
        )
    kind = index.get("_class_name") if isinstance(index, dict) else type(index).__name__
    raise ModelUnavailableError(f"{uri} is not an exported iNVS model (a {kind} pipeline)")


def export_model(
    components: dict[str, Any],
    unet: Any,
    projection: Any,
    spec: ModelSpec,
    out_uri: str,
    training: dict[str, Any] | None = None,
) -> NovelViewPipeline:
    """Save the trained model (see :meth:`NovelViewPipeline.from_parts`) to ``out_uri`` (local or S3)."""
    pipe = NovelViewPipeline.from_parts(components, unet, spec, projection, training=training)
    pipe.save(out_uri)
    return pipe
