"""A real headless browser for tests: Debian's Chromium (``make browser`` installs it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Chromium's options for a closed network, as root, without a display.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]


def chromium() -> str:
    """The browser's path; skips the test where it is absent, except in CI, where that is a failure."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: CI runs `make browser` first")
        pytest.skip("chromium is not installed (make browser)")
    return found


@dataclass
class Page:
    body: dict[str, str]  # the <body> attributes after the load event
    console_errors: list[str]  # uncaught script errors and failed resource loads


def load(page: Path, screenshot: Path | None = None) -> Page:
    """Open ``page`` (a local file) in headless Chromium; the DOM after ``load`` and the console's errors."""
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium(), *FLAGS, f"--user-data-dir={profile}"]
        proc = subprocess.run(
            [*command, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120
        )
        if screenshot is not None:
            subprocess.run(
                [*command, "--window-size=1300,2400", f"--screenshot={screenshot}", page.resolve().as_uri()],
                capture_output=True,
                timeout=120,
            )
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r"<body([^>]*)>", proc.stdout)
    assert match, proc.stdout[:2000]
    body = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))
    errors = [
        ln
        for ln in proc.stderr.splitlines()
        if ":CONSOLE" in ln and ("Uncaught" in ln or "ERR_" in ln or "Failed to load" in ln)
    ]
    return Page(body, errors)
