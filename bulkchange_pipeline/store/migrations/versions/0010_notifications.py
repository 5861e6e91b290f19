"""completion notifications: webhook subscriptions, e-mail settings, events, deliveries, attempts

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_subscription",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("device_results", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("page_size", sa.Integer(), server_default="500", nullable=False),
        sa.Column("description", sa.String(length=200), server_default="", nullable=False),
        sa.Column("secret_nonce", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_webhook_subscription_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_subscription")),
    )
    op.create_index(op.f("ix_webhook_subscription_tenant_id"), "webhook_subscription", ["tenant_id"])

    op.create_table(
        "notification_email",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("smtp_host", sa.String(length=255), nullable=False),
        sa.Column("smtp_port", sa.Integer(), nullable=False),
        sa.Column("smtp_security", sa.String(length=8), server_default="starttls", nullable=False),
        sa.Column("smtp_credentials_name", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "smtp_security IN ('none', 'starttls', 'tls')", name=op.f("ck_notification_email_smtp_security")
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_notification_email_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_notification_email")),
    )

    op.create_table(
        "notification_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("bulk_change_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["bulk_change_id"],
            ["bulk_change.id"],
            name=op.f("fk_notification_event_bulk_change_id_bulk_change"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_notification_event_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_event")),
        sa.UniqueConstraint("bulk_change_id", "attempt", "event", name="uq_notification_event_once"),
    )
    op.create_index(op.f("ix_notification_event_tenant_id"), "notification_event", ["tenant_id"])

    op.create_table(
        "notification_delivery",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("subscription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("schedule_base", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claims", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')", name=op.f("ck_notification_delivery_status")),
        sa.CheckConstraint("channel IN ('webhook', 'email')", name=op.f("ck_notification_delivery_channel")),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["notification_event.id"],
            name=op.f("fk_notification_delivery_event_id_notification_event"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscription.id"],
            name=op.f("fk_notification_delivery_subscription_id_webhook_subscription"),
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_notification_delivery_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_delivery")),
        sa.UniqueConstraint("message_id", name=op.f("uq_notification_delivery_message_id")),
    )
    op.create_index(op.f("ix_notification_delivery_tenant_id"), "notification_delivery", ["tenant_id"])
    op.create_index(op.f("ix_notification_delivery_event_id"), "notification_delivery", ["event_id"])
    op.create_index(op.f("ix_notification_delivery_subscription_id"), "notification_delivery", ["subscription_id"])
    op.create_index("ix_notification_delivery_due", "notification_delivery", ["status", "next_attempt_at"])

    op.create_table(
        "notification_attempt",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["notification_delivery.id"],
            name=op.f("fk_notification_attempt_delivery_id_notification_delivery"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_notification_attempt_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_attempt")),
        sa.UniqueConstraint("delivery_id", "attempt", name="uq_notification_attempt_delivery_attempt"),
    )
    op.create_index(op.f("ix_notification_attempt_tenant_id"), "notification_attempt", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("notification_attempt")
    op.drop_table("notification_delivery")
    op.drop_table("notification_event")
    op.drop_table("notification_email")
    op.drop_table("webhook_subscription")
