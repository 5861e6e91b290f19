"""Reference lookups and the demo seed, on SQLite and PostgreSQL: tenant-scoped and set-based."""

from __future__ import annotations

import sqlalchemy as sa

from bulkchange_pipeline.domain import IdentifierKind, Integration, check_eid, check_iccid, check_imei, check_msisdn
from bulkchange_pipeline.store import reference as ref
from bulkchange_pipeline.store.schema import device
from bulkchange_pipeline.store.seed import demo_iccid, load_demo, seed_demo


def test_seed_is_valid_idempotent_and_resettable(engine: sa.Engine) -> None:
    seed = seed_demo(engine, devices_per_carrier=10, base_urls={"teal": "http://127.0.0.1:9999"})
    assert seed.created and set(seed.service_providers) == {i.value for i in Integration}
    jasper = ref.get_service_provider(engine, seed.tenant_id, seed.service_providers["jasper"])
    assert jasper is not None and jasper.name == "AT&T Control Center (POD19)" and jasper.carrier == "att_pod19"
    assert jasper.base_url == "http://127.0.0.1:8910/rws/api/v1" and jasper.credentials_name == "DEMO_JASPER"
    assert jasper.integration is Integration.JASPER and jasper.write_enabled
    teal = ref.get_service_provider(engine, seed.tenant_id, seed.service_providers["teal"])
    assert teal.base_url == "http://127.0.0.1:9999"
    assert ref.carrier_rate_plans(engine, seed.tenant_id, jasper.id)["IOT-5GB"].communication_plan == "CP-IOT-DATA"

    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(device.c.tenant_id, device.c.iccid, device.c.imei, device.c.msisdn, device.c.eid)
        ).all()
    assert len(rows) == 6 * 10 + 5
    assert all(
        check_iccid(r.iccid) is None and check_imei(r.imei) is None and check_msisdn(r.msisdn) is None for r in rows
    )
    assert all(check_eid(r.eid) is None for r in rows if r.eid)
    assert len({r.iccid for r in rows}) == len(rows)

    again = seed_demo(engine, devices_per_carrier=10)
    assert not again.created and again.service_providers == seed.service_providers
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(device)).scalar_one() == 65
    reset = seed_demo(engine, devices_per_carrier=3, reset=True)
    assert reset.created and load_demo(engine).sample_iccids["jasper"] == [demo_iccid(1, 0, i) for i in range(3)]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(device)).scalar_one() == 6 * 3 + 5


def test_lookups_are_tenant_scoped(engine: sa.Engine) -> None:
    seed = seed_demo(engine, devices_per_carrier=5)
    assert ref.get_service_provider(engine, seed.tenant_id, seed.other_service_provider_id) is None
    assert ref.tenant_id_by_name(engine, "other") == seed.other_tenant_id
    assert ref.find_devices(engine, seed.tenant_id, IdentifierKind.ICCID, seed.other_iccids) == {}
    mine = ref.find_devices(engine, seed.other_tenant_id, "iccid", seed.other_iccids)
    assert sorted(mine) == sorted(seed.other_iccids)
    other_customers = ref.customers(engine, seed.other_tenant_id)
    assert ref.customers(engine, seed.tenant_id, other_customers) == {}
    assert {c.name for c in ref.customers(engine, seed.tenant_id).values()} == {
        "Acme Logistics",
        "Globex Fleet",
        "Initech Sensors",
    }
    assert ref.customer_pool_ids(engine, seed.tenant_id, ref.customer_pool_ids(engine, seed.other_tenant_id)) == set()
    plans = ref.customer_rate_plans(engine, seed.tenant_id)
    assert sorted(plans.values()) == [100, 1024, 5120]


def test_find_devices_chunks_large_lists(engine: sa.Engine) -> None:
    tenant_id = ref.create_tenant(engine, "bulk")
    sp = ref.create_service_provider(
        engine,
        tenant_id,
        name="Rogers",
        integration="rogers",
        carrier="rogers",
        base_url="http://x",
        credentials_name="R",
    )
    assert ref.get_service_provider(engine, tenant_id, sp).integration is Integration.JASPER  # Jasper family
    iccids = [demo_iccid(9, 9, i) for i in range(2 * ref.IN_CHUNK + 7)]
    assert ref.insert_devices(engine, tenant_id, sp, [{"iccid": v, "status": "ACTIVATED"} for v in iccids]) == len(
        iccids
    )
    found = ref.find_devices(engine, tenant_id, IdentifierKind.ICCID, iccids + ["8901000000000000000"])
    assert len(found) == len(iccids) and all(len(v) == 1 and v[0].status == "ACTIVATED" for v in found.values())


def test_insert_devices_rejects_unknown_columns(engine: sa.Engine) -> None:
    import pytest

    tenant_id = ref.create_tenant(engine, "t")
    sp = ref.create_service_provider(
        engine, tenant_id, name="J", integration="jasper", carrier="att", base_url="u", credentials_name="J"
    )
    with pytest.raises(ValueError, match="unknown device columns: colour"):
        ref.insert_devices(engine, tenant_id, sp, [{"iccid": "1", "colour": "red"}])
