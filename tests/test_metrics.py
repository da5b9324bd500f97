"""Metrics against known values; LPIPS wiring with a random backbone and the real loading path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from invs import lpips as L
from invs import metrics


def test_psnr_and_ssim_known_values() -> None:
    a = torch.full((2, 3, 16, 16), 0.5)
    assert metrics.psnr(a, a + 0.1).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)  # MSE 0.01
    assert math.isinf(float(metrics.psnr(a, a)[0]))
    # Two constant images: SSIM = (2 m_a m_b + C1) / (m_a^2 + m_b^2 + C1) (no variance, no covariance).
    expected = (2 * 0.2 * 0.4 + 1e-4) / (0.2**2 + 0.4**2 + 1e-4)
    assert metrics.ssim(torch.full((1, 3, 32, 32), 0.2), torch.full((1, 3, 32, 32), 0.4)).item() == pytest.approx(
        expected, abs=1e-4
    )
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert metrics.ssim(noise, noise).item() == pytest.approx(1.0, abs=1e-6)
    assert metrics.ssim(noise[..., :8, :8], noise[..., :8, :8]).item() == pytest.approx(1.0, abs=1e-6)  # small
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(a, a[:1])


def test_masked_psnr_pools_only_the_masked_pixels() -> None:
    a = torch.zeros(1, 3, 8, 8)
    b = a.clone()
    b[..., :4] = 0.1  # left half off by 0.1
    b[..., 4:] = 0.5
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[..., :4] = True
    assert metrics.masked_psnr(a, b, mask) == pytest.approx(20.0, abs=1e-4)
    assert math.isnan(metrics.masked_psnr(a, b, torch.zeros_like(mask)))


@pytest.fixture(scope="module")
def random_lpips() -> L.Lpips:
    torch.manual_seed(0)
    model = L.Lpips(L.alexnet_features())
    heads = torch.load(L.heads_file(), map_location="cpu", weights_only=True)  # the real v0.1 heads
    model.load_state_dict(heads, strict=False)
    return model


def test_lpips_wiring_with_a_random_backbone(random_lpips: L.Lpips) -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 64, 64, generator=g)
    near = (image + 0.02 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    far = torch.rand(2, 3, 64, 64, generator=g)
    assert random_lpips(image, image).tolist() == [0.0, 0.0]
    d_near, d_far = random_lpips(image, near), random_lpips(image, far)
    assert bool((d_near > 0).all()) and bool((d_near < d_far).all())
    assert torch.allclose(random_lpips(far, image), d_far, atol=1e-6)  # symmetric
    scores = metrics.compare({"x": near}, image, lpips=random_lpips)
    assert set(scores) == {"psnr_x", "ssim_x", "lpips_x"} and torch.allclose(scores["lpips_x"], d_near)
    with pytest.raises(ValueError, match="H >= 32"):
        random_lpips(image[..., :16, :16], image[..., :16, :16])


def test_lpips_loads_torchvisions_checkpoint_layout_or_says_which_file_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_lpips: L.Lpips
) -> None:
    missing = tmp_path / "nowhere" / L.ALEXNET_FILE
    monkeypatch.setenv("INVS_LPIPS_ALEXNET", str(missing))
    with pytest.raises(L.LpipsUnavailable, match=f"ImageNet AlexNet weights .* not found at {missing}"):
        L.load_lpips()
    # A file in torchvision's layout (features.N.weight, plus the classifier) loads into the same network.
    checkpoint = tmp_path / L.ALEXNET_FILE
    state = {f"features.{k}": v for k, v in random_lpips.features.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(4, 4)
    torch.save(state, checkpoint)
    monkeypatch.setenv("INVS_LPIPS_ALEXNET", str(checkpoint))
    loaded = L.load_lpips()
    image = torch.rand(1, 3, 64, 64)
    assert torch.allclose(loaded(image, image.flip(-1)), random_lpips(image, image.flip(-1)))
