"""Query parameters the intake routes refuse: one a route does not declare (``?pageSize`` misspelt,
``?stauts=``), or one given twice (``?status=NEW&status=ERROR``, where the last would win silently),
so that what a route answers is always what was asked."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from .api_models import ApiProblem
from .auth import Caller, authenticated_caller
from .parsing import shown


def _query_names(dependant: Dependant) -> list[str]:
    """The query parameters a route declares, by their wire names, its dependencies' included."""
    names = [f.alias for f in dependant.query_params]
    for sub in dependant.dependencies:
        names += [n for n in _query_names(sub) if n not in names]
    return names


def known_query_only(request: Request, _caller: Annotated[Caller, Depends(authenticated_caller)]) -> None:
    """A router dependency: refuse a query parameter the route does not declare (422, naming it and
    the ones the route accepts), so that a misspelt ``?pageSize`` or ``?stauts=`` is never silently
    ignored. It depends on the caller's authentication, so a request without a valid key is still
    answered 401 first."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    whole_number_ids(request, route)
    if not request.query_params:
        return
    accepted = _query_names(route.dependant)
    unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in accepted]
    repeated = [
        name for name in dict.fromkeys(request.query_params.keys()) if len(request.query_params.getlist(name)) > 1
    ]
    if repeated and not unknown:  # the last one would win silently: ?status=NEW&status=ERROR
        raise ApiProblem(
            422,
            f"query parameter {shown(repeated[0], 40)!r} is given more than once; give it once",
            title="Repeated query parameter",
        )
    if not unknown:
        return
    allowed = ", ".join(accepted) if accepted else "no query parameters"
    raise ApiProblem(
        422,
        f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(repr(n[:40]) for n in unknown[:10])}: "
        f"{request.method} {route.path} accepts {allowed}",
        title="Unknown query parameter",
        errors=[
            {"loc": ["query", n[:40]], "msg": f"unknown query parameter; accepted: {allowed}"} for n in unknown[:10]
        ],
    )


def whole_number(raw: str) -> int | None:
    """The id ``raw`` spells in ASCII digits and nothing else, or None.

    The one rule of an id in a path (the API's and the console's) and in a console form: the number
    parser alone takes ``1.0``, `` 1``, ``+1``, ``1_0`` and fullwidth ``１`` as numbers, so
    ``/submissions/1.0:cancel`` would cancel submission 1. No whitespace is stripped: a form field
    or path an operator's tool sent with a blank is not the id it seems to be. The range (1 up to
    ``MAX_ID``) is the caller's to check, so each can say which is wrong.
    """
    if not (raw.isascii() and raw.isdigit()):
        return None
    try:
        return int(raw)
    except ValueError:  # more digits than int() reads (4300): no id of ours
        return None


def whole_number_ids(request: Request, route: APIRoute) -> None:
    """Refuse an integer path parameter written as anything but ASCII digits (422, ``whole_number``).
    Every API router has this check through ``known_query_only``."""
    for field in route.dependant.path_params:
        raw = str(request.path_params.get(field.alias, ""))
        if field.field_info.annotation is int and whole_number(raw) is None:
            raise ApiProblem(
                422,
                f"{field.alias}: {shown(raw, 40)!r} is not a whole number; write the id in digits only",
                title="Invalid request",
                errors=[{"loc": ["path", field.alias], "msg": "digits only"}],
            )


__all__ = ["known_query_only", "whole_number", "whole_number_ids"]
