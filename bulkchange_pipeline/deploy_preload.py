"""What every run worker loads once it runs, loaded once in the run workers' fork server instead.

``deploy_code_server`` forks each run worker from a process that has Dagster and the code location
imported (its ``PRELOAD``). Those imports leave out what a worker only touches once it calls a
carrier or opens a database: httpcore and anyio's asyncio backend (httpx imports them when its
first client is built, about 0.25 s), psycopg2 (Dagster's PostgreSQL storage and the business
database), and the certificate-verifying TLS context every carrier client shares (loading the CA
bundle, about 60 ms). A worker paid for them after it started, about 0.35 CPU-seconds each, 8 of
them when 24 accounts start together on 2 cores (issue 22, P6: the last run started 21 s after
submission on a quiet machine, with the start-up CPU-bound). Imported here, they are in every
fork already.

The fork server is single-threaded and never uses the TLS context itself, so each child gets a
copy no other thread touches; the context opens no socket. Nothing here connects to a database.
"""

from __future__ import annotations

import anyio._backends._asyncio  # noqa: F401  (httpcore's socket layer under asyncio)
import httpcore  # noqa: F401
import psycopg2  # noqa: F401

from .carriers.http import shared_tls_context

shared_tls_context()
