"""ZoeDepth wrapper and depth alignment: shapes, flip averaging, the real loading path, padding removal, fits."""

from __future__ import annotations

import math
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from invs.depth import (
    DEFAULT_MODEL,
    DepthEstimator,
    DepthModelError,
    align_least_squares,
    align_robust,
    align_to_distance,
    depth_errors,
    tiny_zoedepth_config,
)

INPUT_SIZE = (64, 64)  # network input target for the tiny model: keeps every forward pass in milliseconds


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy machine OpenMP spinning makes them 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> DepthEstimator:
    return DepthEstimator.from_config(tiny_zoedepth_config(), input_size=INPUT_SIZE, seed=0)


@pytest.fixture(scope="module")
def tiny_flip(tiny: DepthEstimator) -> DepthEstimator:
    return DepthEstimator(tiny.model, tiny.processor, flip_average=True)


def images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=g)


# ---------------------------------------------------------------------------------------------- estimator


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 48, 80), (2, 72, 40), (3, 33, 57), (2, 64, 64)])
def test_depth_has_input_resolution_and_is_finite_positive(
    tiny: DepthEstimator, batch: int, height: int, width: int
) -> None:
    x = images(batch, height, width)
    depth = tiny(x)
    assert depth.shape == (batch, height, width)
    assert depth.dtype == torch.float32
    assert torch.isfinite(depth).all()
    assert (depth > 0).all()
    assert depth.std() > 0  # the random tiny model is not degenerate: depth varies over the image


def test_batch_items_are_independent(tiny: DepthEstimator) -> None:
    x = images(3, 40, 56, seed=1)
    batched = tiny(x)
    single = torch.stack([tiny(x[i : i + 1])[0] for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])  # different images, different depth


def test_two_head_model_routes_each_image_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """The NYU+KITTI model sums its domain logits over the batch; the estimator must not let batch mates
    change an image's head. Rig the classifier so that two images, alone, pick different heads."""
    est = DepthEstimator.from_config(tiny_zoedepth_config(nyu_kitti=True), input_size=INPUT_SIZE, seed=0)
    assert est.routes_per_batch
    classifier = est.model.metric_head.mlp_classifier
    a, b = images(1, 48, 80, seed=5), torch.full((1, 3, 48, 80), 0.9)
    seen: list[float] = []
    monkeypatch.setattr(classifier, "forward", lambda e: seen.append(float(e.mean())) or torch.zeros(len(e), 2))
    est(a)
    est(b)
    middle = (seen[0] + seen[1]) / 2
    assert seen[0] != seen[1]

    def rigged(embedding: torch.Tensor) -> torch.Tensor:  # head 0 above the middle, head 1 below
        vote = (embedding.mean(dim=-1, keepdim=True) - middle) * 1e4
        return torch.cat([vote, -vote], dim=-1)

    monkeypatch.setattr(classifier, "forward", rigged)
    alone = torch.cat([est(a), est(b)])
    torch.testing.assert_close(est(torch.cat([a, b])), alone, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the raw model, batched, sends one of them through the other head
        raw_pair = est.model(pixel_values=est.preprocess(torch.cat([a, b]))).predicted_depth
        raw_alone = torch.cat([est.model(pixel_values=est.preprocess(x)).predicted_depth for x in (a, b)])
    assert (raw_pair - raw_alone).abs().max() > 1e-3


def test_preprocessing_mirrors_the_image_processor(tiny: DepthEstimator) -> None:
    # 48x100 pads to 76x142; scaled to height 64 the width is 119.6 = 3.74 * 32, which rounds to 128
    x = images(1, 48, 100, seed=2)
    expected = tiny.processor(
        images=[x[0].numpy()], do_rescale=False, return_tensors="pt", input_data_format="channels_first"
    )["pixel_values"]
    mine = tiny.preprocess(x)
    assert mine.shape == expected.shape == (1, 3, 64, 128)
    torch.testing.assert_close(mine, expected, rtol=0, atol=1e-5)


def test_flip_averaging_changes_asymmetric_inputs_only(tiny: DepthEstimator, tiny_flip: DepthEstimator) -> None:
    asym = images(2, 48, 72, seed=3)
    plain, flipped = tiny(asym), tiny_flip(asym)
    assert flipped.shape == plain.shape == (2, 48, 72)
    assert (plain - flipped).abs().max() > 1e-3
    # flip averaging is flip-equivariant (up to float rounding in the resize); the plain network is not
    torch.testing.assert_close(tiny_flip(asym.flip(-1)), flipped.flip(-1), rtol=0, atol=1e-4)
    assert (tiny(asym.flip(-1)) - plain.flip(-1)).abs().max() > 1e-2

    # so a mirror-symmetric image gets a mirror-symmetric depth map only with flip averaging
    sym = torch.cat([asym[..., :36], asym[..., :36].flip(-1)], dim=-1)
    assert torch.equal(sym, sym.flip(-1))
    torch.testing.assert_close(tiny_flip(sym), tiny_flip(sym).flip(-1), rtol=0, atol=1e-4)
    assert (tiny(sym) - tiny(sym).flip(-1)).abs().max() > 1e-2


@pytest.mark.parametrize("axis", ["rows", "cols"])
@pytest.mark.parametrize(("height", "width"), [(48, 80), (90, 36)])
def test_postprocessing_crops_exactly_the_padding(
    tiny: DepthEstimator, monkeypatch: pytest.MonkeyPatch, axis: str, height: int, width: int
) -> None:
    """A fake network returns, for each of its pixels, the padded-image row (or column) it samples; after
    post-processing, pixel (y, x) of the output must hold the padded coordinate of source pixel (y, x)."""
    pad_h, pad_w = tiny.preprocessing.padding(height, width)
    assert pad_h > 0 and pad_w > 0
    padded = (height + 2 * pad_h, width + 2 * pad_w)
    seen: list[tuple[int, int]] = []

    def fake_forward(pixel_values: torch.Tensor, **_: object) -> types.SimpleNamespace:
        b, _, h, w = pixel_values.shape
        seen.append((h, w))
        dim, n, n_padded = (-2, h, padded[0]) if axis == "rows" else (-1, w, padded[1])
        coord = torch.arange(n, dtype=torch.float32) * (n_padded - 1) / (n - 1) + 1.0
        shape = [1, 1, 1]
        shape[dim] = n
        return types.SimpleNamespace(predicted_depth=coord.view(shape).expand(b, h, w).clone())

    monkeypatch.setattr(tiny.model, "forward", fake_forward)
    depth = tiny(images(2, height, width))
    assert seen and seen[0] != padded and seen[0][0] % 32 == 0 and seen[0][1] % 32 == 0
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    expected = (ys + pad_h if axis == "rows" else xs + pad_w).float() + 1.0
    torch.testing.assert_close(depth, expected.expand(2, height, width), rtol=0, atol=1e-4)


def test_rejects_bad_images(tiny: DepthEstimator) -> None:
    with pytest.raises(ValueError, match="B, 3, H, W"):
        tiny(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="float"):
        tiny(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


# ------------------------------------------------------------------------------------------------ loading


def test_from_pretrained_round_trips_a_saved_model(tiny: DepthEstimator, tmp_path: Path) -> None:
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    loaded = DepthEstimator.from_pretrained(str(tmp_path))
    assert loaded.model is not tiny.model
    assert loaded.preprocessing == tiny.preprocessing
    x = images(2, 48, 80, seed=4)
    torch.testing.assert_close(loaded(x), tiny(x), rtol=0, atol=0)


def assert_one_line_error(exc: pytest.ExceptionInfo[DepthModelError], model: str) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message and len(message) < 400
    assert repr(model) in message and "--depth-model" in message and "--depth gt" in message
    return message


def test_hub_model_offline_raises_depth_model_error() -> None:
    import huggingface_hub

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE is not set: this test must not reach the hub")
    if isinstance(huggingface_hub.try_to_load_from_cache(DEFAULT_MODEL, "config.json"), str):
        pytest.skip(f"{DEFAULT_MODEL} is in this machine's Hugging Face cache")
    with pytest.raises(DepthModelError) as exc:
        DepthEstimator.from_pretrained(DEFAULT_MODEL)
    assert "HF_HUB_OFFLINE" in assert_one_line_error(exc, DEFAULT_MODEL)


def test_missing_or_empty_directory_raises_depth_model_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(DepthModelError) as exc:
        DepthEstimator.from_pretrained(missing)
    assert "no such directory" in assert_one_line_error(exc, missing)

    with pytest.raises(DepthModelError) as exc:
        DepthEstimator.from_pretrained(str(tmp_path))
    assert "config.json" in assert_one_line_error(exc, str(tmp_path))


def test_directory_without_or_with_incomplete_weights_raises(tiny: DepthEstimator, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tiny.model.config.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    with pytest.raises(DepthModelError) as exc:
        DepthEstimator.from_pretrained(str(tmp_path))
    assert_one_line_error(exc, str(tmp_path))

    tiny.model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    dropped = sorted(k for k in state if k.startswith("metric_head."))[0]
    del state[dropped]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(DepthModelError) as exc:  # never random weights in place of missing ones
        DepthEstimator.from_pretrained(str(tmp_path))
    assert "lacks 1 weights" in assert_one_line_error(exc, str(tmp_path))


# ---------------------------------------------------------------------------------------------- alignment


def scene(batch: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive depth and a foreground mask (a disc), with NaN/inf garbage outside the mask."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 32, 40) if batch else (32, 40)
    depth = 0.5 + 3 * torch.rand(shape, generator=g)
    ys, xs = torch.meshgrid(torch.arange(32), torch.arange(40), indexing="ij")
    mask = ((ys - 16) ** 2 + (xs - 20) ** 2 < 12**2).expand(shape).clone()
    depth[~mask] = torch.where(torch.rand(shape, generator=g) < 0.5, torch.nan, torch.inf)[~mask]
    return depth, mask


def test_median_alignment_hits_the_distance() -> None:
    depth, mask = scene()
    aligned, info = align_to_distance(depth, mask, 2.5)
    assert info["kind"] == "median" and isinstance(info["scale"], float)
    assert float(aligned[mask].median()) == pytest.approx(2.5, rel=1e-6)
    assert (aligned[~mask] == 0).all()  # garbage outside the mask neither leaks nor influences the scale
    torch.testing.assert_close(aligned[mask], depth[mask] * info["scale"])

    batch, bmask = scene(batch=3, seed=1)
    aligned, info = align_to_distance(batch, bmask, torch.tensor([1.0, 2.0, 4.0]))
    assert len(info["scale"]) == 3
    for b, dist in enumerate([1.0, 2.0, 4.0]):
        assert float(aligned[b][bmask[b]].median()) == pytest.approx(dist, rel=1e-6)


def test_least_squares_recovers_scale_and_shift() -> None:
    depth, mask = scene(seed=2)
    reference = torch.where(mask, 0.37 * depth + 1.2, torch.full_like(depth, 1e6))  # outside: way off
    aligned, info = align_least_squares(depth, reference, mask)
    assert info["kind"] == "lstsq"
    assert info["scale"] == pytest.approx(0.37, abs=1e-5)
    assert info["shift"] == pytest.approx(1.2, abs=1e-5)
    torch.testing.assert_close(aligned[mask], reference[mask], rtol=1e-5, atol=1e-5)
    assert (aligned[~mask] == 0).all()

    _, info = align_least_squares(depth, torch.where(mask, 0.37 * depth, reference), mask, shift=False)
    assert info["scale"] == pytest.approx(0.37, abs=1e-5) and info["shift"] == 0.0

    batch, bmask = scene(batch=2, seed=3)
    reference = batch * torch.tensor([0.37, 2.0]).view(2, 1, 1) + torch.tensor([1.2, -0.5]).view(2, 1, 1)
    _, info = align_least_squares(batch, reference, bmask)
    assert info["scale"] == pytest.approx([0.37, 2.0], abs=1e-5)
    assert info["shift"] == pytest.approx([1.2, -0.5], abs=1e-5)


def test_least_squares_ignores_pixels_outside_the_mask() -> None:
    depth, mask = scene(seed=4)
    clean = torch.where(mask, depth, torch.ones_like(depth))
    noisy_ref = 0.37 * clean + 1.2 + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    _, inside = align_least_squares(clean, noisy_ref, mask)
    garbage_ref = torch.where(mask, noisy_ref, torch.full_like(noisy_ref, -50.0))
    _, with_garbage = align_least_squares(depth, garbage_ref, mask)
    assert with_garbage == pytest.approx(inside, abs=1e-9)
    _, unmasked = align_least_squares(clean, garbage_ref, torch.ones_like(mask))
    assert unmasked["scale"] != pytest.approx(inside["scale"], abs=1e-2)  # the mask is what kept garbage out


def dome(batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Planar depth of a smooth object (a dome bulging 0.8 towards a camera 2.4 away), 0 off the object."""
    ys, xs = torch.meshgrid(torch.arange(48), torch.arange(64), indexing="ij")
    r2 = ((ys - 24.0) ** 2 + (xs - 32.0) ** 2) / 20**2
    mask = r2 < 1
    depth = torch.where(mask, 2.4 - 0.8 * (1 - r2.clamp(max=1)).sqrt(), torch.zeros(()))
    if batch:
        depth, mask = depth.expand(batch, -1, -1).clone(), mask.expand(batch, -1, -1).clone()
    return depth, mask


def relative_error(depth: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> float:
    return float(((depth - reference).abs() / reference)[mask].max())


def test_robust_alignment_of_ground_truth_to_itself_is_the_identity() -> None:
    gt, mask = dome()
    aligned, info = align_robust(gt, gt, mask)
    assert relative_error(aligned, gt, mask) < 0.005
    assert info["kind"] == "robust" and info["scale"] == pytest.approx(1.0) and info["shift"] == pytest.approx(0.0)
    assert info["median_abs_rel"] < 1e-9 and info["rmse"] < 1e-9 and info["inlier_fraction"] == 1.0
    assert (aligned[~mask] == 0).all()


def distorted(
    gt: torch.Tensor, scale: float, shift: float, noise: float, outliers: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``gt * scale + shift`` plus Gaussian noise, and a fraction ``outliers`` of the pixels 3-6 times too far."""
    g = torch.Generator().manual_seed(seed)
    predicted = gt * scale + shift + noise * torch.randn(gt.shape, generator=g)
    gross = torch.rand(gt.shape, generator=g) < outliers
    return torch.where(gross, predicted * (3 + 3 * torch.rand(gt.shape, generator=g)), predicted), gross


@pytest.mark.parametrize(("scale", "shift"), [(0.6, 0.5), (1.7, -1.3), (3.0, 0.0)])
def test_robust_alignment_undoes_scale_shift_and_noise_despite_outliers(scale: float, shift: float) -> None:
    gt, mask = dome()
    predicted, gross = distorted(gt, scale, shift, noise=0.002 * scale, outliers=0.05)
    aligned, info = align_robust(predicted, gt, mask)
    good = mask & ~gross
    assert float(((aligned - gt).abs() / gt)[good].mean()) < 0.01  # within the noise (~0.1%) on good pixels
    assert info["scale"] == pytest.approx(1 / scale, rel=0.01) and info["shift"] == pytest.approx(
        -shift / scale, abs=0.01
    )
    # the fitted map is right, not only close on average: noise-free distorted depth comes back within 1%
    clean, _ = align_robust(gt * scale + shift, gt, mask)
    assert relative_error(clean, gt, mask) < 0.01
    assert info["median_abs_rel"] < 0.005 and 0.9 < info["inlier_fraction"] < 0.97  # the outliers are found
    # what the robust fit is for: plain least squares lets the same 5% of outliers skew the whole map
    fitted, _ = align_least_squares(predicted, gt, mask)
    assert float(((fitted - gt).abs() / gt)[good].mean()) > 0.03


def test_robust_alignment_batched_and_scale_only() -> None:
    gt, mask = dome(batch=2)
    predicted = torch.stack([distorted(gt[0], 0.5, 0.8, 0.001, 0.03, seed=1)[0], gt[1] * 2.0])
    aligned, info = align_robust(predicted, gt, mask)
    assert aligned.shape == (2, 48, 64) and info["kind"] == "robust"
    assert info["scale"] == pytest.approx([2.0, 0.5], rel=0.01)
    assert info["shift"] == pytest.approx([-1.6, 0.0], abs=0.01)
    assert all(len(info[k]) == 2 for k in ("median_abs_rel", "rmse", "inlier_fraction"))
    assert relative_error(aligned[1], gt[1], mask[1]) < 1e-6

    predicted, gross = distorted(gt[0], 1.3, 0.0, 0.002, 0.05, seed=2)
    aligned, info = align_robust(predicted, gt[0], mask[0], shift=False)
    assert info["shift"] == 0.0 and info["scale"] == pytest.approx(1 / 1.3, rel=0.005)
    assert float(((aligned - gt[0]).abs() / gt[0])[mask[0] & ~gross].mean()) < 0.01


def test_robust_alignment_skips_pixels_without_a_usable_reference() -> None:
    gt, mask = dome()
    reference = gt.clone()
    reference[:24] = torch.where(mask[:24], torch.tensor(0.0), reference[:24])  # half the object: no surface
    reference[30, 30] = torch.nan
    predicted = torch.where(mask, gt * 2 + 1, torch.tensor(torch.inf))
    aligned, info = align_robust(predicted, reference, mask)
    assert info["scale"] == pytest.approx(0.5) and info["shift"] == pytest.approx(-0.5)
    assert relative_error(aligned, gt, mask) < 1e-6  # aligned over the whole mask, fitted where the reference is
    assert (aligned[~mask] == 0).all() and math.isfinite(info["rmse"])


def test_depth_errors() -> None:
    depth, mask = scene(seed=5)
    same = depth_errors(depth, depth, mask)
    assert same["abs_rel"] == 0 and same["rmse"] == 0 and same["delta1"] == 1
    assert same["pixels"] == int(mask.sum())

    off = depth_errors(depth * 1.1, depth, mask)
    assert off["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    expected_rmse = math.sqrt(float(((0.1 * depth[mask].double()) ** 2).mean()))
    assert off["rmse"] == pytest.approx(expected_rmse, rel=1e-5)
    assert off["delta1"] == 1.0
    assert depth_errors(depth * 1.3, depth, mask)["delta1"] == 0.0

    half = depth.clone()
    half[:16] *= 2  # the top half of the disc is off by 2x
    assert depth_errors(half, depth, mask)["delta1"] == pytest.approx(float(mask[16:].sum() / mask.sum()))
    assert depth_errors(-depth, depth, mask)["delta1"] == 0.0  # negative depth never counts as within 1.25


def test_alignment_validates_masks_and_shapes() -> None:
    depth, mask = scene()
    with pytest.raises(TypeError, match="bool"):
        align_to_distance(depth, mask.float(), 1.0)
    with pytest.raises(ValueError, match="empty"):
        align_to_distance(depth, torch.zeros_like(mask), 1.0)
    with pytest.raises(ValueError, match="shape"):
        align_least_squares(depth, depth[:-1], mask)
    with pytest.raises(ValueError, match="constant"):
        align_least_squares(torch.ones_like(depth), depth, mask)
    with pytest.raises(TypeError, match="bool"):
        align_robust(depth, depth, mask.float())
    with pytest.raises(ValueError, match="shape"):
        align_robust(depth, depth[:, :-1], mask)
    with pytest.raises(ValueError, match="float"):
        align_robust(depth.int(), depth, mask)
    with pytest.raises(ValueError, match="too few"):
        align_robust(depth, depth, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="constant"):
        align_robust(torch.ones_like(depth), depth, mask)
