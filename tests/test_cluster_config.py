"""ray_cluster.yaml passes Ray's own validation and holds every stage of the presets (no AWS call)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.cluster_file import load_cluster_file
from invs.fleet import fleet_workers, load_fleet, per_node, worker_bundle

REPO = Path(__file__).resolve().parent.parent


def test_cluster_yaml_passes_rays_validation() -> None:
    config = load_cluster_file(REPO / "ray_cluster.yaml")
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    # Every worker type advertises a custom resource so stages can target it.
    for name, spec in types.items():
        if name != config["head_node_type"]:
            assert spec["resources"], name


def planner_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.planner", "--check", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


@pytest.mark.parametrize("preset", ["paper", "local"])
def test_every_stage_of_the_presets_can_be_scheduled_on_the_cluster_file(preset: str) -> None:
    proc = planner_check("--config", preset)
    assert proc.returncode == 0, proc.stderr
    assert [line.split(":")[1].strip() for line in proc.stdout.splitlines()] == ["render", "preprocess", "train"]
    assert proc.stderr == ""


def test_the_documented_gpu_rendering_option_can_be_scheduled() -> None:
    proc = planner_check("--set", "render.device=gpu", "--set", "render.node_resource=preprocess_gpu")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            "render:\n  device: gpu\n",
            "error: render: no node type in ray_cluster.yaml can hold one worker ({CPU: 2, "
            "GPU: 1, render_cpu: 0.001}): render_cpu (c6i.8xlarge) has GPU 0 < 1",
        ),
        (
            "preprocess:\n  node_resource: preprocess_tpu\n",
            "error: preprocess: no node type in ray_cluster.yaml can "
            "hold one worker ({CPU: 1, GPU: 1, preprocess_tpu: 0.001}): none offers preprocess_tpu",
        ),
        (
            "train:\n  num_workers: 100\n",
            "error: train: 100 workers of {CPU: 1, GPU: 1, train_a100: 0.001} need more "
            "than the fleet holds (96 on train_a100 x 12)",
        ),
    ],
)
def test_a_broken_preset_fails_with_one_line_naming_the_stage_and_resource(
    tmp_path: Path, settings: str, message: str
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"base: paper\n{settings}")
    proc = planner_check("--config", str(broken))
    assert proc.returncode == 2
    assert proc.stderr.strip() == message


def test_a_cluster_file_ray_rejects_fails_the_check(tmp_path: Path) -> None:
    cluster = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    cluster["available_node_types"]["render_cpu"]["max_workers"] = "many"
    bad = tmp_path / "cluster.yaml"
    bad.write_text(yaml.safe_dump(cluster))
    proc = planner_check("--cluster", str(bad))
    assert proc.returncode == 2 and "Ray's validation failed" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_fleet_capacity_counts_every_node_the_autoscaler_may_start(tmp_path: Path) -> None:
    from invs.config import load_config
    from invs.errors import ConfigError

    fleet = load_fleet(REPO / "ray_cluster.yaml")
    assert fleet.node_types["render_cpu"].resources == {"CPU": 32.0, "render_cpu": 1.0}
    assert fleet.node_types["train_a100"].resources["GPU"] == 8.0 and fleet.node_types["head"].max_workers == 1
    paper = load_config("paper")
    assert fleet_workers(fleet, worker_bundle(paper.render)) == 100 * 32 // 2
    assert fleet_workers(fleet, worker_bundle(paper.train)) == 12 * 8
    assert per_node({"CPU": 3.0}, {"CPU": 8.0}) == 2 and per_node({"GPU": 1.0}, {"CPU": 8.0}) == 0
    custom = tmp_path / "cluster.yaml"
    custom.write_text(
        "head_node_type: h\navailable_node_types:\n  h: {resources: {}, node_config: {InstanceType: x9}}\n"
    )
    with pytest.raises(ConfigError, match="node type 'h': unknown instance type 'x9'; write its resources"):
        load_fleet(custom)


def test_the_paper_preset_holds_out_at_most_two_percent_of_objects() -> None:
    from invs.config import load_config
    from invs.tables import split_for_uid

    fraction = load_config("paper").preprocess.val_fraction
    assert 0 < fraction <= 0.02
    held = sum(split_for_uid(f"{i:032x}", fraction) == "val" for i in range(100_000)) / 100_000
    assert held == pytest.approx(fraction, rel=0.1)  # ~3,200 of 800K objects, the same ones every run
