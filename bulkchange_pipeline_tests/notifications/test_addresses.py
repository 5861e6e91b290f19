"""The webhook address guard (SSRF), as properties over every way of writing a host: an address in
a refused range is refused however it is written (dotted, decimal, octal, hex, short forms, IPv6,
IPv4 inside IPv6, a DNS name resolving there); a public one is allowed however it is written; the
private-address setting opens loopback and private ranges only. The C library's ``inet_aton`` is
the oracle for what a numeric host means."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkchange_pipeline.engine.notify.addresses import (
    AddressRefused,
    address_refusal,
    check_webhook_url,
    literal_address,
    parse_webhook_url,
)

PRIVATE = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"]
NEVER = ["169.254.0.0/16", "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "192.0.2.0/24", "198.18.0.0/15"]


def _in(networks: list[str]) -> st.SearchStrategy[ipaddress.IPv4Address]:
    return st.sampled_from(networks).flatmap(
        lambda n: st.integers(0, ipaddress.ip_network(n).num_addresses - 1).map(
            lambda i, n=n: ipaddress.ip_network(n)[i]
        )
    )


_PUBLIC = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address).filter(lambda a: a.is_global and not a.is_multicast)


def _part(value: int, style: str) -> str:
    return {"dec": str(value), "hex": hex(value), "HEX": "0X" + format(value, "X"), "oct": "0" + format(value, "o")}[
        style
    ]


@st.composite
def ipv4_forms(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """``address`` as a resolver reads it: 1 to 4 parts, each decimal, hex or octal."""
    n = int(address)
    parts = draw(st.integers(1, 4))
    styles = st.sampled_from(["dec", "hex", "HEX", "oct"])
    octets = [(n >> s) & 0xFF for s in (24, 16, 8, 0)]
    if parts == 1:
        values = [n]
    elif parts == 2:
        values = [octets[0], n & 0xFFFFFF]
    elif parts == 3:
        values = [octets[0], octets[1], n & 0xFFFF]
    else:
        values = octets
    text = ".".join(_part(v, draw(styles)) for v in values)
    return text.lower() if draw(st.booleans()) else text


@st.composite
def host_forms(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """The host part of a URL naming ``address``: an IPv4 form, or IPv6 carrying it."""
    kind = draw(st.sampled_from(["v4", "mapped", "mapped-hex", "compat", "nat64", "6to4"]))
    if kind == "v4":
        return draw(ipv4_forms(address))
    if kind == "mapped":
        return f"[::ffff:{address}]"
    if kind == "mapped-hex":
        return f"[{ipaddress.IPv6Address(int(address) | 0xFFFF << 32).exploded}]"
    if kind == "compat" and int(address) > 1:
        return f"[::{address}]"
    if kind == "nat64":
        return f"[{ipaddress.IPv6Address(int(ipaddress.IPv6Address('64:ff9b::')) | int(address))}]"
    return f"[{ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80))}]"


def _url(host: str, draw_port: int | None, path: str) -> str:
    return f"http://{host}{f':{draw_port}' if draw_port else ''}{path}"


PORTS = st.none() | st.integers(1, 65535)
PATHS = st.sampled_from(["/", "/hooks/bulk", "/a?b=c"])


@settings(max_examples=400, deadline=None)
@given(data=st.data(), address=_in(PRIVATE + NEVER), port=PORTS, path=PATHS)
def test_refused_ranges_are_refused_however_written(data, address, port, path):
    host = data.draw(host_forms(address))
    with pytest.raises(AddressRefused) as refused:
        check_webhook_url(_url(host, port, path), allow_private=False)
    assert str(refused.value)  # a reason a person can act on
    allowed_with_setting = any(address in ipaddress.ip_network(n) for n in PRIVATE)
    if allowed_with_setting:
        assert check_webhook_url(_url(host, port, path), allow_private=True).port == (port or 80)
    else:
        with pytest.raises(AddressRefused):
            check_webhook_url(_url(host, port, path), allow_private=True)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), address=_PUBLIC, port=PORTS)
def test_public_addresses_are_allowed_however_written(data, address, port):
    host = data.draw(ipv4_forms(address))
    target = check_webhook_url(_url(host, port, "/h"), allow_private=False)
    assert literal_address(target.host) == address
    assert target.pinned_url(address) == f"http://{address}:{port or 80}/h"


@settings(max_examples=300, deadline=None)
@given(data=st.data(), address=st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
def test_numeric_hosts_mean_what_inet_aton_says(data, address):
    form = data.draw(ipv4_forms(address))
    assert socket.inet_aton(form) == address.packed  # the C library agrees on the form's meaning
    assert literal_address(form) == address


@settings(max_examples=300, deadline=None)
@given(host=st.text(alphabet="0123456789xXabcdef.", min_size=1, max_size=24))
def test_any_numeric_looking_host_is_an_address_or_refused_never_guessed(host):
    """Whatever a numeric-looking host is, the guard reads it as ``inet_aton`` does, or refuses it."""
    try:
        found = literal_address(host)
    except AddressRefused:
        return
    if found is not None:
        assert socket.inet_aton(host.removesuffix(".")) == found.packed


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://localhost/", "loopback"),
        ("http://LOCALHOST.:8080/", "loopback|does not resolve"),  # refused either way
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://[::]/", "unspecified"),
        ("http://[ff02::1]/", "multicast"),
        ("http://[fd00::1]/", "private"),
        ("http://[2001:db8::1]/", "reserved"),
        ("gopher://8.8.8.8/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("//8.8.8.8/", "only http and https"),
        ("http://user@8.8.8.8/", "user info"),
        ("http://8.8.8.8:99999/", "cannot be read"),
        ("http://8.8.8.8 /", "spaces"),
        ("http://ex\u00e4mple.com/", "non-ASCII"),
        ("http://1.2.3.4.5/", "more than four parts"),
        ("http://0x100000000/", "out of range"),
        ("http:///path", "no host"),
    ],
)
def test_refusal_reasons(url, words):
    with pytest.raises(AddressRefused, match=words):
        check_webhook_url(url, allow_private=False)


def test_link_local_and_metadata_are_refused_even_when_private_is_allowed():
    for text in ("169.254.169.254", "fe80::1", "::ffff:169.254.169.254", "0.0.0.0", "224.0.0.1", "255.255.255.255"):
        assert address_refusal(ipaddress.ip_address(text), allow_private=True)


def test_host_header_and_pinning_keep_the_name():
    target = parse_webhook_url("https://Hooks.Example.com:8443/in?x=1")
    assert (target.host, target.port, target.target, target.host_header) == (
        "hooks.example.com",
        8443,
        "/in?x=1",
        "hooks.example.com:8443",
    )
    assert target.pinned_url(ipaddress.ip_address("2001:4860::8888")) == "https://[2001:4860::8888]:8443/in?x=1"


@pytest.mark.parametrize(
    "url, message",
    [
        (
            "http://[::ffff:127.0.0.1]/",
            "::ffff:7f00:1 is an IPv6 address carrying the IPv4 address 127.0.0.1, which is a loopback address "
            "(set BULKCHANGE_WEBHOOK_ALLOW_PRIVATE=1 to allow it)",
        ),
        (
            "http://[64:ff9b::a9fe:a9fe]/",
            "64:ff9b::a9fe:a9fe is an IPv6 address carrying the IPv4 address 169.254.169.254, which is "
            "a link-local address (where cloud metadata services answer)",
        ),
        (
            "http://[fe80::1%eth0]/",
            "fe80::1%eth0 is an IPv6 address with a zone (%eth0), which only link-local addresses have",
        ),
    ],
)
def test_refusals_read_as_sentences(url, message):
    """Review of issue 20: "is it carries" and "with a zone is link-local" were garbled."""
    with pytest.raises(AddressRefused) as refused:
        check_webhook_url(url, allow_private=False)
    assert str(refused.value) == message
