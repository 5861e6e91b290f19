"""A service provider's protocol (rest | soap): stored and read back, refused for an integration
that has no SOAP client, kept out of the table by its CHECK when written around the store, and
turned into a carrier account whose missing SOAP license key is named before anything is sent."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkchange_pipeline import settings as app_settings
from bulkchange_pipeline.carriers.jasper_soap import JasperSoapClient
from bulkchange_pipeline.domain import CarrierProtocol, Integration, ProtocolNotSupported
from bulkchange_pipeline.engine.accounts import carrier_account
from bulkchange_pipeline.store import reference as ref
from bulkchange_pipeline.store.schema import service_provider


def _provider(engine: sa.Engine, tenant_id: int, name: str, **kw: object) -> int:
    values: dict[str, object] = {
        "name": name,
        "integration": "jasper",
        "carrier": "att_pod19",
        "base_url": "http://127.0.0.1:9",
        "credentials_name": "SOAP_ACME",
    }
    values.update(kw)
    return ref.create_service_provider(engine, tenant_id, **values)  # type: ignore[arg-type]


def test_protocol_is_stored_read_back_and_defaults_to_rest(engine: sa.Engine) -> None:
    tenant_id = ref.create_tenant(engine, "acme")
    rest = _provider(engine, tenant_id, "Jasper REST")
    soap = _provider(engine, tenant_id, "Jasper SOAP", protocol="SOAP ", integration="rogers")
    by_id = {sp.id: sp for sp in ref.list_service_providers(engine, tenant_id)}
    assert by_id[rest].protocol is CarrierProtocol.REST
    assert by_id[soap].protocol is CarrierProtocol.SOAP and by_id[soap].integration is Integration.JASPER
    assert ref.get_service_provider(engine, tenant_id, soap).protocol is CarrierProtocol.SOAP  # type: ignore[union-attr]


@pytest.mark.parametrize("integration", [i.value for i in Integration if i is not Integration.JASPER])
def test_soap_is_refused_for_an_integration_without_a_soap_client(engine: sa.Engine, integration: str) -> None:
    tenant_id = ref.create_tenant(engine, "acme")
    with pytest.raises(ProtocolNotSupported, match=f"not available for integration '{integration}'"):
        _provider(engine, tenant_id, "X", integration=integration, protocol="soap")
    assert ref.list_service_providers(engine, tenant_id) == []


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.text(max_size=12))
def test_any_other_protocol_name_is_refused_and_nothing_stored(engine: sa.Engine, protocol: str) -> None:
    """Property: a protocol name is rest or soap (any case, blanks around), or a ValueError naming
    the valid ones, and nothing is written."""
    tenant_id = ref.tenant_id_by_name(engine, "acme") or ref.create_tenant(engine, "acme")
    before = len(ref.list_service_providers(engine, tenant_id))
    if protocol.strip().lower() in ("rest", "soap"):
        sp_id = _provider(engine, tenant_id, f"P{before}", protocol=protocol)
        assert ref.get_service_provider(engine, tenant_id, sp_id).protocol.value == protocol.strip().lower()  # type: ignore[union-attr]
    else:
        with pytest.raises(ValueError, match="valid: rest, soap"):
            _provider(engine, tenant_id, f"P{before}", protocol=protocol)
        assert len(ref.list_service_providers(engine, tenant_id)) == before


def test_the_table_refuses_a_protocol_it_does_not_know(engine: sa.Engine) -> None:
    """The CHECK holds for a row written around the store (SQL, another tool), on both backends."""
    tenant_id = ref.create_tenant(engine, "acme")
    sp_id = _provider(engine, tenant_id, "J")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.update(service_provider).where(service_provider.c.id == sp_id).values(protocol="grpc"))
    assert ref.get_service_provider(engine, tenant_id, sp_id).protocol is CarrierProtocol.REST  # type: ignore[union-attr]


def test_a_soap_account_without_its_license_key_names_the_variable(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = ref.create_tenant(engine, "acme")
    sp = ref.get_service_provider(engine, tenant_id, _provider(engine, tenant_id, "J", protocol="soap"))
    assert sp is not None
    monkeypatch.setenv("BULKCHANGE_CRED_SOAP_ACME_USERNAME", "ops")
    monkeypatch.setenv("BULKCHANGE_CRED_SOAP_ACME_SECRET", "pw-123")
    with pytest.raises(app_settings.MissingCredentials, match="export BULKCHANGE_CRED_SOAP_ACME_LICENSE_KEY$"):
        carrier_account(sp)
    monkeypatch.setenv("BULKCHANGE_CRED_SOAP_ACME_LICENSE_KEY", "lk-1")
    account = carrier_account(sp)
    assert account.protocol is CarrierProtocol.SOAP and account.extra["license_key"] == "lk-1"
    assert "lk-1" not in repr(account) and "pw-123" not in repr(account)
    assert isinstance(JasperSoapClient(account), JasperSoapClient)


def test_the_cli_names_a_soap_provider_by_integration_and_protocol(engine: sa.Engine) -> None:
    """``--service-provider jasper`` keeps naming the REST provider once a SOAP one of the same
    integration exists; ``jasper/soap`` names the SOAP one."""
    from bulkchange_pipeline.cli._common import UserError, resolve_service_provider

    tenant_id = ref.create_tenant(engine, "acme")
    rest = _provider(engine, tenant_id, "Jasper REST")
    soap = _provider(engine, tenant_id, "Jasper SOAP", protocol="soap")
    assert resolve_service_provider(engine, tenant_id, "jasper") == rest
    assert resolve_service_provider(engine, tenant_id, " Jasper/SOAP ") == soap
    assert resolve_service_provider(engine, tenant_id, "jasper soap") == soap  # by name
    with pytest.raises(UserError, match="unknown"):
        resolve_service_provider(engine, tenant_id, "jasper/rest")
