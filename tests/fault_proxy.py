"""A TCP proxy on 127.0.0.1 that can cut its connections, for outage tests of a real service (the local S3 server).

Clients talk to :attr:`FaultProxy.url` instead of the service. :meth:`FaultProxy.cut` makes the service look down
the way a restarting server does: open connections are reset and new ones refused (the listening socket closes);
:meth:`FaultProxy.restore` listens again on the same port. Bytes pass through unchanged otherwise.

    with FaultProxy("http://127.0.0.1:8333") as proxy:   # proxy.url: http://127.0.0.1:PORT
        ...
        proxy.cut()
        time.sleep(20)
        proxy.restore()
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import urllib.parse
from typing import Any

HOST = "127.0.0.1"


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``target`` (``http://host:port`` or ``host:port``) until :meth:`cut`."""

    def __init__(self, target: str) -> None:
        parsed = urllib.parse.urlsplit(target if "://" in target else f"tcp://{target}")
        assert parsed.hostname and parsed.port, f"target needs a host and a port: {target!r}"
        self.target = (parsed.hostname, parsed.port)
        self.scheme = parsed.scheme if parsed.scheme != "tcp" else "http"
        self.port = 0
        self.connections = 0  # accepted so far
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    def start(self) -> FaultProxy:
        self._listen()
        return self

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="fault-proxy").start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut() or stop()
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self.connections += 1
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (src, dst):
                self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        with self._lock:
            self._open.discard(s)
        _reset(s)

    def cut(self) -> None:
        """Refuse new connections and reset every open one, until :meth:`restore`."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close alone would not
            listener.close()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for s in sockets:
            _reset(s)

    def restore(self) -> None:
        """Listen again, on the same port."""
        if self._listener is None and not self._stopped:
            self._listen()

    def stop(self) -> None:
        self._stopped = True
        self.cut()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()


def _reset(s: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a dying server's sockets do; a thread blocked on it wakes up."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()
