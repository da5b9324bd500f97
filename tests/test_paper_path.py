"""What only the paper preset's path runs, on its stand-ins (invs/standins.py): a non-tiny model loaded from a
directory, bf16 validation and export, stored latents matched by the VAE's identity, the inference scheduler's
settings, the precision setting's spellings and evaluation's device. Fast: no Ray, no Blender."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from invs.config import load_config
from invs.errors import ConfigError, InvsError
from invs.latents import vae_fingerprint
from invs.models import load_components, load_vae
from invs.standins import SD2_INPAINT_SCHEDULER_CONFIG, save_standins

RES = 64


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return save_standins(tmp_path_factory.mktemp("standins"))


def pair_batch(n: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = {k: torch.rand(n, 3, RES, RES, generator=g) * 2 - 1 for k in ("source", "partial", "target")}
    return images | {"mask": torch.rand(n, 1, RES, RES, generator=g)}


def test_the_standin_has_the_real_models_layout(standins: dict[str, Path]) -> None:
    parts = load_components(str(standins["inpainting"]))
    assert parts["unet"].config.in_channels == 9 and parts["vae"].config.scaling_factor == 0.18215
    assert 2 ** (len(parts["vae"].config.block_out_channels) - 1) == 8  # SD's downsampling: 64 px -> 8x8 latents
    index = json.loads((standins["inpainting"] / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInpaintPipeline" and index["scheduler"][1] == "PNDMScheduler"
    stated = json.loads((standins["inpainting"] / "scheduler" / "scheduler_config.json").read_text())
    assert stated == SD2_INPAINT_SCHEDULER_CONFIG
    zoe = json.loads((standins["zoedepth"] / "config.json").read_text())
    assert [b["name"] for b in zoe["bin_configurations"]] == ["nyu", "kitti"]


def test_bf16_validation_runs_and_the_export_holds_the_frozen_parts_as_loaded(
    standins: dict[str, Path], tmp_path: Path
) -> None:
    """The worker's own preparation (``freeze``), validation under the step's bf16 autocast, then the export."""
    from safetensors.torch import load_file

    from inference.conditioning import Conditioner
    from inference.pipeline import NovelViewPipeline
    from train.loop import autocast, build_denoiser, export, freeze, model_spec

    config = load_config("paper", {"train.model": str(standins["inpainting"]), "train.out": str(tmp_path / "run")})
    tc = config.train
    parts = load_components(tc.model)
    device = torch.device("cpu")
    freeze(parts, device)
    conditioner = Conditioner(tc.conditioning, parts)
    denoiser = build_denoiser(parts, conditioner, tc)
    with autocast(device, torch.bfloat16), torch.no_grad():
        plan = SimpleNamespace(resolution=RES, pair_geometry={})
        model = NovelViewPipeline.from_parts(parts, denoiser.unet, model_spec(config, parts, plan), None, conditioner)
        _, scores = model.score(pair_batch(), 3, vae_ceiling=False)
    assert all(torch.isfinite(v).all() for v in scores.values())
    export(denoiser, None, [], parts, config, plan)
    for part in ("vae", "text_encoder"):
        [loaded] = (standins["inpainting"] / part).glob("*.safetensors")
        [exported] = (tmp_path / "run" / "model" / part).glob("*.safetensors")
        a, b = load_file(loaded), load_file(exported)
        assert a.keys() == b.keys()
        assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a), part


def test_the_vae_fingerprint_is_the_encoders_identity_not_its_path(
    standins: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = standins["inpainting"]
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(original, copy)
    monkeypatch.chdir(tmp_path)
    spellings = [str(original), str(original) + "/", str(copy), "./elsewhere/copy", "elsewhere/../elsewhere/copy"]
    fingerprints = {vae_fingerprint(load_vae(s)) for s in spellings}
    assert len(fingerprints) == 1 and next(iter(fingerprints)).startswith("sha256:")
    vae = load_vae(str(copy))
    vae.register_to_config(scaling_factor=0.5)  # latents are stored unscaled: the scale is not the encoder
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(1.0)  # nor is the decoder
    assert vae_fingerprint(vae) in fingerprints
    with torch.no_grad():
        vae.encoder.conv_in.bias[0] += 1e-3
    assert vae_fingerprint(vae) not in fingerprints


def test_training_says_which_latents_it_uses_and_can_require_stored_ones(
    standins: dict[str, Path], tmp_path: Path
) -> None:
    from train.run import stored_latents

    model = str(standins["inpainting"])
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    made = {"vae": vae_fingerprint(load_vae(model)), "model": "stabilityai/stable-diffusion-2-inpainting"}
    config = load_config("paper", {"train.model": str(copy), "train.require_stored_latents": True})
    used = stored_latents(config, SimpleNamespace(latents=made), None)
    assert used["used"] and used["line"].startswith("stored latents: used (made by this run's VAE")
    other = made | {"vae": "sha256:" + "0" * 64}
    with pytest.raises(InvsError, match=r"^train.require_stored_latents is set but the pairs. were made by another"):
        stored_latents(config, SimpleNamespace(latents=other), None)
    with pytest.raises(InvsError, match="the pairs have none"):
        stored_latents(config, SimpleNamespace(latents=None), None)
    config.train.require_stored_latents = False
    line = stored_latents(config, SimpleNamespace(latents=other), None)["line"]
    assert line.startswith("stored latents: NOT used") and "the VAE encodes every image" in line


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        (SD2_INPAINT_SCHEDULER_CONFIG, {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}),
        # A PNDM config saved from the class's own settings states neither: DDIM's defaults (True) must not fill in
        (
            {k: v for k, v in SD2_INPAINT_SCHEDULER_CONFIG.items() if k not in ("clip_sample", "set_alpha_to_one")},
            {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1},
        ),
        (SD2_INPAINT_SCHEDULER_CONFIG | {"clip_sample": True}, {"clip_sample": True, "set_alpha_to_one": False}),
    ],
)
def test_the_inference_scheduler_takes_what_the_models_file_states(tmp_path: Path, file: dict, expected: dict) -> None:
    from diffusers import DDPMScheduler

    from inference.pipeline import inference_scheduler

    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(file))
    ddim = inference_scheduler(DDPMScheduler.from_pretrained(tmp_path, subfolder="scheduler"))
    assert type(ddim).__name__ == "DDIMScheduler"
    assert {k: ddim.config[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("written", "value"),
    [
        *[("no", "no"), ("false", "no"), ("off", "no"), ("fp32", "no"), ("float32", "no"), ("'no'", "no")],
        *[("bf16", "bf16"), ("bfloat16", "bf16"), ("auto", "auto")],
    ],
)
def test_mixed_precision_takes_what_users_write(tmp_path: Path, written: str, value: str) -> None:
    assert load_config("paper", [f"train.mixed_precision={written}"]).train.mixed_precision == value
    config_file = tmp_path / "run.yaml"
    config_file.write_text(f"base: paper\ntrain:\n  mixed_precision: {written}\n")
    assert load_config(config_file).train.mixed_precision == value


@pytest.mark.parametrize("written", ["yes", "fp16", "true"])
def test_mixed_precision_refuses_what_it_cannot_mean(written: str) -> None:
    with pytest.raises(ConfigError, match="train.mixed_precision: expected 'auto' | 'no' | 'bf16'"):
        load_config("paper", [f"train.mixed_precision={written}"])


def test_evaluation_and_inference_pick_a_device_that_exists() -> None:
    from invs.devices import pick_device

    assert pick_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(InvsError, match="--device cuda: this machine has no CUDA device"):
            pick_device("cuda")
