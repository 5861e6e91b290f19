"""Redaction of secrets from request/response text before it is stored or logged.

Every carrier exchange is kept as text in bulk_change_log (DESIGN section 9): the audit trail is
only safe to keep if no credential ever reaches it. Four layers are applied, because each one
alone misses cases: header names known to carry credentials, JSON keys known to carry them, XML
elements known to carry them (a SOAP envelope's WS-Security `Password` and `Nonce`, Jasper's
`licenseKey`, whatever namespace prefix, attributes, whitespace, CDATA or comments they come
with), and the literal secret values of the account (which catch a secret echoed anywhere, e.g. in
a URL or an error message).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MASK",
    "basic_token",
    "is_sensitive_name",
    "redact_headers",
    "redact_json",
    "redact_detail",
    "redact_text",
    "redact_xml",
    "secret_variants",
]

MASK = "***"

# Compared after lower-casing and dropping '-' and '_', so "App-Secret", "app_secret" and
# "appsecret" are one name.
_SENSITIVE_NAMES = frozenset(
    {
        "authorization",
        "proxyauthorization",
        "appsecret",
        "apisecret",
        "apikey",
        "password",
        "passwd",
        "secret",
        "clientsecret",
        "ocpapimsubscriptionkey",
        "vzm2mtoken",
        "sessiontoken",
        "accesstoken",
        "refreshtoken",
        "token",
        "cookie",
        "setcookie",
        "xapikey",
    }
)


def _norm(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def is_sensitive_name(name: str) -> bool:
    """True if a header or JSON key of this name carries a credential."""
    return _norm(name) in _SENSITIVE_NAMES


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Copy of the headers with every credential-bearing value replaced by `***`."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k: (MASK if is_sensitive_name(k) else v) for k, v in items}


def redact_json(value: Any) -> Any:
    """Deep copy of a JSON value with the values of credential-bearing keys replaced by `***`."""
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_sensitive_name(k) else redact_json(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    return value


_KEY_ALTERNATION = (
    r"authorization|proxy[-_]?authorization|app[-_]?secret|api[-_]?secret|api[-_]?key|password"
    r"|passwd|client[-_]?secret|secret|ocp[-_]?apim[-_]?subscription[-_]?key|vz[-_]?m2m[-_]?token"
    r"|session[-_]?token|access[-_]?token|refresh[-_]?token|token|x[-_]?api[-_]?key"
)
# "key": "value" in JSON text (value may contain escaped quotes).
_JSON_PAIR = re.compile(r'("(?:' + _KEY_ALTERNATION + r')"\s*:\s*)"(?:[^"\\]|\\.)*"', re.IGNORECASE)
# key=value in form bodies and query strings.
_FORM_PAIR = re.compile(r"(?<![\w-])((?:" + _KEY_ALTERNATION + r")=)[^&\s]*", re.IGNORECASE)
# Header lines "Name: value" inside a text dump.
_HEADER_LINE = re.compile(r"^((?:" + _KEY_ALTERNATION + r")[ \t]*:[ \t]*).*$", re.IGNORECASE | re.MULTILINE)
# Basic/Bearer credentials wherever they appear.
_SCHEME_TOKEN = re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9+/=._~-]{8,}")
# XML elements whose content is a credential, opened with any namespace prefix (or none) and any
# attributes: <wsse:Password Type="...">, <wsse:Nonce>, <jws:licenseKey>. Their content is read as
# a run of CDATA sections, comments and text (`_XML_CONTENT`), so a CDATA section that itself holds
# "</licenseKey>" is masked whole; it must end in the closing tag of the same name.
_XML_OPEN = re.compile(
    r"<(?P<tag>(?:[A-Za-z_][\w.-]*:)?(?:Password|Nonce|licenseKey))"
    r"(?:\s(?:[^<>\"'/]|\"[^\"<]*\"|'[^'<]*'|/(?!>))*)?"  # attributes; a quoted value may hold ">"
    r"(?P<empty>/)?>",
    re.IGNORECASE,
)
_XML_CONTENT = re.compile(r"(?:<!\[CDATA\[.*?\]\]>|<!--.*?-->|[^<])*", re.DOTALL)


def secret_variants(secrets: Iterable[str | None]) -> list[str]:
    """The secrets plus the forms they travel in (base64 of user:secret is added by callers that
    know the user); longest first so a secret that contains another is masked whole."""
    out = {s for s in secrets if s and len(s) >= 3}
    return sorted(out, key=len, reverse=True)


def redact_xml(text: str) -> str:
    """Mask the content of every credential-bearing XML element (``Password``, ``Nonce``,
    ``licenseKey``, any namespace prefix). Where such an element does not close as XML requires
    (truncated text, a nested element, an unterminated CDATA section) everything after its opening
    tag is masked: where its content ends cannot be told, and a leak is worse than a short log."""
    out: list[str] = []
    pos = 0
    while (opening := _XML_OPEN.search(text, pos)) is not None:
        out.append(text[pos : opening.end()])
        pos = opening.end()
        if opening.group("empty"):
            continue
        content = _XML_CONTENT.match(text, pos)
        end = content.end() if content else pos
        closing = re.compile(r"</" + re.escape(opening.group("tag")) + r"\s*>", re.IGNORECASE).match(text, end)
        out.append(MASK)
        if closing is None:
            return "".join(out)
        out.append(closing.group(0))
        pos = closing.end()
    out.append(text[pos:])
    return "".join(out)


def basic_token(username: str, secret: str) -> str:
    """The base64 token of HTTP Basic auth, so it can be listed among the secrets to mask."""
    return base64.b64encode(f"{username}:{secret}".encode()).decode()


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Mask credentials in free text: the given secret values wherever they occur, then
    credential-named JSON pairs, form pairs, header lines and Basic/Bearer tokens."""
    if not text:
        return text
    for s in secret_variants(secrets):
        if s in text:
            text = text.replace(s, MASK)
    lowered = text.lower()
    if not any(w in lowered for w in ("auth", "secret", "key", "pass", "token", "basic", "bearer", "cookie", "nonce")):
        return text  # fast path: nothing credential-like left to look for
    if "<" in text:
        text = redact_xml(text)
    text = _JSON_PAIR.sub(lambda m: m.group(1) + '"' + MASK + '"', text)
    text = _FORM_PAIR.sub(lambda m: m.group(1) + MASK, text)
    text = _HEADER_LINE.sub(lambda m: m.group(1) + MASK, text)
    text = _SCHEME_TOKEN.sub(lambda m: m.group(1) + " " + MASK, text)
    return text


# A cut-off secret shorter than this is not masked at the end of a text (too likely to be words).
_MIN_PARTIAL = 4


def redact_detail(text: str, secrets: Iterable[str | None] = (), limit: int | None = None) -> str:
    """Text a person reads outside the audit log (a row's reason, an error message built from a
    carrier's answer), masked as `redact_text` does and then cut to `limit` characters: redacting
    first, so a cut never leaves the start of a secret behind. A text that was already cut before
    it got here (a classifier keeping the first 300 characters of an echoed request) may end in a
    secret's first characters: such a tail (4 characters or more) is masked too."""
    text = redact_text(text, secrets)
    if limit is not None and len(text) > limit:
        text = text[:limit]
    for secret in secret_variants(secrets):
        for size in range(min(len(secret) - 1, len(text)), _MIN_PARTIAL - 1, -1):
            if text.endswith(secret[:size]):
                text = text[:-size] + MASK
                break
    return text
