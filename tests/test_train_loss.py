"""The training objective on the tiny offline model: finite, and it goes down when overfitting a few pairs."""

from __future__ import annotations

import numpy as np
import torch

from invs.shards import PairSample
from train.batches import pair_to_tensors
from train.components import build_tiny_components
from train.loss import LossConfig, training_loss


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


def test_loss_is_finite_and_drops_when_overfitting_two_pairs() -> None:
    torch.manual_seed(0)
    components = build_tiny_components(seed=0)
    unet = components["unet"]
    unet.train()
    items = [pair_to_tensors(pair(s), 32) for s in (0, 1)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    optimizer = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    config = LossConfig(timesteps="cubic")
    losses = []
    for step in range(40):
        loss = training_loss(components, batch, config, generator=torch.Generator().manual_seed(step % 4))
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8]), losses


def test_v_prediction_uses_the_velocity_target() -> None:
    from diffusers import DDPMScheduler

    from train.components import SD_SCHEDULER_CONFIG

    components = build_tiny_components(seed=0)
    components["scheduler"] = DDPMScheduler(**{**SD_SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    item = pair_to_tensors(pair(0), 32)
    batch = {k: v[None] for k, v in item.items()}
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    v_loss = training_loss(components, batch, LossConfig(), generator=g())
    components["scheduler"] = DDPMScheduler(**SD_SCHEDULER_CONFIG)
    eps_loss = training_loss(components, batch, LossConfig(), generator=g())
    assert torch.isfinite(v_loss) and not torch.isclose(v_loss, eps_loss)
