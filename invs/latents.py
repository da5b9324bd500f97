"""Precomputed VAE latents for pair shards, so training can skip the VAE encoder.

A pair sample may carry ``latents.npy``: float16 ``(2, 8, h, w)`` = ``[target, partial]`` x the VAE posterior's
``cat([mean, logvar])`` (diffusers' ``DiagonalGaussianDistribution.parameters``), unscaled, with ``h = w =``
resolution / the VAE's downsampling factor. Storing the posterior rather than one sample keeps training's
per-step sampling exactly as with on-the-fly encoding. ``meta.json`` then holds ``latents = {"vae": ID,
"layout": ...}``; training uses the moments only when ``ID`` equals the fingerprint of its own VAE
(:func:`vae_fingerprint`), and encodes otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

LAYOUT = "(2, 8, h, w) float16: [target, partial] x cat(mean, logvar) of the VAE posterior, unscaled"


def vae_fingerprint(model: str, tiny_seed: int = 0) -> str:
    """Identifies a VAE: ``tiny:seed=N`` for the offline tiny model, else the model id or path."""
    return f"tiny:seed={tiny_seed}" if model == "tiny" else model.rstrip("/")


def load_vae(model: str) -> Any:
    """The VAE of ``model`` (``"tiny"``: the tiny offline model with seed 0), in eval mode."""
    if model == "tiny":
        from invs.models import build_tiny_components

        return build_tiny_components(seed=0)["vae"].eval()
    from invs.models import load_vae as load_real_vae

    return load_real_vae(model)


@torch.no_grad()
def posterior_moments(vae: Any, images: np.ndarray, device: str = "cpu") -> np.ndarray:
    """``(B, 8, h, w)`` float16 posterior moments of uint8 RGB images ``(B, H, W, 3)``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    moments = vae.encode(x.to(device, vae.dtype)).latent_dist.parameters
    return moments.float().cpu().numpy().astype(np.float16)
