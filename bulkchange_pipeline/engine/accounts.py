"""The engine's carrier accounts: a service provider's row plus its credentials, built when a batch
needs them.

The database holds only the *name* of a credentials entry; the secret and the callback base URL
come from ``bulkchange_pipeline.settings`` (which names the variables and reads them), at the moment
a batch needs them. They never enter the database, run config, or the Dagster event log.

``with_billing_account`` attaches the tenant's Rev.io account for a carrier change that must also
reach billing (``carriers.updates_billing``); its secret is read the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import sqlalchemy as sa

from .. import settings
from ..carriers import CarrierAccount, adapter_class
from ..domain import Integration
from ..store.reference import ServiceProviderInfo, list_service_providers


def carrier_account(
    sp: ServiceProviderInfo,
    *,
    environ: Mapping[str, str] | None = None,
    timeout_seconds: float = 10.0,
    max_attempts: int = 4,
    retry_wait_seconds: float = 1.0,
) -> CarrierAccount:
    """``sp``'s account with its credentials from the environment (or ``environ``); raises
    ``settings.MissingCredentials`` when they are not set, or when an extra its client requires
    (``CarrierAdapter.required_extras``: a SOAP account's ``LICENSE_KEY``) is not, naming the
    variable, before anything is sent."""
    credentials = settings.carrier_credentials(sp.credentials_name, sp.name, environ)
    account = CarrierAccount(
        service_provider_id=sp.id,
        integration=sp.integration.value,
        base_url=sp.base_url,
        username=credentials.username,
        secret=credentials.secret.get_secret_value(),
        rate_per_second=sp.rate_per_second,
        max_concurrency=sp.max_concurrency,
        write_enabled=sp.write_enabled,
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        retry_wait_seconds=retry_wait_seconds,
        extra={key: value.get_secret_value() for key, value in credentials.extra.items()},
        callback_base_url=settings.current(environ).callback_base_url,
        protocol=sp.protocol,
    )
    missing = [key for key in adapter_class(account).required_extras if not account.extra.get(key)]
    if missing:
        names = " and ".join(f"{settings.credential_env_key(sp.credentials_name)}_{key.upper()}" for key in missing)
        raise settings.MissingCredentials(
            f"credentials for service provider {sp.name!r} ({sp.protocol.value}) are incomplete: export {names}"
        )
    return account


def with_billing_account(
    engine: sa.Engine,
    tenant_id: int,
    account: CarrierAccount,
    *,
    environ: Mapping[str, str] | None = None,
) -> CarrierAccount:
    """``account`` with ``billing`` set to the tenant's Rev.io account (its ``revio`` service
    provider, the lowest id if there are several), built with ``account``'s timeouts and retry
    settings; ``billing`` stays None when the tenant has no Rev.io service provider. Raises
    ``settings.MissingCredentials`` when that provider's credentials are not set, before anything is sent."""
    revio = [sp for sp in list_service_providers(engine, tenant_id) if sp.integration is Integration.REVIO]
    if not revio:
        return account
    billing = carrier_account(
        revio[0],
        environ=environ,
        timeout_seconds=account.timeout_seconds,
        max_attempts=account.max_attempts,
        retry_wait_seconds=account.retry_wait_seconds,
    )
    return dataclasses.replace(account, billing=billing)


__all__ = ["carrier_account", "with_billing_account"]
