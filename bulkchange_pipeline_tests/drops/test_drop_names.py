"""Property: whatever names files have in an inbox (unicode, bytes that are not UTF-8, backslashes,
``..``, names at the file system's length limit, names that collide with files already in
processed/ or rejected/, subfolders), a drop tick never raises, never writes or moves anything
outside the tenant's drop folders, and every takeable file ends in processed/ or rejected/ under a
name that is one safe path component."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkchange_pipeline.intake.drops import default_root, run_tick
from bulkchange_pipeline.intake.drops.names import MAX_NAME_BYTES, is_in_progress, safe_name
from bulkchange_pipeline.store.file_drops import list_drop_settings, set_drop_settings

from ..factories import iccid, make_account
from .helpers import STATUS_UPDATE

VALID = f"iccid,targetStatus\n{iccid(1)},DEACTIVATED\n".encode()
CONTENTS = st.sampled_from([VALID, b"iccid,colour\n1,red\n", b"\xff\xfe\x00garbage", b'{"devices": []}', b"<x/>", b""])
TRICKY = st.sampled_from(
    [
        b"..",
        b".",
        b"...",
        b"..\\..\\etc\\passwd",
        b"a\\b.csv",
        b"orders.csv",
        b"ORDERS.CSV",
        b"x.reason.txt",
        b"file~0123456789ab.csv",
        b"\xff\xfe.csv",
        b"\xe2\x80\xae.csv",
        b"con.csv",
        b"a" * 255,
        b"\xc3\xa9" * 127 + b".x",
        b" .csv",
        b"-.csv",
        b"=cmd.csv",
        b"\n.csv",
        b"\x1b[31m.csv",
    ]
)
NAMES = st.one_of(
    TRICKY,
    st.binary(min_size=1, max_size=255),
    st.text(min_size=1, max_size=120).map(lambda t: t.encode("utf-8", errors="surrogateescape")),
)


def _create(folder: Path, raw: bytes, data: bytes) -> bool:
    """Create ``raw`` (a file name as bytes) in ``folder``; a name with ``/`` makes subfolders. False:
    the file system refuses the name (NUL, too long, ``.``/``..``) or it would leave ``folder``."""
    if b"\x00" in raw:
        return False
    path = os.path.join(os.fsencode(folder), raw)
    if not os.path.realpath(path).startswith(os.fsencode(folder) + b"/"):
        return False
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.isdir(path):
            return False
        with open(path, "wb") as f:
            f.write(data)
    except OSError:
        return False
    return True


def _tree(root: Path) -> dict[bytes, bytes]:
    out = {}
    for base, _, files in os.walk(os.fsencode(root)):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, os.fsencode(root))] = f.read()
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.tuples(NAMES, CONTENTS), min_size=1, max_size=5), taken=st.lists(NAMES, max_size=3))
def test_names_never_escape_the_drop_folders_nor_crash_the_tick(engine, tmp_path, files, taken):
    drops = list_drop_settings(engine)  # one tenant for every example (the database outlives them)
    if not drops:
        ids = make_account(engine, "http://127.0.0.1:9")
        set_drop_settings(
            engine, ids["tenant_id"], service_provider_id=ids["service_provider_id"], change_type=STATUS_UPDATE
        )
        drops = list_drop_settings(engine)
    tenant_id = drops[0].tenant_id
    root = default_root(tenant_id)
    shutil.rmtree(root, ignore_errors=True)
    inbox = root / "inbox"
    outside = tmp_path / "outside"
    shutil.rmtree(outside, ignore_errors=True)
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"untouched")
    for raw in taken:  # names already used in processed/ and rejected/: collisions
        _create(inbox / "processed", raw, b"earlier")
        _create(inbox / "rejected", raw, b"earlier")
    created = {raw: data for raw, data in files if _create(inbox, raw, data)}
    before_done = {k: v for k, v in _tree(inbox).items() if k.startswith((b"processed/", b"rejected/"))}

    first = run_tick(engine, {})
    second = run_tick(engine, first.inbox.seen)
    assert second.inbox.errors == 0, second.lines

    assert _tree(outside) == {b"keep.txt": b"untouched"}
    after = _tree(inbox)
    takeable = {raw: data for raw, data in created.items() if b"/" not in raw and not is_in_progress(os.fsdecode(raw))}
    for rel, data in before_done.items():  # nothing already there was overwritten
        assert after.get(rel) == data
    left = {rel for rel in after if b"/" not in rel}
    assert left == {raw for raw in created if b"/" not in raw} - set(takeable)  # only in-progress names stay
    new = {
        rel: data
        for rel, data in after.items()
        if rel.startswith((b"processed/", b"rejected/")) and rel not in before_done
    }
    beside = [
        rel for rel in new for end in (b".reason.txt", b".note.txt") if rel.endswith(end) and rel[: -len(end)] in after
    ]
    moved = [rel for rel in new if rel not in beside]
    assert sorted(new[rel] for rel in moved) == sorted(takeable.values())
    names = {rel.split(b"/", 1)[1].decode("utf-8") for rel in moved}  # safe names are UTF-8
    for name in names:
        assert name == safe_name(name) and len(name.encode()) <= MAX_NAME_BYTES
    for rel in new:
        name = rel.split(b"/", 1)[1].decode("utf-8")
        if rel in beside:  # a reason or note file, beside the file it is about
            assert len(name.encode()) <= MAX_NAME_BYTES + 12
    # Outbox and the root hold nothing a name put there.
    assert set(os.listdir(root)) <= {"inbox", "outbox"}


@given(st.text(max_size=400))
def test_safe_name_is_one_short_plain_component(name):
    safe = safe_name(name)
    assert safe and safe not in (".", "..") and not safe.startswith(".")
    assert not any(c in safe for c in '/\\\x00:*?"<>|') and safe.isprintable()
    assert len(safe.encode("utf-8")) <= MAX_NAME_BYTES
    assert safe_name(safe) == safe
