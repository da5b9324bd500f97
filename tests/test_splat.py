"""Softmax splatting (invs/splat.py) against a brute-force per-point reference, plus its defining properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from invs.splat import softmax_splat

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
    ),
]
# Inputs are cast to float32 inside, so the reference sees exactly the same numbers; float16 only gets a looser bound.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-5, torch.float16: 1e-3}


def same_computation(device: str) -> dict[str, float]:
    """Tolerance for two runs that add the same numbers: bit-exact on CPU; CUDA atomics may reorder the sums."""
    return {"rtol": 0.0, "atol": 0.0} if device == "cpu" else {"rtol": 1e-5, "atol": 1e-6}


def splat_reference(
    values: torch.Tensor,
    uv: torch.Tensor,
    importance: torch.Tensor,
    valid: torch.Tensor,
    height: int,
    width: int,
    eps: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The definition, one point and one neighbour at a time, in float64: ``(out, density, denominator)``."""
    vals = values.detach().cpu().double().numpy()
    coords = uv.detach().cpu().double().numpy()
    z = importance.detach().cpu().double().numpy()
    mask = valid.detach().cpu().numpy()
    b_size, c_size, n_size = vals.shape
    num = np.zeros((b_size, c_size, height, width))
    den = np.zeros((b_size, 1, height, width))
    density = np.zeros((b_size, 1, height, width))
    for b in range(b_size):
        points = [
            n
            for n in range(n_size)
            if mask[b, n]
            and math.isfinite(coords[b, n, 0])
            and math.isfinite(coords[b, n, 1])
            and math.isfinite(z[b, n])
        ]
        if not points:
            continue
        zmax = max(z[b, n] for n in points)
        for n in points:
            x = coords[b, n, 0] - 0.5
            y = coords[b, n, 1] - 0.5
            x0, y0 = math.floor(x), math.floor(y)
            fx, fy = x - x0, y - y0
            soft = math.exp(z[b, n] - zmax)
            for dx, dy, weight in (
                (0, 0, (1 - fx) * (1 - fy)),
                (1, 0, fx * (1 - fy)),
                (0, 1, (1 - fx) * fy),
                (1, 1, fx * fy),
            ):
                i, j = x0 + dx, y0 + dy
                if 0 <= i < width and 0 <= j < height:
                    num[b, :, j, i] += weight * soft * vals[b, :, n]
                    den[b, 0, j, i] += weight * soft
                    density[b, 0, j, i] += weight
    covered = den > eps
    out = np.where(covered, num / np.where(covered, den, 1.0), 0.0)
    return out, density, den


def assert_matches_reference(
    values: torch.Tensor,
    uv: torch.Tensor,
    importance: torch.Tensor,
    valid: torch.Tensor,
    height: int,
    width: int,
    atol: float,
) -> None:
    out, density = softmax_splat(values, uv, importance, valid, height, width)
    assert out.shape == (values.shape[0], values.shape[1], height, width)
    assert density.shape == (values.shape[0], 1, height, width)
    assert out.dtype == density.dtype == torch.float32
    assert out.device == density.device == values.device
    ref_out, ref_density, ref_den = splat_reference(values, uv, importance, valid, height, width)
    # A denominator within a factor 2 of eps may fall either side of the cut-off in float32: leave those pixels out.
    decided = ~((ref_den > 0.5e-8) & (ref_den < 2e-8))
    got = out.cpu().double().numpy()
    np.testing.assert_allclose(np.where(decided, got, 0), np.where(decided, ref_out, 0), rtol=1e-4, atol=atol)
    np.testing.assert_allclose(density.cpu().double().numpy(), ref_density, rtol=1e-5, atol=atol)


def random_inputs(
    gen: torch.Generator, b: int, c: int, n: int, h: int, w: int, dtype: torch.dtype, device: str
) -> tuple[torch.Tensor, ...]:
    """Points over the image and a 2-pixel margin around it, some at exact centres, some invalid or non-finite."""
    values = torch.randn(b, c, n, generator=gen, dtype=torch.float64)
    u = torch.rand(b, n, generator=gen, dtype=torch.float64) * (w + 4) - 2
    v = torch.rand(b, n, generator=gen, dtype=torch.float64) * (h + 4) - 2
    centre = torch.rand(b, n, generator=gen) < 0.2  # exactly on a pixel centre (including the border pixels)
    u = torch.where(centre, torch.randint(0, w, (b, n), generator=gen) + 0.5, u)
    v = torch.where(centre, torch.randint(0, h, (b, n), generator=gen) + 0.5, v)
    uv = torch.stack((u, v), dim=-1)
    importance = torch.randn(b, n, generator=gen, dtype=torch.float64) * 2
    tied = torch.rand(b, n, generator=gen) < 0.3  # equal importances
    importance = torch.where(tied, torch.ones_like(importance), importance)
    valid = torch.rand(b, n, generator=gen) > 0.15
    # Non-finite coordinates/importances on some points: they must count as invalid.
    uv[0, :3, 0] = torch.tensor([math.nan, math.inf, -math.inf], dtype=torch.float64)
    importance[0, 3] = math.nan
    importance[-1, 4] = math.inf
    return tuple(t.to(device) for t in (values.to(dtype), uv.to(dtype), importance.to(dtype), valid))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize(("b", "c", "n", "h", "w"), [(2, 3, 200, 8, 8), (3, 1, 400, 12, 17), (2, 4, 150, 5, 31)])
def test_matches_reference(b: int, c: int, n: int, h: int, w: int, dtype: torch.dtype, device: str) -> None:
    gen = torch.Generator().manual_seed(1000 * b + 100 * c + h + w)
    values, uv, importance, valid = random_inputs(gen, b, c, n, h, w, dtype, device)
    assert_matches_reference(values, uv, importance, valid, h, w, atol=TOLERANCE[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_batch_elements_are_independent(device: str) -> None:
    gen = torch.Generator().manual_seed(7)
    values, uv, importance, valid = random_inputs(gen, 3, 2, 300, 10, 9, torch.float32, device)
    importance[1] += 30.0  # a different Zmax in one element must not leak into the others
    out, density = softmax_splat(values, uv, importance, valid, 10, 9)
    for b in range(3):
        one_out, one_density = softmax_splat(
            values[b : b + 1], uv[b : b + 1], importance[b : b + 1], valid[b : b + 1], 10, 9
        )
        torch.testing.assert_close(out[b : b + 1], one_out, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(density[b : b + 1], one_density, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("col", "row"), [(0, 0), (3, 2), (6, 4), (2, 4)])
def test_point_at_pixel_centre_lands_on_that_pixel_only(col: int, row: int, device: str) -> None:
    h, w = 5, 7
    values = torch.tensor([[[0.25], [-3.0]]], device=device)
    uv = torch.tensor([[[col + 0.5, row + 0.5]]], device=device)
    out, density = softmax_splat(
        values, uv, torch.zeros(1, 1, device=device), torch.ones(1, 1, dtype=torch.bool, device=device), h, w
    )
    expected_density = torch.zeros(1, 1, h, w, device=device)
    expected_density[0, 0, row, col] = 1.0
    expected_out = torch.zeros(1, 2, h, w, device=device)
    expected_out[0, :, row, col] = torch.tensor([0.25, -3.0])
    torch.testing.assert_close(density, expected_density, rtol=0, atol=0)
    torch.testing.assert_close(out, expected_out, rtol=0, atol=0)


def test_bilinear_weights_and_dropped_neighbours() -> None:
    # Between four pixel centres: x = 1.75 gives columns 1, 2 weights 0.25, 0.75; y = 1.25 gives rows 1, 2 weights
    # 0.75, 0.25.
    uv = torch.tensor([[[2.25, 1.75]]])
    ones = torch.ones(1, 1, dtype=torch.bool)
    out, density = softmax_splat(torch.full((1, 1, 1), 2.0), uv, torch.zeros(1, 1), ones, 4, 4)
    expected = torch.zeros(4, 4)
    expected[1, 1], expected[1, 2], expected[2, 1], expected[2, 2] = 0.1875, 0.5625, 0.0625, 0.1875
    torch.testing.assert_close(density[0, 0], expected)
    torch.testing.assert_close(out[0, 0], 2.0 * (expected > 0))
    # Near the left edge: the neighbour at column -1 is dropped and its weight lost, not renormalised.
    out, density = softmax_splat(
        torch.full((1, 1, 1), 2.0), torch.tensor([[[0.25, 0.5]]]), torch.zeros(1, 1), ones, 4, 4
    )
    expected = torch.zeros(4, 4)
    expected[0, 0] = 0.75
    torch.testing.assert_close(density[0, 0], expected)
    assert out[0, 0, 0, 0].item() == pytest.approx(2.0)
    # Entirely outside (more than half a pixel beyond the border): nothing lands.
    for far in ([-0.6, 2.0], [4.6, 2.0], [2.0, -0.51], [2.0, 4.51], [1e30, -1e30]):
        out, density = softmax_splat(torch.ones(1, 1, 1), torch.tensor([[far]]), torch.zeros(1, 1), ones, 4, 4)
        assert density.abs().sum() == 0 and out.abs().sum() == 0, far


@pytest.mark.parametrize("device", DEVICES)
def test_higher_importance_dominates_as_the_gap_grows(device: str) -> None:
    near, far = 1.0, -1.0
    values = torch.tensor([[[near, far]]], device=device)
    uv = torch.tensor([[[2.5, 1.5], [2.5, 1.5]]], device=device)  # both exactly on pixel (2, 1)
    ones = torch.ones(1, 2, dtype=torch.bool, device=device)
    errors = []
    for gap in [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 40.0]:
        importance = torch.tensor([[gap, 0.0]], device=device)
        out, _ = softmax_splat(values, uv, importance, ones, 3, 4)
        got = out[0, 0, 1, 2].item()
        expected = (near * math.exp(gap) + far) / (math.exp(gap) + 1)  # softmax of (gap, 0)
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-6), gap
        errors.append(near - got)
    assert errors[0] == pytest.approx(near - (near + far) / 2)  # equal importance: the average
    assert all(a > b for a, b in itertools.pairwise(errors))  # strictly closer to the near value
    assert errors[-1] == pytest.approx(0.0, abs=1e-7)
    # The order of the points does not matter.
    out, _ = softmax_splat(values.flip(-1), uv, torch.tensor([[0.0, 16.0]], device=device), ones, 3, 4)
    assert out[0, 0, 1, 2].item() == pytest.approx(near, abs=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("offset", [1e4, -1e4])
def test_large_importances_are_stable(offset: float, dtype: torch.dtype, device: str) -> None:
    gen = torch.Generator().manual_seed(3)
    values, uv, importance, valid = random_inputs(gen, 2, 3, 300, 9, 11, dtype, device)
    # Importances on a 1/256 grid in [-8, 8]: adding 1e4 is exact in float32, so Z - Zmax is bit-identical and
    # so are the outputs (a naive exp(Z) would overflow to inf or underflow to 0).
    importance = (torch.randn(2, 300, generator=gen) * 256 * 3).round().clamp(-2048, 2048).to(dtype).to(device) / 256
    base_out, base_density = softmax_splat(values, uv, importance, valid, 9, 11)
    out, density = softmax_splat(values, uv, importance + offset, valid, 9, 11)
    assert torch.isfinite(out).all() and torch.isfinite(density).all()
    assert (base_density > 0).any() and (out != 0).any()
    torch.testing.assert_close(out, base_out, **same_computation(device))
    torch.testing.assert_close(density, base_density, **same_computation(device))


@pytest.mark.parametrize("device", DEVICES)
def test_density_sums_to_number_of_interior_points(device: str) -> None:
    gen = torch.Generator().manual_seed(11)
    b, n, h, w = 3, 500, 16, 24
    # All four neighbours inside <=> u in [0.5, W - 0.5) and v in [0.5, H - 0.5).
    u = 0.5 + torch.rand(b, n, generator=gen, dtype=torch.float64) * (w - 1)
    v = 0.5 + torch.rand(b, n, generator=gen, dtype=torch.float64) * (h - 1)
    inside = torch.stack((u, v), dim=-1)
    outside = torch.stack((torch.full((b, n), -3.0), v), dim=-1)  # wholly off the image
    uv = torch.cat((inside, outside), dim=1).to(device)
    valid = (torch.rand(b, 2 * n, generator=gen) > 0.3).to(device)
    importance = torch.randn(b, 2 * n, generator=gen).to(device)
    values = torch.randn(b, 2, 2 * n, generator=gen).to(device)
    _, density = softmax_splat(values, uv, importance, valid, h, w)
    expected = valid[:, :n].sum(dim=1).double()
    torch.testing.assert_close(density.sum(dim=(1, 2, 3)).double(), expected, rtol=1e-6, atol=1e-3)
    assert (density >= 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_accumulates_in_float32_for_half_inputs(device: str) -> None:
    n = 5000  # float16 cannot count past 2048 in steps of 1
    for dtype in (torch.float16, torch.bfloat16):
        values = torch.full((1, 1, n), 0.1, dtype=dtype, device=device)
        uv = torch.full((1, n, 2), 3.5, dtype=dtype, device=device)
        out, density = softmax_splat(
            values,
            uv,
            torch.zeros(1, n, dtype=dtype, device=device),
            torch.ones(1, n, dtype=torch.bool, device=device),
            6,
            6,
        )
        assert out.dtype == density.dtype == torch.float32
        assert density[0, 0, 3, 3].item() == n
        assert out[0, 0, 3, 3].item() == pytest.approx(float(torch.tensor(0.1, dtype=dtype)), rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_invalid_points_are_ignored(device: str) -> None:
    gen = torch.Generator().manual_seed(5)
    values, uv, importance, valid = random_inputs(gen, 2, 3, 200, 8, 10, torch.float32, device)
    finite = torch.isfinite(uv).all(-1) & torch.isfinite(importance)
    keep = valid & finite
    out, density = softmax_splat(values, uv, importance, valid, 8, 10)
    # Poison everything about the invalid points (values, coordinates, importances): nothing changes.
    poisoned = values.clone()
    poisoned[~keep[:, None, :].expand_as(values)] = math.nan
    uv2 = torch.where(keep[..., None], uv, 0.5)  # move them onto pixel (0, 0)
    z2 = torch.where(keep, importance, 1e6)  # and make them the most important
    out2, density2 = softmax_splat(poisoned, uv2, z2, keep, 8, 10)
    torch.testing.assert_close(out2, out, **same_computation(device))
    torch.testing.assert_close(density2, density, **same_computation(device))
    assert torch.isfinite(out2).all()
    # eps = 0: uncovered pixels are still exactly 0, not 0 / 0.
    out, density = softmax_splat(values[:, :, 5:10], uv[:, 5:10], importance[:, 5:10], valid[:, 5:10], 8, 10, eps=0.0)
    assert (density == 0).any() and torch.isfinite(out).all()
    assert (out[(density == 0).expand_as(out)] == 0).all()
    # No valid point at all, and no point at all: zeros.
    out, density = softmax_splat(values, uv, importance, torch.zeros_like(valid), 8, 10)
    assert out.abs().sum() == 0 and density.abs().sum() == 0
    out, density = softmax_splat(values[:, :, :0], uv[:, :0], importance[:, :0], valid[:, :0], 8, 10)
    assert out.shape == (2, 3, 8, 10) and out.abs().sum() == 0 and density.abs().sum() == 0


def test_gradients_flow_to_values_and_importance() -> None:
    # Two points on one pixel: out = p v1 + (1 - p) v2 with p = sigmoid(z1 - z2).
    values = torch.tensor([[[2.0, -1.0]]], requires_grad=True)
    importance = torch.tensor([[0.7, -0.3]], requires_grad=True)
    uv = torch.tensor([[[1.5, 0.5], [1.5, 0.5]]])
    out, _ = softmax_splat(values, uv, importance, torch.ones(1, 2, dtype=torch.bool), 2, 3)
    out[0, 0, 0, 1].backward()
    p = 1 / (1 + math.exp(-1.0))
    torch.testing.assert_close(values.grad, torch.tensor([[[p, 1 - p]]]))
    dz = p * (1 - p) * (2.0 - (-1.0))
    torch.testing.assert_close(importance.grad, torch.tensor([[dz, -dz]]))


def test_rejects_bad_inputs() -> None:
    values, uv, z = torch.zeros(2, 3, 5), torch.zeros(2, 5, 2), torch.zeros(2, 5)
    valid = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"values must be a tensor of shape \(B, C, N\)"):
        softmax_splat(torch.zeros(3, 5), uv, z, valid, 4, 4)
    with pytest.raises(ValueError, match=r"uv must have shape \(B, N, 2\)"):
        softmax_splat(values, torch.zeros(2, 5, 3), z, valid, 4, 4)
    with pytest.raises(ValueError, match=r"importance must have shape \(B, N\)"):
        softmax_splat(values, uv, torch.zeros(2, 4), valid, 4, 4)
    with pytest.raises(ValueError, match=r"valid must have shape \(B, N\)"):
        softmax_splat(values, uv, z, valid[:1], 4, 4)
    with pytest.raises(ValueError, match="height must be a positive int"):
        softmax_splat(values, uv, z, valid, 0, 4)
    with pytest.raises(ValueError, match="width must be a positive int"):
        softmax_splat(values, uv, z, valid, 4, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        softmax_splat(values, uv, z, valid, 4, 4, eps=-1.0)
    with pytest.raises(TypeError, match="valid must be a bool tensor"):
        softmax_splat(values, uv, z, valid.float(), 4, 4)
    with pytest.raises(TypeError, match="uv must be a floating-point tensor"):
        softmax_splat(values, uv.long(), z, valid, 4, 4)


@st.composite
def small_problems(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    b = draw(st.integers(1, 3))
    c = draw(st.integers(1, 3))
    n = draw(st.integers(0, 12))
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    # Coordinates: anywhere around the image, or exactly on a pixel centre / edge / corner (multiples of 1/4).
    coord = st.one_of(
        st.floats(-2.0, 8.0, allow_nan=False, width=32),
        st.integers(-8, 32).map(lambda k: k / 4),
        st.sampled_from([math.nan, math.inf, -math.inf]),
    )
    uv = draw(st.lists(st.tuples(coord, coord), min_size=b * n, max_size=b * n))
    imp = draw(
        st.lists(
            st.one_of(st.floats(-10.0, 10.0, width=32), st.sampled_from([0.0, 1.0, math.nan])),
            min_size=b * n,
            max_size=b * n,
        )
    )
    vals = draw(st.lists(st.floats(-100.0, 100.0, width=32), min_size=b * c * n, max_size=b * c * n))
    valid = draw(st.lists(st.booleans(), min_size=b * n, max_size=b * n))
    return (
        torch.tensor(vals, dtype=torch.float32).reshape(b, c, n),
        torch.tensor(uv, dtype=torch.float32).reshape(b, n, 2),
        torch.tensor(imp, dtype=torch.float32).reshape(b, n),
        torch.tensor(valid, dtype=torch.bool).reshape(b, n),
        h,
        w,
    )


@settings(max_examples=150, deadline=None)
@given(small_problems())
def test_property_matches_reference(
    problem: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int],
) -> None:
    values, uv, importance, valid, h, w = problem
    assert_matches_reference(values, uv, importance, valid, h, w, atol=1e-3)
