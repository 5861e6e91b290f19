"""``bulkchange_pipeline.settings``: every variable is read when asked (a test or the demo sets it
after import), an empty one counts as unset, and credentials leave it only as ``SecretStr``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bulkchange_pipeline import settings
from bulkchange_pipeline.cli import main
from bulkchange_pipeline.store import reference as ref
from bulkchange_pipeline.store.db import make_engine


def test_settings_are_read_at_call_time_and_empty_is_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BULKCHANGE_HOME", str(tmp_path))
    monkeypatch.delenv("BULKCHANGE_ARCHIVE_DIR", raising=False)
    monkeypatch.setenv("BULKCHANGE_CALLBACK_BASE_URL", "")
    before = settings.current()
    assert before.callback_base_url is None and before.archive_root == tmp_path / "archive"
    monkeypatch.setenv("BULKCHANGE_CALLBACK_BASE_URL", "https://intake.example")
    monkeypatch.setenv("BULKCHANGE_ARCHIVE_DIR", str(tmp_path / "elsewhere"))
    after = settings.current()
    assert after.callback_base_url == "https://intake.example" and after.archive_root == tmp_path / "elsewhere"
    # A mapping given instead of the environment is all that is read.
    assert settings.current({"BULKCHANGE_CALLBACK_BASE_URL": "http://given"}).callback_base_url == "http://given"
    assert settings.current({}).archive_dir is None


def test_database_url_from_a_named_variable_else_the_store_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BULKCHANGE_HOME", str(tmp_path))
    monkeypatch.delenv("BULKCHANGE_DATABASE_URL", raising=False)
    assert settings.database_url() == f"sqlite:///{tmp_path / 'bulkchange.db'}"
    monkeypatch.setenv("OTHER_DB_URL", "sqlite:///other.db")
    assert settings.database_url("OTHER_DB_URL") == "sqlite:///other.db"
    monkeypatch.delenv("OTHER_DB_URL")
    assert settings.database_url("OTHER_DB_URL") == settings.database_url()


def test_secrets_never_show_in_a_repr() -> None:
    env = {
        "BULKCHANGE_CRED_ACME_JASPER_USERNAME": "ops",
        "BULKCHANGE_CRED_ACME_JASPER_SECRET": "s3cret-key",
        "BULKCHANGE_CRED_ACME_JASPER_CLIENT_SECRET": "client-s3cret",
        "BULKCHANGE_DAGSTER_DATABASE_URL": "postgresql://dagster:pg-s3cret@db/dagster",
    }
    creds = settings.carrier_credentials("acme-jasper", "ACME Jasper", env)  # two spellings of one entry
    assert creds.username == "ops" and creds.secret.get_secret_value() == "s3cret-key"
    assert creds.extra["client_secret"].get_secret_value() == "client-s3cret"
    shown = repr(creds) + repr(settings.current(env))
    assert "s3cret" not in shown
    with pytest.raises(
        settings.MissingCredentials, match="export BULKCHANGE_CRED_OTHER_USERNAME and BULKCHANGE_CRED_OTHER_SECRET"
    ):
        settings.carrier_credentials("other", "Other", env)
    assert settings.same_account(["ACME_JASPER"], "acme-jasper") and not settings.same_account(["ACME"], "acme-jasper")


def test_seed_demo_takes_demo_base_urls_from_the_environment_and_options_win(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'seed.db'}"
    monkeypatch.setenv("BULKCHANGE_DEMO_JASPER_BASE_URL", "http://jasper.env/rws/api/v1")
    monkeypatch.setenv("BULKCHANGE_DEMO_POND_BASE_URL", "http://pond.env/api")
    runner = CliRunner()
    assert runner.invoke(main, ["init-db", "--database-url", url]).exit_code == 0
    seeded = runner.invoke(
        main,
        ["seed-demo", "--database-url", url, "--devices-per-carrier", "0", "--base-url", "pond=http://pond.option/api"],
    )
    assert seeded.exit_code == 0, seeded.output
    engine = make_engine(url)
    try:
        tenant_id = ref.tenant_id_by_name(engine, "demo")
        assert tenant_id is not None
        urls = {sp.integration.value: sp.base_url for sp in ref.list_service_providers(engine, tenant_id)}
    finally:
        engine.dispose()
    assert urls["jasper"] == "http://jasper.env/rws/api/v1" and urls["pond"] == "http://pond.option/api"
