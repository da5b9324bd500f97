"""The training objective: denoise the target view's latents given the mask and the partial view's latents.

For a batch of pairs (tensors from :func:`invs.pair_builder.pair_to_tensors`, images in [-1, 1], mask 1 = generate):

1. ``z0`` = a sample of the VAE posterior of the target times ``scaling_factor``; ``p`` likewise for the partial
   view as is, on white (at inference it is passed to the pipeline as ``masked_image_latents``). When the batch
   carries precomputed posterior moments (``batch["moments"]``, see :mod:`invs.latents`) the VAE is skipped.
2. ``m`` = the soft mask max-pooled to latent resolution (:func:`inference.pipeline.mask_to_latent`), not binarised.
3. Timesteps from a named distribution (:mod:`train.timesteps`), noise ``e`` (+ ``noise_offset`` per channel),
   ``z_t = scheduler.add_noise(z0, e, t)``.
4. UNet input ``cat([z_t, m, p])`` (the pipeline's order), cross-attention on the conditioning
   (:mod:`inference.conditioning`) with classifier-free-guidance dropout.
5. MSE against ``e`` (``epsilon``) or the velocity (``v_prediction``).

Every random draw (posterior samples, timesteps, noise, CFG dropout) comes from the one ``generator`` passed in, so
a step is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from inference.conditioning import Conditioner, ImageProjection, cfg_drop_mask
from inference.pipeline import inpaint_unet_input, mask_to_latent
from train.timesteps import sample_timesteps


@dataclass
class LossConfig:
    timesteps: str = "cubic"
    timestep_params: dict[str, float] = field(default_factory=dict)
    noise_offset: float = 0.0
    cfg_dropout: float = 0.0
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"


class Denoiser(nn.Module):
    """The trained weights: the 9-channel inpainting UNet and, for ``clip_image`` conditioning, its projection."""

    def __init__(self, unet: nn.Module, projection: ImageProjection | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.projection = projection

    def forward(self, unet_input: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        cond = self.projection(features) if self.projection is not None else features
        return self.unet(unet_input, t, encoder_hidden_states=cond.to(unet_input.dtype)).sample


@dataclass
class Frozen:
    """The parts that are not trained: VAE, noise scheduler, conditioner."""

    vae: Any
    scheduler: Any
    conditioner: Conditioner


def encode(vae: Any, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scaled VAE latents (a posterior sample) of images in [-1, 1] (no gradient: the VAE is frozen)."""
    with torch.no_grad():
        latents = vae.encode(images.to(vae.dtype)).latent_dist.sample(generator)
    return latents.float() * vae.config.scaling_factor


def sample_moments(moments: torch.Tensor, scaling_factor: float, generator: torch.Generator | None) -> torch.Tensor:
    """Scaled latents sampled from stored posterior moments ``(B, 8, h, w)`` = ``cat([mean, logvar])``."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    return DiagonalGaussianDistribution(moments.float()).sample(generator) * scaling_factor


def batch_latents(frozen: Frozen, batch: dict[str, torch.Tensor], generator: torch.Generator | None):
    """``(z0, partial_latents)`` of a batch: from stored moments if present, else by encoding with the VAE."""
    if "moments" in batch:
        sf = frozen.vae.config.scaling_factor
        moments = batch["moments"]
        return sample_moments(moments[:, 0], sf, generator), sample_moments(moments[:, 1], sf, generator)
    return encode(frozen.vae, batch["target"], generator), encode(frozen.vae, batch["partial"], generator)


#: The std of the scaled target latents that training accepts without a warning: the noise schedule assumes ~1.
LATENT_STD_RANGE = (0.5, 2.0)


def latent_scale_warning(std: float, scaling_factor: float) -> str | None:
    """A warning when the scaled latents' std is outside :data:`LATENT_STD_RANGE` (None when it is inside)."""
    low, high = LATENT_STD_RANGE
    if low <= std <= high:
        return None
    return (
        f"the scaled target latents have std {std:.3f}, outside [{low}, {high}]: the VAE's scaling_factor "
        f"{scaling_factor:.5g} does not fit this VAE (use {scaling_factor / std:.5g} = 1 / std of its raw latents); "
        "with it the noise schedule drowns the signal (std < 1) or barely hides it (std > 1), and the loss can fall "
        "while nothing is learned"
    )


def training_loss(
    denoiser: nn.Module,
    frozen: Frozen,
    batch: dict[str, torch.Tensor],
    config: LossConfig,
    generator: torch.Generator | None = None,
    stats: dict[str, float] | None = None,
) -> torch.Tensor:
    """The denoising loss of one batch (see the module docstring); differentiable in the denoiser's weights.

    ``generator`` must live on the CPU; draws are made there and moved to the batch's device, so the same seed gives
    the same step on every device. ``stats``, when given, receives ``latent_std``: the std of the scaled target
    latents ``z0`` of this batch (should be ~1, see :func:`latent_scale_warning`).
    """
    z0, partial = batch_latents(frozen, batch, generator)
    if stats is not None:
        stats["latent_std"] = float(z0.detach().float().std())
    device = batch["mask"].device
    z0, partial = z0.to(device), partial.to(device)
    mask = mask_to_latent(batch["mask"], tuple(z0.shape[-2:]))
    b = z0.shape[0]
    noise = torch.randn(z0.shape, generator=generator).to(device)
    if config.noise_offset:
        noise = noise + config.noise_offset * torch.randn((b, z0.shape[1], 1, 1), generator=generator).to(device)
    t = sample_timesteps(
        config.timesteps, b, frozen.scheduler.config.num_train_timesteps, generator=generator, **config.timestep_params
    ).to(device)
    noisy = frozen.scheduler.add_noise(z0, noise, t)
    if config.prediction_type == "epsilon":
        target = noise
    elif config.prediction_type == "v_prediction":
        target = frozen.scheduler.get_velocity(z0, noise, t)
    else:
        raise ValueError(f"unsupported prediction type {config.prediction_type!r} (epsilon or v_prediction)")
    drop = cfg_drop_mask(b, config.cfg_dropout, generator).to(device)
    features = frozen.conditioner.features(batch, drop)
    pred = denoiser(inpaint_unet_input(noisy, mask, partial), t, features)
    return F.mse_loss(pred.float(), target.float())
