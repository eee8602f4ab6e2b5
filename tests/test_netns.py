"""The isolation that tests with outside destinations rely on (DESIGN.md section 4).

These tests use no netguard code: they show that inside run_isolated() a packet for an
outside address cannot leave (the kernel refuses it with ENETUNREACH), while loopback
works, so a test there can exercise a blocked destination safely.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap

import pytest

import netns
from netns import in_isolated_netns, run_isolated

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def run_ok(code: str, *, prelude: str = "") -> str:
    """Run prelude + dedented code isolated; insist that it succeeded; return its stdout."""
    result = run_isolated(prelude + textwrap.dedent(code))
    assert result.returncode == 0, f"exit status {result.returncode}\n{result.stderr}"
    return result.stdout.strip()


# Prints the errno name of the first failing step, or "ok" when every step succeeded.
ERRNO_OF = """
import errno, socket

def errno_of(*steps):
    try:
        for step in steps:
            step()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"
"""


def test_udp_connect_and_send_to_outside_fail_with_enetunreach() -> None:
    out = run_ok(
        """
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        print(errno_of(lambda: s.connect(("192.0.2.1", 9)), lambda: s.send(b"x")))
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        print(errno_of(lambda: u.sendto(b"x", ("192.0.2.1", 9))))
        """,
        prelude=ERRNO_OF,
    )
    assert out.split() == ["ENETUNREACH", "ENETUNREACH"]


def test_tcp_connect_to_outside_fails_with_enetunreach() -> None:
    out = run_ok(
        """
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        print(errno_of(lambda: s.connect(("198.51.100.1", 80))))
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        print(errno.errorcode[t.connect_ex(("203.0.113.7", 443))])
        """,
        prelude=ERRNO_OF,
    )
    assert out.split() == ["ENETUNREACH", "ENETUNREACH"]


def test_ipv6_connect_to_outside_fails_with_enetunreach() -> None:
    out = run_ok(
        """
        print(errno_of(lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                       .connect(("2001:db8::1", 443))))
        """,
        prelude=ERRNO_OF,
    )
    if out == "EAFNOSUPPORT":
        pytest.skip("this kernel has no IPv6")
    assert out == "ENETUNREACH"


def test_loopback_works() -> None:
    out = run_ok(
        """
        import socket

        with socket.create_server(("127.0.0.1", 0)) as server:
            with socket.create_connection(server.getsockname(), timeout=5) as client:
                peer, _ = server.accept()
                with peer:
                    client.sendall(b"ping")
                    print(peer.recv(4).decode())

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
            rx.bind(("127.0.0.1", 0))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                tx.sendto(b"pong", rx.getsockname())
            print(rx.recv(4).decode())

        if socket.has_ipv6:
            with socket.create_server(("::1", 0), family=socket.AF_INET6) as server:
                with socket.create_connection(server.getsockname()[:2], timeout=5):
                    server.accept()[0].close()
            print("v6")
        """
    )
    assert out.split()[:2] == ["ping", "pong"]


def test_namespace_has_only_loopback() -> None:
    out = run_ok(
        f"""
        import sys
        sys.path.insert(0, {TESTS_DIR!r})
        import netns
        print(netns.in_isolated_netns(), sorted(netns._interfaces()))
        """
    )
    assert out == "True ['lo']"


def test_namespaces_nest() -> None:
    # Tests spawn their own namespace while scripts/test already runs them inside one.
    out = run_ok(
        f"""
        import sys
        sys.path.insert(0, {TESTS_DIR!r})
        from netns import run_isolated
        inner = run_isolated("import socket; socket.create_server(('127.0.0.1', 0)).close()")
        print(inner.returncode, inner.stderr)
        """
    )
    assert out == "0"


def test_status_output_and_environment_pass_through() -> None:
    result = run_isolated(
        "import os, sys\n"
        "print(os.environ.get('NG_PROBE'), os.environ.get('NG_GONE'))\n"
        "print('to stderr', file=sys.stderr)\n"
        "sys.exit(3)",
        env={"NG_PROBE": "here", "NG_GONE": None},
    )
    assert result.returncode == 3
    assert result.stdout == "here None\n"
    assert result.stderr == "to stderr\n"


def test_runs_the_same_interpreter() -> None:
    assert run_ok("import sys; print(sys.executable)") == sys.executable


def test_missing_unshare_is_an_error_not_a_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="unprivileged user namespaces"):
        run_isolated("pass")


def test_unusable_unshare_is_an_error_not_a_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    false = shutil.which("false")
    assert false is not None
    monkeypatch.setattr(shutil, "which", lambda name: false)
    monkeypatch.setattr(netns, "_unshare_works", False)
    with pytest.raises(RuntimeError, match="cannot create a network namespace"):
        run_isolated("pass")


@pytest.mark.skipif(
    os.environ.get("NETGUARD_TEST_NETNS") != "1",
    reason="the suite was not started by scripts/test (no outer namespace)",
)
def test_scripts_test_runs_the_suite_isolated() -> None:
    assert in_isolated_netns()
