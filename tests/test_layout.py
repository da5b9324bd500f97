"""The layout is the architecture: the shared core (invs/) never imports a stage; stages meet only through it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGES = ("render", "preprocess", "train")


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
    others = set(STAGES) - {stage}
    for module in sorted((REPO / stage).glob("*.py")):
        assert not imported_packages(module) & others, f"{stage}/{module.name} imports another stage"


@pytest.mark.parametrize("package", ["invs", *STAGES, "infra"])
def test_no_production_module_writes_tar_files_by_hand(package: str) -> None:
    """Shards are written with webdataset's TarWriter (invs.shards), never member by member with tarfile."""
    for module in sorted((REPO / package).glob("*.py")):
        text = module.read_text()
        assert "TarInfo(" not in text and ".addfile(" not in text, f"{package}/{module.name} writes tar members"
