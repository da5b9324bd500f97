"""Tiny offline inpainting components: the real diffusers pipeline assembles, runs, saves and reloads; real loading
of absent weights fails with one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline

from inference.pipeline import inpaint_unet_input, mask_to_latent
from invs.models import ModelUnavailableError, build_tiny_components, load_components

SIZE = 64


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    return build_tiny_components(seed=0)


def _pipeline(parts: dict[str, Any]) -> StableDiffusionInpaintPipeline:
    pipe = StableDiffusionInpaintPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 16:48, 8:40] = 1.0
    return image, mask


def _run(pipe: StableDiffusionInpaintPipeline, steps: int = 2) -> np.ndarray:
    image, mask = _inputs()
    out = pipe(
        "a wooden chair",
        image=image,
        mask_image=mask,
        height=SIZE,
        width=SIZE,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return out.images


def test_tiny_components_are_an_inpainting_model(tiny: dict[str, Any]) -> None:
    assert tiny["unet"].config.in_channels == 9 and tiny["unet"].config.out_channels == 4
    assert tiny["vae"].config.latent_channels == 4
    assert tiny["unet"].config.cross_attention_dim == tiny["text_encoder"].config.hidden_size
    assert tiny["scheduler"].config.prediction_type == "epsilon"
    assert tiny["scheduler"].config.num_train_timesteps == 1000
    ids = tiny["tokenizer"]("a chair", padding="max_length", max_length=tiny["tokenizer"].model_max_length).input_ids
    assert len(ids) == 77 and ids[0] == 0 and ids[-1] == 1  # bos ... eos/pad, all within the text encoder's vocab
    assert max(ids) < tiny["text_encoder"].config.vocab_size
    again = build_tiny_components(seed=0)
    assert torch.equal(again["unet"].conv_in.weight, tiny["unet"].conv_in.weight)


def test_tiny_unet_forward_and_backward(tiny: dict[str, Any]) -> None:
    unet, text_encoder, tokenizer = tiny["unet"], tiny["text_encoder"], tiny["tokenizer"]
    ids = tokenizer(["a chair", "a mug"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        text = text_encoder(ids)[0]
    sample = torch.randn(2, 9, 16, 16, requires_grad=True)
    out = unet(sample, torch.tensor([10, 900]), encoder_hidden_states=text).sample
    assert out.shape == (2, 4, 16, 16) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert sample.grad is not None and sample.grad[:, 4:].abs().sum() > 0  # mask and partial channels are used
    unet.zero_grad(set_to_none=True)


@pytest.mark.parametrize("levels", [3, 4])
def test_a_deeper_tiny_unet_keeps_its_interface_and_the_other_parts(levels: int) -> None:
    """More levels (64 channels each, half the size) make a larger UNet with the same input and output; the VAE
    and text encoder stay those of the default, so a VAE fitted for one loads into the other."""
    parts, default = build_tiny_components(0, levels), build_tiny_components(0)
    unet = parts["unet"]
    assert unet.config.block_out_channels == (32, 64, 64, 64)[:levels]
    size = sum(p.numel() for p in unet.parameters())
    assert size > sum(p.numel() for p in default["unet"].parameters())
    out = unet(torch.randn(2, 9, 16, 16), torch.tensor([10, 900]), encoder_hidden_states=torch.zeros(2, 77, 32))
    assert out.sample.shape == (2, 4, 16, 16)
    for name in ("vae", "text_encoder"):
        for a, b in zip(parts[name].state_dict().values(), default[name].state_dict().values(), strict=True):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unet_levels"):
        build_tiny_components(0, 5)


def test_pipeline_runs_and_round_trips(tiny: dict[str, Any], tmp_path: Path) -> None:
    pipe = _pipeline(tiny)
    assert pipe.vae_scale_factor == 4
    images = _run(pipe)
    assert images.shape == (1, SIZE, SIZE, 3) and np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= 1.0
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = StableDiffusionInpaintPipeline.from_pretrained(
        tmp_path / "pipe", local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(_run(loaded), images)
    # the train stage's loader reads the same folder layout
    parts = load_components(str(tmp_path / "pipe"))
    assert set(parts) == {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    assert torch.equal(parts["unet"].conv_in.weight, tiny["unet"].conv_in.weight)
    assert type(parts["scheduler"]).__name__ == "DDPMScheduler"


def test_channel_order_matches_pipeline(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = _pipeline(tiny)
    unet = pipe.unet
    captured: list[torch.Tensor] = []
    original = unet.forward

    def spy(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        captured.append(sample.detach().clone())
        return original(sample, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", spy)
    gen = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 4, 16, 16, generator=gen)
    partial_latents = torch.randn(1, 4, 16, 16, generator=gen) + 5.0
    image, mask = _inputs()  # mask edges on multiples of 4 px: nearest and max-pool agree
    pipe(
        "a chair",
        image=image,
        mask_image=mask,
        masked_image_latents=partial_latents,
        latents=latents,
        height=SIZE,
        width=SIZE,
        num_inference_steps=1,
        guidance_scale=1.0,  # no classifier-free guidance: one batch row
        output_type="latent",
    )
    assert len(captured) == 1
    expected = inpaint_unet_input(
        latents * pipe.scheduler.init_noise_sigma, mask_to_latent(mask, (16, 16)), partial_latents
    )
    assert captured[0].shape == (1, 9, 16, 16)
    torch.testing.assert_close(captured[0], expected)


def test_load_missing_path_is_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelUnavailableError) as err:
        load_components(str(missing))
    message = str(err.value)
    assert "\n" not in message and str(missing) in message and "--tiny" in message


def test_load_incomplete_directory_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelUnavailableError) as err:
        load_components(str(tmp_path))
    assert "\n" not in str(err.value) and "unet" in str(err.value)


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated:UserWarning")
def test_load_hub_id_offline_is_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    model = "invs-tests/no-such-inpainting-model"  # never in a cache; HF_HUB_OFFLINE=1 (conftest): no network
    with pytest.raises(ModelUnavailableError) as err:
        load_components(model)
    message = str(err.value)
    assert "\n" not in message and model in message and "--tiny" in message


def _blobs(n: int = 12, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Coloured squares on white, in [-1, 1]: object-on-white images like the training targets."""
    g = torch.Generator().manual_seed(seed)
    images = torch.ones(n, 3, size, size)
    for i in range(n):
        x, y = torch.randint(0, size // 2, (2,), generator=g).tolist()
        images[i, :, y : y + size // 3, x : x + size // 3] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return images


def test_fitted_tiny_vae_measures_its_own_latent_scale(tmp_path: Path) -> None:
    """After fitting, scaling_factor = 1 / std of the raw latents, so the scaled latents have unit std (SD's constant
    0.18215 would leave them far from it), and the value travels in the saved config."""
    from diffusers import AutoencoderKL

    from invs.models import fit_tiny_vae, latent_std, vae_round_trip

    vae = build_tiny_components(seed=0)["vae"]
    images = _blobs()
    assert vae.config.scaling_factor == pytest.approx(0.18215)
    fit_tiny_vae(vae, images, steps=20, batch=4)
    raw = latent_std(vae, images)
    assert vae.config.scaling_factor == pytest.approx(1 / raw)
    with torch.no_grad():
        scaled = vae.encode(images).latent_dist.sample(torch.Generator().manual_seed(3)) * vae.config.scaling_factor
    assert 0.9 < float(scaled.std()) < 1.1
    assert not 0.5 < raw * 0.18215 < 2  # the old constant would be far off for this VAE
    vae.save_pretrained(tmp_path / "vae")
    assert AutoencoderKL.from_pretrained(tmp_path / "vae").config.scaling_factor == pytest.approx(1 / raw)
    round_trip = vae_round_trip(vae, images)
    assert round_trip.shape == images.shape and round_trip.min() >= -1 and round_trip.max() <= 1


def test_latent_scale_warning_outside_its_range() -> None:
    from train.loss import latent_scale_warning

    assert latent_scale_warning(1.0, 0.5) is None and latent_scale_warning(0.5, 1.0) is None
    low = latent_scale_warning(0.2, 0.18215)
    assert low is not None and "std 0.200" in low and "0.91075" in low  # the factor that would give std 1
    assert latent_scale_warning(2.5, 1.0) is not None
