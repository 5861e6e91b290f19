"""Take files from the tenants' inboxes: each stable new file goes through ``submit`` (the API's
intake) under its content hash as idempotency key, then moves to ``processed/``; a refused one
moves to ``rejected/`` with ``<name>.reason.txt`` beside it.

A file is taken only when a tick sees the size and modification time an earlier tick saw (the
sensor keeps them in its cursor): an SFTP upload writes the file in place, and nothing on the
server says when it is complete, so one tick interval of silence is the sign. Names that say "still
being written" (dotfiles, ``*.part`` and the like, ``names.is_in_progress``) are never taken.

A file that names no service provider (a CSV, too, when the drop settings name none) is split by
carrier into a submission with one bulk change per service provider (``intake.split``, through the
same ``submit``); the drop record keeps the submission and the outbox gets one results file for it.

Crash-safety, step by step: the bulk change (or submission) is stored (key:
``file-sha256:<hash>``), then the drop record, then the file is moved, then the record says so. A
crash between any two steps leaves the file in the inbox; the next tick finds the hash already
stored (``submit`` answers the existing bulk change or submission, or the record is there with
``moved_at`` empty) and finishes the move, creating nothing.
A second copy of a content already taken (any name) moves to ``processed/`` with ``<name>.note.txt``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ...store.file_drops import DropSettings, find_drop, list_drop_settings, mark_moved, record_drop
from ...store.idempotency import IdempotencyConflict
from ..parsing import IntakeError, IntakeLimits
from ..submit import submit
from ..validation import RequestRejected
from .formats import DropDefaults, DropFormat, known_suffixes, pick_format
from .locations import DropConfigError, DropFolders, open_folders
from .names import is_in_progress, is_plain_name, numbered_name, safe_name, split_suffix
from .outbox import write_acknowledgement, write_outbox_file

__all__ = ["MAX_LISTED", "MAX_TAKEN_PER_TICK", "STALE_SECONDS", "TickReport", "idempotency_key", "take_inbox_files"]

MAX_TAKEN_PER_TICK = 20  # files taken per tick, every tenant together: a tick stays far inside 60 s
MAX_LISTED = 1_000  # inbox entries looked at per tenant and tick (by name): the cursor stays small
KEY_PREFIX = "file-sha256:"
STALE_SECONDS = 24 * 3600  # an upload name ("x.part", a dotfile) unchanged this long never completes
NOT_FOLLOWED = (
    "a symbolic link, not a file: links are never followed (one could point outside the inbox); drop the file itself"
)
NOT_A_FILE = "not a regular file; drop a plain file"
NEVER_COMPLETED = (
    "never completed: its name says it is still being written (a dotfile or a temporary suffix such as .part), "
    "but it has not changed for 24 hours; upload under a temporary name, then rename it to its final name"
)


def idempotency_key(content_sha256: str) -> str:
    return KEY_PREFIX + content_sha256


@dataclass
class TickReport:
    """What one tick did, as lines for the sensor's log, and the sizes seen (the next cursor)."""

    seen: dict[str, str] = field(default_factory=dict)  # "<tenant>:<name digest>" -> "size:mtime"
    lines: list[str] = field(default_factory=list)
    taken: int = 0
    rejected: int = 0
    duplicates: int = 0
    errors: int = 0

    def note(self, text: str) -> None:
        self.lines.append(text)


def _seen_key(tenant_id: int, name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8", errors="surrogateescape")).hexdigest()[:16]
    return f"{tenant_id}:{digest}"


def _free_name(folders: DropFolders, folder: str, name: str, tag: str, *beside: str) -> str:
    """``name``, or a numbered variant, such that neither it nor its ``beside`` files exist in ``folder``."""
    candidates = [name, numbered_name(name, tag)] + [numbered_name(name, f"{tag}-{n}") for n in range(2, 50)]
    for candidate in candidates:
        if not any(folders.fs.exists(f"{folder}/{candidate}{extra}") for extra in ("", *beside)):
            return candidate
    raise OSError(f"no free name for {name!r} in {folder}")


def _write_text(folders: DropFolders, path: str, text: str) -> None:
    with folders.fs.open(path, "wb") as f:
        f.write(text.encode("utf-8"))


def _move(folders: DropFolders, source: str, folder: str, name: str, tag: str, beside: str, text: str | None) -> str:
    target = _free_name(folders, folder, name, tag, beside)
    folders.fs.mv(source, f"{folder}/{target}")
    if text is not None:
        _write_text(folders, f"{folder}/{target}{beside}", text + "\n")
    return target


def _read(folders: DropFolders, path: str, limits: IntakeLimits) -> bytes:
    with folders.fs.open(path, "rb") as f:
        data: bytes = f.read(limits.max_bytes + 1)
    return data


def _take(
    engine: sa.Engine, drop: DropSettings, folders: DropFolders, name: str, report: TickReport, limits: IntakeLimits
) -> None:
    source = f"{folders.inbox}/{name}"
    shown = safe_name(name)
    data = _read(folders, source, limits)
    sha = hashlib.sha256(data).hexdigest()
    tag = sha[:12]
    tenant = drop.tenant_id

    def reject(reason: str, fmt: DropFormat | None) -> None:
        where = _move(folders, source, folders.rejected, shown, tag, ".reason.txt", reason)
        write_acknowledgement(folders, fmt, shown, data, reason)
        report.rejected += 1
        report.note(f"tenant {tenant}: rejected {shown!r} as rejected/{where}: {reason[:300]}")

    fmt = pick_format(split_suffix(shown)[1], data) if len(data) <= limits.max_bytes else None
    if fmt is not None and fmt.take is not None:  # X12: the format takes the file itself
        done = fmt.take(engine, drop, shown, data, limits)
        for out_name, content in done.outbox:  # at once, before the file leaves the inbox
            write_outbox_file(folders, out_name, [content])
        if done.outcome == "rejected":
            where = _move(folders, source, folders.rejected, shown, tag, ".reason.txt", done.text)
            report.rejected += 1
            report.note(f"tenant {tenant}: rejected {shown!r} as rejected/{where}: {done.text[:300]}")
        else:
            resend = done.outcome == "resend"
            where = _move(folders, source, folders.processed, shown, tag, ".note.txt", done.text if resend else None)
            report.duplicates += resend
            report.taken += not resend
            report.note(f"tenant {tenant}: {shown!r} to processed/{where}: {done.text[:300]}")
        return
    record = find_drop(engine, tenant, sha)
    if record is not None:
        if record.moved_at is None and record.name == shown:  # a crash came after storing: finish
            where = _move(folders, source, folders.processed, shown, tag, ".note.txt", None)
            mark_moved(engine, record.id)
            report.note(f"tenant {tenant}: moved {shown!r} to processed/{where} ({record.taken_as})")
            return
        note = (
            f"Same content (sha256 {sha}) as {record.name!r}, already taken as {record.taken_as}: "
            "nothing new was created."
        )
        where = _move(folders, source, folders.processed, shown, tag, ".note.txt", note)
        report.duplicates += 1
        report.note(f"tenant {tenant}: {shown!r} is a copy of {record.name!r}: moved to processed/{where}")
        return
    if len(data) > limits.max_bytes:
        reject(f"the file has more than {limits.max_bytes} bytes, the limit", None)
        return
    if fmt is None:
        reject(f"not a file type the inbox takes: name it with one of {', '.join(known_suffixes())}", None)
        return
    defaults = DropDefaults(tenant, idempotency_key(sha), drop.service_provider_id, drop.change_type, limits)
    assert fmt.read is not None  # a format without its own ``take`` has a reader
    try:
        parsed = fmt.read(data, defaults)
        outcome = submit(
            engine,
            tenant,
            parsed.request,
            f"file-drop:{shown[:150]}",
            row_errors=parsed.row_errors,
            row_numbers=parsed.row_numbers,
        )
    except (IntakeError, RequestRejected, IdempotencyConflict) as exc:
        reject(str(exc), fmt)
        return
    if outcome.submission_id is not None:  # no service provider: split by carrier (``intake.split``)
        record = record_drop(engine, tenant, sha, shown, fmt.name, None, submission_id=outcome.submission_id)
    else:
        assert outcome.bulk_change_id is not None
        record = record_drop(engine, tenant, sha, shown, fmt.name, outcome.bulk_change_id)
    where = _move(folders, source, folders.processed, shown, tag, ".note.txt", None)
    mark_moved(engine, record.id)
    write_acknowledgement(folders, fmt, shown, data, None)
    report.taken += 1
    report.note(f"tenant {tenant}: took {shown!r} as {record.taken_as}: {outcome.message}")


def _candidates(folders: DropFolders, now: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(name, "size:mtime") of the plain files in the inbox, oldest first, at most ``MAX_LISTED``;
    and (name, reason) of the entries to refuse without reading them: links and other entries that
    are not plain files (never followed: a link could point out of the inbox), and names that say
    "still being written" but have not changed for ``STALE_SECONDS``."""
    found: list[tuple[Any, str, str]] = []
    refused: list[tuple[str, str]] = []
    for entry in folders.fs.ls(folders.inbox, detail=True):
        entry_info: dict[str, Any] = entry
        name = str(entry_info["name"]).rstrip("/").rsplit("/", 1)[-1]
        kind, mtime = entry_info.get("type"), entry_info.get("mtime") or 0
        if not is_plain_name(name) or (kind == "directory" and not entry_info.get("islink")):
            continue  # folders (processed/, rejected/, the partner's own)
        if entry_info.get("islink"):
            refused.append((name, NOT_FOLLOWED))
        elif kind != "file":
            refused.append((name, f"{NOT_A_FILE} (it is a {str(kind)[:20]!r} entry)"))
        elif is_in_progress(name):
            if isinstance(mtime, int | float) and now - float(mtime) > STALE_SECONDS:
                refused.append((name, NEVER_COMPLETED))
        else:
            found.append((mtime, name, f"{entry_info.get('size')}:{entry_info.get('mtime')}"))
    found.sort(key=lambda f: (f[0], f[1]))  # oldest first: of two copies, the first dropped is the original
    return [(name, signature) for _, name, signature in found[:MAX_LISTED]], refused[:MAX_LISTED]


def _refuse_entry(folders: DropFolders, tenant: int, name: str, reason: str, report: TickReport) -> None:
    """Move an entry that is not taken (a link, a never-completed upload) to ``rejected/`` with its
    reason beside it, unread: a rename moves a link itself, never what it points to."""
    shown = safe_name(name)
    tag = hashlib.sha256(name.encode("utf-8", errors="surrogateescape")).hexdigest()[:12]
    where = _move(folders, f"{folders.inbox}/{name}", folders.rejected, shown, tag, ".reason.txt", reason)
    report.rejected += 1
    report.note(f"tenant {tenant}: rejected {shown!r} as rejected/{where}: {reason}")


def take_inbox_files(
    engine: sa.Engine,
    previous: Mapping[str, str],
    *,
    limit: int = MAX_TAKEN_PER_TICK,
    limits: IntakeLimits = IntakeLimits(),
    environ: Mapping[str, str] | None = None,
) -> TickReport:
    """One pass over every enabled tenant's inbox: take the files whose size and mtime are as
    ``previous`` (the last tick's ``TickReport.seen``) recorded them, at most ``limit`` in all.
    A problem with one tenant's folders or one file is reported and the rest go on."""
    report = TickReport()
    budget = limit
    for drop in list_drop_settings(engine):
        try:
            folders = open_folders(drop, environ)
        except DropConfigError as exc:
            report.errors += 1
            report.note(f"tenant {drop.tenant_id}: inbox not usable: {exc}")
            continue
        try:
            candidates, refused = _candidates(folders, time.time())
            for name, reason in refused:
                try:
                    _refuse_entry(folders, drop.tenant_id, name, reason, report)
                except (OSError, ValueError) as exc:
                    report.errors += 1
                    report.note(f"tenant {drop.tenant_id}: {safe_name(name)!r} not moved: {type(exc).__name__}: {exc}")
            for name, signature in candidates:
                key = _seen_key(drop.tenant_id, name)
                report.seen[key] = signature
                if previous.get(key) != signature or budget <= 0:
                    continue  # new or still growing: looked at again next tick
                budget -= 1
                try:
                    _take(engine, drop, folders, name, report, limits)
                except (OSError, ValueError) as exc:  # the file vanished, a move failed: next tick retries
                    report.errors += 1
                    report.note(f"tenant {drop.tenant_id}: {safe_name(name)!r} not taken: {type(exc).__name__}: {exc}")
        except OSError as exc:
            report.errors += 1
            report.note(f"tenant {drop.tenant_id}: cannot list the inbox: {exc}")
        finally:
            folders.close()
    return report
