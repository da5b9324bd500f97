"""Precomputed VAE latents for pair shards, so training can skip the VAE encoder.

A pair sample may carry ``latents.npy``: float16 ``(2, 8, h, w)`` = ``[target, partial]`` x the VAE posterior's
``cat([mean, logvar])`` (diffusers' ``DiagonalGaussianDistribution.parameters``), unscaled, with ``h = w =``
resolution / the VAE's downsampling factor. Storing the posterior rather than one sample keeps training's
per-step sampling exactly as with on-the-fly encoding. ``meta.json`` then holds ``latents = {"vae": ID, "model":
as named to the preprocess stage, "layout": ...}``; training uses the moments only when ``ID`` equals the
fingerprint of its own VAE (:func:`vae_fingerprint`: a hash of the encoder's weights and config, so the same VAE
matches whether it was named by hub id, a relative path or a copy elsewhere, and a different one never does), and
encodes otherwise.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch

LAYOUT = "(2, 8, h, w) float16: [target, partial] x cat(mean, logvar) of the VAE posterior, unscaled"
#: Config keys that do not change what the encoder computes (latents are stored unscaled) or only name the file.
IGNORED_CONFIG_KEYS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast", "sample_size")


@torch.no_grad()
def vae_fingerprint(vae: Any) -> str:
    """``sha256:<hex>`` of what maps an image to the posterior moments: the encoder's and ``quant_conv``'s weights
    (as float32, in name order, with their shapes) and the VAE's config without :data:`IGNORED_CONFIG_KEYS` and
    diffusers' bookkeeping (``_name_or_path``, ...). The same weights give the same fingerprint wherever they were
    loaded from and in any compute dtype; any change to the encoder gives another. ~1 s for SD's VAE on a CPU."""
    digest = hashlib.sha256()
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_") and k not in IGNORED_CONFIG_KEYS}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        if name.startswith(("encoder.", "quant_conv.")):
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()


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
