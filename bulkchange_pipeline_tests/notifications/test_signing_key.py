"""The webhook signing key (review of issue 20): the embedded key file is written atomically, so a
process racing its creation never reads an empty key, and with PostgreSQL (several hosts) the key
must come from BULKCHANGE_WEBHOOK_SIGNING_KEY."""

from __future__ import annotations

import stat
import threading

import pytest

from bulkchange_pipeline import settings


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.delenv(settings.WEBHOOK_SIGNING_KEY_ENV, raising=False)
    monkeypatch.delenv("BULKCHANGE_DATABASE_URL", raising=False)
    monkeypatch.setenv("BULKCHANGE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_racing_first_uses_all_get_the_same_whole_key(fresh_home, monkeypatch):
    for round_ in range(20):
        monkeypatch.setenv("BULKCHANGE_HOME", str(fresh_home / str(round_)))
        start = threading.Barrier(8)
        keys: list[str] = []

        def first_use(start: threading.Barrier = start, keys: list[str] = keys) -> None:
            start.wait()
            keys.append(settings.webhook_signing_key().get_secret_value())

        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) >= 40, keys
        folder = fresh_home / str(round_)
        key_file = folder / settings.WEBHOOK_KEY_FILE
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert [p.name for p in folder.iterdir()] == [settings.WEBHOOK_KEY_FILE]  # no temp file left


def test_postgresql_without_the_variable_is_refused_with_a_reason(fresh_home, monkeypatch):
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", "postgresql+psycopg://bulk@db.example.com/bulk")
    with pytest.raises(RuntimeError, match="set BULKCHANGE_WEBHOOK_SIGNING_KEY .* several hosts"):
        settings.webhook_signing_key()
    assert not (fresh_home / settings.WEBHOOK_KEY_FILE).exists()
    monkeypatch.setenv(settings.WEBHOOK_SIGNING_KEY_ENV, "from-the-environment")
    assert settings.webhook_signing_key().get_secret_value() == "from-the-environment"


def test_sqlite_default_keeps_one_key_file(fresh_home):
    first = settings.webhook_signing_key().get_secret_value()
    assert settings.webhook_signing_key().get_secret_value() == first
    assert (fresh_home / settings.WEBHOOK_KEY_FILE).read_text() == first
