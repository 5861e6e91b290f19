"""Reading a carrier callback's body and query as hostile input: the byte cap, the intake's JSON
loading and value check, the ids a callback is keyed by. The routes (``intake.callbacks``) answer
whatever these refuse as a 4xx problem document; nothing here touches the database.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ..carriers import AsyncOutcome, parse_callback
from ..store.callbacks import MAX_DEVICE_KEY, MAX_REQUEST_ID
from .api_models import ApiProblem, capped_stream
from .parsing import IntakeError, check_values, decode_utf8, load_json

__all__ = [
    "MALFORMED",
    "MAX_CALLBACK_BYTES",
    "NO_BODY",
    "callback_outcomes",
    "check_thingspace_ids",
    "check_value",
    "json_body",
]

MAX_CALLBACK_BYTES = 1_000_000
MALFORMED = "Malformed callback"
NO_BODY: Any = object()  # what ``json_body`` answers for an empty body


def check_thingspace_ids(payload: dict[str, Any]) -> None:
    """The ids a CarrierService message is keyed by have the types ThingSpace sends: ``requestId`` a
    string (or an integer), ``deviceIds`` a list of ``{kind, id}`` objects. Anything else (``1.0``,
    ``true``, an object) would be stored under its Python spelling, an id nobody sent."""

    def is_id(value: Any) -> bool:
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))

    rid = payload.get("requestId")
    if rid is not None and not is_id(rid):
        raise ApiProblem(400, f"requestId must be a string, not {_json_type(rid)}", title=MALFORMED)
    ids = payload.get("deviceIds")
    if ids is not None and not (
        isinstance(ids, list)
        and all(
            isinstance(i, dict) and (i.get("id") is None or is_id(i["id"])) and is_id(i.get("kind", "")) for i in ids
        )
    ):
        raise ApiProblem(400, "deviceIds must be a list of objects with a string kind and id", title=MALFORMED)


def _json_type(value: Any) -> str:
    return (
        "a boolean"
        if isinstance(value, bool)
        else "a number"
        if isinstance(value, int | float)
        else "an array"
        if isinstance(value, list)
        else "an object"
        if isinstance(value, dict)
        else "null"
        if value is None
        else "a string"
    )


def check_value(value: Any, where: str) -> None:
    """``parsing.check_values``, the intake's one value check (NUL, lone surrogates, nesting, numbers
    no column holds), on what a callback sent: refused with a 400 before anything reads it."""
    try:
        check_values(value)
    except IntakeError as exc:
        raise ApiProblem(400, f"{where}: {exc}", title=MALFORMED) from None


async def json_body(request: Request) -> Any:
    """The body as checked JSON (``parsing.load_json`` + ``check_values``), read under the byte cap;
    ``NO_BODY`` when there is none (JSON ``null`` is None)."""
    too_large = ApiProblem(
        413, f"the callback body is over {MAX_CALLBACK_BYTES:,} bytes", title="Callback body too large"
    )
    raw = b"".join([chunk async for chunk in capped_stream(request, MAX_CALLBACK_BYTES, lambda _size: too_large)])
    if not raw.strip():
        return NO_BODY
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise ApiProblem(415, f"send the callback body as application/json (got {media[:60]!r})")
    try:
        body = load_json(decode_utf8(raw))
    except IntakeError as exc:
        raise ApiProblem(400, str(exc).replace("the file", "the callback body"), title=MALFORMED) from None
    check_value(body, "the callback body")
    return body


def callback_outcomes(integration: str, payload: dict[str, Any]) -> list[AsyncOutcome]:
    """What the callback reports; 400 when nothing, or when it names a request id or device no stored
    callback can be keyed by (longer than the columns: never one we sent)."""
    try:
        outcomes = parse_callback(integration, payload)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):  # a field of an unexpected type
        outcomes = []
    if not outcomes:
        what = (
            "no requestId in the callback"
            if integration == "teal"
            else f"not a {integration} callback this system understands"
        )
        raise ApiProblem(400, what, title=MALFORMED)
    for o in outcomes:
        if len(o.request_id) > MAX_REQUEST_ID:
            raise ApiProblem(
                400,
                f"the requestId is {len(o.request_id)} characters long; no request id this system "
                f"sent is longer than {MAX_REQUEST_ID}",
                title=MALFORMED,
            )
        if len(o.device_key) > MAX_DEVICE_KEY:
            raise ApiProblem(
                400,
                f"the device id is {len(o.device_key)} characters long; no device id is longer than {MAX_DEVICE_KEY}",
                title=MALFORMED,
            )
    return outcomes
