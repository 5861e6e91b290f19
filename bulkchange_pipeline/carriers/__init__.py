"""Carrier clients behind one interface (`base.CarrierAdapter`), and the one registry that maps an
integration to its client class, so the engine never names a carrier module.

The registry is keyed by (integration, protocol): a Jasper-family account speaks REST
(`JasperClient`) or Control Center's SOAP Terminal service (`JasperSoapClient`), chosen by the
service provider's `protocol`; every other integration has its REST client only.

Everything per integration is read from the registered class: how to build the adapter
(`build_adapter`), how its callbacks read (`parse_callback`), and which change types must also
reach the tenant's billing (Rev.io) account (`updates_billing`; for those the engine attaches that
account as `CarrierAccount.billing` and the client builds its Rev.io companion from it).
"""

from __future__ import annotations

from typing import Any

from ..domain import CarrierProtocol, ChangeType, Integration
from .base import (
    AsyncOutcome,
    BusinessCarrierError,
    CarrierAccount,
    CarrierAdapter,
    CarrierError,
    DeviceChange,
    DeviceResult,
    LogEntry,
    TransientCarrierError,
    WritesDisabledError,
)
from .jasper import JasperClient
from .jasper_soap import JasperSoapClient
from .pond import PondClient
from .revio import RevioClient
from .teal import TealClient
from .telegence import TelegenceClient
from .thingspace import ThingSpaceClient

# The registry: (integration, protocol) -> adapter class, keyed by each class's own `integration`
# and `protocol`. The Jasper family (AT&T Control Center, POD19, T-Mobile Jasper, Rogers) is one
# integration to the domain, with a REST and a SOAP client.
_CLIENTS: dict[tuple[Integration, CarrierProtocol], type[CarrierAdapter]] = {
    (cls.integration, cls.protocol): cls
    for cls in (JasperClient, JasperSoapClient, ThingSpaceClient, TelegenceClient, TealClient, PondClient, RevioClient)
}
# What the integration-only questions (callbacks, billing) read: each integration's REST client
# (the SOAP client sends no callbacks and updates no billing, as its REST twin).
_ADAPTERS: dict[Integration, type[CarrierAdapter]] = {
    i: c for (i, p), c in _CLIENTS.items() if p is CarrierProtocol.REST
}


class UnknownIntegrationError(CarrierError, ValueError):
    """No client is registered for the service provider's integration (and protocol)."""


def _adapter_class(
    integration: str, protocol: CarrierProtocol | str = CarrierProtocol.REST
) -> type[CarrierAdapter] | None:
    """The registered class for an integration name (any spelling `Integration.parse` reads) and
    protocol."""
    try:
        return _CLIENTS.get((Integration.parse(integration), CarrierProtocol.parse(protocol)))
    except ValueError:
        return None


def adapter_class(account: CarrierAccount) -> type[CarrierAdapter]:
    """The client class `build_adapter` builds for `account`; raises UnknownIntegrationError when
    none is registered for its integration and protocol."""
    cls = _adapter_class(account.integration, account.protocol)
    if cls is None:
        known = ", ".join(f"{i.value}/{p.value}" for i, p in _CLIENTS)
        raise UnknownIntegrationError(
            f"no carrier client for integration {account.integration!r} over {CarrierProtocol.parse(account.protocol).value} "
            f"(service provider {account.service_provider_id}); known: {known}"
        )
    return cls


def build_adapter(account: CarrierAccount) -> CarrierAdapter:
    """The adapter for `account.integration` (case-insensitive) and `account.protocol`."""
    return adapter_class(account)(account)


def parse_callback(integration: str, payload: dict[str, Any]) -> list[AsyncOutcome]:
    """The outcomes a callback body reports, for the callback endpoint (dedupe keys) and reconcile.

    Pure and carrier-specific; raises UnknownIntegrationError for a carrier that has no callbacks.
    """
    cls = _adapter_class(integration)
    if cls is None or cls.callback_name is None:
        known = ", ".join(i.value for i, c in _ADAPTERS.items() if c.callback_name is not None)
        raise UnknownIntegrationError(f"{integration!r} sends no callbacks (known: {known})")
    return cls.parse_callback(payload)


def updates_billing(integration: str, change_type: ChangeType) -> bool:
    """True if `change_type` on this integration also updates the tenant's Rev.io account."""
    cls = _adapter_class(integration)
    return cls is not None and change_type in cls.billing_change_types


def sends_callbacks(integration: str) -> bool:
    """True if the carrier answers through the callback receiver (``/callbacks/<name>``), so its
    rows can have lost a callback while the receiver was down."""
    cls = _adapter_class(integration)
    return cls is not None and cls.callback_name is not None


__all__ = [
    "AsyncOutcome",
    "BusinessCarrierError",
    "CarrierAccount",
    "CarrierAdapter",
    "CarrierError",
    "DeviceChange",
    "DeviceResult",
    "LogEntry",
    "TransientCarrierError",
    "UnknownIntegrationError",
    "WritesDisabledError",
    "adapter_class",
    "build_adapter",
    "parse_callback",
    "sends_callbacks",
    "updates_billing",
]
