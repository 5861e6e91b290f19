"""Serve a simulator behind an ASGI wrapper that keeps every request it receives.

The client under test talks HTTP to the real simulator; the wrapper only copies what went over
the wire (method, path, query, headers, body) so a test can hold it against the carrier's public
description field by field (`contract.Operation.request_errors`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from bulkchange_pipeline.simulators.server import ServerHandle, run_app_in_thread

__all__ = ["Recorded", "RecordingApp", "serve_recorded"]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_body: bytes
    status: int = 0

    @property
    def body(self) -> Any:
        """The JSON body, or None when there is none (or it is not JSON)."""
        if not self.raw_body:
            return None
        try:
            return json.loads(self.raw_body)
        except ValueError:
            return None


@dataclass
class RecordingApp:
    """ASGI middleware: records each HTTP request (and the status answered), then passes it on."""

    app: Any
    requests: list[Recorded] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        record = Recorded(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            raw_body=body,
        )
        self.requests.append(record)
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        await self.app(scope, replay, capture)

    def calls(self, method: str | None = None, path_contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method.upper()) and path_contains in r.path]


@contextmanager
def serve_recorded(simulator: Any) -> Iterator[tuple[ServerHandle, RecordingApp]]:
    """Run `simulator` (a simulators.base simulator with `.app` and `API_PREFIX`) on a free port
    behind a `RecordingApp`; yields the handle and the recorder."""
    recorder = RecordingApp(simulator.app)
    handle = run_app_in_thread(recorder, api_prefix=simulator.API_PREFIX, app_state=simulator)
    try:
        yield handle, recorder
    finally:
        handle.stop()
