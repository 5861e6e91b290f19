"""The simulator park: all six carrier simulators at once, each on a loopback port in a thread,
with their demo accounts, so the demo, ``make dev`` and the capability-matrix test exercise every
carrier the way production would (real HTTP, real credentials from ``BULKCHANGE_CRED_*``).

Why one object: the service providers' base URLs and the credentials env must match what the
simulators were started with, and that pairing is easy to get wrong by hand (Jasper wants
``.../rws/api/v1``, Pond ``.../api``, Rev.io ``.../v1``, the others the host root). ``Park`` keeps
the pairing in one place: ``base_urls`` for the service provider rows, ``credentials_env`` for the
process environment.

By default the simulators run without rate limits or faults (tests and the demo measure our
pipeline, not the carriers' throttling); ``limits=True`` keeps each simulator's realistic limits
and ``faults={integration: FaultConfig}`` switches faults on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .faults import FaultConfig
from .jasper import JasperSimulator
from .pond import PondSimulator
from .revio import RevioSimulator
from .server import ServerHandle
from .teal import TealSimulator
from .telegence import TelegenceSimulator
from .thingspace import ThingSpaceSimulator

INTEGRATIONS = ("jasper", "thingspace", "telegence", "teal", "pond", "revio")

# The demo accounts every simulator is started with (not real secrets: loopback simulators only).
JASPER_USER, JASPER_KEY = "demo", "demo-api-key"
TS_CLIENT_ID, TS_CLIENT_SECRET = "demo-client", "demo-client-secret"
TS_USER, TS_PASSWORD, TS_ACCOUNT = "demo-uws", "demo-uws-password", "0000123456-00001"
TS_CALLBACK_USER, TS_CALLBACK_PASSWORD = "demo-callback", "demo-callback-password"
TELEGENCE_APP, TELEGENCE_SECRET = "demo-app", "demo-app-secret"
TELEGENCE_BAN, TELEGENCE_ZIP = "287000000001", "75001"
TEAL_KEY, TEAL_SECRET = "demo-key", "demo-secret"
POND_USER, POND_SECRET, POND_DISTRIBUTOR = "demo", "demo-secret", "1001"
REVIO_USER, REVIO_PASSWORD, REVIO_KEY = "demo@DEMO", "demo-password", "demo-subscription-key"
REVIO_PROVIDER_ID, REVIO_PRODUCT_IDS = "1", "101,102"

# Integration -> (username, secret, extra keys) as the clients read them from the environment.
ACCOUNT_ENV: dict[str, tuple[str, str, dict[str, str]]] = {
    "jasper": (JASPER_USER, JASPER_KEY, {}),
    "thingspace": (
        TS_USER,
        TS_PASSWORD,
        {
            "CLIENT_ID": TS_CLIENT_ID,
            "CLIENT_SECRET": TS_CLIENT_SECRET,
            "ACCOUNT_NAME": TS_ACCOUNT,
            "CALLBACK_USERNAME": TS_CALLBACK_USER,
            "CALLBACK_PASSWORD": TS_CALLBACK_PASSWORD,
        },
    ),
    "telegence": (TELEGENCE_APP, TELEGENCE_SECRET, {"BAN": TELEGENCE_BAN, "SERVICE_ZIP_CODE": TELEGENCE_ZIP}),
    "teal": (TEAL_KEY, TEAL_SECRET, {}),
    "pond": (POND_USER, POND_SECRET, {"DISTRIBUTOR_ID": POND_DISTRIBUTOR}),
    "revio": (
        REVIO_USER,
        REVIO_PASSWORD,
        {"SUBSCRIPTION_KEY": REVIO_KEY, "PROVIDER_ID": REVIO_PROVIDER_ID, "PRODUCT_IDS": REVIO_PRODUCT_IDS},
    ),
}


@dataclass
class Park:
    """Six running simulators. ``simulators`` and ``handles`` are keyed by integration value."""

    simulators: dict[str, Any]
    handles: dict[str, ServerHandle]
    callback_base_url: str | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def base_urls(self) -> dict[str, str]:
        """Integration -> the base URL its client expects (what ``service_provider.base_url`` holds)."""
        return {name: handle.base_url for name, handle in self.handles.items()}

    def credentials_env(
        self, credentials_name_by_integration: Mapping[str, str], env_key: Callable[[str], str]
    ) -> dict[str, str]:
        """Every ``BULKCHANGE_CRED_<NAME>_*`` variable the clients need for these simulators'
        demo accounts (plus ``BULKCHANGE_CALLBACK_BASE_URL`` when the park knows it). ``env_key``
        is the app's naming of a credentials entry's variables (``settings.credential_env_key``),
        passed in because the simulators depend on nothing of the app."""
        env: dict[str, str] = {}
        for integration, name in credentials_name_by_integration.items():
            user, secret, extra = ACCOUNT_ENV[integration]
            key = env_key(name)
            env[f"{key}_USERNAME"], env[f"{key}_SECRET"] = user, secret
            env.update({f"{key}_{k}": v for k, v in extra.items()})
        if self.callback_base_url:
            env["BULKCHANGE_CALLBACK_BASE_URL"] = self.callback_base_url
        return env

    def calls(self) -> dict[str, int]:
        """Total API calls per simulator so far (admin calls excluded), e.g. to prove none were made."""
        return {name: int(sim.stats()["total_calls"]) for name, sim in self.simulators.items()}

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Until the asynchronous simulators (ThingSpace, Teal) have nothing outstanding."""
        return all(sim.wait_idle(timeout) for sim in self.simulators.values() if hasattr(sim, "wait_idle"))

    def stop(self) -> None:
        """Stop every server and the simulators' background threads (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        for handle in self.handles.values():
            handle.stop()
        for sim in self.simulators.values():
            close = getattr(sim, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> Park:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def build_simulators(
    *,
    limits: bool = False,
    faults: Mapping[str, FaultConfig] | None = None,
    teal_operation_delay_seconds: float = 0.2,
    telegence_activation_polls: int = 1,
) -> dict[str, Any]:
    """The six simulators with the demo accounts (not yet serving)."""
    f = dict(faults or {})
    jasper = JasperSimulator(
        {JASPER_USER: JASPER_KEY},
        faults=f.get("jasper"),
        **({} if limits else {"rate_per_second": 0, "max_concurrency": 0}),
    )
    thingspace = ThingSpaceSimulator(
        {TS_CLIENT_ID: TS_CLIENT_SECRET},
        {TS_USER: (TS_PASSWORD, TS_ACCOUNT)},
        faults=f.get("thingspace"),
        **({} if limits else {"activate_per_minute": 0}),
    )
    thingspace.configure(callback_retry_seconds=0.05 if not limits else 1.0)
    telegence = TelegenceSimulator(
        {TELEGENCE_APP: TELEGENCE_SECRET}, faults=f.get("telegence"), activation_polls=telegence_activation_polls
    )
    teal = TealSimulator(
        {TEAL_KEY: TEAL_SECRET},
        faults=f.get("teal"),
        operation_delay_seconds=teal_operation_delay_seconds,
        **({} if limits else {"calls_per_minute": 0}),
    )
    pond = PondSimulator(
        {POND_USER: (POND_SECRET, POND_DISTRIBUTOR)},
        faults=f.get("pond"),
        **({} if limits else {"rate_per_second": 0, "max_concurrency": 0}),
    )
    revio = RevioSimulator(
        {REVIO_USER: REVIO_PASSWORD},
        [REVIO_KEY],
        faults=f.get("revio"),
        **({} if limits else {"calls_per_minute": 0, "daily_quota": 0}),
    )
    return {
        "jasper": jasper,
        "thingspace": thingspace,
        "telegence": telegence,
        "teal": teal,
        "pond": pond,
        "revio": revio,
    }


def start_park(
    callback_base_url: str | None = None,
    *,
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    **options: Any,
) -> Park:
    """Start all six simulators (free loopback ports unless ``ports`` names them) in threads.

    ``options`` go to ``build_simulators``: ``limits`` (keep the carriers' own rate limits),
    ``faults`` ({integration: FaultConfig}), ``teal_operation_delay_seconds``,
    ``telegence_activation_polls``. ``callback_base_url`` is where our callback app listens; it
    only ends up in ``credentials_env`` (the clients tell the carriers where to call back).
    """
    sims = build_simulators(**options)
    handles: dict[str, ServerHandle] = {}
    try:
        for name, sim in sims.items():
            handles[name] = sim.run_in_thread(host, int((ports or {}).get(name, 0)))
    except BaseException:
        Park(sims, handles).stop()
        raise
    return Park(sims, handles, callback_base_url)


__all__ = ["ACCOUNT_ENV", "INTEGRATIONS", "Park", "build_simulators", "start_park"]
