"""Where a webhook may be sent: http or https to a public address, checked when a subscription is
made and again before every attempt (a DNS name may resolve elsewhere by then: DNS rebinding).

A webhook URL is chosen by a tenant, and the sender runs inside our network: without this guard
a subscription to ``http://169.254.169.254/`` or ``http://10.0.0.5:5432/`` would make our
workers call the cloud metadata service or internal hosts on the tenant's behalf (SSRF).

- Every address the host names is checked, the literal forms included: dotted IPv4, the short,
  decimal, octal and hex forms ``inet_aton`` accepts (``2130706433``, ``0177.1``, ``0x7f.0.0.1``),
  IPv6 (bracketed, with a zone), and IPv4 inside IPv6 (mapped ``::ffff:127.0.0.1``, compatible
  ``::127.0.0.1``, 6to4 ``2002:7f00:1::``, NAT64 ``64:ff9b::7f00:1``, Teredo). A DNS name is
  resolved and refused if any of its addresses is refused.
- Always refused: unspecified, multicast, link-local (cloud metadata lives there), reserved and
  other special-purpose ranges. Loopback and private ranges (RFC 1918, 100.64/10, fc00::/7) are
  refused unless ``BULKCHANGE_WEBHOOK_ALLOW_PRIVATE=1`` (tests, the demo).
- The sender connects to the address it checked (``pinned_url``), never resolving the name again.
- No user info in the URL (a credential would end up in logs; the signature authenticates us), no
  fragment, and redirects are never followed (``engine.notify.send``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "MAX_URL_LENGTH",
    "AddressRefused",
    "IPAddress",
    "WebhookTarget",
    "address_refusal",
    "check_webhook_url",
    "literal_address",
    "masked_url",
    "parse_webhook_url",
    "resolve_allowed",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2000
_NUMERIC_PART = re.compile(r"^(0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*)$")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: private in practice
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_PRIVATE_V4 = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


class AddressRefused(ValueError):
    """The URL or one of its addresses may not be called; the message says which and why."""


@dataclass(frozen=True)
class WebhookTarget:
    """A checked webhook URL, split for the sender."""

    url: str
    scheme: str
    host: str  # lower case; an IPv6 literal without brackets
    port: int
    target: str  # path and query, as sent in the request line

    @property
    def host_header(self) -> str:
        """The Host header: the name as the URL gives it, with a port only when not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def pinned_url(self, address: IPAddress) -> str:
        """The URL with the checked address in place of the name (the Host header and, for
        https, the TLS server name still say the name, so certificates are checked against it)."""
        host = f"[{address.compressed}]" if address.version == 6 else address.compressed
        return f"{self.scheme}://{host}:{self.port}{self.target}"


def parse_webhook_url(url: str) -> WebhookTarget:
    """Split and check the URL's form (not its addresses); AddressRefused with the reason."""
    if not isinstance(url, str) or not url:
        raise AddressRefused("the URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise AddressRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise AddressRefused("the URL has spaces, control or non-ASCII characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"the URL cannot be read: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise AddressRefused(f"only http and https URLs can receive webhooks, not {scheme or 'a relative URL'!r}")
    if "@" in parts.netloc:
        raise AddressRefused("the URL carries user info (user:password@): remove it; the signature authenticates us")
    if parts.fragment or url.endswith("#"):
        raise AddressRefused("the URL has a fragment (#...), which is never sent: remove it")
    host = (parts.hostname or "").lower()
    if not host:
        raise AddressRefused("the URL names no host")
    if port == 0:
        raise AddressRefused("port 0 cannot be called")
    literal_address(host)  # refuses a malformed numeric host early
    if ":" not in host and not _is_dns_name(host):
        raise AddressRefused(f"{host[:80]!r} is not a host name or an IP address")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebhookTarget(url, scheme, host, port or (443 if scheme == "https" else 80), target)


def _is_dns_name(host: str) -> bool:
    labels = host.removesuffix(".").split(".")
    if literal_address(host) is not None:
        return True
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return False
    return not labels[-1].isdigit()  # a numeric last label is an address form, not a name


def literal_address(host: str) -> IPAddress | None:
    """The address a host written as an IP address names, in every form a resolver accepts;
    None for a DNS name. A host that is all number-like parts but not a valid address (five
    parts, a part too large) is refused rather than handed to a resolver."""
    host = host.strip("[]").lower()
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressRefused(f"{host[:80]!r} is not a valid IPv6 address") from None
    parts = host.removesuffix(".").split(".")
    if not all(_NUMERIC_PART.match(p) for p in parts):
        return None
    if len(parts) > 4:
        raise AddressRefused(f"{host[:80]!r} looks like an IPv4 address but has more than four parts")
    values = [int(p, 16) if p.startswith("0x") else int(p, 8) if p.startswith("0") else int(p) for p in parts]
    # inet_aton: a.b.c.d; a.b.c (c: 16 bits); a.b (b: 24 bits); a (32 bits)
    last_bits = 32 - 8 * (len(values) - 1)
    if any(v > 255 for v in values[:-1]) or values[-1] >= 1 << last_bits:
        raise AddressRefused(f"{host[:80]!r} looks like an IPv4 address but a part is out of range")
    number = 0
    for v in values[:-1]:
        number = (number << 8) | v
    number = (number << last_bits) | values[-1]
    return ipaddress.IPv4Address(number)


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """An IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64, Teredo client)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d (deprecated "compatible" form)
        return ipaddress.IPv4Address(int(address))
    return None


def address_refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why a webhook may not be sent to ``address``, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return f"an IPv6 address with a zone (%{address.scope_id[:20]}), which only link-local addresses have"
        inner = _embedded_v4(address)
        if inner is not None:
            reason = address_refusal(inner, allow_private=allow_private)
            return f"an IPv6 address carrying the IPv4 address {inner}, which is {reason}" if reason else None
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    private = (
        address.is_loopback
        or address in _SHARED
        or (address.version == 4 and any(address in n for n in _PRIVATE_V4))
        or (address.version == 6 and (address in ipaddress.ip_network("fc00::/7") or address.is_site_local))
    )
    if private:
        kind = "a loopback address" if address.is_loopback else "a private address"
        return None if allow_private else f"{kind} (set BULKCHANGE_WEBHOOK_ALLOW_PRIVATE=1 to allow it)"
    if address.is_reserved or not address.is_global:
        return "a reserved or special-purpose address"
    return None


def resolve_allowed(target: WebhookTarget, *, allow_private: bool) -> list[IPAddress]:
    """The addresses ``target``'s host names, every one allowed; AddressRefused otherwise (also
    when a name does not resolve). Blocking (DNS): call it from a worker thread."""
    literal = literal_address(target.host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise AddressRefused(f"{target.host[:80]!r} does not resolve ({exc})") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    for address in addresses:
        reason = address_refusal(address, allow_private=allow_private)
        if reason:
            shown = "" if literal is not None else f" resolves to {address}, which"
            raise AddressRefused(f"{target.host[:80]}{shown} is {reason}" if shown else f"{address} is {reason}")
    if not addresses:
        raise AddressRefused(f"{target.host[:80]!r} has no address")
    return addresses


def check_webhook_url(url: str, *, allow_private: bool) -> WebhookTarget:
    """A subscription's URL, checked in form and in every address it resolves to now."""
    target = parse_webhook_url(url)
    resolve_allowed(target, allow_private=allow_private)
    return target


MASK = "***"


def masked_url(url: str) -> str:
    """``url`` as shown to people and logs: every query value (and any user info or fragment)
    replaced by ``***``, names kept. Receivers often put a token in the query string
    (``?token=...``); the real URL is kept for sending only."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    query = "&".join(
        f"{pair.split('=', 1)[0]}={MASK}" if "=" in pair else (MASK if pair else pair)
        for pair in parts.query.split("&")
    )
    netloc = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{MASK}@{netloc}" if "@" in parts.netloc else netloc
    return urlunsplit((parts.scheme, netloc, parts.path, query, MASK if parts.fragment else ""))
