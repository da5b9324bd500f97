"""A threaded HTTP server on 127.0.0.1 serving a directory, told to fail chosen requests: a stand-in for Hugging Face,
Thingiverse or any download source in tests that must not reach the internet.

    with serve(folder) as mirror:            # mirror.url: http://127.0.0.1:PORT/
        with mirror.failing("/a/b.glb", "503", "reset"):
            ...                               # the next two GETs of /a/b.glb fail, then it is served
        mirror.count("/a/b.glb")              # GET requests for it so far
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the directory; a path with planned failures first answers with those, one per request: an HTTP status
    (``503``, ``429``), ``reset`` (the connection closes without an answer) or ``stall`` (no answer for a second,
    longer than the tests' timeout, then the connection closes)."""

    def do_GET(self) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.requests.append(self.path)  # type: ignore[attr-defined]
            planned = self.server.failures.get(self.path)  # type: ignore[attr-defined]
            action = planned.pop(0) if planned else None
        if action is None:
            super().do_GET()
        elif action in ("reset", "stall"):
            if action == "stall":
                time.sleep(1.0)
            self.close_connection = True
        else:
            self.send_error(int(action), "planned failure")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class HTTPMirror:
    """A running server: its base URL and request log."""

    url: str
    server: http.server.ThreadingHTTPServer

    def requests(self) -> list[str]:
        """Paths of the GET requests so far (in order)."""
        with self.server.lock:  # type: ignore[attr-defined]
            return list(self.server.requests)  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def failing(self, path: str, *actions: str) -> Iterator[None]:
        """The next requests for ``path`` (``/...``) fail as ``actions`` say (see :class:`_Handler`)."""
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.failures[path] = list(actions)  # type: ignore[attr-defined]
        try:
            yield
        finally:
            with self.server.lock:  # type: ignore[attr-defined]
                self.server.failures.pop(path, None)  # type: ignore[attr-defined]

    def count(self, path: str) -> int:
        """GET requests for ``path`` so far."""
        return self.requests().count(path)


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[HTTPMirror]:
    """Serve ``directory`` on 127.0.0.1 (a free port) for the block."""
    handler = functools.partial(_Handler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.requests = []  # type: ignore[attr-defined]
    server.failures = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="http-mirror", daemon=True)
    thread.start()
    try:
        yield HTTPMirror(f"http://127.0.0.1:{server.server_port}/", server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
