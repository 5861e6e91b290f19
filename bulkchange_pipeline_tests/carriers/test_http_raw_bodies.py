"""`CarrierHttp` for a protocol whose bodies are not JSON (what the SOAP client needs, with no SOAP
knowledge in the HTTP layer): raw bytes with the caller's headers, a body built anew per attempt,
the client's own body parser handed to the classifier, a single try numbered by a caller that
drives its retries, and the same redacted capture. Against a real loopback server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bulkchange_pipeline.carriers.base import CarrierAccount, CarrierError, TransientCarrierError
from bulkchange_pipeline.carriers.http import CarrierHttp
from bulkchange_pipeline.simulators.server import ServerHandle, run_app_in_thread

pytestmark = pytest.mark.timeout(60)


class Echo:
    """Answers 503 to the first `fail_first` posts, then 200 with `<ok n="..."/>`; keeps what it got."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.seen: list[tuple[dict[str, str], bytes]] = []

    async def post(self, request: Request) -> Response:
        self.seen.append((dict(request.headers), await request.body()))
        if len(self.seen) <= self.fail_first:
            return Response(b"<busy/>", 503, media_type="text/xml")
        return Response(f'<ok n="{len(self.seen)}"/>'.encode(), 200, media_type="text/xml")


def _serve(echo: Echo) -> ServerHandle:
    return run_app_in_thread(Starlette(routes=[Route("/svc", echo.post, methods=["POST"])]))


def _http(handle: ServerHandle, **kw: Any) -> CarrierHttp:
    account = CarrierAccount(
        service_provider_id=1,
        integration="jasper",
        base_url=handle.root_url,
        username="ops",
        secret="pw-SECRET-1",
        rate_per_second=0,
        max_attempts=3,
        retry_wait_seconds=0.01,
    )

    def parse(response: httpx.Response) -> Any:
        return ("parsed", response.text)

    def classify(response: httpx.Response, body: Any) -> CarrierError | None:
        assert body == ("parsed", response.text)  # the classifier gets what the parser made
        return TransientCarrierError("busy", status=503) if response.status_code == 503 else None

    return CarrierHttp(account, classify=classify, parse=parse, accept="text/xml", **kw)


def test_raw_bytes_go_out_with_the_callers_headers_and_a_body_per_attempt() -> None:
    echo = Echo(fail_first=2)
    with _serve(echo) as handle:
        http = _http(handle, redact=["LK-42"])

        async def go() -> Any:
            try:
                return await http.request(
                    "POST",
                    "svc",
                    content=lambda n: f"<m try='{n}'><licenseKey>LK-42</licenseKey><p>pw-SECRET-1</p></m>".encode(),
                    headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"urn:op"'},
                    description="raw call",
                )
            finally:
                await http.aclose()

        result = asyncio.run(go())
    assert result.body == ("parsed", '<ok n="3"/>')
    assert [body for _, body in echo.seen] == [
        f"<m try='{n}'><licenseKey>LK-42</licenseKey><p>pw-SECRET-1</p></m>".encode() for n in (1, 2, 3)
    ]
    headers = echo.seen[0][0]
    assert headers["content-type"] == "text/xml; charset=utf-8" and headers["soapaction"] == '"urn:op"'
    assert headers["accept"] == "text/xml"
    assert [e.attempt for e in result.log] == [1, 2, 3] and [e.has_errors for e in result.log] == [True, True, False]
    assert result.log[1].description == "raw call (attempt 2)"
    for entry in result.log:  # the bytes are logged as text, secrets masked
        assert "<licenseKey>***</licenseKey><p>***</p>" in entry.request_text
        assert "LK-42" not in entry.request_text and "pw-SECRET-1" not in entry.request_text


def test_one_numbered_try_for_a_caller_that_drives_its_retries() -> None:
    echo = Echo(fail_first=1)
    with _serve(echo) as handle:
        http = _http(handle)

        async def go() -> tuple[TransientCarrierError, Any]:
            try:
                with pytest.raises(TransientCarrierError) as failed:
                    await http.request("POST", "svc", content=b"<a/>", attempt=1, description="once")
                ok = await http.request("POST", "svc", content=b"<a/>", attempt=2, description="once")
                return failed.value, ok
            finally:
                await http.aclose()

        failed, ok = asyncio.run(go())
    assert len(echo.seen) == 2  # no retry inside either call
    assert [(e.attempt, e.has_errors) for e in failed.log] == [(1, True)]
    assert [(e.attempt, e.description) for e in ok.log] == [(2, "once (attempt 2)")]
    assert http.stats.calls == 2


def test_json_and_content_together_are_refused() -> None:
    echo = Echo()
    with _serve(echo) as handle:
        http = _http(handle)
        with pytest.raises(ValueError, match="json_body or content"):
            asyncio.run(http.request("POST", "svc", json_body={"a": 1}, content=b"x"))
    assert echo.seen == []
