"""Teal's wire rules, apart from its HTTP server (``simulators.teal``): the eSIM statuses and plans,
which query parameters each operation takes, what makes a request or an entry a VALIDATION_ERROR,
what an operation does to an eSIM and what a read returns. Plain functions over the simulator's
state (``esims``, ``plans``), called with its lock held, as ``thingspace_rules`` is for ThingSpace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import QueryParams

__all__ = [
    "DEFAULT_PLANS",
    "ENABLED",
    "HIDDEN",
    "OPERATIONS",
    "QUERY",
    "READS",
    "STATUSES",
    "Operation",
    "apply_entry",
    "entries_problem",
    "entry_error",
    "esim_record",
    "make_eids",
    "query_problem",
    "read_records",
]

STATUSES = ("ONLINE", "WAITING", "STOPPED")  # as on the wire
ENABLED = ("ONLINE", "WAITING")
DEFAULT_PLANS: tuple[dict[str, Any], ...] = (
    {"uuid": "5f0c2a8e-1d3b-4c6a-9e7f-000000000001", "name": "IoT 1GB", "volume": 1, "volumeUnit": "GB", "price": 4.0},
    {"uuid": "5f0c2a8e-1d3b-4c6a-9e7f-000000000005", "name": "IoT 5GB", "volume": 5, "volumeUnit": "GB", "price": 12.0},
    {
        "uuid": "5f0c2a8e-1d3b-4c6a-9e7f-000000000100",
        "name": "Pool 100MB",
        "volume": 100,
        "volumeUnit": "MB",
        "price": 1.5,
    },
)
OPERATIONS = {"enable", "disable", "assign-plan", "activate"}
READS = ("esims", "esims/info", "plans")  # queued like the writes; the records come from operation-result
# The query parameters of each operation, as teal.yaml describes them; nothing else is accepted.
QUERY: dict[str, frozenset[str]] = {
    "esims": frozenset({"requestId", "callbackUrl", "offset", "limit"}),
    "esims/info": frozenset({"requestId", "callbackUrl", "eid", "limit"}),
    "plans": frozenset({"requestId", "callbackUrl", "offset", "limit"}),
    "operation-result": frozenset({"requestId"}),
    **{op: frozenset({"requestId", "callbackUrl"}) for op in OPERATIONS},
}
HIDDEN = ("flowRestricted",)  # simulator switches, never on the wire


def make_eids(count: int, start: int = 0, prefix: str = "89049032") -> list[str]:
    """`count` distinct 32-digit EIDs with GSMA mod-97 check digits, for tests and benchmarks."""
    out = []
    for n in range(start, start + count):
        body = prefix + str(n).zfill(30 - len(prefix))
        out.append(body + f"{98 - int(body + '00') % 97:02d}")
    return out


@dataclass
class Operation:
    """One enqueued request, kept for the operation-result API and for replays of its id."""

    request_id: str
    account: str
    kind: str
    entries: list[Any]
    callback_url: str | None
    reply: dict[str, Any]
    due: float
    results: list[dict[str, Any]] | None = None
    query: dict[str, Any] = field(default_factory=dict)  # a read's filter and page


def esim_record(seed: Mapping[str, Any], plans: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The eSIM a seed describes (at least ``eid``): deviceStatus in any case, ONLINE by default and
    kept upper case as Teal sends it; the plan defaults to the first plan, ``active`` to true;
    ``flowRestricted: true`` makes every operation on it FLOW_RESTRICTED_ERROR."""
    eid = str(seed["eid"])
    status = str(seed.get("deviceStatus", "ONLINE")).upper()
    if status not in STATUSES:
        raise ValueError(f"deviceStatus must be one of {STATUSES}, got {status!r}")
    plan = plans.get(str(seed.get("planUuid") or next(iter(plans), ""))) or {}
    return {
        "eid": eid,
        "iccid": seed.get("iccid"),
        "imei": seed.get("imei"),
        "imsi": seed.get("imsi"),
        "msisdn": seed.get("msisdn"),
        "deviceStatus": status,
        "planUuid": plan.get("uuid"),
        "planName": plan.get("name"),
        "deviceName": seed.get("deviceName"),
        "active": bool(seed.get("active", True)),
        "flowRestricted": bool(seed.get("flowRestricted", False)),
    }


def apply_entry(
    esims: dict[str, dict[str, Any]], plans: Mapping[str, Mapping[str, Any]], kind: str, entry: Any
) -> tuple[dict[str, Any], bool]:
    """One write entry's result, and whether it changed the eSIM (it is changed in ``esims`` only
    then: enabling an enabled eSIM or disabling a stopped one is a successful no-op)."""
    eid = str(entry["eid"] if isinstance(entry, dict) else entry)
    esim = esims.get(eid)
    if esim is None:
        return entry_error(eid, "ESIM_NOT_FOUND", f"eSIM with EID {eid} not found"), False
    if esim["flowRestricted"]:
        return entry_error(eid, "FLOW_RESTRICTED_ERROR", f"Operation {kind} is not allowed in this eSIM's flow"), False
    if kind == "assign-plan":
        plan = plans.get(str(entry.get("planUuid")))
        if plan is None:
            return entry_error(eid, "VALIDATION_ERROR", f"Invalid planUuid {entry.get('planUuid')}"), False
        edits = {"planUuid": plan["uuid"], "planName": plan["name"]}
    elif kind == "enable":
        edits = {} if esim["deviceStatus"] in ENABLED else {"deviceStatus": "ONLINE"}
    elif kind == "activate":
        edits = {"active": True}
    else:
        edits = {"deviceStatus": "STOPPED"}
    changed = any(esim.get(k) != v for k, v in edits.items())
    if changed:
        esim.update(edits)
    return {"eid": eid, "success": True, "errorCode": None, "errorMessage": None}, changed


def read_records(
    esims: Mapping[str, Mapping[str, Any]], plans: Mapping[str, Mapping[str, Any]], kind: str, query: dict[str, Any]
) -> list[dict[str, Any]]:
    """A read's records as they are when it completes (an unknown EID: no entry [I])."""
    if kind == "plans":
        return [dict(p) for p in plans.values()]
    if kind == "esims/info":
        rows = [esims[query["eid"]]] if query["eid"] in esims else []
    else:
        rows = list(esims.values())[query["offset"] : query["offset"] + query["limit"]]
    return [{k: v for k, v in e.items() if k not in HIDDEN} for e in rows]


def query_problem(query: QueryParams, operation: str) -> str | None:
    """Why a query is refused (VALIDATION_ERROR): a parameter teal.yaml does not give the
    operation, or one given twice; None if neither."""
    unknown = sorted(set(query.keys()) - QUERY[operation])
    if unknown:
        return f"unknown query parameter(s) for {operation}: {', '.join(unknown)}"
    repeated = sorted(k for k in set(query.keys()) if len(query.getlist(k)) > 1)
    return f"query parameter(s) given more than once: {', '.join(repeated)}" if repeated else None


def entry_error(eid: str, code: str, message: str) -> dict[str, Any]:
    return {"eid": eid, "success": False, "errorCode": code, "errorMessage": message}


def entries_problem(kind: str, entries: Any, max_entries: int) -> str | None:
    """Why a request body is refused outright (VALIDATION_ERROR), or None."""
    if not isinstance(entries, list) or not entries:
        return 'body must be {"entries": [...]} with at least one entry'
    if len(entries) > max_entries:
        return f"at most {max_entries} entries per request"
    if kind == "assign-plan":
        if not all(
            isinstance(e, dict) and isinstance(e.get("eid"), str) and isinstance(e.get("planUuid"), str)
            for e in entries
        ):
            return 'assign-plan entries must be {"eid": "...", "planUuid": "..."}'
    elif not all(isinstance(e, str) and e for e in entries):
        return f"{kind} entries must be EID strings"
    return None
