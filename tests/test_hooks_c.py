"""The C core's hooks, with real sockets: every entry point, allowed and denied.

Each test installs the C hooks (``netguard._netguard.install``) with a recording callback
through the ``hooks`` fixture, which always deactivates and uninstalls them afterwards and
checks that ``socket.socket`` and the ``socket``/``_socket`` modules are exactly as before.
The callback raises :class:`Denied` (strict) or returns (warn); tests assert the exact
``(op, family, host, port)`` it receives (docs/internals.md, "The deny callback").

Packets go to loopback only (listeners on 127.0.0.1, ::1, AF_UNIX in tmp_path, abstract
AF_UNIX). Outside destinations (192.0.2.0/24, 2001:db8::/32) appear in-process only where
they are denied, so the callback raises before anything is sent; a call that must really
go out (warn mode, or an allow rule) runs inside ``netns.run_isolated``, where it fails
in the kernel with ENETUNREACH, which proves it got that far.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import json
import os
import socket
import ssl
import sys
import textwrap
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import backstop
import netguard
from netguard import _impl
from netguard import _netguard as ng
from netguard.rules import parse_rule
from netns import run_isolated

C = _impl.load("c")
AF_INET, AF_INET6 = int(socket.AF_INET), int(socket.AF_INET6)
AF_UNIX = int(socket.AF_UNIX)
OUTSIDE = ("192.0.2.1", 443)  # TEST-NET-1: denied in-process, or used in a namespace
OUTSIDE6 = ("2001:db8::1", 443)
TESTS = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(os.path.abspath(netguard.__file__)))

# Captured at import, before any test installs the hooks: the audit backstop's cases.
EARLY_GETHOSTBYNAME = _socket.gethostbyname
EARLY_GETADDRINFO = _socket.getaddrinfo
EARLY_DNS = {
    name: getattr(_socket, name)
    for name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo")
}


class EarlySocket(socket.socket):
    """A subclass defined before the hooks are installed."""


class EarlyOverride(socket.socket):
    """A subclass that overrides connect and calls up, defined before install."""

    def connect(self, address: Any) -> None:
        super().connect(address)


class Denied(Exception):
    """What the recording callback raises in strict mode."""


def rules(*texts: str) -> list[Any]:
    return [parse_rule(t, source="test_hooks_c") for t in texts]


def module_state() -> dict[str, list[tuple[str, object]]]:
    """Everything install() touches, as ordered (name, value) lists (values by identity)."""
    return {
        "socket.socket": list(socket.socket.__dict__.items()),
        "socket": list(vars(socket).items()),
        "_socket": list(vars(_socket).items()),
    }


def same_state(
    a: dict[str, list[tuple[str, object]]], b: dict[str, list[tuple[str, object]]]
) -> None:
    for key in a:
        names_a = [n for n, _ in a[key]]
        names_b = [n for n, _ in b[key]]
        assert names_a == names_b, f"{key}: attributes differ"
        for (name, va), (_, vb) in zip(a[key], b[key], strict=True):
            assert va is vb, f"{key}.{name} was not restored"


class Hooks:
    """The C hooks with a recording callback."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str, int | None]] = []
        self.warn = False

    def callback(self, op: str, family: int, host: str, port: int | None) -> None:
        self.calls.append((op, family, host, port))
        if not self.warn:
            raise Denied(op, family, host, port)

    def install(self) -> None:
        ng.install(self.callback)

    def activate(
        self,
        *texts: str,
        strict: bool = False,
        warn: bool = False,
        allow_all: bool = False,
        dns_localhost: bool = True,
    ) -> Any:
        policy = C.compile(rules(*texts), allow_all=allow_all, dns_localhost=dns_localhost)
        self.warn = warn
        ng.activate(policy, strict)
        return policy


@pytest.fixture
def lazy_hooks() -> Iterator[Hooks]:
    """Hooks not yet installed (call .install()); always removed at the end."""
    assert not ng.is_installed(), "the C hooks were left installed by an earlier test"
    before = module_state()
    hooks = Hooks()
    try:
        yield hooks
    finally:
        ng.activate(None, False)
        ng.uninstall()
    assert not ng.is_installed()
    assert ng.active() is None
    same_state(before, module_state())


@pytest.fixture
def hooks(lazy_hooks: Hooks) -> Hooks:
    """The C hooks, installed; no policy active yet."""
    lazy_hooks.install()
    return lazy_hooks


def wait_for(predicate: Callable[[], bool], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def udp_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- connect


def test_connect_tcp_allowed(hooks: Hooks, loopback_tcp_server: Any) -> None:
    hooks.activate("127.0.0.0/8")
    with socket.socket() as s:
        s.settimeout(5)
        s.connect(loopback_tcp_server.address)
        s.sendall(b"allowed")
    assert wait_for(lambda: loopback_tcp_server.received == [b"allowed"])
    assert hooks.calls == []


def test_connect_tcp_denied(hooks: Hooks, loopback_tcp_server: Any) -> None:
    hooks.activate("10.0.0.0/8")
    host, port = loopback_tcp_server.address
    with socket.socket() as s, pytest.raises(Denied):
        s.connect((host, port))
    assert hooks.calls == [("connect", AF_INET, "127.0.0.1", port)]
    time.sleep(0.2)
    assert loopback_tcp_server.accepted == 0


def test_connect_tcp6(hooks: Hooks, loopback_tcp6: tuple[str, int]) -> None:
    host, port = loopback_tcp6
    hooks.activate(f"[::1]:{port}")
    with socket.socket(socket.AF_INET6) as s:
        s.settimeout(5)
        s.connect((host, port))
        s.connect_ex((host, port))  # already connected: an errno, no callback
    assert hooks.calls == []
    hooks.activate(f"[::1]:{port + 1 if port < 65535 else port - 1}")
    with socket.socket(socket.AF_INET6) as s, pytest.raises(Denied):
        s.connect((host, port, 0, 0))
    assert hooks.calls == [("connect", AF_INET6, "::1", port)]


def test_connect_outside_denied(hooks: Hooks) -> None:
    hooks.activate("127.0.0.0/8", "[::1]")
    with socket.socket() as s, pytest.raises(Denied):
        s.connect(OUTSIDE)
    with socket.socket(socket.AF_INET6) as s, pytest.raises(Denied):
        s.connect(OUTSIDE6)
    assert hooks.calls == [
        ("connect", AF_INET, "192.0.2.1", 443),
        ("connect", AF_INET6, "2001:db8::1", 443),
    ]


def test_connect_ex(hooks: Hooks, loopback_tcp_server: Any) -> None:
    host, port = loopback_tcp_server.address
    hooks.activate(f"127.0.0.1:{port}")
    with socket.socket() as s:
        s.settimeout(5)
        assert s.connect_ex((host, port)) == 0
    hooks.activate()
    with socket.socket() as s, pytest.raises(Denied):
        s.connect_ex((host, port))
    assert hooks.calls == [("connect_ex", AF_INET, "127.0.0.1", port)]


# --------------------------------------------------------------------------- sendto, sendmsg


@pytest.mark.parametrize("with_flags", [False, True], ids=["sendto2", "sendto3"])
def test_sendto(hooks: Hooks, loopback_udp: socket.socket, with_flags: bool) -> None:
    port = udp_port(loopback_udp)
    dest = ("127.0.0.1", port)

    def send(s: socket.socket, data: bytes) -> int:
        return s.sendto(data, 0, dest) if with_flags else s.sendto(data, dest)

    hooks.activate("127.0.0.0/8")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        assert send(s, b"one") == 3
        assert loopback_udp.recv(16) == b"one"
        hooks.activate("10.0.0.0/8")
        with pytest.raises(Denied):
            send(s, b"two")
        hooks.activate("127.0.0.0/8")
        send(s, b"three")
    assert loopback_udp.recv(16) == b"three"  # "two" never left
    assert hooks.calls == [("sendto", AF_INET, "127.0.0.1", port)]


def test_sendmsg_with_address(hooks: Hooks, loopback_udp: socket.socket) -> None:
    port = udp_port(loopback_udp)
    hooks.activate("127.0.0.0/8")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        assert s.sendmsg([b"a", b"b"], [], 0, ("127.0.0.1", port)) == 2
        assert loopback_udp.recv(16) == b"ab"
        hooks.activate()
        with pytest.raises(Denied):
            s.sendmsg([b"x"], [], 0, ("127.0.0.1", port))
    assert hooks.calls == [("sendmsg", AF_INET, "127.0.0.1", port)]


def test_sendmsg_without_address_is_not_judged(hooks: Hooks, loopback_udp: socket.socket) -> None:
    """A connected socket's sendmsg/send names no destination: nothing to judge."""
    port = udp_port(loopback_udp)
    hooks.activate("127.0.0.0/8")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        hooks.activate()
        s.sendmsg([b"m"])
        s.sendmsg([b"n"], [], 0, None)
        s.send(b"o")
    assert [loopback_udp.recv(16) for _ in range(3)] == [b"m", b"n", b"o"]
    assert hooks.calls == []


# --------------------------------------------------------------------------- DNS


def test_getaddrinfo(hooks: Hooks) -> None:
    hooks.activate()  # DNS_LOCALHOST only
    assert socket.getaddrinfo("localhost", 80, socket.AF_INET)[0][4] == ("127.0.0.1", 80)
    hooks.activate(dns_localhost=False)
    with pytest.raises(Denied):
        socket.getaddrinfo("localhost", 80)
    with pytest.raises(Denied):
        _socket.getaddrinfo("localhost", "8080")
    with pytest.raises(Denied):
        socket.getaddrinfo("localhost", "http")
    with pytest.raises(Denied):
        socket.getaddrinfo("localhost", None)
    with pytest.raises(Denied):
        _socket.getaddrinfo(host="localhost", port=443)
    assert hooks.calls == [
        ("getaddrinfo", 0, "localhost", 80),
        ("getaddrinfo", 0, "localhost", 8080),
        ("getaddrinfo", 0, "localhost", None),
        ("getaddrinfo", 0, "localhost", None),
        ("getaddrinfo", 0, "localhost", 443),
    ]


def test_getaddrinfo_of_a_number_is_not_a_lookup(hooks: Hooks) -> None:
    hooks.activate(dns_localhost=False)
    assert socket.getaddrinfo("127.0.0.1", 80, socket.AF_INET)[0][4] == ("127.0.0.1", 80)
    assert socket.getaddrinfo("::1", 80, socket.AF_INET6)[0][4][:2] == ("::1", 80)
    assert socket.getaddrinfo(None, 80, socket.AF_INET)
    assert socket.getaddrinfo(b"127.0.0.1", 80, socket.AF_INET)
    assert hooks.calls == []


def test_getaddrinfo_numerichost_is_not_a_lookup(hooks: Hooks) -> None:
    hooks.activate(dns_localhost=False)
    flags = socket.AI_NUMERICHOST
    expected = _error_of(lambda: EARLY_GETADDRINFO("localhost", 80, 0, 0, 0, flags))
    assert expected is socket.gaierror  # the C library refuses: no lookup happens
    assert _error_of(lambda: socket.getaddrinfo("localhost", 80, flags=flags)) is expected
    assert socket.getaddrinfo("127.0.0.1", 80, flags=flags)
    assert hooks.calls == []


def test_getaddrinfo_name_is_cut_at_nul(hooks: Hooks) -> None:
    """The resolver reads the name up to a NUL: that is the name judged and reported."""
    hooks.activate()
    assert socket.getaddrinfo("localhost\0.evil.example", 80, socket.AF_INET)
    hooks.activate(dns_localhost=False)
    with pytest.raises(Denied):
        socket.getaddrinfo("localhost\0.evil.example", 80)
    assert hooks.calls == [("getaddrinfo", 0, "localhost", 80)]


def test_denied_names_are_reported_normalised(hooks: Hooks) -> None:
    """docs/internals.md: the callback gets the name lower-cased, IDNA, no trailing dot."""
    hooks.activate(dns_localhost=False)
    with pytest.raises(Denied):
        socket.gethostbyname("LocalHost.")
    with pytest.raises(Denied):
        socket.getaddrinfo(b"LOCALHOST", 80)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(Denied):
        s.connect(("LocalHost", 9))
    assert hooks.calls == [
        ("gethostbyname", 0, "localhost", None),
        ("getaddrinfo", 0, "localhost", 80),
        ("connect", 0, "localhost", 9),
    ]


def test_gethostbyname(hooks: Hooks) -> None:
    hooks.activate()
    assert socket.gethostbyname("localhost") == "127.0.0.1"
    assert socket.gethostbyname("127.1") == "127.0.0.1"  # a number: not a lookup
    assert socket.gethostbyname_ex("localhost")[2] == ["127.0.0.1"]
    assert hooks.calls == []
    hooks.activate(dns_localhost=False)
    assert _socket.gethostbyname("127.0.0.1") == "127.0.0.1"
    with pytest.raises(Denied):
        socket.gethostbyname("localhost")
    with pytest.raises(Denied):
        _socket.gethostbyname("localhost")
    with pytest.raises(Denied):
        socket.gethostbyname_ex("localhost")
    with pytest.raises(Denied):
        _socket.gethostbyname_ex("localhost")
    assert hooks.calls == [
        ("gethostbyname", 0, "localhost", None),
        ("gethostbyname", 0, "localhost", None),
        ("gethostbyname_ex", 0, "localhost", None),
        ("gethostbyname_ex", 0, "localhost", None),
    ]


def test_gethostbyaddr(hooks: Hooks) -> None:
    hooks.activate(dns_localhost=False)
    assert "127.0.0.1" in socket.gethostbyaddr("127.0.0.1")[2]  # loopback: always allowed
    with pytest.raises(Denied):
        socket.gethostbyaddr(OUTSIDE[0])
    with pytest.raises(Denied):
        _socket.gethostbyaddr("2001:db8::1")
    assert hooks.calls == [
        ("gethostbyaddr", 0, "192.0.2.1", None),
        ("gethostbyaddr", 0, "2001:db8::1", None),
    ]


def test_getnameinfo(hooks: Hooks) -> None:
    hooks.activate(dns_localhost=False)
    assert socket.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICSERV)[1] == "80"
    numeric = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    with backstop.numeric_getnameinfo():
        assert socket.getnameinfo(OUTSIDE, numeric) == ("192.0.2.1", "443")  # no lookup
    with pytest.raises(Denied):
        socket.getnameinfo(OUTSIDE, socket.NI_NUMERICSERV)
    with pytest.raises(Denied):
        _socket.getnameinfo((OUTSIDE6[0], 443, 0, 0), 0)
    assert hooks.calls == [
        ("getnameinfo", 0, "192.0.2.1", None),
        ("getnameinfo", 0, "2001:db8::1", None),
    ]


def test_dns_functions_are_replaced_in_both_modules(hooks: Hooks) -> None:
    for name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
        assert getattr(socket, name) is getattr(_socket, name)
        assert getattr(_socket, name) is not EARLY_DNS[name]
        assert type(getattr(_socket, name)).__name__ == "builtin_function_or_method"
    assert _socket.getaddrinfo is not EARLY_GETADDRINFO
    assert type(socket.socket.__dict__["connect"]).__name__ == "method_descriptor"


# --------------------------------------------------------------------------- warn mode


def test_warn_lets_a_tcp_connect_through(hooks: Hooks, loopback_tcp_server: Any) -> None:
    host, port = loopback_tcp_server.address
    hooks.activate(warn=True)
    with socket.socket() as s:
        s.settimeout(5)
        s.connect((host, port))
        s.sendall(b"warned")
    assert wait_for(lambda: loopback_tcp_server.received == [b"warned"])
    assert hooks.calls == [("connect", AF_INET, "127.0.0.1", port)]


def test_warn_lets_sendto_and_lookups_through(hooks: Hooks, loopback_udp: socket.socket) -> None:
    port = udp_port(loopback_udp)
    hooks.activate(warn=True, dns_localhost=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"w1", ("127.0.0.1", port))
        s.sendmsg([b"w2"], [], 0, ("127.0.0.1", port))
    assert [loopback_udp.recv(16) for _ in range(2)] == [b"w1", b"w2"]
    assert socket.gethostbyname("localhost") == "127.0.0.1"
    assert socket.getaddrinfo("localhost", port, socket.AF_INET)[0][4] == ("127.0.0.1", port)
    assert hooks.calls == [
        ("sendto", AF_INET, "127.0.0.1", port),
        ("sendmsg", AF_INET, "127.0.0.1", port),
        ("gethostbyname", 0, "localhost", None),
        ("getaddrinfo", 0, "localhost", port),
    ]


def test_warn_reports_a_denied_hostname_once(hooks: Hooks, loopback_udp: socket.socket) -> None:
    """docs/internals.md: the callback is called once per denied operation. A name the
    DNS policy denies is reported (family 0); the call then proceeds, and its resolved
    address is not reported a second time."""
    port = udp_port(loopback_udp)
    hooks.activate(warn=True, dns_localhost=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"once", ("localhost", port))
    assert loopback_udp.recv(16) == b"once"
    assert hooks.calls == [("sendto", 0, "localhost", port)]


# --------------------------------------------------------------------------- host forms


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        (b"127.0.0.1", "127.0.0.1"),
        (bytearray(b"127.0.0.1"), "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),  # this host
        ("", "0.0.0.0"),  # INADDR_ANY: this host
    ],
    ids=repr,
)
def test_ipv4_host_forms(
    hooks: Hooks, loopback_udp: socket.socket, host: str | bytes, shown: str
) -> None:
    port = udp_port(loopback_udp)
    hooks.activate("127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"form", (host, port))
        assert loopback_udp.recv(16) == b"form"
        hooks.activate("10.0.0.0/8")
        with pytest.raises(Denied):
            s.sendto(b"no", (host, port))
        with pytest.raises(Denied):
            s.connect((host, port))
    assert hooks.calls == [("sendto", AF_INET, shown, port), ("connect", AF_INET, shown, port)]


def test_localhost_is_resolved_by_the_hook(hooks: Hooks, loopback_udp: socket.socket) -> None:
    port = udp_port(loopback_udp)
    hooks.activate("127.0.0.0/8")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"named", ("localhost", port))
        assert loopback_udp.recv(16) == b"named"
        s.connect(("LOCALHOST", port))
        hooks.activate("10.0.0.0/8")  # the name may be looked up; its address is denied
        with pytest.raises(Denied):
            s.sendto(b"no", ("localhost", port))
        hooks.activate("127.0.0.0/8", dns_localhost=False)  # the lookup itself is denied
        with pytest.raises(Denied):
            s.connect(("localhost", port))
    assert hooks.calls == [
        ("sendto", AF_INET, "127.0.0.1", port),
        ("connect", 0, "localhost", port),
    ]


def test_v4_mapped_on_an_ipv6_socket(hooks: Hooks, loopback_udp: socket.socket) -> None:
    port = udp_port(loopback_udp)
    hooks.activate("127.0.0.0/8")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.sendto(b"mapped", ("::ffff:127.0.0.1", port))
        assert loopback_udp.recv(16) == b"mapped"
        hooks.activate("[::1]")
        with pytest.raises(Denied):
            s.sendto(b"no", ("::ffff:127.0.0.1", port, 0, 0))
    assert hooks.calls == [("sendto", AF_INET6, "::ffff:127.0.0.1", port)]


def test_unspecified_ipv6_is_this_host(hooks: Hooks) -> None:
    """docs/internals.md: '::' (and '' on an AF_INET6 socket) is judged as ::1."""
    hooks.activate("[::1]")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.connect(("::", 9))
        s.connect(("", 9))  # in6addr_any
        assert hooks.calls == []
        hooks.activate("127.0.0.0/8")
        with pytest.raises(Denied):
            s.connect(("::", 9))
        with pytest.raises(Denied):
            s.connect(("", 9))
    assert hooks.calls == [("connect", AF_INET6, "::", 9)] * 2


def test_scope_id_is_ignored(hooks: Hooks, loopback_udp6: socket.socket) -> None:
    port = udp_port(loopback_udp6)
    hooks.activate("[::1]")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.sendto(b"scoped", ("::1", port, 0, 1))
    assert loopback_udp6.recv(16) == b"scoped"
    assert hooks.calls == []


# --------------------------------------------------------------------------- invalid input


def _error_of(fn: Callable[[], object]) -> type[BaseException] | None:
    try:
        fn()
    except Exception as exc:
        return type(exc)
    return None


BAD_INET = [
    ("127.0.0.1",),
    ("127.0.0.1", 80, 0),
    ("127.0.0.1", 80, 0, 0),
    ("127.0.0.1", 70000),
    ("127.0.0.1", -1),
    ("127.0.0.1", 2**70),
    ("127.0.0.1", 80.0),
    ("127.0.0.1", "80"),
    ("127.0.0.1", None),
    (1234, 80),
    (None, 80),
    (("127.0.0.1",), 80),
    ("127.0.0.1\0", 80),
    ("\udcff", 80),
    ("ü" * 70, 80),
    "127.0.0.1",
    b"127.0.0.1",
    None,
    5,
    [],
    ["127.0.0.1", 80],
]
BAD_INET6 = [
    ("::1",),
    ("::1", 80, 0, 0, 0),
    ("::1", 70000),
    ("::1", 80, -1),
    ("::1", 80, 2**20),  # flowinfo must be < 2**20
    ("::1", 80.5),
    "::1",
]
BAD_UNIX = [5, None, ("/tmp/x",), 1.5]


@pytest.mark.parametrize(
    ("family", "address"),
    [(socket.AF_INET, a) for a in BAD_INET]
    + [(socket.AF_INET6, a) for a in BAD_INET6]
    + [(socket.AF_UNIX, a) for a in BAD_UNIX],
    ids=repr,
)
def test_invalid_addresses_raise_what_cpython_raises(
    hooks: Hooks, family: socket.AddressFamily, address: Any
) -> None:
    """Whatever the hook cannot read goes to CPython unchanged: the same exception type,
    and no callback (even with everything denied)."""
    kind = socket.SOCK_DGRAM
    with socket.socket(family, kind) as plain:
        expected_connect = _error_of(lambda: _socket.socket.connect(plain, address))
        expected_sendto = _error_of(lambda: _socket.socket.sendto(plain, b"x", address))
    assert expected_connect is not None and expected_sendto is not None
    hooks.activate(dns_localhost=False)
    with socket.socket(family, kind) as s:
        assert _error_of(lambda: s.connect(address)) is expected_connect
        assert _error_of(lambda: s.connect_ex(address)) is expected_connect
        assert _error_of(lambda: s.sendto(b"x", address)) is expected_sendto
        assert _error_of(lambda: s.sendto(b"x", 0, address)) is expected_sendto
    assert hooks.calls == []


def test_wrong_arity_raises_what_cpython_raises(hooks: Hooks) -> None:
    hooks.activate()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for call, plain in (
            (lambda: s.connect(), lambda: _socket.socket.connect(s)),
            (lambda: s.sendto(b"x"), lambda: _socket.socket.sendto(s, b"x")),
            (
                lambda: s.sendto(b"x", 0, OUTSIDE, 1),
                lambda: _socket.socket.sendto(s, b"x", 0, OUTSIDE, 1),
            ),
            (
                lambda: s.connect(address=OUTSIDE),
                lambda: _socket.socket.connect(s, address=OUTSIDE),
            ),
            (lambda: s.sendmsg(), lambda: _socket.socket.sendmsg(s)),
        ):
            expected = _error_of(plain)
            assert expected is not None
            assert _error_of(call) is expected
    assert hooks.calls == []


def test_the_original_gets_the_judged_values(hooks: Hooks) -> None:
    """A bytearray host and an __index__ port are read again by CPython after the hook
    judged them; they must reach the original as the values judged (no way to change
    the destination between the check and the call)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as good,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bad,
    ):
        good.bind(("127.0.0.1", 0))
        bad.bind(("127.0.0.2", 0))
        good_port, bad_port = udp_port(good), udp_port(bad)
        host = bytearray(b"127.0.0.1")

        class ShiftyPort:
            calls = 0

            def __index__(self) -> int:
                ShiftyPort.calls += 1
                if ShiftyPort.calls == 1:
                    return good_port
                host[:] = b"127.0.0.2"
                return bad_port

        hooks.activate(f"127.0.0.1:{good_port}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"judged", (host, ShiftyPort()))
        bad.settimeout(0.2)
        with pytest.raises(TimeoutError):
            bad.recv(16)
        good.settimeout(5)
        assert good.recv(16) == b"judged"
    assert hooks.calls == []


def test_callers_tuple_is_not_modified(hooks: Hooks, loopback_udp: socket.socket) -> None:
    """A hostname resolved by the hook reaches the original call as a new tuple; the
    caller's argument tuple (here passed whole to a bound method) stays as it was."""
    port = udp_port(loopback_udp)
    hooks.activate("127.0.0.0/8")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        args = (b"t", ("localhost", port))
        s.sendto(*args)
        bound = s.sendto
        bound(*args)
        args3 = (b"u", 0, ("localhost", port))
        bound(*args3)
        msg_args = ([b"v"], [], 0, ("localhost", port))
        s.sendmsg(*msg_args)
    assert [loopback_udp.recv(16) for _ in range(4)] == [b"t", b"t", b"u", b"v"]
    assert args == (b"t", ("localhost", port))
    assert args3 == (b"u", 0, ("localhost", port))
    assert msg_args == ([b"v"], [], 0, ("localhost", port))


# --------------------------------------------------------------------------- coverage


def test_socket_created_before_install(lazy_hooks: Hooks) -> None:
    with socket.socket() as early:
        lazy_hooks.install()
        lazy_hooks.activate()
        with pytest.raises(Denied):
            early.connect(OUTSIDE)
    assert lazy_hooks.calls == [("connect", AF_INET, "192.0.2.1", 443)]


def test_subclasses_defined_before_install(hooks: Hooks) -> None:
    hooks.activate()
    with EarlySocket() as s, pytest.raises(Denied):
        s.connect(OUTSIDE)
    with EarlyOverride() as s, pytest.raises(Denied):
        s.connect(OUTSIDE)
    with EarlySocket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(Denied):
        s.sendto(b"x", OUTSIDE)
    assert [c[0] for c in hooks.calls] == ["connect", "connect", "sendto"]


def test_ssl_socket(hooks: Hooks) -> None:
    hooks.activate("127.0.0.0/8")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with context.wrap_socket(socket.socket(), server_hostname="x.example") as s:
        assert isinstance(s, socket.socket)
        with pytest.raises(Denied):
            s.connect(OUTSIDE)
    with context.wrap_socket(socket.socket(), server_hostname="x.example") as s:
        with pytest.raises(Denied):
            s.connect_ex(OUTSIDE)
    assert hooks.calls == [
        ("connect", AF_INET, "192.0.2.1", 443),
        ("connect_ex", AF_INET, "192.0.2.1", 443),
    ]


def test_create_connection(hooks: Hooks, loopback_tcp_server: Any) -> None:
    port = loopback_tcp_server.address[1]
    hooks.activate("127.0.0.0/8", "[::1]")
    with socket.create_connection(("localhost", port), timeout=5) as s:
        s.sendall(b"cc")
    assert wait_for(lambda: b"cc" in loopback_tcp_server.received)
    assert hooks.calls == []


def test_other_families_pass(hooks: Hooks) -> None:
    """AF_NETLINK is a kernel interface, not a network: never judged."""
    hooks.activate(dns_localhost=False)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as s:
        s.connect((0, 0))
        with contextlib.suppress(OSError):  # the kernel's answer to an empty message
            s.sendto(b"", (0, 0))
    assert hooks.calls == []


# --------------------------------------------------------------------------- AF_UNIX


@pytest.fixture
def unix_server(tmp_path: Any) -> Iterator[str]:
    path = str(tmp_path / "srv.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(8)
        yield path


def test_unix_path(hooks: Hooks, unix_server: str, tmp_path: Any) -> None:
    hooks.activate(f"unix:{tmp_path}/*.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(unix_server)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(os.fsencode(unix_server))
    assert hooks.calls == []
    hooks.activate("unix:/elsewhere/*")
    with socket.socket(socket.AF_UNIX) as s, pytest.raises(Denied):
        s.connect(unix_server)
    with socket.socket(socket.AF_UNIX) as s, pytest.raises(Denied):
        s.connect_ex(os.fsencode(unix_server))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, pytest.raises(Denied):
        s.sendto(b"x", unix_server)
    assert hooks.calls == [
        ("connect", AF_UNIX, unix_server, None),
        ("connect_ex", AF_UNIX, unix_server, None),
        ("sendto", AF_UNIX, unix_server, None),
    ]


def test_abstract_unix(hooks: Hooks) -> None:
    name = f"netguard-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind("\0" + name)
        server.listen(8)
        hooks.activate("unix:@netguard-test-*")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect("\0" + name)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(b"\0" + name.encode())
        assert hooks.calls == []
        hooks.activate("unix:/tmp/*")
        with socket.socket(socket.AF_UNIX) as s, pytest.raises(Denied):
            s.connect("\0" + name)
    assert hooks.calls == [("connect", AF_UNIX, "@" + name, None)]


def test_abstract_name_is_judged_whole(hooks: Hooks) -> None:
    """An abstract name is the whole address, NULs included (the kernel does not stop at
    a NUL there): a rule for @ng-abc must not open @ng-abc<NUL>anything."""
    name = f"ng-{uuid.uuid4().hex[:8]}"
    hooks.activate(f"unix:@{name}")
    with socket.socket(socket.AF_UNIX) as s, pytest.raises(Denied):
        s.connect(f"\0{name}\0other")
    assert len(hooks.calls) == 1
    op, family, host, port = hooks.calls[0]
    assert (op, family, port) == ("connect", AF_UNIX, None)
    assert host.startswith("@" + name) and host != "@" + name


# --------------------------------------------------------------------------- audit backstop


def test_backstop_raw_socket(hooks: Hooks, loopback_udp: socket.socket) -> None:
    port = udp_port(loopback_udp)
    raw = _socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        hooks.activate("10.0.0.0/8", strict=False)
        raw.connect(("127.0.0.1", port))  # not strict: the backstop is inert
        raw.sendto(b"r1", ("127.0.0.1", port))
        assert loopback_udp.recv(16) == b"r1"
        assert hooks.calls == []
        hooks.activate("10.0.0.0/8", strict=True)
        with pytest.raises(Denied):
            raw.connect(("127.0.0.1", port))
        with pytest.raises(Denied):
            raw.sendto(b"r2", ("127.0.0.1", port))
        with pytest.raises(Denied):
            raw.sendmsg([b"r3"], [], 0, ("127.0.0.1", port))
        hooks.activate("127.0.0.0/8", strict=True)
        raw.sendto(b"r4", ("127.0.0.1", port))  # allowed by the policy: passes
        assert loopback_udp.recv(16) == b"r4"
        ng.activate(None, False)
        raw.sendto(b"r5", ("127.0.0.1", port))
        assert loopback_udp.recv(16) == b"r5"
    finally:
        raw.close()
    assert hooks.calls == [
        ("connect", AF_INET, "127.0.0.1", port),
        ("sendto", AF_INET, "127.0.0.1", port),
        ("sendmsg", AF_INET, "127.0.0.1", port),
    ]


def test_backstop_bound_method_captured_before_install(
    lazy_hooks: Hooks, loopback_udp: socket.socket
) -> None:
    port = udp_port(loopback_udp)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        connect, sendto = s.connect, s.sendto
        lazy_hooks.install()
        lazy_hooks.activate(strict=False)
        connect(("127.0.0.1", port))
        sendto(b"b1", ("127.0.0.1", port))
        assert loopback_udp.recv(16) == b"b1"
        assert lazy_hooks.calls == []
        lazy_hooks.activate(strict=True)
        with pytest.raises(Denied):
            connect(("127.0.0.1", port))
        with pytest.raises(Denied):
            sendto(b"b2", ("127.0.0.1", port))
    assert lazy_hooks.calls == [
        ("connect", AF_INET, "127.0.0.1", port),
        ("sendto", AF_INET, "127.0.0.1", port),
    ]


def test_backstop_lookup_captured_before_install(hooks: Hooks) -> None:
    hooks.activate(dns_localhost=False, strict=False)
    assert EARLY_GETHOSTBYNAME("localhost") == "127.0.0.1"
    assert EARLY_GETADDRINFO("localhost", 80, socket.AF_INET)[0][4] == ("127.0.0.1", 80)
    assert hooks.calls == []
    hooks.activate(dns_localhost=False, strict=True)
    with pytest.raises(Denied):
        EARLY_GETHOSTBYNAME("localhost")
    with pytest.raises(Denied):
        EARLY_GETADDRINFO("localhost", 80)
    assert EARLY_GETHOSTBYNAME("127.0.0.1") == "127.0.0.1"  # a number is not a lookup
    hooks.activate(strict=True)  # DNS_LOCALHOST: allowed
    assert EARLY_GETHOSTBYNAME("localhost") == "127.0.0.1"
    assert hooks.calls == [
        ("gethostbyname", 0, "localhost", None),
        ("getaddrinfo", 0, "localhost", 80),
    ]


def test_backstop_hostname(hooks: Hooks, loopback_udp: socket.socket) -> None:
    """CPython has resolved the name when the audit event fires; the backstop judges the
    name by the DNS policy, without resolving it again."""
    port = udp_port(loopback_udp)
    raw = _socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        hooks.activate("127.0.0.0/8", strict=True)
        raw.sendto(b"h1", ("localhost", port))
        assert loopback_udp.recv(16) == b"h1"
        hooks.activate("127.0.0.0/8", strict=True, dns_localhost=False)
        with pytest.raises(Denied):
            raw.sendto(b"h2", ("localhost", port))
        with pytest.raises(Denied):
            raw.connect(("LOCALHOST", port))
    finally:
        raw.close()
    assert hooks.calls == [("sendto", 0, "localhost", port), ("connect", 0, "localhost", port)]


def test_backstop_does_not_judge_twice(hooks: Hooks, loopback_udp: socket.socket) -> None:
    """A call through the hooks is judged once, not again by the audit hook."""
    port = udp_port(loopback_udp)
    hooks.activate("10.0.0.0/8", strict=True, warn=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"1x", ("127.0.0.1", port))
        s.connect(("127.0.0.1", port))
    socket.gethostbyaddr("127.0.0.1")
    assert loopback_udp.recv(16) == b"1x"
    assert hooks.calls == [
        ("sendto", AF_INET, "127.0.0.1", port),
        ("connect", AF_INET, "127.0.0.1", port),
    ]


# --------------------------------------------------------------------------- lifecycle


def test_uninstall_restores_everything_exactly(
    lazy_hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    def user_connect(self: socket.socket, address: Any) -> None:
        raise AssertionError("not called while the hooks are installed")

    monkeypatch.setattr(socket.socket, "connect", user_connect)  # a patch from before
    before = module_state()
    lazy_hooks.install()
    assert ng.is_installed()
    assert socket.socket.__dict__["connect"] is not user_connect
    assert "connect_ex" in socket.socket.__dict__  # set on the class, not inherited
    ng.uninstall()
    assert not ng.is_installed()
    same_state(before, module_state())
    assert socket.socket.__dict__["connect"] is user_connect
    assert "connect_ex" not in socket.socket.__dict__  # deleted again: inherited once more
    assert socket.socket.connect_ex is _socket.socket.connect_ex
    ng.uninstall()  # a no-op now


def test_install_twice_and_activate_without_install(lazy_hooks: Hooks) -> None:
    policy = C.compile([])
    with pytest.raises(RuntimeError):
        ng.activate(policy, False)
    with pytest.raises(RuntimeError):
        ng.activate(policy, True)
    ng.activate(None, False)  # nothing to check: fine without hooks
    with pytest.raises(TypeError):
        ng.install(42)
    assert not ng.is_installed()
    lazy_hooks.install()
    with pytest.raises(RuntimeError):
        ng.install(lambda *a: None)
    assert ng.is_installed()
    ng.activate(policy, False)
    assert ng.active() is policy
    with pytest.raises(TypeError):
        ng.activate("10.0.0.0/8", False)
    with pytest.raises(TypeError):
        ng.activate(_impl.load("python").compile([]), False)
    with pytest.raises(TypeError):
        ng.activate(policy)  # type: ignore[call-arg]
    assert ng.active() is policy
    with socket.socket() as s, pytest.raises(Denied):  # the first callback is in charge
        s.connect(OUTSIDE)
    ng.uninstall()
    assert ng.active() is None


def test_no_active_policy_and_allow_all(hooks: Hooks, loopback_udp: socket.socket) -> None:
    port = udp_port(loopback_udp)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"n1", ("127.0.0.1", port))  # installed, nothing active
        hooks.activate(allow_all=True, strict=True)
        s.sendto(b"n2", ("127.0.0.1", port))
        assert socket.gethostbyname("localhost") == "127.0.0.1"
    assert [loopback_udp.recv(16) for _ in range(2)] == [b"n1", b"n2"]
    assert hooks.calls == []


def test_callback_exception_propagates_unchanged(hooks: Hooks) -> None:
    marker = KeyError("the callback's own")

    def callback(op: str, family: int, host: str, port: int | None) -> None:
        raise marker

    ng.uninstall()
    ng.install(callback)
    ng.activate(C.compile([]), False)
    with socket.socket() as s, pytest.raises(KeyError) as info:
        s.connect(OUTSIDE)
    assert info.value is marker


def test_callback_may_uninstall_or_swap(lazy_hooks: Hooks, loopback_udp: socket.socket) -> None:
    port = udp_port(loopback_udp)
    seen: list[str] = []

    def uninstalling(op: str, family: int, host: str, port: int | None) -> None:
        seen.append(op)
        ng.uninstall()

    ng.install(uninstalling)
    ng.activate(C.compile([]), False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"u1", ("127.0.0.1", port))  # reported, then let through
        s.sendto(b"u2", ("127.0.0.1", port))  # nothing installed any more
    assert [loopback_udp.recv(16) for _ in range(2)] == [b"u1", b"u2"]
    assert seen == ["sendto"] and not ng.is_installed()

    allow = C.compile(rules("127.0.0.0/8"))

    def swapping(op: str, family: int, host: str, port: int | None) -> None:
        seen.append(op)
        ng.activate(allow, False)

    ng.install(swapping)
    ng.activate(C.compile([]), False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"s1", ("127.0.0.1", port))
        s.sendto(b"s2", ("127.0.0.1", port))
    assert [loopback_udp.recv(16) for _ in range(2)] == [b"s1", b"s2"]
    assert seen == ["sendto", "sendto"]


def test_allowed_calls_do_not_enter_python(hooks: Hooks, loopback_udp: socket.socket) -> None:
    """DESIGN.md: on an allowed call only C runs; a denied one makes one call into Python,
    the callback."""
    port = udp_port(loopback_udp)
    entered: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            entered.append(frame.f_code.co_name)

    hooks.activate("127.0.0.0/8", f"localhost:{port}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        sys.setprofile(profile)
        try:
            s.connect(("127.0.0.1", port))
            s.connect_ex(("127.0.0.1", port))
            s.sendto(b"p", ("127.0.0.1", port))
            # bytes: a str host goes through CPython's own idna codec, written in Python
            _socket.getaddrinfo(b"localhost", port)
            _socket.gethostbyname(b"localhost")
        finally:
            sys.setprofile(None)
        assert entered == []
        hooks.activate()
        sys.setprofile(profile)
        try:
            s.connect(("127.0.0.1", port))
        except Denied:
            pass
        finally:
            sys.setprofile(None)
    assert entered == ["callback"]
    assert loopback_udp.recv(16) == b"p"


# --------------------------------------------------------------------------- learning


def test_host_rule_lookup_teaches_addresses(hooks: Hooks, loopback_udp: socket.socket) -> None:
    port = udp_port(loopback_udp)
    policy = hooks.activate(f"localhost:{port}", dns_localhost=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(Denied):
            s.sendto(b"before", ("127.0.0.1", port))
        assert policy.learned == 0
        socket.getaddrinfo("localhost", None, socket.AF_INET)
        assert policy.learned >= 1
        s.sendto(b"after", ("127.0.0.1", port))
        with pytest.raises(Denied):
            s.sendto(b"other", ("127.0.0.1", port + 1 if port < 65535 else port - 1))
        assert not policy.allows("127.0.0.1", port)  # allows() is static
        assert C.from_bytes(policy.to_bytes()).learned == 0  # learned is not in the blob
        fresh = hooks.activate(f"localhost:{port}", dns_localhost=False)
        assert fresh.learned == 0
        with pytest.raises(Denied):
            s.sendto(b"fresh", ("127.0.0.1", port))  # learned state is per policy object
    assert loopback_udp.recv(16) == b"after"
    assert [c[0] for c in hooks.calls] == ["sendto"] * 3


@pytest.mark.parametrize("lookup", ["gethostbyname", "gethostbyname_ex", "getaddrinfo"])
def test_every_forward_lookup_teaches(
    hooks: Hooks, loopback_udp: socket.socket, lookup: str
) -> None:
    port = udp_port(loopback_udp)
    policy = hooks.activate(f"localhost:{port}", dns_localhost=False)
    args = ("localhost", port) if lookup == "getaddrinfo" else ("localhost",)
    getattr(socket, lookup)(*args)
    assert policy.learned >= 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"learned", ("127.0.0.1", port))
    assert loopback_udp.recv(16) == b"learned"
    assert hooks.calls == []


def test_dns_localhost_does_not_teach(hooks: Hooks, loopback_udp: socket.socket) -> None:
    port = udp_port(loopback_udp)
    policy = hooks.activate()
    socket.getaddrinfo("localhost", port)
    assert policy.learned == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(Denied):
        s.connect(("127.0.0.1", port))


def test_host_rule_port_allows_a_named_connect(hooks: Hooks, loopback_udp: socket.socket) -> None:
    port = udp_port(loopback_udp)
    other = port + 1 if port < 65535 else port - 1
    hooks.activate(f"localhost:{port}", dns_localhost=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"byname", ("localhost", port))
        with pytest.raises(Denied):
            s.sendto(b"no", ("localhost", other))  # the name, not the port: the address
    assert loopback_udp.recv(16) == b"byname"
    assert hooks.calls == [("sendto", AF_INET, "127.0.0.1", other)]


def test_a_named_connect_teaches_like_a_lookup(hooks: Hooks, loopback_udp: socket.socket) -> None:
    """The name a connect resolves under a matching host rule teaches its addresses, as
    an explicit getaddrinfo does (the reference's documented choice)."""
    port = udp_port(loopback_udp)
    policy = hooks.activate(f"localhost:{port}", dns_localhost=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"n", ("localhost", port))
        assert policy.learned >= 1
        s.sendto(b"a", ("127.0.0.1", port))
    assert [loopback_udp.recv(16) for _ in range(2)] == [b"n", b"a"]
    assert hooks.calls == []


def test_repeated_lookups_do_not_grow_learned_state(hooks: Hooks) -> None:
    """Learning the same name again must not grow anything: a long-lived policy (a
    session-wide one) sees the same lookup thousands of times."""
    policy = hooks.activate("localhost:8080", "*.localhost:443", dns_localhost=False)
    for _ in range(200):
        socket.gethostbyname("localhost")
    learned = policy.learned
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5000):
            socket.gethostbyname("localhost")
        grew = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert policy.learned == learned
    assert grew < 16 * 1024, f"{grew} bytes more after 5000 identical lookups"


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize("strict", [False, True], ids=["hooks", "strict"])
def test_threads_while_the_policy_swaps(
    hooks: Hooks, loopback_udp: socket.socket, strict: bool
) -> None:
    """8 threads connect in loops while the main thread swaps the active policy 1000
    times: every call succeeds or raises the callback's exception, and the callback is
    called exactly once per denial."""
    port = udp_port(loopback_udp)
    allow = C.compile(rules("127.0.0.0/8"))
    deny = C.compile(rules("10.0.0.0/8"))
    stop = threading.Event()
    started = threading.Barrier(9)
    results: list[list[int]] = [[0, 0] for _ in range(8)]  # [successes, denials]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                started.wait(10)
                while not stop.is_set():
                    try:
                        s.connect(("127.0.0.1", port))
                    except Denied:
                        results[i][1] += 1
                    else:
                        results[i][0] += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    ng.activate(deny, strict)
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for t in threads:
            t.start()
        started.wait(10)
        for i in range(1000):
            ng.activate(allow if i % 2 else deny, strict)
            if i % 10 == 0:
                time.sleep(0)
        # then hold each policy until the threads have met it: the swaps above may all
        # have happened while the scheduler ran the main thread alone
        for policy, column in ((deny, 1), (allow, 0)):
            ng.activate(policy, strict)
            deadline = time.monotonic() + 10
            while sum(r[column] for r in results) == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
    finally:
        stop.set()
        sys.setswitchinterval(interval)
        for t in threads:
            t.join(30)
        ng.activate(None, False)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    successes = sum(r[0] for r in results)
    denials = sum(r[1] for r in results)
    assert denials > 0 and successes > 0, (successes, denials)
    assert len(hooks.calls) == denials
    assert set(hooks.calls) == {("connect", AF_INET, "127.0.0.1", port)}


# --------------------------------------------------------------------------- namespace

PRELUDE = """
import json, socket, sys
import netns
assert netns.in_isolated_netns(), "not in a private network namespace"
from netguard import _impl
from netguard.rules import parse_rule

C = _impl.load("c")
ng = C.module
calls = []
results = {}
mode = {"warn": False}

class Denied(Exception):
    pass

def callback(op, family, host, port):
    calls.append([op, family, host, port])
    if not mode["warn"]:
        raise Denied(op)

def activate(*texts, warn=False, strict=False, dns_localhost=True):
    mode["warn"] = warn
    rules = [parse_rule(t, source="netns") for t in texts]
    ng.activate(C.compile(rules, dns_localhost=dns_localhost), strict)

def outcome(fn):
    try:
        fn()
    except Denied:
        return "denied"
    except socket.gaierror:
        return "gaierror"
    except OSError as exc:
        import errno
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"

ng.install(callback)
"""


def isolated(code: str) -> dict[str, Any]:
    """Run code after PRELUDE in a private network namespace; its results and calls."""
    body = (
        PRELUDE
        + textwrap.dedent(code)
        + "\nprint(json.dumps({'results': results, 'calls': calls}))\n"
    )
    result = run_isolated(body, env={"PYTHONPATH": os.pathsep.join([SRC, TESTS])}, timeout=120)
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def test_warn_mode_calls_reach_the_kernel() -> None:
    """In warn mode a denied call proceeds: inside the namespace it fails with
    ENETUNREACH, which only the kernel says."""
    out = isolated(
        """
        activate(warn=True, dns_localhost=False)
        tcp = socket.socket()
        results["connect"] = outcome(lambda: tcp.connect(("192.0.2.1", 443)))
        tcp.close()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        results["sendto"] = outcome(lambda: udp.sendto(b"x", ("198.51.100.7", 53)))
        results["connect_ex"] = socket.socket().connect_ex(("203.0.113.9", 80))
        v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        results["sendto6"] = outcome(lambda: v6.sendto(b"x", ("2001:db8::1", 53)))
        results["lookup"] = outcome(lambda: socket.getaddrinfo("netguard.example", 443))
        """
    )
    results = out["results"]
    assert results["connect"] == "ENETUNREACH"
    assert results["sendto"] == "ENETUNREACH"
    assert results["connect_ex"] == errno.ENETUNREACH
    assert results["sendto6"] in ("ENETUNREACH", "EAFNOSUPPORT")
    assert results["lookup"] == "gaierror"  # proceeded, then found no route to a resolver
    assert out["calls"] == [
        ["connect", AF_INET, "192.0.2.1", 443],
        ["sendto", AF_INET, "198.51.100.7", 53],
        ["connect_ex", AF_INET, "203.0.113.9", 80],
        ["sendto", AF_INET6, "2001:db8::1", 53],
        ["getaddrinfo", 0, "netguard.example", 443],
    ]


def test_strict_mode_stops_outside_calls_before_the_kernel() -> None:
    out = isolated(
        """
        activate("127.0.0.0/8", "192.0.2.0/24:443", dns_localhost=False)
        results["denied"] = outcome(lambda: socket.socket().connect(("192.0.2.1", 80)))
        results["allowed"] = outcome(lambda: socket.socket().connect(("192.0.2.1", 443)))
        results["lookup"] = outcome(lambda: socket.getaddrinfo("netguard.example", 443))
        activate("*.netguard.example", dns_localhost=False)
        results["by_rule"] = outcome(lambda: socket.getaddrinfo("a.netguard.example", 443))
        """
    )
    assert out["results"] == {
        "denied": "denied",
        "allowed": "ENETUNREACH",  # allowed by the rule: the kernel has the last word
        "lookup": "denied",
        "by_rule": "gaierror",
    }
    assert out["calls"] == [
        ["connect", AF_INET, "192.0.2.1", 80],
        ["getaddrinfo", 0, "netguard.example", 443],
    ]


def test_backstop_reverse_lookups_captured_before_install() -> None:
    """Reverse lookups of outside addresses by functions captured before install: denied
    while strict; otherwise they go out (and find no route in the namespace)."""
    out = isolated(
        """
        import _socket
        ng.uninstall()
        early_byaddr, early_nameinfo = _socket.gethostbyaddr, _socket.getnameinfo
        ng.install(callback)
        activate("127.0.0.0/8", strict=True)
        results["byaddr_strict"] = outcome(lambda: early_byaddr("192.0.2.1"))
        results["nameinfo_strict"] = outcome(lambda: early_nameinfo(("192.0.2.1", 80), 0))
        results["loopback_strict"] = outcome(lambda: early_byaddr("127.0.0.1"))
        activate("127.0.0.0/8", strict=False)
        results["byaddr"] = outcome(lambda: early_byaddr("192.0.2.1"))
        """
    )
    results = out["results"]
    assert results["byaddr_strict"] == "denied"
    assert results["nameinfo_strict"] == "denied"
    assert results["loopback_strict"] != "denied"  # loopback: allowed
    assert results["byaddr"] != "denied"  # not strict: the backstop is inert
    assert out["calls"] == [
        ["gethostbyaddr", 0, "192.0.2.1", None],
        ["getnameinfo", 0, "192.0.2.1", None],
    ]


def test_names_too_long_for_dns_are_judged_whole() -> None:
    """A name longer than 255 characters matches a wildcard rule only if it ends with
    the rule's domain; it is not judged by its first 255 characters."""
    out = isolated(
        """
        activate("*.example.com", dns_localhost=False)
        prefix = ".".join(["a" * 60] * 4) + ".example.com"  # 255 characters
        name = prefix + ".evil.test"
        assert len(prefix) == 255 and len(name) > 255
        results["getaddrinfo"] = outcome(lambda: socket.getaddrinfo(name, 443))
        results["gethostbyname"] = outcome(lambda: socket.gethostbyname(name))
        """
    )
    assert out["results"] == {"getaddrinfo": "denied", "gethostbyname": "denied"}
    assert [c[0] for c in out["calls"]] == ["getaddrinfo", "gethostbyname"]
