"""Free loopback ports for servers a test must name before they start (a simulator or deployment in
a child process, a callback URL where nothing listens).

Binding port 0, closing the socket and handing out its number is racy: until the server binds it,
the kernel may give the same port to another pytest-xdist worker's bind(0), to a concurrent pytest
run, or to an outgoing connection. So ports come from a range below the kernel's ephemeral range
(Linux: 32768-60999), where bind(0) and outgoing connections never land, and each port is claimed
with an exclusive lock on a file shared by every test process on the machine; a claim lasts as
long as the process that made it (the kernel drops the lock when it exits, however it exits).

A server that binds in-process needs none of this: `run_app_in_thread` binds port 0 itself and
keeps the socket.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path
from typing import IO

__all__ = ["PORT_RANGE", "free_port"]

PORT_RANGE = range(20000, 32000)
_CLAIMS = Path(tempfile.gettempdir()) / "bulkchange-test-ports"
_held: list[IO[bytes]] = []  # open, locked claim files: closing one would release its port


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on and no other test process is given while this one lives."""
    _CLAIMS.mkdir(exist_ok=True)
    # Start at a random place: workers started together then rarely contend for the same lock.
    start = random.Random(f"{os.getpid()}-{os.environ.get('PYTEST_XDIST_WORKER', '')}").randrange(len(PORT_RANGE))
    for i in range(len(PORT_RANGE)):
        port = PORT_RANGE[(start + i) % len(PORT_RANGE)]
        claim = (_CLAIMS / f"{port}.lock").open("ab")
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another process holds it (or this one: each open file is its own lock)
            claim.close()
            continue
        if _bindable(host, port):
            _held.append(claim)
            return port
        claim.close()  # something outside the tests listens there
    raise RuntimeError(f"no free port left in {PORT_RANGE.start}-{PORT_RANGE.stop - 1}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
