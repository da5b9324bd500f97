"""ray_cluster.yaml passes Ray's own cluster-config validation (no AWS call)."""

from __future__ import annotations

from pathlib import Path

import yaml

from infra.cluster_file import load_cluster_file

REPO = Path(__file__).resolve().parent.parent


def test_cluster_yaml_passes_rays_validation() -> None:
    config = load_cluster_file(REPO / "ray_cluster.yaml")
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    # Every worker type advertises a custom resource so stages can target it.
    for name, spec in types.items():
        if name != config["head_node_type"]:
            assert spec["resources"], name


def test_every_stage_resource_in_the_paper_config_is_a_node_type_resource() -> None:
    """configs/paper.yaml pins each stage to a node type through a custom resource that ray_cluster.yaml defines."""
    from invs.config import load_config

    cluster = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    offered = {name: spec.get("resources", {}) for name, spec in cluster["available_node_types"].items()}
    paper = load_config("paper")
    wanted = {
        "render": paper.render.node_resource,
        "preprocess": paper.preprocess.node_resource,
        "train": paper.train.node_resource,
    }
    for stage, resource in wanted.items():
        assert resource, f"{stage} is not pinned to a node type"
        assert [n for n, res in offered.items() if resource in res], f"{stage}: no node type offers {resource!r}"
    assert "GPU" not in offered["render_cpu"] and paper.train.use_gpu and paper.preprocess.device == "cuda"
