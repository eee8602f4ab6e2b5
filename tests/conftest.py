"""Shared fixtures: both implementations under one fixture, and loopback endpoints.

``impl`` runs a test once against the C core and once against the pure-Python reference.
The C case imports ``netguard._netguard`` directly, so a broken or missing build fails the
test instead of skipping it.

The loopback fixtures give real sockets on 127.0.0.1 (and ::1). Tests send packets only to
loopback; outside destinations appear only where they are denied (strict mode raises before
anything is sent) or inside ``netns.run_isolated`` / ``pluginrun.run_in_netns`` (a private
network namespace).

The backstop (tests/backstop.py): when the session is not inside a private network
namespace (plain ``pytest``, another OS, cibuildwheel), a call to a non-loopback
destination that gets past netguard is stopped before the system call, here, in xdist
workers and in the Python processes the tests start; such a call fails the test's phase
even when the test swallowed the exception.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

import backstop
from netguard import _guard, _impl

IMPLS = ("c", "python")


# --------------------------------------------------------------------------- backstop


def pytest_configure(config: pytest.Config) -> None:
    if backstop.session_isolated():
        return
    backstop.install()
    # Python children (pytester runs, xdist workers, helper scripts) install it too; the
    # workers are started after this hook, so they inherit it.
    backstop.child_environment(os.environ)


def _backstop_phase() -> Iterator[None]:
    try:
        result = yield
    except BaseException:
        backstop.take_blocked()  # the phase failed already; the exception says why
        raise
    stopped = backstop.take_blocked()
    if stopped:  # the test swallowed OutboundCallBlocked
        pytest.fail("\n".join(stopped), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _backstop_phase())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _backstop_phase())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    return (yield from _backstop_phase())


# --------------------------------------------------------------------------- impl


def _socket_state() -> dict[str, object]:
    """Everything the hooks patch, to check that a test left it as it found it."""
    import _socket

    state: dict[str, object] = {f"socket.socket.{k}": v for k, v in socket.socket.__dict__.items()}
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        state[f"socket.{name}"] = getattr(socket, name)
        state[f"_socket.{name}"] = getattr(_socket, name)
    state["socket.getnameinfo"] = socket.getnameinfo
    state["_socket.getnameinfo"] = _socket.getnameinfo
    return state


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> Iterator[_impl.Impl]:
    """The implementation under test, made current for the test; restored afterwards."""
    if request.param == "c":
        # Imported directly: a broken build is an error here, never a skip.
        import netguard._netguard  # noqa: F401
    before = _socket_state()
    previous = _impl.use(request.param)
    current = _impl.current()
    try:
        yield current
    finally:
        _impl.use(previous)
    # Every guard a test entered must have been left, and left nothing behind.
    assert _guard.active_guard() is None, "a guard was left active"
    assert not current.is_installed(), f"the {current.name} hooks were left installed"
    assert _socket_state() == before, "the socket module was left patched"


@pytest.fixture
def loopback_tcp() -> Iterator[tuple[str, int]]:
    """A TCP listener on 127.0.0.1: yields (host, port); accepts and echoes in a thread.

    Each accepted connection is read until EOF and what arrived is appended to the
    ``received`` list attribute of the fixture's server, reachable as
    ``loopback_tcp_server``. Closed cleanly afterwards.
    """
    with _TcpServer(socket.AF_INET, "127.0.0.1") as server:
        yield server.address


@pytest.fixture
def loopback_tcp_server() -> Iterator[_TcpServer]:
    """The server object behind a loopback TCP listener (``.address``, ``.received``)."""
    with _TcpServer(socket.AF_INET, "127.0.0.1") as server:
        yield server


@pytest.fixture
def loopback_tcp6() -> Iterator[tuple[str, int]]:
    """A TCP listener on ::1 (skipped where the host has no IPv6 loopback)."""
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback (::1) on this host")
    with _TcpServer(socket.AF_INET6, "::1") as server:
        yield server.address


@pytest.fixture
def loopback_udp() -> Iterator[socket.socket]:
    """A UDP socket bound to 127.0.0.1 (its address is ``sock.getsockname()``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        yield sock


@pytest.fixture
def loopback_udp6() -> Iterator[socket.socket]:
    """A UDP socket bound to ::1 (skipped where the host has no IPv6 loopback)."""
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback (::1) on this host")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        sock.settimeout(5)
        yield sock


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove proxy settings, so HTTP clients connect where the test says."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


class _TcpServer:
    """A loopback TCP listener serving in a daemon thread until closed."""

    def __init__(self, family: socket.AddressFamily, host: str) -> None:
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.bind((host, 0))
        self._listener.listen(256)
        self._listener.settimeout(0.1)
        self.address: tuple[str, int] = (host, self._listener.getsockname()[1])
        self.received: list[bytes] = []
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-server", daemon=True)

    def __enter__(self) -> _TcpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.settimeout(5)
                chunks = []
                try:
                    while chunk := conn.recv(65536):
                        chunks.append(chunk)
                except OSError:
                    pass
                self.received.append(b"".join(chunks))


@pytest.fixture
def clean_netguard_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NETGUARD_* variable from the outer environment reaches an inner pytest run."""
    from pluginrun import NETGUARD_VARS

    for name in NETGUARD_VARS:
        monkeypatch.delenv(name, raising=False)
