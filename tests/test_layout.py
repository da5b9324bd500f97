"""The layout is the architecture: the shared core (invs/) never imports a stage; stages meet only through it, except
that training imports the model it trains (the pipeline and its conditioning, in inference/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGES = ("render", "preprocess", "train", "inference")
#: The one dependency between stages: training builds, validates and exports the model that inference/ defines.
ALLOWED = {"train": {"inference"}}


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports anywhere (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("module", sorted((REPO / "invs").glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_stage(module: Path) -> None:
    assert not imported_packages(module) & set(STAGES), f"{module.name} imports a stage"


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_other_stage(stage: str) -> None:
    others = set(STAGES) - {stage} - ALLOWED.get(stage, set())
    for module in sorted((REPO / stage).glob("*.py")):
        assert not imported_packages(module) & others, f"{stage}/{module.name} imports another stage"


@pytest.mark.parametrize("package", ["invs", *STAGES, "infra"])
def test_no_production_module_writes_tar_files_by_hand(package: str) -> None:
    """Shards are written with webdataset's TarWriter (invs.shards), never member by member with tarfile."""
    for module in sorted((REPO / package).glob("*.py")):
        text = module.read_text()
        assert "TarInfo(" not in text and ".addfile(" not in text, f"{package}/{module.name} writes tar members"


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the modules a module imports from (``from a.b import c`` -> ``a.b``), anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("user", ["preprocess/object_pairs.py", "inference/infer.py", "inference/protocol.py"])
def test_training_pairs_and_inference_share_one_geometry(user: str) -> None:
    """Depth, splatting, partial views and masks live in the core; the preprocess stage, the evaluation protocol and
    inference build their pairs with its one pair builder and never call the partial view themselves."""
    imported = imported_modules(REPO / user)
    assert "invs.pair_builder" in imported and "invs.partial_view" not in imported
    assert "invs.depth" in imported
    defined = {
        node.name
        for stage in STAGES
        for module in (REPO / stage).glob("*.py")
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.FunctionDef)
    }
    assert not defined & {"partial_view", "softmax_splat", "occlusion_region", "soft_mask", "align_to_distance"}


#: The longest function a reader should have to hold, in lines (docstring included).
LONGEST_FUNCTION = 80


@pytest.mark.parametrize("package", ["invs", *STAGES, "infra"])
def test_functions_a_reader_can_hold(package: str) -> None:
    """Long functions are split along their sections: none in the product is over :data:`LONGEST_FUNCTION` lines."""
    long = [
        f"{package}/{module.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for module in sorted((REPO / package).glob("*.py"))
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > LONGEST_FUNCTION
    ]
    assert not long, long
