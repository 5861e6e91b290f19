"""One name per change type wherever one is shown (``domain.change_type_name``): the API's bulk
change and submission ``changeTypeName``, the console's pages, the Dagster run tag and the event
message agree, for a known type and for a number no ChangeType has (a row stored before a type was
retired), on both backends. Before, the four copies answered "", "42" and "change type 42"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs import partitions
from bulkchange_pipeline.defs.resources import DatabaseResource
from bulkchange_pipeline.defs.tags import CHANGE_TYPE_NAME_TAG
from bulkchange_pipeline.domain import ChangeType, Outcome, change_type_name
from bulkchange_pipeline.domain.notifications import event_data
from bulkchange_pipeline.store.schema import bulk_change, submission

from .conftest import Console
from .test_console_submissions import _split


def test_every_change_type_has_its_label_and_an_unknown_number_is_named() -> None:
    assert [change_type_name(t) for t in ChangeType] == [t.label for t in ChangeType]
    assert change_type_name(6) == "unknown change type 6"  # 6 is the replaced system's gap
    assert change_type_name(42) == "unknown change type 42"


@pytest.fixture
def tags_from(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``partitions.partition_tags`` reading this test's database, as a code location's does."""
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", db_url)
    kept = list(partitions._database)
    partitions.use_database(DatabaseResource())
    yield
    partitions._database[:] = kept


@pytest.mark.parametrize("stored", [int(ChangeType.STATUS_UPDATE), 42])
def test_the_api_console_run_tags_and_events_show_one_name(console: Console, tags_from: None, stored: int) -> None:
    expected = change_type_name(stored)
    sid, children = _split(console)
    bc_id = children[0]
    with console.engine.begin() as conn:
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id.in_(children)).values(change_type=stored))
        conn.execute(sa.update(submission).where(submission.c.id == sid).values(change_type=stored))
    api = console.api

    shown = api.client.get(f"/bulk-changes/{bc_id}", headers=api.demo)
    assert shown.status_code == 200 and shown.json()["changeTypeName"] == expected, shown.text
    parent = api.client.get(f"/submissions/{sid}", headers=api.demo)
    assert parent.status_code == 200 and parent.json()["changeTypeName"] == expected, parent.text

    assert f"{expected} on " in console.page(f"/console/bulk-changes/{bc_id}")
    assert f"{expected} across " in console.page(f"/console/submissions/{sid}")
    assert f"<td>{expected}</td>" in console.page("/console/")

    assert partitions.partition_tags(str(bc_id))[CHANGE_TYPE_NAME_TAG] == expected

    head = {
        "id": bc_id,
        "tenant_id": api.seed.tenant_id,
        "service_provider_id": 1,
        "change_type": stored,
        "status": "PROCESSED",
        "attempt": 1,
        "created_at": None,
        "processed_at": None,
    }
    assert event_data(head, {"PROCESSED": 1}, Outcome.DONE)["changeTypeName"] == expected
