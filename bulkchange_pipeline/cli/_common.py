"""What every command shares: the click types for text and ids, the common options, the engine,
tenant and service provider look-ups, and ``friendly_errors``.

User errors end with a one-line message and an exit code, never a traceback: 1 for most, 2 for a
file or request that cannot be read at all.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import sqlalchemy as sa
from rich.console import Console

from .. import settings
from ..domain import CarrierProtocol
from ..domain.requests import MAX_ID
from ..intake.parsing import IntakeError, plain_int, shown, text_reason
from ..intake.validation import RequestRejected
from ..store import reference as ref
from ..store.db import make_engine
from ..store.idempotency import IdempotencyConflict

F = TypeVar("F", bound=Callable[..., Any])


class UserError(click.ClickException):
    """A mistake the user can fix; printed without a traceback."""

    exit_code = 1


class InputError(UserError):
    """The file or request cannot be used at all (dry-run exit code 2)."""

    exit_code = 2


def console() -> Console:
    """The console every command prints to (no automatic highlighting of numbers and names)."""
    return Console(highlight=False)


class Text(click.ParamType):
    """Free text from the command line, refused (exit 2, one line) when it cannot be stored.

    A non-UTF-8 byte in an argument reaches Python as a lone surrogate (PEP 383), which the
    database or an answer would fail on later; NUL cannot be passed in argv but is checked too.
    The same ``text_reason`` as every other way in.
    """

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if found := _ARGV_BYTE.search(text):  # PEP 383: undecodable argv byte 0xNN arrives as U+DCNN
            self.fail(f"is not valid UTF-8 (byte 0x{ord(found.group()) - 0xDC00:02X}): pass UTF-8 text", param, ctx)
        if reason := text_reason("the value", text):
            self.fail(reason, param, ctx)
        return text


class Id(click.ParamType):
    """A database id: ASCII digits (``int()`` would also take ``1_0`` and ``٣``), 1 to 2**63-1 (past
    that SQLite raises OverflowError instead of finding nothing)."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        number = plain_int(str(value))
        if number is None or not 1 <= number <= MAX_ID:
            self.fail(f"{shown(str(value), 40)!r} is not an id (a whole number from 1 to {MAX_ID})", param, ctx)
        return number


_ARGV_BYTE = re.compile("[\udc80-\udcff]")
TEXT = Text()
ID = Id()


def database_option(f: F) -> F:
    """``--database-url``; without it, ``settings.database_url()`` (read when the command runs)."""
    return click.option(
        "--database-url",
        default=None,
        help="Business database URL (default: BULKCHANGE_DATABASE_URL, else a SQLite file under BULKCHANGE_HOME).",
    )(f)


def follow_options(follow_help: str) -> Callable[[F], F]:
    """``--follow`` (alias ``--watch``, helped by ``follow_help``), ``--interval`` and ``--timeout``:
    how every command that can follow something until it is final is asked to."""
    options = (
        click.option("--follow", "--watch", "follow", is_flag=True, help=follow_help),
        click.option(
            "--interval",
            default=1.0,
            show_default=True,
            type=click.FloatRange(min=0.01),
            help="Seconds between polls with --follow.",
        ),
        click.option(
            "--timeout",
            default=None,
            type=click.FloatRange(min=0),
            help="Give up following after this many seconds (exit 1).",
        ),
    )

    def apply(f: F) -> F:
        for option in reversed(options):  # the order they are listed in, as stacked decorators would
            f = option(f)
        return f

    return apply


def tenant_option(f: F) -> F:
    return click.option("--tenant", default="demo", show_default=True, type=TEXT, help="Tenant name.")(f)


def friendly_errors(f: F) -> F:
    """Turn expected failures into one-line messages (no tracebacks for user errors)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except (IntakeError, RequestRejected) as exc:  # escaped: a reason may quote what the file holds
            raise InputError(shown(str(exc), 10_000)) from None
        except IdempotencyConflict as exc:
            raise UserError(shown(str(exc), 10_000)) from None
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.DataError) as exc:
            text = str(exc.orig or exc).lower()
            if "no such table" in text or "does not exist" in text and "relation" in text:
                raise UserError("the database is not initialised: run `bulkchange init-db` first") from None
            raise UserError(f"database error: {str(exc.orig or exc).splitlines()[0]}") from None
        except (sa.exc.ArgumentError, ValueError) as exc:
            if isinstance(exc, sa.exc.ArgumentError) or "URL" in str(exc):
                raise UserError(f"bad database URL: {exc}") from None
            raise

    return wrapper  # type: ignore[return-value]


@contextmanager
def open_engine(url: str | None) -> Iterator[sa.Engine]:
    """An engine on ``url`` (default: the configured database), disposed when the command ends."""
    engine = make_engine(url or settings.database_url())
    try:
        yield engine
    finally:
        engine.dispose()


def resolve_tenant(engine: sa.Engine, name: str) -> int:
    tenant_id = ref.tenant_id_by_name(engine, name)
    if tenant_id is None:
        raise UserError(f"no tenant named {name!r}; run `bulkchange seed-demo` for the demo tenant")
    return tenant_id


def resolve_service_provider(engine: sa.Engine, tenant_id: int, value: str | None) -> int | None:
    """An id, or the exact (case-insensitive) name or integration of one of the tenant's providers
    (``jasper`` names its REST provider, ``jasper/soap`` one reached over SOAP)."""
    if value is None:
        return None
    if (number := plain_int(value)) is not None:
        return number
    sps = ref.list_service_providers(engine, tenant_id)
    matches = [sp for sp in sps if value.strip().lower() in (sp.name.lower(), _alias(sp))]
    if len(matches) != 1:
        names = ", ".join(f"{sp.id} {sp.name!r}" for sp in sps)
        raise UserError(
            f"service provider {value!r} is {'ambiguous' if matches else 'unknown'}; this tenant has: {names}"
        )
    return matches[0].id


def _alias(sp: ref.ServiceProviderInfo) -> str:
    """How a provider is named by integration: ``jasper`` (REST) or ``jasper/soap``."""
    rest = sp.protocol is CarrierProtocol.REST
    return sp.integration.value if rest else f"{sp.integration.value}/{sp.protocol.value}"


__all__ = [
    "ID",
    "TEXT",
    "Id",
    "InputError",
    "Text",
    "UserError",
    "console",
    "database_option",
    "follow_options",
    "friendly_errors",
    "open_engine",
    "resolve_service_provider",
    "resolve_tenant",
    "tenant_option",
]
