"""The training objective: denoise the target view's latents given the mask and the partial view's latents.

For a batch of pairs (tensors from :func:`train.batches.pair_to_tensors`, images in [-1, 1], mask 1 = generate):

1. ``z0 = vae.encode(target).latent_dist.sample() * scaling_factor``; ``p = vae.encode(partial)...`` likewise
   (the partial view as is, on white: at inference it is passed to the pipeline as ``masked_image_latents``).
2. ``m`` = the soft mask max-pooled to latent resolution (:func:`train.batches.mask_to_latent`).
3. Timesteps from a named distribution (:mod:`train.timesteps`), noise ``e`` (+ ``noise_offset`` per channel),
   ``z_t = scheduler.add_noise(z0, e, t)``.
4. UNet input ``cat([z_t, m, p])`` (the pipeline's order), conditioned on the prompt embedding (``""`` by
   default: iNVS conditions on the partial view, not on text).
5. MSE against ``e`` (``prediction_type="epsilon"``) or the velocity (``"v_prediction"``), from the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from train.batches import inpaint_unet_input, mask_to_latent
from train.timesteps import sample_timesteps


@dataclass
class LossConfig:
    timesteps: str = "cubic"
    noise_offset: float = 0.0
    prompt: str = ""


def prompt_embedding(components: dict[str, Any], prompt: str, batch: int) -> torch.Tensor:
    """Text-encoder hidden states ``(batch, tokens, dim)`` of one prompt, padded to the tokenizer's length."""
    tokenizer, encoder = components["tokenizer"], components["text_encoder"]
    ids = tokenizer(
        prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        hidden = encoder(ids.to(encoder.device))[0]
    return hidden.expand(batch, -1, -1)


def encode(vae: Any, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scaled VAE latents of images in [-1, 1] (no gradient: the VAE is frozen)."""
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.sample(generator)
    return latents * vae.config.scaling_factor


def training_loss(
    components: dict[str, Any],
    batch: dict[str, torch.Tensor],
    config: LossConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The denoising loss of one batch (see the module docstring); differentiable in the UNet's weights."""
    unet, vae, scheduler = components["unet"], components["vae"], components["scheduler"]
    z0 = encode(vae, batch["target"], generator)
    partial = encode(vae, batch["partial"], generator)
    mask = mask_to_latent(batch["mask"], tuple(z0.shape[-2:]))
    b = z0.shape[0]
    noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    if config.noise_offset:
        noise = noise + config.noise_offset * torch.randn(
            (b, z0.shape[1], 1, 1), generator=generator, device=z0.device, dtype=z0.dtype
        )
    t = sample_timesteps(config.timesteps, b, scheduler.config.num_train_timesteps, generator=generator)
    t = t.to(z0.device)
    noisy = scheduler.add_noise(z0, noise, t)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(z0, noise, t)
    else:
        raise ValueError(f"unsupported prediction type {prediction_type!r} (epsilon or v_prediction)")
    cond = prompt_embedding(components, config.prompt, b)
    pred = unet(inpaint_unet_input(noisy, mask, partial), t, encoder_hidden_states=cond).sample
    return F.mse_loss(pred.float(), target.float())
