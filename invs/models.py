"""Diffusion model components: tiny random-config ones built offline, or real ones from a checkpoint (train stage,
and the VAE for precomputed latents in the preprocess stage).

Both return ``{"unet", "vae", "text_encoder", "tokenizer", "scheduler"}``, the parts that
``diffusers.StableDiffusionInpaintPipeline`` takes (with ``safety_checker=None, feature_extractor=None,
requires_safety_checker=False``).

The real target is an SD inpainting checkpoint such as ``stabilityai/stable-diffusion-2-inpainting``: UNet with
``in_channels=9`` (noisy latents 4 + mask 1 + masked-image latents 4), VAE with 4 latent channels, downsampling 8
and ``scaling_factor=0.18215``, OpenCLIP-H text encoder (``cross_attention_dim=1024``). Its ``scheduler`` folder is
a ``PNDMScheduler`` config (``scaled_linear`` betas 0.00085-0.012, 1000 training steps, ``steps_offset=1``,
``prediction_type="epsilon"``); like diffusers' training scripts we read that config into a ``DDPMScheduler``
(``add_noise`` for training) — the betas and prediction type carry over unchanged.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from invs.errors import InvsError

COMPONENT_NAMES = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

# Scheduler values of the SD (1.x / 2 inpainting, 512 px) family; the tiny model uses the same ones so that the
# training loop sees realistic noise levels.
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "steps_offset": 1,
}

TINY_TEXT_MAX_LENGTH = 77  # CLIP's context length: the pipeline pads prompts to tokenizer.model_max_length


def quiet_model_libraries() -> None:
    """No per-load progress bars from diffusers and transformers, and transformers' warnings only at error level
    (it warns on every pipeline import that torchvision, which this project does not use, is absent). Global, for
    command-line runs and training workers; real errors still raise."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


class ModelUnavailableError(InvsError):
    """The requested diffusers model (hub id or local path) cannot be loaded; no random weights are substituted."""


# ------------------------------------------------------------------------------------------------ tiny


def _byte_level_alphabet() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character map, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = dict(zip(printable, printable, strict=True))
    extra = 0
    for b in range(256):
        if b not in codes:
            codes[b] = 256 + extra
            extra += 1
    return [chr(codes[b]) for b in range(256)]


def build_tiny_tokenizer(max_length: int = TINY_TEXT_MAX_LENGTH) -> Any:
    """A real ``CLIPTokenizer`` over a hand-written byte-level vocabulary with no merges (one token per byte).

    Vocabulary: ``<|startoftext|>`` = 0, ``<|endoftext|>`` = 1 (also pad/unk), then the 256 byte characters, then
    the same with CLIP's end-of-word suffix ``</w>`` — 514 tokens. Written as ``vocab.json`` + ``merges.txt`` (only
    the ``#version`` header) into a temporary directory and loaded with ``local_files_only=True``.
    """
    from transformers import CLIPTokenizer

    alphabet = _byte_level_alphabet()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in alphabet:
            vocab[ch + suffix] = len(vocab)
    with tempfile.TemporaryDirectory(prefix="invs-tokenizer-") as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(tmp, local_files_only=True, model_max_length=max_length)


def build_tiny_components(seed: int = 0, unet_levels: int = 2) -> dict[str, Any]:
    """Small random-weight inpainting components built from configs, fully offline (for tests and ``--tiny``).

    UNet: 9 input channels, 4 output, ``block_out_channels=(32, 64)`` (``unet_levels`` 3 or 4: one or two more
    levels of 64 channels, each at half the size, the first without attention as in SD), ``cross_attention_dim=32``.
    VAE: 4 latent channels, ``block_out_channels=(16, 32, 64)`` -> downsampling factor 4 (SD: 8), so 64 px images
    give 16x16 latents; its ``scaling_factor`` is SD's 0.18215 until :func:`fit_tiny_vae` measures its own. Text
    encoder: 2-layer CLIP, hidden size 32, 77 positions. Scheduler: ``DDPMScheduler`` with
    :data:`SD_SCHEDULER_CONFIG`. Weights depend only on ``seed`` (and the UNet's on ``unet_levels``).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_tokenizer()
    hidden = 32
    torch.manual_seed(seed)
    if unet_levels not in (2, 3, 4):
        raise ValueError(f"unet_levels must be 2, 3 or 4, got {unet_levels}")
    channels = (32, 64, 64, 64)[:unet_levels]
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=9,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D", *["CrossAttnDownBlock2D"] * (unet_levels - 1)),
        up_block_types=(*["CrossAttnUpBlock2D"] * (unet_levels - 1), "UpBlock2D"),
        cross_attention_dim=hidden,
        attention_head_dim=tuple(c // 16 for c in channels),
        use_linear_projection=True,  # as SD 2
        norm_num_groups=16,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        # (16, 32, 64) rather than (32, 64, 64): half the cost per fitting step, and on the demo's targets 300 steps
        # reach a 28.3 dB round trip (vs 27.9 dB in twice the time)
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TINY_TEXT_MAX_LENGTH,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = DDPMScheduler(**SD_SCHEDULER_CONFIG)
    for model in (unet, vae, text_encoder):
        model.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


#: Initial log-variance of a tiny VAE's posterior before fitting (std e^-4 = 0.018): a random encoder's posterior has
#: std ~1, which buries the latents in sampling noise and makes the decoder learn only the mean image.
TINY_VAE_INITIAL_LOGVAR = -8.0


@torch.no_grad()
def latent_std(vae: Any, images: torch.Tensor, batch: int = 16, seed: int = 0) -> float:
    """Standard deviation of the VAE's *raw* (unscaled) latents, posterior samples, over images ``(N, 3, H, W)`` in
    [-1, 1]. ``1 / latent_std`` is the ``scaling_factor`` that gives the diffusion model unit-variance latents:
    how SD's 0.18215 was derived (1 / std of its VAE's latents)."""
    g = torch.Generator().manual_seed(seed)
    was_training = vae.training
    vae.eval()
    samples = [
        vae.encode(images[i : i + batch].to(vae.dtype)).latent_dist.sample(g).float()
        for i in range(0, len(images), batch)
    ]
    vae.train(was_training)
    return float(torch.cat(samples).std())


def fit_tiny_vae(
    vae: Any,
    images: torch.Tensor,
    steps: int,
    batch: int = 8,
    lr: float = 2e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
) -> float:
    """Fit a (tiny) ``AutoencoderKL`` on images ``(N, 3, H, W)`` in [-1, 1] and set its ``scaling_factor``;
    returns the last loss.

    A random VAE decodes any latents to noise, so a ``--tiny`` model's predicted views are unreadable however well
    its UNet learns; a few hundred steps on the training targets make its decoder reproduce shapes and colours.
    Loss: MSE of the reconstruction of a posterior sample + ``kl_weight`` x KL (SD's VAE recipe, minus the
    perceptual and GAN terms). The posterior starts narrow (:data:`TINY_VAE_INITIAL_LOGVAR`). Each image is
    mirrored left-right and its RGB channels permuted at random: a few objects' worth of images then cover more
    colours, which is what unseen objects need (measured on the demo's held-out object: round-trip SSIM 0.82-0.84
    -> 0.85-0.87 for the same steps). Afterwards
    ``vae.config.scaling_factor`` = 1 / :func:`latent_std` on ``images`` (saved with the VAE's config), so the
    scaled latents have unit variance as the noise schedule assumes. Deterministic for a given ``seed``.
    """
    if images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"need images (N, 3, H, W), got {tuple(images.shape)}")
    channels = vae.config.latent_channels
    with torch.no_grad():  # quant_conv maps the encoder's output to cat([mean, logvar])
        vae.quant_conv.weight[channels:].zero_()
        vae.quant_conv.bias[channels:].fill_(TINY_VAE_INITIAL_LOGVAR)
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    vae.train()
    loss = torch.zeros(())
    for _ in range(steps):
        x = _mirror_and_permute_colours(
            images[torch.randint(0, len(images), (min(batch, len(images)),), generator=g)], g
        )
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample(g)).sample
        loss = torch.nn.functional.mse_loss(reconstruction, x) + kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    vae.eval()
    vae.register_to_config(scaling_factor=1.0 / latent_std(vae, images, seed=seed))
    return float(loss.detach())


def _mirror_and_permute_colours(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``(B, 3, H, W)`` mirrored left-right with probability 0.5 and its channels randomly permuted."""
    mirror = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    order = torch.stack([torch.randperm(3, generator=generator) for _ in range(len(x))])
    return torch.gather(x, 1, order[:, :, None, None].expand_as(x))


@torch.no_grad()
def vae_round_trip(vae: Any, images: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """``decode(encode(images).mode())`` clamped to [-1, 1]: the best any prediction decoded by this VAE can do."""
    out = [
        vae.decode(vae.encode(images[i : i + batch].to(vae.dtype)).latent_dist.mode()).sample.float().clamp(-1, 1)
        for i in range(0, len(images), batch)
    ]
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------ real


def _source(model_id_or_path: str) -> tuple[str, bool]:
    """``(where to load from, is it a local directory)``; a local-looking path that is not a directory is an error."""
    local = Path(model_id_or_path).expanduser()
    looks_local = local.is_absolute() or model_id_or_path.startswith((".", "~")) or local.exists()
    if looks_local and not local.is_dir():
        raise ModelUnavailableError(
            f"model {model_id_or_path!r} not found: no such directory; pass --model a diffusers inpainting model "
            "directory (with unet/ vae/ text_encoder/ tokenizer/ scheduler/) or a hub id, or use --tiny"
        )
    return (str(local) if looks_local else model_id_or_path), looks_local


def _load_part(model_id_or_path: str, name: str, cls: Any) -> Any:
    source, looks_local = _source(model_id_or_path)
    try:
        return cls.from_pretrained(source, subfolder=name)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fix = (
            "check that the directory holds a complete diffusers inpainting model"
            if looks_local
            else "download it first (e.g. `hf download " + model_id_or_path + "` with network access, "
            "HF_HUB_OFFLINE unset) or pass a local directory"
        )
        raise ModelUnavailableError(
            f"cannot load {name} of model {model_id_or_path!r} ({detail[:200]}); {fix}; or use --tiny "
            "for a small random-weight model"
        ) from exc


def load_vae(model_id_or_path: str) -> Any:
    """Only the VAE of a diffusers model (``vae/``); :class:`ModelUnavailableError` when absent."""
    from diffusers import AutoencoderKL

    return _load_part(model_id_or_path, "vae", AutoencoderKL).eval()


def check_model_available(model_id_or_path: str, parts: tuple[str, ...] = COMPONENT_NAMES) -> None:
    """Fail fast (one line) when a model's configs are not on disk or in the local hub cache, without loading
    weights: run on the driver before any worker starts."""
    source, looks_local = _source(model_id_or_path)
    if looks_local:
        missing = [n for n in parts if not (Path(source) / n).is_dir()]
        if missing:
            raise ModelUnavailableError(
                f"model directory {model_id_or_path!r} lacks {', '.join(missing)}/; it must be a diffusers "
                "inpainting model (or use --tiny)"
            )
        return
    from huggingface_hub import try_to_load_from_cache

    weighted = [n for n in parts if n in ("unet", "vae", "text_encoder")]
    missing = [n for n in weighted if not isinstance(try_to_load_from_cache(source, f"{n}/config.json"), str)]
    if missing:
        raise ModelUnavailableError(
            f"model {model_id_or_path!r} is not in the local Hugging Face cache (no {missing[0]}/config.json); "
            f"download it first (`hf download {model_id_or_path}` with network access) or pass a local directory, "
            "or use --tiny"
        )


def load_components(model_id_or_path: str) -> dict[str, Any]:
    """Load a diffusers inpainting model's parts (subfolders ``unet vae text_encoder tokenizer scheduler``).

    ``model_id_or_path`` is a hub id (resolved through the local HF cache; downloads only when the hub is
    reachable and ``HF_HUB_OFFLINE`` is unset) or a local directory. Raises :class:`ModelUnavailableError` (one
    line) when any part cannot be loaded or the UNet is not a 9-channel inpainting UNet — never substitutes random
    weights.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    loaders = {
        "unet": UNet2DConditionModel,
        "vae": AutoencoderKL,
        "text_encoder": CLIPTextModel,
        "tokenizer": CLIPTokenizer,
        "scheduler": DDPMScheduler,
    }
    parts = {name: _load_part(model_id_or_path, name, cls) for name, cls in loaders.items()}
    in_channels = parts["unet"].config.in_channels
    if in_channels != 9:
        raise ModelUnavailableError(
            f"model {model_id_or_path!r} has a {in_channels}-channel UNet; iNVS needs an inpainting UNet with 9 "
            "(noisy latents 4 + mask 1 + masked-image latents 4), e.g. stabilityai/stable-diffusion-2-inpainting"
        )
    return parts


# ------------------------------------------------------------------------------------------------ SD-2-sized

#: ``unet/config.json`` of stabilityai/stable-diffusion-2-inpainting (865 M parameters), for benchmarks with random
#: weights: the real architecture's cost without downloading it.
SD2_INPAINT_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 9,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
    "norm_num_groups": 32,
}

#: ``vae/config.json`` of the SD 1.x / 2 family (84 M parameters; downsampling 8).
SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
