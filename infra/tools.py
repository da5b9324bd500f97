"""Locating the command-line tools that Python packages install (``ray``, SeaweedFS's ``weed``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find_binary(name: str, install_hint: str) -> str:
    """Path to ``name``: next to this Python (the virtual environment's bin) first, then on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"the '{name}' command was not found: {install_hint}")
