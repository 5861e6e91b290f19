"""A bulk change request as XML (``schemas/bulk_change_request.xsd``): read safely, checked against
the XSD, and turned into the very dict a JSON request decodes to, so that from there on it takes the
one path every request takes (``request_from_dict``: value checks, the model; then ``submit``).

Why lxml with a hardened parser rather than defusedxml: the request must be validated against an
XSD with line numbers, which needs lxml (libxml2) anyway, and defusedxml's lxml support is
deprecated. Nothing is left to the parser's goodwill, though; in order:

1. size: over ``IntakeLimits.max_bytes`` (the JSON and CSV limit) is refused before anything reads it;
2. text: UTF-8 only (a UTF-8 BOM is allowed), checked by ``decode_utf8`` with the byte's offset; a
   UTF-16/32 byte order mark, an XML declaration naming another encoding (a declaration that lies
   about the bytes) or an XML version other than 1.0 is refused;
3. a scan of the markup refuses a DOCTYPE of any kind (so no entity can be declared: no billion
   laughs, no quadratic blowup, no external entity to a file or a URL), processing instructions and
   CDATA sections, and a document with more elements than its device limit allows (memory);
4. lxml parses with entities unresolved, no DTD loaded, no network and libxml2's depth limit
   (``huge_tree=False``: 256 levels); a document that is not well-formed is refused with its line;
5. the tree is checked again (no DOCTYPE, no processing instruction, no attribute, the root element
   ``{urn:bulkchange:request:1}bulkChangeRequest``) and validated against the XSD: every reason
   with its line.

Errors: ``MalformedXml`` (the API answers 400) for steps 1-4, ``IntakeError`` (422) for step 5, the
same split as JSON (not JSON: 400; not a valid request: 422).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

from lxml import etree

from ..domain import PAYLOAD_KEYS
from ..schemas import schema_path
from .parsing import IntakeError, IntakeLimits, ParsedFile, check_size, decode_utf8, request_from_dict, shown

REQUEST_NAMESPACE = "urn:bulkchange:request:1"
REQUEST_SCHEMA = "bulk_change_request.xsd"
ROOT = "bulkChangeRequest"
MEDIA_TYPES = ("application/xml", "text/xml")
MAX_SCHEMA_ERRORS = 10
UTF8_HINT = 'send the XML as UTF-8 (declare encoding="UTF-8" or no encoding)'
_XS = "{http://www.w3.org/2001/XMLSchema}"
_NS = "{" + REQUEST_NAMESPACE + "}"
_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}
_DECLARATION = re.compile(
    r"<\?xml\s+version\s*=\s*(['\"])(?P<version>[^'\"]*)\1"
    r"(?:\s+encoding\s*=\s*(['\"])(?P<encoding>[^'\"]*)\3)?"
    r"(?:\s+standalone\s*=\s*(['\"])[^'\"]*\5)?\s*\?>"
)
# What the scan stops at: a comment (skipped whole, since it may hold any text), then every markup
# start other than an element's: <!DOCTYPE, <![CDATA[, other <! declarations, <? instructions.
_MARKUP = re.compile(r"<!--.*?(?:-->|\Z)|<!\[CDATA\[|<!|<\?", re.S)
_CHAR_REF = re.compile(r"(?:xmlParseCharRef: invalid xmlChar value|invalid Char value) (\d+)")
_ENTITY = re.compile(r"Entity '([^']*)' not defined")


class MalformedXml(IntakeError):
    """The body cannot be read as XML we accept (not UTF-8, not well-formed, a DOCTYPE...): 400."""


def is_xml_media_type(media: str) -> bool:
    """``application/xml``, ``text/xml`` or a ``+xml`` type (``application/vnd.x+xml``)."""
    return media in MEDIA_TYPES or (media.startswith("application/") and media.endswith("+xml"))


def looks_like_xml(data: bytes) -> bool:
    """Whether a file without a telling extension is XML: its first character is ``<`` (after a
    BOM and whitespace), or it starts with a UTF-16/32 BOM (so that it is refused as XML, saying
    why, rather than read as a CSV)."""
    if data.startswith(tuple(_BOMS)):
        return True
    return data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"<"


def max_elements(limits: IntakeLimits) -> int:
    """Elements a request may have: two per device row plus the header. A device is one element
    (``<device>``) or an entry with an identifier and values (``<deviceEntry>``, 3-5 elements,
    about 100 bytes), so a real request meets the byte limit before this one; a hostile file of
    empty elements (``<a/>``, 4 bytes) meets this one first, before lxml builds a tree of it."""
    return 1_000 + 2 * limits.max_rows


def parse_xml(data: bytes, *, limits: IntakeLimits = IntakeLimits()) -> ParsedFile:
    """A request file or body in the XML shape, as a validated request (the CLI's way in)."""
    return ParsedFile(request_from_dict(xml_request_body(data, limits=limits), limits=limits), "xml")


def xml_request_body(data: bytes, *, limits: IntakeLimits = IntakeLimits()) -> dict[str, Any]:
    """The XML request as the dict its JSON twin decodes to (``request_from_dict`` takes it)."""
    check_size(len(data), limits)
    text = _xml_text(data)
    _scan(text, limits)
    root = _parse(data)
    _check_tree(root)
    _validate(root)
    return _object(root)


# --- 2. text ---------------------------------------------------------------------------------------


def _xml_text(data: bytes) -> str:
    """The document as text: UTF-8, as its declaration (if any) says; the declaration is read
    first, so that a document in another encoding is told what its declaration says."""
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            raise MalformedXml(f"the XML is {name} (it starts with a {name} byte order mark): {UTF8_HINT}")
    head = data.removeprefix(b"\xef\xbb\xbf")[:300].decode("ascii", "replace")
    if head.startswith("<?xml") and (declared := _DECLARATION.match(head)):
        version, encoding = declared.group("version"), declared.group("encoding")
        if version != "1.0":
            raise MalformedXml(f"the XML declaration says version {shown(version, 20)!r}: send XML version 1.0")
        if encoding is not None and encoding.strip().lower().replace("_", "-") not in ("utf-8", "utf8"):
            raise MalformedXml(
                f"the XML declaration says encoding={shown(encoding, 30)!r}, but a request is read as UTF-8 "
                f"only: {UTF8_HINT}"
            )
    try:
        text = decode_utf8(data, UTF8_HINT)
    except IntakeError as exc:
        raise MalformedXml(str(exc).replace("the file", "the XML")) from None
    if not text.strip():
        raise MalformedXml("the XML is empty: send a <bulkChangeRequest> document")
    if (at := text.find("\x00")) >= 0:  # UTF-16 without a BOM reads as UTF-8 with a NUL after each letter
        raise MalformedXml(
            f"the XML contains a NUL character (line {_line(text, at)}), which XML cannot carry: is it UTF-16? "
            + UTF8_HINT
        )
    return text


# --- 3. the markup scan ----------------------------------------------------------------------------


def _line(text: str, at: int) -> int:
    return text.count("\n", 0, at) + 1


def _scan(text: str, limits: IntakeLimits) -> None:
    for found in _MARKUP.finditer(text):
        mark, at = found.group(), found.start()
        if mark.startswith("<!--"):
            continue
        if mark == "<?" and at == 0 and text.startswith("<?xml") and text[5:6].isspace():
            continue  # the XML declaration, read above
        where = f"line {_line(text, at)}"
        if mark == "<?":
            raise MalformedXml(f"{where}: processing instructions (<?...?>) are not accepted in a request")
        if mark == "<![CDATA[":
            raise MalformedXml(f"{where}: CDATA sections are not accepted: write the text with &amp; and &lt;")
        if text.startswith("<!DOCTYPE", at) or text[at : at + 9].upper() == "<!DOCTYPE":
            raise MalformedXml(
                f"{where}: a DOCTYPE is not accepted (no DTDs, no entities, no external references): "
                "remove it; the request is checked against its XSD instead"
            )
        raise MalformedXml(f"{where}: markup declarations (<!...>) are not accepted in a request")
    elements = text.count("<") - text.count("</") - text.count("<!--") - text.startswith("<?xml")
    if elements > (limit := max_elements(limits)):
        raise MalformedXml(
            f"the XML has more than {limit:,} elements, more than {limits.max_rows:,} devices can need: split it"
        )


# --- 4. parsing ------------------------------------------------------------------------------------


def _parser() -> etree.XMLParser:
    """A parser that reads nothing but the bytes it is given (a new one per document: its error log
    is the document's)."""
    return etree.XMLParser(
        encoding="utf-8",  # the bytes were checked as UTF-8 above, whatever a declaration says
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,  # libxml2's limits: 256 levels deep, 10 MB text nodes
        remove_comments=True,
        remove_pis=False,  # refused, not dropped
        collect_ids=False,
    )


def _parse(data: bytes) -> Any:
    parser = _parser()
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        errors = parser.error_log.filter_from_errors() or [exc]
        first = errors[0]
        line, column = getattr(first, "line", None) or exc.lineno, getattr(first, "column", None)
        message = getattr(first, "message", None) or exc.msg
        raise MalformedXml(
            f"the XML is not well-formed: line {line}, column {column}: {_syntax_reason(message)}"
        ) from None


def _syntax_reason(message: str) -> str:
    """libxml2's message, in words for the sender where it is cryptic."""
    message = re.sub(r", line \d+, column \d+$", "", message.strip())
    if "Excessive depth" in message:
        return "elements are nested more than 256 levels deep; a bulk change request nests 5"
    if found := _CHAR_REF.search(message):
        code = int(found.group(1))
        return (
            f"U+{code:04X} is not a character XML 1.0 can carry (NUL and other control characters, lone "
            "surrogates, U+FFFE and U+FFFF cannot be sent, not even as character references)"
        )
    if found := _ENTITY.search(message):
        return (
            f"the entity &{shown(found.group(1), 40)}; is not defined: only &amp; &lt; &gt; &quot; &apos; and "
            "character references (&#233;) are accepted"
        )
    return shown(message, 300)


# --- 5. the tree and the schema ---------------------------------------------------------------------


def _check_tree(root: Any) -> None:
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise MalformedXml("a DOCTYPE is not accepted in a request")
    sibling = root.getprevious()
    while sibling is not None:  # before the root element: comments are gone, instructions stay
        if isinstance(sibling, etree._ProcessingInstruction):
            raise MalformedXml(f"line {sibling.sourceline}: processing instructions are not accepted in a request")
        sibling = sibling.getprevious()
    namespace, name = _split(root.tag)
    if name != ROOT or namespace != REQUEST_NAMESPACE:
        found = f"<{shown(name, 60)}>" + (
            f" in namespace {shown(namespace, 80)!r}" if namespace else " in no namespace"
        )
        raise IntakeError(
            f'the root element is {found}: a request is <{ROOT} xmlns="{REQUEST_NAMESPACE}"> '
            "(the schema: GET /schemas/bulk-change-request.xsd)"
        )
    for node in root.iter():
        if isinstance(node, etree._ProcessingInstruction):
            raise MalformedXml(f"line {node.sourceline}: processing instructions are not accepted in a request")
        if node.attrib:
            attribute = _split(next(iter(node.attrib)))[1]
            raise IntakeError(
                f"line {node.sourceline}: <{_split(node.tag)[1]}> has the attribute {shown(attribute, 60)!r}: "
                "a request takes no attributes (xsi:* included); every value is an element"
            )


def _split(tag: Any) -> tuple[str, str]:
    qname = etree.QName(tag)
    return qname.namespace or "", qname.localname


@functools.cache
def request_schema() -> etree.XMLSchema:
    """The XSD every XML request is validated against (read once, with the hardened parser)."""
    return etree.XMLSchema(etree.parse(str(schema_path(REQUEST_SCHEMA)), _parser()))


def _validate(root: Any) -> None:
    schema = request_schema()
    try:
        valid = schema.validate(root)
    except etree.XMLSchemaValidateError as exc:  # libxml2's "internal error": the document is the cause
        raise IntakeError(f"the XML cannot be checked against the request schema: {shown(str(exc), 200)}") from None
    if valid:
        return
    errors = list(schema.error_log)
    reasons = [f"line {e.line}: {shown(_schema_message(e.message), 300)}" for e in errors[:MAX_SCHEMA_ERRORS]]
    more = len(errors) - MAX_SCHEMA_ERRORS
    raise IntakeError(
        "the XML does not match the request schema (GET /schemas/bulk-change-request.xsd): "
        + "; ".join(reasons)
        + (f"; and {more} more" if more > 0 else "")
    )


_FOUND = re.compile(r"^Element '([^'{}]+)'")


def _schema_message(message: str) -> str:
    """libxml2's message without our namespace (``{urn:...}serviceProviderId`` reads
    ``serviceProviderId``), except where that would hide the error: an element in no namespace
    (children unprefixed under a prefixed root) is then said to be in none, since "Element
    'serviceProviderId' ... Expected is one of (serviceProviderId" reads as nonsense otherwise."""
    found = _FOUND.match(message)
    text = message.replace(_NS, "").rstrip(".")
    if found is not None and _NS + found[1] in message:
        text = text.replace(
            f"Element '{found[1]}'",
            f"Element '{found[1]}' (in no namespace; a request's elements are in {REQUEST_NAMESPACE})",
            1,
        )
    return text


# --- to the JSON shape -------------------------------------------------------------------------------


def _object(element: Any) -> dict[str, Any]:
    return {_split(child.tag)[1]: _value(child) for child in _children(element)}


def _children(element: Any) -> Iterator[Any]:
    return (child for child in element if isinstance(child.tag, str))


def _value(element: Any) -> Any:
    """An element as its JSON value, by the shape the XSD gives its name (``element_shapes``)."""
    name = _split(element.tag)[1]
    shape = element_shapes()[name]
    if shape == "object":
        return _object(element)
    if shape == "list":
        return [_value(child) for child in _children(element)]
    text = element.text or ""
    if shape == "text":  # as sent: validation strips surrounding whitespace, as for JSON
        return text
    text = text.strip()  # the XSD's whiteSpace="collapse" types
    if shape == "integer":
        return int(text)
    if shape == "boolean":
        return text in ("true", "1")
    if shape == "change_type":
        return int(text) if text.lstrip("+-").isdigit() else text
    return text  # "date": the model reads it


_SIMPLE_SHAPES = {
    "xs:string": "text",
    "bc:IdempotencyKey": "text",
    "xs:long": "integer",
    "xs:boolean": "boolean",
    "bc:ChangeType": "change_type",
    "bc:EffectiveDate": "date",
}


@functools.cache
def element_shapes() -> dict[str, str]:
    """Every element name of the request XSD and the JSON value it maps to: ``object`` (xs:all:
    a JSON object), ``list`` (a repeated child: a JSON array) or a simple value (``text``,
    ``integer``, ``boolean``, ``change_type``, ``date``), read from the XSD itself so that the two
    cannot drift apart. An element whose type has no shape here fails loudly at first use."""
    xsd = etree.parse(str(schema_path(REQUEST_SCHEMA)), _parser()).getroot()
    named = {f"bc:{t.get('name')}": t for t in xsd.iterfind(f"{_XS}complexType")}
    shapes: dict[str, str] = {}
    for element in xsd.iterfind(f"{_XS}element"):
        type_name = element.get("type")
        complex_type = element.find(f"{_XS}complexType")
        if type_name in named:
            complex_type = named[type_name]
        if complex_type is not None:
            shapes[element.get("name")] = "object" if complex_type.find(f"{_XS}all") is not None else "list"
        elif type_name in _SIMPLE_SHAPES:
            shapes[element.get("name")] = _SIMPLE_SHAPES[type_name]
        else:
            raise RuntimeError(
                f"{REQUEST_SCHEMA}: element {element.get('name')!r} has type {type_name!r}, which has no JSON shape"
            )
    missing = set(PAYLOAD_KEYS.values()) - shapes.keys()
    if missing:
        raise RuntimeError(f"{REQUEST_SCHEMA} has no element for the payload(s) {sorted(missing)}")
    return shapes


__all__ = [
    "MEDIA_TYPES",
    "REQUEST_NAMESPACE",
    "REQUEST_SCHEMA",
    "MalformedXml",
    "element_shapes",
    "is_xml_media_type",
    "looks_like_xml",
    "max_elements",
    "parse_xml",
    "request_schema",
    "xml_request_body",
]
