"""The shared HTTP layer: pacing, stated waits, classification parsers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bulkchange_pipeline.carriers.base import (
    BusinessCarrierError,
    CarrierAccount,
    TransientCarrierError,
)
from bulkchange_pipeline.carriers.http import (
    MALFORMED,
    POOL_CONNECTIONS,
    CarrierHttp,
    default_classify,
    stated_wait_seconds,
)
from bulkchange_pipeline.carriers.jasper import classify_jasper_response
from bulkchange_pipeline.carriers.pacing import RateLimiter
from bulkchange_pipeline.simulators.server import run_app_in_thread

pytestmark = pytest.mark.timeout(60)  # a hung server must not hang CI


def _resp(status: int, body: str = "", headers: dict | None = None) -> httpx.Response:
    return httpx.Response(
        status, content=body.encode(), headers=headers, request=httpx.Request("GET", "http://carrier/x")
    )


def test_stated_wait_from_header_and_body() -> None:
    assert stated_wait_seconds(_resp(429, headers={"Retry-After": "7"}), None) == 7.0
    body = {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 12 seconds."}
    assert stated_wait_seconds(_resp(429), body) == 12.0
    assert stated_wait_seconds(_resp(429), [{"ok": False, "message": "Try again in 3 sec"}]) == 3.0
    assert stated_wait_seconds(_resp(429), {"message": "slow down"}) is None


def test_jasper_classifier_keys_on_error_code() -> None:
    limit = '{"errorMessage":"Rate Limit Exceeded","errorCode":"40000029"}'
    for status in (400, 403, 429):  # Jasper's HTTP status for 40000029 is not documented
        err = classify_jasper_response(_resp(status, limit), httpx.Response(200, content=limit).json())
        assert isinstance(err, TransientCarrierError) and err.over_limit
    err = classify_jasper_response(_resp(401), {"errorMessage": "Invalid credentials", "errorCode": "10000001"})
    assert isinstance(err, BusinessCarrierError) and "credentials" in err.message
    assert err.status == 401 and err.code == "10000001"
    err = classify_jasper_response(_resp(404), {"errorMessage": "nope", "errorCode": "10000003"})
    assert isinstance(err, BusinessCarrierError) and "not found" in err.message
    assert isinstance(classify_jasper_response(_resp(502), None), TransientCarrierError)
    assert isinstance(classify_jasper_response(_resp(200, "{"), MALFORMED), TransientCarrierError)
    assert classify_jasper_response(_resp(200), {"iccid": "1"}) is None


def test_default_classifier() -> None:
    assert isinstance(default_classify(_resp(503), None), TransientCarrierError)
    assert isinstance(default_classify(_resp(422), None), BusinessCarrierError)
    assert default_classify(_resp(201), {"ok": True}) is None


def test_one_parser_through_mock_transport() -> None:
    """Parsing a real httpx round trip (MockTransport only for this parser check)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"message": "Try again in 2 seconds."})

    with httpx.Client(transport=httpx.MockTransport(handler)) as c:
        r = c.get("http://carrier/x")
    err = default_classify(r, r.json())
    assert isinstance(err, TransientCarrierError) and err.retry_after == 2.0


def test_rate_limiter_paces_calls_in_real_time() -> None:
    """On the real clock: the 11th call at 10/s waits for the window (test_pacing.py has the rest)."""

    async def run() -> float:
        limiter = RateLimiter(10)
        start = time.monotonic()
        for _ in range(11):
            await limiter.acquire()
        return time.monotonic() - start

    assert asyncio.run(run()) >= 1.0  # lower bound only: never faster than the rate


def test_retry_honours_the_wait_the_carrier_states() -> None:
    calls: list[float] = []

    async def endpoint(request: Request) -> JSONResponse:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return JSONResponse({"statusCode": 429, "message": "Rate limit is exceeded. Try again in 1 seconds."}, 429)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/v1/thing", endpoint)])
    with run_app_in_thread(app) as handle:
        account = CarrierAccount(
            1, "test", handle.root_url + "/v1", "u", "pw", rate_per_second=0, retry_wait_seconds=0.01
        )
        http = CarrierHttp(account)

        async def run() -> None:
            result = await http.request("GET", "thing")
            assert result.body == {"ok": True} and len(result.log) == 2
            await http.aclose()

        asyncio.run(run())
    assert calls[1] - calls[0] >= 0.95  # the stated 1 s, not the fixed 0.01 s
    assert http.stats.retries == 1 and http.stats.over_limit == 1 and http.stats.calls == 2


def test_transient_errors_stop_after_max_attempts() -> None:
    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"error": "down"}, 503)

    app = Starlette(routes=[Route("/v1/thing", endpoint)])
    with run_app_in_thread(app) as handle:
        account = CarrierAccount(
            1, "test", handle.root_url + "/v1", "u", "pw", rate_per_second=0, max_attempts=4, retry_wait_seconds=0.01
        )
        http = CarrierHttp(account)
        with pytest.raises(TransientCarrierError) as info:
            asyncio.run(http.request("GET", "thing"))
    assert len(info.value.log) == 4 and http.stats.calls == 4 and http.stats.retries == 3


def test_calls_in_flight_reach_the_accounts_concurrency_over_several_small_pools() -> None:
    """20 calls in flight for an account allowing 20: every one used, none more, over at most 20
    connections, though they are spread over several small pools (one httpx pool's CPU per call
    grows with the square of its connections: 64 of them capped a 150 ms carrier at about 90
    calls/s, so an account's connections are split into pools of at most POOL_CONNECTIONS)."""
    in_flight, peak, peers = 0, 0, set()

    async def endpoint(request: Request) -> JSONResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        peers.add(request.client)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/v1/thing", endpoint)])
    with run_app_in_thread(app) as handle:
        account = CarrierAccount(1, "test", handle.root_url + "/v1", "u", "pw", rate_per_second=0, max_concurrency=20)
        http = CarrierHttp(account)

        async def run() -> list[Any]:
            try:
                return await http.map_bounded(range(200), lambda i: http.request("GET", "thing", params={"i": i}))
            finally:
                await http.aclose()

        results = asyncio.run(run())
    assert [r.body for r in results] == [{"ok": True}] * 200
    assert peak == 20 and len(peers) <= 20
    assert POOL_CONNECTIONS < 20  # so the account's calls did go over more than one pool
