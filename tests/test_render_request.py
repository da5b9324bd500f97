"""The render request: built from the config with the config's values, read back by Blender's side exactly, and
refused there when a field is unknown or missing (one place for its fields and defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from invs import cameras
from invs.config import load_config
from render.request import RenderRequest


def test_the_request_carries_the_config_and_reads_back_exactly() -> None:
    config = load_config("paper", {"render.resolution": 128, "render.samples": 7, "camera.lens_mm": 50})
    request = RenderRequest.from_config(config, "uid-1", Path("/m.glb"), Path("/out"), threads=3)
    assert (request.resolution, request.samples, request.lens_mm, request.threads) == (128, 7, 50.0, 3)
    assert request.lighting == config.render.lighting and request.light_seed == cameras.object_seed("uid-1", 1)
    assert [v["azimuth_deg"] for v in request.views] == [s.azimuth_deg for s in cameras.view_specs(config, "uid-1")]
    assert RenderRequest.from_message(request.message()) == request
    assert request.renderer() == {
        "engine": "cycles",
        "samples": 7,
        "denoise": True,
        "limited_bounces": True,
        "device": "cpu",
        "passes": ["rgba", "depth"],
        "coverage_samples": 32,
        "crop_to_object": True,
    }


def test_passes_are_checked_and_put_in_shard_order() -> None:
    from invs.errors import ConfigError

    config = load_config("local", {"render.passes": ["albedo", "depth", "normal", "rgba"]})
    assert RenderRequest.from_config(config, "u", Path("/m.glb"), Path("/o"), threads=0).passes == [
        "rgba",
        "depth",
        "normal",
        "albedo",
    ]
    with pytest.raises(ConfigError, match="unknown render pass 'specular'"):
        load_config("local", {"render.passes": ["rgba", "depth", "specular"]})
    with pytest.raises(ConfigError, match="must include depth"):
        load_config("local", {"render.passes": ["rgba", "normal"]})


@pytest.mark.parametrize(
    ("change", "message"), [("drop", "render request without samples"), ("add", "unknown render request fields")]
)
def test_blenders_side_refuses_a_message_it_does_not_know(change: str, message: str) -> None:
    request = RenderRequest.from_config(load_config("local"), "u", Path("/m.glb"), Path("/o"), threads=0)
    sent = request.message()
    sent = {k: v for k, v in sent.items() if k != "samples"} if change == "drop" else sent | {"colour": "red"}
    with pytest.raises(ValueError, match=message):
        RenderRequest.from_message(sent)
