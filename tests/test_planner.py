"""The cost planner: figures from benchmark JSON (measured, scaled) or stated assumptions; arithmetic that scales."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import planner
from invs.config import load_config
from invs.fleet import load_fleet

REPO = Path(__file__).resolve().parent.parent


def paper_plan(render_nodes: int = 50, **overrides: object) -> tuple[planner.Workload, planner.Plan]:
    config = load_config("paper", overrides or None)
    work = planner.workload_from_config(config)
    return work, planner.plan(config, load_fleet(REPO / "ray_cluster.yaml"), {"render": render_nodes, "preprocess": 16})


def test_paper_plan_prices_the_presets_own_settings_and_every_cost() -> None:
    work, p = paper_plan()
    assert work.objects == planner.OBJAVERSE_OBJECTS and work.views == 24 and work.train_gpus == 96
    assert (work.samples, work.render_device) == (load_config("paper").render.samples, "cpu")
    assert [r["stage"] for r in p.rows] == ["render", "preprocess", "train", "head", "s3"]
    render_fig = p.figures["render_core_s_per_view"]
    assert render_fig.source.startswith(("measured: bench/results/render", "scaled: bench/results/render"))
    assert f"{work.samples}spp" in render_fig.source or f"{work.samples}/" in render_fig.source  # the preset's
    render = p.rows[0]
    expected_h = work.objects * work.views * render_fig.value / 32 / 50 / 3600
    assert render["wall_h"] == pytest.approx(expected_h)
    assert render["dollars"] == pytest.approx(render["node_h"] * 1.36 * planner.SPOT_SHARE)
    assert p.rows[2]["nodes"] == 12  # 96 GPUs on 8-GPU nodes
    head = p.rows[3]
    assert head["wall_h"] == pytest.approx(sum(r["wall_h"] for r in p.rows[:3])) and head["dollars"] > 0
    assert "vae_encode_gpu_images_per_s" in p.figures and p.rows[4]["dollars"] > 0
    table = planner.format_table(p)
    assert "total" in table and "[assumed:" in table and "render_bytes_per_view" in table


def test_more_samples_cost_more_and_gpu_rendering_is_priced_on_gpus() -> None:
    _, base = paper_plan()
    _, more = paper_plan(**{"render.samples": 128})
    assert more.figures["render_core_s_per_view"].value > base.figures["render_core_s_per_view"].value
    _, gpu = paper_plan(**{"render.device": "gpu", "render.node_resource": "preprocess_gpu"})
    assert gpu.rows[0]["node_type"].startswith("gpu_preprocess") and gpu.rows[0]["basis"] == "assumed"


def test_twice_the_nodes_halves_the_wall_time_not_the_cost() -> None:
    one = paper_plan(render_nodes=1)[1].rows[0]
    two = paper_plan(render_nodes=2)[1].rows[0]
    assert two["wall_h"] == pytest.approx(one["wall_h"] / 2) and two["dollars"] == pytest.approx(one["dollars"])


def test_cli_prints_a_table_and_the_budget_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert planner.main(["--objects", "1000", "--train-steps", "2000"]) == 0
    out = capsys.readouterr().out
    assert "1,000 objects" in out and "paper budget 96 A100 x 14 days" in out


def test_a_plan_for_an_unschedulable_preset_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert planner.main(["--set", "render.device=gpu"]) == 2
    assert "error: render: no node type" in capsys.readouterr().err
