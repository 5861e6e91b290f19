"""The notification routes of the intake API: a tenant's webhook subscriptions, and its deliveries
with every attempt, one of which it can re-send.

Same rules as the other routes (``api``): an API key resolves to a tenant and every route works
inside it (another tenant's subscription or delivery answers 404, like one that does not exist),
unknown query parameters are refused, errors are problem documents. The subscription's URL is
checked before anything is stored (``engine.notify.addresses``: http/https to a public address,
every address its name resolves to), and its secret is shown once, in the 201 answer.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic.alias_generators import to_camel

from .. import settings
from ..domain.notifications import MAX_PAGE_SIZE, MIN_PAGE_SIZE, DeliveryStatus, message_type, parse_events
from ..domain.requests import MAX_ID
from ..engine.notify import AddressRefused, check_webhook_url, derive_secret, masked_url, new_nonce
from ..store import notification_deliveries as deliveries
from ..store import notifications as store
from ..store.db import utcnow
from .api_models import PROBLEMS, ApiModel, ApiProblem, UtcDatetime, capped_stream
from .api_query import known_query_only
from .auth import Caller, authenticated_caller, submitter_caller
from .deps import request_engine
from .parsing import text_reason

__all__ = ["notifications"]

CurrentCaller = Annotated[Caller, Depends(authenticated_caller)]
Submitter = Annotated[Caller, Depends(submitter_caller)]  # changing subscriptions needs the submitter role
Engine = Annotated[sa.Engine, Depends(request_engine)]
MAX_BODY = 16 * 1024
ALL_EVENTS = ["completed", "failed", "needs_attention"]


class SubscriptionIn(ApiModel):
    """A new webhook subscription."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    url: StrictStr = Field(max_length=2000, description="http or https URL the events are POSTed to (a public address)")
    events: list[StrictStr] = Field(
        default_factory=lambda: list(ALL_EVENTS),
        min_length=1,
        max_length=10,
        description="Which events: completed, failed, needs_attention (default: all three)",
    )
    device_results: StrictBool = Field(
        False, description="Also send the per-device results, in pages (bulk_change.device_results messages)"
    )
    page_size: StrictInt = Field(
        500, ge=MIN_PAGE_SIZE, le=MAX_PAGE_SIZE, description="Devices per results page (10-1000)"
    )
    description: StrictStr = Field("", max_length=200, description="A note for people (which system receives it)")


class SubscriptionOut(ApiModel):
    id: int
    url: str = Field(description="The URL with every query value shown as ***")
    events: list[str]
    device_results: bool
    page_size: int
    description: str
    created_by: str
    created_at: UtcDatetime

    @classmethod
    def of(cls, s: store.Subscription) -> SubscriptionOut:
        return cls(
            id=s.id,
            url=masked_url(s.url),  # query values are often tokens: shown as ***, sent as given
            events=s.events,
            device_results=s.device_results,
            page_size=s.page_size,
            description=s.description,
            created_by=s.created_by,
            created_at=s.created_at,
        )


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(
        description="The signing secret (whsec_...), shown this once: verify each webhook with it "
        "(Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature headers)"
    )


class SubscriptionList(ApiModel):
    items: list[SubscriptionOut]


class AttemptOut(ApiModel):
    attempt: int
    started_at: UtcDatetime
    duration_ms: float
    ok: bool
    response_code: int | None = Field(description="HTTP status (webhook) or SMTP reply code (e-mail); null: none")
    error: str | None


class DeliveryOut(ApiModel):
    id: int
    channel: str = Field(description="webhook or email")
    subscription_id: int | None
    bulk_change_id: int
    type: str = Field(description="The message type, e.g. bulk_change.completed or bulk_change.device_results")
    event: str
    page: int | None = Field(description="The device results page this delivery carries; null: the event")
    message_id: str = Field(description="The webhook-id header: the same on every attempt")
    status: str = Field(description="pending, delivered or dead")
    attempt_count: int
    next_attempt_at: UtcDatetime | None
    last_error: str | None
    created_at: UtcDatetime
    finished_at: UtcDatetime | None
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, d: deliveries.DeliveryOut) -> DeliveryOut:
        return cls(
            id=d.id,
            channel=d.channel,
            subscription_id=d.subscription_id,
            bulk_change_id=d.bulk_change_id,
            type="bulk_change.device_results" if d.page is not None else message_type(d.event),
            event=d.event,
            page=d.page,
            message_id=d.message_id,
            status=d.status,
            attempt_count=d.attempt_count,
            next_attempt_at=d.next_attempt_at,
            last_error=d.last_error,
            created_at=d.created_at,
            finished_at=d.finished_at,
            attempts=[AttemptOut(**a.__dict__) for a in d.attempts],
        )


class DeliveryPageOut(ApiModel):
    items: list[DeliveryOut]
    page: int
    page_size: int
    total: int
    next_page: int | None


notifications = APIRouter(
    tags=["notifications"],
    responses={k: PROBLEMS[k] for k in (401, 422)},
    dependencies=[Depends(known_query_only)],
)
SubscriptionId = Path(ge=1, le=MAX_ID, description="Subscription id")
DeliveryId = Path(ge=1, le=MAX_ID, description="Delivery id")
SUBSCRIPTION_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SubscriptionIn.model_json_schema(by_alias=True)}},
    }
}


def _invalid(detail: str) -> ApiProblem:
    return ApiProblem(422, detail, title="Subscription refused")


def _create(engine: sa.Engine, caller: Caller, body: SubscriptionIn) -> SubscriptionCreated:
    """Check everything, store the subscription, derive its secret (run in a worker thread: DNS)."""
    for name, value in (("url", body.url), ("description", body.description)):
        if reason := text_reason(name, value):
            raise _invalid(reason)
    try:
        events = parse_events(body.events)
        target = check_webhook_url(body.url, allow_private=settings.webhook_allow_private())
    except (ValueError, AddressRefused) as exc:  # AddressRefused is a ValueError; both say why
        raise _invalid(str(exc)) from None
    try:
        signing_key = settings.webhook_signing_key()
    except RuntimeError as exc:  # a deployment without its signing key: say what to set, store nothing
        raise ApiProblem(503, str(exc), title="Webhook signing is not configured") from None
    nonce = new_nonce()
    secret = derive_secret(signing_key, nonce)
    sub = store.create_subscription(
        engine,
        caller.tenant_id,
        url=target.url,
        events=events,
        secret_nonce=nonce,
        created_by=caller.label,
        device_results=body.device_results,
        page_size=body.page_size,
        description=body.description,
    )
    return SubscriptionCreated(**SubscriptionOut.of(sub).model_dump(), secret=secret.get_secret_value())


@notifications.post(
    "/notifications/subscriptions",
    status_code=201,
    response_model=SubscriptionCreated,
    openapi_extra=SUBSCRIPTION_BODY,
    summary="Subscribe a webhook to this tenant's bulk change events",
    responses={k: PROBLEMS[k] for k in (400, 413, 415)},
)
async def create_subscription(
    request: Request, response: Response, caller: Submitter, engine: Engine
) -> SubscriptionCreated:
    """The URL is refused (422, with the reason) unless it is http or https, carries no user info
    and every address it resolves to is public. The answer holds the signing secret: it is not
    shown again (create a new subscription to get a new one)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ApiProblem(415, "send the subscription as JSON (Content-Type: application/json)")
    data = b"".join(
        [
            chunk
            async for chunk in capped_stream(
                request, MAX_BODY, lambda size: ApiProblem(413, f"the body is over {MAX_BODY} bytes ({size})")
            )
        ]
    )
    try:
        body = SubscriptionIn.model_validate_json(data)
    except ValidationError as exc:
        errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors(include_url=False)]
        detail = "; ".join(f"{'.'.join(e['loc']) or 'body'}: {e['msg']}" for e in errors[:10])
        raise ApiProblem(422, detail or "invalid subscription", title="Invalid request", errors=errors) from None
    created = await run_in_threadpool(_create, engine, caller, body)
    response.headers["Location"] = f"/notifications/subscriptions/{created.id}"
    return created


@notifications.get(
    "/notifications/subscriptions", response_model=SubscriptionList, summary="This tenant's webhook subscriptions"
)
def list_subscriptions(caller: CurrentCaller, engine: Engine) -> SubscriptionList:
    """Every live subscription, oldest first (never the secret)."""
    return SubscriptionList(items=[SubscriptionOut.of(s) for s in store.list_subscriptions(engine, caller.tenant_id)])


def _no_subscription(subscription_id: int) -> ApiProblem:
    return ApiProblem(
        404, f"no subscription {subscription_id} for this API key's tenant", title="Subscription not found"
    )


@notifications.get(
    "/notifications/subscriptions/{subscription_id}",
    response_model=SubscriptionOut,
    summary="One webhook subscription",
    responses={404: PROBLEMS[404]},
)
def get_subscription(caller: CurrentCaller, engine: Engine, subscription_id: int = SubscriptionId) -> SubscriptionOut:
    sub = store.get_subscription(engine, caller.tenant_id, subscription_id)
    if sub is None:
        raise _no_subscription(subscription_id)
    return SubscriptionOut.of(sub)


@notifications.delete(
    "/notifications/subscriptions/{subscription_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a webhook subscription",
    responses={404: PROBLEMS[404]},
)
def delete_subscription(caller: Submitter, engine: Engine, subscription_id: int = SubscriptionId) -> Response:
    """No more events are sent to it; its pending deliveries end dead ("subscription deleted")."""
    if not store.delete_subscription(engine, caller.tenant_id, subscription_id):
        raise _no_subscription(subscription_id)
    return Response(status_code=204)


def _no_delivery(delivery_id: int) -> ApiProblem:
    return ApiProblem(404, f"no delivery {delivery_id} for this API key's tenant", title="Delivery not found")


@notifications.get(
    "/notifications/deliveries",
    response_model=DeliveryPageOut,
    summary="This tenant's notification deliveries, newest first, with every attempt",
)
def list_deliveries(
    caller: CurrentCaller,
    engine: Engine,
    status: DeliveryStatus | None = Query(None, description="Only deliveries in this state"),
    bulk_change_id: int | None = Query(None, alias="bulkChangeId", ge=1, le=MAX_ID),
    page: int = Query(1, ge=1, le=1_000_000),
    page_size: int = Query(50, alias="pageSize", ge=1, le=deliveries.MAX_DELIVERY_PAGE),
) -> DeliveryPageOut:
    found = deliveries.list_deliveries(
        engine, caller.tenant_id, status=status, bulk_change_id=bulk_change_id, page=page, page_size=page_size
    )
    more = found.page * found.page_size < found.total
    return DeliveryPageOut(
        items=[DeliveryOut.of(d) for d in found.items],
        page=found.page,
        page_size=found.page_size,
        total=found.total,
        next_page=found.page + 1 if more else None,
    )


@notifications.get(
    "/notifications/deliveries/{delivery_id}",
    response_model=DeliveryOut,
    summary="One delivery with every attempt",
    responses={404: PROBLEMS[404]},
)
def get_delivery(caller: CurrentCaller, engine: Engine, delivery_id: int = DeliveryId) -> DeliveryOut:
    try:
        return DeliveryOut.of(deliveries.get_delivery(engine, caller.tenant_id, delivery_id))
    except deliveries.DeliveryNotFound:
        raise _no_delivery(delivery_id) from None


@notifications.post(
    "/notifications/deliveries/{delivery_id}/resend",
    response_model=DeliveryOut,
    summary="Send a delivered or dead delivery again",
    responses={k: PROBLEMS[k] for k in (404, 409)},
)
def resend(caller: Submitter, engine: Engine, delivery_id: int = DeliveryId) -> Any:
    """The same message (same webhook-id) goes out again on the next delivery pass, with a fresh
    retry schedule; its earlier attempts stay listed. 409 while it is still pending, or when its
    subscription was deleted."""
    try:
        return DeliveryOut.of(deliveries.resend_delivery(engine, caller.tenant_id, delivery_id, utcnow()))
    except deliveries.DeliveryNotFound:
        raise _no_delivery(delivery_id) from None
    except deliveries.ResendRefused as exc:
        raise ApiProblem(409, str(exc), title="Cannot re-send") from None
