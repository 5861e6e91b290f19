"""``bulkchange drops set|show`` through click's CliRunner, on both backends."""

from __future__ import annotations

from click.testing import CliRunner

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.file_drops import drop_settings

from ..factories import make_account


def _invoke(db_url: str, *args: str):
    return CliRunner().invoke(main, [*args, "--database-url", db_url], catch_exceptions=False)


def test_drops_set_and_show(engine, db_url, home):
    ids = make_account(engine, "http://127.0.0.1:9")
    result = _invoke(
        db_url, "drops", "set", "--tenant", "acme", "--service-provider", str(ids["service_provider_id"]),
        "--change-type", "StatusUpdate",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = drop_settings(engine, ids["tenant_id"])
    assert stored is not None and stored.change_type == ChangeType.STATUS_UPDATE and stored.inbox_url is None
    shown = _invoke(db_url, "drops", "show", "--tenant", "acme")
    assert shown.exit_code == 0 and str(home / "drops" / str(ids["tenant_id"]) / "inbox") in shown.output

    sftp = "sftp://drops.example.com:2222/acme/inbox"
    ok = _invoke(db_url, "drops", "set", "--tenant", "acme", "--inbox-url", sftp, "--outbox-url",
                 "sftp://drops.example.com:2222/acme/outbox", "--credentials", "acme-drops")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert drop_settings(engine, ids["tenant_id"]).inbox_url == sftp


def test_drops_set_refuses_what_cannot_work(engine, db_url):
    ids = make_account(engine, "http://127.0.0.1:9")
    cases = [
        (["--inbox-url", "sftp://user:hunter2@host/inbox", "--credentials", "x"], "may not hold a password"),
        (["--inbox-url", "sftp://host/inbox"], "needs --credentials"),
        (["--inbox-url", "ftp://host/inbox"], "file:// or sftp://"),
        (["--inbox-url", "relative/inbox"], "absolute path"),
        (["--change-type", "Teleport"], "Teleport"),
        (["--service-provider", "9999"], "no service provider 9999"),
    ]
    for args, message in cases:
        result = _invoke(db_url, "drops", "set", "--tenant", "acme", *args)
        assert result.exit_code != 0 and message in result.output, (args, result.output)
        assert "hunter2" not in result.output
    assert drop_settings(engine, ids["tenant_id"]) is None
