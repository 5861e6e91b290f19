"""XML requests for the tests: the JSON request shape written as XML (``to_xml``), hostile forms of
it (``xml_case``: the generated hostile JSON requests of ``hostile_inputs`` written as XML, then
damaged at the byte level: DOCTYPEs, entities, instructions, CDATA, encodings, namespaces...), the
classic attack documents, and the results download read back.

The XML is written by hand, not by lxml, so that it can hold what a correct writer never would
(an element name that is not a name, a control character, a lone surrogate as UTF-8 bytes).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from lxml import etree

from bulkchange_pipeline.store.seed import DemoSeed

from . import hostile_inputs as h

NS = "urn:bulkchange:request:1"
RESULTS_NS = "{urn:bulkchange:results:1}"
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def escape(text: str) -> str:
    """Element content a parser reads back as ``text`` (a carriage return as ``&#13;``: raw, a
    parser reads it as a line feed). Characters XML cannot carry are left raw: refusing them is the
    server's job."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def scalar_text(value: Any) -> str:
    """A JSON scalar as the text of an element: what an XML request carries instead."""
    if isinstance(value, h.Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return json.dumps(value) if math.isfinite(value) else {math.inf: "INF", -math.inf: "-INF"}.get(value, "NaN")
    return str(value)


def element(name: str, value: Any) -> str:
    """``value`` as the element ``name``: an object's keys as children, a list's items as repeated
    children (devices as device/deviceEntry, productIds as productId), a scalar as text; None is
    left out, as a JSON null field means no value."""
    if value is None:
        return ""
    if isinstance(value, dict):
        inner = "".join(element(str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        inner = "".join(_item(name, v) for v in value)
    elif isinstance(value, h.Raw) and value.text.startswith(("[", "{")):  # deep JSON nesting: deep XML
        depth = value.text.count("[") + value.text.count("{")
        inner = "<x>" * depth + "</x>" * depth
    else:
        inner = escape(scalar_text(value))
    return f"<{name}>{inner}</{name}>"


def _item(list_name: str, value: Any) -> str:
    if list_name == "devices":
        return element("deviceEntry" if isinstance(value, dict) else "device", value)
    return element("productId" if list_name == "productIds" else "item", value)


def to_xml(body: dict[str, Any], *, declaration: bool = True, namespace: str | None = NS) -> str:
    """A JSON request (as a dict) as an XML request document."""
    xmlns = f' xmlns="{namespace}"' if namespace is not None else ""
    children = "".join(element(str(k), v) for k, v in body.items())
    return (DECLARATION if declaration else "") + f"<bulkChangeRequest{xmlns}>{children}</bulkChangeRequest>\n"


def as_sent(value: Any) -> Any:
    """What an XML request says for ``value``: every scalar as its text (JSON nulls left out)."""
    if isinstance(value, dict):
        return {k: as_sent(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [as_sent(v) for v in value if v is not None]
    return scalar_text(value)


# --- the classic attacks ------------------------------------------------------------------------


def valid_body(seed: DemoSeed, devices: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "serviceProviderId": seed.service_providers["jasper"],
        "changeType": 1,
        "devices": devices or seed.sample_iccids["jasper"][:2],
        "statusUpdate": {"targetStatus": "DEACTIVATED"},
        **extra,
    }


def with_doctype(xml: str, doctype: str, value_ref: str = "") -> str:
    """``xml`` with ``doctype`` before its root and ``value_ref`` (an entity reference) as the
    text of its targetStatus."""
    body = xml.removeprefix(DECLARATION)
    if value_ref:
        body = body.replace("<targetStatus>DEACTIVATED</targetStatus>", f"<targetStatus>{value_ref}</targetStatus>")
    return DECLARATION + doctype + "\n" + body


BILLION_LAUGHS = (
    '<!DOCTYPE bulkChangeRequest [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + "]>"
)
QUADRATIC = '<!DOCTYPE bulkChangeRequest [<!ENTITY a "' + "a" * 50_000 + '">]>'


def xxe(url: str) -> str:
    return f'<!DOCTYPE bulkChangeRequest [<!ENTITY xxe SYSTEM "{url}">]>'


def parameter_xxe(url: str) -> str:
    return f'<!DOCTYPE bulkChangeRequest [<!ENTITY % remote SYSTEM "{url}"> %remote;]>'


# --- hostile XML, generated -------------------------------------------------------------------------

ROUND_TRIP_DAMAGE = ("none", "bom", "comment", "no_declaration", "prefixed")  # still the same request
DAMAGE = [
    *(["none"] * 14),
    "bom",
    "comment",
    "no_declaration",
    "prefixed",
    "utf16",
    "declared_utf16",
    "declared_latin1",
    "doctype",
    "entity",
    "xxe",
    "pi",
    "cdata",
    "no_namespace",
    "wrong_namespace",
    "attribute",
    "xsi",
    "trailing",
    "deep",
    "empty",
    "char_ref",
    "version",
]


@dataclass
class XmlCase:
    body: dict[str, Any]  # the (hostile) JSON request the XML was written from
    data: bytes
    damage: str

    @property
    def may_round_trip(self) -> bool:
        return self.damage in ROUND_TRIP_DAMAGE


def damaged(xml: str, damage: str, draw: st.DrawFn) -> bytes:
    """``xml`` with one byte- or markup-level ``damage``; ROUND_TRIP_DAMAGE ones keep the request."""
    body = xml.removeprefix(DECLARATION)
    root_end = body.index(">") + 1
    if damage == "bom":
        return b"\xef\xbb\xbf" + h.to_bytes(xml)
    if damage == "comment":
        return h.to_bytes(DECLARATION + body[:root_end] + "<!-- a <comment> & more -->" + body[root_end:])
    if damage == "no_declaration":
        return h.to_bytes(body)
    if damage == "prefixed":  # the namespace by a prefix instead of the default: the same names
        return h.to_bytes(
            body.replace(f' xmlns="{NS}"', f' xmlns:bc="{NS}"').replace("<", "<bc:").replace("<bc:/", "</bc:")
        )
    if damage == "utf16":
        return xml.replace("UTF-8", "UTF-16").encode("utf-16", "surrogatepass")
    if damage == "declared_utf16":
        return h.to_bytes(xml.replace("UTF-8", "UTF-16"))
    if damage == "declared_latin1":
        return xml.replace("UTF-8", "ISO-8859-1").encode("latin-1", "replace")
    if damage in ("doctype", "entity", "xxe"):
        doctype = {
            "doctype": "<!DOCTYPE bulkChangeRequest>",
            "entity": BILLION_LAUGHS,
            "xxe": xxe("file:///etc/passwd"),
        }
        return h.to_bytes(DECLARATION + doctype[damage] + body)
    if damage == "pi":
        return h.to_bytes(DECLARATION + body[:root_end] + '<?evil run="1"?>' + body[root_end:])
    if damage == "cdata":
        return h.to_bytes(DECLARATION + body[:root_end] + "<![CDATA[x]]>" + body[root_end:])
    if damage == "no_namespace":
        return h.to_bytes(DECLARATION + body.replace(f' xmlns="{NS}"', "", 1))
    if damage == "wrong_namespace":
        return h.to_bytes(
            DECLARATION + body.replace(NS, draw(st.sampled_from(["urn:bulkchange:request:2", "", "x"])), 1)
        )
    if damage == "attribute":
        return h.to_bytes(
            DECLARATION
            + body.replace("<devices>", '<devices count="1">', 1).replace(
                "<bulkChangeRequest ", '<bulkChangeRequest a="1" ', 1
            )
        )
    if damage == "xsi":
        xsi = (
            ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="urn:x http://127.0.0.1:9/x.xsd"'
        )
        return h.to_bytes(DECLARATION + body.replace("<bulkChangeRequest ", f"<bulkChangeRequest{xsi} ", 1))
    if damage == "trailing":
        return h.to_bytes(xml + "<bulkChangeRequest/>")
    if damage == "deep":
        return h.to_bytes(DECLARATION + body[:root_end] + "<a>" * 10_000 + "</a>" * 10_000 + body[root_end:])
    if damage == "empty":
        return draw(st.sampled_from([b"", b" \r\n", b"\xef\xbb\xbf", DECLARATION.encode()]))
    if damage == "char_ref":
        code = draw(st.sampled_from([0, 1, 0x1B, 0xD800, 0xFFFE, 0xFFFF]))
        return h.to_bytes(xml.replace("<devices>", f"<devices><device>&#{code};</device>", 1))
    if damage == "version":
        return h.to_bytes(xml.replace('version="1.0"', 'version="1.1"', 1))
    return h.to_bytes(xml)


@st.composite
def xml_case(draw: st.DrawFn, seed: DemoSeed) -> XmlCase:
    """A generated hostile request (``hostile_inputs.json_request``) written as XML, then damaged."""
    body = draw(h.json_request(seed))
    damage = draw(st.sampled_from(DAMAGE))
    return XmlCase(body, damaged(to_xml(body), damage, draw), damage)


# --- the results download, read back --------------------------------------------------------------


def results_items(text: str | bytes) -> list[dict[str, Any]]:
    """A ``?format=xml`` download as the JSON answer's items (ints as ints, changeRequest decoded,
    absent elements as null)."""
    raw = text.encode() if isinstance(text, str) else text
    root = etree.fromstring(raw, etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))
    assert root.tag == f"{RESULTS_NS}bulkChangeResults", root.tag
    items = []
    for row in root.iterfind(f"{RESULTS_NS}deviceResult"):
        item: dict[str, Any] = dict.fromkeys(
            (
                "deviceId",
                "iccid",
                "msisdn",
                "imei",
                "eid",
                "statusDetails",
                "carrierRequestId",
                "effectiveAt",
                "processedAt",
            )
        )
        for child in row:
            name, text_value = etree.QName(child).localname, child.text or ""
            if name in ("id", "deviceId", "attemptCount"):
                item[name] = int(text_value)
            elif name == "changeRequest":
                item[name] = json.loads(text_value)
            else:
                item[name] = text_value
        items.append(item)
    return items
