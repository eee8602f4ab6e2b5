"""Tests for netguard.rules: the rule grammar and its normalised values."""

from __future__ import annotations

import copy
import ipaddress
import itertools
import pickle
import re
import sys

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from netguard.rules import Rule, RuleError, format_ports, parse_ports, parse_rule, parse_rules

SRC = "--netguard-allow"

V6_ALL = (1 << 128) - 1
DB8 = 0x20010DB8 << 96  # 2001:db8::
FE80 = 0xFE80 << 112  # fe80::


def ip(text: str, family: int, first: int, last: int, ports: object = None) -> Rule:
    return Rule("ip", text, SRC, None, family, first, last, ports)  # type: ignore[arg-type]


def host(text: str, name: str, ports: object = None) -> Rule:
    return Rule("host", text, SRC, ports=ports, host=name)  # type: ignore[arg-type]


def unix(text: str, path: str) -> Rule:
    return Rule("unix", text, SRC, path=path)


# (rule text, expected Rule, canonical str)
VALID = [
    # IPv4
    ("192.0.2.1", ip("192.0.2.1", 4, 0xC0000201, 0xC0000201), "192.0.2.1"),
    ("192.0.2.1/32", ip("192.0.2.1/32", 4, 0xC0000201, 0xC0000201), "192.0.2.1"),
    ("  192.0.2.1\t\n", ip("192.0.2.1", 4, 0xC0000201, 0xC0000201), "192.0.2.1"),
    ("0.0.0.0", ip("0.0.0.0", 4, 0, 0), "0.0.0.0"),
    ("255.255.255.255", ip("255.255.255.255", 4, 0xFFFFFFFF, 0xFFFFFFFF), "255.255.255.255"),
    ("0.0.0.0/0", ip("0.0.0.0/0", 4, 0, 0xFFFFFFFF), "0.0.0.0/0"),
    ("10.0.0.0/8", ip("10.0.0.0/8", 4, 0x0A000000, 0x0AFFFFFF), "10.0.0.0/8"),
    ("10.0.0.0/008", ip("10.0.0.0/008", 4, 0x0A000000, 0x0AFFFFFF), "10.0.0.0/8"),
    ("198.51.100.0/24", ip("198.51.100.0/24", 4, 0xC6336400, 0xC63364FF), "198.51.100.0/24"),
    ("203.0.113.128/25", ip("203.0.113.128/25", 4, 0xCB007180, 0xCB0071FF), "203.0.113.128/25"),
    (
        "192.0.2.1:443",
        ip("192.0.2.1:443", 4, 0xC0000201, 0xC0000201, ((443, 443),)),
        "192.0.2.1:443",
    ),
    ("192.0.2.1:0", ip("192.0.2.1:0", 4, 0xC0000201, 0xC0000201, ((0, 0),)), "192.0.2.1:0"),
    (
        "192.0.2.1:65535",
        ip("192.0.2.1:65535", 4, 0xC0000201, 0xC0000201, ((65535, 65535),)),
        "192.0.2.1:65535",
    ),
    ("192.0.2.1:080", ip("192.0.2.1:080", 4, 0xC0000201, 0xC0000201, ((80, 80),)), "192.0.2.1:80"),
    (
        "10.0.0.0/8:443",
        ip("10.0.0.0/8:443", 4, 0x0A000000, 0x0AFFFFFF, ((443, 443),)),
        "10.0.0.0/8:443",
    ),
    (
        "10.0.0.0/8:80,443",
        ip("10.0.0.0/8:80,443", 4, 0x0A000000, 0x0AFFFFFF, ((80, 80), (443, 443))),
        "10.0.0.0/8:80,443",
    ),
    (
        "10.0.0.0/8:8000-8100",
        ip("10.0.0.0/8:8000-8100", 4, 0x0A000000, 0x0AFFFFFF, ((8000, 8100),)),
        "10.0.0.0/8:8000-8100",
    ),
    (
        "10.0.0.0/8:8000-8100,443,80",
        ip(
            "10.0.0.0/8:8000-8100,443,80",
            4,
            0x0A000000,
            0x0AFFFFFF,
            ((80, 80), (443, 443), (8000, 8100)),
        ),
        "10.0.0.0/8:80,443,8000-8100",
    ),
    # every port is the same as no port list
    ("192.0.2.1:0-65535", ip("192.0.2.1:0-65535", 4, 0xC0000201, 0xC0000201), "192.0.2.1"),
    # IPv6, bare
    ("::1", ip("::1", 6, 1, 1), "::1"),
    ("::", ip("::", 6, 0, 0), "::"),
    ("::/0", ip("::/0", 6, 0, V6_ALL), "::/0"),
    ("2001:db8::/32", ip("2001:db8::/32", 6, DB8, DB8 | (1 << 96) - 1), "2001:db8::/32"),
    ("2001:DB8::1", ip("2001:DB8::1", 6, DB8 | 1, DB8 | 1), "2001:db8::1"),
    (
        "2001:0db8:0000:0000:0000:0000:0000:0001",
        ip("2001:0db8:0000:0000:0000:0000:0000:0001", 6, DB8 | 1, DB8 | 1),
        "2001:db8::1",
    ),
    ("2001:db8::1/128", ip("2001:db8::1/128", 6, DB8 | 1, DB8 | 1), "2001:db8::1"),
    ("fe80::1%eth0", ip("fe80::1%eth0", 6, FE80 | 1, FE80 | 1), "fe80::1"),
    ("fe80::%eth0/64", ip("fe80::%eth0/64", 6, FE80, FE80 | (1 << 64) - 1), "fe80::/64"),
    # v4-compatible (not v4-mapped) stays IPv6
    ("::1.2.3.4", ip("::1.2.3.4", 6, 0x01020304, 0x01020304), "::1.2.3.4"),
    # IPv6, bracketed
    ("[2001:db8::1]", ip("[2001:db8::1]", 6, DB8 | 1, DB8 | 1), "2001:db8::1"),
    (
        "[2001:db8::1]:443",
        ip("[2001:db8::1]:443", 6, DB8 | 1, DB8 | 1, ((443, 443),)),
        "[2001:db8::1]:443",
    ),
    (
        "[2001:db8::/32]:80,443",
        ip("[2001:db8::/32]:80,443", 6, DB8, DB8 | (1 << 96) - 1, ((80, 80), (443, 443))),
        "[2001:db8::/32]:80,443",
    ),
    (
        "[2001:db8::/32]:443,80,81",
        ip("[2001:db8::/32]:443,80,81", 6, DB8, DB8 | (1 << 96) - 1, ((80, 81), (443, 443))),
        "[2001:db8::/32]:80-81,443",
    ),
    (
        "[fe80::1%eth0]:22",
        ip("[fe80::1%eth0]:22", 6, FE80 | 1, FE80 | 1, ((22, 22),)),
        "[fe80::1]:22",
    ),
    (
        "[fe80::%2/64]:1-2",
        ip("[fe80::%2/64]:1-2", 6, FE80, FE80 | (1 << 64) - 1, ((1, 2),)),
        "[fe80::/64]:1-2",
    ),
    ("[::1]:0-65535", ip("[::1]:0-65535", 6, 1, 1), "::1"),
    # v4-mapped IPv6 becomes IPv4
    ("::ffff:192.0.2.1", ip("::ffff:192.0.2.1", 4, 0xC0000201, 0xC0000201), "192.0.2.1"),
    ("::ffff:c000:201", ip("::ffff:c000:201", 4, 0xC0000201, 0xC0000201), "192.0.2.1"),
    ("::FFFF:10.0.0.0/104", ip("::FFFF:10.0.0.0/104", 4, 0x0A000000, 0x0AFFFFFF), "10.0.0.0/8"),
    ("::ffff:0:0/96", ip("::ffff:0:0/96", 4, 0, 0xFFFFFFFF), "0.0.0.0/0"),
    (
        "[::ffff:192.0.2.1]:443",
        ip("[::ffff:192.0.2.1]:443", 4, 0xC0000201, 0xC0000201, ((443, 443),)),
        "192.0.2.1:443",
    ),
    # a block larger than ::ffff:0:0/96 stays IPv6
    (
        "::fffe:0:0/95",
        ip("::fffe:0:0/95", 6, 0xFFFE << 32, (0xFFFF << 32) | 0xFFFFFFFF),
        "::fffe:0:0/95",
    ),
    # host names
    ("example.com", host("example.com", "example.com"), "example.com"),
    ("Example.COM.", host("Example.COM.", "example.com"), "example.com"),
    ("localhost", host("localhost", "localhost"), "localhost"),
    ("api.example.com:443", host("api.example.com:443", "api.example.com", ((443, 443),)), None),
    (
        "*.Example.com:443,80",
        host("*.Example.com:443,80", "*.example.com", ((80, 80), (443, 443))),
        "*.example.com:80,443",
    ),
    ("*.localhost", host("*.localhost", "*.localhost"), "*.localhost"),
    ("my_host-1", host("my_host-1", "my_host-1"), "my_host-1"),
    ("xn--bcher-kva.example", host("xn--bcher-kva.example", "xn--bcher-kva.example"), None),
    ("123abc.example", host("123abc.example", "123abc.example"), None),
    ("db.internal:5432", host("db.internal:5432", "db.internal", ((5432, 5432),)), None),
    ("a" * 63 + ".com", host("a" * 63 + ".com", "a" * 63 + ".com"), None),
    (
        ".".join(["a" * 63] * 3 + ["b" * 61]),
        host(".".join(["a" * 63] * 3 + ["b" * 61]), ".".join(["a" * 63] * 3 + ["b" * 61])),
        None,
    ),
    # unix sockets
    ("unix:/tmp/x.sock", unix("unix:/tmp/x.sock", "/tmp/x.sock"), None),
    ("unix:/tmp/*.sock", unix("unix:/tmp/*.sock", "/tmp/*.sock"), None),
    ("unix:*", unix("unix:*", "*"), None),
    ("unix:@abstract-name", unix("unix:@abstract-name", "@abstract-name"), None),
    ("UNIX:/run/a.sock", unix("UNIX:/run/a.sock", "/run/a.sock"), "unix:/run/a.sock"),
    ("unix:relative.sock", unix("unix:relative.sock", "relative.sock"), None),
    ("unix:/a:b/x.sock", unix("unix:/a:b/x.sock", "/a:b/x.sock"), None),
    ("unix:/tmp/a[:]80", unix("unix:/tmp/a[:]80", "/tmp/a[:]80"), None),
    ("unix:80", unix("unix:80", "80"), None),
]


@pytest.mark.parametrize(("text", "expected", "canonical"), VALID, ids=[v[0] for v in VALID])
def test_valid_rule(text: str, expected: Rule, canonical: str | None) -> None:
    rule = parse_rule(text, source=SRC)
    assert rule == expected
    assert str(rule) == (text.strip() if canonical is None else canonical)


@pytest.mark.parametrize(("text", "expected", "canonical"), VALID, ids=[v[0] for v in VALID])
def test_canonical_text_parses_back(text: str, expected: Rule, canonical: str | None) -> None:
    rule = parse_rule(text, source=SRC)
    again = parse_rule(str(rule), source="elsewhere")
    assert again.replace(text=rule.text, source=rule.source) == rule
    assert again.text == str(rule)
    assert again.source == "elsewhere"


LONG_NAME = ".".join(["a" * 63] * 4)

# (rule text, substring of the reason)
BAD = [
    ("", "empty rule"),
    ("   ", "empty rule"),
    ("1.2.3.4 :80", "whitespace inside a rule"),
    ("exa\tmple.com", "whitespace inside a rule"),
    ("example.com:80,\u00a0443", "whitespace inside a rule"),
    # IPv4 forms the kernel accepts but rules do not
    ("127.1", "not a valid IPv4 address: expected four dotted decimal numbers"),
    ("127.1", "the kernel would read it as 127.0.0.1; did you mean 127.0.0.1?"),
    ("1.2.3", "not a valid IPv4 address"),
    ("1.2.3.4.5", "not a valid IPv4 address: expected four dotted decimal numbers"),
    ("1.2.3.4.", "not a valid IPv4 address"),
    ("1.2.3.256", "not a valid IPv4 address: 256 is greater than 255"),
    ("1.2.3.256:80", "not a valid IPv4 address: 256 is greater than 255"),
    ("0x7f.0.0.1", "'0x7f' is not a decimal number (no hex in rules)"),
    ("0x7f000001", "not a valid IPv4 address"),
    ("010.0.0.1", "leading zeros are not allowed (in '010')"),
    ("010.0.0.1", "the kernel reads them as octal, 8.0.0.1; did you mean 10.0.0.1?"),
    ("08.0.0.1", "leading zeros are not allowed (in '08'); did you mean 8.0.0.1?"),
    ("80", "a port alone is not a rule, give an address: 0.0.0.0/0:PORT"),
    # prefixes
    ("10.0.0.1/8", "host bits set; did you mean 10.0.0.0/8?"),
    ("192.0.2.1/24:443", "host bits set; did you mean 192.0.2.0/24?"),
    ("2001:db8::1/32", "host bits set; did you mean 2001:db8::/32?"),
    ("[2001:db8::1/32]:80", "host bits set; did you mean 2001:db8::/32?"),
    ("10.0.0.0/33", "prefix length 33 is out of range 0-32"),
    ("::/129", "prefix length 129 is out of range 0-128"),
    ("10.0.0.0/x", "prefix length 'x' is not a number"),
    ("10.0.0.0/-1", "prefix length '-1' is not a number"),
    ("10.0.0.0/+8", "prefix length '+8' is not a number"),
    ("10.0.0.0/\u0668", "is not a number"),  # ARABIC-INDIC DIGIT EIGHT
    ("10.0.0.0/", "missing prefix length after '/'"),
    ("10.0.0.0/255.0.0.0", "prefix length '255.0.0.0' is not a number; did you mean /8?"),
    ("10.0.0.0/255.0.255.0", "prefix length '255.0.255.0' is not a number"),
    ("example.com/24", "a prefix length needs an IP address, not a host name"),
    ("/24", "missing address before '/'"),
    ("1.2.3/24", "not a valid IPv4 address"),
    # ports
    ("1.2.3.4:", "empty port list after ':'"),
    (":80", "empty host before ':'"),
    ("1.2.3.4:http", "port 'http' is not a number (service names are not supported)"),
    ("1.2.3.4:8o", "port '8o' is not a number"),
    ("1.2.3.4:70000", "port 70000 is out of range 0-65535"),
    ("1.2.3.4:65536", "port 65536 is out of range 0-65535"),
    ("1.2.3.4:90-80", "port range 90-80 is reversed; did you mean 80-90?"),
    ("1.2.3.4:80,,443", "empty item in port list"),
    ("1.2.3.4:80,", "empty item in port list"),
    ("1.2.3.4:,80", "empty item in port list"),
    ("1.2.3.4:-80", "incomplete port range '-80'"),
    ("1.2.3.4:80-", "incomplete port range '80-'"),
    ("1.2.3.4:1-2-3", "port range '1-2-3' has more than one '-'"),
    ("1.2.3.4:80:443", "more than one ':'; separate ports with ','"),
    ("example.com:80:443", "more than one ':'"),
    ("example.com:80-x", "port 'x' is not a number"),
    # brackets and IPv6
    ("[::1", "missing ']'"),
    ("[::1]x", "unexpected 'x' after ']'"),
    ("[::1]:", "empty port list after ':'"),
    ("[::1]:http", "port 'http' is not a number"),
    ("[::1]/64", "put the prefix length inside the brackets"),
    ("[1.2.3.4]:80", "brackets are for IPv6 addresses; did you mean 1.2.3.4:80?"),
    ("[]", "empty brackets"),
    ("[example.com]:80", "not a valid IPv6 address: 'example.com'"),
    ("::1]:80", "unbalanced brackets"),
    ("1::2::3", "not a valid IPv6 address"),
    ("1:2:3:4:5:6:7:8:9:10", "not a valid IPv6 address"),
    ("1:2:3:4:5:6:7:8:80", "write [1:2:3:4:5:6:7:8]:80"),
    ("::ffff:01.2.3.4", "not a valid IPv6 address"),
    ("fe80::1%", "empty IPv6 scope id after '%'"),
    ("fe80::1%eth0:80", "bad scope id 'eth0:80'; to give ports with an IPv6 address"),
    ("::ffff:10.0.0.1/104", "host bits set; did you mean ::ffff:10.0.0.0/104?"),
    # unix
    ("unix:", "empty unix socket path"),
    ("unix:@", "empty abstract socket name"),
    ("unix:/tmp/x.sock:80", "unix rules take no ports"),
    ("unix:/tmp/x.sock:80,443", "unix rules take no ports"),
    ("unix:/a\x00b", "NUL character in unix socket path"),
    # host names
    ("http://example.com", "a URL is not a rule"),
    ("*", "a wildcard needs a domain: write *.example.com"),
    ("*.", "a wildcard needs a domain"),
    ("foo.*.com", "'*' is only allowed as the whole first label"),
    ("*foo.com", "'*' is only allowed as the whole first label"),
    ("*.*.com", "'*' is only allowed as the whole first label"),
    ("*.1.2.3.4", "a wildcard needs a domain name, not an address"),
    ("ex\u00e4mple.com", "invalid character '\u00e4' in host name; write internationalised"),
    ("exa@mple.com", "invalid character '@' in host name"),
    ("a]:80", "invalid character ']' in host name"),
    ("a..b", "empty label in host name"),
    (".example.com", "empty label in host name"),
    ("example.com..", "empty label in host name"),
    (".", "empty host name"),
    ("x" * 64 + ".com", "in host name is longer than 63 characters"),
    (LONG_NAME, "host name is longer than 253 characters (255)"),
    ("example.123", "not a valid host name: the top-level label '123' is all digits"),
]


@pytest.mark.parametrize(("text", "reason"), BAD, ids=[repr(b[0])[1:-1] for b in BAD])
def test_invalid_rule(text: str, reason: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule(text, source=SRC)
    err = info.value
    shown = text.strip() or text
    assert reason in err.reason
    assert err.source == SRC
    assert err.text == shown
    message = str(err)
    assert message == f"{SRC}: invalid rule {shown!r}: {err.reason}"
    assert message.startswith(f"{SRC}: ")
    assert repr(shown) in message
    assert isinstance(err, ValueError)


def test_error_message_matches_the_documented_example() -> None:
    with pytest.raises(RuleError) as info:
        parse_rule("10.0.0.1/8", source="--netguard-allow")
    assert str(info.value) == (
        "--netguard-allow: invalid rule '10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?"
    )


def test_error_names_a_file_source() -> None:
    with pytest.raises(RuleError, match=r"^allow\.toml:12: invalid rule 'x:y': port 'y' "):
        parse_rule("  x:y ", source="allow.toml:12")


@pytest.mark.parametrize("bad", [None, 80, b"1.2.3.4", ["1.2.3.4"]])
def test_rule_must_be_a_string(bad: object) -> None:
    with pytest.raises(TypeError, match=rf"^{re.escape(SRC)}: a rule must be a str, not "):
        parse_rule(bad, source=SRC)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- RuleError


def test_rule_error_pickles() -> None:
    err = RuleError("NETGUARD_ALLOW", "1.2.3.4:x", "port 'x' is not a number")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is RuleError
    assert (clone.source, clone.text, clone.reason) == (
        "NETGUARD_ALLOW",
        "1.2.3.4:x",
        "port 'x' is not a number",
    )
    assert str(clone) == "NETGUARD_ALLOW: invalid rule '1.2.3.4:x': port 'x' is not a number"
    assert clone.args == err.args


def test_rule_error_from_parser_pickles_with_every_protocol() -> None:
    with pytest.raises(RuleError) as info:
        parse_rule("[1.2.3.4]:80", source="allow.toml:3")
    err = info.value
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(err, protocol=protocol))
        assert (clone.source, clone.text, clone.reason) == (err.source, err.text, err.reason)
        assert str(clone) == str(err)
    assert str(copy.copy(err)) == str(err)
    assert copy.deepcopy(err).reason == err.reason


@pytest.mark.skipif(sys.version_info < (3, 11), reason="add_note is new in 3.11")
def test_rule_error_pickles_notes() -> None:
    err = RuleError("s", "t", "r")
    err.add_note("while reading allow.toml")
    clone = pickle.loads(pickle.dumps(err))
    assert clone.__notes__ == ["while reading allow.toml"]
    assert clone.reason == "r"


class _SubError(RuleError):
    pass


def test_rule_error_subclass_pickles_as_itself() -> None:
    clone = pickle.loads(pickle.dumps(_SubError("s", "t", "r")))
    assert type(clone) is _SubError
    assert str(clone) == "s: invalid rule 't': r"


# ---------------------------------------------------------------------------- ports


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("80", ((80, 80),)),
        ("0", ((0, 0),)),
        ("65535", ((65535, 65535),)),
        ("0-65535", ((0, 65535),)),
        (" 443 ", ((443, 443),)),
        ("80,443", ((80, 80), (443, 443))),
        ("443,80", ((80, 80), (443, 443))),
        ("443,80,443", ((80, 80), (443, 443))),
        ("80,81", ((80, 81),)),  # adjacent
        ("81,80", ((80, 81),)),
        ("5,4,3,2,1", ((1, 5),)),
        ("80-90,85-95", ((80, 95),)),  # overlapping
        ("80-90,91-95", ((80, 95),)),  # adjacent ranges
        ("80-90,92-95", ((80, 90), (92, 95))),  # a gap of one port stays a gap
        ("1-10,2-3", ((1, 10),)),  # contained
        ("2-3,1-10", ((1, 10),)),
        ("8000-8100,80,8101", ((80, 80), (8000, 8101))),
        ("0,65535", ((0, 0), (65535, 65535))),
        ("10-10", ((10, 10),)),
        ("1-3,7-9,4-6", ((1, 9),)),
        ("1-3,7-9,5", ((1, 3), (5, 5), (7, 9))),
    ],
)
def test_parse_ports(text: str, expected: tuple[tuple[int, int], ...]) -> None:
    assert parse_ports(text, source=SRC) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty port list"),
        ("  ", "empty port list"),
        ("80, 443", "whitespace inside the port list"),
        ("http", "service names are not supported"),
        ("70000", "port 70000 is out of range 0-65535"),
        ("90-80", "port range 90-80 is reversed; did you mean 80-90?"),
        ("80,,443", "empty item in port list"),
        ("-", "incomplete port range '-'"),
        ("1-2-3", "has more than one '-'"),
        ("+80", "port '+80' is not a number"),
        ("\u0668\u0660", "is not a number"),
    ],
)
def test_parse_ports_errors_name_the_port_text(text: str, reason: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_ports(text, source="ports in allow.toml:7")
    err = info.value
    assert reason in err.reason
    assert err.source == "ports in allow.toml:7"
    assert err.text == text.strip()
    assert str(err).startswith(f"ports in allow.toml:7: invalid rule {text.strip()!r}: ")


def test_parse_ports_errors_name_the_rule_text_when_given() -> None:
    with pytest.raises(RuleError) as info:
        parse_ports("99999", source=SRC, rule_text="192.0.2.1:99999")
    assert info.value.text == "192.0.2.1:99999"
    assert str(info.value) == (
        f"{SRC}: invalid rule '192.0.2.1:99999': port 99999 is out of range 0-65535"
    )


@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1])),
        min_size=1,
        max_size=8,
    )
)
def test_parse_ports_merges_like_a_set(ranges: list[tuple[int, int]]) -> None:
    text = ",".join(str(lo) if lo == hi and lo % 2 else f"{lo}-{hi}" for lo, hi in ranges)
    result = parse_ports(text, source=SRC)
    covered = {p for lo, hi in ranges for p in range(lo, hi + 1)}
    assert {p for lo, hi in result for p in range(lo, hi + 1)} == covered
    for lo, hi in result:
        assert lo <= hi
    for (_, prev_hi), (lo, _) in itertools.pairwise(result):
        assert lo > prev_hi + 1  # sorted, disjoint and not adjacent
    assert parse_ports(format_ports(result), source=SRC) == result


def test_format_ports() -> None:
    assert format_ports(None) == ""
    assert format_ports(()) == ""
    assert format_ports(((80, 80),)) == "80"
    assert format_ports(((80, 80), (443, 443), (8000, 8100))) == "80,443,8000-8100"
    assert format_ports([(0, 65535)]) == "0-65535"


# ---------------------------------------------------------------------------- v4-mapped


@pytest.mark.parametrize(
    ("text", "first", "last", "canonical"),
    [
        ("::ffff:127.0.0.1", 0x7F000001, 0x7F000001, "127.0.0.1"),
        ("::ffff:7f00:1", 0x7F000001, 0x7F000001, "127.0.0.1"),
        ("::ffff:127.0.0.0/104", 0x7F000000, 0x7FFFFFFF, "127.0.0.0/8"),
        ("[::ffff:127.0.0.0/104]:80", 0x7F000000, 0x7FFFFFFF, "127.0.0.0/8:80"),
        ("::ffff:192.0.2.0/120", 0xC0000200, 0xC00002FF, "192.0.2.0/24"),
        ("::ffff:0.0.0.0/96", 0, 0xFFFFFFFF, "0.0.0.0/0"),
        ("[::ffff:1.2.3.4%lo]:1", 0x01020304, 0x01020304, "1.2.3.4:1"),
    ],
)
def test_v4_mapped_becomes_ipv4(text: str, first: int, last: int, canonical: str) -> None:
    rule = parse_rule(text, source=SRC)
    assert (rule.kind, rule.family, rule.first, rule.last) == ("ip", 4, first, last)
    assert rule.text == text
    assert str(rule) == canonical
    assert parse_rule(canonical, source=SRC).first == first


@pytest.mark.parametrize("text", ["::/0", "::/95", "::fffe:0:0/95", "::1:ffff:0:0/96"])
def test_blocks_not_inside_v4_mapped_stay_ipv6(text: str) -> None:
    assert parse_rule(text, source=SRC).family == 6


# ---------------------------------------------------------------------------- Rule


def test_rule_is_frozen_hashable_and_slotted() -> None:
    rule = parse_rule("10.0.0.0/8:443", source=SRC)
    with pytest.raises(AttributeError, match="frozen"):
        rule.first = 0  # type: ignore[misc]
    assert not hasattr(rule, "__dict__")
    assert rule == parse_rule("10.0.0.0/8:443", source=SRC)
    assert len({rule, parse_rule("10.0.0.0/8:443", source=SRC)}) == 1
    assert pickle.loads(pickle.dumps(rule)) == rule


def test_rule_defaults() -> None:
    rule = Rule("host", "example.com", SRC, host="example.com")
    assert (rule.name, rule.family, rule.first, rule.last, rule.ports, rule.path) == (
        None,
        0,
        0,
        0,
        None,
        "",
    )


def test_name_is_kept() -> None:
    assert parse_rule("192.0.2.1", source="allow.toml:4", name="db").name == "db"
    assert parse_rule("unix:*", source="s", name="sockets").name == "sockets"
    assert parse_rule("[::1]:1", source="s", name="x").name == "x"
    assert parse_rule("example.com", source="s").name is None


def test_str_of_a_hand_built_range_that_is_not_a_block() -> None:
    rule = Rule("ip", "x", SRC, family=4, first=1, last=2)
    assert str(rule) == "0.0.0.1-0.0.0.2"


# ---------------------------------------------------------------------------- parse_rules


def test_parse_rules_keeps_order_and_source() -> None:
    rules = parse_rules(["10.0.0.0/8", " example.com:443 ", "unix:*"], source="NETGUARD_ALLOW")
    assert [str(r) for r in rules] == ["10.0.0.0/8", "example.com:443", "unix:*"]
    assert [r.kind for r in rules] == ["ip", "host", "unix"]
    assert {r.source for r in rules} == {"NETGUARD_ALLOW"}
    assert rules[1].text == "example.com:443"


def test_parse_rules_accepts_any_iterable() -> None:
    rules = parse_rules((t for t in ("::1", "127.0.0.1")), source="s")
    assert [(r.family, r.first) for r in rules] == [(6, 1), (4, 0x7F000001)]
    assert parse_rules([], source="s") == []


def test_parse_rules_error_names_the_offending_item() -> None:
    with pytest.raises(RuleError) as info:
        parse_rules(["10.0.0.0/8", "192.0.2.1/24", "::1"], source="NETGUARD_ALLOW")
    assert info.value.text == "192.0.2.1/24"
    assert str(info.value) == (
        "NETGUARD_ALLOW: invalid rule '192.0.2.1/24': host bits set; did you mean 192.0.2.0/24?"
    )


@pytest.mark.parametrize("texts", ["10.0.0.0/8", b"10.0.0.0/8"])
def test_parse_rules_rejects_a_single_string(texts: object) -> None:
    with pytest.raises(TypeError, match="expected an iterable of rule strings, not a single"):
        parse_rules(texts, source="s")  # type: ignore[arg-type]


def test_parse_rules_many() -> None:
    texts = [f"{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}.0/24:443" for i in range(1000)]
    rules = parse_rules(texts, source="s")
    assert len(rules) == 1000
    assert rules[-1].first == 0x0003E700
    assert rules[-1].last == 0x0003E7FF
    assert all(r.ports == ((443, 443),) for r in rules)


# ---------------------------------------------------------------------------- properties


def _ports_text() -> st.SearchStrategy[str | None]:
    item = st.tuples(st.integers(0, 65535), st.integers(0, 2000)).map(
        lambda t: str(t[0]) if t[1] == 0 else f"{t[0]}-{min(t[0] + t[1], 65535)}"
    )
    return st.none() | st.lists(item, min_size=1, max_size=4).map(",".join)


@st.composite
def _ipv4_rules(draw: st.DrawFn) -> str:
    plen = draw(st.integers(0, 32))
    addr = draw(st.integers(0, (1 << 32) - 1)) & ~((1 << (32 - plen)) - 1)
    text = str(ipaddress.IPv4Address(addr))
    if plen < 32 or draw(st.booleans()):
        text += f"/{plen}"
    ports = draw(_ports_text())
    return text if ports is None else f"{text}:{ports}"


@st.composite
def _ipv6_rules(draw: st.DrawFn) -> str:
    plen = draw(st.integers(0, 128))
    raw = draw(
        st.integers(0, V6_ALL) | st.integers(0, (1 << 32) - 1).map(lambda a: a | 0xFFFF << 32)
    )
    addr = raw & ~((1 << (128 - plen)) - 1)
    text = draw(
        st.sampled_from(
            [ipaddress.IPv6Address(addr).compressed, ipaddress.IPv6Address(addr).exploded]
        )
    )
    if draw(st.booleans()):
        text = text.upper()
    if draw(st.booleans()):
        text += draw(st.sampled_from(["%eth0", "%1", "%lo"]))
    if plen < 128 or draw(st.booleans()):
        text += f"/{plen}"
    ports = draw(_ports_text())
    if ports is not None:
        return f"[{text}]:{ports}"
    return f"[{text}]" if draw(st.booleans()) else text


_LABEL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"


@st.composite
def _host_rules(draw: st.DrawFn) -> str:
    labels = draw(st.lists(st.text(_LABEL_CHARS, min_size=1, max_size=63), min_size=0, max_size=3))
    # a top-level label starting with a letter is never numeric
    labels.append(
        draw(st.text("abcxyzABCXYZ", min_size=1, max_size=1))
        + draw(st.text(_LABEL_CHARS, max_size=10))
    )
    name = ".".join(labels)
    if draw(st.booleans()):
        name = "*." + name
    if draw(st.booleans()):
        name += "."
    ports = draw(_ports_text())
    return name if ports is None else f"{name}:{ports}"


_unix_rules = (
    st.text("abcXYZ019/._-*?[]@:!", min_size=1, max_size=30)
    .filter(lambda p: p != "@" and not re.search(r":[0-9][0-9,-]*\Z", p))
    .map(lambda p: "unix:" + p)
)


@given(st.one_of(_ipv4_rules(), _ipv6_rules(), _host_rules(), _unix_rules))
def test_canonical_text_round_trips(text: str) -> None:
    rule = parse_rule(text, source="generated")
    canonical = str(rule)
    again = parse_rule(canonical, source="again")
    assert again.replace(text=rule.text, source=rule.source) == rule
    assert str(again) == canonical


@given(st.data())
def test_first_and_last_match_ipaddress(data: st.DataObject) -> None:
    family = data.draw(st.sampled_from([4, 6]))
    bits = 32 if family == 4 else 128
    plen = data.draw(st.integers(0, bits))
    addr = data.draw(st.integers(0, (1 << bits) - 1))
    net: ipaddress.IPv4Network | ipaddress.IPv6Network
    if family == 4:
        net = ipaddress.IPv4Network((addr, plen), strict=False)
    else:
        net = ipaddress.IPv6Network((addr, plen), strict=False)
    first, last = int(net.network_address), int(net.broadcast_address)
    rule = parse_rule(str(net), source=SRC)
    if family == 6 and plen >= 96 and first >> 32 == 0xFFFF:
        assert (rule.family, rule.first, rule.last) == (4, first & 0xFFFFFFFF, last & 0xFFFFFFFF)
    else:
        assert (rule.family, rule.first, rule.last) == (family, first, last)
    assert rule.last - rule.first + 1 == net.num_addresses
    with_ports = f"[{net}]:443" if family == 6 else f"{net}:443"
    assert parse_rule(with_ports, source=SRC).first == rule.first


@given(st.data())
def test_host_bits_suggestion_is_the_network(data: st.DataObject) -> None:
    family = data.draw(st.sampled_from([4, 6]))
    bits = 32 if family == 4 else 128
    plen = data.draw(st.integers(0, bits - 1))
    addr = data.draw(st.integers(0, (1 << bits) - 1))
    assume(addr & ((1 << (bits - plen)) - 1))
    address = ipaddress.IPv4Address(addr) if family == 4 else ipaddress.IPv6Address(addr)
    with pytest.raises(RuleError) as info:
        parse_rule(f"{address}/{plen}", source=SRC)
    match = re.fullmatch(r"host bits set; did you mean (\S+)\?", info.value.reason)
    assert match is not None
    net = ipaddress.ip_network(f"{address}/{plen}", strict=False)
    assert ipaddress.ip_network(match.group(1)) == net


# The rule grammar's syntax checks, against the regular expressions they are written out
# from (rules.py compiles no pattern at import: that cost every strict session 1.35M
# instructions). Text from the characters that matter, and any character.
_SYNTAX_CHARS = st.sampled_from(list("aZ09_-.*xX\u0663\u00b2 \t\u00a0\u2003fF/"))
_SYNTAX_TEXT = st.one_of(st.text(_SYNTAX_CHARS, max_size=80), st.text(max_size=12))
_HOST_GRAMMAR = re.compile(r"(?:\*\.)?(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?", re.A)
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*", re.ASCII)


@given(st.one_of(_SYNTAX_TEXT, st.builds("*.{}.{}".format, _SYNTAX_TEXT, _SYNTAX_TEXT)))
def test_syntax_checks_agree_with_their_patterns(text: str) -> None:
    from netguard import rules

    assert rules._host_match(text) == bool(_HOST_GRAMMAR.fullmatch(text))
    assert rules._numeric_label(text) == bool(_NUMERIC_LABEL.fullmatch(text))
    assert rules._has_space(text) == bool(re.search(r"\s", text))


@pytest.mark.parametrize("labels", [1, 63, 64])
def test_host_labels_up_to_63_characters(labels: int) -> None:
    from netguard import rules

    for name in ("a" * labels, f"*.{'b' * labels}.example", f"{'c' * labels}.example."):
        assert rules._host_match(name) == (labels <= 63) == bool(_HOST_GRAMMAR.fullmatch(name))
