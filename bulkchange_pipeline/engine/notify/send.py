"""One attempt of one delivery: a signed POST to a webhook, or an e-mail through SMTP.

Each attempt has a hard deadline (``timeout``, the whole attempt: resolving, connecting, sending,
the answer's status line), so a receiver that never answers or drips its answer costs that
attempt's time and nothing more. The answer's body is never read or stored: its status code is
all a delivery needs. Redirects are not followed (a 3xx is a failed attempt): a redirect could
lead to an address the guard refuses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import smtplib
import ssl
import time
from concurrent.futures import Executor
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from ...store.db import utcnow
from ...store.notification_sending import AttemptRecord
from .addresses import AddressRefused, masked_url, parse_webhook_url, resolve_allowed

__all__ = ["USER_AGENT", "plain_auth_refusal", "send_email", "send_webhook"]

USER_AGENT = "bulkchange-pipeline-webhooks/1"


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


async def send_webhook(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    timeout: float,
    executor: Executor | None = None,
) -> AttemptRecord:
    """POST ``body`` to ``url`` with ``headers`` (the signature), to an address checked now."""
    started, t0 = utcnow(), time.perf_counter()
    code: int | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(timeout):
            target = parse_webhook_url(url)
            loop = asyncio.get_running_loop()
            addresses = await loop.run_in_executor(
                executor, lambda: resolve_allowed(target, allow_private=allow_private)
            )
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            request = client.build_request(
                "POST",
                target.pinned_url(addresses[0]),
                content=body,
                headers={
                    **headers,
                    "host": target.host_header,
                    "content-type": "application/json",
                    "user-agent": USER_AGENT,
                },
                extensions=extensions,
            )
            response = await client.send(request, stream=True)
            code = response.status_code
            await response.aclose()  # the body is not read
    except AddressRefused as exc:
        error = f"refused: {exc}"
    except TimeoutError:
        error = f"no answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        error = _short(exc)
        query = urlsplit(url).query
        if query:  # an exception may quote the URL: its query values are secrets of the receiver's
            error = error.replace(query, urlsplit(masked_url(url)).query)
    ok = code is not None and 200 <= code < 300
    if code is not None and not ok:
        error = f"answered {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
    return AttemptRecord(started, (time.perf_counter() - t0) * 1000, ok, code, error)


def plain_auth_refusal(host: str, security: str, has_credentials: bool) -> str | None:
    """Why logging in to ``host`` with ``security`` would send the password in clear text, or None.

    SMTP AUTH PLAIN/LOGIN carry the password merely base64-encoded: without TLS anyone on the path
    reads it. Only a server on this machine (loopback: the tests, ``make demo``) may be used so."""
    if not has_credentials or security != "none" or _is_loopback(host):
        return None
    return (
        f"SMTP login to {host[:80]} without TLS would send the password in clear text: "
        "use --smtp-security starttls or tls (or no --smtp-credentials)"
    )


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def send_email(
    message: EmailMessage,
    smtp: dict[str, Any],
    credentials: tuple[str, SecretStr] | None,
    *,
    timeout: float,
) -> AttemptRecord:
    """Send ``message`` through the tenant's SMTP server (``notification_email``'s columns):
    ``tls`` (implicit TLS), ``starttls`` (upgrade, required) or ``none``; AUTH when credentials
    are given. Blocking: call it from a worker thread."""
    started, t0 = utcnow(), time.perf_counter()
    code: int | None = None
    error: str | None = None
    context = ssl.create_default_context()
    host, port, security = smtp["smtp_host"], int(smtp["smtp_port"]), smtp["smtp_security"]
    refusal = plain_auth_refusal(host, security, credentials is not None)
    if refusal:  # settings stored before the CLI refused this: never send the password in clear
        return AttemptRecord(started, 0.0, False, None, refusal)
    try:
        client = (
            smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
            if security == "tls"
            else smtplib.SMTP(host, port, timeout=timeout)
        )
        with client:
            if security == "starttls":
                client.starttls(context=context)
            if credentials is not None:
                client.login(credentials[0], credentials[1].get_secret_value())
            refused = client.send_message(message)
            code = 250
            if refused:  # some recipients refused, the rest accepted: retrying would send twice to them
                error = "refused recipients: " + ", ".join(f"{r} ({c})" for r, (c, _) in list(refused.items())[:5])
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [c for c, _ in exc.recipients.values()]
        code = codes[0] if codes else None
        error = f"every recipient refused ({', '.join(str(c) for c in codes[:5])})"
    except smtplib.SMTPResponseException as exc:
        code = exc.smtp_code
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        error = f"SMTP {exc.smtp_code}: {text.splitlines()[0][:200] if text else ''}"
    except (smtplib.SMTPException, OSError) as exc:
        error = _short(exc)
    ok = code == 250
    return AttemptRecord(started, (time.perf_counter() - t0) * 1000, ok, code, error)
