"""The earlier path of ``inference/evaluate.py`` (using a model lives in ``inference/`` now); runs it unchanged."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.evaluate import main
from invs import cli

__all__ = ["main"]

if __name__ == "__main__":
    cli.exit_with(main)
