"""Hostile XML at intake (issue 19), on both backends: each classic attack and each malformed or
lying document gets a clear 4xx problem (the API) or a one-line ``Error:`` and exit 2 (the CLI),
and nothing is stored, for a submit and a dry run alike. The external references point at a real
HTTP server on 127.0.0.1, which must never be asked for anything."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.intake.api import install_api
from bulkchange_pipeline.intake.parsing import IntakeLimits

from . import xml_inputs as x
from .conftest import table_counts
from .test_api import Api, make_api

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url, devices_per_carrier=10)


@dataclass
class Listener:
    """A real HTTP server an XXE would make the parser call; it counts every request."""

    url: str
    hits: list[str]


@pytest.fixture
def listener() -> Iterator[Listener]:
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b'<!ENTITY leak "LEAKED">'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Listener(f"http://127.0.0.1:{server.server_address[1]}", hits)
    server.shutdown()
    server.server_close()
    thread.join()


def hostile_documents(api: Api, url: str) -> dict[str, tuple[bytes, int, str]]:
    """name -> (document, expected status, a word its reason must hold)."""
    xml = x.to_xml(x.valid_body(api.seed))
    body = xml.removeprefix(x.DECLARATION)
    return {
        "billion laughs": (x.with_doctype(xml, x.BILLION_LAUGHS, "&lol9;").encode(), 400, "DOCTYPE"),
        "quadratic blowup": (x.with_doctype(xml, x.QUADRATIC, "&a;" * 2000).encode(), 400, "DOCTYPE"),
        "XXE file": (x.with_doctype(xml, x.xxe("file:///etc/passwd"), "&xxe;").encode(), 400, "DOCTYPE"),
        "XXE network": (x.with_doctype(xml, x.xxe(f"{url}/xxe"), "&xxe;").encode(), 400, "DOCTYPE"),
        "XXE parameter entity": (x.with_doctype(xml, x.parameter_xxe(f"{url}/dtd"), "&leak;").encode(), 400, "DOCTYPE"),
        "external DTD": (
            x.with_doctype(xml, f'<!DOCTYPE bulkChangeRequest SYSTEM "{url}/ext.dtd">').encode(),
            400,
            "DOCTYPE",
        ),
        "plain DOCTYPE": (x.with_doctype(xml, "<!DOCTYPE bulkChangeRequest>").encode(), 400, "DOCTYPE"),
        "lower-case doctype": (x.with_doctype(xml, "<!doctype bulkChangeRequest>").encode(), 400, "DOCTYPE"),
        "processing instruction": (
            xml.replace("<devices>", '<?xml-stylesheet href="x"?><devices>').encode(),
            400,
            "processing instruction",
        ),
        "instruction before the root": (
            ('<?xml version="1.0"?>\n<?php system("id"); ?>\n' + body).encode(),
            400,
            "processing instruction",
        ),
        "CDATA": (xml.replace("DEACTIVATED", "<![CDATA[DEACTIVATED]]>").encode(), 400, "CDATA"),
        "undefined entity": (xml.replace("DEACTIVATED", "&nbsp;").encode(), 400, "entity"),
        "NUL as a character reference": (xml.replace("DEACTIVATED", "&#0;").encode(), 400, "U+0000"),
        "ESC as a character reference": (xml.replace("DEACTIVATED", "&#27;").encode(), 400, "U+001B"),
        "lone surrogate reference": (xml.replace("DEACTIVATED", "&#xD800;").encode(), 400, "U+D800"),
        "raw U+FFFF": (xml.replace("DEACTIVATED", "\uffff").encode(), 400, "U+FFFF"),
        "lone surrogate bytes": (xml.encode()[:200] + b"\xed\xa0\x80" + xml.encode()[200:], 400, "UTF-8"),
        "wrong namespace": (xml.replace(x.NS, "urn:bulkchange:request:2").encode(), 422, "namespace"),
        "no namespace": (x.to_xml(x.valid_body(api.seed), namespace=None).encode(), 422, "no namespace"),
        "another root": (xml.replace("bulkChangeRequest", "devices").encode(), 422, "root element"),
        "UTF-16 declared, UTF-8 sent": (xml.replace("UTF-8", "UTF-16").encode(), 400, "UTF-16"),
        "UTF-16 sent": (xml.replace("UTF-8", "UTF-16").encode("utf-16"), 400, "UTF-16"),
        "UTF-16 sent, UTF-8 declared, no BOM": (xml.encode("utf-16-le"), 400, "UTF-8"),
        "UTF-32 BOM": (xml.encode("utf-32"), 400, "UTF-32"),
        "Latin-1 declared and sent": (
            xml.replace("UTF-8", "ISO-8859-1").replace("DEACTIVATED", "D\u00e9").encode("latin-1"),
            400,
            "ISO-8859-1",
        ),
        "XML 1.1": (xml.replace('version="1.0"', 'version="1.1"').encode(), 400, "1.1"),
        "10,000 levels deep": (
            xml.replace("<devices>", "<devices>" + "<a>" * 10_000 + "</a>" * 10_000).encode(),
            400,
            "nested",
        ),
        "xsi:schemaLocation": (
            body.replace(
                "<bulkChangeRequest ",
                f'<bulkChangeRequest xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="{x.NS} {url}/x.xsd" ',
            ).encode(),
            422,
            "attribute",
        ),
        "XInclude": (
            xml.replace(
                "<devices>",
                f'<devices><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{url}/inc" parse="text"/>',
            ).encode(),
            422,
            "xi:include"[3:],
        ),
        "attribute": (xml.replace("<devices>", '<devices count="2">').encode(), 422, "attribute"),
        "unknown element": (xml.replace("<devices>", "<devices><phone>1</phone>").encode(), 422, "phone"),
        "number beyond 64 bits": (xml.replace(f">{api.jasper}<", ">99999999999999999999<").encode(), 422, "xs:long"),
        "two roots": ((xml + "<bulkChangeRequest/>").encode(), 400, "well-formed"),
        "not closed": (xml.encode()[:-30], 400, "well-formed"),
        "empty": (b"", 400, "empty"),
        "blank with a BOM": (b"\xef\xbb\xbf \n", 400, "empty"),
        "JSON sent as XML": (b'{"serviceProviderId": 1}', 400, "well-formed"),
    }


def assert_refused(r, status: int, word: str, name: str) -> None:
    assert r.status_code == status, f"{name}: {r.status_code} {r.text[:500]}"
    assert r.headers["content-type"] == PROBLEM_JSON
    detail = r.json()["detail"]
    assert word.lower() in detail.lower(), f"{name}: {detail!r} does not say {word!r}"


def test_hostile_xml_is_refused_with_a_reason_and_nothing_stored(api: Api, listener: Listener) -> None:
    before = table_counts(api.engine)
    for name, (doc, status, word) in hostile_documents(api, listener.url).items():
        for route in ("/bulk-changes", "/bulk-changes:dry-run"):
            r = api.client.post(route, content=doc, headers={**api.demo, "Content-Type": "application/xml"})
            assert_refused(r, status, word, f"{name} to {route}")
        assert table_counts(api.engine) == before, name
    assert listener.hits == [], f"the parser fetched {listener.hits}"


def test_hostile_xml_files_fail_the_cli_with_one_line(
    api: Api, listener: Listener, db_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    before = table_counts(api.engine)
    for i, (name, (doc, _, word)) in enumerate(hostile_documents(api, listener.url).items()):
        path = tmp_path / f"hostile-{i}.xml"
        path.write_bytes(doc)
        for command in ("submit", "dry-run"):
            result = runner.invoke(main, [command, str(path), "--database-url", db_url], catch_exceptions=False)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), (name, result.output)
            assert word.lower() in lines[0].lower(), (name, lines[0])
            assert "Traceback" not in result.output
        assert table_counts(api.engine) == before, name
    assert listener.hits == []


def test_60_mb_of_xml_is_refused_before_it_is_parsed(api: Api, db_url: str, tmp_path: Path) -> None:
    head = x.to_xml(x.valid_body(api.seed)).split("<devices>")[0] + "<devices>"
    big = (
        head + "<device>8901100000000000000</device>" * (60 * 1024 * 1024 // 36) + "</devices></bulkChangeRequest>"
    ).encode()
    assert len(big) > 60 * 1024 * 1024
    before = table_counts(api.engine)
    for route in ("/bulk-changes", "/bulk-changes:dry-run"):
        r = api.client.post(route, content=big, headers={**api.demo, "Content-Type": "application/xml"})
        assert_refused(r, 413, "the limit is 50 MB", route)
    path = tmp_path / "big.xml"
    path.write_bytes(big)
    result = CliRunner().invoke(main, ["submit", str(path), "--database-url", db_url], catch_exceptions=False)
    assert result.exit_code == 2 and "the limit is 50 MB" in result.stderr, result.output
    assert table_counts(api.engine) == before


def test_elements_and_devices_beyond_the_limits_are_refused(engine: sa.Engine, api: Api) -> None:
    app = FastAPI()
    install_api(app, lambda: engine, limits=IntakeLimits(max_bytes=200_000, max_rows=5))
    before = table_counts(engine)
    with TestClient(app) as small:
        many = x.to_xml(x.valid_body(api.seed)).replace("<devices>", "<devices>" + "<a/>" * 1_500)
        r = small.post("/bulk-changes", content=many, headers={**api.demo, "Content-Type": "application/xml"})
        assert_refused(r, 400, "more than 1,010 elements", "element cap")
        six = x.to_xml(x.valid_body(api.seed, api.seed.sample_iccids["jasper"][:6]))
        r = small.post("/bulk-changes", content=six, headers={**api.demo, "Content-Type": "application/xml"})
        assert_refused(r, 422, "the limit is 5", "device cap")
    assert table_counts(engine) == before


def test_media_types_and_charsets(api: Api) -> None:
    xml = x.to_xml(x.valid_body(api.seed))
    before = table_counts(api.engine)
    for content_type, status in (
        ("application/xml; charset=utf-16", 415),
        ('text/xml; charset="ISO-8859-1"', 415),
        ("application/yaml", 415),
        ("text/plain", 415),
    ):
        r = api.client.post("/bulk-changes", content=xml, headers={**api.demo, "Content-Type": content_type})
        assert r.status_code == status and r.headers["content-type"] == PROBLEM_JSON, (content_type, r.text)
    assert "application/xml" in r.json()["detail"]  # a 415 names the XML media type too
    assert table_counts(api.engine) == before
    for content_type, doc in (
        ("text/xml; charset=UTF-8", xml.encode()),
        ("application/xml", b"\xef\xbb\xbf" + xml.encode()),  # a UTF-8 BOM is allowed
        ("application/xml", x.to_xml(x.valid_body(api.seed), declaration=False).encode()),
    ):
        r = api.client.post("/bulk-changes:dry-run", content=doc, headers={**api.demo, "Content-Type": content_type})
        assert r.status_code == 200, r.text
