"""Property: an 856 damaged anywhere, taken by the X12 drop intake on both backends, is either
refused with a reason (nothing stored) or taken as exactly one new bulk change holding every device
the 856 lists; every acknowledgement or advice it writes reads back as sound X12. Never a traceback."""

from __future__ import annotations

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkchange_pipeline.intake.drops.x12_files import take_x12
from bulkchange_pipeline.intake.parsing import IntakeLimits
from bulkchange_pipeline.intake.x12 import check_envelope, parse_interchange
from bulkchange_pipeline.store.file_drops import drop_settings, set_drop_settings
from bulkchange_pipeline.store.schema import device_change, x12_interchange

from .helpers import bulk_change_ids
from .x12_helpers import partner_settings, seed_inactive_tenant, ship_notice

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _damage(text: str, data: st.DataObject) -> str:
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(text)))
        piece = data.draw(st.text(alphabet="*~>^0123456789ASNREFLIHTG \n\x00\x07é", min_size=1, max_size=3))
        action = data.draw(st.sampled_from(["delete", "insert", "replace", "cut"]))
        if action == "delete":
            text = text[:at] + text[at + len(piece) :]
        elif action == "insert":
            text = text[:at] + piece + text[at:]
        elif action == "replace":
            text = text[:at] + piece + text[at + len(piece) :]
        else:
            text = text[:at]
    return text


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_a_damaged_856_is_taken_whole_or_refused_with_a_reason(engine, jasper):
    sim, base_url = jasper
    tenant = seed_inactive_tenant(engine, sim, base_url)
    set_drop_settings(engine, tenant.ids["tenant_id"], partner_settings=partner_settings(tenant))
    drop = drop_settings(engine, tenant.ids["tenant_id"])
    assert drop is not None
    original = ship_notice(tenant.iccids).decode()
    controls = iter(range(1, 10_000))

    @PROPERTY
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        # A fresh ISA13 each example (same width), so that an example is never another's resend.
        text = _damage(original.replace("000000905", f"{next(controls):09d}"), data)
        before = (bulk_change_ids(engine), _count(engine, x12_interchange), _count(engine, device_change))
        done = take_x12(engine, drop, "asn.x12", text.encode(), IntakeLimits())
        assert done.text.strip()
        for _, answer in done.outbox:
            assert check_envelope(parse_interchange(answer)) == []
        after = bulk_change_ids(engine)
        if done.outcome == "rejected":
            assert (after, _count(engine, x12_interchange), _count(engine, device_change)) == before
            return
        assert done.outcome == "taken", done
        (new,) = set(after) - set(before[0])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).where(device_change.c.bulk_change_id == new)).scalar_one()
        assert rows == len(tenant.iccids) and _count(engine, x12_interchange) == before[1] + 1

    prop()
