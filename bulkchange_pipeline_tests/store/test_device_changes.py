"""claim(): the rows a batch may send are exactly the ones it claimed."""

import sqlalchemy as sa

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.device_changes import claim
from bulkchange_pipeline.store.schema import device_change

from ..factories import make_account, make_bulk_change, make_devices


def test_claim_skips_rows_cancelled_after_the_batch_was_loaded(engine):
    ids = make_account(engine, "http://127.0.0.1:9/rws/api/v1")
    devices = make_devices(engine, ids, 4)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    with engine.begin() as conn:
        row_ids = (
            conn.execute(
                sa.select(device_change.c.id)
                .where(device_change.c.bulk_change_id == bc_id)
                .order_by(device_change.c.id)
            )
            .scalars()
            .all()
        )
        conn.execute(sa.update(device_change).where(device_change.c.id == row_ids[1]).values(status="CANCELLED"))
    assert claim(engine, row_ids) == {row_ids[0], row_ids[2], row_ids[3]}
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                sa.select(device_change.c.id, device_change.c.status).where(device_change.c.bulk_change_id == bc_id)
            ).all()
        )
    assert statuses[row_ids[1]] == "CANCELLED"
    assert {statuses[i] for i in (row_ids[0], row_ids[2], row_ids[3])} == {"PROCESSING"}
    assert claim(engine, []) == set()
