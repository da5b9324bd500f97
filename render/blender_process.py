"""Host side of the long-lived Blender process: start it once, send it objects, survive its failures.

One :class:`BlenderProcess` per render worker keeps a single Blender (``python -m render.blender_worker``)
alive across many objects, so Blender starts once, not once per object. For every object it enforces a
timeout and a memory ceiling (resident set size, polled); a crash, hang or blow-up kills only that process,
the object gets a failed result carrying the real tail of Blender's output, and the next object starts a
fresh process. Blender's stdout/stderr go to a log file, never to DEVNULL.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from render.request import RenderRequest

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0


class BlenderError(Exception):
    """The Blender process died, hung or ran out of memory; the message is the reason for the manifest."""


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MiB (0 if it is gone)."""
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024.0
    return total


class BlenderProcess:
    """A Blender worker process that renders one object per :meth:`render` call.

    ``threads`` caps Blender's render threads (0: all cores). ``max_memory_mb`` kills the process when its
    resident memory exceeds the ceiling (None: no ceiling). ``log_dir`` holds each process's output log.
    """

    def __init__(self, threads: int = 0, max_memory_mb: float | None = None, log_dir: str | None = None) -> None:
        self.threads = threads
        self.max_memory_mb = max_memory_mb
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="invs-blender-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._responses: Any = None
        self._buffer = b""
        self._log_path: Path | None = None
        self.starts = 0
        self.blender_version: str | None = None

    # -------------------------------------------------------------------------------------------- lifecycle

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The Blender process's id while it runs."""
        return self._proc.pid if self.alive and self._proc is not None else None

    def start(self) -> None:
        """Start Blender and wait for it to report ready."""
        self.close()
        read_fd, write_fd = os.pipe()
        self.starts += 1
        self._log_path = self.log_dir / f"blender-{os.getpid()}-{self.starts}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        with open(self._log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-u", "-m", "render.blender_worker", "--response-fd", str(write_fd)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                cwd=REPO_ROOT,
                env=env,
                start_new_session=True,
            )
        os.close(write_fd)
        self._responses = read_fd
        self._buffer = b""
        ready = self._read_response(START_TIMEOUT_S, what="start-up")
        if not ready.get("ready"):
            raise BlenderError(f"Blender did not start: {ready}")
        self.blender_version = ready.get("blender_version")

    def close(self) -> None:
        """Ask Blender to quit; kill it if it does not."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert proc.stdin is not None
                proc.stdin.write(b'{"cmd": "quit"}\n')
                proc.stdin.flush()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill()
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if self._responses is not None:
            with contextlib.suppress(OSError):
                os.close(self._responses)
        self._proc = None
        self._responses = None

    def _kill(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)

    def __enter__(self) -> BlenderProcess:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # -------------------------------------------------------------------------------------------- requests

    def log_tail(self, since: int = 0, max_lines: int = 25) -> str:
        """The last lines Blender printed since byte offset ``since`` of its log."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        with open(self._log_path, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return "\n".join(lines[-max_lines:])

    def _log_size(self) -> int:
        return self._log_path.stat().st_size if self._log_path and self._log_path.exists() else 0

    def _read_response(self, timeout_s: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise BlenderError(f"Blender timed out after {timeout_s:.0f} s during {what}")
            ready, _, _ = select.select([self._responses], [], [], min(0.5, remaining))
            if ready:
                chunk = os.read(self._responses, 1 << 16)
                if not chunk:
                    code = self._proc.wait(timeout=10) if self._proc else None
                    raise BlenderError(f"Blender exited with {_describe_exit(code)} during {what}")
                self._buffer += chunk
            elif self.max_memory_mb is not None and self._proc is not None:
                rss = _rss_mb(self._proc.pid)
                if rss > self.max_memory_mb:
                    self._kill()
                    raise BlenderError(
                        f"Blender used {rss:.0f} MiB, over the {self.max_memory_mb:.0f} MiB limit, during {what}"
                    )
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request and wait for its answer; BlenderError (with Blender's output) if the process fails."""
        if not self.alive:
            self.start()
        assert self._proc is not None and self._proc.stdin is not None
        since = self._log_size()
        try:
            self._proc.stdin.write((json.dumps(message) + "\n").encode())
            self._proc.stdin.flush()
            return self._read_response(timeout_s, what="this object")
        except (BlenderError, BrokenPipeError) as exc:
            self._kill()
            reason = str(exc) if isinstance(exc, BlenderError) else "Blender's input pipe broke (process died)"
            tail = self.log_tail(since)
            raise BlenderError(f"{reason}; last output:\n{tail}" if tail else reason) from None

    def render(self, request: RenderRequest, timeout_s: float) -> dict[str, Any]:
        """Render one object (:func:`render.blender_worker.render_object`); its answer."""
        return self.request(request.message(), timeout_s)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
