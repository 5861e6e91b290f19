"""A real webhook receiver on loopback for the tests: answers each request as its script says
(a status code, or "sleep": never answer until the test ends) and records what it received."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

__all__ = ["Received", "Receiver", "run_receiver"]


@dataclass
class Received:
    at: float  # time.monotonic() when the request arrived
    path: str
    headers: dict[str, str]
    body: bytes

    def verify(self, secret: str) -> dict:
        """The body, verified with the Standard Webhooks library as any receiver would."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    url: str
    script: list[int | str] = field(default_factory=list)  # per request; the last repeats
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_action(self) -> int | str:
        with self.lock:
            index = min(len(self.received) - 1, len(self.script) - 1)
            return self.script[index] if self.script else 200


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            with receiver.lock:
                receiver.received.append(
                    Received(time.monotonic(), self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
            action = receiver.next_action()
            if action == "sleep":
                receiver.release.wait(60)
                return
            self.send_response(int(action))
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    return Handler


@contextmanager
def run_receiver(script: list[int | str] | None = None, path: str = "/hooks/bulk") -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 (a free port); stops (releasing any sleeper) when the block ends."""
    receiver = Receiver(url="", script=list(script or [200]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
