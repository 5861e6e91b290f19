"""What the intake routes depend on per app: the business database engine and the intake limits.

The routers are built once, at import; what differs from one app to another (``create_app(url)``,
a test's app with small limits) is bound to the app by ``bind`` and read on each request from
``request.app.state``, through FastAPI dependencies (``Depends(request_engine)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import FastAPI, Request

from .parsing import IntakeLimits

EngineFactory = Callable[[], sa.Engine]


@dataclass(frozen=True)
class IntakeContext:
    """The app's engine factory (called per request: it may hand out a shared engine) and limits."""

    engine_for_request: EngineFactory
    limits: IntakeLimits


def bind(app: FastAPI, engine_for_request: EngineFactory, limits: IntakeLimits) -> None:
    """Give ``app``'s intake routes their database and limits."""
    app.state.intake = IntakeContext(engine_for_request, limits)


def _context(request: Request) -> IntakeContext:
    context: IntakeContext = request.app.state.intake
    return context


async def request_engine(request: Request) -> sa.Engine:
    """The business database engine of the app serving this request."""
    return _context(request).engine_for_request()


async def request_limits(request: Request) -> IntakeLimits:
    """The size and row limits of the app serving this request."""
    return _context(request).limits


__all__ = ["EngineFactory", "IntakeContext", "bind", "request_engine", "request_limits"]
