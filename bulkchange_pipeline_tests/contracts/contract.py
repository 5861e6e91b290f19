"""Load a carrier description (`<carrier>.yaml` next to this file) and check bodies against it.

The format, kept small on purpose:

```yaml
carrier: thingspace
sources:                       # every claim names one of these
  ts-activate: {ref: "https://thingspace.verizon.com/...", tag: D}
operations:
  activate:
    method: POST
    path: /api/m2m/v1/devices/actions/activate   # {placeholders} allowed
    sources: [ts-activate]
    request: {JSON Schema of the body}            # optional (GET)
    query: {JSON Schema of the query parameters}  # optional
    responses:                                    # status -> JSON Schema of the answer body
      "200": {...}
    examples:                                     # bodies built from the public description
      - {...}
errors:                                           # the carrier's error envelope(s), JSON Schema
  default: {...}
```

`tag` is the confidence tag of `carriers.md`: D (vendor documentation), C (public client code),
I (inference). A body schema with `additionalProperties: false` is the field-by-field check: our
client may send nothing the description does not name.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = ["CONTRACT_DIR", "Contract", "Operation", "load_contract"]

CONTRACT_DIR = Path(__file__).resolve().parent
_TAGS = {"D", "C", "I"}


class Operation:
    """One described operation: method, path template, body/query/response schemas, examples."""

    def __init__(self, name: str, spec: dict[str, Any], contract: Contract) -> None:
        self.name = name
        self.spec = spec
        self.contract = contract
        self.method: str = spec["method"].upper()
        self.path: str = spec["path"]
        self.examples: list[Any] = list(spec.get("examples", []))
        self._path_re = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(self.path)) + "$")

    def matches(self, method: str, path: str) -> bool:
        """Whether a request line (method, path without query) is this operation."""
        return method.upper() == self.method and bool(self._path_re.match(path))

    def url(self, **params: str) -> str:
        """The path with its `{placeholders}` filled in."""
        return self.path.format(**params)

    def request_errors(self, body: Any) -> list[str]:
        """Every way `body` departs from the described request (empty: it conforms)."""
        schema = self.spec.get("request")
        if schema is None:
            return [] if body in (None, b"", "") else ["this operation takes no body"]
        return _errors(schema, body)

    def query_errors(self, query: dict[str, Any]) -> list[str]:
        schema = self.spec.get("query")
        return [] if schema is None else _errors(schema, query)

    def response_errors(self, status: int, body: Any) -> list[str]:
        """How an answer departs from the description of `status` (or the carrier's error
        envelope for an undescribed 4xx/5xx)."""
        responses = self.spec.get("responses", {})
        schema = responses.get(str(status))
        if schema is None and status >= 400:
            schema = self.contract.errors.get(str(status), self.contract.errors.get("default"))
        if schema is None:
            return [f"status {status} is not described for {self.name} (described: {sorted(responses)})"]
        return _errors(schema, body)


class Contract:
    """A carrier's whole description; `operation(name)` or `find(method, path)`."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.carrier: str = raw["carrier"]
        self.sources: dict[str, dict[str, Any]] = raw["sources"]
        self.errors: dict[str, Any] = raw.get("errors", {})
        self.operations = {name: Operation(name, spec, self) for name, spec in raw["operations"].items()}
        self._check_sources()

    def _check_sources(self) -> None:
        for key, source in self.sources.items():
            if not source.get("ref") or source.get("tag") not in _TAGS:
                raise ValueError(f"{self.carrier}: source {key} needs a ref and a tag in {sorted(_TAGS)}")
        for op in self.operations.values():
            named = op.spec.get("sources") or []
            if not named:
                raise ValueError(f"{self.carrier}.{op.name}: names no public source")
            unknown = [s for s in named if s not in self.sources]
            if unknown:
                raise ValueError(f"{self.carrier}.{op.name}: unknown sources {unknown}")

    def operation(self, name: str) -> Operation:
        return self.operations[name]

    def find(self, method: str, path: str) -> Operation | None:
        """The described operation a request line is, or None (an undescribed call)."""
        return next((op for op in self.operations.values() if op.matches(method, path)), None)


@functools.cache
def load_contract(carrier: str) -> Contract:
    """The description in `<carrier>.yaml`, checked: every operation names a known source."""
    with (CONTRACT_DIR / f"{carrier}.yaml").open(encoding="utf-8") as fh:
        return Contract(yaml.safe_load(fh))


def _errors(schema: dict[str, Any], instance: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(instance)]
