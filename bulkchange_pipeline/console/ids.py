"""Ids in the console's paths: the API's rule (``intake.api_query.whole_number``), answered as a page.

FastAPI's ``int`` path parameter takes ``1.0``, `` 1``, ``+1`` and ``１`` (fullwidth) as 1, so
``/console/bulk-changes/1.0/cancel`` cancelled bulk change 1 while the API refused the same id with
422. Every console route reads its ids through ``path_id``: ASCII digits only, 1 to ``MAX_ID``,
else the console's "not found" page (404), as for ``/console/bulk-changes/abc``. Declared after the
signed-in user in each route, so a visitor without a session is still sent to sign in first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from ..domain.requests import MAX_ID
from ..intake.api_query import whole_number
from ..intake.parsing import shown
from .render import NotFound

__all__ = ["BulkChangeId", "DeviceId", "RowId", "SubmissionId", "path_id"]


def path_id(name: str) -> Callable[[Request], int]:
    """A dependency reading the path parameter ``name`` as an id, or raising NotFound (a 404 page)."""

    def read(request: Request) -> int:
        raw = str(request.path_params.get(name, ""))
        number = whole_number(raw)
        if number is None or not 1 <= number <= MAX_ID:
            raise NotFound(
                f"{name} {shown(raw, 40)!r} is not an id (a whole number from 1 to {MAX_ID}, in digits only)"
            )
        return number

    read.__name__ = f"path_id_{name}"  # one cached dependency per parameter
    return read


BulkChangeId = Annotated[int, Depends(path_id("bulk_change_id"))]
SubmissionId = Annotated[int, Depends(path_id("submission_id"))]
RowId = Annotated[int, Depends(path_id("row_id"))]
DeviceId = Annotated[int, Depends(path_id("device_id"))]
