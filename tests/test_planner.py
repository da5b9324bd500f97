"""The cost planner: figures from the benchmark JSON (measured) or stated assumptions, and arithmetic that scales."""

from __future__ import annotations

import pytest

from infra import planner


def test_paper_plan_uses_measured_cpu_figures_and_states_assumed_gpu_ones() -> None:
    work = planner.workload_from_config("paper")
    assert work.objects == planner.OBJAVERSE_OBJECTS and work.views == 24 and work.train_gpus == 96
    p = planner.plan(work, {"render_cpu": 50, "gpu_preprocess": 20})
    assert [r["stage"] for r in p.rows] == ["render", "preprocess", "train"]
    assert p.figures["render_core_s_per_view"].source.startswith("measured: bench/results/render.json (512 px")
    assert p.figures["train_samples_per_s_per_gpu_latents"].source.startswith(("assumed", "measured"))
    render = p.rows[0]
    expected_h = work.objects * work.views * p.figures["render_core_s_per_view"].value / 32 / 50 / 3600
    assert render["wall_h"] == pytest.approx(expected_h)
    assert render["dollars"] == pytest.approx(render["node_h"] * planner.NODE_TYPES["render_cpu"].dollars_per_hour)
    assert p.rows[2]["nodes"] == 12  # 96 GPUs on 8-GPU nodes
    table = planner.format_table(p)
    assert "total" in table and "[measured: bench/results/render.json" in table and "[assumed:" in table


def test_twice_the_nodes_halves_the_wall_time_not_the_cost() -> None:
    work = planner.workload_from_config("local")
    one = planner.plan(work, {"render_cpu": 1, "gpu_preprocess": 1}).rows[0]
    two = planner.plan(work, {"render_cpu": 2, "gpu_preprocess": 1}).rows[0]
    assert two["wall_h"] == pytest.approx(one["wall_h"] / 2) and two["dollars"] == pytest.approx(one["dollars"])


def test_cli_prints_a_table_and_the_budget_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert planner.main(["--objects", "1000", "--train-steps", "2000"]) == 0
    out = capsys.readouterr().out
    assert "1,000 objects" in out and "paper budget 96 A100 x 14 days" in out
