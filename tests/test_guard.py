"""netguard.Policy, netguard.guard() and the implementation choice, through the public API.

Every behaviour test runs against both implementations (the ``impl`` fixture). Packets go
to loopback only: outside destinations appear where they are denied (strict mode raises
before anything is sent) or inside ``run_isolated`` (a private network namespace).
"""

from __future__ import annotations

import _socket
import ast
import contextlib
import gc
import http.client
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import requests

import netguard
from netguard import NetworkViolationError, NetworkViolationWarning, _guard, _impl
from netguard.rules import Rule, RuleError, parse_rule

SRC = os.path.dirname(os.path.dirname(os.path.abspath(netguard.__file__)))
OUTSIDE = ("192.0.2.10", 443)  # TEST-NET-1: only ever denied, or used in a netns
OUTSIDE6 = ("2001:db8::1", 443)
LOOPBACK = ["127.0.0.0/8", "::1"]


# --------------------------------------------------------------------------- helpers


def _open_fds() -> set[str] | None:
    try:
        return set(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return None


@contextlib.contextmanager
def no_leaks() -> Iterator[None]:
    """Fail if the block leaves a socket to the garbage collector (a ResourceWarning) or
    an open file descriptor."""
    gc.collect()
    before = _open_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, leaked
    after = _open_fds()
    if before is not None and after is not None:
        assert after <= before, f"file descriptors left open: {sorted(after - before)}"


def _chain(exc: BaseException | None) -> list[BaseException]:
    """exc, its causes and contexts, outermost first."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _violation_in(exc: BaseException) -> NetworkViolationError:
    for e in _chain(exc):
        if isinstance(e, NetworkViolationError):
            return e
    raise AssertionError(f"no NetworkViolationError in the chain of {exc!r}")


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, PYTHONPATH=SRC, **env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --------------------------------------------------------------------------- Policy


def test_policy_from_strings_and_rules(impl: _impl.Impl) -> None:
    rule = parse_rule("[::1]:8080", source="test")
    policy = netguard.Policy(["127.0.0.0/8:80,443", rule, "localhost", "unix:/run/*.sock"])
    assert policy.rules is not None
    assert [r.text for r in policy.rules] == [
        "127.0.0.0/8:80,443",
        "[::1]:8080",
        "localhost",
        "unix:/run/*.sock",
    ]
    assert all(isinstance(r, Rule) for r in policy.rules)
    assert policy.rules[1] is rule
    assert policy.implementation == impl.name
    assert policy.allows("127.0.0.1", 443)
    assert policy.allows("127.1.2.3", 80)
    assert not policy.allows("127.0.0.1", 22)
    assert policy.allows("::1", 8080)
    assert not policy.allows("::1", 80)
    assert policy.allows("unix:/run/db.sock")
    assert not policy.allows("unix:/tmp/db.sock")
    assert not policy.allows("192.0.2.10", 443)
    assert policy.allows("localhost")


def test_policy_any_rule_covers_address_and_port(impl: _impl.Impl) -> None:
    policy = netguard.Policy(["10.0.0.0/8:443", "10.1.0.0/16:80"])
    assert policy.allows("10.1.2.3", 443)
    assert policy.allows("10.1.2.3", 80)
    assert not policy.allows("10.2.0.1", 80)


def test_policy_allow_all_and_empty(impl: _impl.Impl) -> None:
    assert netguard.Policy(allow_all=True).allows("192.0.2.10", 443)
    assert netguard.Policy(allow_all=True).allows("example.com")
    empty = netguard.Policy()
    assert empty.rules == ()
    assert not empty.allows("127.0.0.1", 80)
    assert not empty.allows("example.com")
    assert empty.allows("localhost")  # a lookup of localhost is always allowed


def test_policy_rule_errors_name_the_source(impl: _impl.Impl) -> None:
    with pytest.raises(RuleError, match=r"^netguard\.Policy\(\): invalid rule '10\.0\.0\.1/8'"):
        netguard.Policy(["10.0.0.1/8"])
    with pytest.raises(RuleError, match=r"^allow\.txt:3: invalid rule '1\.2\.3\.4:99999'"):
        netguard.Policy(["1.2.3.4:99999"], source="allow.txt:3")


def test_policy_rejects_a_single_string(impl: _impl.Impl) -> None:
    with pytest.raises(TypeError, match=r"write \['127\.0\.0\.1'\]"):
        netguard.Policy("127.0.0.1")


def test_policy_bytes_round_trip(impl: _impl.Impl) -> None:
    policy = netguard.Policy(["127.0.0.0/8:80", "[2001:db8::/32]:443", "unix:/run/x", "a.test"])
    data = policy.to_bytes()
    assert isinstance(data, bytes)
    again = netguard.Policy.from_bytes(data)
    assert again.rules is None
    assert again.implementation == impl.name
    assert again.to_bytes() == data
    for host, port in [
        ("127.0.0.1", 80),
        ("127.0.0.1", 81),
        ("2001:db8::5", 443),
        ("2001:db9::5", 443),
        ("unix:/run/x", None),
        ("a.test", None),
        ("b.test", None),
    ]:
        assert again.allows(host, port) == policy.allows(host, port), (host, port)
    assert netguard.Policy.from_bytes(netguard.Policy(allow_all=True).to_bytes()).allow_all


def test_policy_from_bytes_rejects_garbage(impl: _impl.Impl) -> None:
    with pytest.raises(ValueError):
        netguard.Policy.from_bytes(b"not a policy")


def test_policy_repr(impl: _impl.Impl) -> None:
    assert (
        repr(netguard.Policy(["127.0.0.1"]))
        == f"netguard.Policy(['127.0.0.1'], impl={impl.name!r})"
    )
    many = netguard.Policy([f"10.0.0.{i}" for i in range(7)], allow_all=True)
    assert repr(many) == (
        "netguard.Policy(['10.0.0.0', '10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', ... 7 rules]"
        f", allow_all=True, impl={impl.name!r})"
    )


# --------------------------------------------------------------------------- _impl


def test_implementation_reports_name_and_path(impl: _impl.Impl) -> None:
    name, path = netguard.implementation()
    assert name == impl.name
    assert os.path.isfile(path)
    if name == "c":
        from netguard import _netguard

        assert path == _netguard.__file__
    else:
        assert os.path.basename(path) == "_reference.py"


@pytest.mark.parametrize(
    ("value", "expected"), [("", "c"), ("c", "c"), ("python", "python"), (" Python ", "python")]
)
def test_netguard_impl_choice(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("NETGUARD_IMPL", value)
    assert _impl.chosen() == expected


def test_netguard_impl_unset_means_c(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETGUARD_IMPL", raising=False)
    assert _impl.chosen() == "c"


@pytest.mark.parametrize("value", ["cc", "pure", "cython", "0"])
def test_netguard_impl_bad_value(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NETGUARD_IMPL", value)
    expected = f"NETGUARD_IMPL={value!r} from the environment: expected c or python"
    with pytest.raises(ValueError) as excinfo:
        _impl.chosen()
    assert str(excinfo.value) == expected


def test_netguard_impl_bad_value_at_first_use() -> None:
    result = _run(
        """
        import netguard
        try:
            netguard.implementation()
        except ValueError as exc:
            print(exc)
        """,
        NETGUARD_IMPL="cc",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "NETGUARD_IMPL='cc' from the environment: expected c or python"


def test_load_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="netguard implementation 'rust': expected c or python"):
        _impl.load("rust")


def test_broken_extension_is_an_import_error_not_a_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_impl, "_loaded", {})
    monkeypatch.setitem(sys.modules, "netguard._netguard", None)  # makes the import fail
    with pytest.raises(ImportError) as excinfo:
        _impl.load("c")
    message = str(excinfo.value)
    assert "cannot be imported" in message
    assert "python setup.py build_ext --inplace" in message
    assert "NETGUARD_IMPL=python" in message
    assert isinstance(excinfo.value.__cause__, ImportError)


def test_use_returns_the_previous_choice() -> None:
    previous = _impl.use("python")
    try:
        assert _impl.current().name == "python"
        assert _impl.IMPL is _impl.current()
        assert _impl.use("c") is _impl.load("python")
        assert _impl.current().name == "c"
    finally:
        _impl.use(previous)
    assert _impl._current is previous


def test_use_none_returns_to_the_environment_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = _impl.use(None)
    try:
        monkeypatch.setenv("NETGUARD_IMPL", "python")
        assert _impl.current().name == "python"
    finally:
        _impl.use(previous)


def test_pack_builds_the_c_constructor_arguments() -> None:
    rules = [
        parse_rule(text, source="test")
        for text in (
            "10.0.0.0/8:443",
            "192.0.2.1",
            "10.1.0.0/16:443",
            "[2001:db8::/32]:80,443",
            "::ffff:127.0.0.1",  # v4-mapped: an IPv4 rule
            "example.com:443",
            "*.example.org",
            "unix:/run/*.sock",
        )
    ]
    ipv4, ipv6, portsets, unix, hosts, flags = _impl.pack(rules)
    assert ipv4.typecode == ipv6.typecode == "Q"
    assert portsets == [((443, 443),), None, ((80, 80), (443, 443))]  # each distinct set once
    assert list(ipv4) == [
        0x0A000000, 0x0AFFFFFF, 0,
        0xC0000201, 0xC0000201, 1,
        0x0A010000, 0x0A01FFFF, 0,
        0x7F000001, 0x7F000001, 1,
    ]  # fmt: skip
    first = 0x20010DB8 << 96
    last = first | (1 << 96) - 1
    mask = (1 << 64) - 1
    assert list(ipv6) == [first >> 64, first & mask, last >> 64, last & mask, 2]
    assert unix == ["/run/*.sock"]
    assert hosts == [("example.com", 0), ("*.example.org", 1)]
    assert flags == _impl.DNS_LOCALHOST
    assert _impl.pack([], allow_all=True, dns_localhost=False)[5] == _impl.ALLOW_ALL
    assert _impl.pack([], allow_all=True)[5] == _impl.ALLOW_ALL | _impl.DNS_LOCALHOST


# --------------------------------------------------------------------------- import cost


def test_importing_netguard_and_the_plugin_loads_nothing_heavy() -> None:
    result = _run(
        """
        import sys
        before = set(sys.modules)
        import netguard, netguard.plugin
        new = sorted(set(sys.modules) - before)
        print(new)
        """
    )
    assert result.returncode == 0, result.stderr
    loaded = set(ast.literal_eval(result.stdout.strip()))
    # nothing that patches or loads the C core: off mode (the default) stays free
    heavy = {
        "netguard._netguard",
        "netguard._guard",
        "netguard._impl",
        "netguard._session",
        "netguard.policy",
        "netguard._reference",
    }
    # importing the plugin loads only itself; its hooks load the options table when they run
    heavy |= {"netguard.config", "netguard.rules"}
    assert not loaded & heavy
    assert {"netguard", "netguard.plugin"} <= loaded


def test_off_mode_never_loads_the_extension() -> None:
    result = _run(
        """
        import socket, sys
        import netguard
        with netguard.guard(None, mode="off") as g:
            pass
        print(sorted(m for m in sys.modules if m.startswith("netguard")))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(
        [
            "netguard",
            "netguard._guard",
            "netguard._impl",
            "netguard._record",
            "netguard.errors",
            "netguard.rules",
        ]
    )


def test_version() -> None:
    assert isinstance(netguard.__version__, str)
    assert netguard.__version__
    assert set(netguard.__all__) <= set(dir(netguard))


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="module 'netguard' has no attribute 'nope'"):
        netguard.nope  # noqa: B018


# --------------------------------------------------------------------------- guard()


def test_bad_mode_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"netguard mode 'strictt': expected strict, warn or off"):
        netguard.guard(None, mode="strictt")


def test_guard_takes_a_policy() -> None:
    with pytest.raises(TypeError, match=r"netguard\.Policy or None, not list"):
        netguard.guard(["127.0.0.1"])  # type: ignore[arg-type]


def test_a_guard_is_entered_once(impl: _impl.Impl) -> None:
    g = netguard.guard(netguard.Policy(LOOPBACK))
    with g:
        pass
    with pytest.raises(RuntimeError, match="entered only once"):
        g.__enter__()


def test_allowed_loopback_tcp(impl: _impl.Impl, loopback_tcp_server: Any) -> None:
    with netguard.guard(netguard.Policy(["127.0.0.0/8"])) as g:
        assert isinstance(g, netguard.Guard)
        assert impl.is_installed()
        with socket.create_connection(loopback_tcp_server.address, timeout=5) as sock:
            sock.sendall(b"hello")
    assert g.violations == []
    assert not impl.is_installed()
    _wait_for(lambda: loopback_tcp_server.received == [b"hello"])


def test_allowed_loopback_tcp_ipv6(impl: _impl.Impl, loopback_tcp6: tuple[str, int]) -> None:
    with (
        netguard.guard(netguard.Policy(["::1"])) as g,
        socket.create_connection(loopback_tcp6, timeout=5),
    ):
        pass
    assert g.violations == []


def test_allowed_loopback_udp(impl: _impl.Impl, loopback_udp: socket.socket) -> None:
    address = loopback_udp.getsockname()
    with netguard.guard(netguard.Policy(["127.0.0.0/8"])) as g:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"one", address)
            sock.connect(address)
            sock.send(b"two")
            sock.sendmsg([b"three"])
    assert g.violations == []
    assert [loopback_udp.recv(100) for _ in range(3)] == [b"one", b"two", b"three"]


def test_allowed_loopback_udp_ipv6(impl: _impl.Impl, loopback_udp6: socket.socket) -> None:
    with netguard.guard(netguard.Policy(["::1"])) as g:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"six", loopback_udp6.getsockname())
    assert g.violations == []
    assert loopback_udp6.recv(100) == b"six"


def test_rule_ports_are_enforced(impl: _impl.Impl, loopback_tcp: tuple[str, int]) -> None:
    port = loopback_tcp[1]
    other = port + 1 if port < 65535 else port - 1
    with pytest.raises(NetworkViolationError) as excinfo:
        with netguard.guard(netguard.Policy([f"127.0.0.1:{other}"])):
            socket.create_connection(loopback_tcp, timeout=5).close()
    assert excinfo.value.destination == f"127.0.0.1:{port}"


def test_denied_raw_connect(impl: _impl.Impl) -> None:
    with no_leaks(), socket.socket() as sock:
        with pytest.raises(NetworkViolationError) as excinfo:
            with netguard.guard(netguard.Policy(LOOPBACK)) as g:
                sock.connect(OUTSIDE)
    err = excinfo.value
    assert (err.op, err.family, err.host, err.port) == ("connect", socket.AF_INET, *OUTSIDE)
    assert err.destination == "192.0.2.10:443"
    assert err.slug == "NG001"
    assert str(err).startswith("netguard blocked connect to 192.0.2.10:443\n")
    assert err.swallowed == 0
    [violation] = g.violations
    assert violation.destination == "192.0.2.10:443"
    assert violation.thread == threading.current_thread().name
    assert abs(violation.timestamp - time.time()) < 60


def test_denied_connect_ex_sendto_sendmsg(impl: _impl.Impl) -> None:
    policy = netguard.Policy(LOOPBACK)
    with no_leaks():
        for op in ("connect_ex", "sendto", "sendmsg"):
            kind = socket.SOCK_STREAM if op == "connect_ex" else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, kind) as sock:
                with pytest.raises(NetworkViolationError) as excinfo:
                    with netguard.guard(policy):
                        if op == "connect_ex":
                            sock.connect_ex(OUTSIDE)
                        elif op == "sendto":
                            sock.sendto(b"x", OUTSIDE)
                        else:
                            sock.sendmsg([b"x"], [], 0, OUTSIDE)
            assert excinfo.value.op == op
            assert excinfo.value.destination == "192.0.2.10:443"


def test_denied_ipv6_destination(impl: _impl.Impl) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        with pytest.raises(NetworkViolationError) as excinfo:
            with netguard.guard(netguard.Policy(LOOPBACK)):
                sock.sendto(b"x", OUTSIDE6)
    assert excinfo.value.destination == "[2001:db8::1]:443"
    assert excinfo.value.family == socket.AF_INET6


def test_denied_create_connection_closes_its_socket(impl: _impl.Impl) -> None:
    with no_leaks(), pytest.raises(NetworkViolationError) as excinfo:
        with netguard.guard(netguard.Policy(LOOPBACK)):
            socket.create_connection(OUTSIDE, timeout=5)
    assert excinfo.value.destination == "192.0.2.10:443"


def test_denied_http_client(impl: _impl.Impl) -> None:
    with no_leaks(), pytest.raises(NetworkViolationError) as excinfo:
        with netguard.guard(netguard.Policy(LOOPBACK)):
            conn = http.client.HTTPConnection(*OUTSIDE, timeout=5)
            try:
                conn.request("GET", "/")
            finally:
                conn.close()
    assert excinfo.value.destination == "192.0.2.10:443"


@pytest.mark.usefixtures("no_proxy_env")
def test_denied_urlopen(impl: _impl.Impl) -> None:
    with no_leaks(), pytest.raises(urllib.error.URLError) as excinfo:
        with netguard.guard(netguard.Policy(LOOPBACK)) as g:
            urllib.request.urlopen("http://192.0.2.10:443/", timeout=5)
    assert isinstance(excinfo.value.reason, NetworkViolationError)
    assert excinfo.value.reason.destination == "192.0.2.10:443"
    assert len(g.violations) == 1  # surfaced inside the URLError: not raised again


@pytest.mark.usefixtures("no_proxy_env")
def test_denied_requests(impl: _impl.Impl) -> None:
    with no_leaks(), pytest.raises(requests.ConnectionError) as excinfo:
        with netguard.guard(netguard.Policy(LOOPBACK)) as g:
            requests.get("http://192.0.2.10:443/", timeout=5)
    err = _violation_in(excinfo.value)
    assert err.destination == "192.0.2.10:443"
    assert g.violations and all(v.destination == "192.0.2.10:443" for v in g.violations)


def test_denied_unix_connect(impl: _impl.Impl) -> None:
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no AF_UNIX")
    directory = tempfile.mkdtemp(prefix="ng", dir="/tmp" if os.path.isdir("/tmp") else None)
    try:
        allowed = os.path.join(directory, "ok.sock")
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(allowed)
            server.listen(1)
            policy = netguard.Policy([f"unix:{directory}/*.sock"])
            with netguard.guard(policy) as g, socket.socket(socket.AF_UNIX) as client:
                client.connect(allowed)
            assert g.violations == []
            denied = os.path.join(directory, "other")
            with socket.socket(socket.AF_UNIX) as client:
                with pytest.raises(NetworkViolationError) as excinfo:
                    with netguard.guard(policy):
                        client.connect(denied)
            assert excinfo.value.destination == f"unix:{denied}"
            assert excinfo.value.port is None
            with socket.socket(socket.AF_UNIX) as client:
                with pytest.raises(NetworkViolationError) as excinfo:
                    with netguard.guard(policy):
                        client.connect("\0netguard-test-abstract")
            assert excinfo.value.destination == "unix:@netguard-test-abstract"
    finally:
        shutil.rmtree(directory)


def test_denied_dns_lookup(impl: _impl.Impl) -> None:
    policy = netguard.Policy(LOOPBACK)
    with pytest.raises(NetworkViolationError) as excinfo:
        with netguard.guard(policy):
            socket.getaddrinfo("example.com", None)
    err = excinfo.value
    assert (err.op, err.family, err.host, err.port) == ("getaddrinfo", 0, "example.com", None)
    assert err.destination == "dns:example.com"
    assert err.slug == "NG002"
    assert "docs/messages.md#ng002" in str(err)

    with pytest.raises(NetworkViolationError) as excinfo:
        with netguard.guard(policy):
            socket.getaddrinfo("example.com", 443)
    assert excinfo.value.destination == "dns:example.com:443"
    assert excinfo.value.rule == "example.com:443"

    with pytest.raises(NetworkViolationError) as excinfo:
        with netguard.guard(policy):
            socket.gethostbyname("example.com")
    assert (excinfo.value.op, excinfo.value.destination) == ("gethostbyname", "dns:example.com")


def test_denied_hostname_in_connect(impl: _impl.Impl) -> None:
    with socket.socket() as sock:
        with pytest.raises(NetworkViolationError) as excinfo:
            with netguard.guard(netguard.Policy(LOOPBACK)):
                sock.connect(("example.com", 443))
    err = excinfo.value
    assert (err.op, err.family, err.destination, err.slug) == (
        "connect",
        0,
        "dns:example.com:443",
        "NG002",
    )


def test_localhost_lookup_and_numeric_hosts_are_allowed(impl: _impl.Impl) -> None:
    with netguard.guard(netguard.Policy()) as g:
        assert socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        assert socket.getaddrinfo("192.0.2.10", 443)  # numeric: not a lookup
    assert g.violations == []


def test_warn_mode_lets_the_call_through(impl: _impl.Impl, loopback_tcp_server: Any) -> None:
    address = loopback_tcp_server.address
    with pytest.warns(NetworkViolationWarning) as record:
        with netguard.guard(netguard.Policy(), mode="warn") as g:
            with socket.create_connection(address, timeout=5) as sock:
                line = sys._getframe().f_lineno - 1
                sock.sendall(b"through")
    _wait_for(lambda: loopback_tcp_server.received == [b"through"])
    [warning] = record
    assert isinstance(warning.message, NetworkViolationWarning)
    assert warning.message.destination == f"127.0.0.1:{address[1]}"
    assert warning.message.op == "connect"
    assert str(warning.message).startswith(
        f"netguard let through connect to 127.0.0.1:{address[1]} (warn mode"
    )
    # Attributed to the line that made the call, not to socket.py or netguard.
    assert (warning.filename, warning.lineno) == (__file__, line)
    [violation] = g.violations
    assert violation.destination == f"127.0.0.1:{address[1]}"


def test_warn_mode_as_error(impl: _impl.Impl, loopback_tcp: tuple[str, int]) -> None:
    # A warnings filter that makes the warning an error blocks the call as strict mode
    # would: NetworkViolationError (an OSError, so cleanup code runs), from the warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", NetworkViolationWarning)
        with socket.socket() as sock:
            with pytest.raises(NetworkViolationError) as info:
                with netguard.guard(netguard.Policy(), mode="warn"):
                    sock.connect(loopback_tcp)
    assert info.value.escalated and not info.value.swallowed
    assert isinstance(info.value.__cause__, NetworkViolationWarning)
    assert "a warnings filter turned NetworkViolationWarning into an error" in str(info.value)
    assert str(info.value).startswith("netguard blocked connect")


def test_warn_mode_as_error_closes_sockets(
    impl: _impl.Impl, loopback_tcp: tuple[str, int]
) -> None:
    # socket.create_connection closes its socket on OSError only: no ResourceWarning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NetworkViolationError):
            with netguard.guard(netguard.Policy(), mode="warn"):
                socket.create_connection(loopback_tcp, timeout=5)
        gc.collect()  # a leaked socket would warn (an error here) when collected


def test_warn_mode_as_error_is_never_lost(impl: _impl.Impl, loopback_tcp: tuple[str, int]) -> None:
    # Swallowed, the escalated violation is raised on exit as strict would; the same
    # destination again is blocked again (not let through as already warned about).
    with warnings.catch_warnings():
        warnings.simplefilter("error", NetworkViolationWarning)
        with pytest.raises(NetworkViolationError) as info:
            with netguard.guard(netguard.Policy(), mode="warn", warned=set()) as g:
                for _ in range(2):
                    with socket.socket() as sock:
                        try:
                            sock.connect(loopback_tcp)
                        except OSError:
                            pass
    assert info.value.swallowed == 2 and info.value.escalated
    assert len(g.violations) == 2


def test_off_mode_patches_nothing(impl: _impl.Impl, loopback_tcp: tuple[str, int]) -> None:
    before = dict(socket.socket.__dict__)
    getaddrinfo = _socket.getaddrinfo
    for policy in (netguard.Policy(), None):
        with netguard.guard(policy, mode="off") as g:
            assert dict(socket.socket.__dict__) == before
            assert _socket.getaddrinfo is getaddrinfo
            assert not impl.is_installed()
            socket.create_connection(loopback_tcp, timeout=5).close()
        assert g.violations == []
    with netguard.guard(None) as g:  # no policy: allows everything, patches nothing
        assert dict(socket.socket.__dict__) == before
        socket.create_connection(loopback_tcp, timeout=5).close()


def test_guards_nest(impl: _impl.Impl, loopback_tcp: tuple[str, int]) -> None:
    allow = netguard.Policy(["127.0.0.0/8"])
    deny = netguard.Policy()
    with netguard.guard(allow) as outer:
        assert impl.active() is allow._compiled
        socket.create_connection(loopback_tcp, timeout=5).close()
        with pytest.raises(NetworkViolationError):
            with netguard.guard(deny) as inner:
                assert impl.active() is deny._compiled
                socket.create_connection(loopback_tcp, timeout=5).close()
        assert len(inner.violations) == 1
        assert impl.active() is allow._compiled
        socket.create_connection(loopback_tcp, timeout=5).close()  # allowed again
        with netguard.guard(None, mode="off"):
            assert impl.active() is None
            assert impl.is_installed()  # an inner "off" guard does not uninstall
        assert impl.active() is allow._compiled
        with netguard.guard(deny, mode="warn") as warned, pytest.warns(NetworkViolationWarning):
            socket.create_connection(loopback_tcp, timeout=5).close()
        assert len(warned.violations) == 1
        assert impl.is_installed()
    assert outer.violations == []
    assert not impl.is_installed()
    assert impl.active() is None


def test_off_inside_strict_lets_calls_through(
    impl: _impl.Impl, loopback_tcp: tuple[str, int]
) -> None:
    with netguard.guard(netguard.Policy()) as outer:
        with netguard.guard(netguard.Policy(), mode="off"):
            socket.create_connection(loopback_tcp, timeout=5).close()
    assert outer.violations == []


def test_swallowed_violation_raises_at_exit(impl: _impl.Impl) -> None:
    with pytest.raises(NetworkViolationError) as excinfo:
        with netguard.guard(netguard.Policy(LOOPBACK)) as g:
            for _ in range(2):
                try:
                    socket.create_connection(OUTSIDE, timeout=5)
                except OSError:
                    pass  # the code under test swallows it
    err = excinfo.value
    assert len(g.violations) == 2
    assert err.swallowed == 2
    assert err.destination == "192.0.2.10:443"
    assert "swallowed this error (2 violations, this is the first)" in str(err)


def test_swallowed_violation_with_another_exception(impl: _impl.Impl) -> None:
    with pytest.raises(NetworkViolationError) as excinfo:
        with netguard.guard(netguard.Policy(LOOPBACK)):
            try:
                socket.getaddrinfo("example.com", 80)
            except OSError:
                pass
            raise KeyError("unrelated")
    assert excinfo.value.swallowed == 1
    assert isinstance(excinfo.value.__context__, KeyError)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_swallowed_violation_does_not_mask_base_exceptions(
    impl: _impl.Impl, exc_type: type[BaseException]
) -> None:
    with pytest.raises(exc_type):
        with netguard.guard(netguard.Policy(LOOPBACK)) as g:
            with contextlib.suppress(OSError):
                socket.create_connection(OUTSIDE, timeout=5)
            raise exc_type()
    assert len(g.violations) == 1


def test_acknowledged_violations_are_not_raised(impl: _impl.Impl) -> None:
    with netguard.guard(netguard.Policy(LOOPBACK)) as g:
        with pytest.raises(NetworkViolationError):
            socket.create_connection(OUTSIDE, timeout=5)
        assert len(g.violations) == 1
        g.violations.clear()


def test_warn_mode_does_not_raise_at_exit(impl: _impl.Impl, loopback_tcp: tuple[str, int]) -> None:
    with pytest.warns(NetworkViolationWarning):
        with netguard.guard(netguard.Policy(), mode="warn") as g:
            socket.create_connection(loopback_tcp, timeout=5).close()
    assert len(g.violations) == 1


def test_guard_context_reaches_the_message(impl: _impl.Impl) -> None:
    with pytest.raises(NetworkViolationError) as excinfo:
        with netguard.guard(
            netguard.Policy(), test="tests/test_x.py::test_y", size="small", phase="call"
        ):
            socket.getaddrinfo("example.com", 443)
    err = excinfo.value
    assert (err.test, err.size, err.phase) == ("tests/test_x.py::test_y", "small", "call")
    assert "  test: tests/test_x.py::test_y (size small, phase call)" in str(err)
    assert "small tests may not look up any name but localhost" in str(err)
    assert pickle.loads(pickle.dumps(err)).test == "tests/test_x.py::test_y"


def test_violation_on_another_thread_goes_to_the_running_guard(impl: _impl.Impl) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            socket.create_connection(OUTSIDE, timeout=5)
        except BaseException as exc:
            errors.append(exc)

    with netguard.guard(netguard.Policy(LOOPBACK)) as g:
        thread = threading.Thread(target=worker, name="netguard-worker")
        thread.start()
        thread.join(30)
        assert [type(e) for e in errors] == [NetworkViolationError]
        [violation] = g.violations
        assert violation.thread == "netguard-worker"
        g.violations.clear()


def test_pinned_hooks_outlive_guards(impl: _impl.Impl) -> None:
    assert _guard.install_hooks(impl) is impl
    try:
        assert impl.is_installed()
        with netguard.guard(netguard.Policy()):
            pass
        assert impl.is_installed()
        assert impl.active() is None  # installed, checking nothing
        with netguard.guard(netguard.Policy()):
            with pytest.raises(RuntimeError, match="while a guard is active"):
                _guard.uninstall_hooks()
    finally:
        _guard.uninstall_hooks()
    assert not impl.is_installed()


def test_policy_of_another_implementation_is_refused() -> None:
    previous = _impl.use("python")
    try:
        python_policy = netguard.Policy(LOOPBACK)
        _impl.use("c")
        c_policy = netguard.Policy(LOOPBACK)
        with netguard.guard(c_policy):
            with pytest.raises(RuntimeError, match="compiled by the 'python' implementation"):
                netguard.guard(python_policy).__enter__()
    finally:
        _impl.use(previous)
    assert _guard.active_guard() is None


def test_threads_racing_policy_switches(impl: _impl.Impl, loopback_tcp_server: Any) -> None:
    """8 threads connect to a loopback listener while the main thread switches between an
    allowing and a denying policy: every call succeeds or raises NetworkViolationError,
    and every denial is recorded exactly once."""
    address = loopback_tcp_server.address
    allow = netguard.Policy(["127.0.0.0/8"])
    deny = netguard.Policy()
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"ok": 0, "denied": 0}
    unexpected: list[BaseException] = []

    def worker() -> None:
        ok = denied = 0
        try:
            while not stop.is_set():
                try:
                    with socket.create_connection(address, timeout=10):
                        ok += 1
                    time.sleep(0.0005)  # let the listener keep up
                except NetworkViolationError:
                    denied += 1
        except BaseException as exc:
            unexpected.append(exc)
        with lock:
            counts["ok"] += ok
            counts["denied"] += denied

    guards: list[netguard.Guard] = []
    threads = [threading.Thread(target=worker, name=f"worker-{i}") for i in range(8)]
    outer = netguard.guard(allow)
    try:
        with outer:
            for thread in threads:
                thread.start()
            for _ in range(100):
                inner = netguard.guard(deny)
                guards.append(inner)
                with contextlib.suppress(NetworkViolationError):  # denials swallowed by threads
                    with inner:
                        time.sleep(0.002)
                time.sleep(0.002)
            stop.set()
            for thread in threads:
                thread.join(60)
    except NetworkViolationError:
        pass  # a denial that raced the last switch back was recorded on the outer guard
    assert not unexpected, unexpected
    assert not any(thread.is_alive() for thread in threads)
    recorded = [v for g in [*guards, outer] for v in g.violations]
    assert len(recorded) == counts["denied"]
    assert counts["ok"] > 0 and counts["denied"] > 0, counts
    assert {v.destination for v in recorded} == {f"127.0.0.1:{address[1]}"}
    assert {v.thread for v in recorded} <= {t.name for t in threads}


def _wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# --------------------------------------------------------------------------- isolated


@pytest.fixture(params=["c", "python"])
def impl_name(request: pytest.FixtureRequest) -> str:
    if request.param == "c":
        import netguard._netguard  # noqa: F401  (a broken build fails, never skips)
    name: str = request.param
    return name


def _run_isolated(code: str, impl_name: str) -> str:
    from netns import run_isolated

    result = run_isolated(
        textwrap.dedent(code), env={"PYTHONPATH": SRC, "NETGUARD_IMPL": impl_name}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_isolated_allowed_outside_destination_reaches_the_kernel(impl_name: str) -> None:
    # Allowed by a rule, the call gets as far as the kernel, which has no route here.
    out = _run_isolated(
        """
        import errno, socket, netguard
        with netguard.guard(netguard.Policy(["192.0.2.0/24:443"])) as g:
            try:
                socket.create_connection(("192.0.2.10", 443), timeout=5)
            except netguard.NetworkViolationError:
                print("blocked")
            except OSError as exc:
                print(errno.errorcode[exc.errno])
        print(len(g.violations))
        """,
        impl_name,
    )
    assert out.split() == ["ENETUNREACH", "0"]


def test_isolated_warn_mode_outside_destination(impl_name: str) -> None:
    out = _run_isolated(
        """
        import errno, socket, warnings, netguard
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with netguard.guard(netguard.Policy(["127.0.0.0/8"]), mode="warn") as g:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    try:
                        s.sendto(b"x", ("198.51.100.7", 53))
                    except OSError as exc:
                        print(errno.errorcode[exc.errno])
        print([str(w.message).splitlines()[0] for w in caught])
        """,
        impl_name,
    )
    assert out.splitlines() == [
        "ENETUNREACH",
        "['netguard let through sendto to 198.51.100.7:53 (warn mode; strict blocks it)']",
    ]


def test_isolated_backstop_catches_the_raw_socket_type() -> None:
    # _socket.socket bypasses the hooks on socket.socket; strict mode's audit hook stops it.
    # The C core only: the reference twin has no backstop (see its docstring).
    from netguard import _netguard  # noqa: F401  (a broken build fails, never skips)

    out = _run_isolated(
        """
        import _socket, netguard
        s = _socket.socket()
        try:
            with netguard.guard(netguard.Policy(["127.0.0.0/8"])):
                s.connect(("192.0.2.10", 443))
        except netguard.NetworkViolationError as exc:
            print(exc.destination)
        except OSError as exc:
            print("reached the kernel:", exc)
        finally:
            s.close()
        """,
        "c",
    )
    assert out == "192.0.2.10:443"


def test_a_violation_names_its_call_site(impl: _impl.Impl, loopback_tcp: tuple[str, int]) -> None:
    # The first frame outside netguard, the standard library and installed packages:
    # here, not socket.create_connection's connect.
    with pytest.raises(NetworkViolationError) as info:
        with netguard.guard(netguard.Policy()):
            line = sys._getframe().f_lineno + 1
            socket.create_connection(loopback_tcp, timeout=5)
    here = os.path.relpath(__file__)
    where = f"{here}:{line} (test_a_violation_names_its_call_site)"
    assert info.value.where == where
    assert f"\n  at:   {where}\n" in str(info.value)
    assert pickle.loads(pickle.dumps(info.value)).where == where


def test_the_base_guard(impl: _impl.Impl, loopback_tcp: tuple[str, int]) -> None:
    # The pytest plugin's per-phase path: a base guard beneath the stack.
    install_hooks_impl = _guard.install_hooks(impl)
    try:
        small = netguard.guard(netguard.Policy(), test="t", size="small")
        loopback = netguard.Policy(["127.0.0.0/8"])
        _guard.enter_base(small)
        try:
            assert _guard.active_guard() is small and small.active
            with pytest.raises(RuntimeError, match="while a guard is active"):
                _guard.uninstall_hooks()
            # a guard entered during the phase nests on top, then restores the base policy
            with netguard.guard(loopback) as inner:
                with socket.create_connection(loopback_tcp, timeout=5):
                    pass
                assert _guard.active_guard() is inner
            with pytest.raises(NetworkViolationError), socket.socket() as sock:
                sock.connect(loopback_tcp)
            [violation] = small.violations  # recorded on the base guard
            assert violation.test == "t" and violation.size == "small"
        finally:
            assert _guard.leave_base() is small
        assert _guard.leave_base() is None and not small.active
        assert _guard.active_guard() is None
        with socket.create_connection(loopback_tcp, timeout=5):
            pass  # no base, no guard: nothing checked
    finally:
        assert install_hooks_impl is impl
        _guard.uninstall_hooks()


def _udp_send_arrives(receiver: socket.socket) -> bool:
    """Whether a datagram sent to ``receiver`` (a bound loopback UDP socket) gets there:
    False when the hooks deny the ``sendto``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"x", receiver.getsockname())
        except OSError:
            return False
    assert receiver.recv(16) == b"x"
    return True


def test_the_stack_level_overrides_the_base_level(
    impl: _impl.Impl, loopback_udp: socket.socket
) -> None:
    # The two levels of an implementation: activate()/deactivate() for the guard stack,
    # activate_base() for the plugin's per-phase guard. The hooks judge by the stack's
    # level while it is set (even when it says "no checks"), else by the base's.
    denied: list[str | None] = []

    def callback(op: str, family: int, host: str | None, port: int | None) -> None:
        denied.append(host)
        raise OSError(13, "denied")  # as NetworkViolationError is

    nothing = impl.compile([])
    loopback = impl.compile([parse_rule("127.0.0.0/8", source="test")])

    def sends() -> bool:
        return _udp_send_arrives(loopback_udp)

    impl.install(callback)
    try:
        assert impl.active() is None and sends()
        impl.activate_base(nothing, True)
        assert impl.active() is nothing and not sends()
        impl.activate(loopback, False)  # the stack's level wins
        assert impl.active() is loopback and sends()
        impl.activate(None, False)  # a stack guard checking nothing still wins
        assert impl.active() is None and sends()
        impl.activate_base(loopback, False)  # changing the base under a set stack level
        assert impl.active() is None
        impl.activate_base(nothing, True)
        impl.deactivate()  # the base holds again
        assert impl.active() is nothing and not sends()
        impl.activate_base(None, False)
        assert impl.active() is None and sends()
        impl.activate_base(nothing, True)
        with pytest.raises(TypeError):
            impl.activate_base("127.0.0.0/8", False)
        assert impl.active() is nothing  # a refused call changes nothing
    finally:
        impl.uninstall()
    assert impl.active() is None  # uninstall clears both levels
    impl.install(callback)
    try:
        impl.deactivate()
        assert impl.active() is None and sends()
    finally:
        impl.uninstall()
    assert denied == ["127.0.0.1", "127.0.0.1"]


class _Item:
    """A test, as the base switch sees one: compared by identity (weakref-able here)."""


def test_the_base_switch(impl: _impl.Impl, loopback_udp: socket.socket) -> None:
    # The plugin's per-phase path: aimed once per test, then one call starts a phase and
    # one ends it, and Python hears of a phase only when it has something to report.
    denied: list[str | None] = []

    def callback(op: str, family: int, host: str | None, port: int | None) -> None:
        denied.append(host)
        raise OSError(13, "denied")

    nothing = impl.compile([])

    def sends() -> bool:
        return _udp_send_arrives(loopback_udp)

    item, other, owner = _Item(), _Item(), object()
    impl.install(callback)
    try:
        impl.aim_base(item, owner, nothing, True, True)
        assert impl.base_owner() is None and impl.active() is None and sends()  # aimed only
        assert impl.enter_base(other) is False  # not the aimed test: nothing starts
        assert impl.base_owner() is None
        assert impl.enter_base(item) is True
        assert impl.base_owner() is owner and impl.active() is nothing
        assert impl.leave_base() is None  # a clean phase: nothing for Python
        assert impl.base_owner() is None and impl.active() is None and sends()
        assert impl.leave_base() is None  # and none runs now
        assert impl.enter_base(item) is True
        assert not sends()  # denied: the phase has something to report
        assert impl.leave_base() is owner
        assert impl.enter_base(item) is True and impl.leave_base() is None  # reset per phase
        impl.mark_base()  # between phases: no-op
        assert impl.enter_base(item) is True
        impl.mark_base()  # native mode's violations, recorded without a denial here
        assert impl.leave_base() is owner
        # the stack's level wins over the base's, as with activate_base()
        assert impl.enter_base(item) is True
        impl.activate(None, False)
        assert impl.active() is None and sends()
        impl.deactivate()
        assert impl.active() is nothing
        assert impl.leave_base() is None
        # not quick (a marker problem, observed events): Python starts each phase itself
        impl.aim_base(item, owner, None, False, False)
        assert impl.enter_base(item) is False and impl.base_owner() is None
        impl.start_base()
        assert impl.base_owner() is owner and impl.active() is None
        impl.start_base()  # replaces a phase that never ended
        assert impl.leave_base() is owner
        # aimed at the next test while a phase runs: the ended phase's owner comes back
        impl.aim_base(item, owner, nothing, True, True)
        assert impl.enter_base(item) is True
        impl.aim_base(other, object(), nothing, True, True)
        assert impl.leave_base() is owner
        # refused calls change nothing
        with pytest.raises(TypeError):
            impl.aim_base(item, owner, "127.0.0.0/8", False, True)
        with pytest.raises(TypeError):
            impl.enter_base(other, "setup")  # type: ignore[call-arg]
        assert impl.enter_base(other) is True and impl.active() is nothing
        assert impl.leave_base() is None
    finally:
        impl.aim_base(item, owner, nothing, True, True)
        assert impl.enter_base(item) is True
        impl.uninstall()
    # uninstalling ends the phase and forgets the aim, and with it every reference
    assert impl.base_owner() is None and impl.active() is None
    assert impl.enter_base(item) is False
    with pytest.raises(RuntimeError, match="nothing aimed"):
        impl.start_base()
    gone = weakref.ref(item)
    del item
    gc.collect()
    assert gone() is None
    assert denied == ["127.0.0.1"]


def test_forgetting_the_aim(impl: _impl.Impl) -> None:
    item, owner = _Item(), _Item()
    impl.aim_base(item, owner, None, False, True)  # no policy: no install needed
    assert impl.enter_base(item) is True and impl.base_owner() is owner
    assert impl.leave_base() is None
    impl.aim_base(None, None, None, False, False)
    assert impl.enter_base(None) is False
    with pytest.raises(RuntimeError, match="nothing aimed"):
        impl.start_base()
    gone = weakref.ref(item), weakref.ref(owner)
    del item, owner
    gc.collect()
    assert [ref() for ref in gone] == [None, None]


def test_a_guard_on_another_thread_outlives_base_switches(
    impl: _impl.Impl, loopback_tcp: tuple[str, int]
) -> None:
    # A thread's guard entered during one phase and left during a later one: while it is
    # active its policy holds across the base switches, and when it exits the base guard
    # of the phase running then takes over (not the one it was entered under).
    _guard.install_hooks(impl)
    entered, leave = threading.Event(), threading.Event()
    try:
        open_guard = netguard.guard(netguard.Policy(["127.0.0.0/8"]))

        def worker() -> None:
            with open_guard:
                entered.set()
                leave.wait(10)

        first = netguard.guard(netguard.Policy(["127.0.0.0/8"]), test="first", size="medium")
        second = netguard.guard(netguard.Policy(), test="second", size="small")
        _guard.enter_base(first)
        thread = threading.Thread(target=worker)
        thread.start()
        assert entered.wait(10)
        assert _guard.leave_base() is first
        _guard.enter_base(second)
        with socket.create_connection(loopback_tcp, timeout=5):
            pass  # the thread's guard holds
        leave.set()
        thread.join(10)
        with pytest.raises(NetworkViolationError), socket.socket() as sock:
            sock.connect(loopback_tcp)  # now the second phase's base
        assert [v.test for v in second.violations] == ["second"]
        assert _guard.leave_base() is second
    finally:
        leave.set()
        _guard.uninstall_hooks()
