"""Where a tenant's drop folders are, as fsspec file systems: a local folder (the embedded
default, under ``<data folder>/drops/<tenant id>/``) or an SFTP server (production).

fsspec gives both the same operations (list, read, move, write), so the inbox and outbox code has
no branch per backend. Layout: ``processed/`` and ``rejected/`` are folders inside the inbox (one
URL, one permission: an SFTP account chrooted to its inbox can still see what became of its
files); the outbox is its own URL (default: ``<tenant folder>/outbox``).

SFTP secrets never reach the database: the settings name a credentials entry, read from
``BULKCHANGE_CRED_<NAME>_USERNAME`` / ``_SECRET`` (the password, or the key's passphrase),
optional ``_KEY_FILE`` (a private key file) and the required ``_KNOWN_HOSTS`` (a known_hosts
file): the server's host key is checked, an unknown one refused, so a man in the middle never
gets the password (fsspec's default would trust any key on first sight).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ... import settings
from ...store.file_drops import DropSettings

__all__ = ["DropConfigError", "DropFolders", "check_drop_url", "default_root", "open_folders"]

SFTP_TIMEOUT_SECONDS = 15.0


class DropConfigError(ValueError):
    """A drop URL or its credentials cannot be used; the message says what to set (never a secret)."""


@dataclass
class DropFolders:
    fs: fsspec.AbstractFileSystem
    inbox: str
    outbox: str

    @property
    def processed(self) -> str:
        return f"{self.inbox}/processed"

    @property
    def rejected(self) -> str:
        return f"{self.inbox}/rejected"

    def close(self) -> None:
        client = getattr(self.fs, "client", None)
        if client is not None:
            client.close()


def default_root(tenant_id: int) -> Path:
    """The embedded default: ``<data folder>/drops/<tenant id>`` (the id: a tenant name may hold
    any character)."""
    return settings.data_dir() / "drops" / str(int(tenant_id))


def check_drop_url(url: str) -> str:
    """``url`` if it is a usable drop location (``file://``, an absolute path, or ``sftp://host[:port]/path``
    without a password), else DropConfigError saying why."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        path = unquote(parts.path) if parts.scheme else url
        if not path.startswith("/"):
            raise DropConfigError(f"a local drop folder must be an absolute path, not {url[:200]!r}")
        return url
    if parts.scheme != "sftp":
        raise DropConfigError(f"drop URLs are file:// or sftp://, not {parts.scheme[:20]!r}")
    if parts.password is not None:
        raise DropConfigError("an SFTP drop URL may not hold a password: name a credentials entry instead")
    if not parts.hostname or not parts.path.startswith("/"):
        raise DropConfigError("an SFTP drop URL is sftp://host[:port]/absolute/path")
    return url


def _local_path(url: str) -> str:
    parts = urlsplit(url)
    return (unquote(parts.path) if parts.scheme == "file" else url).rstrip("/") or "/"


def _sftp(url: str, credentials_name: str | None, tenant_id: int, environ: Mapping[str, str] | None) -> tuple[Any, str]:
    import paramiko
    from fsspec.implementations.sftp import SFTPFileSystem  # paramiko: needed only for SFTP

    class KnownHostsSFTP(SFTPFileSystem):  # type: ignore[misc]
        """fsspec's SFTP file system with the host keys of a known_hosts file loaded first."""

        def __init__(self, host: str, known_hosts: str, **kwargs: Any) -> None:
            self.known_hosts = known_hosts
            super().__init__(host, **kwargs)

        def _connect(self) -> None:
            self.client = paramiko.SSHClient()
            self.client.load_host_keys(self.known_hosts)
            self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
            self.client.connect(self.host, **self.ssh_kwargs)
            self.ftp = self.client.open_sftp()

    parts = urlsplit(check_drop_url(url))
    if not credentials_name:
        raise DropConfigError(f"tenant {tenant_id}: an SFTP drop needs a credentials name in its drop settings")
    try:
        creds = settings.carrier_credentials(credentials_name, f"file drops of tenant {tenant_id}", environ)
    except settings.MissingCredentials as exc:
        raise DropConfigError(str(exc)) from None
    known = settings.credential_value(credentials_name, "KNOWN_HOSTS", environ)
    if known is None:
        stem = settings.credential_env_key(credentials_name)
        raise DropConfigError(f"set {stem}_KNOWN_HOSTS to a known_hosts file holding the SFTP server's host key")
    key_file = settings.credential_value(credentials_name, "KEY_FILE", environ)
    kwargs: dict[str, Any] = {
        "port": parts.port or 22,
        "username": parts.username or creds.username,
        "password": creds.secret.get_secret_value(),
        "timeout": SFTP_TIMEOUT_SECONDS,
        "banner_timeout": SFTP_TIMEOUT_SECONDS,
        "auth_timeout": SFTP_TIMEOUT_SECONDS,
        "allow_agent": False,
        "look_for_keys": False,
    }
    if key_file is not None:
        kwargs["key_filename"] = key_file.get_secret_value()
    try:
        fs = KnownHostsSFTP(parts.hostname, known.get_secret_value(), skip_instance_cache=True, **kwargs)
    except (OSError, paramiko.SSHException) as exc:  # the message names the host, never the password
        raise DropConfigError(
            f"cannot connect to SFTP {parts.hostname}:{kwargs['port']}: {type(exc).__name__}: {exc}"
        ) from None
    return fs, unquote(parts.path).rstrip("/") or "/"


def open_folders(drop: DropSettings, environ: Mapping[str, str] | None = None) -> DropFolders:
    """The tenant's drop folders, created when missing (inbox, processed, rejected, outbox).

    Inbox and outbox are on one file system: two URLs on different servers are refused (a
    results file is written where the tenant's account can read it)."""
    root = default_root(drop.tenant_id)
    inbox_url = drop.inbox_url or str(root / "inbox")
    outbox_url = drop.outbox_url or str(root / "outbox")
    for url in (inbox_url, outbox_url):
        check_drop_url(url)
    inbox_parts, outbox_parts = urlsplit(inbox_url), urlsplit(outbox_url)
    if inbox_parts.scheme == "sftp" or outbox_parts.scheme == "sftp":
        if (inbox_parts.scheme, inbox_parts.netloc) != (outbox_parts.scheme, outbox_parts.netloc):
            raise DropConfigError("the inbox and the outbox must be on the same SFTP server")
        fs, inbox = _sftp(inbox_url, drop.credentials_name, drop.tenant_id, environ)
        outbox = unquote(outbox_parts.path).rstrip("/") or "/"
    else:
        fs, inbox, outbox = LocalFileSystem(), _local_path(inbox_url), _local_path(outbox_url)
    folders = DropFolders(fs, inbox, outbox)
    try:
        for path in (folders.inbox, folders.processed, folders.rejected, folders.outbox):
            fs.makedirs(path, exist_ok=True)
    except OSError as exc:
        folders.close()
        raise DropConfigError(f"cannot create the drop folders: {exc.strerror or exc}") from None
    return folders
