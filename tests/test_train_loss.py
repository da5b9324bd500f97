"""The training objective on the tiny offline model: finite, and it goes down when overfitting a few pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.conditioning import Conditioner, build_tiny_image_encoder
from invs.latents import posterior_moments
from invs.models import build_tiny_components
from invs.pair_builder import pair_to_tensors
from invs.shards import PairSample
from train.loss import Denoiser, Frozen, LossConfig, training_loss


def setup(kind: str = "empty_prompt", prediction_type: str = "epsilon"):
    from diffusers import DDPMScheduler

    from inference.conditioning import ImageProjection
    from invs.models import SD_SCHEDULER_CONFIG

    components = build_tiny_components(seed=0)
    components["image_encoder"] = build_tiny_image_encoder(0)
    scheduler = DDPMScheduler(**{**SD_SCHEDULER_CONFIG, "prediction_type": prediction_type})
    conditioner = Conditioner(kind, components)
    projection = ImageProjection(conditioner.feature_dim, 32) if kind == "clip_image" else None
    denoiser = Denoiser(components["unet"], projection)
    return denoiser, Frozen(components["vae"], scheduler, conditioner), components


def two_pair_batch() -> dict[str, torch.Tensor]:
    items = [pair_to_tensors(pair(s), 32) for s in (0, 1)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def pair(seed: int, size: int = 32) -> PairSample:
    rng = np.random.default_rng(seed)
    target = np.full((size, size, 3), 255, np.uint8)
    target[8:24, 8:24] = rng.integers(0, 256, 3, dtype=np.uint8)  # a coloured square
    partial = target.copy()
    partial[8:24, 16:24] = 255
    mask = np.zeros((size, size), np.uint8)
    mask[8:24, 16:24] = 255
    mask[8:24, 8:16] = 60  # soft: mostly keep
    return PairSample(
        key=f"k{seed}",
        source=target,
        target=target,
        partial=partial,
        mask=mask,
        visible=mask,
        epipolar=mask,
        depth=np.zeros((size, size), np.float32),
        meta={},
    )


@pytest.mark.parametrize("kind", ["empty_prompt", "clip_image"])
def test_loss_is_finite_and_drops_when_overfitting_two_pairs(kind: str) -> None:
    torch.manual_seed(0)
    denoiser, frozen, _ = setup(kind)
    denoiser.train()
    batch = two_pair_batch()
    optimizer = torch.optim.AdamW([p for p in denoiser.parameters() if p.requires_grad], lr=2e-3)
    config = LossConfig(timesteps="cubic", cfg_dropout=0.1, prediction_type="epsilon")
    losses = []
    for step in range(40):
        loss = training_loss(denoiser, frozen, batch, config, generator=torch.Generator().manual_seed(step % 4))
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8]), losses


def test_v_prediction_uses_the_velocity_target() -> None:
    batch = two_pair_batch()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    denoiser, frozen, _ = setup(prediction_type="v_prediction")
    v_loss = training_loss(denoiser, frozen, batch, LossConfig(prediction_type="v_prediction"), generator=g())
    denoiser, frozen, _ = setup()
    eps_loss = training_loss(denoiser, frozen, batch, LossConfig(), generator=g())
    assert torch.isfinite(v_loss) and not torch.isclose(v_loss, eps_loss)


def test_precomputed_moments_give_the_same_loss_as_encoding() -> None:
    """Stored posterior moments replace the VAE encoder exactly (same draws from the same generator)."""
    denoiser, frozen, components = setup()
    batch = two_pair_batch()
    to_uint8 = lambda x: ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()  # noqa: E731
    target = posterior_moments(components["vae"], to_uint8(batch["target"]))
    partial = posterior_moments(components["vae"], to_uint8(batch["partial"]))
    with_moments = batch | {"moments": torch.from_numpy(np.stack([target, partial], 1)).float()}
    a = training_loss(denoiser, frozen, batch, LossConfig(), generator=torch.Generator().manual_seed(1))
    b = training_loss(denoiser, frozen, with_moments, LossConfig(), generator=torch.Generator().manual_seed(1))
    assert torch.isclose(a, b, rtol=2e-2), (a, b)  # float16 storage of the moments


def test_clip_image_dropout_zeroes_exactly_the_dropped_rows() -> None:
    _, frozen, _ = setup("clip_image")
    batch = two_pair_batch()
    features = frozen.conditioner.features(batch, torch.tensor([False, True]))
    assert features.shape == (2, 1, 32)
    assert features[0].abs().sum() > 0 and features[1].abs().sum() == 0
    assert torch.equal(frozen.conditioner.unconditional(2, "cpu"), torch.zeros(2, 1, 32))
