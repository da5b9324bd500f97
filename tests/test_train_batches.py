"""Pair samples to tensors, soft-mask downsampling to latent resolution, and the 9-channel UNet input layout.

That the layout is the pipeline's own is checked against diffusers in test_train_components.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from inference.pipeline import inpaint_unet_input, mask_to_latent
from invs.errors import ShardFormatError
from invs.pair_builder import pair_to_tensors
from invs.shards import PairSample

R = 32


def _sample(size: int = R) -> PairSample:
    rng = np.random.default_rng(0)
    image = lambda: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)  # noqa: E731
    mask = np.zeros((size, size), np.uint8)
    mask[4:12, 4:12] = 255
    mask[20, 20] = 128  # soft edge value
    return PairSample(
        key="obj_000_001",
        source=image(),
        target=image(),
        partial=image(),
        mask=mask,
        visible=np.zeros((size, size), np.uint8),
        epipolar=np.zeros((size, size), np.uint8),
        depth=np.zeros((size, size), np.float32),
        meta={},
    )


def test_pair_to_tensors_ranges_layout_and_soft_mask() -> None:
    sample = _sample()
    sample.target[0, 0] = (0, 128, 255)
    out = pair_to_tensors(sample, R)
    assert set(out) == {"source", "target", "partial", "mask"}
    for name in ("source", "target", "partial"):
        assert out[name].shape == (3, R, R) and out[name].dtype == torch.float32
        assert out[name].min() >= -1.0 and out[name].max() <= 1.0
        np.testing.assert_allclose(out[name].permute(1, 2, 0).numpy(), getattr(sample, name) / 127.5 - 1.0, atol=1e-6)
    assert out["target"][:, 0, 0].tolist() == pytest.approx([-1.0, 128 / 127.5 - 1.0, 1.0], abs=1e-6)
    assert out["mask"].shape == (1, R, R) and out["mask"].dtype == torch.float32
    assert out["mask"][0, 5, 5] == 1.0 and out["mask"][0, 0, 0] == 0.0
    assert out["mask"][0, 20, 20].item() == pytest.approx(128 / 255)  # kept soft, not binarised


@pytest.mark.parametrize(
    "change, match",
    [
        ({"target": np.zeros((R, R + 1, 3), np.uint8)}, "target"),
        ({"partial": np.zeros((R, R), np.uint8)}, "partial"),
        ({"source": np.zeros((R, R, 3), np.float32)}, "source"),
        ({"mask": np.zeros((R, R, 3), np.uint8)}, "mask"),
        ({"mask": None}, "no mask"),
    ],
)
def test_pair_to_tensors_rejects_malformed_samples(change: dict, match: str) -> None:
    sample = dataclasses.replace(_sample(), **change)
    with pytest.raises(ShardFormatError, match=match) as err:
        pair_to_tensors(sample, R)
    assert "obj_000_001" in str(err.value) and "\n" not in str(err.value)


def test_pair_to_tensors_rejects_another_resolution() -> None:
    with pytest.raises(ShardFormatError, match=r"expected uint8 \(64, 64, 3\)"):
        pair_to_tensors(_sample(R), 64)


def test_mask_to_latent_max_marks_any_generate_pixel() -> None:
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, 0, 5, 9] = 1.0  # one pixel in latent cell (1, 2) at factor 4
    mask[1, 0, 12:16, 0:4] = 0.3  # a uniformly soft cell
    mask[1, 0, 0, 0] = 0.6
    latent = mask_to_latent(mask, (4, 4))
    assert latent.shape == (2, 1, 4, 4)
    expected0 = torch.zeros(4, 4)
    expected0[1, 2] = 1.0
    torch.testing.assert_close(latent[0, 0], expected0)
    assert latent[1, 0, 3, 0].item() == pytest.approx(0.3) and latent[1, 0, 0, 0].item() == pytest.approx(0.6)
    # a thin line of generate pixels that nearest downsampling (the pipeline's) drops entirely
    line = torch.zeros(1, 1, 16, 16)
    line[..., :, 3] = 1.0
    assert torch.nn.functional.interpolate(line, size=(4, 4)).sum() == 0
    assert mask_to_latent(line, (4, 4))[0, 0, :, 0].tolist() == [1.0] * 4


def test_mask_to_latent_area_averages() -> None:
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 0, 0] = 1.0
    mask[..., 4:8, 4:8] = 0.5
    area = mask_to_latent(mask, (2, 2), mode="area")
    torch.testing.assert_close(area[0, 0], torch.tensor([[1 / 16, 0.0], [0.0, 0.5]]))
    with pytest.raises(ValueError, match="multiple"):
        mask_to_latent(torch.zeros(1, 1, 10, 10), (4, 4))
    with pytest.raises(ValueError, match="valid: max, area"):
        mask_to_latent(mask, (2, 2), mode="nearest")  # type: ignore[arg-type]


def test_inpaint_unet_input_layout() -> None:
    noisy = torch.full((2, 4, 8, 8), 1.0)
    mask = torch.full((2, 1, 8, 8), 2.0, dtype=torch.float64)
    partial = torch.full((2, 4, 8, 8), 3.0)
    x = inpaint_unet_input(noisy, mask, partial)
    assert x.shape == (2, 9, 8, 8) and x.dtype == torch.float32
    assert x[:, :, 0, 0].tolist() == [[1.0] * 4 + [2.0] + [3.0] * 4] * 2
    with pytest.raises(ValueError, match="channel"):
        inpaint_unet_input(noisy, partial, partial)
    with pytest.raises(ValueError, match="sizes differ"):
        inpaint_unet_input(noisy, mask[:, :, :4], partial)
