"""Run tags and run keys of bulk change runs: every name and format in one place.

The sensors, the jobs, the partitions, the run coordinator, the purge and the local runner all
read or write these tags; a run key or tag spelled two ways would make the sensors miss runs they
already requested (``dagster/run_key``) or the queue miss its per-account limit. Kept free of
other imports, so the run coordinator (in the webserver and daemon) can use it cheaply.
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "ACCOUNT_NAME_TAG",
    "ACCOUNT_TAG",
    "ACCOUNT_TAG_PREFIX",
    "BULK_CHANGE_ID_TAG",
    "BULK_CHANGE_JOBS",
    "CHANGE_TYPE_NAME_TAG",
    "CHANGE_TYPE_TAG",
    "JOB_TAG",
    "PARTITION_TAG",
    "POLL_SENT_BEFORE_TAG",
    "PROCESS_JOB",
    "RECONCILE_JOB",
    "RETRY_STRATEGY_TAG",
    "RUN_KEY_TAG",
    "TENANT_NAME_TAG",
    "TENANT_TAG",
    "WILL_RETRY_TAG",
    "account_tag_value",
    "attempt_of_run_key",
    "attempt_run_key",
    "bulk_change_tags",
    "due_run_key",
    "job_tags",
    "reconcile_run_key",
]

# --- the runs these tags mark -------------------------------------------------------------------

PROCESS_JOB = "process_bulk_change_job"
RECONCILE_JOB = "reconcile_async_job"
BULK_CHANGE_JOBS = (PROCESS_JOB, RECONCILE_JOB)  # the jobs partitioned by bulk change

# --- Dagster's own tags -------------------------------------------------------------------------

PARTITION_TAG = "dagster/partition"
RUN_KEY_TAG = "dagster/run_key"
WILL_RETRY_TAG = "dagster/will_retry"
RETRY_STRATEGY_TAG = "dagster/retry_strategy"

# --- ours ---------------------------------------------------------------------------------------

JOB_TAG = "bulkchange/job"
BULK_CHANGE_ID_TAG = "bulkchange/bulk_change_id"
TENANT_TAG = "bulkchange/tenant"
ACCOUNT_TAG = "bulkchange/carrier_account"  # the run queue allows one run per value (dagster.yaml)
ACCOUNT_TAG_PREFIX = "cred-"
CHANGE_TYPE_TAG = "bulkchange/change_type"
# The same three in words, for people filtering runs in the UI (the ids above stay the keys code reads).
TENANT_NAME_TAG = "bulkchange/tenant_name"
ACCOUNT_NAME_TAG = "bulkchange/carrier_account_name"
CHANGE_TYPE_NAME_TAG = "bulkchange/change_type_name"
POLL_SENT_BEFORE_TAG = "bulkchange/poll_sent_before"
"""Run tag set on the reconcile run requested after a callback receiver start: rows sent before
this time (ISO, naive UTC) are polled by that run whatever ``poll_after_seconds`` says."""


def job_tags(job: str) -> dict[str, str]:
    """The tags of a bulk change job (``process``, ``reconcile``).

    A run retried by the daemon (run_retries: its worker died) re-runs every step: the default,
    FROM_FAILURE, counts the mapped apply_batch as done once any copy ran, so the retry re-ran one
    batch and left the other batches' rows NEW under a Success. Every step is safe to re-run.
    """
    return {JOB_TAG: job, RETRY_STRATEGY_TAG: "ALL_STEPS"}


def account_tag_value(credentials_name: str) -> str:
    """The ``ACCOUNT_TAG`` value of a carrier account's runs: the run queue allows one run per value.

    Keyed by the service provider's credentials entry, not its id: the carrier limits the account
    the credentials log in as (Jasper counts its REST and SOAP calls together), so two service
    providers naming one entry (a REST and a SOAP provider of one Jasper account) are one account
    and their runs wait for each other. Two spellings of one entry (``demo-jasper``, ``DEMO_JASPER``)
    name the same variables and give the same value: ``cred-DEMO_JASPER``."""
    from ..settings import CREDENTIALS_PREFIX, credential_env_key  # the one spelling of an entry's key

    return ACCOUNT_TAG_PREFIX + credential_env_key(credentials_name).removeprefix(CREDENTIALS_PREFIX)


def bulk_change_tags(
    bulk_change_id: int,
    tenant_id: int,
    credentials_name: str,
    change_type: int,
    *,
    tenant_name: str = "",
    account_name: str = "",
    change_type_name: str = "",
) -> dict[str, str]:
    """The ``bulkchange/*`` tags every run of a bulk change carries, however it was launched: the
    ids code reads, and the same things in words (empty names are left out)."""
    tags = {
        BULK_CHANGE_ID_TAG: str(bulk_change_id),
        TENANT_TAG: str(tenant_id),
        ACCOUNT_TAG: account_tag_value(credentials_name),
        CHANGE_TYPE_TAG: str(change_type),
    }
    names = {TENANT_NAME_TAG: tenant_name, ACCOUNT_NAME_TAG: account_name, CHANGE_TYPE_NAME_TAG: change_type_name}
    tags.update({key: value for key, value in names.items() if value})
    return tags


# --- run keys: the sensors request each key once ------------------------------------------------


def attempt_run_key(bulk_change_id: int, attempt: int) -> str:
    """A processing run of a NEW bulk change's attempt (a resume or retry-failed adds one)."""
    return f"bc-{bulk_change_id}-a{attempt}"


def attempt_of_run_key(run_key: str) -> int | None:
    """The attempt an ``attempt_run_key`` names; None for any other key."""
    tail = run_key.rsplit("-a", 1)[-1] if "-a" in run_key else ""
    return int(tail) if tail.isdigit() else None


def due_run_key(bulk_change_id: int, effective_at: datetime) -> str:
    """A processing run of a SCHEDULED bulk change whose next effective date has come."""
    return f"bc-{bulk_change_id}-due-{effective_at:%Y%m%dT%H%M%S}"


def reconcile_run_key(bulk_change_id: int, reason: str) -> str:
    """A reconcile run (``reason``: ``cb-<marker>``, ``restart-<start id>``, ``poll-<interval>``)."""
    return f"bc-{bulk_change_id}-{reason}"
