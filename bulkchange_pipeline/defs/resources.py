"""Dagster resources: the business database and the carrier gateway.

Neither holds a secret in its config: the database URL is read from ``BULKCHANGE_DATABASE_URL``
(default: the embedded SQLite file) and carrier secrets from ``BULKCHANGE_CRED_*`` variables, when
a step needs them, so nothing secret reaches run config or the event log.
"""

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, field_validator

from .. import settings
from ..carriers import CarrierAccount
from ..engine.accounts import carrier_account
from ..store.db import shared_engine
from ..store.reference import ServiceProviderInfo


class DatabaseResource(dg.ConfigurableResource):
    """The business database. Empty ``url_env`` value means the embedded SQLite default."""

    url_env: str = Field(
        "BULKCHANGE_DATABASE_URL",
        pattern=r"^BULKCHANGE_[A-Z0-9_]*URL$",
        description="Environment variable holding the SQLAlchemy URL: a BULKCHANGE_..._URL name, never a "
        "BULKCHANGE_CRED_ one (the launchpad can set this, and a secret read as a URL would be echoed in the error)",
    )

    @field_validator("url_env")
    @classmethod
    def _not_a_credential(cls, value: str) -> str:
        if value.startswith("BULKCHANGE_CRED_"):
            raise ValueError("url_env may not name a credentials variable (BULKCHANGE_CRED_...)")
        return value

    def engine(self) -> sa.Engine:
        return shared_engine(settings.database_url(self.url_env))


class CarrierGatewayResource(dg.ConfigurableResource):
    """Builds a carrier account (URL, limits from the service provider; secret from the environment).

    The credentials' variable prefix is fixed (``BULKCHANGE_CRED_``), not config: config can be set
    from the launchpad, and a chosen prefix could point one tenant's run at another tenant's
    credentials (``reliability/test_tenant_isolation.py``). For the same reason every setting has
    bounds: a launchpad run with 1,000 attempts or a one-year timeout fails before any carrier call,
    naming the setting and its bounds."""

    timeout_seconds: float = Field(10.0, gt=0, le=300, description="HTTP timeout per carrier call (0-300 s)")
    max_attempts: int = Field(4, ge=1, le=10, description="1 try + 3 retries (DESIGN R8); 1-10")
    retry_wait_seconds: float = Field(
        1.0, ge=0, le=300, description="Fixed wait between HTTP retries unless the carrier states one (0-300 s)"
    )
    poll_after_seconds: int = Field(
        900,
        ge=0,
        le=86_400,
        description="Async carriers: poll a row whose answer has not come this long after it was sent (0-86400 s)",
    )
    async_timeout_seconds: int = Field(
        4 * 3600,
        ge=1,
        le=7 * 86_400,
        description="Async carriers: a row with no answer this long after it was sent ends API_FAILED (1 s-7 days)",
    )

    def account(self, sp: ServiceProviderInfo) -> CarrierAccount:
        return carrier_account(
            sp,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
            retry_wait_seconds=self.retry_wait_seconds,
        )
