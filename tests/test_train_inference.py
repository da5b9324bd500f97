"""Inference matches training: the UNet sees the soft max-pooled mask and the partial view's VAE latents; the
exported model reloads (plain diffusers, and with its conditioning) and predicts the same views."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference.conditioning import ImageProjection, build_tiny_image_encoder
from inference.pipeline import NovelViewPipeline, export_model, mask_to_latent
from invs.models import build_tiny_components
from invs.standins import standin_spec

REPO = Path(__file__).resolve().parent.parent


def batch(seed: int = 0, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = {k: torch.rand(2, 3, size, size, generator=g) * 2 - 1 for k in ("source", "target", "partial")}
    ramp = torch.linspace(0, 0.9, size).expand(2, 1, size, size).clone()  # soft: 0 left, 0.9 right
    return images | {"mask": ramp}


def model(kind: str) -> tuple[NovelViewPipeline, dict]:
    parts = build_tiny_components(seed=0)
    parts["image_encoder"] = build_tiny_image_encoder(0)
    projection = ImageProjection(32, 32) if kind == "clip_image" else None
    return NovelViewPipeline.from_parts(parts, parts["unet"], standin_spec(32, kind), projection), parts


def test_unet_input_is_the_training_input() -> None:
    m, parts = model("empty_prompt")
    b = batch()
    seen = []
    hook = m.unet.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    try:
        m.predict(b, steps=2)
    finally:
        hook.remove()
    x = seen[0]  # (2, 9, 8, 8): noisy latents, mask, partial latents
    expected_mask = mask_to_latent(b["mask"], (8, 8))
    assert expected_mask.min() < 0.5 < expected_mask.max(), "the check needs soft values on both sides of 0.5"
    torch.testing.assert_close(x[:, 4:5], expected_mask)
    vae = parts["vae"]
    with torch.no_grad():
        latents = vae.encode(b["partial"]).latent_dist.mode() * vae.config.scaling_factor
    torch.testing.assert_close(x[:, 5:], latents, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["empty_prompt", "clip_image"])
def test_export_reloads_and_predicts_the_same_views(tmp_path: Path, kind: str) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    m, parts = model(kind)
    b = batch(1)
    views = m.predict(b, steps=3, guidance_scale=2.0, seed=4)
    assert views.shape == (2, 3, 32, 32) and views.min() >= 0 and views.max() <= 1
    export_model(parts, parts["unet"], m.image_projection, standin_spec(32, kind), str(tmp_path / "model"))
    pipe = StableDiffusionInpaintPipeline.from_pretrained(
        tmp_path / "model", local_files_only=True, safety_checker=None, feature_extractor=None
    )
    assert (pipe.image_encoder is not None) == (kind == "clip_image")
    again = NovelViewPipeline.load(str(tmp_path / "model")).predict(b, steps=3, guidance_scale=2.0, seed=4)
    torch.testing.assert_close(again, views, rtol=0, atol=1e-5)
    assert not torch.equal(views, m.predict(b, steps=3, guidance_scale=2.0, seed=5)), "the seed matters"
    # a fresh process (as inference/evaluate.py and infer.py run) loads it without importing anything first
    load = f"from inference.pipeline import NovelViewPipeline; NovelViewPipeline.load({str(tmp_path / 'model')!r})"
    fresh = subprocess.run([sys.executable, "-c", load], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]


def test_not_an_export_is_one_clear_error(tmp_path: Path) -> None:
    from invs.models import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match="not an exported iNVS model"):
        NovelViewPipeline.load(str(tmp_path))


def test_keep_known_blends_the_partial_view_back_by_the_soft_mask() -> None:
    from inference.pipeline import keep_known

    generated, partial = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, :4] = 1.0
    mask[:, :, 4:6] = 0.25
    out = keep_known(generated, partial, mask)
    assert torch.equal(out[:, :, :4], generated[:, :, :4])  # generate
    assert torch.allclose(out[:, :, 4:6], torch.full((2, 3, 2, 8), 0.75))  # soft: mostly kept
    assert torch.equal(out[:, :, 6:], partial[:, :, 6:])  # keep: the partial view exactly
    with pytest.raises(ValueError, match="mask"):
        keep_known(generated, partial, mask[:, :, :4])


def test_predictions_keep_known_pixels_unless_asked_to_generate(tmp_path: Path) -> None:
    from inference.pipeline import keep_known

    m, parts = model("empty_prompt")
    b = batch(2)
    kept = m.predict(b, steps=2, seed=1)
    generated = m.predict(b, steps=2, seed=1, known_pixels="generate")
    partial = (b["partial"] + 1) / 2
    torch.testing.assert_close(kept[..., :1], partial[..., :1])  # the mask is 0 in the first column
    assert not torch.allclose(generated[..., :1], partial[..., :1])
    torch.testing.assert_close(kept, keep_known(generated, partial, b["mask"]))
    export_model(parts, parts["unet"], None, standin_spec(32, known_pixels="generate"), str(tmp_path / "m"))
    assert NovelViewPipeline.load(str(tmp_path / "m")).known_pixels == "generate"
    with pytest.raises(ValueError, match="known_pixels"):
        m.predict(b, steps=1, known_pixels="blend")


def test_per_pair_seeds_make_a_view_independent_of_its_batch() -> None:
    m, _ = model("empty_prompt")
    b = batch(3)
    together = m.predict(b, steps=2, seeds=[7, 8])
    alone = m.predict({k: v[1:] for k, v in b.items()}, steps=2, seeds=[8])
    torch.testing.assert_close(together[1:], alone, rtol=0, atol=1e-5)
    assert not torch.allclose(together[1:], m.predict({k: v[1:] for k, v in b.items()}, steps=2, seeds=[7]))
    with pytest.raises(ValueError, match="seeds"):
        m.predict(b, steps=1, seeds=[1])


def test_scores_every_view_on_the_same_pixels_and_the_vae_ceiling_on_request() -> None:
    m, _ = model("empty_prompt")
    b = batch(2)
    views, scores = m.score(b, steps=2, seed=3)
    assert set(views) == {"generated", "composite", "partial", "source", "vae", "vae_composite"}
    assert float(scores["psnr_source"].min()) > 0 and scores["psnr_vae"].shape == (2,)
    target = (b["target"] + 1) / 2
    torch.testing.assert_close(views["partial"], (b["partial"] + 1) / 2)
    assert not torch.allclose(views["vae"], target), "a tiny random VAE does not reproduce its input"
    keep = (b["mask"] == 0).expand_as(target)  # the composited ceiling: the partial view's pixels where it keeps them
    assert keep.any() and torch.equal(views["vae_composite"][keep], views["partial"][keep])
    assert not torch.equal(views["vae_composite"], views["partial"])
    quick, quick_scores = m.score(b, steps=2, seed=3, vae_ceiling=False)  # what validation asks for
    assert "vae" not in quick and not any("_vae" in k for k in quick_scores)
    torch.testing.assert_close(quick_scores["psnr_generated"], scores["psnr_generated"])


def test_an_export_of_the_earlier_format_says_how_to_convert_it_and_converts(tmp_path: Path) -> None:
    """A StableDiffusionInpaintPipeline folder with invs.json (the earlier export) is refused in one line naming
    inference/upgrade.py; the upgrade writes a pipeline that carries the preset's geometry and predicts as before."""
    from diffusers import StableDiffusionInpaintPipeline

    from inference.pipeline import inference_scheduler
    from inference.upgrade import main as upgrade_main
    from invs.models import ModelUnavailableError

    parts = build_tiny_components(seed=0)
    old = StableDiffusionInpaintPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=parts["unet"],
        scheduler=inference_scheduler(parts["scheduler"]),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    old.save_pretrained(tmp_path / "old", safe_serialization=True)
    info = {"conditioning": "empty_prompt", "resolution": 32, "known_pixels": "generate", "steps": 7}
    (tmp_path / "old" / "invs.json").write_text(json.dumps(info))
    with pytest.raises(ModelUnavailableError, match="earlier format.*inference/upgrade.py"):
        NovelViewPipeline.load(str(tmp_path / "old"))
    args = ["--model", str(tmp_path / "old"), "--out", str(tmp_path / "new"), "--config", "zero123"]
    assert upgrade_main([*args, "--set", "camera.lens_mm=50"]) == 0
    new = NovelViewPipeline.load(str(tmp_path / "new"))
    assert new.spec.camera.lens_mm == 50 and new.spec.camera.radius_range == (1.5, 2.2)
    assert new.known_pixels == "generate" and new.config.training["steps"] == 7
    m, _ = model("empty_prompt")
    b = batch(5)
    torch.testing.assert_close(new.predict(b, steps=2, seed=1), m.predict(b, steps=2, seed=1, known_pixels="generate"))
