"""Shared fixtures: a real Jasper simulator on a free loopback port, accounts pointing at it, and
the Jasper OpenAPI fragments as jsonschema validators.

Import the fixtures into a test module (`from bulkchange_pipeline_tests.simulators.fixtures import
jasper_sim`) so pytest registers them there; no conftest is needed.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bulkchange_pipeline.carriers.base import CarrierAccount
from bulkchange_pipeline.simulators.clock import Clock
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.simulators.jasper_rules import make_iccids
from bulkchange_pipeline.simulators.server import ServerHandle

# The community OpenAPI fragments, copied unmodified into the repo (SOURCE.txt there says from where).
JASPER_SPEC_DIR = Path(__file__).resolve().parents[1] / "contracts" / "jasper_openapi"
JASPER_USER = "ops-bot"
JASPER_API_KEY = "jx-API-key-7f3c9e1d"


def jasper_account(handle: ServerHandle, **overrides: Any) -> CarrierAccount:
    """An account for the simulator with test-sized waits (retries in milliseconds)."""
    values: dict[str, Any] = dict(
        service_provider_id=1,
        integration="jasper",
        base_url=handle.base_url,
        username=JASPER_USER,
        secret=JASPER_API_KEY,
        rate_per_second=0.0,
        max_concurrency=1,
        timeout_seconds=2.0,
        max_attempts=4,
        retry_wait_seconds=0.01,
    )
    values.update(overrides)
    return CarrierAccount(**values)


def seed_jasper(sim: JasperSimulator, count: int, start: int = 0, **fields: Any) -> list[str]:
    """Seed `count` devices with the given DeviceDetails fields; returns their ICCIDs."""
    iccids = make_iccids(count, start=start)
    sim.seed_devices({"iccid": i, **fields} for i in iccids)
    return iccids


@pytest.fixture
def jasper_sim() -> Iterator[ServerHandle]:
    """A fresh simulator (no limits, no faults) for one test; `.simulator` is its state."""
    sim = JasperSimulator({JASPER_USER: JASPER_API_KEY}, rate_per_second=0, max_concurrency=1)
    with sim.run_in_thread() as handle:
        yield handle


# -- OpenAPI fragments ----------------------------------------------------------------------------


def _openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 `nullable: true` -> JSON Schema type lists; other keys kept."""
    if isinstance(node, dict):
        out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if k not in ("nullable", "example")}
        if node.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [_openapi_to_jsonschema(v) for v in node]
    return node


def load_spec_yaml(name: str) -> Any:
    return yaml.safe_load((JASPER_SPEC_DIR / name).read_text())


def resolve_ref(ref: str) -> dict:
    """'../../openapi.yaml#/components/schemas/DeviceDetails' -> the DeviceDetails.yaml file here
    (SOURCE.txt: map the schema name to the file of that name)."""
    name = ref.rsplit("/", 1)[-1]
    return _openapi_to_jsonschema(load_spec_yaml(f"{name}.yaml"))


def operation_schema(path: str, method: str, status: str | None = None) -> dict:
    """The request-body schema (status None) or the response schema of an operation in
    devices.yaml, with its $ref resolved."""
    op = load_spec_yaml("devices.yaml")[path][method]
    if status is None:
        node = op["requestBody"]["content"]["application/json"]["schema"]
    else:
        node = op["responses"][status]["content"]["application/json"]["schema"]
    return resolve_ref(node["$ref"]) if "$ref" in node else copy.deepcopy(node)


def strict(schema: dict) -> dict:
    """The same schema refusing unknown properties (the fragments allow any), to catch a field
    name the spec does not have."""
    return {**schema, "additionalProperties": False}


def validate(instance: Any, schema: dict) -> None:
    jsonschema.Draft202012Validator(schema).validate(instance)


def replace_account(account: CarrierAccount, **changes: Any) -> CarrierAccount:
    return dataclasses.replace(account, **changes)


# -- ThingSpace -----------------------------------------------------------------------------------

TS_CLIENT_ID = "ts-app-key-4411"
TS_CLIENT_SECRET = "ts-app-SECRET-9c2e77"
TS_USER = "uws-ops"
TS_PASSWORD = "uws-PASSWORD-51d0"
TS_ACCOUNT = "0000123456-00001"
TS_CB_USER = "cb-listener"
TS_CB_PASSWORD = "cb-PASSWORD-e83a"


def thingspace_account(handle: ServerHandle, **overrides: Any) -> CarrierAccount:
    """An account for the ThingSpace simulator with test-sized waits."""
    extra = {
        "client_id": TS_CLIENT_ID,
        "client_secret": TS_CLIENT_SECRET,
        "account_name": TS_ACCOUNT,
        "service_plan": "M2M-4G-1GB",
        "callback_username": TS_CB_USER,
        "callback_password": TS_CB_PASSWORD,
    }
    extra.update(overrides.pop("extra", {}))
    values: dict[str, Any] = dict(
        service_provider_id=2,
        integration="thingspace",
        base_url=handle.base_url,
        username=TS_USER,
        secret=TS_PASSWORD,
        rate_per_second=0.0,
        max_concurrency=4,
        timeout_seconds=2.0,
        max_attempts=4,
        retry_wait_seconds=0.01,
        extra=extra,
    )
    values.update(overrides)
    return CarrierAccount(**values)


def requested_clock(request: pytest.FixtureRequest) -> Clock | None:
    """The test's `sim_clock` if it asked for one (a simulator fixture then runs on it), else None:
    real time, which the carrier clients' own waits and rate windows assume."""
    return request.getfixturevalue("sim_clock") if "sim_clock" in request.fixturenames else None


@pytest.fixture
def thingspace_sim(request: pytest.FixtureRequest) -> Iterator[ServerHandle]:
    """A fresh ThingSpace simulator (no faults, quick callback retries) for one test; on the
    test's `sim_clock` if it asks for one."""
    from bulkchange_pipeline.simulators.thingspace import ThingSpaceSimulator

    sim = ThingSpaceSimulator(
        {TS_CLIENT_ID: TS_CLIENT_SECRET}, {TS_USER: (TS_PASSWORD, TS_ACCOUNT)}, clock=requested_clock(request)
    )
    sim.configure(callback_retry_seconds=0.05)
    with sim.run_in_thread() as handle:
        yield handle
    sim.close()


class CallbackReceiver:
    """A loopback CarrierService listener that records every body it is sent. `fail_first`
    answers 503 to that many deliveries first, to exercise the simulator's retries."""

    def __init__(self) -> None:
        import json
        import threading

        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        self.bodies: list[dict] = []
        self.fail_first = 0
        self._arrived = threading.Condition()

        async def receive(request: Request) -> Response:
            body = json.loads(await request.body())
            with self._arrived:
                if self.fail_first > 0:
                    self.fail_first -= 1
                    return Response(status_code=503)
                self.bodies.append(body)
                self._arrived.notify_all()
            return Response("{}", media_type="application/json")

        self.app = Starlette(routes=[Route("/callbacks/thingspace", receive, methods=["POST"])])

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        """The bodies received, once at least `count` arrived (or the timeout passed)."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.bodies) >= count, timeout)
            return list(self.bodies)


@pytest.fixture
def callback_receiver() -> Iterator[tuple[CallbackReceiver, ServerHandle]]:
    """A CallbackReceiver served on a free port; its URL is handle.root_url + /callbacks/thingspace."""
    from bulkchange_pipeline.simulators.server import run_app_in_thread

    receiver = CallbackReceiver()
    with run_app_in_thread(receiver.app) as handle:
        yield receiver, handle
