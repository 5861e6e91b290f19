"""A real SFTP server on loopback for the file drop tests: asyncssh's server in a thread, password
authentication, its root chrooted to a temporary folder, and a known_hosts file holding its
generated host key (the drop code refuses unknown host keys)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncssh


@dataclass
class SftpServer:
    port: int
    root: Path
    known_hosts: Path
    username: str
    password: str


class _Server(asyncssh.SSHServer):
    def __init__(self, username: str, password: str) -> None:
        self._username, self._password = username, password

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == self._username and password == self._password


@contextmanager
def sftp_server(
    root: Path, tmp: Path, username: str = "distributor", password: str = "pw-Sftp-7731"
) -> Iterator[SftpServer]:
    root.mkdir(parents=True, exist_ok=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    def sftp_factory(chan: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
        return asyncssh.SFTPServer(chan, chroot=str(root).encode())

    async def start() -> None:
        server = await asyncssh.create_server(
            lambda: _Server(username, password),
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            sftp_factory=sftp_factory,
            allow_scp=False,
        )
        holder["server"] = server
        holder["port"] = server.sockets[0].getsockname()[1]

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="sftp-server", daemon=True)
    thread.start()
    assert started.wait(10), "the SFTP server did not start"
    port = int(holder["port"])  # type: ignore[call-overload]
    known_hosts = tmp / "known_hosts"
    public = host_key.export_public_key("openssh").decode().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    try:
        yield SftpServer(port, root, known_hosts, username, password)
    finally:

        async def stop() -> None:
            server = holder["server"]
            server.close()  # type: ignore[attr-defined]
            await server.wait_closed()  # type: ignore[attr-defined]

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
