"""Inbox entries that are never taken are not left there forever (review of issue 20): a symbolic
link (never followed) or another non-file entry moves to ``rejected/`` with a reason at once, and an
upload name (``x.part``, a dotfile) unchanged for 24 hours moves there as "never completed"."""

from __future__ import annotations

import os
import time

from bulkchange_pipeline.intake.drops import default_root
from bulkchange_pipeline.intake.drops.inbox import NEVER_COMPLETED, NOT_A_FILE, NOT_FOLLOWED, STALE_SECONDS
from bulkchange_pipeline.store.file_drops import set_drop_settings

from .helpers import STATUS_UPDATE, Ticks, bulk_change_ids, request_file, seed_tenant


def _inbox(engine, jasper):
    sim, base_url = jasper
    tenant = seed_tenant(engine, sim, base_url, 3)
    set_drop_settings(
        engine,
        tenant.ids["tenant_id"],
        service_provider_id=tenant.ids["service_provider_id"],
        change_type=STATUS_UPDATE,
    )
    inbox = default_root(tenant.ids["tenant_id"]) / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    return tenant, inbox


def test_links_and_other_entries_are_rejected_unfollowed(engine, dagster_instance, jasper, tmp_path):
    tenant, inbox = _inbox(engine, jasper)
    outside = tmp_path / "outside.csv"
    outside.write_bytes(request_file("csv", tenant))
    os.symlink(outside, inbox / "link.csv")
    os.symlink(tmp_path / "missing.csv", inbox / "dangling.csv")
    os.mkfifo(inbox / "pipe.csv")
    Ticks(dagster_instance).drop()
    rejected = inbox / "rejected"
    assert sorted(os.listdir(inbox)) == ["processed", "rejected"]
    assert os.path.islink(rejected / "link.csv") and os.readlink(rejected / "link.csv") == str(outside)
    assert os.path.islink(rejected / "dangling.csv")
    assert outside.read_bytes() == request_file("csv", tenant)  # what the link names is untouched
    assert (rejected / "link.csv.reason.txt").read_text() == NOT_FOLLOWED + "\n"
    assert (rejected / "dangling.csv.reason.txt").read_text() == NOT_FOLLOWED + "\n"
    assert (rejected / "pipe.csv.reason.txt").read_text().startswith(NOT_A_FILE)
    assert bulk_change_ids(engine) == []


def test_an_upload_name_unchanged_for_a_day_is_rejected_as_never_completed(engine, dagster_instance, jasper):
    tenant, inbox = _inbox(engine, jasper)
    data = request_file("csv", tenant)
    for name in ("old.csv.part", "..csv", "new.csv.part"):
        (inbox / name).write_bytes(data)
    day_ago = time.time() - STALE_SECONDS - 60
    for name in ("old.csv.part", "..csv"):
        os.utime(inbox / name, (day_ago, day_ago))
    Ticks(dagster_instance).drop()
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["new.csv.part"]  # still being written
    rejected = sorted(p.name for p in (inbox / "rejected").iterdir())
    assert len(rejected) == 4 and sum(n.endswith(".reason.txt") for n in rejected) == 2
    for reason in (inbox / "rejected").glob("*.reason.txt"):
        assert reason.read_text() == NEVER_COMPLETED + "\n"
    assert bulk_change_ids(engine) == []
