"""The business database schema (DESIGN section 3) as SQLAlchemy 2.0 Core metadata.

Core tables rather than ORM classes: the hot paths are set-based bulk writes (executemany,
UPDATE ... WHERE id IN), and Core keeps them explicit. Every business table carries tenant_id.
Timestamps are naive UTC (SQLite has no time zones; PostgreSQL stores the same values).
Changes go through Alembic migrations in ``store/migrations``.
"""

from __future__ import annotations

import sqlalchemy as sa

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING)

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only


def _id() -> sa.Column[int]:
    return sa.Column("id", BigId, primary_key=True, autoincrement=True)


def _tenant() -> sa.Column[int]:
    return sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenant.id"), nullable=False, index=True)


tenant = sa.Table(
    "tenant",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("archive_after_days", sa.Integer, nullable=False, server_default="90"),
    sa.Column("purge_after_days", sa.Integer, nullable=False, server_default="365"),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

api_key = sa.Table(
    "api_key",
    metadata,
    _id(),
    _tenant(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(128), nullable=False, unique=True),  # sha256 hex; the key is never stored
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("revoked_at", sa.DateTime),
    # comma-separated domain.approval.Role values; keys made before revision 0013 keep every right they had
    sa.Column("roles", sa.String(64), nullable=False, server_default="submitter,approver"),
)

service_provider = sa.Table(
    "service_provider",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _tenant(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("integration", sa.String(32), nullable=False),  # jasper, thingspace, telegence, teal, pond, revio
    sa.Column("carrier", sa.String(64), nullable=False),  # e.g. att_pod19, t_mobile_jasper, rogers, verizon
    sa.Column("portal_type", sa.Integer, nullable=False, server_default="0"),  # M2M=0, Mobility=2
    sa.Column("base_url", sa.String(500), nullable=False),
    # Name of the credentials entry in the environment (BULKCHANGE_CRED_<NAME>_*); never the secret.
    sa.Column("credentials_name", sa.String(100), nullable=False),
    sa.Column("write_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("rate_per_second", sa.Float, nullable=False, server_default="5"),
    sa.Column("max_concurrency", sa.Integer, nullable=False, server_default="1"),
    sa.Column("batch_size", sa.Integer, nullable=False, server_default="500"),
    # rest | soap: the API a Jasper-family account is reached through (migration 0009).
    sa.Column("protocol", sa.String(8), nullable=False, server_default="rest"),
    sa.CheckConstraint("protocol IN ('rest', 'soap')", name="protocol"),
    sa.UniqueConstraint("tenant_id", "name"),
)

carrier_rate_plan = sa.Table(
    "carrier_rate_plan",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _tenant(),
    sa.Column("service_provider_id", sa.Integer, sa.ForeignKey("service_provider.id"), nullable=False),
    sa.Column("code", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("communication_plan", sa.String(128)),
    sa.UniqueConstraint("service_provider_id", "code"),
)

customer = sa.Table(
    "customer",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _tenant(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("rev_customer_id", sa.String(64)),
)

customer_rate_plan = sa.Table(
    "customer_rate_plan",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _tenant(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("data_allocation_mb", sa.Integer),
)

customer_rate_pool = sa.Table(
    "customer_rate_pool",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _tenant(),
    sa.Column("name", sa.String(200), nullable=False),
)

device = sa.Table(
    "device",
    metadata,
    _id(),
    _tenant(),
    sa.Column("service_provider_id", sa.Integer, sa.ForeignKey("service_provider.id"), nullable=False),
    sa.Column("iccid", sa.String(20), index=True),
    sa.Column("imei", sa.String(15), index=True),
    sa.Column("msisdn", sa.String(15), index=True),
    sa.Column("eid", sa.String(32), index=True),
    sa.Column("status", sa.String(64)),
    sa.Column("carrier_rate_plan", sa.String(128)),
    sa.Column("communication_plan", sa.String(128)),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customer.id")),
    sa.Column("customer_rate_plan_id", sa.Integer, sa.ForeignKey("customer_rate_plan.id")),
    sa.Column("customer_rate_pool_id", sa.Integer, sa.ForeignKey("customer_rate_pool.id")),
    sa.Column("data_allocation_mb", sa.Integer),
    sa.Column("username", sa.String(128)),
    sa.Column("cost_center", sa.String(128)),
    sa.Column("last_usage_at", sa.DateTime),
    sa.Column("has_active_rev_service", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("archived_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

# One request without a service provider, split into one bulk change per service provider
# (revision 0015; ``intake.split``, ``store.submissions``). Its status is derived from its children
# and its refused devices, never stored. ``request`` is the header as stored (no devices).
submission = sa.Table(
    "submission",
    metadata,
    _id(),
    _tenant(),
    sa.Column("change_type", sa.Integer, nullable=False),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("idempotency_key", sa.String(200)),
    sa.Column("request_fingerprint", sa.String(64)),
    sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_submission_tenant_idempotency"),
)

# The devices a split could not place (not in the tenant's inventory, in more than one service
# provider's, or refused before placement such as a CSV row that did not parse): the parent's ERROR rows.
submission_refused = sa.Table(
    "submission_refused",
    metadata,
    sa.Column("submission_id", BigId, sa.ForeignKey("submission.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("row_number", sa.Integer, primary_key=True),
    sa.Column("identifier", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

bulk_change = sa.Table(
    "bulk_change",
    metadata,
    _id(),
    _tenant(),
    sa.Column("service_provider_id", sa.Integer, sa.ForeignKey("service_provider.id"), nullable=False),
    sa.Column("change_type", sa.Integer, nullable=False),
    sa.Column("portal_type", sa.Integer, nullable=False, server_default="0"),
    sa.Column("process_changes", sa.Boolean, nullable=False, server_default=sa.true()),
    # 32 for AWAITING_APPROVAL (revision 0013). SQLite does not enforce lengths, so its tables keep
    # the 16 they were made with: changing it there means rebuilding bulk_change, whose DROP would
    # cascade its device rows away under foreign_keys=ON.
    sa.Column("status", sa.String(32).with_variant(sa.String(16), "sqlite"), nullable=False, index=True),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("effective_at", sa.DateTime),  # earliest effective date of its scheduled rows
    sa.Column("processed_at", sa.DateTime),
    sa.Column("idempotency_key", sa.String(200)),
    # sha256 of the normalised request (intake.submit.request_fingerprint): the same key with another
    # request is refused, not answered with this bulk change (None: stored before revision 0007)
    sa.Column("request_fingerprint", sa.String(64)),
    sa.Column("counts", sa.JSON),  # device rows by status, as of the last finalize
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),  # bumped by retry; part of run_key
    sa.Column("deleted_at", sa.DateTime),  # soft delete (archived)
    # the bulk change this one undoes (intake.undo; revision 0014); None for every other. No foreign
    # key: SQLite could add one only by rebuilding bulk_change, which would cascade its rows away.
    sa.Column("undo_of", BigId, index=True),
    # the submission this bulk change is one child of (a request split by service provider,
    # ``intake.split``; revision 0015), or None. Children keep idempotency_key None: the parent holds it.
    sa.Column("submission_id", BigId, sa.ForeignKey("submission.id"), index=True),
    sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_bulk_change_tenant_idempotency"),
)

# Who holds a tenant's idempotency key: ONE bulk change or ONE submission (revision 0016;
# ``store.idempotency``). Both create paths insert here in their own transaction, so the unique
# constraint decides a race between a bulk change and a submission sent with one key. Purging a
# bulk change frees its key, as the row that held it on bulk_change goes too.
idempotency_key = sa.Table(
    "idempotency_key",
    metadata,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenant.id"), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("bulk_change_id", BigId, sa.ForeignKey("bulk_change.id", ondelete="CASCADE"), index=True),
    sa.Column("submission_id", BigId, sa.ForeignKey("submission.id", ondelete="CASCADE"), index=True),
    sa.CheckConstraint("(bulk_change_id IS NULL) <> (submission_id IS NULL)", name="one_holder"),
)

device_change = sa.Table(
    "device_change",
    metadata,
    _id(),
    _tenant(),
    sa.Column("bulk_change_id", BigId, sa.ForeignKey("bulk_change.id", ondelete="CASCADE"), nullable=False),
    sa.Column("device_id", BigId, sa.ForeignKey("device.id")),  # null when the identifier matched no device
    sa.Column("iccid", sa.String(40)),
    sa.Column("msisdn", sa.String(40)),
    sa.Column("imei", sa.String(40)),
    sa.Column("eid", sa.String(40)),
    sa.Column("change_request", sa.JSON, nullable=False),  # the per-device target values
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_details", sa.Text),
    sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("poll_count", sa.Integer, nullable=False, server_default="0"),  # async: polls that found it pending
    sa.Column("carrier_request_id", sa.String(100), index=True),
    sa.Column("effective_at", sa.DateTime),
    sa.Column("processed_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime),
    sa.Index("ix_device_change_bulk_status", "bulk_change_id", "status"),
    sa.Index("ix_device_change_device", "device_id", "status"),
)

bulk_change_log = sa.Table(
    "bulk_change_log",
    metadata,
    _id(),
    _tenant(),
    sa.Column("bulk_change_id", BigId, sa.ForeignKey("bulk_change.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("device_change_id", BigId, sa.ForeignKey("device_change.id", ondelete="CASCADE"), index=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("process_by", sa.String(200), nullable=False),
    sa.Column("request_text", sa.Text),  # redacted
    sa.Column("response_text", sa.Text),  # redacted
    sa.Column("has_errors", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("response_status", sa.String(32)),
    sa.Column("response_ms", sa.Float),  # carrier response time of this exchange
    sa.Column("attempt", sa.Integer),  # try number within one logical carrier request (1 = first)
    sa.Column("sent_at", sa.DateTime),  # when this exchange was sent (created_at: when it was recorded)
    sa.Column("created_at", sa.DateTime, nullable=False),
)

carrier_callback = sa.Table(
    "carrier_callback",
    metadata,
    _id(),
    sa.Column("integration", sa.String(32), nullable=False),
    sa.Column("request_id", sa.String(100), nullable=False),
    sa.Column("device_key", sa.String(64), nullable=False, server_default=""),
    sa.Column("payload", sa.JSON, nullable=False),  # redacted
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Column("applied_at", sa.DateTime),
    sa.UniqueConstraint("integration", "request_id", "device_key", name="uq_carrier_callback_dedupe"),
    sa.Index("ix_carrier_callback_request_applied", "request_id", "applied_at"),
)

# One row per start of a callback receiver (any app serving /callbacks/...). Callbacks that arrived
# while it was down are lost (carriers retry a while, then give up), so the async results sensor
# polls the rows sent before its latest start once, right away (store.callbacks, DESIGN R6).
callback_receiver_start = sa.Table(
    "callback_receiver_start",
    metadata,
    _id(),
    sa.Column("started_at", sa.DateTime, nullable=False, index=True),
    sa.Column("stopped_at", sa.DateTime),  # a clean shutdown; null: still up, or it died
    sa.Column("process", sa.String(200), nullable=False),  # host:pid, for the operator
)

# Console sessions ended by sign-out before they expire (store.console): a replayed cookie of one
# is refused by every intake replica. A row is useless after expires_at and is purged then.
console_session_revoked = sa.Table(
    "console_session_revoked",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.DateTime, nullable=False),
)

device_history = sa.Table(
    "device_history",
    metadata,
    _id(),
    _tenant(),
    sa.Column("device_id", BigId, sa.ForeignKey("device.id"), nullable=False, index=True),
    sa.Column("field", sa.String(64), nullable=False),
    sa.Column("old_value", sa.Text),
    sa.Column("new_value", sa.Text),
    sa.Column("bulk_change_id", BigId, sa.ForeignKey("bulk_change.id", ondelete="SET NULL"), index=True),
    sa.Column("changed_at", sa.DateTime, nullable=False),
)

# Device columns a change may write, and so the ones device history records.
DEVICE_CHANGE_FIELDS = (
    "status",
    "carrier_rate_plan",
    "communication_plan",
    "customer_id",
    "customer_rate_plan_id",
    "customer_rate_pool_id",
    "data_allocation_mb",
    "username",
    "cost_center",
    "iccid",
    "imei",
    "msisdn",
    "has_active_rev_service",
    "archived_at",
)

# --- completion notifications (issue 20; store.notifications, store.notification_deliveries) ----

# A tenant's webhook endpoint. The signing secret is not stored in any form: it is derived when a
# message is signed from BULKCHANGE_WEBHOOK_SIGNING_KEY (environment) and this row's random,
# public nonce (engine.notify.signing says why).
webhook_subscription = sa.Table(
    "webhook_subscription",
    metadata,
    _id(),
    _tenant(),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("events", sa.JSON, nullable=False),  # ["completed", "failed", "needs_attention"]
    sa.Column("device_results", sa.Boolean, nullable=False, server_default=sa.false()),  # also send result pages
    sa.Column("page_size", sa.Integer, nullable=False, server_default="500"),
    sa.Column("description", sa.String(200), nullable=False, server_default=""),
    sa.Column("secret_nonce", sa.String(64), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("deleted_at", sa.DateTime),  # deleted: kept for its deliveries' history
)

# A tenant's e-mail recipients and SMTP server (set by an operator). The SMTP password is never
# stored: ``smtp_credentials_name`` names a BULKCHANGE_CRED_<NAME>_USERNAME/_SECRET entry.
notification_email = sa.Table(
    "notification_email",
    metadata,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenant.id"), primary_key=True),
    sa.Column("recipients", sa.JSON, nullable=False),
    sa.Column("events", sa.JSON, nullable=False),
    sa.Column("sender", sa.String(320), nullable=False),
    sa.Column("smtp_host", sa.String(255), nullable=False),
    sa.Column("smtp_port", sa.Integer, nullable=False),
    sa.Column("smtp_security", sa.String(8), nullable=False, server_default="starttls"),
    sa.Column("smtp_credentials_name", sa.String(100)),  # null: the server takes mail without AUTH
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.CheckConstraint("smtp_security IN ('none', 'starttls', 'tls')", name="smtp_security"),
)

# One row per settled bulk change attempt and event, written in the transaction that wrote the
# header it follows from (store.headers.write_header); the unique key makes a second settle of
# the same attempt (a sensor after finalize) add nothing.
notification_event = sa.Table(
    "notification_event",
    metadata,
    _id(),
    _tenant(),
    sa.Column("bulk_change_id", BigId, sa.ForeignKey("bulk_change.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),  # the message's data as of the settlement: no secret
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("bulk_change_id", "attempt", "event", name="uq_notification_event_once"),
)

# One message to one target: a subscription (the event, or one page of device results) or the
# tenant's e-mail recipients. ``message_id`` is the webhook-id, the same on every attempt.
notification_delivery = sa.Table(
    "notification_delivery",
    metadata,
    _id(),
    _tenant(),
    sa.Column(
        "event_id", BigId, sa.ForeignKey("notification_event.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("channel", sa.String(8), nullable=False),  # webhook | email
    sa.Column("subscription_id", BigId, sa.ForeignKey("webhook_subscription.id"), index=True),
    sa.Column("page", sa.Integer),  # device results page (1-based); null: the event itself
    sa.Column("message_id", sa.String(64), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | dead
    sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("schedule_base", sa.Integer, nullable=False, server_default="0"),  # attempts before the last resend
    sa.Column("claims", sa.Integer, nullable=False, server_default="0"),  # times a delivery run took it
    sa.Column("next_attempt_at", sa.DateTime),
    sa.Column("claimed_until", sa.DateTime),  # a delivery run's lease; past it another run may take it
    sa.Column("last_error", sa.String(500)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),  # delivered or dead
    sa.Index("ix_notification_delivery_due", "status", "next_attempt_at"),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status"),
    sa.CheckConstraint("channel IN ('webhook', 'email')", name="channel"),
)

# Every attempt of a delivery: when, how long, the answer's status code (HTTP or SMTP) or the
# error. Never a header, a body or a URL.
notification_attempt = sa.Table(
    "notification_attempt",
    metadata,
    _id(),
    _tenant(),
    sa.Column("delivery_id", BigId, sa.ForeignKey("notification_delivery.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),  # 1-based, over the delivery's whole life
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("response_code", sa.Integer),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("error", sa.String(500)),
    sa.UniqueConstraint("delivery_id", "attempt", name="uq_notification_attempt_delivery_attempt"),
)

# --- file drops (issue 20; store.file_drops, intake.drops) ---------------------------------------

# A tenant's drop folders. Null URLs: the embedded default, local folders under the data folder.
# An SFTP password is never stored: ``credentials_name`` names a BULKCHANGE_CRED_<NAME>_* entry.
# ``service_provider_id``/``change_type``: what a dropped CSV asks for (a CSV has no header for them).
file_drop_setting = sa.Table(
    "file_drop_setting",
    metadata,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenant.id"), primary_key=True),
    sa.Column("inbox_url", sa.String(1000)),
    sa.Column("outbox_url", sa.String(1000)),
    sa.Column("credentials_name", sa.String(100)),
    sa.Column("service_provider_id", sa.Integer, sa.ForeignKey("service_provider.id")),
    sa.Column("change_type", sa.Integer),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    # X12 trading partners: {"<ISA05>:<ISA06>" or "*": PartnerSettings as JSON} (intake.x12).
    sa.Column("partner_settings", sa.JSON),
)

# One row per file content taken from an inbox (the content hash is the idempotency key): the
# bulk change it became, when the file left the inbox, and when its results reached the outbox.
file_drop = sa.Table(
    "file_drop",
    metadata,
    _id(),
    _tenant(),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("name", sa.String(300), nullable=False),  # as found, made safe (intake.drops.names)
    sa.Column("format", sa.String(8), nullable=False),  # csv | json | xml | (x12 when registered)
    # null when the file became a submission split by service provider (``submission_id``; revision 0015)
    sa.Column("bulk_change_id", BigId, sa.ForeignKey("bulk_change.id", ondelete="CASCADE")),
    sa.Column("submission_id", BigId, sa.ForeignKey("submission.id"), index=True),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Column("moved_at", sa.DateTime),  # moved to processed/; null: a crash came between
    sa.Column("results_name", sa.String(300)),
    sa.Column("results_written_at", sa.DateTime),
    sa.UniqueConstraint("tenant_id", "content_sha256", name="uq_file_drop_tenant_content"),
    sa.Index("ix_file_drop_results_due", "results_written_at"),
)

# --- X12 through the drops (issue 20; store.x12_interchanges, intake.drops.x12_files) ------------

# One row per interchange taken (sender, ISA13): a resend is acknowledged and not processed again.
# ``requests`` are the bulk change requests the 856 makes (one per configured change), submitted
# one after the other; ``bulk_change_ids`` those submitted so far. The content is kept for the 824.
x12_interchange = sa.Table(
    "x12_interchange",
    metadata,
    _id(),
    _tenant(),
    sa.Column("sender", sa.String(40), nullable=False),  # ISA05:ISA06
    sa.Column("control", sa.String(20), nullable=False),  # ISA13
    sa.Column("name", sa.String(300), nullable=False),  # the file as found, made safe
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("requests", sa.JSON, nullable=False),
    sa.Column("serial_qualifiers", sa.JSON, nullable=False),
    sa.Column("bulk_change_ids", sa.JSON, nullable=False),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Column("advice_name", sa.String(300)),
    sa.Column("advice_written_at", sa.DateTime),
    sa.UniqueConstraint("tenant_id", "sender", "control", name="uq_x12_interchange_tenant_sender_control"),
    sa.Index("ix_x12_interchange_advice_due", "advice_written_at"),
)

# The control numbers (ISA13/GS06) of the interchanges we send, per tenant: the last one given.
x12_control_number = sa.Table(
    "x12_control_number",
    metadata,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenant.id"), primary_key=True),
    sa.Column("last_value", sa.Integer, nullable=False),
)

# Four-eyes approval (revision 0013): a tenant's policy, and one approval request per bulk change
# that needed one (``domain.approval``, ``store.approvals``).
approval_policy = sa.Table(
    "approval_policy",
    metadata,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenant.id"), primary_key=True),
    sa.Column("max_devices", sa.Integer),  # more accepted devices than this need approval; null: no size rule
    sa.Column("irreversible", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("expires_after_hours", sa.Integer, nullable=False, server_default="72"),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

bulk_change_approval = sa.Table(
    "bulk_change_approval",
    metadata,
    sa.Column("bulk_change_id", BigId, sa.ForeignKey("bulk_change.id", ondelete="CASCADE"), primary_key=True),
    _tenant(),
    sa.Column("state", sa.String(16), nullable=False),  # domain.approval.ApprovalState
    sa.Column("needed_because", sa.Text, nullable=False),
    sa.Column("submitted_by", sa.String(200), nullable=False),  # the label shown (created_by)
    sa.Column("submitted_principal", sa.String(200), nullable=False),  # who, for the four-eyes rule
    sa.Column("requested_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("decided_at", sa.DateTime),
    sa.Column("reason", sa.Text),  # a rejection's reason, as given
    sa.Index("ix_bulk_change_approval_due", "state", "expires_at"),
)
