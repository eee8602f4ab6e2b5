"""The suite's backstop (tests/backstop.py): nothing reaches a non-loopback address from a
process that is not inside a private network namespace.

Every call to an outside destination here is made inside a namespace of its own (with
``NETGUARD_TESTS_ASSUME_SHARED_NETNS=1``, so that the backstop acts as it would outside
one): if the backstop failed to stop it, the kernel would, with ENETUNREACH, and no packet
would exist either way. That ENETUNREACH is also what tells "stopped before the system
call" apart from "reached the kernel".
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import backstop
from netns import run_isolated
from pluginrun import run_in_netns

TESTS = os.path.dirname(os.path.abspath(__file__))

#: The environment of a child that believes it is not isolated, and runs the backstop
#: through backstop_site/sitecustomize.py as the children of a plain `pytest` session do.
AS_IF_SHARED = {
    backstop.ASSUME_SHARED_VAR: "1",
    backstop.ENABLE_VAR: "1",
    "PYTHONPATH": backstop.SITE_DIR,
}

INET = SimpleNamespace(family=socket.AF_INET)
INET6 = SimpleNamespace(family=socket.AF_INET6)


# --------------------------------------------------------------------------- the judge


@pytest.mark.parametrize(
    ("event", "args"),
    [
        ("socket.connect", (INET, ("127.0.0.1", 80))),
        ("socket.connect", (INET, ("127.1", 80))),
        ("socket.connect", (INET, ("127.255.255.254", 80))),
        ("socket.connect", (INET, ("0.0.0.0", 80))),
        ("socket.connect", (INET, ("", 80))),
        ("socket.connect", (INET, ("localhost", 80))),
        ("socket.connect", (INET, (b"127.0.0.1", 80))),
        ("socket.connect", (INET6, ("::1", 80, 0, 0))),
        ("socket.connect", (INET6, ("::1%lo", 80, 0, 0))),
        ("socket.connect", (INET6, ("::ffff:127.0.0.1", 80, 0, 0))),
        ("socket.connect", (INET6, ("::", 80, 0, 0))),
        ("socket.sendto", (INET, ("127.0.0.1", 9))),
        ("socket.sendmsg", (INET, None)),  # a connected socket: its connect was judged
        ("socket.connect", (SimpleNamespace(family=socket.AF_UNIX), "/run/x.sock")),
        ("socket.getaddrinfo", ("localhost", 80, 0, 0, 0)),
        ("socket.getaddrinfo", (None, 80, 0, 0, 0)),
        ("socket.getaddrinfo", ("192.0.2.1", 80, 0, 0, 0)),  # numeric: no lookup
        ("socket.getaddrinfo", ("2001:db8::1", 80, 0, 0, 0)),
        ("socket.gethostbyname", ("localhost",)),
        ("socket.gethostbyaddr", ("127.0.0.1",)),
        ("socket.getnameinfo", (("::1", 80),)),
        ("socket.bind", (INET, ("0.0.0.0", 0))),  # not an outbound event
        ("open", ("/etc/hosts", "r", 0)),
    ],
)
def test_local_calls_pass(event: str, args: tuple[object, ...]) -> None:
    assert backstop.outbound(event, args) is None


@pytest.mark.parametrize(
    ("event", "args", "what"),
    [
        ("socket.connect", (INET, ("192.0.2.1", 80)), "connect to ('192.0.2.1', 80)"),
        ("socket.connect", (INET, ("<broadcast>", 9)), "connect to ('<broadcast>', 9)"),
        ("socket.connect", (INET, ("db.localhost", 5432)), "connect to ('db.localhost', 5432)"),
        ("socket.connect", (INET6, ("2001:db8::1", 443, 0, 0)), "connect to ('2001:db8::1'"),
        ("socket.connect", (INET6, ("::ffff:192.0.2.1", 443, 0, 0)), "connect to"),
        ("socket.sendto", (INET, ("198.51.100.7", 53)), "sendto to ('198.51.100.7', 53)"),
        ("socket.sendmsg", (INET, ("203.0.113.5", 53)), "sendmsg to ('203.0.113.5', 53)"),
        ("socket.sendto", (SimpleNamespace(family=17), b"frame"), "of family 17"),
        ("socket.getaddrinfo", ("netguard.example", 443, 0, 0, 0), "getaddrinfo of"),
        ("socket.getaddrinfo", ("app.localhost", 443, 0, 0, 0), "getaddrinfo of"),
        ("socket.gethostbyname", ("netguard.example",), "gethostbyname of"),
        ("socket.gethostbyaddr", ("192.0.2.1",), "gethostbyaddr of '192.0.2.1'"),
        ("socket.getnameinfo", (("192.0.2.1", 80),), "getnameinfo of '192.0.2.1'"),
    ],
)
def test_outside_calls_are_named(event: str, args: tuple[object, ...], what: str) -> None:
    found = backstop.outbound(event, args)
    assert found is not None and what in found


# --------------------------------------------------------------------------- a child


PROBE = """
import errno, os, socket

def connect_ex(address):
    with socket.socket() as s:
        status = s.connect_ex(address)
    if status:
        raise OSError(status, os.strerror(status))

def attempt(name, call):
    try:
        call()
    except OSError as exc:
        print(name, errno.errorcode.get(exc.errno, exc.errno))
    except BaseException as exc:
        print(name, type(exc).__name__)
    else:
        print(name, "ok")

tcp = socket.socket()
tcp.settimeout(5)
attempt("connect", lambda: tcp.connect(("192.0.2.1", 80)))
attempt("connect_ex", lambda: connect_ex(("203.0.113.7", 443)))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attempt("sendto", lambda: udp.sendto(b"x", ("198.51.100.7", 53)))
attempt("sendmsg", lambda: udp.sendmsg([b"x"], [], 0, ("198.51.100.7", 53)))
attempt("getaddrinfo", lambda: socket.getaddrinfo("netguard.example", 443))
attempt("gethostbyaddr", lambda: socket.gethostbyaddr("192.0.2.1"))
attempt("numeric", lambda: socket.getaddrinfo("192.0.2.1", 443))
with socket.create_server(("127.0.0.1", 0)) as server:
    attempt("loopback", lambda: socket.create_connection(server.getsockname(), 5).close())
attempt("unix", lambda: [s.close() for s in socket.socketpair()])
attempt("localhost", lambda: socket.getaddrinfo("localhost", 80))
"""


def _attempts(output: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in output.splitlines())


def test_a_child_outside_a_namespace_is_stopped_before_the_system_call() -> None:
    result = run_isolated(PROBE, env=AS_IF_SHARED)
    assert result.returncode == 0, result.stderr
    assert _attempts(result.stdout) == {
        "connect": "OutboundCallBlocked",
        "connect_ex": "OutboundCallBlocked",
        "sendto": "OutboundCallBlocked",
        "sendmsg": "OutboundCallBlocked",
        "getaddrinfo": "OutboundCallBlocked",
        "gethostbyaddr": "OutboundCallBlocked",
        "numeric": "ok",
        "loopback": "ok",
        "unix": "ok",
        "localhost": "ok",
    }
    # said at once on stderr, in case the code under test swallows it
    assert (
        "netguard's test backstop stopped connect to ('192.0.2.1', 80) before the "
        "system call" in result.stderr
    )


def test_without_the_backstop_the_same_calls_reach_the_kernel() -> None:
    # The control: in its namespace, and not told otherwise, the child runs no backstop;
    # the same connects get as far as the kernel, which has no route for them.
    result = run_isolated(PROBE, env={**AS_IF_SHARED, backstop.ASSUME_SHARED_VAR: None})
    assert result.returncode == 0, result.stderr
    attempts = _attempts(result.stdout)
    assert attempts["connect"] == attempts["connect_ex"] == "ENETUNREACH"
    assert attempts["sendto"] == attempts["sendmsg"] == "ENETUNREACH"
    assert "backstop" not in result.stderr


def test_sitecustomize_runs_the_one_it_shadows(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(
        "import builtins\nbuiltins.SHADOWED_SITECUSTOMIZE_RAN = True\n", encoding="utf-8"
    )
    code = "import builtins; print(getattr(builtins, 'SHADOWED_SITECUSTOMIZE_RAN', False))"
    env = {**AS_IF_SHARED, "PYTHONPATH": os.pathsep.join([backstop.SITE_DIR, str(tmp_path)])}
    result = run_isolated(code, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


# --------------------------------------------------------------------------- a session


SESSION = """
import socket

def test_outside_connect():
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("192.0.2.1", 80))
    finally:
        s.close()

def test_swallowed_sendto():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"x", ("198.51.100.7", 53))
        except BaseException:
            pass  # the backstop's exception, hidden: the phase fails all the same

def test_loopback():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", ("127.0.0.1", 9))
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_session_outside_a_namespace_fails_the_tests_that_reach_out(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    # The suite's own conftest, loaded as a plugin by a session that believes it shares
    # the host's network: it installs the backstop in itself and in its xdist workers.
    pytester.makepyfile(test_reach=SESSION)
    env = {
        backstop.ASSUME_SHARED_VAR: "1",
        backstop.ENABLE_VAR: None,
        "PYTHONPATH": os.pathsep.join([TESTS, os.fspath(pytester.path)]),
    }
    result = run_in_netns(pytester, "-p", "conftest", "-rf", *workers, env=env)
    result.assert_outcomes(passed=1, failed=2)
    failed = {line.split(" ")[1] for line in result.outlines if line.startswith("FAILED ")}
    assert failed == {
        "test_reach.py::test_outside_connect",
        "test_reach.py::test_swallowed_sendto",
    }
    result.stdout.fnmatch_lines(
        ["E *OutboundCallBlocked: netguard's test backstop stopped connect to ('192.0.2.1', 80)*"]
    )
    result.stdout.fnmatch_lines(
        ["netguard's test backstop stopped sendto to ('198.51.100.7', 53) before the system*"]
    )
    result.stdout.no_fnmatch_line("*ENETUNREACH*")
    result.stdout.no_fnmatch_line("*Network is unreachable*")


def test_this_session_runs_the_backstop_unless_isolated() -> None:
    # What tests/conftest.py did for this session: the backstop where the namespace is
    # shared (or said to be), and children told to run it too; nothing where isolated.
    if backstop.session_isolated():
        assert not backstop.is_installed()
    else:
        assert backstop.is_installed()
        assert os.environ[backstop.ENABLE_VAR] == "1"
        assert backstop.SITE_DIR in os.environ["PYTHONPATH"].split(os.pathsep)
        code = "import sys; print(sys.modules['backstop'].is_installed())"
        child = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert child.stdout.strip() == "True"
