"""Dagster concurrency pools derived from the service provider table (``bulkchange sync-pools``).

What bounds what (so the numbers in the UI can be read correctly):

- **Runs per carrier account**: the run queue's tag limit ``bulkchange/carrier_account`` = 1 per
  unique value in ``dagster.yaml``. The value names the service provider's credentials entry
  (``cred-<NAME>``, ``tags.account_tag_value``), because the carrier limits the account those
  credentials log in as: service providers that name one entry (a Jasper account reached over REST
  and over SOAP, whose calls Jasper counts together) share one queue slot. At most one bulk change
  run (process or reconcile) per account is in progress; the others wait in the queue.
- **Calls per carrier account**: inside that one run, steps execute one after another (the jobs use
  the in-process executor) and the carrier client keeps at most ``max_concurrency`` calls in flight
  (``carriers.http``). Tag limit x executor x client limit = the account's ``max_concurrency``.
- **Pool ``carrier_api``**: the ops that call carriers (``apply_batch``, ``reconcile_async_results``)
  declare ``pool="carrier_api"``. The production instance config sets ``granularity: run``, so a
  run that contains such ops takes one slot for its whole life and waits for it in the run queue
  (no process, no CPU): the pool bounds how many carrier-calling runs are in progress at once
  across *all* accounts, the deployment's total outbound carrier work (and its database writers).
  It does not protect a single account; the tag limit does. By default it is sized to the service
  providers (``sized_carrier_api_slots``), so every account can run at its limit at once (issue
  22: a fixed 8 held 24 accounts to a third of their summed limits); an operator lowers it with
  ``--carrier-api-slots`` when the machine cannot hold that many run workers.
- **Pools ``carrier-sp-<id>``**: one per service provider, with its ``max_concurrency`` as its
  limit. No op claims them (a Dagster op's pool is fixed when the job is defined, while accounts
  are rows in a table), so they enforce nothing: they publish each account's call limit in the
  Dagster UI (Deployment > Concurrency) and ``dagster instance concurrency get --all`` next to
  ``carrier_api``, kept in step with the database by this sync.

Providers with ``max_concurrency`` 0 (no limit) get no account pool. Pools of providers that no
longer exist are deleted; pools with other names are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import dagster as dg
import sqlalchemy as sa

from ..store.reference import AccountLimit, account_limits
from .tags import ACCOUNT_TAG, account_tag_value

CARRIER_API_POOL = "carrier_api"
ACCOUNT_POOL_PREFIX = "carrier-sp-"
DEFAULT_CARRIER_API_SLOTS = 8


def account_pool(service_provider_id: int) -> str:
    """The pool key of one carrier account."""
    return f"{ACCOUNT_POOL_PREFIX}{service_provider_id}"


@dataclass
class PoolSync:
    """What a sync did: pool -> limit set, pools already right, pools deleted."""

    desired: dict[str, int]
    changed: dict[str, tuple[int | None, int]] = field(default_factory=dict)  # key -> (old, new)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    accounts: list[AccountLimit] = field(default_factory=list)


class PoolsUnsupported(RuntimeError):
    """The instance's event log storage cannot hold concurrency limits (e.g. plain SQLite)."""


def sized_carrier_api_slots(accounts: list[AccountLimit]) -> int:
    """``carrier_api`` slots when the operator names none: one per service provider (each can
    have one carrier-calling run in progress, by the tag limit), at least
    ``DEFAULT_CARRIER_API_SLOTS`` so accounts added before the next sync are not starved."""
    return max(DEFAULT_CARRIER_API_SLOTS, len(accounts))


def desired_pools(accounts: list[AccountLimit], carrier_api_slots: int | None = None) -> dict[str, int]:
    """Pool key -> slots: ``carrier_api`` (None: ``sized_carrier_api_slots``) plus one pool per
    limited account."""
    if carrier_api_slots is None:
        carrier_api_slots = sized_carrier_api_slots(accounts)
    if carrier_api_slots < 1:
        raise ValueError("carrier_api needs at least 1 slot, or no carrier call can ever run")
    pools = {CARRIER_API_POOL: carrier_api_slots}
    pools.update({account_pool(a.service_provider_id): a.max_concurrency for a in accounts if a.max_concurrency > 0})
    return pools


def current_pools(instance: dg.DagsterInstance) -> dict[str, int]:
    """Explicitly set pool limits of the instance (pools set from the default are left out)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        raise PoolsUnsupported(
            "this Dagster instance's storage cannot hold pool limits: use PostgreSQL storage "
            "(deploy/dagster.postgres.yaml) or run `dagster instance migrate`"
        )
    return {p.name: p.limit for p in storage.get_pool_limits() if not p.from_default}


def sync_pools(
    instance: dg.DagsterInstance, desired: Mapping[str, int], *, prune: bool = True, dry_run: bool = False
) -> PoolSync:
    """Make the instance's pools match ``desired``; with ``prune``, delete ``carrier-sp-*`` pools
    that are not desired (their provider was deleted or is now unlimited)."""
    current = current_pools(instance)
    result = PoolSync(desired=dict(desired))
    storage = instance.event_log_storage
    for key, slots in sorted(desired.items()):
        if current.get(key) == slots:
            result.unchanged.append(key)
            continue
        result.changed[key] = (current.get(key), slots)
        if not dry_run:
            storage.set_concurrency_slots(key, slots)
    if prune:
        for key in sorted(current):
            if key.startswith(ACCOUNT_POOL_PREFIX) and key not in desired:
                result.deleted.append(key)
                if not dry_run:
                    storage.delete_concurrency_limit(key)
    return result


def sync_from_database(
    instance: dg.DagsterInstance,
    engine: sa.Engine,
    carrier_api_slots: int | None = None,
    *,
    prune: bool = True,
    dry_run: bool = False,
) -> PoolSync:
    """Read the service providers and sync the pools: what ``bulkchange sync-pools`` runs."""
    accounts = account_limits(engine)
    result = sync_pools(instance, desired_pools(accounts, carrier_api_slots), prune=prune, dry_run=dry_run)
    result.accounts = accounts
    return result


__all__ = [
    "ACCOUNT_POOL_PREFIX",
    "ACCOUNT_TAG",
    "CARRIER_API_POOL",
    "DEFAULT_CARRIER_API_SLOTS",
    "PoolSync",
    "PoolsUnsupported",
    "account_pool",
    "account_tag_value",
    "current_pools",
    "desired_pools",
    "sized_carrier_api_slots",
    "sync_from_database",
    "sync_pools",
]
