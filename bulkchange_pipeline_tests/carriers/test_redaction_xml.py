"""Redaction of SOAP envelopes: a WS-Security Password or Nonce and Jasper's licenseKey never
survive into stored text, whatever namespace prefix, attributes, whitespace, CDATA or comments
they come with; everything else of the envelope is kept as it was.

The property tests build envelopes the way a peer may legally write them and parse the redacted
text back with lxml: every secret element then reads exactly ``***`` and every other element
reads what it read before."""

from __future__ import annotations

from xml.sax.saxutils import escape

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lxml import etree

from bulkchange_pipeline.carriers.redaction import MASK, redact_text, redact_xml

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
JWS = "http://api.jasperwireless.com/ws/schema"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"

# Characters XML 1.0 allows in text (no controls, no surrogates, no U+FFFE/FFFF).
XML_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
SECRETS = st.text(XML_CHARS, min_size=1, max_size=40)
PREFIXES = st.sampled_from(["", "wsse", "ns0", "S", "a.b-c", "_x1"])
SPACE = st.sampled_from(["", " ", "\n", "\t ", "\r\n  "])


@st.composite
def content(draw: st.DrawFn, secret: str) -> str:
    """``secret`` as element content: escaped text, CDATA sections and comments, in any mix."""
    parts: list[str] = []
    rest = secret
    while rest:
        n = draw(st.integers(1, len(rest)))
        chunk, rest = rest[:n], rest[n:]
        if "]]>" not in chunk and draw(st.booleans()):
            parts.append(f"<![CDATA[{chunk}]]>")
        else:
            parts.append(escape(chunk))
        if draw(st.booleans()):
            parts.append(f"<!--{draw(st.sampled_from(['', ' note ', 'x-y']))}-->")
    return "".join(parts)


@st.composite
def secret_element(draw: st.DrawFn, local: str, uri: str, secret: str) -> str:
    prefix = draw(PREFIXES)
    name = f"{prefix}:{local}" if prefix else local
    xmlns = f'xmlns:{prefix}="{uri}"' if prefix else f'xmlns="{uri}"'
    attrs = draw(st.sampled_from(["", ' Type="x#PasswordText"', " EncodingType='a>b'"]))
    return f"<{name}{draw(SPACE)} {xmlns}{attrs}{draw(SPACE)}>{draw(content(secret))}</{name}{draw(SPACE)}>"


def _texts(xml: str) -> dict[str, str]:
    """Local name -> text (CDATA and entities resolved, comments dropped) of every leaf element."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
    root = etree.fromstring(xml.encode("utf-8"), parser)
    leaves = [e for e in root.iter() if isinstance(e.tag, str) and not [c for c in e if isinstance(c.tag, str)]]
    return {etree.QName(e).localname: "".join(e.itertext()) for e in leaves}


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), SECRETS, SECRETS, SECRETS)
def test_secret_elements_are_masked_and_the_rest_is_kept(data: st.DataObject, password: str, nonce: str, key: str):
    skeleton_text = "u-ops 89012600000000000019 EditTerminal 3 ACTIVATED"
    for secret in (password, nonce, key):
        assume(secret.strip() and escape(secret) not in skeleton_text and secret not in skeleton_text)
    envelope = (
        f'<soap-env:Envelope xmlns:soap-env="{SOAP}"><soap-env:Header>'
        f'<wsse:Security xmlns:wsse="{WSSE}"><wsse:UsernameToken><wsse:Username>u-ops</wsse:Username>'
        f"{data.draw(secret_element('Password', WSSE, password))}"
        f"{data.draw(secret_element('Nonce', WSSE, nonce))}"
        f"</wsse:UsernameToken></wsse:Security></soap-env:Header><soap-env:Body>"
        f'<EditTerminalRequest xmlns="{JWS}"><messageId>m-1</messageId><version>5.90</version>'
        f"{data.draw(secret_element('licenseKey', JWS, key))}"
        f"<iccid>89012600000000000019</iccid><targetValue>ACTIVATED</targetValue><changeType>3</changeType>"
        f"</EditTerminalRequest></soap-env:Body></soap-env:Envelope>"
    )
    before = _texts(envelope)
    assert (before["Password"], before["Nonce"], before["licenseKey"]) == (password, nonce, key)

    out = redact_text(envelope)
    after = _texts(out)  # still well-formed XML
    assert (after["Password"], after["Nonce"], after["licenseKey"]) == (MASK, MASK, MASK)
    assert {k: v for k, v in after.items() if k not in ("Password", "Nonce", "licenseKey")} == {
        k: v for k, v in before.items() if k not in ("Password", "Nonce", "licenseKey")
    }


@given(SECRETS, st.integers(0, 200))
def test_a_truncated_or_malformed_secret_element_masks_everything_after_it(secret: str, cut: int):
    """Stored text may be cut short (a response capture) or not be XML at all: the secret's
    opening tag then masks the rest, never leaving part of a secret."""
    assume(len(secret.strip()) >= 3)
    text = f"<jws:licenseKey>{escape(secret)}</jws:licenseKey><iccid>1</iccid>"
    truncated = text[: len("<jws:licenseKey>") + min(cut, len(escape(secret)))]
    out = redact_xml(truncated)
    assert out == "<jws:licenseKey>" + MASK
    nested = f"<licenseKey>{escape(secret)}<b>x</b></licenseKey>"
    assert redact_xml(nested) == "<licenseKey>" + MASK
    unterminated_cdata = f"<wsse:Password><![CDATA[{secret}</wsse:Password>"
    assert "]]>" in secret or redact_xml(unterminated_cdata) == "<wsse:Password>" + MASK


def test_cdata_holding_a_closing_tag_is_masked_whole() -> None:
    text = "<licenseKey><![CDATA[abc</licenseKey>def]]></licenseKey><iccid>8901</iccid>"
    assert redact_xml(text) == f"<licenseKey>{MASK}</licenseKey><iccid>8901</iccid>"


def test_similar_names_and_empty_elements_are_left_alone() -> None:
    text = (
        "<PasswordDigestHint>keep</PasswordDigestHint><licenseKeyId>7</licenseKeyId>"
        "<Username>ops</Username><licenseKey/><wsse:Nonce />"
    )
    assert redact_xml(text) == text


def test_redact_text_masks_xml_secrets_even_when_the_values_are_not_known() -> None:
    """The value list (the account's secrets) is one layer; the element names are another, so an
    envelope is safe even when its password was not handed to the redactor."""
    text = 'POST /ws\nSOAPAction: "x"\n\n<a:Password>p&lt;w</a:Password><b:licenseKey>LK-1</b:licenseKey>'
    out = redact_text(text)
    assert "p&lt;w" not in out and "LK-1" not in out
    assert out.endswith(f"<a:Password>{MASK}</a:Password><b:licenseKey>{MASK}</b:licenseKey>")
