"""The HTTP layer every carrier client shares: the account's connections (a few small pools), its
rate and concurrency limits (pacing by `pacing.RateLimiter`, and `CarrierHttp.map_bounded` for the
per-device work), tenacity retries at a fixed interval that honour a wait the carrier states
(`CarrierHttp.retrying`), error classification through a per-carrier callback, and redacted capture
of every exchange for the audit log.

Carriers differ in auth, paths and error bodies, but not in how a call must be paced, retried and
recorded; keeping that here means each carrier module is only its wire format.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from .base import (
    BusinessCarrierError,
    CarrierAccount,
    CarrierError,
    LogEntry,
    TransientCarrierError,
)
from .pacing import account_limiter
from .redaction import basic_token, redact_headers, redact_text

__all__ = [
    "MALFORMED",
    "POOL_CONNECTIONS",
    "BodyParser",
    "CallResult",
    "CarrierHttp",
    "Classifier",
    "Content",
    "HttpStats",
    "default_classify",
    "shared_tls_context",
    "stated_wait_seconds",
]

_T = TypeVar("_T")
_R = TypeVar("_R")

MALFORMED = object()
"""Sentinel body: the response had content its parser could not read (not valid JSON for the
default parser; not well-formed XML for an XML protocol's parser, e.g. Jasper SOAP's)."""

Classifier = Callable[[httpx.Response, Any], CarrierError | None]
"""Turns a response and its parsed body into None (success) or the error to raise."""

BodyParser = Callable[[httpx.Response], Any]
"""Turns a response into the body its classifier and caller read (default: JSON; None when empty, MALFORMED when not JSON)."""

Content = str | bytes | Callable[[int], str | bytes]
"""A request body: fixed, or built anew for each attempt (called with the attempt number, 1 first),
for a protocol whose message must differ per try (a fresh nonce or timestamp)."""

MAX_STATED_WAIT_SECONDS = 60.0
POOL_CONNECTIONS = 4  # connections per httpx client at most (`CarrierHttp._ensure_clients` says why)
_TRY_AGAIN = re.compile(r"try again in\s+(\d+(?:\.\d+)?)\s*(?:s\b|sec|second)", re.IGNORECASE)


@dataclass
class HttpStats:
    """Counters for benchmarks and run summaries."""

    calls: int = 0
    retries: int = 0
    over_limit: int = 0
    transient_errors: int = 0
    business_errors: int = 0
    timeouts: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def stated_wait_seconds(response: httpx.Response, body: Any) -> float | None:
    """The wait a carrier asks for: a Retry-After header (seconds or HTTP date), or a number of
    seconds in the body's message ("Try again in N seconds", as Rev.io/Azure APIM send)."""
    header = response.headers.get("retry-after")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(header) if header else None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    texts: list[str] = []
    if isinstance(body, dict):
        texts += [str(v) for k, v in body.items() if isinstance(v, str)]
    elif isinstance(body, list):
        texts += [str(v) for item in body if isinstance(item, dict) for v in item.values()]
    elif body is MALFORMED or body is None:
        texts.append(response.text[:500])
    for text in texts:
        match = _TRY_AGAIN.search(text)
        if match:
            return float(match.group(1))
    return None


def default_classify(response: httpx.Response, body: Any) -> CarrierError | None:
    """Generic rules: 2xx ok unless the body is malformed; 429 and 5xx transient; other 4xx
    business."""
    status = response.status_code
    if 200 <= status < 300:
        if body is MALFORMED:
            return TransientCarrierError("malformed response body", status=status)
        return None
    message = response.text[:300] or response.reason_phrase
    if status == 429:
        return TransientCarrierError(
            message,
            status=status,
            retry_after=stated_wait_seconds(response, body),
            over_limit=True,
        )
    if status >= 500:
        return TransientCarrierError(message, status=status)
    return BusinessCarrierError(message, status=status)


class _CarrierWait:
    """tenacity wait hook: the carrier's stated wait when the last error carried one, else the
    fixed interval of DESIGN R8 ("HTTP 3 retries at fixed intervals")."""

    def __init__(self, fixed_seconds: float, max_stated: float = MAX_STATED_WAIT_SECONDS) -> None:
        self.fixed_seconds = fixed_seconds
        self.max_stated = max_stated

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        stated = exc.retry_after if isinstance(exc, TransientCarrierError) else None
        if stated is not None:
            return min(max(stated, 0.0), self.max_stated)
        return self.fixed_seconds


@dataclass
class CallResult:
    """A successful call: the response, its parsed body (JSON unless the client gave another
    parser), and the log of every attempt."""

    response: httpx.Response
    body: Any
    log: list[LogEntry]


class CarrierHttp:
    """One account's HTTP access: its AsyncClients (`_ensure_clients`), limiter and semaphore,
    retries, capture.

    The clients, limiter and semaphore are bound to the event loop they were created in; if the
    adapter is reused from a new loop (the engine may run one `asyncio.run` per batch), they are
    rebuilt lazily instead of failing with "attached to a different loop".

    `unlimited_workers` is how many devices `map_bounded` works on at once when the account sets
    no concurrency limit (`max_concurrency <= 0`); each carrier client chooses its own.

    `parse` and `accept` are for a protocol whose bodies are not JSON (Jasper's SOAP service): its
    client hands over how a response is read (the classifier and the caller get what `parse`
    returns) and the media type it accepts; pacing, retries and capture stay this one copy.
    """

    def __init__(
        self,
        account: CarrierAccount,
        auth: httpx.Auth | Mapping[str, str] | None = None,
        *,
        classify: Classifier = default_classify,
        redact: Iterable[str] = (),
        label: str | None = None,
        unlimited_workers: int = 64,
        parse: BodyParser | None = None,
        accept: str = "application/json",
    ) -> None:
        self.account = account
        self._parse = parse or _parse_body
        self.unlimited_workers = unlimited_workers
        self._auth = auth if isinstance(auth, httpx.Auth) else None
        self._headers = {"Accept": accept}
        if isinstance(auth, Mapping):
            self._headers.update(auth)
        self._classify = classify
        self._secrets = [account.secret, basic_token(account.username, account.secret), *redact]
        self.label = label or account.integration
        self.stats = HttpStats()
        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, account.max_attempts)),
            wait=_CarrierWait(account.retry_wait_seconds),
            retry=retry_if_exception_type(TransientCarrierError),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: list[httpx.AsyncClient] = []
        self._in_flight: list[int] = []  # requests in flight per client, to pick the least busy
        self._semaphore: asyncio.Semaphore | None = None
        self.limiter = account_limiter(account)

    # -- loop-bound state -------------------------------------------------------------------------

    def _ensure_clients(self) -> list[httpx.AsyncClient]:
        """This loop's connection pools: ``ceil(limit / POOL_CONNECTIONS)`` clients sharing the
        account's connections (``limit``: its concurrency, or 100 when it sets none).

        Several small pools, not one large one: httpcore's pool re-checks every one of its
        connections (and polls each idle socket) whenever a request starts or ends, with a scan
        inside the scan, so its CPU per call grows with the square of its size. One pool of 64
        connections cost 12 ms of CPU per call and capped a 150 ms carrier at about 90 calls/s
        (bench/RESULTS.md, P1 at latency); pools of at most four keep it small."""
        loop = asyncio.get_running_loop()
        if not self._clients or self._loop is not loop:
            conc = self.account.max_concurrency
            limit = conc if conc > 0 else 100
            count = math.ceil(limit / POOL_CONNECTIONS)
            per_pool = math.ceil(limit / count)
            limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
            self._clients = [
                httpx.AsyncClient(
                    base_url=self.account.base_url.rstrip("/") + "/",
                    auth=self._auth,
                    headers=self._headers,
                    timeout=httpx.Timeout(self.account.timeout_seconds),
                    limits=limits,
                    verify=shared_tls_context(),
                )
                for _ in range(count)
            ]
            self._in_flight = [0] * count
            self._semaphore = asyncio.Semaphore(conc) if conc > 0 else None
            self._loop = loop
        return self._clients

    async def aclose(self) -> None:
        """Close the connection pools (only possible from the loop that owns them)."""
        clients, self._clients = self._clients, []
        for client in clients:
            try:
                await client.aclose()
            except RuntimeError:
                pass  # owned by a loop that is gone; its sockets went with it

    # -- calls ------------------------------------------------------------------------------------

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        self.stats.retries += 1

    def retrying(self) -> AsyncRetrying:
        """A fresh copy of this account's retry policy (attempts, stated-or-fixed wait, retry on
        TransientCarrierError, retries counted in `stats`), for a caller that must drive the
        attempts itself: Rev.io looks for what a lost create made before re-sending it."""
        return self._retrying.copy()

    async def map_bounded(self, items: Sequence[_T], fn: Callable[[_T], Awaitable[_R]]) -> list[_R]:
        """`fn` over `items` with as many at once as the account may use (`unlimited_workers` when
        it sets no limit); results in item order. A fixed pool of workers, so a large batch never
        creates one waiting task per device, and a device's own steps stay in order inside `fn`."""
        results: dict[int, _R] = {}
        queue = iter(enumerate(items))

        async def worker() -> None:
            for index, item in queue:
                results[index] = await fn(item)

        conc = self.account.max_concurrency
        await asyncio.gather(*(worker() for _ in range(min(len(items), conc if conc > 0 else self.unlimited_workers))))
        return [results[index] for index in range(len(items))]

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: Content | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        description: str = "",
        attempt: int | None = None,
    ) -> CallResult:
        """Send one logical request with retries; return the successful result or raise the
        classified CarrierError carrying the log of every attempt.

        The body is `json_body` (sent as JSON) or `content` as given (text, bytes, or a function
        building it per attempt), with `headers` added to the request (e.g. a Content-Type and a
        SOAPAction for an XML protocol).

        `attempt`: send only this one try, logged as try number `attempt`, for a caller that drives
        the tries itself under `retrying()` (to look at the carrier before re-sending a request whose
        outcome is unknown). It shares this account's client, limiter and concurrency like any call."""
        if json_body is not None and content is not None:
            raise ValueError("give json_body or content, not both")
        log: list[LogEntry] = []
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":"))
            headers = {"Content-Type": "application/json", **(headers or {})}
        if attempt is not None:
            body = content(attempt) if callable(content) else content
            try:
                return await self._attempt(method, path, body, headers, params, description, log, attempt)
            except CarrierError as exc:
                exc.log = log
                raise
        try:
            async for tried in self.retrying():
                with tried:
                    number = len(log) + 1
                    body = content(number) if callable(content) else content
                    return await self._attempt(method, path, body, headers, params, description, log, number)
        except CarrierError as exc:
            exc.log = log
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self,
        method: str,
        path: str,
        content: str | bytes | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, Any] | None,
        description: str,
        log: list[LogEntry],
        attempt: int,
    ) -> CallResult:
        clients = self._ensure_clients()
        # The least busy pool: under the account's semaphore one always has a free connection.
        pool = min(range(len(clients)), key=self._in_flight.__getitem__) if len(clients) > 1 else 0
        client = clients[pool]
        semaphore = self._semaphore
        desc = description or f"{self.label} {method} {path}"
        if attempt > 1:
            desc = f"{desc} (attempt {attempt})"
        if semaphore is not None:
            await semaphore.acquire()
        self._in_flight[pool] += 1
        try:
            await self.limiter.acquire()
            self.stats.calls += 1
            sent_at = datetime.now(UTC).replace(tzinfo=None)
            started = time.perf_counter()
            try:
                response = await client.request(method, path, content=content, params=params, headers=headers)
            except httpx.TimeoutException as exc:
                self.stats.timeouts += 1
                self.stats.transient_errors += 1
                log.append(
                    self._entry(
                        desc,
                        _request_of(exc),
                        content,
                        type(exc).__name__,
                        elapsed=_ms(started),
                        attempt=attempt,
                        sent_at=sent_at,
                    )
                )
                raise TransientCarrierError(
                    f"timed out after {self.account.timeout_seconds:g}s ({type(exc).__name__})"
                ) from exc
            except httpx.TransportError as exc:
                # A reset or dropped connection: like a timeout, the request may have been applied;
                # it is retried (carrier writes are idempotent, or confirmed by the carrier module).
                self.stats.transient_errors += 1
                failure = f"{type(exc).__name__}: {exc}"
                log.append(
                    self._entry(
                        desc, _request_of(exc), content, failure, elapsed=_ms(started), attempt=attempt, sent_at=sent_at
                    )
                )
                raise TransientCarrierError(f"connection error: {type(exc).__name__}: {exc}") from exc
        finally:
            self._in_flight[pool] -= 1
            if semaphore is not None:
                semaphore.release()
        body = self._parse(response)
        error = self._classify(response, body)
        log.append(
            self._entry(
                desc,
                response.request,
                content,
                None,
                response,
                error is not None,
                elapsed=_ms(started),
                attempt=attempt,
                sent_at=sent_at,
            )
        )
        if error is None:
            return CallResult(response, body, log)
        if isinstance(error, TransientCarrierError):
            self.stats.transient_errors += 1
            if error.over_limit:
                self.stats.over_limit += 1
                self.limiter.penalize(error.retry_after)
        elif isinstance(error, BusinessCarrierError):
            self.stats.business_errors += 1
        raise error

    # -- capture ----------------------------------------------------------------------------------

    def _entry(
        self,
        description: str,
        request: httpx.Request | None,
        content: str | bytes | None,
        failure: str | None,
        response: httpx.Response | None = None,
        has_errors: bool = True,
        elapsed: float | None = None,
        attempt: int | None = None,
        sent_at: datetime | None = None,
    ) -> LogEntry:
        if request is not None:
            head = f"{request.method} {request.url}\n"
            hdrs = redact_headers(request.headers.items())
            head += "".join(f"{k}: {v}\n" for k, v in hdrs.items())
        else:
            head = "(request not sent)\n"
        if isinstance(content, bytes):
            content = content.decode("utf-8", errors="replace")
        request_text = redact_text(head + "\n" + (content or ""), self._secrets)
        if response is not None:
            rhdrs = redact_headers(response.headers.items())
            response_text = f"HTTP {response.status_code} {response.reason_phrase}\n"
            response_text += "".join(f"{k}: {v}\n" for k, v in rhdrs.items())
            response_text = redact_text(response_text + "\n" + response.text, self._secrets)
            status: int | None = response.status_code
        else:
            response_text = redact_text(failure or "", self._secrets)
            status = None
            has_errors = True
        return LogEntry(description, request_text, response_text, status, has_errors, elapsed, attempt, sent_at)


@cache
def shared_tls_context() -> ssl.SSLContext:
    """One certificate-verifying TLS context for the process. Building one (loading the CA bundle)
    costs tens of milliseconds, and a client is built per batch (one event loop per batch), so
    sharing it saves that on every batch; an SSLContext is safe to share across loops and threads.
    The run workers' fork server builds it before forking (``deploy_preload``)."""
    return httpx.create_ssl_context()


def _ms(started: float) -> float:
    """Milliseconds since ``started`` (a perf_counter reading): the carrier's response time."""
    return round((time.perf_counter() - started) * 1000, 2)


def _parse_body(response: httpx.Response) -> Any:
    """JSON body, None when empty, MALFORMED when the content is not JSON."""
    raw = response.content
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return MALFORMED


def _request_of(exc: httpx.RequestError) -> httpx.Request | None:
    try:
        return exc.request
    except RuntimeError:
        return None
