"""File drops through the embedded default (local folders under the data folder), end to end:
the file drop sensor takes a file through the API's intake, the bulk change sensor processes it
on the Jasper simulator, and the next drop tick writes the results to the outbox.

Real parts: Dagster (sensor ticks and runs through the production local runner), the business
database on both backends, the Jasper simulator over HTTP.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.intake.drops import default_root
from bulkchange_pipeline.intake.drops import inbox as inbox_module
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.file_drops import set_drop_settings
from bulkchange_pipeline.store.schema import file_drop

from .helpers import STATUS_UPDATE, Ticks, bulk_change_ids, request_file, results_statuses, seed_tenant


def _setup(engine, jasper, *, n: int = 3):
    sim, base_url = jasper
    tenant = seed_tenant(engine, sim, base_url, n)
    set_drop_settings(
        engine,
        tenant.ids["tenant_id"],
        service_provider_id=tenant.ids["service_provider_id"],
        change_type=STATUS_UPDATE,
    )
    root = default_root(tenant.ids["tenant_id"])
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    return sim, tenant, root


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("fmt", ["csv", "json", "xml"])
def test_a_dropped_file_becomes_a_bulk_change_and_its_results_reach_the_outbox(engine, dagster_instance, jasper, fmt):
    sim, tenant, root = _setup(engine, jasper)
    (root / "inbox" / f"orders.{fmt}").write_bytes(request_file(fmt, tenant))
    ticks = Ticks(dagster_instance)

    ticks.drop()  # first sighting: the size is remembered, nothing taken
    assert bulk_change_ids(engine) == [] and _names(root / "inbox") == [f"orders.{fmt}"]
    ticks.drop()  # unchanged for a tick: taken
    (bc_id,) = bulk_change_ids(engine)
    assert _names(root / "inbox") == [] and _names(root / "inbox" / "processed") == [f"orders.{fmt}"]
    assert get_bulk_change(engine, bc_id)["created_by"] == f"file-drop:orders.{fmt}"

    ticks.drop()  # not final yet: no results
    assert _names(root / "outbox") == []
    runs = ticks.process()
    assert [r.success for r in runs] == [True]
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 3}
    assert all(sim.device(i)["status"] == "DEACTIVATED" for i in tenant.iccids)

    ticks.drop()
    results = root / "outbox" / f"orders.results.{fmt}"
    assert _names(root / "outbox") == [results.name]
    assert results_statuses(fmt, results.read_bytes()) == {i: "PROCESSED" for i in tenant.iccids}
    # Exactly once: later ticks write nothing more, and the record says when it was written.
    written = results.stat().st_mtime_ns
    results.write_bytes(b"changed by the tenant")
    ticks.drop()
    assert results.read_bytes() == b"changed by the tenant" and _names(root / "outbox") == [results.name]
    assert written
    with engine.connect() as conn:
        row = conn.execute(sa.select(file_drop)).one()
    assert row.results_name == results.name and row.results_written_at is not None and row.format == fmt


def test_a_csv_dropped_twice_runs_once(engine, dagster_instance, jasper):
    sim, tenant, root = _setup(engine, jasper)
    data = request_file("csv", tenant)
    (root / "inbox" / "batch-1.csv").write_bytes(data)
    ticks = Ticks(dagster_instance)
    ticks.drop()
    ticks.drop()
    ticks.process()
    # The same content again: under another name, and under the same name.
    (root / "inbox" / "batch-1-copy.csv").write_bytes(data)
    (root / "inbox" / "batch-1.csv").write_bytes(data)
    ticks.drop()
    ticks.drop()
    assert len(bulk_change_ids(engine)) == 1
    assert ticks.process() == []  # nothing new to run
    assert sim.stats()["applied_more_than_once"] == 0
    processed = root / "inbox" / "processed"
    names = _names(processed)
    assert "batch-1.csv" in names and "batch-1-copy.csv" in names and len(names) == 5, names
    notes = [n for n in names if n.endswith(".note.txt")]
    assert len(notes) == 2
    for note in notes:
        assert "already taken as bulk change" in (processed / note).read_text()
    assert _names(root / "inbox") == []


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("colours.csv", b"iccid,colour\n8901260000000000017,red\n", "unknown column"),
        ("manual.pdf", b"%PDF-1.4", "not a file type the inbox takes"),
        ("broken.json", b'{"devices": [', "JSON"),
        (
            "other-provider.json",
            b'{"serviceProviderId": 999, "changeType": 1, "devices": ["x"]}',
            "no service provider",
        ),
    ],
)
def test_a_refused_file_lands_in_rejected_with_a_reason(engine, dagster_instance, jasper, name, data, reason):
    _, _, root = _setup(engine, jasper)
    (root / "inbox" / name).write_bytes(data)
    ticks = Ticks(dagster_instance)
    ticks.drop()
    ticks.drop()
    rejected = root / "inbox" / "rejected"
    assert _names(rejected) == sorted([name, f"{name}.reason.txt"])
    assert (rejected / name).read_bytes() == data
    assert reason in (rejected / f"{name}.reason.txt").read_text()
    assert bulk_change_ids(engine) == [] and _names(root / "inbox") == []


def test_files_being_written_are_left_alone(engine, dagster_instance, jasper):
    _, tenant, root = _setup(engine, jasper)
    inbox = root / "inbox"
    data = request_file("csv", tenant)
    (inbox / "upload.csv.part").write_bytes(data)
    (inbox / ".hidden.csv").write_bytes(data)
    growing = inbox / "growing.csv"
    growing.write_bytes(data[:20])
    ticks = Ticks(dagster_instance)
    ticks.drop()
    growing.write_bytes(data)  # still growing at the second tick: not taken
    ticks.drop()
    assert bulk_change_ids(engine) == [] and "growing.csv" in _names(inbox)
    ticks.drop()  # now unchanged for a tick
    assert len(bulk_change_ids(engine)) == 1
    assert _names(inbox) == [".hidden.csv", "upload.csv.part"]


class Crash(BaseException):
    """The process dying: not an error any code path catches."""


def test_a_crash_between_storing_and_moving_creates_one_bulk_change(engine, dagster_instance, jasper, monkeypatch):
    _, tenant, root = _setup(engine, jasper)
    (root / "inbox" / "orders.json").write_bytes(request_file("json", tenant))
    ticks = Ticks(dagster_instance)
    ticks.drop()

    def crash(*args, **kwargs):
        raise Crash

    for step in ("record_drop", "_move"):  # dies after submit, then after the record
        with monkeypatch.context() as m:
            m.setattr(inbox_module, step, crash)
            with pytest.raises(Crash):
                ticks.drop()  # the cursor is not saved by a dead tick; it held this file's size already
        assert len(bulk_change_ids(engine)) == 1 and _names(root / "inbox") == ["orders.json"]
    ticks.drop()
    assert len(bulk_change_ids(engine)) == 1
    assert _names(root / "inbox" / "processed") == ["orders.json"]  # finished, not noted as a copy
    with engine.connect() as conn:
        assert conn.execute(sa.select(file_drop.c.moved_at)).scalar_one() is not None


def test_a_registered_format_plugs_in_with_its_acknowledgement(engine, jasper, monkeypatch):
    """The hook X12 uses: a format with its own suffix, sniff, reader, results writer and an
    acknowledgement written to the outbox at once (here a toy "one ICCID per line" format)."""
    from bulkchange_pipeline.intake.drops import FORMATS, DropFormat, register_format, run_tick
    from bulkchange_pipeline.intake.drops.formats import DropDefaults
    from bulkchange_pipeline.intake.request_file import parse_request_data

    _, tenant, root = _setup(engine, jasper)

    def read(data: bytes, defaults: DropDefaults):
        iccids = data.decode().split()[1:]
        body = "iccid,targetStatus\n" + "".join(f"{i},DEACTIVATED\n" for i in iccids)
        return parse_request_data(
            body.encode(), ".csv", change_type=defaults.change_type,
            service_provider_id=defaults.service_provider_id, idempotency_key=defaults.idempotency_key,
        )  # fmt: skip

    def results(bc_id, rows):
        yield "".join(f"{r['iccid']} {r['status']}\n" for r in rows)

    def acknowledge(data: bytes, refusal: str | None) -> bytes:
        return b"ACK\n" if refusal is None else f"NAK {refusal[:40]}\n".encode()

    monkeypatch.setattr("bulkchange_pipeline.intake.drops.formats.FORMATS", list(FORMATS))
    register_format(DropFormat("lines", (".lst",), read, results, ".lst", lambda d: d.startswith(b"LST"), acknowledge))
    (root / "inbox" / "ship.lst").write_bytes(("LST " + " ".join(tenant.iccids)).encode())
    (root / "inbox" / "noext").write_bytes(b"LST")  # sniffed as the format, refused by its reader
    first = run_tick(engine, {})
    run_tick(engine, first.inbox.seen)
    assert len(bulk_change_ids(engine)) == 1
    assert (root / "outbox" / "ship.ack.lst").read_bytes() == b"ACK\n"
    assert (root / "outbox" / "noext.ack.lst").read_bytes().startswith(b"NAK ")
    assert _names(root / "inbox" / "rejected") == ["noext", "noext.reason.txt"]
