"""The JSON schema of a submitted bulk change as the API document shows it (``api_docs``): the
request model's own schema with its references inlined, plus the API's ``changeType`` spellings
and ``effectiveDate``. Documentation only: the body is validated by ``BulkChangeRequest`` itself.
"""

from __future__ import annotations

import copy
from typing import Any

from ..domain import BulkChangeRequest

__all__ = ["request_body_schema"]


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``#/$defs/...`` references in place (the request schema is not recursive), so the
    schema can live in an operation's ``requestBody`` without registering components."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def request_body_schema() -> dict[str, Any]:
    """JSON schema of a submitted bulk change (the seed's shape), plus the API's ``effectiveDate``."""
    schema = _inline_refs(BulkChangeRequest.model_json_schema(by_alias=True))
    schema["properties"]["changeType"] = {
        "description": "Change type: its number (1 StatusUpdate, 2 ActivateNewService, 3 Archival, "
        "4 CustomerRatePlanChange, 5 CustomerAssignment, 7 CarrierRatePlanChange, 8 CreateRevService, "
        "9 ChangeICCIDAndIMEI, 10 EditUsernameCostCenter) or its name",
        "anyOf": [{"type": "integer"}, {"type": "string"}],
    }
    schema["properties"]["effectiveDate"] = {
        "type": "string",
        "format": "date-time",
        "description": "When the change should take effect (UTC unless an offset is given); a device may override it. "
        "Later than now: rows wait in SCHEDULED.",
    }
    schema["description"] = (
        "A bulk change in the seed's request shape. Devices are identifiers (ICCID, IMEI, MSISDN, EID) or objects "
        "with an identifier plus per-device values that override the change type's payload object."
    )
    return schema
