"""X12 through the drop inbox, end to end on both backends: an 856 on a real SFTP server becomes one
bulk change per configured change (assign the customer, then activate), a 997 is in the outbox at
once, and an 824 with every device's result when the last change has finished; a resent
interchange is acknowledged again and not processed again; a malformed file gets a 997 rejection
naming the segment; control numbers come from a per-tenant counter that concurrent callers share.

Real parts: asyncssh's SFTP server on loopback, Dagster sensor ticks and runs through the local
runner, the Jasper simulator over HTTP, SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa

from bulkchange_pipeline.intake.drops import default_root
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.file_drops import set_drop_settings
from bulkchange_pipeline.store.schema import device, x12_control_number
from bulkchange_pipeline.store.x12_interchanges import next_control_number

from ..factories import make_account
from ..intake.x12_inputs import interchange, render, ship_notice_body
from .helpers import Ticks, bulk_change_ids
from .sftp_server import sftp_server
from .x12_helpers import UNKNOWN, elements, partner_settings, read_x12, seed_inactive_tenant, ship_notice


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.exists() else []


def _outbox_kind(folder: Path, kind: str) -> list[str]:
    return [n for n in _files(folder) if f".{kind}-" in n]


def _local(engine, jasper, *, partners: bool = True):
    sim, base_url = jasper
    tenant = seed_inactive_tenant(engine, sim, base_url)
    set_drop_settings(engine, tenant.ids["tenant_id"], partner_settings=partner_settings(tenant) if partners else None)
    root = default_root(tenant.ids["tenant_id"])
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    return sim, tenant, root / "inbox", root / "outbox"


def test_an_856_through_an_sftp_inbox_gets_a_997_at_once_and_an_824_when_done(
    engine, dagster_instance, jasper, tmp_path, monkeypatch
):
    sim, base_url = jasper
    tenant = seed_inactive_tenant(engine, sim, base_url)
    with sftp_server(tmp_path / "sftp-root", tmp_path) as server:
        monkeypatch.setenv("BULKCHANGE_CRED_ACME_DROPS_USERNAME", server.username)
        monkeypatch.setenv("BULKCHANGE_CRED_ACME_DROPS_SECRET", server.password)
        monkeypatch.setenv("BULKCHANGE_CRED_ACME_DROPS_KNOWN_HOSTS", str(server.known_hosts))
        set_drop_settings(
            engine,
            tenant.ids["tenant_id"],
            inbox_url=f"sftp://127.0.0.1:{server.port}/acme/inbox",
            outbox_url=f"sftp://127.0.0.1:{server.port}/acme/outbox",
            credentials_name="acme-drops",
            partner_settings=partner_settings(tenant),
        )
        inbox, outbox = server.root / "acme" / "inbox", server.root / "acme" / "outbox"
        inbox.mkdir(parents=True)
        (inbox / "asn-905.edi").write_bytes(ship_notice([*tenant.iccids, UNKNOWN]))
        ticks = Ticks(dagster_instance)
        ticks.drop()
        ticks.drop()

        # Taken: the first change (customer assignment) is stored, the 997 is in the outbox at once.
        (first,) = bulk_change_ids(engine)
        assert _files(inbox / "processed") == ["asn-905.edi"] and _files(inbox) == []
        (ack_name,) = _files(outbox)
        assert ack_name.startswith("asn-905.997-") and ack_name.endswith(".x12")
        ack = read_x12(outbox / ack_name)
        assert elements(ack, "AK5") == [["AK5", "A"]] and elements(ack, "AK9") == [["AK9", "A", "1", "1", "1"]]
        assert ack.sender == "ZZ:BULKCHANGE" and ack.receiver == "ZZ:DISTRIB01"

        # The activation waits for the assignment: submitted by the tick after it finished, with the
        # devices the assignment processed (the unknown ICCID was refused by validation).
        assert [r.success for r in ticks.process()] == [True]
        assert count_rows_by_status(engine, first) == {"PROCESSED": 3, "ERROR": 1}
        ticks.drop()
        (_, second) = bulk_change_ids(engine)
        assert get_bulk_change(engine, second)["change_type"] == 1 and _outbox_kind(outbox, "824") == []
        assert [r.success for r in ticks.process()] == [True]
        assert count_rows_by_status(engine, second) == {"PROCESSED": 3}
        assert all(sim.device(i)["status"] == "ACTIVATED" for i in tenant.iccids)
        with engine.connect() as conn:
            customers = set(conn.execute(sa.select(device.c.customer_id)).scalars())
        assert customers == {tenant.ids["customer_id"]}

        ticks.drop()
        (advice_name,) = _outbox_kind(outbox, "824")
        assert advice_name == "asn-905.824-000000905.x12"
        advice = read_x12(outbox / advice_name)
        assert advice.receiver == "ZZ:DISTRIB01" and advice.control != ack.control
        otis = elements(advice, "OTI")
        assert otis[0][:4] == ["OTI", "TP", "SI", "SHP-77001"]
        assert {o[3]: o[1] for o in otis[1:]} == {**dict.fromkeys(tenant.iccids, "IA"), UNKNOWN: "IR"}
        (ted,) = elements(advice, "TED")
        assert ted[1] == "848" and ted[2]

        # Exactly once: later ticks write no second 824.
        ticks.drop()
        assert _outbox_kind(outbox, "824") == [advice_name]

        # The same interchange again (another name): a 997 again, nothing processed again.
        (inbox / "asn-905-resend.x12").write_bytes(ship_notice([*tenant.iccids, UNKNOWN]))
        ticks.drop()
        ticks.drop()
        assert len(bulk_change_ids(engine)) == 2 and ticks.process() == []
        assert len(_outbox_kind(outbox, "997")) == 2 and _outbox_kind(outbox, "824") == [advice_name]
        note = (inbox / "processed" / "asn-905-resend.x12.note.txt").read_text()
        assert "000000905" in note and "not processed again" in note
    stats = sim.stats()  # two changes per device (assignment, activation), the resend added none
    assert (stats["applied_total"], stats["applied_devices"]) == (6, 3)


def test_a_malformed_856_gets_a_997_rejection_naming_the_segment(engine, dagster_instance, jasper):
    _, tenant, inbox, outbox = _local(engine, jasper)
    segs = interchange([("856", ship_notice_body([[("LIN", i)] for i in tenant.iccids]))])
    se = next(s for s in segs if s[0] == "SE")
    se[1] = str(int(se[1]) + 1)  # SE01 counts one segment too many
    (inbox / "bad-count.x12").write_bytes(render(segs).encode())
    ticks = Ticks(dagster_instance)
    ticks.drop()
    ticks.drop()
    assert bulk_change_ids(engine) == []
    (ack_name,) = _files(outbox)
    ack = read_x12(outbox / ack_name)
    assert elements(ack, "AK5") == [["AK5", "R", "4"]] and elements(ack, "AK9")[0][1] == "R"
    assert _files(inbox / "rejected") == ["bad-count.x12", "bad-count.x12.reason.txt"]
    assert "SE01" in (inbox / "rejected" / "bad-count.x12.reason.txt").read_text()


def test_a_file_whose_isa_cannot_be_read_is_rejected_with_a_reason_and_no_997(engine, dagster_instance, jasper):
    _, _, inbox, outbox = _local(engine, jasper)
    (inbox / "cut.856").write_bytes(b"ISA*00*  short")
    ticks = Ticks(dagster_instance)
    ticks.drop()
    ticks.drop()
    assert _files(outbox) == [] and bulk_change_ids(engine) == []
    reason = (inbox / "rejected" / "cut.856.reason.txt").read_text()
    assert "no 997" in reason and "ISA" in reason


def test_an_856_without_partner_settings_is_accepted_by_the_997_and_refused_by_an_824(engine, dagster_instance, jasper):
    _, tenant, inbox, outbox = _local(engine, jasper, partners=False)
    (inbox / "shipment").write_bytes(ship_notice(tenant.iccids))  # no suffix: sniffed as X12
    ticks = Ticks(dagster_instance)
    ticks.drop()
    ticks.drop()
    assert bulk_change_ids(engine) == []
    (ack_name,) = _outbox_kind(outbox, "997")
    assert elements(read_x12(outbox / ack_name), "AK5") == [["AK5", "A"]]
    advice = read_x12(outbox / "shipment.824-000000905.x12")
    otis = elements(advice, "OTI")
    assert otis[0][1] == "TR" and {o[1] for o in otis[1:]} == {"IR"} and len(otis) == 4
    reason = (inbox / "rejected" / "shipment.reason.txt").read_text()
    assert "no trading-partner settings for sender 'ZZ:DISTRIB01'" in reason

    # A corrected setup takes the same interchange: a refused one was not recorded as taken.
    set_drop_settings(engine, tenant.ids["tenant_id"], partner_settings=partner_settings(tenant))
    (inbox / "shipment.x12").write_bytes(ship_notice(tenant.iccids))
    ticks.drop()
    ticks.drop()
    assert len(bulk_change_ids(engine)) == 1


def test_control_numbers_are_unique_and_increasing_per_tenant_under_concurrency(engine, jasper):
    _, tenant, _, _ = _local(engine, jasper)
    other = make_account(engine, "http://127.0.0.1:9", tenant_name="other")
    tid = tenant.ids["tenant_id"]
    got: list[int] = []
    lock = threading.Lock()

    def draw() -> None:
        for _ in range(10):
            number = next_control_number(engine, tid)
            with lock:
                got.append(number)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 41))
    assert next_control_number(engine, tid) == 41
    assert next_control_number(engine, other["tenant_id"]) == 1  # each tenant counts on its own


def test_control_numbers_wrap_after_nine_digits(engine, jasper):
    _, tenant, _, _ = _local(engine, jasper)
    tid = tenant.ids["tenant_id"]
    with engine.begin() as conn:
        conn.execute(sa.insert(x12_control_number).values(tenant_id=tid, last_value=999_999_998))
    assert [next_control_number(engine, tid) for _ in range(3)] == [999_999_999, 1, 2]


def test_a_nul_byte_refuses_the_file_without_storing_anything(engine, dagster_instance, jasper):
    _, tenant, inbox, outbox = _local(engine, jasper)
    (inbox / "nul.x12").write_bytes(ship_notice(tenant.iccids).replace(b"ACME FLEET", b"ACME\x00FLEET"))
    ticks = Ticks(dagster_instance)
    ticks.drop()
    ticks.drop()
    assert bulk_change_ids(engine) == [] and _files(outbox) == []
    assert "NUL" in (inbox / "rejected" / "nul.x12.reason.txt").read_text()
