"""README's commands as written: every script, module, make target and file it names exists, every command line
parses with the command's own parser, every preset and ``--set`` it uses loads, every demo output it reads is one the
demo writes (and none it writes over), and its Layout section names every module. The first-hour path is run for real
by the rehearsal and the demo tests; this keeps the text from drifting away from the code."""

from __future__ import annotations

import argparse
import importlib
import itertools
import re
import shlex
from pathlib import Path

import pytest

from invs.config import load_config

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
PACKAGES = ("invs", "render", "preprocess", "train", "inference", "infra")
#: Flags whose value a command reads (an input) and writes (an output).
INPUT_FLAGS = ("--model", "--data", "--renders", "--image", "--depth")
OUTPUT_FLAGS = ("--out",)


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def commands() -> list[list[str]]:
    """Every command line of the README's bash blocks, continuation lines joined, comments removed."""
    found = []
    for block in bash_blocks():
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#\s|^#", line, maxsplit=1)[0].strip()
            if line:
                found.append(shlex.split(line))
    return found


def python_command(words: list[str]) -> list[str] | None:
    """``[script_or_-m_module, args...]`` of a command that runs project Python, however it is launched."""
    if "--" in words and "python" in words[words.index("--") :]:  # ray job submit ... -- python X
        words = words[words.index("--") + 1 :]
    if words[:2] == ["ray", "submit"]:
        return words[3:]
    if words and words[0] in ("python", "python3", ".venv/bin/python"):
        return words[1:]
    return None


def module_of(target: list[str]) -> tuple[str, list[str]]:
    if target[0] == "-m":
        return target[1], target[2:]
    return target[0].removesuffix(".py").replace("/", "."), target[1:]


class Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        self.namespace = namespace


def parse_only(monkeypatch: pytest.MonkeyPatch, module: str, argv: list[str]) -> argparse.Namespace | None:
    """The namespace the command's own ``main`` parses from ``argv``, stopping right after parsing; None for a
    module without ``main``."""
    real = argparse.ArgumentParser.parse_args

    def parse_and_stop(self: argparse.ArgumentParser, args: list[str] | None = None, namespace: object = None) -> None:
        raise Parsed(real(self, args, namespace))

    main = getattr(importlib.import_module(module), "main", None)
    if main is None:
        return None
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    try:
        main(argv)
    except Parsed as parsed:
        return parsed.namespace
    finally:
        monkeypatch.undo()
    raise AssertionError(f"{module}.main returned without parsing its arguments")


PYTHON = [c for c in commands() if python_command(c)]


def test_the_readme_has_commands_to_check() -> None:
    assert len(PYTHON) >= 20 and any(c[0] == "make" for c in commands())


@pytest.mark.parametrize("words", PYTHON, ids=lambda c: " ".join(c)[:80])
def test_every_python_command_exists_and_parses(words: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    target = python_command(words)
    module, argv = module_of(target)
    path = REPO / (module.replace(".", "/") + ".py")
    assert path.is_file(), f"{' '.join(words)}: no {path.relative_to(REPO)}"
    try:
        namespace = parse_only(monkeypatch, module, argv)
    except SystemExit as exc:
        if exc.code == 0 and "--help" in argv:
            return
        pytest.fail(f"{' '.join(words)}: its parser refuses these arguments (exit {exc.code})")
    if namespace is not None and hasattr(namespace, "overrides"):
        load_config(getattr(namespace, "config", "local") or "local", namespace.overrides or None)


def test_make_targets_and_named_files_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    for words in commands():
        if words[0] == "make":
            assert re.search(rf"^{re.escape(words[1])}:", makefile, flags=re.M), f"no make target {words[1]}"
        if words[0] == "bash":
            assert (REPO / words[1]).is_file(), words
        if words[:1] == ["ray"] and "ray_cluster.yaml" in words:
            assert (REPO / "ray_cluster.yaml").is_file()
    for name in re.findall(r"\]\(((?:docs|bench|tests|configs)/[^)]+)\)", README):
        assert (REPO / name).exists(), f"README links {name}, which does not exist"


def demo_outputs() -> list[str]:
    """What ``make demo`` writes, relative to the repository."""
    from infra.run_all import EVAL_PAIRS  # noqa: F401  (the demo's evaluation exists)

    config = load_config("local")
    roots = [config.render.out, config.preprocess.out, config.train.out]
    out = str(Path(config.render.out).parent)
    named = [f"{out}/{name}" for name in ("eval", "eval_train", "renders.png", "pairs.png", "cameras.png")]
    return [str(Path(p).relative_to(REPO)) for p in [*roots, *named]]


def test_demo_paths_the_readme_reads_are_written_by_the_demo_and_none_overwritten() -> None:
    written = demo_outputs()
    for words in PYTHON:
        for flag, value in itertools.pairwise(words):
            if not value.startswith("out/local/"):
                continue
            inside = any(value == w or value.startswith(w + "/") for w in written)
            if flag in INPUT_FLAGS:
                assert inside, f"{' '.join(words)}: {value} is not something the demo writes ({written})"
            if flag in OUTPUT_FLAGS:
                assert not inside, f"{' '.join(words)}: --out {value} would overwrite the demo's output"


def test_the_layout_names_every_module_and_docs() -> None:
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = [
        f"{package}/{module.name}"
        for package in PACKAGES
        for module in sorted((REPO / package).glob("*.py"))
        if module.name != "__init__.py" and module.name not in layout
    ]
    assert not missing, f"README's Layout does not name {missing}"
    assert "docs/" in layout
