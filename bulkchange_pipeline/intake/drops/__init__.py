"""File drops (issue 20): tenants drop request files into an inbox (a local folder or SFTP) and
find the per-device results in their outbox. ``defs.file_drops`` runs ``run_tick`` as a sensor.

- ``names``: which inbox names are taken, and the safe names we write;
- ``formats``: the format registry (CSV, JSON, XML; X12 plugs in with ``register_format``);
- ``locations``: the drop folders as fsspec file systems, SFTP credentials from the environment;
- ``inbox``: taking files (content-hash idempotency, processed/ and rejected/);
- ``outbox``: results (and acknowledgements) written once;
- ``x12_files`` and ``x12_advice``: X12 856s in, 997s at once and 824s when done (registered here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from .formats import FORMATS, DropDefaults, DropFormat, pick_format, register_format
from .inbox import TickReport, idempotency_key, take_inbox_files
from .locations import DropConfigError, DropFolders, check_drop_url, default_root, open_folders
from .outbox import OutboxReport, results_name, write_due_results
from .x12_advice import advance_interchanges
from .x12_files import X12_FORMAT

__all__ = [
    "FORMATS",
    "DropConfigError",
    "DropDefaults",
    "DropFolders",
    "DropFormat",
    "DropTick",
    "OutboxReport",
    "TickReport",
    "X12_FORMAT",
    "advance_interchanges",
    "check_drop_url",
    "default_root",
    "idempotency_key",
    "open_folders",
    "pick_format",
    "register_format",
    "results_name",
    "run_tick",
    "take_inbox_files",
    "write_due_results",
]


@dataclass
class DropTick:
    inbox: TickReport
    outbox: OutboxReport

    @property
    def lines(self) -> list[str]:
        return self.inbox.lines + self.outbox.lines

    @property
    def idle(self) -> bool:
        return not self.lines


def run_tick(engine: sa.Engine, previous: Mapping[str, str], environ: Mapping[str, str] | None = None) -> DropTick:
    """One sensor tick: take stable inbox files, then write the results of finished drops and move
    X12 interchanges on (their next change, or their 824)."""
    inbox = take_inbox_files(engine, previous, environ=environ)
    outbox = write_due_results(engine, environ=environ)
    x12 = advance_interchanges(engine, environ=environ)
    outbox.written += x12.written
    outbox.errors += x12.errors
    outbox.lines.extend(x12.lines)
    return DropTick(inbox, outbox)
