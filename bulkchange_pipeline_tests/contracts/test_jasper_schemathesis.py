"""Schemathesis over the public Jasper OpenAPI fragments against the running simulator (issue 17).

The fragments (`jasper_openapi/`, copied unmodified; SOURCE.txt) are path items and two schemas,
not a document. `jasper_document` builds the OpenAPI 3 document upstream's root `openapi.yaml`
would make of them: `servers` (the simulator's `/rws/api` root), HTTP Basic security, the paths of
devices.yaml with their `$ref`s mapped to DeviceEditModel.yaml and DeviceDetails.yaml. The two
schemas not copied (SessionInfos, SendSmsMessagesRequest) become `{}`: the simulator does not
serve those operations, so it answers its JSON 404, which both operations document.

Every documented operation gets generated requests, positive and negative, with valid
credentials and aimed at seeded devices half the time, so GET and PUT reach real devices and
real rules. `apiVersion` is pinned to "1" (its documented default; only v1 exists). Every answer
must pass schemathesis' response checks. The only tolerated violations are where the fragments
contradict their own examples, `FRAGMENT_CONTRADICTIONS`, and each must actually show up (so the
list cannot go stale). Deterministic (derandomized) and small (MAX_EXAMPLES per operation/mode).
"""

from __future__ import annotations

import base64
import copy
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.openapi.checks import JsonSchemaError
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline_tests.simulators.fixtures import JASPER_API_KEY, JASPER_SPEC_DIR, JASPER_USER, seed_jasper

pytestmark = pytest.mark.timeout(300)

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
]
SCHEMA_FILES = {"DeviceEditModel": "DeviceEditModel.yaml", "DeviceDetails": "DeviceDetails.yaml"}
NOT_COPIED = ("SessionInfos", "SendSmsMessagesRequest")
DEVICE = "/v{apiVersion}/devices/{iccid}"

# (operation, field of the answer) -> why the simulator sends what the fragment's schema refuses.
# The DeviceDetails schema declares the four dates `format: date-time` (RFC 3339), while its own
# example, like Cisco's Get Device Details page, shows "2016-06-29 00:21:33.339+0000": the simulator
# sends the example's form, which is what the real API sends.
_DATE_REASON = (
    "DeviceDetails.yaml declares format: date-time, its own example has '2016-06-29 00:21:33.339+0000' "
    "(space, milliseconds, +0000), which the real API sends and the simulator copies"
)
FRAGMENT_CONTRADICTIONS: dict[tuple[str, str], str] = {
    (f"GET {DEVICE}", "dateActivated"): _DATE_REASON,
    (f"GET {DEVICE}", "dateAdded"): _DATE_REASON,
    (f"GET {DEVICE}", "dateUpdated"): _DATE_REASON,
    (f"GET {DEVICE}", "dateShipped"): _DATE_REASON,
}


def _map_refs(node: Any) -> Any:
    """'../../openapi.yaml#/components/schemas/X' -> '#/components/schemas/X' (SOURCE.txt)."""
    if isinstance(node, dict):
        return {
            k: ("#/components/schemas/" + v.rsplit("/", 1)[-1] if k == "$ref" else _map_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_map_refs(v) for v in node]
    return node


def jasper_document(api_root: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document of the fragments, served at `api_root` (…/rws/api)."""

    def load(name: str) -> Any:
        return yaml.safe_load((JASPER_SPEC_DIR / name).read_text(encoding="utf-8"))

    schemas: dict[str, Any] = {name: load(file) for name, file in SCHEMA_FILES.items()}
    schemas.update({name: {} for name in NOT_COPIED})
    return {
        "openapi": "3.0.0",
        "info": {"title": "Cisco IoT Control Center API (community fragments)", "version": "1.0.0"},
        "servers": [{"url": api_root}],
        "security": [{"basicAuth": []}],
        "paths": _map_refs(load("devices.yaml")),
        "components": {"schemas": schemas, "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}}},
    }


def test_document_is_built_from_the_unmodified_fragments() -> None:
    doc = jasper_document("http://127.0.0.1:1/rws/api")
    assert set(doc["paths"]) == set(yaml.safe_load((JASPER_SPEC_DIR / "devices.yaml").read_text()))
    refs = {r for r in _walk_refs(doc["paths"])}
    assert refs == {f"#/components/schemas/{n}" for n in ("DeviceEditModel", "DeviceDetails", *NOT_COPIED)}
    assert doc["components"]["schemas"]["DeviceDetails"]["properties"]["fixedIPAddress"]["format"] == "ipv4"


def _walk_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from ([v] if k == "$ref" else _walk_refs(v))
    elif isinstance(node, list):
        for v in node:
            yield from _walk_refs(v)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ServerHandle, Any, list[str]]]:
    sim = JasperSimulator({JASPER_USER: JASPER_API_KEY}, rate_per_second=0, max_concurrency=0)
    with sim.run_in_thread() as handle:
        iccids = seed_jasper(sim, 6) + seed_jasper(sim, 3, start=20, status="INVENTORY", customer="Acme")
        root = handle.root_url + "/rws/api"
        schema = schemathesis.openapi.from_dict(jasper_document(root))
        schema.config.update(base_url=root)
        yield handle, schema, iccids


OPERATIONS = [
    (method.upper(), path)
    for path, item in yaml.safe_load((JASPER_SPEC_DIR / "devices.yaml").read_text()).items()
    for method in item
]
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{JASPER_USER}:{JASPER_API_KEY}".encode()).decode()}
# DeviceEditModel bodies with only its own fields, so the values (not an unknown key) meet the
# rules: addresses of either family or none, enum values and near misses, plain text.
_EDIT_FIELDS = list(yaml.safe_load((JASPER_SPEC_DIR / "DeviceEditModel.yaml").read_text())["properties"])
_VALUES = st.sampled_from(
    ["10.0.0.7", "2001:db8::7", "not-an-ip", "", "ACTIVATED", "DEACTIVATED", "DEFAULT", "PERMANENT_OVERRIDE"]
) | st.text(max_size=12)
EDIT_BODIES = st.dictionaries(
    st.sampled_from([f for f in _EDIT_FIELDS if f != "effectiveDate"]), _VALUES, min_size=1, max_size=3
)
NEGATED = (ParameterLocation.QUERY, ParameterLocation.BODY)
SINCE = st.sampled_from(["2000-01-01T00:00:00+00:00", "2016-04-18T17:31:34+00:00", "2999-01-01T00:00:00Z"])


def _strategy(operation: Any, mode: GenerationMode, iccids: list[str]) -> st.SearchStrategy:
    """The operation's own strategy (apiVersion pinned to "1"), and the same aimed at a seeded
    device, or with a valid modifiedSince for the search."""
    params = {"apiVersion": "1"}
    options = [operation.as_strategy(generation_mode=mode, path_parameters=params)]
    if "{iccid}" in operation.path:
        options.append(
            st.sampled_from(iccids).flatmap(
                lambda i: operation.as_strategy(generation_mode=mode, path_parameters={**params, "iccid": i})
            )
        )
    if operation.method.upper() == "PUT" and mode is GenerationMode.POSITIVE:
        options.append(
            st.tuples(st.sampled_from(iccids), EDIT_BODIES).flatmap(
                lambda t: operation.as_strategy(
                    generation_mode=mode, path_parameters={**params, "iccid": t[0]}, body=t[1]
                )
            )
        )
    if operation.path == "/v{apiVersion}/devices" and mode is GenerationMode.POSITIVE:
        options.append(
            SINCE.flatmap(
                lambda s: operation.as_strategy(
                    generation_mode=mode, path_parameters=params, query={"modifiedSince": s}
                )
            )
        )
    return st.one_of(options)


def _modes(path: str, method: str) -> list[GenerationMode]:
    """Negative cases only where there is a query or a described body to make invalid: path
    parameters are pinned (apiVersion) or aimed (iccid), which would undo their negation."""
    item = yaml.safe_load((JASPER_SPEC_DIR / "devices.yaml").read_text())[path][method.lower()]
    query = any(p["in"] == "query" for p in item.get("parameters", []))
    body = item.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    described = body.get("$ref", "").rsplit("/", 1)[-1] in SCHEMA_FILES
    return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if query or described else [GenerationMode.POSITIVE]


def _tolerated(operation: str, failure: Any) -> tuple[str, str] | None:
    """The FRAGMENT_CONTRADICTIONS key a failure is, or None."""
    if isinstance(failure, JsonSchemaError) and failure.instance_path:
        key = (operation, str(failure.instance_path[0]))
        if key in FRAGMENT_CONTRADICTIONS and list(failure.schema_path)[-1:] == ["format"]:
            return key
    return None


def _validate(case: Any, response: Any, label: str, tolerated: Counter) -> None:
    """schemathesis' checks on one answer; FRAGMENT_CONTRADICTIONS are counted, others raised."""
    try:
        case.validate_response(response, checks=CHECKS, headers=AUTH)
    except FailureGroup as group:
        keys = [_tolerated(label, f) for f in group.exceptions]
        tolerated.update(k for k in keys if k is not None)
        other = [f for f, k in zip(group.exceptions, keys, strict=True) if k is None]
        if other:
            raise FailureGroup(other, str(group)) from None


def _run(operation: Any, mode: GenerationMode, iccids: list[str], seen: Counter, tolerated: Counter) -> None:
    """MAX_EXAMPLES generated cases of one operation in one mode, each sent with the account's
    credentials and its answer checked; FRAGMENT_CONTRADICTIONS are counted, not raised."""
    label = f"{operation.method.upper()} {operation.path}"

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, mode, iccids))
    def check(case: Any) -> None:
        if mode is GenerationMode.NEGATIVE:  # the path is pinned or aimed: only these stay invalid
            assume(case.meta is not None and any(case.meta.is_negative_at(loc) for loc in NEGATED))
        # The account's own credentials in place of any generated ones (dropping the header
        # instead would make schemathesis re-judge the case as one without required auth).
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"} | AUTH
        response = case.call(headers=AUTH)
        seen[response.status_code] += 1
        _validate(case, response, label, tolerated)
        if label == f"PUT {DEVICE}" and response.status_code == 200:
            # Read the device back: what the PUT stored must be what GET may answer.
            get = operation.schema[DEVICE]["GET"].Case(path_parameters=case.path_parameters, headers=AUTH)
            _validate(get, get.call(headers=AUTH), f"GET {DEVICE}", Counter())

    try:
        check()
    finally:
        print(f"\n{label} ({mode.value}): responses by status {dict(sorted(seen.items()))}")


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_simulator_conforms_to_the_fragments(
    served: tuple[ServerHandle, Any, list[str]], method: str, path: str
) -> None:
    _, schema, iccids = served
    operation = schema[path][method]
    seen: Counter[int] = Counter()
    tolerated: Counter[tuple[str, str]] = Counter()
    for mode in _modes(path, method):
        _run(operation, mode, iccids, seen, tolerated)
    assert seen[401] == 0 and seen[429] == 0, "auth and limits must not hide the operation"
    if path.endswith("{iccid}"):
        assert seen[200] > 0, f"{method} {path} never reached a real device"
    # The allow-list is exact: what this operation was let off is all listed, and all of what is
    # listed for it did occur (an entry the simulator no longer needs would fail here).
    expected = {key for key in FRAGMENT_CONTRADICTIONS if key[0] == f"{method} {path}"}
    assert set(tolerated) == expected, (dict(tolerated), expected)


def test_allow_list_names_only_documented_operations_and_fields() -> None:
    doc = jasper_document("http://127.0.0.1:1/rws/api")
    fields = doc["components"]["schemas"]["DeviceDetails"]["properties"]
    for (label, field), reason in FRAGMENT_CONTRADICTIONS.items():
        method, path = label.split(" ", 1)
        assert method.lower() in doc["paths"][path] and field in fields and reason
        assert fields[field]["format"] == "date-time"  # what the example contradicts
    example = yaml.safe_load((JASPER_SPEC_DIR / "DeviceDetails.yaml").read_text())["properties"]["example"]
    assert {f for _, f in FRAGMENT_CONTRADICTIONS} <= set(example)
    assert example["dateAdded"] == "2014-07-22 23:31:46.571+0000"  # the fragment's own form


def test_the_checks_are_not_blind_to_a_text_answer(served: tuple[ServerHandle, Any, list[str]]) -> None:
    """The checks above are not blind: the content-type check refuses text where the fragment
    documents JSON (the GET device 200), with schemathesis' own failure."""
    handle, schema, iccids = served
    operation = schema[DEVICE]["GET"]
    case = operation.Case(path_parameters={"apiVersion": "1", "iccid": iccids[0]})
    response = case.call(headers=AUTH)
    broken = copy.copy(response)
    broken.headers = {**response.headers, "content-type": ["text/plain"]}
    with pytest.raises(FailureGroup):
        case.validate_response(broken, checks=[content_type_conformance], headers=AUTH)
