"""Tests of netguard._reference, the pure-Python twin of the C core.

The module is loaded straight from its file, so these tests need neither the package
``__init__`` nor the C extension. Rules are built with a local stand-in for
``netguard.rules.Rule`` (the reference only reads the fields).

Hook tests use real sockets on loopback only. A destination outside loopback appears only
where it is denied and the callback raises, so no packet ever leaves; DNS functions are
replaced by fakes before install whenever a lookup is allowed, so no query leaves either.
"""

from __future__ import annotations

import _socket
import contextlib
import importlib.util
import ipaddress
import json
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import backstop

# The installed package's file (the suite runs against an installed netguard, also
# from outside the source tree), loaded on its own, without importing netguard.
_SPEC = importlib.util.find_spec("netguard")
assert _SPEC is not None and _SPEC.origin is not None
_SOURCE = Path(_SPEC.origin).parent / "_reference.py"


def _load_reference() -> ModuleType:
    name = "netguard_reference_under_test"
    spec = importlib.util.spec_from_file_location(name, _SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ref = _load_reference()

AF_INET = int(socket.AF_INET)
AF_INET6 = int(socket.AF_INET6)
AF_UNIX = int(socket.AF_UNIX)
TIMEOUT = 0.2


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class FakeRule:
    """Stand-in for netguard.rules.Rule with the same fields."""

    kind: str
    text: str
    source: str = "test"
    name: str | None = None
    family: int = 0
    first: int = 0
    last: int = 0
    ports: tuple[tuple[int, int], ...] | None = None
    host: str = ""
    path: str = ""


def _ports(spec: str | int | None) -> tuple[tuple[int, int], ...] | None:
    if spec is None:
        return None
    ranges = []
    for item in str(spec).split(","):
        lo, _, hi = item.partition("-")
        ranges.append((int(lo), int(hi or lo)))
    return tuple(sorted(ranges))


def ip(cidr: str, ports: str | int | None = None) -> FakeRule:
    net = ipaddress.ip_network(cidr)
    return FakeRule(
        "ip",
        f"{cidr}:{ports}" if ports is not None else cidr,
        family=net.version,
        first=int(net.network_address),
        last=int(net.broadcast_address),
        ports=_ports(ports),
    )


def host(name: str, ports: str | int | None = None) -> FakeRule:
    return FakeRule("host", name, host=name, ports=_ports(ports))


def unix(path: str) -> FakeRule:
    return FakeRule("unix", "unix:" + path, path=path)


def loopback_policy(flags: int = 2) -> Any:
    return ref.Policy([ip("127.0.0.0/8"), ip("::1/128")], flags)


def nothing_policy(flags: int = 2) -> Any:
    return ref.Policy([], flags)


# ------------------------------------------------------------------ Policy.allows


def test_port_sets_of_overlapping_rules_are_unioned() -> None:
    p = ref.Policy([ip("10.0.0.0/8", 443), ip("10.1.0.0/16", 80)])
    assert p.allows("10.1.2.3", 443)
    assert p.allows("10.1.2.3", 80)
    assert not p.allows("10.2.0.1", 80)
    assert p.allows("10.2.0.1", 443)
    assert not p.allows("10.1.2.3", 8080)
    assert not p.allows("11.0.0.1", 443)


def test_port_ranges_and_any_port() -> None:
    p = ref.Policy([ip("192.0.2.0/24", "80,8000-8100"), ip("198.51.100.7")])
    assert p.allows("192.0.2.1", 80)
    assert p.allows("192.0.2.255", 8000)
    assert p.allows("192.0.2.255", 8100)
    assert not p.allows("192.0.2.1", 8101)
    assert not p.allows("192.0.2.1", 79)
    assert p.allows("198.51.100.7", 0)
    assert p.allows("198.51.100.7", 65535)
    assert not p.allows("198.51.100.8", 1)


def test_ipv6_rules() -> None:
    p = ref.Policy([ip("2001:db8::/32", 443), ip("::1/128")])
    assert p.allows("2001:db8:ffff::1", 443)
    assert p.allows("[2001:db8::1]", 443)
    assert not p.allows("2001:db9::1", 443)
    assert not p.allows("2001:db8::1", 80)
    assert p.allows("::1", 1)
    assert p.allows("0:0:0:0:0:0:0:1", 1)


def test_v4_mapped_is_judged_as_ipv4() -> None:
    p = ref.Policy([ip("192.0.2.0/24", 80)])
    assert p.allows("::ffff:192.0.2.1", 80)
    assert p.allows("[::ffff:192.0.2.1]", 80)
    assert p.allows("::ffff:c000:201", 80)
    assert not p.allows("::ffff:192.0.2.1", 81)
    assert not p.allows("::ffff:198.51.100.1", 80)
    # An IPv6 rule does not cover a v4-mapped destination: it is IPv4 once judged.
    assert not ref.Policy([ip("::/0")]).allows("::ffff:192.0.2.1", 80)


@pytest.mark.parametrize("dest", ["0.0.0.0", "::ffff:0.0.0.0", "0", "0x0"])
def test_ipv4_any_address_is_judged_as_this_host(dest: str) -> None:
    assert ref.Policy([ip("127.0.0.1/32", 80)]).allows(dest, 80)
    assert not ref.Policy([ip("127.0.0.1/32", 80)]).allows(dest, 81)
    assert not ref.Policy([ip("0.0.0.0/32"), ip("::/128")]).allows(dest, 80)
    assert not ref.Policy([ip("::1/128")]).allows(dest, 80)
    assert not nothing_policy().allows(dest, 80)


@pytest.mark.parametrize("dest", ["::", "[::]"])
def test_ipv6_any_address_is_judged_as_ipv6_loopback(dest: str) -> None:
    assert ref.Policy([ip("::1/128", 80)]).allows(dest, 80)
    assert not ref.Policy([ip("::1/128", 80)]).allows(dest, 81)
    assert not ref.Policy([ip("127.0.0.1/32")]).allows(dest, 80)
    assert not ref.Policy([ip("0.0.0.0/32"), ip("::/128")]).allows(dest, 80)
    assert not nothing_policy().allows(dest, 80)


@pytest.mark.parametrize(
    "dest", ["127.1", "0x7f.1", "0x7F.0.0.1", "2130706433", "0177.0.0.1", "127.0.1", "[127.1]"]
)
def test_inet_aton_forms(dest: str) -> None:
    assert ref.Policy([ip("127.0.0.1/32", 80)]).allows(dest, 80)
    assert not ref.Policy([ip("127.0.0.2/32", 80)]).allows(dest, 80)


@pytest.mark.parametrize("text", ["127.0.0.1 junk", "127.0.0.1\n", "256.0.0.1", "1.2.3.4.5"])
def test_not_an_address_is_a_name(text: str) -> None:
    p = ref.Policy([ip("0.0.0.0/0"), ip("::/0")], ref.DNS_LOCALHOST)
    assert not p.allows(text, 80)  # a name without a host rule, not an address
    assert not p.allows(text)  # and its lookup is not allowed


def test_scope_ids_are_ignored() -> None:
    p = ref.Policy([ip("fe80::/10", 22)])
    assert p.allows("fe80::1%eth0", 22)
    assert p.allows("[fe80::1%2]", 22)
    assert p.allows("fe80::1%", 22)
    assert not p.allows("fe80::1%eth0", 23)
    assert ref.Policy([ip("::1/128")]).allows("::1%lo", 5)


def test_unix_globs() -> None:
    p = ref.Policy([unix("/run/*.sock"), unix("@netguard-*"), unix("/tmp/exact")])
    assert p.allows("unix:/run/app.sock")
    assert p.allows("unix:/run/deep/er/app.sock")  # '*' matches '/'
    assert not p.allows("unix:/run/app.socket")
    assert p.allows("unix:@netguard-x")
    assert not p.allows("unix:@other")
    assert not p.allows("unix:netguard-x")
    assert p.allows("unix:/tmp/exact")
    assert not p.allows("unix:/tmp/exact2")
    everything = ref.Policy([unix("*")])
    assert everything.allows("unix:/anything")
    assert everything.allows("unix:@abstract")
    assert everything.allows("unix:")
    assert not nothing_policy().allows("unix:/run/app.sock")
    with pytest.raises(ValueError):
        p.allows("unix:/run/app.sock", 80)


def test_unix_globs_are_python_fnmatch() -> None:
    # No backslash escapes; an unclosed '[' is an ordinary character.
    assert ref.Policy([unix("/a\\*")]).allows("unix:/a\\b")
    assert not ref.Policy([unix("/a\\*")]).allows("unix:/a*")
    assert ref.Policy([unix("/tmp/[x")]).allows("unix:/tmp/[x")
    assert ref.Policy([unix("/s[0-9].sock")]).allows("unix:/s7.sock")
    assert not ref.Policy([unix("/s[!0-9].sock")]).allows("unix:/s7.sock")
    assert ref.Policy([unix("/s?.sock")]).allows("unix:/s7.sock")


def test_host_rules() -> None:
    p = ref.Policy([host("api.example.com", 443), host("*.example.org")], flags=0)
    assert p.allows("api.example.com")
    assert p.allows("API.Example.COM.")
    assert p.allows("api.example.com", 443)
    assert not p.allows("api.example.com", 80)
    assert not p.allows("www.example.com")
    assert not p.allows("api.example.com.evil")
    assert p.allows("a.example.org")
    assert p.allows("a.b.example.org", 1)
    assert not p.allows("example.org")  # '*.' needs a label before the suffix
    assert not p.allows("badexample.org")


def test_host_rule_ports_are_unioned() -> None:
    p = ref.Policy([host("*.example.com", 443), host("api.example.com", 80)], flags=0)
    assert p.allows("api.example.com", 80)
    assert p.allows("api.example.com", 443)
    assert not p.allows("www.example.com", 80)


def test_idna_names() -> None:
    p = ref.Policy([host("xn--bcher-kva.example")], flags=0)
    assert p.allows("Bücher.example")
    assert p.allows("xn--bcher-kva.example", 1)


def test_localhost_flag() -> None:
    assert ref.Policy([], ref.DNS_LOCALHOST).allows("localhost")
    assert ref.Policy([], ref.DNS_LOCALHOST).allows("LOCALHOST.")
    assert not ref.Policy([], 0).allows("localhost")
    assert not ref.Policy([], ref.DNS_LOCALHOST).allows("foo.localhost")
    # The flag allows the lookup only; connecting depends on the address.
    assert not ref.Policy([], ref.DNS_LOCALHOST).allows("localhost", 80)


def test_empty_name_is_not_a_lookup() -> None:
    assert ref.Policy([], 0).allows("")


def test_allow_all() -> None:
    p = ref.Policy([], ref.ALLOW_ALL)
    assert p.flags == ref.ALLOW_ALL
    assert p.allows("192.0.2.1", 443)
    assert p.allows("2001:db8::1", 1)
    assert p.allows("example.com")
    assert p.allows("example.com", 80)
    assert p.allows("unix:/x")
    with pytest.raises(ValueError):
        p.allows("192.0.2.1")


def test_allows_argument_errors() -> None:
    p = loopback_policy()
    for dest in ("127.0.0.1", "::1", "[::1]", "127.1"):
        with pytest.raises(ValueError):
            p.allows(dest)
    with pytest.raises(ValueError):
        p.allows("127.0.0.1", 65536)
    with pytest.raises(ValueError):
        p.allows("127.0.0.1", -1)
    with pytest.raises(TypeError):
        p.allows("127.0.0.1", "80")
    with pytest.raises(TypeError):
        p.allows(b"127.0.0.1", 80)


def test_flags_and_defaults() -> None:
    assert ref.ALLOW_ALL == 1 and ref.DNS_LOCALHOST == 2
    assert ref.Policy([]).flags == ref.DNS_LOCALHOST
    assert ref.Policy([], 3).flags == 3
    assert "ALLOW_ALL|DNS_LOCALHOST" in repr(ref.Policy([], 3))


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        (FakeRule("tcp", "x"), ValueError),
        (FakeRule("ip", "x", family=5), ValueError),
        (FakeRule("ip", "x", family=4, first=2, last=1), ValueError),
        (FakeRule("ip", "x", family=4, first=0, last=2**32), ValueError),
        (FakeRule("ip", "x", family=6, first=-1, last=1), ValueError),
        (FakeRule("ip", "x", family=4, ports=((443, 443), (80, 80))), ValueError),
        (FakeRule("ip", "x", family=4, ports=((80, 90), (90, 100))), ValueError),
        (FakeRule("ip", "x", family=4, ports=((0, 65536),)), ValueError),
        (FakeRule("ip", "x", family=4, ports=()), ValueError),
        (FakeRule("host", "x", host=""), ValueError),
        (FakeRule("host", "x", host="Example.com"), ValueError),
        (FakeRule("host", "x", family=4, host="example.com"), ValueError),
        (FakeRule("unix", "x", path="/x", ports=((1, 1),)), ValueError),
        (FakeRule("ip", "x", family="4"), TypeError),  # type: ignore[arg-type]
        (FakeRule("ip", 1, family=4), TypeError),  # type: ignore[arg-type]
        (FakeRule("ip", "x", family=4, ports=[80]), TypeError),  # type: ignore[arg-type]
        (FakeRule("ip", "x", family=True), TypeError),
    ],
)
def test_bad_rules_are_rejected(rule: FakeRule, error: type[Exception]) -> None:
    with pytest.raises(error):
        ref.Policy([rule])


def test_non_rules_are_rejected() -> None:
    with pytest.raises(TypeError):
        ref.Policy(["10.0.0.0/8"])
    with pytest.raises(TypeError):
        ref.Policy(None)


@pytest.mark.parametrize(("flags", "error"), [(4, ValueError), (-1, ValueError), ("2", TypeError)])
def test_bad_flags_are_rejected(flags: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        ref.Policy([], flags)


def test_real_rule_objects() -> None:
    rules_module = pytest.importorskip("netguard.rules")
    rules = rules_module.parse_rules(
        ["10.0.0.0/8:443", "10.1.0.0/16:80", "*.example.com:443", "unix:@x-*", "[::1]:80"],
        source="test",
    )
    p = ref.Policy(rules)
    assert p.allows("10.1.2.3", 80) and p.allows("10.1.2.3", 443)
    assert not p.allows("10.2.0.1", 80)
    assert p.allows("a.example.com", 443) and p.allows("unix:@x-1") and p.allows("::1", 80)
    assert ref.Policy.from_bytes(p.to_bytes()).to_bytes() == p.to_bytes()


@settings(max_examples=300, deadline=None)
@given(
    nets=st.lists(
        st.tuples(
            st.integers(0, 2**32 - 1),
            st.integers(0, 32),
            st.one_of(st.none(), st.integers(0, 65535)),
        ),
        max_size=6,
    ),
    addr=st.integers(0, 2**32 - 1),
    port=st.integers(0, 65535),
)
def test_allows_matches_brute_force(
    nets: list[tuple[int, int, int | None]], addr: int, port: int
) -> None:
    networks = [(ipaddress.ip_network((base, plen), strict=False), p) for base, plen, p in nets]
    rules = [ip(str(net), p) for net, p in networks]
    target = ipaddress.IPv4Address(addr)
    judged = ipaddress.IPv4Address("127.0.0.1") if addr == 0 else target
    expected = any(judged in net and (p is None or p == port) for net, p in networks)
    policy = ref.Policy(rules)
    assert policy.allows(str(target), port) == expected
    assert policy.allows(f"::ffff:{target}", port) == expected
    assert ref.Policy.from_bytes(policy.to_bytes()).allows(str(target), port) == expected


# -------------------------------------------------------------- to_bytes / from_bytes


def _sample_policy() -> Any:
    return ref.Policy(
        [
            ip("10.0.0.0/8", "443"),
            ip("2001:db8::/32", "80,8000-8100"),
            ip("::/0"),
            FakeRule(
                "host",
                "*.example.com:443",
                "allow.toml:12",
                "api",
                host="*.example.com",
                ports=((443, 443),),
            ),
            FakeRule("unix", "unix:/run/é*", "NETGUARD_ALLOW", path="/run/é*"),
            unix("@abstract"),
        ],
        ref.ALLOW_ALL | ref.DNS_LOCALHOST,
    )


def test_round_trip() -> None:
    p = _sample_policy()
    data = p.to_bytes()
    assert isinstance(data, bytes) and data.startswith(b"NGREF1\n")
    q = ref.Policy.from_bytes(data)
    assert q.flags == p.flags
    assert q.to_bytes() == data
    assert ref.Policy.from_bytes(bytearray(data)).to_bytes() == data
    assert ref.Policy.from_bytes(memoryview(data)).to_bytes() == data
    r = ref.Policy.from_bytes(ref.Policy([ip("10.0.0.0/8", 443)], 0).to_bytes())
    assert r.flags == 0
    assert r.allows("10.1.1.1", 443) and not r.allows("10.1.1.1", 80)
    assert ref.Policy.from_bytes(ref.Policy([]).to_bytes()).to_bytes() == ref.Policy([]).to_bytes()


def test_from_bytes_needs_bytes() -> None:
    with pytest.raises(TypeError):
        ref.Policy.from_bytes("NGREF1\n{}")


def _blob(body: Any) -> bytes:
    return b"NGREF1\n" + json.dumps(body).encode()


def _rule_json(**changes: Any) -> dict[str, Any]:
    rule = {
        "kind": "ip", "text": "10.0.0.0/8", "source": "t", "name": None, "family": 4,
        "first": 167772160, "last": 184549375, "ports": [[443, 443]], "host": "", "path": "",
    }  # fmt: skip
    rule.update(changes)
    return rule


def _without(key: str) -> dict[str, Any]:
    rule = _rule_json()
    del rule[key]
    return rule


MALFORMED = {
    "empty": b"",
    "magic only": b"NGREF1\n",
    "wrong magic": b"XXXXX1\n" + _blob({"flags": 2, "rules": []})[7:],
    "future version": b"NGREF2\n" + _blob({"flags": 2, "rules": []})[7:],
    "no newline": b"NGREF1" + _blob({"flags": 2, "rules": []})[7:],
    "C blob magic": b"\x7fNGC\x01\x00\x00\x00",
    "bad utf-8": b"NGREF1\n\xff\xfe",
    "bad json": b"NGREF1\n{flags: 2}",
    "trailing data": _blob({"flags": 2, "rules": []}) + b"x",
    "deep nesting": b"NGREF1\n" + b"[" * 100_000,
    "huge int": b'NGREF1\n{"flags": ' + b"9" * 5000 + b', "rules": []}',
    "NaN": b'NGREF1\n{"flags": NaN, "rules": []}',
    "duplicate key": b'NGREF1\n{"flags": 2, "flags": 2, "rules": []}',
    "not an object": _blob([2, []]),
    "missing rules": _blob({"flags": 2}),
    "extra key": _blob({"flags": 2, "rules": [], "learned": []}),
    "flags bool": _blob({"flags": True, "rules": []}),
    "flags float": _blob({"flags": 2.0, "rules": []}),
    "flags unknown bit": _blob({"flags": 8, "rules": []}),
    "flags negative": _blob({"flags": -1, "rules": []}),
    "rules not a list": _blob({"flags": 2, "rules": {}}),
    "rule not an object": _blob({"flags": 2, "rules": ["10.0.0.0/8"]}),
    "rule missing field": _blob({"flags": 2, "rules": [_without("last")]}),
    "rule extra field": _blob({"flags": 2, "rules": [{**_rule_json(), "x": 1}]}),
    "unknown kind": _blob({"flags": 2, "rules": [_rule_json(kind="tcp")]}),
    "family 5": _blob({"flags": 2, "rules": [_rule_json(family=5)]}),
    "first > last": _blob({"flags": 2, "rules": [_rule_json(first=2, last=1)]}),
    "last too big": _blob({"flags": 2, "rules": [_rule_json(last=2**32)]}),
    "first string": _blob({"flags": 2, "rules": [_rule_json(first="0")]}),
    "text null": _blob({"flags": 2, "rules": [_rule_json(text=None)]}),
    "name int": _blob({"flags": 2, "rules": [_rule_json(name=1)]}),
    "port 65536": _blob({"flags": 2, "rules": [_rule_json(ports=[[1, 65536]])]}),
    "port lo > hi": _blob({"flags": 2, "rules": [_rule_json(ports=[[90, 80]])]}),
    "ports unsorted": _blob({"flags": 2, "rules": [_rule_json(ports=[[443, 443], [80, 80]])]}),
    "ports overlap": _blob({"flags": 2, "rules": [_rule_json(ports=[[1, 10], [10, 20]])]}),
    "ports empty": _blob({"flags": 2, "rules": [_rule_json(ports=[])]}),
    "ports not pairs": _blob({"flags": 2, "rules": [_rule_json(ports=[80])]}),
    "ports triple": _blob({"flags": 2, "rules": [_rule_json(ports=[[1, 2, 3]])]}),
    "ports float": _blob({"flags": 2, "rules": [_rule_json(ports=[[1.0, 2.0]])]}),
    "ports object": _blob({"flags": 2, "rules": [_rule_json(ports={"lo": 1})]}),
    "host upper": _blob({"flags": 2, "rules": [_rule_json(kind="host", family=0, host="A.b")]}),
    "unix ports": _blob({"flags": 2, "rules": [_rule_json(kind="unix", family=0, path="/x")]}),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_blobs_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        ref.Policy.from_bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_garbage_raises_only_value_error(tail: bytes) -> None:
    for data in (tail, b"NGREF1\n" + tail):
        with contextlib.suppress(ValueError):
            ref.Policy.from_bytes(data)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2000))
def test_truncated_blobs_raise_value_error(cut: int) -> None:
    data = _sample_policy().to_bytes()
    if cut < len(data):
        with pytest.raises(ValueError):
            ref.Policy.from_bytes(data[:cut])


# ------------------------------------------------------------------ hook fixtures


class Denied(Exception):
    """What the test callback raises (strict mode's stand-in)."""


class Recorder:
    """The deny callback: records every call, then raises Denied or returns."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str, int | None]] = []
        self.threads: list[int] = []
        self.raising = True

    def __call__(self, op: str, family: int, host: str, port: int | None) -> None:
        assert type(op) is str and type(family) is int and type(host) is str
        assert port is None or type(port) is int
        self.calls.append((op, family, host, port))
        self.threads.append(threading.get_ident())
        if self.raising:
            raise Denied(f"{op} {host}:{port}")


@pytest.fixture
def hooks() -> Iterator[Recorder]:
    recorder = Recorder()
    ref.install(recorder)
    try:
        yield recorder
    finally:
        ref.activate(None, False)
        ref.uninstall()


class FakeDNS:
    """Replaces the C library's resolver functions; names resolve to 127.0.0.2."""

    ADDRESS = "127.0.0.2"

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def getaddrinfo(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[tuple[Any, ...]]:
        self.calls.append(("getaddrinfo", (host, port, family, type, proto, flags)))
        number = port if isinstance(port, int) else 0
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self.ADDRESS, number))]

    def gethostbyname(self, name: Any) -> str:
        self.calls.append(("gethostbyname", (name,)))
        return self.ADDRESS

    def gethostbyname_ex(self, name: Any) -> tuple[str, list[str], list[str]]:
        self.calls.append(("gethostbyname_ex", (name,)))
        return ("fake", [], [self.ADDRESS])

    def gethostbyaddr(self, addr: Any) -> tuple[str, list[str], list[str]]:
        self.calls.append(("gethostbyaddr", (addr,)))
        return ("fake", [], [str(addr)])

    def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        self.calls.append(("getnameinfo", (sockaddr, flags)))
        return ("fake", str(sockaddr[1]))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


DNS_FUNCTIONS = ("gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo")


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """Fake resolver functions, set before the hooks are installed (they wrap them)."""
    fake = FakeDNS()
    monkeypatch.setattr(_socket, "getaddrinfo", fake.getaddrinfo)
    for name in DNS_FUNCTIONS:
        monkeypatch.setattr(_socket, name, getattr(fake, name))
        monkeypatch.setattr(socket, name, getattr(fake, name))
    return fake


@pytest.fixture
def dns_hooks(fake_dns: FakeDNS) -> Iterator[tuple[Recorder, FakeDNS]]:
    recorder = Recorder()
    ref.install(recorder)
    try:
        yield recorder, fake_dns
    finally:
        ref.activate(None, False)
        ref.uninstall()


@contextlib.contextmanager
def tcp_listener(address: str = "127.0.0.1") -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((address, 0))
        listener.listen(8)
        listener.settimeout(TIMEOUT)
        yield listener


@contextlib.contextmanager
def udp_receiver(address: str = "127.0.0.1") -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as receiver:
        receiver.bind((address, 0))
        receiver.settimeout(TIMEOUT)
        yield receiver


def assert_accepts(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    conn.close()


def assert_no_connection(listener: socket.socket) -> None:
    with pytest.raises(TimeoutError):
        conn, _ = listener.accept()
        conn.close()


def assert_receives(receiver: socket.socket, data: bytes) -> None:
    assert receiver.recv(100) == data


def assert_nothing_received(receiver: socket.socket) -> None:
    with pytest.raises(TimeoutError):
        receiver.recv(100)


def port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


# ---------------------------------------------------------------- install/uninstall


PATCHED_MODULE_NAMES = ("getaddrinfo", *DNS_FUNCTIONS)


def _snapshot() -> dict[str, Any]:
    return {
        "socket.socket": dict(socket.socket.__dict__),
        "_socket": {n: _socket.__dict__.get(n) for n in PATCHED_MODULE_NAMES},
        "socket": {n: socket.__dict__.get(n) for n in PATCHED_MODULE_NAMES},
    }


def test_install_patches_and_uninstall_restores_exactly() -> None:
    before = _snapshot()
    assert "connect" not in socket.socket.__dict__
    assert not ref.is_installed()
    ref.install(Recorder())
    try:
        assert ref.is_installed()
        for name in ("connect", "connect_ex", "sendto", "sendmsg"):
            hook = socket.socket.__dict__[name]
            assert hook.__name__ == name and callable(hook)
        for name in PATCHED_MODULE_NAMES:
            assert _socket.__dict__[name] is not before["_socket"][name]
        for name in DNS_FUNCTIONS:
            assert socket.__dict__[name] is not before["socket"][name]
        # socket.getaddrinfo is the Python function that calls _socket.getaddrinfo
        assert socket.getaddrinfo is before["socket"]["getaddrinfo"]
        with pytest.raises(RuntimeError):
            ref.install(Recorder())
    finally:
        ref.uninstall()
    assert not ref.is_installed()
    assert _snapshot() == before
    assert socket.socket.connect is _socket.socket.connect
    ref.uninstall()  # no-op when not installed
    assert _snapshot() == before


def test_uninstall_restores_an_attribute_that_existed(monkeypatch: pytest.MonkeyPatch) -> None:
    def sendto(self: Any, *args: Any) -> Any:
        return _socket.socket.sendto(self, *args)

    monkeypatch.setattr(socket.socket, "sendto", sendto, raising=False)
    ref.install(Recorder())
    assert socket.socket.__dict__["sendto"] is not sendto
    ref.uninstall()
    assert socket.socket.__dict__["sendto"] is sendto
    assert "connect" not in socket.socket.__dict__


def test_install_needs_a_callable() -> None:
    with pytest.raises(TypeError):
        ref.install(None)
    assert not ref.is_installed()


def test_activate_and_active() -> None:
    assert ref.active() is None
    p = loopback_policy()
    ref.activate(p, True)
    try:
        assert ref.active() is p
    finally:
        ref.activate(None, False)
    assert ref.active() is None
    with pytest.raises(TypeError):
        ref.activate(object(), False)


# ----------------------------------------------------------------------- connect


def test_connect_allowed(hooks: Recorder) -> None:
    ref.activate(loopback_policy(), True)
    with tcp_listener() as listener, socket.socket() as client:
        client.connect(("127.0.0.1", port_of(listener)))
        assert_accepts(listener)
    assert hooks.calls == []


def test_connect_denied_never_reaches_the_network(hooks: Recorder) -> None:
    ref.activate(nothing_policy(), True)
    with tcp_listener() as listener, socket.socket() as client:
        port = port_of(listener)
        with pytest.raises(Denied):
            client.connect(("127.0.0.1", port))
        assert_no_connection(listener)
        assert hooks.calls == [("connect", AF_INET, "127.0.0.1", port)]
        assert hooks.threads == [threading.get_ident()]


def test_connect_denied_then_warned_goes_through(hooks: Recorder) -> None:
    hooks.raising = False
    ref.activate(nothing_policy(), False)
    with tcp_listener() as listener, socket.socket() as client:
        port = port_of(listener)
        client.connect(("127.0.0.1", port))
        assert_accepts(listener)
    assert hooks.calls == [("connect", AF_INET, "127.0.0.1", port)]


def test_connect_ex(hooks: Recorder) -> None:
    with tcp_listener() as listener:
        port = port_of(listener)
        ref.activate(loopback_policy(), True)
        with socket.socket() as client:
            assert client.connect_ex(("127.0.0.1", port)) == 0
            assert_accepts(listener)
        ref.activate(nothing_policy(), True)
        with socket.socket() as client, pytest.raises(Denied):
            client.connect_ex(("127.0.0.1", port))
        assert_no_connection(listener)
    assert hooks.calls == [("connect_ex", AF_INET, "127.0.0.1", port)]


def test_connect_ipv6(hooks: Recorder) -> None:
    with tcp_listener("::1") as listener:
        port = port_of(listener)
        ref.activate(loopback_policy(), True)
        with socket.socket(socket.AF_INET6) as client:
            client.connect(("::1", port, 0, 0))
            assert_accepts(listener)
        ref.activate(ref.Policy([ip("127.0.0.0/8")]), True)
        with socket.socket(socket.AF_INET6) as client, pytest.raises(Denied):
            client.connect(("::1", port))
        assert_no_connection(listener)
    assert hooks.calls == [("connect", AF_INET6, "::1", port)]


def test_v4_mapped_connect_is_judged_as_ipv4(hooks: Recorder) -> None:
    with tcp_listener() as listener:
        port = port_of(listener)
        ref.activate(ref.Policy([ip("127.0.0.0/8")]), True)
        with socket.socket(socket.AF_INET6) as client:
            client.connect(("::ffff:127.0.0.1", port))
            assert_accepts(listener)
        ref.activate(ref.Policy([ip("::/0")]), True)
        with socket.socket(socket.AF_INET6) as client, pytest.raises(Denied):
            client.connect(("::ffff:127.0.0.1", port))
        assert_no_connection(listener)
    assert hooks.calls == [("connect", AF_INET6, "::ffff:127.0.0.1", port)]


@pytest.mark.parametrize(
    ("dest", "shown"),
    [
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        (b"127.0.0.1", "127.0.0.1"),
        (bytearray(b"127.0.0.1"), "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("", "0.0.0.0"),
    ],
)
def test_address_forms(hooks: Recorder, dest: Any, shown: str) -> None:
    with tcp_listener() as listener:
        port = port_of(listener)
        ref.activate(ref.Policy([ip("127.0.0.1/32", port)]), True)
        with socket.socket() as client:
            client.connect((dest, port))
            assert_accepts(listener)
        ref.activate(ref.Policy([ip("127.0.0.1/32", port + 1 if port < 65535 else 1)]), True)
        with socket.socket() as client, pytest.raises(Denied):
            client.connect((dest, port))
        assert_no_connection(listener)
    assert hooks.calls == [("connect", AF_INET, shown, port)]


def test_ipv6_any_address(hooks: Recorder) -> None:
    # "" on an AF_INET6 socket is "::", judged as ::1, where the kernel connects it.
    with tcp_listener("::1") as listener:
        port = port_of(listener)
        ref.activate(ref.Policy([ip("::1/128")]), True)
        with socket.socket(socket.AF_INET6) as client:
            client.connect(("", port))
            assert_accepts(listener)
        ref.activate(ref.Policy([ip("127.0.0.1/32")]), True)
        for dest in ("", "::"):
            with socket.socket(socket.AF_INET6) as client, pytest.raises(Denied):
                client.connect((dest, port))
        assert_no_connection(listener)
    assert hooks.calls == [("connect", AF_INET6, "::", port)] * 2


def test_port_with_index_is_judged(hooks: Recorder) -> None:
    class Port:
        def __init__(self, value: int) -> None:
            self.value = value

        def __index__(self) -> int:
            return self.value

    with tcp_listener() as listener:
        port = port_of(listener)
        ref.activate(ref.Policy([ip("127.0.0.1/32", port)]), True)
        with socket.socket() as client:
            client.connect(("127.0.0.1", Port(port)))
            assert_accepts(listener)
        ref.activate(nothing_policy(), True)
        with socket.socket() as client, pytest.raises(Denied):
            client.connect(("127.0.0.1", Port(port)))
    assert hooks.calls == [("connect", AF_INET, "127.0.0.1", port)]


def test_outside_destinations_are_denied_before_any_packet(hooks: Recorder) -> None:
    ref.activate(loopback_policy(), True)
    v4, v6, tcp, udp = socket.AF_INET, socket.AF_INET6, socket.SOCK_STREAM, socket.SOCK_DGRAM
    cases = [
        (v4, tcp, ("192.0.2.1", 443), (AF_INET, "192.0.2.1")),
        (v4, udp, ("<broadcast>", 9), (AF_INET, "255.255.255.255")),
        (v6, tcp, ("2001:db8::1", 443), (AF_INET6, "2001:db8::1")),
        (v6, tcp, ("fe80::1%1", 22, 0, 1), (AF_INET6, "fe80::1")),
        (v6, udp, ("::ffff:192.0.2.1", 53), (AF_INET6, "::ffff:192.0.2.1")),
        (v6, udp, ("192.0.2.1", 53), (AF_INET, "192.0.2.1")),
    ]
    for family, kind, address, (shown_family, shown) in cases:
        hooks.calls.clear()
        with socket.socket(family, kind) as sock, pytest.raises(Denied):
            sock.connect(address)
        assert hooks.calls == [("connect", shown_family, shown, address[1])]


@pytest.mark.parametrize(
    ("family", "address", "error"),
    [
        (socket.AF_INET, ("127.0.0.1",), TypeError),
        (socket.AF_INET, ("127.0.0.1", 1, 2), TypeError),
        (socket.AF_INET, ("127.0.0.1", 70000), OverflowError),
        (socket.AF_INET, ("127.0.0.1", -1), OverflowError),
        (socket.AF_INET, ("127.0.0.1", "80"), TypeError),
        (socket.AF_INET, ("127.0.0.1", 8.0), TypeError),
        (socket.AF_INET, (1, 80), TypeError),
        (socket.AF_INET, ("127.0.0.1\0", 80), TypeError),
        (socket.AF_INET, ["127.0.0.1", 80], TypeError),
        (socket.AF_INET, "127.0.0.1:80", TypeError),
        (socket.AF_INET6, ("::1", 1, 0x100000), OverflowError),
        (socket.AF_INET6, ("::1", 1, 0, 0, 0), TypeError),
    ],
)
def test_unparseable_addresses_reach_the_original(
    hooks: Recorder, family: int, address: Any, error: type[Exception]
) -> None:
    ref.activate(nothing_policy(flags=0), True)
    with socket.socket(family) as sock, pytest.raises(error):
        sock.connect(address)
    assert hooks.calls == []


def test_no_active_policy_means_no_checks(hooks: Recorder) -> None:
    ref.activate(nothing_policy(), True)
    ref.activate(None, False)
    with tcp_listener() as listener, socket.socket() as client:
        client.connect(("127.0.0.1", port_of(listener)))
        assert_accepts(listener)
    assert hooks.calls == []


def test_allow_all_means_no_checks(hooks: Recorder) -> None:
    ref.activate(ref.Policy([], ref.ALLOW_ALL), True)
    with tcp_listener() as listener, socket.socket() as client:
        client.connect(("127.0.0.1", port_of(listener)))
        assert_accepts(listener)
    assert hooks.calls == []


def test_socket_created_before_install_is_covered() -> None:
    recorder = Recorder()
    with tcp_listener() as listener, socket.socket() as early:
        ref.install(recorder)
        try:
            ref.activate(nothing_policy(), True)
            with pytest.raises(Denied):
                early.connect(("127.0.0.1", port_of(listener)))
            assert_no_connection(listener)
        finally:
            ref.activate(None, False)
            ref.uninstall()
    assert len(recorder.calls) == 1


def test_subclass_defined_before_install_is_covered() -> None:
    class Plain(socket.socket):
        pass

    class Overriding(socket.socket):
        def connect(self, address: Any) -> None:
            super().connect(address)

    recorder = Recorder()
    ref.install(recorder)
    try:
        ref.activate(nothing_policy(), True)
        with tcp_listener() as listener:
            port = port_of(listener)
            for cls in (Plain, Overriding):
                with cls() as sock, pytest.raises(Denied):
                    sock.connect(("127.0.0.1", port))
            assert_no_connection(listener)
    finally:
        ref.activate(None, False)
        ref.uninstall()
    assert [c[0] for c in recorder.calls] == ["connect", "connect"]


def test_ssl_socket_is_covered(hooks: Recorder) -> None:
    ref.activate(nothing_policy(), True)
    context = ssl.create_default_context()
    with tcp_listener() as listener:
        port = port_of(listener)
        with context.wrap_socket(socket.socket(), server_hostname="localhost") as tls:
            with pytest.raises(Denied):
                tls.connect(("127.0.0.1", port))
        assert_no_connection(listener)
    assert hooks.calls == [("connect", AF_INET, "127.0.0.1", port)]


def test_hook_captured_before_uninstall_passes_through() -> None:
    recorder = Recorder()
    ref.install(recorder)
    captured = socket.socket.connect
    ref.uninstall()
    ref.activate(nothing_policy(), True)
    try:
        with tcp_listener() as listener, socket.socket() as client:
            captured(client, ("127.0.0.1", port_of(listener)))
            assert_accepts(listener)
    finally:
        ref.activate(None, False)
    assert recorder.calls == []


def test_other_families_are_not_judged(hooks: Recorder) -> None:
    if not hasattr(socket, "AF_NETLINK"):
        pytest.skip("no AF_NETLINK")
    ref.activate(ref.Policy([], 0), True)
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    except OSError as exc:
        pytest.skip(f"AF_NETLINK unavailable: {exc}")
    with sock:
        sock.connect((0, 0))
    assert hooks.calls == []


# ------------------------------------------------------------------ sendto/sendmsg


def test_sendto(hooks: Recorder) -> None:
    with udp_receiver() as receiver, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        dest = ("127.0.0.1", port_of(receiver))
        ref.activate(loopback_policy(), True)
        sender.sendto(b"one", dest)
        assert_receives(receiver, b"one")
        sender.sendto(b"two", 0, dest)
        assert_receives(receiver, b"two")
        ref.activate(nothing_policy(), True)
        with pytest.raises(Denied):
            sender.sendto(b"three", dest)
        with pytest.raises(Denied):
            sender.sendto(b"four", 0, dest)
        assert_nothing_received(receiver)
        with pytest.raises(TypeError):  # the original's error for a bad call
            sender.sendto(b"five")  # type: ignore[call-overload]
    assert hooks.calls == [("sendto", AF_INET, *dest)] * 2


def test_sendto_ipv6_warn(hooks: Recorder) -> None:
    hooks.raising = False
    with udp_receiver("::1") as receiver, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        port = port_of(receiver)
        ref.activate(nothing_policy(), False)
        s.sendto(b"hello", ("::1", port))
        assert_receives(receiver, b"hello")
    assert hooks.calls == [("sendto", AF_INET6, "::1", port)]


def test_sendmsg(hooks: Recorder) -> None:
    with udp_receiver() as receiver, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        dest = ("127.0.0.1", port_of(receiver))
        ref.activate(loopback_policy(), True)
        sender.sendmsg([b"one"], [], 0, dest)
        assert_receives(receiver, b"one")
        ref.activate(nothing_policy(), True)
        with pytest.raises(Denied):
            sender.sendmsg([b"two"], [], 0, dest)
        assert_nothing_received(receiver)
        assert hooks.calls == [("sendmsg", AF_INET, *dest)]
        # Without an address there is nothing to judge.
        ref.activate(loopback_policy(), True)
        sender.connect(dest)
        ref.activate(nothing_policy(), True)
        sender.sendmsg([b"three"])
        assert_receives(receiver, b"three")
        sender.sendmsg([b"four"], [], 0, None)
        assert_receives(receiver, b"four")
        sender.send(b"five")
        assert_receives(receiver, b"five")
    assert len(hooks.calls) == 1


# ---------------------------------------------------------------------- hostnames


def test_connect_by_name_resolves_once_and_passes_the_number(
    dns_hooks: tuple[Recorder, FakeDNS],
) -> None:
    # The fake resolver says localhost is 127.0.0.2, where the listener is; CPython would
    # resolve the name itself to 127.0.0.1 (refused), so a connection proves the original
    # call got the resolved number.
    recorder, fake = dns_hooks
    with tcp_listener("127.0.0.2") as listener, socket.socket() as client:
        port = port_of(listener)
        ref.activate(loopback_policy(), True)
        client.connect(("localhost", port))
        assert_accepts(listener)
    assert fake.calls == [
        ("getaddrinfo", ("localhost", port, AF_INET, int(socket.SOCK_STREAM), 0, 0))
    ]
    assert recorder.calls == []


def test_sendto_by_name(dns_hooks: tuple[Recorder, FakeDNS]) -> None:
    recorder, fake = dns_hooks
    with udp_receiver("127.0.0.2") as receiver, socket.socket(type=socket.SOCK_DGRAM) as s:
        port = port_of(receiver)
        ref.activate(loopback_policy(), True)
        s.sendto(b"hi", ("LOCALHOST.", port))
        assert_receives(receiver, b"hi")
        s.sendmsg([b"ho"], [], 0, (b"localhost", port))
        assert_receives(receiver, b"ho")
    assert fake.names() == ["getaddrinfo", "getaddrinfo"]
    assert recorder.calls == []


def test_connect_by_name_denied_by_dns_policy(dns_hooks: tuple[Recorder, FakeDNS]) -> None:
    recorder, fake = dns_hooks
    ref.activate(ref.Policy([ip("0.0.0.0/0")], 0), True)
    with tcp_listener("127.0.0.2") as listener, socket.socket() as client:
        port = port_of(listener)
        with pytest.raises(Denied):
            client.connect(("LocalHost.", port))
        assert_no_connection(listener)
    assert recorder.calls == [("connect", 0, "localhost", port)]  # the name as judged
    assert fake.calls == []  # denied before any lookup


def test_connect_by_name_warned_reports_once(dns_hooks: tuple[Recorder, FakeDNS]) -> None:
    recorder, fake = dns_hooks
    recorder.raising = False
    ref.activate(ref.Policy([], 0), False)  # neither the name nor the address is allowed
    with tcp_listener("127.0.0.2") as listener, socket.socket() as client:
        port = port_of(listener)
        client.connect(("localhost", port))
        assert_accepts(listener)
    assert recorder.calls == [("connect", 0, "localhost", port)]
    assert fake.names() == ["getaddrinfo"]


def test_connect_by_name_address_denied(dns_hooks: tuple[Recorder, FakeDNS]) -> None:
    recorder, _ = dns_hooks
    ref.activate(ref.Policy([], ref.DNS_LOCALHOST), True)  # a small test: lookup only
    with tcp_listener("127.0.0.2") as listener, socket.socket() as client:
        port = port_of(listener)
        with pytest.raises(Denied):
            client.connect(("localhost", port))
        assert_no_connection(listener)
    assert recorder.calls == [("connect", AF_INET, "127.0.0.2", port)]


def test_connect_by_name_allowed_by_host_rule_and_learned(
    dns_hooks: tuple[Recorder, FakeDNS],
) -> None:
    recorder, _ = dns_hooks
    with tcp_listener("127.0.0.2") as listener, tcp_listener("127.0.0.2") as other:
        port, other_port = port_of(listener), port_of(other)
        policy = ref.Policy([host("localhost", port)], 0)
        ref.activate(policy, True)
        with socket.socket() as client:
            client.connect(("localhost", port))
            assert_accepts(listener)
        # The host rule's port does not cover other_port: judged as the address.
        with socket.socket() as client, pytest.raises(Denied):
            client.connect(("localhost", other_port))
        assert_no_connection(other)
        # The lookup taught 127.0.0.2 on the rule's ports.
        with socket.socket() as client:
            client.connect(("127.0.0.2", port))
            assert_accepts(listener)
        with socket.socket() as client, pytest.raises(Denied):
            client.connect(("127.0.0.2", other_port))
        assert_no_connection(other)
        assert not policy.allows("127.0.0.2", port)  # allows() ignores learned addresses
    assert recorder.calls == [
        ("connect", AF_INET, "127.0.0.2", other_port),
        ("connect", AF_INET, "127.0.0.2", other_port),
    ]


# ---------------------------------------------------------------------- DNS hooks


def test_getaddrinfo_denied(dns_hooks: tuple[Recorder, FakeDNS]) -> None:
    recorder, fake = dns_hooks
    ref.activate(ref.Policy([ip("127.0.0.0/8"), host("*.example.com")]), True)
    calls: list[Callable[[], object]] = [
        lambda: socket.getaddrinfo("example.com", 443),
        lambda: socket.getaddrinfo("Example.COM", "443", socket.AF_INET),
        lambda: socket.getaddrinfo("example.com", "https"),
        lambda: socket.getaddrinfo("example.com", None),
        lambda: _socket.getaddrinfo(host="example.com", port=b"80"),
        lambda: socket.getaddrinfo(b"example.com", 0),
        lambda: socket.getaddrinfo("[::1]", 80),  # brackets make it a name
        lambda: socket.getaddrinfo("evil.test\0.example.com", 80),  # the C string ends at NUL
    ]
    for call in calls:
        with pytest.raises(Denied):
            call()
    assert fake.calls == []
    assert recorder.calls == [
        ("getaddrinfo", 0, "example.com", 443),
        ("getaddrinfo", 0, "example.com", 443),
        ("getaddrinfo", 0, "example.com", None),
        ("getaddrinfo", 0, "example.com", None),
        ("getaddrinfo", 0, "example.com", 80),
        ("getaddrinfo", 0, "example.com", 0),
        ("getaddrinfo", 0, "[::1]", 80),
        ("getaddrinfo", 0, "evil.test", 80),
    ]


def test_getaddrinfo_not_a_lookup(dns_hooks: tuple[Recorder, FakeDNS]) -> None:
    recorder, fake = dns_hooks
    ref.activate(ref.Policy([], 0), True)
    for host_arg in (None, "", "127.0.0.1", "127.1", "::1", "fe80::1%lo", b"10.0.0.1"):
        socket.getaddrinfo(host_arg, 80)
    socket.getaddrinfo("example.com", 80, flags=socket.AI_NUMERICHOST)
    assert len(fake.calls) == 8
    assert recorder.calls == []


def test_getaddrinfo_allowed(dns_hooks: tuple[Recorder, FakeDNS]) -> None:
    recorder, fake = dns_hooks
    ref.activate(ref.Policy([host("*.example.com")], ref.DNS_LOCALHOST), True)
    socket.getaddrinfo("localhost", 80)
    socket.getaddrinfo("api.example.com", 443)
    _socket.getaddrinfo("API.example.com.", 443, 0, 0, 0, 0)
    assert fake.names() == ["getaddrinfo"] * 3
    assert recorder.calls == []


def test_getaddrinfo_learns_only_from_host_rules(dns_hooks: tuple[Recorder, FakeDNS]) -> None:
    recorder, _ = dns_hooks
    with tcp_listener("127.0.0.2") as listener:
        port = port_of(listener)
        # DNS_LOCALHOST allows the lookup but teaches nothing.
        ref.activate(ref.Policy([], ref.DNS_LOCALHOST), True)
        socket.getaddrinfo("localhost", port)
        with socket.socket() as client, pytest.raises(Denied):
            client.connect(("127.0.0.2", port))
        # A host rule teaches the addresses, on the rule's ports.
        policy = ref.Policy([host("localhost", f"{port},1-2")], ref.DNS_LOCALHOST)
        ref.activate(policy, True)
        socket.getaddrinfo("localhost", None)
        with socket.socket() as client:
            client.connect(("127.0.0.2", port))
            assert_accepts(listener)
        # Learned addresses belong to the policy object, not to its bytes.
        ref.activate(ref.Policy.from_bytes(policy.to_bytes()), True)
        with socket.socket() as client, pytest.raises(Denied):
            client.connect(("127.0.0.2", port))
        assert_no_connection(listener)
    assert recorder.calls == [("connect", AF_INET, "127.0.0.2", port)] * 2


def test_gethostbyname(dns_hooks: tuple[Recorder, FakeDNS]) -> None:
    recorder, fake = dns_hooks
    ref.activate(loopback_policy(flags=ref.DNS_LOCALHOST), True)
    for module in (socket, _socket):
        for name in ("gethostbyname", "gethostbyname_ex"):
            function = getattr(module, name)
            with pytest.raises(Denied):
                function("example.com")
            function("localhost")
            function("127.1")  # numeric: not a lookup
            function("")
            function("<broadcast>")
    assert [c[0] for c in recorder.calls] == ["gethostbyname", "gethostbyname_ex"] * 2
    assert {c[1:] for c in recorder.calls} == {(0, "example.com", None)}
    assert len(fake.calls) == 16


def test_gethostbyname_learns(dns_hooks: tuple[Recorder, FakeDNS]) -> None:
    recorder, _ = dns_hooks
    with tcp_listener("127.0.0.2") as listener:
        port = port_of(listener)
        ref.activate(ref.Policy([host("svc.test", port)], 0), True)
        assert socket.gethostbyname("svc.test") == "127.0.0.2"
        with socket.socket() as client:
            client.connect(("127.0.0.2", port))
            assert_accepts(listener)
        ref.activate(ref.Policy([host("svc2.test", port)], 0), True)
        socket.gethostbyname_ex("svc2.test")
        with socket.socket() as client:
            client.connect(("127.0.0.2", port))
            assert_accepts(listener)
    assert recorder.calls == []


def test_gethostbyaddr(dns_hooks: tuple[Recorder, FakeDNS]) -> None:
    recorder, fake = dns_hooks
    ref.activate(ref.Policy([ip("0.0.0.0/0")], ref.DNS_LOCALHOST), True)
    for module in (socket, _socket):
        for allowed in (
            "127.0.0.1",
            "127.1",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "",
            "localhost",
        ):
            module.gethostbyaddr(allowed)
        for denied in ("192.0.2.1", "2001:db8::1", "<broadcast>", "example.com"):
            with pytest.raises(Denied):
                module.gethostbyaddr(denied)
    assert len(fake.calls) == 14
    assert (
        recorder.calls
        == [
            ("gethostbyaddr", 0, "192.0.2.1", None),
            ("gethostbyaddr", 0, "2001:db8::1", None),
            ("gethostbyaddr", 0, "255.255.255.255", None),
            ("gethostbyaddr", 0, "example.com", None),
        ]
        * 2
    )


def test_getnameinfo(dns_hooks: tuple[Recorder, FakeDNS]) -> None:
    recorder, fake = dns_hooks
    ref.activate(ref.Policy([ip("0.0.0.0/0")], ref.DNS_LOCALHOST), True)
    for module in (socket, _socket):
        module.getnameinfo(("127.0.0.1", 80), 0)
        module.getnameinfo(("::1", 80, 0, 0), 0)
        module.getnameinfo(("192.0.2.1", 80), socket.NI_NUMERICHOST)
        with pytest.raises(Denied):
            module.getnameinfo(("192.0.2.1", 80), 0)
        with pytest.raises(Denied):
            module.getnameinfo(("2001:db8::1", 80, 0, 0), socket.NI_NAMEREQD)
    assert len(fake.calls) == 6
    assert (
        recorder.calls
        == [
            ("getnameinfo", 0, "192.0.2.1", None),
            ("getnameinfo", 0, "2001:db8::1", None),
        ]
        * 2
    )


def test_real_dns_functions_denied() -> None:
    # The real C functions, wrapped: denied calls raise before any query.
    recorder = Recorder()
    ref.install(recorder)
    try:
        ref.activate(ref.Policy([], 0), True)
        with pytest.raises(Denied):
            socket.getaddrinfo("example.com", 80)
        with pytest.raises(Denied):
            socket.gethostbyname("example.com")
        with pytest.raises(Denied):
            socket.gethostbyaddr("192.0.2.1")
        with pytest.raises(Denied):
            socket.getnameinfo(("192.0.2.1", 80), 0)
        assert socket.getaddrinfo("127.0.0.1", 80, socket.AF_INET, socket.SOCK_STREAM) == [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))
        ]
        assert socket.gethostbyname("127.1") == "127.0.0.1"
        flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        with backstop.numeric_getnameinfo():
            assert socket.getnameinfo(("192.0.2.1", 80), flags) == ("192.0.2.1", "80")
    finally:
        ref.activate(None, False)
        ref.uninstall()
    assert len(recorder.calls) == 4


# ------------------------------------------------------------------------ AF_UNIX


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # sun_path holds 108 bytes: pytest's tmp_path can be too long.
    with tempfile.TemporaryDirectory(prefix="ng") as name:
        yield Path(name)


def test_unix_stream(hooks: Recorder, short_tmp: Path) -> None:
    path = str(short_tmp / "app.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(4)
        listener.settimeout(TIMEOUT)
        ref.activate(ref.Policy([unix(str(short_tmp) + "/*")]), True)
        addresses: tuple[Any, ...] = (path, os.fsencode(path), bytearray(os.fsencode(path)))
        for address in addresses:
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(address)
                assert_accepts(listener)
        ref.activate(ref.Policy([unix("/elsewhere/*")]), True)
        for address in (path, os.fsencode(path), memoryview(os.fsencode(path))[:]):
            with socket.socket(socket.AF_UNIX) as client, pytest.raises(Denied):
                client.connect(address)
        assert_no_connection(listener)
    assert hooks.calls == [("connect", AF_UNIX, path, None)] * 3


def test_unix_abstract(hooks: Recorder) -> None:
    name = f"netguard-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind("\0" + name)
        listener.listen(4)
        listener.settimeout(TIMEOUT)
        ref.activate(ref.Policy([unix("@netguard-test-*")]), True)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(b"\0" + name.encode())
            assert_accepts(listener)
        ref.activate(ref.Policy([unix("/*")]), True)
        with socket.socket(socket.AF_UNIX) as client, pytest.raises(Denied):
            client.connect("\0" + name)
        assert_no_connection(listener)
    assert hooks.calls == [("connect", AF_UNIX, "@" + name, None)]


def test_unix_datagram(hooks: Recorder, short_tmp: Path) -> None:
    path = str(short_tmp / "dgram.sock")
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender,
    ):
        receiver.bind(path)
        receiver.settimeout(TIMEOUT)
        ref.activate(ref.Policy([unix("*")]), True)
        sender.sendto(b"one", path)
        assert_receives(receiver, b"one")
        ref.activate(nothing_policy(), True)  # small: no AF_UNIX either
        with pytest.raises(Denied):
            sender.sendto(b"two", path)
        with pytest.raises(Denied):
            sender.sendmsg([b"three"], [], 0, path)
        assert_nothing_received(receiver)
    assert hooks.calls == [("sendto", AF_UNIX, path, None), ("sendmsg", AF_UNIX, path, None)]


def test_unix_socketpair_is_not_judged(hooks: Recorder) -> None:
    ref.activate(nothing_policy(), True)
    a, b = socket.socketpair()
    with a, b:
        a.sendmsg([b"x"])
        assert b.recv(1) == b"x"
    assert hooks.calls == []


# ----------------------------------------------------------------------- threads


def test_hooks_are_thread_safe(hooks: Recorder) -> None:
    allow, deny = loopback_policy(), nothing_policy()
    stop = threading.Event()
    errors: list[BaseException] = []
    outcomes: list[str] = []

    def worker() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not stop.is_set():
                try:
                    sock.connect(("127.0.0.1", 9))  # a UDP connect sends nothing
                    outcomes.append("ok")
                except Denied:
                    outcomes.append("denied")
                except BaseException as exc:
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 0.5
    try:
        i = 0
        while time.monotonic() < deadline:
            ref.activate((allow, deny, None)[i % 3], i % 2 == 0)
            i += 1
            time.sleep(0.0005)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert outcomes.count("denied") == len(hooks.calls) > 0
    assert outcomes.count("ok") > 0
    assert set(hooks.calls) == {("connect", AF_INET, "127.0.0.1", 9)}
    assert threading.get_ident() not in hooks.threads  # called on the calling thread


def test_learning_is_thread_safe() -> None:
    policy = ref.Policy([host("a.test", 1), host("*.test", 2)], 0)
    ips = [ref._IP(AF_INET, bytes([10, 0, 0, i])) for i in range(50)]
    rules = policy._host_rules("a.test")

    def learn() -> None:
        for _ in range(20):
            policy._learn(ips, rules)

    threads = [threading.Thread(target=learn) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert policy._learned == {i.judged(): ((1, 2),) for i in ips}
