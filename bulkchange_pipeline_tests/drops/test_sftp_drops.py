"""File drops over SFTP end to end: inbox and outbox on a real SFTP server on loopback (asyncssh's
server), reached through fsspec/paramiko with the password from a BULKCHANGE_CRED_ entry and the
host key checked against a known_hosts file."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
from bulkchange_pipeline.store.file_drops import set_drop_settings
from bulkchange_pipeline.store.schema import bulk_change_log, file_drop_setting

from .helpers import STATUS_UPDATE, Ticks, bulk_change_ids, request_file, results_statuses, seed_tenant
from .sftp_server import sftp_server


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.exists() else []


@pytest.fixture
def sftp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with sftp_server(tmp_path / "sftp-root", tmp_path) as server:
        monkeypatch.setenv("BULKCHANGE_CRED_ACME_DROPS_USERNAME", server.username)
        monkeypatch.setenv("BULKCHANGE_CRED_ACME_DROPS_SECRET", server.password)
        monkeypatch.setenv("BULKCHANGE_CRED_ACME_DROPS_KNOWN_HOSTS", str(server.known_hosts))
        yield server


def _configure(engine, tenant, port: int) -> None:
    set_drop_settings(
        engine,
        tenant.ids["tenant_id"],
        inbox_url=f"sftp://127.0.0.1:{port}/acme/inbox",
        outbox_url=f"sftp://127.0.0.1:{port}/acme/outbox",
        credentials_name="acme-drops",
        service_provider_id=tenant.ids["service_provider_id"],
        change_type=STATUS_UPDATE,
    )


def test_sftp_inbox_and_outbox_end_to_end(engine, dagster_instance, jasper, sftp, caplog):
    sim, base_url = jasper
    tenant = seed_tenant(engine, sim, base_url)
    _configure(engine, tenant, sftp.port)
    inbox = sftp.root / "acme" / "inbox"
    ticks = Ticks(dagster_instance)
    ticks.drop()  # creates the folders on the server
    assert inbox.is_dir() and (inbox / "processed").is_dir() and (sftp.root / "acme" / "outbox").is_dir()

    (inbox / "fleet.csv").write_bytes(request_file("csv", tenant))
    (inbox / "resend.csv").write_bytes(
        request_file("csv", tenant)
    )  # the same content under another name (taken second: oldest, then by name)
    (inbox / "bad.xml").write_bytes(b"<bulkChangeRequest/>")
    ticks.drop()
    ticks.drop()
    (bc_id,) = bulk_change_ids(engine)
    assert _files(inbox) == []
    assert _files(inbox / "processed") == ["fleet.csv", "resend.csv", "resend.csv.note.txt"]
    assert _files(inbox / "rejected") == ["bad.xml", "bad.xml.reason.txt"]

    assert [r.success for r in ticks.process()] == [True]
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 3}
    ticks.drop()
    outbox = sftp.root / "acme" / "outbox"
    assert _files(outbox) == ["fleet.results.csv"]
    assert results_statuses("csv", (outbox / "fleet.results.csv").read_bytes()) == {
        i: "PROCESSED" for i in tenant.iccids
    }
    # The password is in no log line, no stored row.
    assert sftp.password not in caplog.text
    with engine.connect() as conn:
        stored = [str(r) for t in (file_drop_setting, bulk_change_log) for r in conn.execute(sa.select(t)).all()]
    assert not any(sftp.password in s for s in stored)


def test_an_unknown_host_key_or_a_wrong_password_takes_nothing(engine, dagster_instance, jasper, sftp, monkeypatch):
    sim, base_url = jasper
    tenant = seed_tenant(engine, sim, base_url)
    _configure(engine, tenant, sftp.port)
    inbox = sftp.root / "acme" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "fleet.csv").write_bytes(request_file("csv", tenant))
    ticks = Ticks(dagster_instance)

    other = sftp.known_hosts.parent / "other_known_hosts"
    other.write_text("")
    monkeypatch.setenv("BULKCHANGE_CRED_ACME_DROPS_KNOWN_HOSTS", str(other))
    ticks.drop()
    ticks.drop()
    monkeypatch.setenv("BULKCHANGE_CRED_ACME_DROPS_KNOWN_HOSTS", str(sftp.known_hosts))
    monkeypatch.setenv("BULKCHANGE_CRED_ACME_DROPS_SECRET", "wrong")
    ticks.drop()
    ticks.drop()
    assert bulk_change_ids(engine) == [] and _files(inbox) == ["fleet.csv"]
