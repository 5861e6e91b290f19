"""The fixtures the browser tests share with the deployment tests (a fresh Dagster deployment, a
shaped bulk change) and with each other (the headless browser)."""

from ..deploy.test_crash_recovery import fresh, shape  # noqa: F401 - fixtures
from .test_dagster_ui import browser  # noqa: F401 - fixture
