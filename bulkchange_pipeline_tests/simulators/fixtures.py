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
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.simulators.jasper_rules import make_iccids
from bulkchange_pipeline.simulators.server import ServerHandle

JASPER_SPEC_DIR = (Path(__file__).resolve().parents[2] / "../shared/specs/jasper").resolve()
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
