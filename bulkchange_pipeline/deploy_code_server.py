"""``dagster api grpc`` whose run workers are forked from a preloaded process: what ``bulkchange
deploy-local`` runs as its code server.

With the default run launcher every run is a new Python process that the code server starts with
``multiprocessing``'s *spawn* method (fixed in ``dagster._grpc.server.DagsterApiServer``). Each
then imports Dagster, dagster-postgres and this code location from scratch: about 3 CPU-seconds
and 2-13 s of wall time on this 2-core machine, and the code server's ``StartRun`` answers only
once the new process is up, so the run queue's launches wait for it too. 24 carrier accounts
submitting together spent the first minute of a 200 s job importing (issue 22, P6: the last run
started 279 s after submission, workers took 69 s to start at the median).

This entry point makes the server use the *forkserver* method instead, with Dagster, its
PostgreSQL storage and ``bulkchange_pipeline.defs`` preloaded in the fork server (started as soon
as the server is, so the first run does not pay for it): a run worker is a ``fork`` of that
process, ready in milliseconds. The fork server is a fresh single-threaded process (not a fork of
the gRPC server and its threads), and it opens no database connection while preloading (the
resources connect when a step first uses them), so each worker still starts clean. Everything
else, the run's own process, its termination event and queue, is Dagster's code unchanged.

``python -m bulkchange_pipeline.deploy_code_server api grpc -m bulkchange_pipeline.defs ...``
takes exactly the arguments of ``dagster``. If a Dagster upgrade changes how the server starts
runs, ``fork_run_workers`` refuses to patch it and ``test_fleet_settings`` fails first.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from typing import Any

__all__ = ["PRELOAD", "fork_run_workers", "main"]

# What every run worker imports anyway, loaded once in the fork server; deploy_preload adds what a
# worker only loads once it calls a carrier or opens a database (httpcore, psycopg2, the TLS context).
PRELOAD = [
    "dagster",
    "dagster_postgres",
    "dagster._grpc.impl",
    "bulkchange_pipeline.defs",
    "bulkchange_pipeline.deploy_preload",
]


def fork_run_workers(preload: list[str] | None = None) -> None:
    """Make every ``DagsterApiServer`` created in this process start runs from a preloaded fork
    server, and start that fork server in the background when the first one is created."""
    import multiprocessing.forkserver as forkserver

    from dagster._grpc import server

    init = server.DagsterApiServer.__init__
    if getattr(init, "_bulkchange_forks", False):
        return
    if "_mp_ctx" not in init.__code__.co_names:
        raise RuntimeError(
            "dagster._grpc.server.DagsterApiServer no longer keeps its multiprocessing context in _mp_ctx "
            "(Dagster upgraded?): check how it starts run workers, then update bulkchange_pipeline/deploy_code_server.py"
        )

    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload if preload is not None else PRELOAD))
        self._mp_ctx = ctx
        threading.Thread(target=forkserver.ensure_running, name="forkserver-warmup", daemon=True).start()

    patched._bulkchange_forks = True  # type: ignore[attr-defined]
    server.DagsterApiServer.__init__ = patched  # type: ignore[method-assign]


def main() -> None:
    """``dagster`` (same arguments), with run workers forked from the preloaded fork server."""
    fork_run_workers()
    from dagster._cli import main as dagster_main

    sys.argv[0] = "dagster"
    dagster_main()


if __name__ == "__main__":
    main()
