"""XML contracts kept in the repo (data, not code): the WSDL/XSD subset of Cisco Control Center's
SOAP API that our client and simulator both read (``jasper_soap/``), and the XSD of an XML bulk-change
request that intake validates against and the API publishes.

One copy serves every reader, so the client, the simulator and intake cannot drift apart; the layer
contracts allow every layer to import this module because it holds no behaviour, only file paths.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SCHEMAS_DIR", "schema_path"]

SCHEMAS_DIR = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    """The path of a schema file under this package (e.g. ``"jasper_soap/Terminal.wsdl"``); raises
    FileNotFoundError naming it when it is missing, rather than a parser error later."""
    path = SCHEMAS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"schema {name!r} is not in {SCHEMAS_DIR}")
    return path
