"""Carrier account settings: the service provider's row plus its secret from the environment.

The database holds only the *name* of a credentials entry; the secret is read here, at the moment
a batch needs it, from ``BULKCHANGE_CRED_<NAME>_USERNAME`` and ``BULKCHANGE_CRED_<NAME>_SECRET``.
Any other ``BULKCHANGE_CRED_<NAME>_<KEY>`` variable (e.g. ``_CLIENT_ID``, ``_CLIENT_SECRET``,
``_CALLBACK_USERNAME``, ``_CALLBACK_PASSWORD``, ``_SUBSCRIPTION_KEY``) lands in ``account.extra``
under ``<key>`` in lower case. ``BULKCHANGE_CALLBACK_BASE_URL`` is where async carriers call back.
It never enters the database, run config, or the Dagster event log.

``with_billing_account`` attaches the tenant's Rev.io account for a carrier change that must also
reach billing (``carriers.BILLING_UPDATES``); its secret is read the same way.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from ..carriers import CarrierAccount
from ..domain import Integration
from ..store.reference import ServiceProviderInfo, list_service_providers

ENV_PREFIX = "BULKCHANGE_CRED_"


class MissingCredentials(RuntimeError):
    pass


def credential_env_names(credentials_name: str, prefix: str = ENV_PREFIX) -> tuple[str, str]:
    key = credential_env_key(credentials_name, prefix)
    return f"{key}_USERNAME", f"{key}_SECRET"


def credential_env_key(credentials_name: str, prefix: str = ENV_PREFIX) -> str:
    return prefix + re.sub(r"[^A-Z0-9]+", "_", credentials_name.upper()).strip("_")


def extra_credentials(credentials_name: str, environ: Mapping[str, str] | None = None, prefix: str = ENV_PREFIX) -> dict[str, str]:
    env = os.environ if environ is None else environ
    base = credential_env_key(credentials_name, prefix) + "_"
    return {
        name[len(base):].lower(): value
        for name, value in env.items()
        if name.startswith(base) and name[len(base):] not in ("USERNAME", "SECRET") and value
    }


def carrier_account(
    sp: ServiceProviderInfo,
    *,
    environ: Mapping[str, str] | None = None,
    prefix: str = ENV_PREFIX,
    timeout_seconds: float = 10.0,
    max_attempts: int = 4,
    retry_wait_seconds: float = 1.0,
) -> CarrierAccount:
    env = os.environ if environ is None else environ
    user_var, secret_var = credential_env_names(sp.credentials_name, prefix)
    username, secret = env.get(user_var), env.get(secret_var)
    if not username or not secret:
        raise MissingCredentials(
            f"credentials for service provider {sp.name!r} are not set: export {user_var} and {secret_var}"
        )
    return CarrierAccount(
        service_provider_id=sp.id,
        integration=sp.integration.value,
        base_url=sp.base_url,
        username=username,
        secret=secret,
        rate_per_second=sp.rate_per_second,
        max_concurrency=sp.max_concurrency,
        write_enabled=sp.write_enabled,
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        retry_wait_seconds=retry_wait_seconds,
        extra=extra_credentials(sp.credentials_name, env, prefix),
        callback_base_url=env.get("BULKCHANGE_CALLBACK_BASE_URL") or None,
    )


def with_billing_account(
    engine: sa.Engine,
    tenant_id: int,
    account: CarrierAccount,
    *,
    environ: Mapping[str, str] | None = None,
    prefix: str = ENV_PREFIX,
) -> CarrierAccount:
    """``account`` with ``billing`` set to the tenant's Rev.io account (its ``revio`` service
    provider, the lowest id if there are several), built with ``account``'s timeouts and retry
    settings; ``billing`` stays None when the tenant has no Rev.io service provider. Raises
    MissingCredentials when that provider's credentials are not set, before anything is sent."""
    revio = [sp for sp in list_service_providers(engine, tenant_id) if sp.integration is Integration.REVIO]
    if not revio:
        return account
    billing = carrier_account(
        revio[0],
        environ=environ,
        prefix=prefix,
        timeout_seconds=account.timeout_seconds,
        max_attempts=account.max_attempts,
        retry_wait_seconds=account.retry_wait_seconds,
    )
    return dataclasses.replace(account, billing=billing)


def sent_by(senders: Sequence[object], credentials_name: str) -> bool:
    """True when one of the accounts a callback authenticated as (``senders``: credentials names)
    is ``credentials_name``'s account, compared as environment keys: two spellings of one
    credentials name are one account."""
    return credential_env_key(credentials_name) in {credential_env_key(str(s)) for s in senders}
