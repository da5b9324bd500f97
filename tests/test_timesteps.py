"""Training-timestep distributions: range, dtype, determinism, and their bias toward the noisy end."""

from __future__ import annotations

import math

import pytest
import torch

from train.timesteps import TIMESTEP_DISTRIBUTIONS, sample_timesteps

T = 1000
N = 100_000


def _noisy_fraction(t: torch.Tensor) -> float:
    return (t >= int(0.9 * T)).double().mean().item()


@pytest.mark.parametrize("name", sorted(TIMESTEP_DISTRIBUTIONS))
def test_range_dtype_and_determinism(name: str) -> None:
    t = sample_timesteps(name, N, T, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.shape == (N,)
    assert t.min() >= 0 and t.max() <= T - 1
    again = sample_timesteps(name, N, T, generator=torch.Generator().manual_seed(0))
    other = sample_timesteps(name, N, T, generator=torch.Generator().manual_seed(1))
    assert torch.equal(t, again) and not torch.equal(t, other)
    assert sample_timesteps(name, 0, T).shape == (0,)
    small = sample_timesteps(name, 1000, 4, generator=torch.Generator().manual_seed(0))
    assert set(small.tolist()) <= {0, 1, 2, 3}


def test_noisy_end_fractions_match_the_documented_values() -> None:
    gen = torch.Generator().manual_seed(123)
    uniform = _noisy_fraction(sample_timesteps("uniform", N, T, generator=gen))
    cubic = _noisy_fraction(sample_timesteps("cubic", N, T, generator=gen))
    logit = _noisy_fraction(sample_timesteps("logit_normal", N, T, generator=gen))
    assert uniform == pytest.approx(0.10, abs=0.005)
    assert cubic == pytest.approx(0.1 ** (1 / 3), abs=0.01)  # ≈ 0.464
    normal_tail = 0.5 * math.erfc((math.log(9) - 1.5) / math.sqrt(2))  # P(n >= logit(0.9) - mean), ≈ 0.243
    assert logit == pytest.approx(normal_tail, abs=0.01)
    assert cubic > uniform and logit > uniform
    # the bias is toward the noisy end, not just away from the middle
    assert (
        _noisy_fraction(sample_timesteps("cubic", N, T, generator=gen))
        > 4 * (sample_timesteps("cubic", N, T, generator=gen) < 100).double().mean().item()
    )


def test_logit_normal_parameters() -> None:
    gen = torch.Generator().manual_seed(7)
    high = sample_timesteps("logit_normal", N, T, generator=gen, mean=3.0, std=0.5).double().mean()
    centred = sample_timesteps("logit_normal", N, T, generator=gen, mean=0.0, std=1.0).double().mean()
    low = sample_timesteps("logit_normal", N, T, generator=gen, mean=-3.0, std=0.5).double().mean()
    assert high > 900 and abs(centred - (T - 1) / 2) < 10 and low < 100
    with pytest.raises(ValueError, match="std > 0"):
        sample_timesteps("logit_normal", 4, T, std=0.0)


def test_unknown_name_or_parameter_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="valid: uniform, cubic, logit_normal"):
        sample_timesteps("sigmoid", 4, T)
    with pytest.raises(ValueError, match="bad parameters"):
        sample_timesteps("cubic", 4, T, mean=1.0)
    with pytest.raises(ValueError):
        sample_timesteps("uniform", 4, 0)
