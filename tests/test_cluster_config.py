"""ray_cluster.yaml passes Ray's own cluster-config validation (no AWS call)."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parent.parent


def test_cluster_yaml_passes_rays_validation() -> None:
    config = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    # Every worker type advertises a custom resource so stages can target it.
    for name, spec in types.items():
        if name != config["head_node_type"]:
            assert spec["resources"], name
