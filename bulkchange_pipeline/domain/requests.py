"""Pydantic models of a bulk change request, in the seed's JSON shape.

A request names one change type and carries one payload object for it (``statusUpdate``,
``customerRatePlanUpdate``...). Its values apply to every device; a device given as an object
instead of a bare identifier may override them per device (this is how CSV rows arrive).

Targets are built per device, so that one bad row yields one error instead of refusing the whole
request: ``build_target`` returns (target, None) or (None, reason).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .enums import ChangeType
from .identifiers import check_iccid, check_imei, rev_io_id

MAX_DEVICES_PER_REQUEST = 1_000_000
MAX_ID = 2**63 - 1  # ids and numbers are stored as 64-bit integers; a larger number names nothing

# An integer a database column can hold. Bounding it here (not only in the intake's JSON check)
# matters for numbers that arrive as text, e.g. a CSV cell "99999999999999999999": pydantic turns
# it into an int, and SQLite would raise OverflowError on the insert instead of refusing the row.
Int64 = Annotated[int, Field(ge=-MAX_ID - 1, le=MAX_ID)]

# Payload key of the seed's request shape for each change type.
PAYLOAD_KEYS: dict[ChangeType, str] = {
    ChangeType.STATUS_UPDATE: "statusUpdate",
    ChangeType.ACTIVATE_NEW_SERVICE: "activateNewService",
    ChangeType.ARCHIVAL: "archival",
    ChangeType.CUSTOMER_RATE_PLAN_CHANGE: "customerRatePlanUpdate",
    ChangeType.CUSTOMER_ASSIGNMENT: "customerAssignment",
    ChangeType.CARRIER_RATE_PLAN_CHANGE: "carrierRatePlanUpdate",
    ChangeType.CREATE_REV_SERVICE: "createRevService",
    ChangeType.CHANGE_ICCID_AND_IMEI: "iccidImeiChange",
    ChangeType.EDIT_USERNAME_COST_CENTER: "usernameCostCenterUpdate",
}

# Wire names (camelCase, as in the seed and the CSV header) -> canonical target keys.
FIELD_ALIASES: dict[str, str] = {
    "targetStatus": "status",
    "newStatus": "status",
    "carrierRatePlan": "carrier_rate_plan",
    "ratePlan": "carrier_rate_plan",
    "commPlan": "communication_plan",
    "communicationPlan": "communication_plan",
    "customerId": "customer_id",
    "customerRatePlanId": "customer_rate_plan_id",
    "customerPoolId": "customer_rate_pool_id",
    "customerRatePoolId": "customer_rate_pool_id",
    "customerDataAllocationMB": "data_allocation_mb",
    "dataAllocationMB": "data_allocation_mb",
    "newIccid": "new_iccid",
    "newImei": "new_imei",
    "username": "username",
    "costCenter": "cost_center",
    "effectiveDate": "effective_date",
    "overrideUsageCheck": "override_usage_check",
    "reasonCode": "reason_code",
    "revCustomerId": "rev_customer_id",
    "productIds": "product_ids",
    "serviceZipCode": "service_zip_code",
}


def canonical_key(name: str) -> str:
    """Map a wire or CSV field name to the canonical target key (snake_case names pass through)."""
    return FIELD_ALIASES.get(name.strip(), name.strip())


class _Target(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    effective_date: datetime | None = None

    @field_validator("effective_date")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        if not 1900 <= v.year <= 9000:  # also keeps UTC conversion from overflowing at year 9999
            raise ValueError(f"effective date {v.isoformat()} is out of range (years 1900-9000)")
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v


class StatusTarget(_Target):
    status: str = Field(min_length=1, max_length=64)
    reason_code: str | None = Field(None, max_length=64)


class ActivateNewServiceTarget(_Target):
    carrier_rate_plan: str = Field(min_length=1, max_length=128)
    service_zip_code: str | None = Field(None, pattern=r"^\d{5}$")


class ArchivalTarget(_Target):
    override_usage_check: bool = False


class CustomerRatePlanTarget(_Target):
    customer_rate_plan_id: Int64 | None = None
    customer_rate_pool_id: Int64 | None = None
    data_allocation_mb: Int64 | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> CustomerRatePlanTarget:
        if self.customer_rate_plan_id is None and self.customer_rate_pool_id is None:
            raise ValueError("give customerRatePlanId or customerPoolId")
        return self


class CustomerAssignmentTarget(_Target):
    customer_id: Int64
    rev_customer_id: str | None = None

    @field_validator("rev_customer_id")
    @classmethod
    def _rev_id(cls, value: str | None) -> str | None:
        """Rev.io customer ids are int32: refused here, not by Rev.io per device."""
        if value is not None:
            try:
                rev_io_id(value)
            except ValueError:
                raise ValueError(
                    "revCustomerId must be a Rev.io customer id: a whole number from 1 to 2147483647"
                ) from None
        return value


class CarrierRatePlanTarget(_Target):
    carrier_rate_plan: str = Field(min_length=1, max_length=128)
    communication_plan: str | None = Field(None, max_length=128)


class CreateRevServiceTarget(_Target):
    customer_id: Int64
    product_ids: list[Int64] = Field(default_factory=list)


class ChangeIdentifiersTarget(_Target):
    new_iccid: str | None = None
    new_imei: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ChangeIdentifiersTarget:
        if not self.new_iccid and not self.new_imei:
            raise ValueError("give newIccid or newImei")
        for value, check in ((self.new_iccid, check_iccid), (self.new_imei, check_imei)):
            if value and (reason := check(value)):
                raise ValueError(reason)
        return self


class UsernameCostCenterTarget(_Target):
    username: str | None = Field(None, max_length=128)
    cost_center: str | None = Field(None, max_length=128)

    @model_validator(mode="after")
    def _one(self) -> UsernameCostCenterTarget:
        if self.username is None and self.cost_center is None:
            raise ValueError("give username or costCenter")
        return self


TARGET_MODELS: dict[ChangeType, type[_Target]] = {
    ChangeType.STATUS_UPDATE: StatusTarget,
    ChangeType.ACTIVATE_NEW_SERVICE: ActivateNewServiceTarget,
    ChangeType.ARCHIVAL: ArchivalTarget,
    ChangeType.CUSTOMER_RATE_PLAN_CHANGE: CustomerRatePlanTarget,
    ChangeType.CUSTOMER_ASSIGNMENT: CustomerAssignmentTarget,
    ChangeType.CARRIER_RATE_PLAN_CHANGE: CarrierRatePlanTarget,
    ChangeType.CREATE_REV_SERVICE: CreateRevServiceTarget,
    ChangeType.CHANGE_ICCID_AND_IMEI: ChangeIdentifiersTarget,
    ChangeType.EDIT_USERNAME_COST_CENTER: UsernameCostCenterTarget,
}


def build_target(change_type: ChangeType, values: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Validate the merged per-device values for a change type.

    Returns the canonical target as JSON-ready dict (dates as ISO strings, unset fields left out),
    or a reason naming the offending field.
    """
    cleaned = {canonical_key(k): (None if v == "" else v) for k, v in values.items()}
    try:
        model = TARGET_MODELS[change_type].model_validate(cleaned)
    except ValidationError as exc:
        return None, _explain(exc)
    return model.model_dump(mode="json", exclude_none=True), None


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "is not a field of this change type"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


MAX_IDEMPOTENCY_KEY = 200  # the column's length (store.schema bulk_change.idempotency_key)


class DeviceEntry(BaseModel):
    """One device of a request: an identifier plus optional per-device values."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    device: str | None = None
    iccid: str | None = None
    imei: str | None = None
    msisdn: str | None = None
    eid: str | None = None

    @property
    def identifier(self) -> str:
        return self.iccid or self.device or self.imei or self.msisdn or self.eid or ""

    @property
    def values(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BulkChangeRequest(BaseModel):
    """A bulk change as submitted (JSON body, or built from a CSV)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    # None: the devices are looked up in the tenant's inventory and split into one bulk change per
    # service provider under one submission (``intake.split``).
    service_provider_id: Int64 | None = Field(None, alias="serviceProviderId")
    change_type: ChangeType = Field(alias="changeType")
    process_changes: bool = Field(True, alias="processChanges")
    portal_type_id: Int64 | None = Field(None, alias="portalTypeId")
    idempotency_key: str | None = Field(None, alias="idempotencyKey", max_length=MAX_IDEMPOTENCY_KEY)
    # A row that would break a carrier rule (domain.carrier_rules) waits in SCHEDULED until the
    # rule allows it instead of being refused. None (not False) by default: an old request's
    # fingerprint (exclude_none) stays the same.
    defer_if_limited: bool | None = Field(None, alias="deferIfLimited")
    devices: list[str | DeviceEntry] = Field(min_length=1, max_length=MAX_DEVICES_PER_REQUEST)

    status_update: dict[str, Any] | None = Field(None, alias="statusUpdate")
    activate_new_service: dict[str, Any] | None = Field(None, alias="activateNewService")
    archival: dict[str, Any] | None = Field(None, alias="archival")
    customer_rate_plan_update: dict[str, Any] | None = Field(None, alias="customerRatePlanUpdate")
    customer_assignment: dict[str, Any] | None = Field(None, alias="customerAssignment")
    carrier_rate_plan_update: dict[str, Any] | None = Field(None, alias="carrierRatePlanUpdate")
    create_rev_service: dict[str, Any] | None = Field(None, alias="createRevService")
    iccid_imei_change: dict[str, Any] | None = Field(None, alias="iccidImeiChange")
    username_cost_center_update: dict[str, Any] | None = Field(None, alias="usernameCostCenterUpdate")

    @field_validator("idempotency_key")
    @classmethod
    def _blank_key_is_none(cls, v: str | None) -> str | None:
        """An empty or blank key means no key (storing '' would make it unique per tenant)."""
        return v.strip() or None if v is not None else None

    @field_validator("change_type", mode="before")
    @classmethod
    def _parse_change_type(cls, v: Any) -> ChangeType:
        return ChangeType.parse(v)

    @model_validator(mode="after")
    def _payload_matches(self) -> BulkChangeRequest:
        wanted = PAYLOAD_KEYS[self.change_type]
        for ct, key in PAYLOAD_KEYS.items():
            if ct is not self.change_type and self.payload_for(ct) is not None:
                raise ValueError(
                    f"{key} does not belong to changeType {self.change_type.value} ({self.change_type.label}); send {wanted}"
                )
        return self

    def payload_for(self, change_type: ChangeType) -> dict[str, Any] | None:
        payload: dict[str, Any] | None = getattr(self, _FIELD_BY_KEY[PAYLOAD_KEYS[change_type]])
        return payload

    @property
    def payload(self) -> dict[str, Any]:
        return self.payload_for(self.change_type) or {}

    def entries(self) -> list[DeviceEntry]:
        return [DeviceEntry(device=d) if isinstance(d, str) else d for d in self.devices]

    def to_json(self) -> dict[str, Any]:
        """The request as stored (wire names; devices as given)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


_FIELD_BY_KEY = {
    field.alias: name for name, field in BulkChangeRequest.model_fields.items() if field.alias in PAYLOAD_KEYS.values()
}
