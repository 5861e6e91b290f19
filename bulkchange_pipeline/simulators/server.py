"""Run any simulator's ASGI app with uvicorn in a background thread, on a port chosen by the OS.

Tests and benchmarks need a real HTTP server they can start in-process and stop cleanly; binding
the socket ourselves before uvicorn starts means the port is known (and free) immediately.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn


class ServerHandle:
    """A running server: `root_url` (scheme://host:port), `base_url` (root + API prefix),
    `.stop()`; usable as a context manager."""

    def __init__(
        self,
        server: uvicorn.Server,
        thread: threading.Thread,
        root_url: str,
        api_prefix: str = "",
        app_state: Any = None,
    ) -> None:
        self._server = server
        self._thread = thread
        self.root_url = root_url
        self.base_url = root_url + api_prefix
        self.simulator = app_state
        self.port = int(root_url.rsplit(":", 1)[1])

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """Quiet, fast settings: no access log (a 100,000-call benchmark runs against it), no
    lifespan, and a short graceful shutdown so held (timeout-fault) answers do not block exit."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        timeout_keep_alive=30,
    )


def run_app_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    api_prefix: str = "",
    app_state: Any = None,
    start_timeout: float = 10.0,
) -> ServerHandle:
    """Start `app` on host:port (0 = a free port) in a daemon thread; returns once it accepts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    actual_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, host, actual_port))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not main thread
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"simulator-{actual_port}"
    )
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"simulator did not start on {host}:{actual_port}")
        time.sleep(0.01)
    return ServerHandle(server, thread, f"http://{host}:{actual_port}", api_prefix, app_state)
