"""The cyclic garbage collector paused while a big file is validated and stored chunk by chunk.

Why: every chunk makes tens of thousands of objects (rows, devices, change requests) that live
until it is written. The collector promotes them to its oldest generation, and a full collection
then walks every object of the process (the HTTP app's whole heap): measured on a 100,000-row
upload, 10 full collections took up to 1.2 s each, 7.6 s of the 25.7 s upload, and each held the
GIL, so ``/healthz`` waited as long. The chunks' objects are freed by reference counting; what is
cyclic is collected between chunks (``collect_young``), when little is alive, so a full
collection is never needed while the file goes through.

The pause is counted: with two big uploads at once, the collector comes back when the last ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_was_enabled = False


@contextmanager
def paused_collector() -> Iterator[None]:
    """Automatic collection off for the block (for every thread: the collector is the process's),
    back on when the last block that turned it off ends, even by an exception."""
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()


def collect_young() -> None:
    """Collect the two young generations: between chunks they hold the last chunk's cyclic garbage,
    if any, and the few objects still alive, so this takes about a millisecond."""
    gc.collect(1)


__all__ = ["collect_young", "paused_collector"]
