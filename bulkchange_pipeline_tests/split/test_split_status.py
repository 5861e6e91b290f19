"""A submission's derived status and outcome against real stored children (both backends): one
answer (``store.submissions.submission_state``) for the API, the CLI's watch, the console and the
drop outbox. A child whose run crashed leaves the submission ERROR / ``unfinished`` once the others
are final (not "in progress" forever), and the outbox writes its results exactly then; a held split
is ``held`` and ``POST /submissions/{id}:release`` reaches every child; a child links its submission."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import BulkChangeStatus, DeviceChangeStatus
from bulkchange_pipeline.store.bulk_changes import set_bulk_status
from bulkchange_pipeline.store.device_changes import RowResult, claim, record_results
from bulkchange_pipeline.store.file_drops import list_due_results, record_drop
from bulkchange_pipeline.store.headers import finalize_header
from bulkchange_pipeline.store.schema import device_change
from bulkchange_pipeline.store.submissions import get_submission

from ..intake.test_api import Api, make_api
from .conftest import edit_body


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url, devices_per_carrier=20)


def _split(api: Api, **extra: object) -> tuple[int, list[int]]:
    s = api.seed.sample_iccids
    r = api.client.post("/bulk-changes", json=edit_body([*s["jasper"][:2], *s["pond"][:2]], **extra), headers=api.demo)
    assert r.status_code == 202, r.text
    return r.json()["submissionId"], [c["bulkChangeId"] for c in r.json()["children"]]


def _rows(engine: sa.Engine, bc_id: int) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(device_change.c.id).where(device_change.c.bulk_change_id == bc_id)).scalars()
        )


def _crash(engine: sa.Engine, bc_id: int) -> None:
    """A run claimed the child's rows and stopped: header ERROR, rows PROCESSING (resume finishes them)."""
    claim(engine, _rows(engine, bc_id))
    set_bulk_status(engine, bc_id, BulkChangeStatus.ERROR)


def _finish(api: Api, bc_id: int) -> None:
    rows = _rows(api.engine, bc_id)
    claim(api.engine, rows)
    results = [RowResult(i, DeviceChangeStatus.PROCESSED, "ok") for i in rows]
    record_results(api.engine, tenant_id=api.seed.tenant_id, bulk_change_id=bc_id, results=results, process_by="t")
    finalize_header(api.engine, bc_id, async_carrier=False)


def _due(api: Api, submission_id: int) -> bool:
    return any(d.submission_id == submission_id for d in list_due_results(api.engine, 1000))


def test_a_crashed_child_makes_the_submission_unfinished_once_the_others_are_final(api: Api) -> None:
    sid, (jasper, pond) = _split(api)
    record_drop(api.engine, api.seed.tenant_id, uuid.uuid4().hex * 2, "m.json", "json", None, submission_id=sid)
    _crash(api.engine, jasper)
    # the other child still queued: in progress, not final, no results file yet
    view = get_submission(api.engine, sid, api.seed.tenant_id)
    assert view is not None and (view.status, view.outcome.value, view.final) == ("PROCESSING", "in_progress", False)
    assert not _due(api, sid)

    _finish(api, pond)
    view = get_submission(api.engine, sid, api.seed.tenant_id)
    assert view is not None and (view.status, view.outcome.value, view.final) == ("ERROR", "unfinished", True)
    assert _due(api, sid)  # the outbox and the status agree on "final"
    body = api.client.get(f"/submissions/{sid}", headers=api.demo).json()
    assert (body["status"], body["outcome"], body["final"]) == ("ERROR", "unfinished", True)
    assert (body["done"], body["total"]) == (2, 4)  # the progress figure: the crashed child's rows are not done
    page = api.client.get(f"/bulk-changes/{jasper}", headers=api.demo).json()
    assert page["outcome"] == "unfinished" and page["submissionId"] == sid


def test_a_held_split_is_held_and_released_as_one(api: Api) -> None:
    sid, kids = _split(api, processChanges=False)
    body = api.client.get(f"/submissions/{sid}", headers=api.demo).json()
    assert (body["status"], body["outcome"], body["final"]) == ("NEW", "held", False)

    r = api.client.post(f"/submissions/{sid}:release", headers=api.demo)
    assert r.status_code == 200, r.text
    assert [c["done"] for c in r.json()["children"]] == [True, True]
    for bc in kids:
        assert api.client.get(f"/bulk-changes/{bc}", headers=api.demo).json()["processChanges"] is True
    body = api.client.get(f"/submissions/{sid}", headers=api.demo).json()
    assert (body["status"], body["outcome"]) == ("NEW", "in_progress")

    again = api.client.post(f"/submissions/{sid}:release", headers=api.demo)
    assert again.status_code == 409 and "not held" in again.json()["detail"]
    assert api.client.post(f"/submissions/{sid}:release", headers=api.other).status_code == 404


def test_one_child_cancelled_alone_next_to_a_held_one_is_held(api: Api) -> None:
    sid, (jasper, _pond) = _split(api, processChanges=False)
    assert api.client.post(f"/bulk-changes/{jasper}/cancel", headers=api.demo).status_code == 200
    body = api.client.get(f"/submissions/{sid}", headers=api.demo).json()
    assert (body["outcome"], body["final"]) == ("held", False)  # nothing runs until the other is released
    assert [c["status"] for c in body["children"]] == ["CANCELLED", "NEW"]


def test_a_bulk_change_names_its_submission_and_a_409_names_the_key_holder(api: Api) -> None:
    sid, (jasper, _) = _split(api, idempotencyKey="held-by-a-submission")
    assert api.client.get(f"/bulk-changes/{jasper}", headers=api.demo).json()["submissionId"] == sid
    s = api.seed.sample_iccids
    single = api.client.post(
        "/bulk-changes", json=edit_body(s["jasper"][5:6], serviceProviderId=api.jasper), headers=api.demo
    )
    assert single.status_code == 201
    alone = api.client.get(f"/bulk-changes/{single.json()['id']}", headers=api.demo).json()
    assert "submissionId" in alone and alone["submissionId"] is None

    r = api.client.post(
        "/bulk-changes",
        json=edit_body(s["jasper"][:1], serviceProviderId=api.jasper, idempotencyKey="held-by-a-submission"),
        headers=api.demo,
    )
    assert r.status_code == 409
    assert r.json()["submissionId"] == sid and "bulkChangeId" not in r.json()


@pytest.mark.parametrize("odd", ["1.0", "%201", "1%20", "1e0", "+1"])
def test_an_id_not_in_digits_is_refused_not_read_as_another_number(api: Api, odd: str) -> None:
    sid, (jasper, _) = _split(api)
    assert (sid, jasper) == (1, 1)
    for path in (f"/submissions/{odd}", f"/submissions/{odd}/devices", f"/bulk-changes/{odd}"):
        r = api.client.get(path, headers=api.demo)
        assert r.status_code == 422 and "digits" in r.json()["detail"], (path, r.text)
    assert api.client.post(f"/submissions/{odd}:cancel", headers=api.demo).status_code == 422
    assert api.client.post(f"/bulk-changes/{odd}/cancel", headers=api.demo).status_code == 422
    body = api.client.get(f"/submissions/{sid}", headers=api.demo).json()
    assert body["counts"] == {"NEW": 4}  # nothing was cancelled
