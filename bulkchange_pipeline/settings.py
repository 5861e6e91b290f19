"""Every environment variable the application reads, in one module, read at the moment it is asked.

Why functions and ``current()`` rather than a settings object built at import: the CLI, the Dagster
code server, the demo (which exports the simulators' credentials after starting them) and the tests
(``monkeypatch.setenv`` after import) change the environment while the process runs.

=======================================  =========================================================
``BULKCHANGE_HOME``                      local data folder of the embedded default (``./.bulkchange``)
``BULKCHANGE_DATABASE_URL``              business database (default: SQLite under the data folder)
``BULKCHANGE_ARCHIVE_DIR``               archive folder (default: ``<data folder>/archive``)
``BULKCHANGE_CALLBACK_BASE_URL``         public base URL of ``bulkchange serve``, where async carriers call back
``BULKCHANGE_DAGSTER_DATABASE_URL``      PostgreSQL for Dagster's storage (``deploy-local start``)
``BULKCHANGE_DEMO_<INTEGRATION>_BASE_URL``  a demo service provider's base URL when it is seeded
``BULKCHANGE_CONSOLE_SECRET``            key that signs console sessions (default: random per process)
``BULKCHANGE_DAGSTER_URL``               the Dagster UI the console links to (``http://127.0.0.1:3000``)
``DAGSTER_HOME``                         the Dagster instance folder (Dagster reads it too)
``BULKCHANGE_WEBHOOK_SIGNING_KEY``       key the webhook secrets are derived from (default: a key file
                                         made once under the data folder; see ``webhook_signing_key``)
``BULKCHANGE_WEBHOOK_ALLOW_PRIVATE``     ``1``: webhooks may target loopback and private addresses
                                         (tests, ``make demo``); never link-local or multicast
``BULKCHANGE_MAX_CONCURRENT_UPLOADS``   big uploads (over 1 MB) ``bulkchange serve`` validates at once (default 2);
                                         one more is answered 429 with Retry-After
``BULKCHANGE_CRED_<NAME>_USERNAME``,     a carrier account's credentials; ``<NAME>`` is the service
``_SECRET``, ``_<KEY>``                  provider's credentials name (the database holds only that)
=======================================  =========================================================

The first two are read by ``store.db`` (the store imports nothing of ours but the domain, and it
needs the database URL for its engines and migrations): this module re-uses them from there.

Secrets: carrier credentials come out of here as ``SecretStr`` (so a settings value that reaches a
log or an exception shows ``**********``), are unwrapped only into a ``CarrierAccount`` (whose repr
hides them) at the moment a batch needs them, and never enter the database, run config or the
Dagster event log.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .domain import Integration
from .store.db import DATABASE_URL_ENV, data_dir
from .store.db import database_url as _store_database_url

ARCHIVE_DIR_ENV = "BULKCHANGE_ARCHIVE_DIR"
CALLBACK_BASE_URL_ENV = "BULKCHANGE_CALLBACK_BASE_URL"
DAGSTER_DATABASE_URL_ENV = "BULKCHANGE_DAGSTER_DATABASE_URL"
DAGSTER_HOME_ENV = "DAGSTER_HOME"
CREDENTIALS_PREFIX = "BULKCHANGE_CRED_"
DEMO_BASE_URL_ENV = "BULKCHANGE_DEMO_{integration}_BASE_URL"
CONSOLE_SECRET_ENV = "BULKCHANGE_CONSOLE_SECRET"
DAGSTER_URL_ENV = "BULKCHANGE_DAGSTER_URL"
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
WEBHOOK_SIGNING_KEY_ENV = "BULKCHANGE_WEBHOOK_SIGNING_KEY"
WEBHOOK_ALLOW_PRIVATE_ENV = "BULKCHANGE_WEBHOOK_ALLOW_PRIVATE"
WEBHOOK_KEY_FILE = "webhook-signing.key"
MAX_CONCURRENT_UPLOADS_ENV = "BULKCHANGE_MAX_CONCURRENT_UPLOADS"
DEFAULT_MAX_CONCURRENT_UPLOADS = 2  # a 1,000,000-row file takes about 250 MB while it is validated
# Unset BULKCHANGE_CONSOLE_SECRET: sessions are signed with this, so they end when the process does
# and are not accepted by another worker process; set the variable when serving with several.
_PROCESS_CONSOLE_SECRET = secrets.token_bytes(32)


class Settings(BaseSettings):
    """The fixed-name variables; an unset or empty variable is None."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    archive_dir: Path | None = Field(default=None, validation_alias=ARCHIVE_DIR_ENV)
    callback_base_url: str | None = Field(default=None, validation_alias=CALLBACK_BASE_URL_ENV)
    dagster_database_url: SecretStr | None = Field(default=None, validation_alias=DAGSTER_DATABASE_URL_ENV)
    dagster_home: Path | None = Field(default=None, validation_alias=DAGSTER_HOME_ENV)
    console_secret: SecretStr | None = Field(default=None, validation_alias=CONSOLE_SECRET_ENV)
    dagster_url: str | None = Field(default=None, validation_alias=DAGSTER_URL_ENV)
    max_concurrent_uploads: int | None = Field(default=None, ge=1, le=1000, validation_alias=MAX_CONCURRENT_UPLOADS_ENV)

    @property
    def upload_slots(self) -> int:
        """Big uploads the HTTP app validates at once (``BULKCHANGE_MAX_CONCURRENT_UPLOADS``): each
        holds its file and a chunk of validated rows, so the count, not the traffic, bounds memory."""
        return self.max_concurrent_uploads or DEFAULT_MAX_CONCURRENT_UPLOADS

    @property
    def archive_root(self) -> Path:
        """Where archived bulk changes go: ``BULKCHANGE_ARCHIVE_DIR``, else ``<data folder>/archive``."""
        return self.archive_dir or data_dir() / "archive"

    @property
    def console_key(self) -> bytes:
        """The key console sessions are signed with: ``BULKCHANGE_CONSOLE_SECRET``, else a random
        key made when this process started (sessions then end with it)."""
        secret = self.console_secret
        return secret.get_secret_value().encode("utf-8") if secret else _PROCESS_CONSOLE_SECRET

    @property
    def dagster_ui_url(self) -> str:
        """The Dagster UI the console links runs to: ``BULKCHANGE_DAGSTER_URL``, else the local default."""
        return (self.dagster_url or DEFAULT_DAGSTER_URL).rstrip("/")


def current(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings as the environment holds them now (built anew on every call), or as ``environ``
    holds them (the process environment then plays no part)."""
    if environ is None:
        return Settings()
    names = [str(f.validation_alias) for f in Settings.model_fields.values()]
    values: dict[str, Any] = {name: environ.get(name) or None for name in names}  # given: the environment is not read
    return Settings(**values)


def database_url(env_name: str = DATABASE_URL_ENV) -> str:
    """The business database URL: the variable ``env_name`` (a Dagster resource may name another
    one), else the store's default (``BULKCHANGE_DATABASE_URL``, else SQLite under the data folder)."""
    if env_name != DATABASE_URL_ENV and (url := os.environ.get(env_name)):
        return url
    return _store_database_url()


def demo_base_urls() -> dict[str, str]:
    """Integration -> the base URL a ``BULKCHANGE_DEMO_<INTEGRATION>_BASE_URL`` variable sets for
    the demo service provider when the demo tenant is seeded (unset: the seed's default)."""
    names = {i.value: DEMO_BASE_URL_ENV.format(integration=i.value.upper()) for i in Integration}
    return {key: url for key, name in names.items() if (url := os.environ.get(name))}


# --- completion notifications -------------------------------------------------------------------


def webhook_signing_key() -> SecretStr:
    """The key every webhook subscription's secret is derived from (``engine.notify.signing``).

    ``BULKCHANGE_WEBHOOK_SIGNING_KEY`` when set (production: the same value in the intake app and
    in the Dagster code server and runs). Unset, the embedded default keeps one random key in
    ``<data folder>/webhook-signing.key`` (mode 0600, made on first use), so the CLI, the app and
    the runs on one machine agree without configuration. Changing the key changes every secret.

    With a PostgreSQL business database the processes may run on several hosts, each of which
    would make its own key file and derive different secrets: the variable is then required."""
    if value := os.environ.get(WEBHOOK_SIGNING_KEY_ENV):
        return SecretStr(value)
    if database_url().startswith("postgres"):
        raise RuntimeError(
            f"set {WEBHOOK_SIGNING_KEY_ENV} (the same random value, e.g. `openssl rand -base64 32`, for the "
            "intake app, the CLI and the Dagster runs): with a PostgreSQL database they may run on several "
            "hosts, and a key file per host would sign webhooks with different secrets"
        )
    path = data_dir() / WEBHOOK_KEY_FILE
    if not path.exists():
        _write_key_once(path, secrets.token_urlsafe(32))
    return SecretStr(path.read_text(encoding="ascii").strip())


def _write_key_once(path: Path, key: str) -> None:
    """Write ``key`` to ``path`` unless it exists, atomically: the key goes to a private temporary
    file first, which is then hard-linked to ``path`` (fails when ``path`` exists, like O_EXCL), so
    a concurrent reader sees no file or the whole key, never an empty one; the first writer wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".webhook-signing-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
    finally:
        os.unlink(temp)


def webhook_allow_private() -> bool:
    """``BULKCHANGE_WEBHOOK_ALLOW_PRIVATE=1``: webhook URLs may resolve to loopback and private
    addresses (tests and the demo's receiver on 127.0.0.1)."""
    return os.environ.get(WEBHOOK_ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes")


# --- carrier credentials ----------------------------------------------------------------------


class MissingCredentials(RuntimeError):
    """A service provider's credentials are not in the environment; the message names the variables."""


@dataclass(frozen=True)
class CarrierCredentials:
    """One credentials entry as the environment holds it. ``extra``: every other
    ``BULKCHANGE_CRED_<NAME>_<KEY>`` variable (``_CLIENT_ID``, ``_CALLBACK_PASSWORD``,
    ``_SUBSCRIPTION_KEY``...) under ``<key>`` in lower case."""

    username: str
    secret: SecretStr
    extra: Mapping[str, SecretStr] = field(default_factory=dict)


def credential_env_key(credentials_name: str) -> str:
    """The stem of a credentials entry's variables: ``DEMO_JASPER`` -> ``BULKCHANGE_CRED_DEMO_JASPER``
    (any run of characters other than A-Z and 0-9 becomes one ``_``)."""
    return CREDENTIALS_PREFIX + re.sub(r"[^A-Z0-9]+", "_", credentials_name.upper()).strip("_")


def credential_env_names(credentials_name: str) -> tuple[str, str]:
    """The username and secret variables of a credentials entry."""
    key = credential_env_key(credentials_name)
    return f"{key}_USERNAME", f"{key}_SECRET"


def carrier_credentials(
    credentials_name: str, service_provider: str, environ: Mapping[str, str] | None = None
) -> CarrierCredentials:
    """The credentials entry ``credentials_name`` from the environment (or ``environ``); raises
    MissingCredentials naming ``service_provider`` and the variables to export when the username or
    secret is not set."""
    env = os.environ if environ is None else environ
    user_var, secret_var = credential_env_names(credentials_name)
    username, secret = env.get(user_var), env.get(secret_var)
    if not username or not secret:
        raise MissingCredentials(
            f"credentials for service provider {service_provider!r} are not set: export {user_var} and {secret_var}"
        )
    base = credential_env_key(credentials_name) + "_"
    extra = {
        name[len(base) :].lower(): SecretStr(value)
        for name, value in env.items()
        if name.startswith(base) and name[len(base) :] not in ("USERNAME", "SECRET") and value
    }
    return CarrierCredentials(username, SecretStr(secret), extra)


def credential_value(credentials_name: str, key: str, environ: Mapping[str, str] | None = None) -> SecretStr | None:
    """One ``BULKCHANGE_CRED_<NAME>_<KEY>`` variable (e.g. ThingSpace's ``CALLBACK_PASSWORD``), None when unset."""
    value = (os.environ if environ is None else environ).get(f"{credential_env_key(credentials_name)}_{key}")
    return SecretStr(value) if value else None


def same_account(senders: Sequence[object], credentials_name: str) -> bool:
    """True when one of the accounts a callback authenticated as (``senders``: credentials names)
    is ``credentials_name``'s account, compared as environment keys: two spellings of one
    credentials name are one account."""
    return credential_env_key(credentials_name) in {credential_env_key(str(s)) for s in senders}


__all__ = [
    "DEFAULT_MAX_CONCURRENT_UPLOADS",
    "MAX_CONCURRENT_UPLOADS_ENV",
    "ARCHIVE_DIR_ENV",
    "CALLBACK_BASE_URL_ENV",
    "CONSOLE_SECRET_ENV",
    "CREDENTIALS_PREFIX",
    "DAGSTER_DATABASE_URL_ENV",
    "DAGSTER_HOME_ENV",
    "DAGSTER_URL_ENV",
    "DEFAULT_DAGSTER_URL",
    "DATABASE_URL_ENV",
    "DEMO_BASE_URL_ENV",
    "WEBHOOK_ALLOW_PRIVATE_ENV",
    "WEBHOOK_SIGNING_KEY_ENV",
    "CarrierCredentials",
    "MissingCredentials",
    "Settings",
    "carrier_credentials",
    "credential_env_key",
    "credential_env_names",
    "credential_value",
    "current",
    "data_dir",
    "database_url",
    "demo_base_urls",
    "same_account",
    "webhook_allow_private",
    "webhook_signing_key",
]
