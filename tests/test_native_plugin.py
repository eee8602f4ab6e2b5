"""Native mode in the pytest plugin (``--netguard-native``), through real pytest runs.

Each run is a pytest subprocess (``pytester``) over a small suite whose tests use real
libraries and start real processes against loopback listeners: ``ctypes`` calls into
libc, psycopg2 (libpq), a grpcio channel (gRPC's C core), ``curl``, a ``python -c``
child (with the inherited environment, ``env={}``, ``env={"PATH": ...}``, and
``os.posix_spawn`` with an empty environment), and multiprocessing ``spawn`` and ``fork``
workers. Every inner test writes what its library or child saw (EACCES, a refusal, a
reply from the listener) to a results file, so a run shows both sides: what the code
under test got, and what netguard made of it (the outcome, the failure text, the JSON
report's events with their test ids and origins).

Outside destinations appear only in runs inside a private network namespace of their
own (``pluginrun.run_in_netns``; documentation ranges only).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from pluginrun import run, run_in_netns

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="native mode is Linux only"),
    pytest.mark.usefixtures("clean_netguard_env", "no_native_env"),
]

_SANITIZER_RUNTIMES = ("libasan", "libubsan", "liblsan", "libtsan", "libclang_rt")


@pytest.fixture
def no_native_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No native-mode variable of the outer environment reaches an inner run."""
    for name in list(os.environ):
        if name == "NETGUARD_NATIVE" or name.startswith("NETGUARD_NATIVE_"):
            monkeypatch.delenv(name)


def _sanitized() -> bool:
    """The suite runs under a sanitizer build (scripts/test with NETGUARD_SANITIZE=1):
    the ASan runtime is preloaded, and children such as curl hang with it."""
    return any(
        os.path.basename(p).startswith(_SANITIZER_RUNTIMES)
        for p in os.environ.get("LD_PRELOAD", "").split(":")
        if p
    )


# --------------------------------------------------------------------------- the inner suite

CONFTEST = r'''
import http.server, json, os, socket, struct, threading
import pytest

PG_MESSAGE = "netguard fake postgres"


def record(request, value):
    """What the code under test saw, for the outer test to read."""
    with open(os.environ["NG_RESULTS"], "a") as f:
        f.write(json.dumps({"test": request.node.nodeid, "seen": value}) + "\n")


class _Server:
    """A loopback TCP listener; `reply(conn)` answers each connection in a thread."""

    def __init__(self, reply):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._reply = reply
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.settimeout(5)
                try:
                    self._reply(conn)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        self._thread.join(10)
        self.sock.close()


def _http(conn):
    conn.recv(65536)
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


def _postgres(conn):
    (length,) = struct.unpack("!I", conn.recv(4, socket.MSG_WAITALL))
    conn.recv(length - 4, socket.MSG_WAITALL)
    body = b"SFATAL\0C28000\0M" + PG_MESSAGE.encode() + b"\0\0"
    conn.sendall(b"E" + struct.pack("!I", len(body) + 4) + body)


@pytest.fixture
def server():
    s = _Server(_http)
    yield s
    s.close()


@pytest.fixture
def postgres():
    s = _Server(_postgres)
    yield s
    s.close()


@pytest.fixture
def grpc_server():
    from concurrent import futures
    import grpc

    def ping(request, context):
        return b"pong:" + request

    s = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "ng.Test", {"Ping": grpc.unary_unary_rpc_method_handler(ping)}),))
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    yield port
    s.stop(None)


_events_files = set()


@pytest.hookimpl(trylast=True)
def pytest_runtest_call(item):
    if "NETGUARD_NATIVE_EVENTS" in os.environ:
        _events_files.add(os.environ["NETGUARD_NATIVE_EVENTS"])


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """After netguard's own unconfigure: what it left behind."""
    state = {
        "env": sorted(k for k in os.environ if k.startswith("NETGUARD_NATIVE_")),
        "ld_preload": os.environ.get("LD_PRELOAD"),
        "session_dirs": len({os.path.dirname(p) for p in _events_files}),
        "dirs_left": sorted(os.path.dirname(p) for p in _events_files
                            if os.path.exists(os.path.dirname(p))),
    }
    import sys
    native = sys.modules.get("netguard._native")
    state["loaded"] = native is not None
    state["installed"] = bool(native and native.installed())
    with open(os.environ["NG_RESULTS"], "a") as f:
        f.write(json.dumps({"test": "<unconfigure>", "seen": state}) + "\n")
'''

TESTS = r"""
import ctypes, errno, multiprocessing, os, socket, struct, subprocess, sys
import pytest
from conftest import PG_MESSAGE, record

CONNECT = ("import socket, sys; s = socket.socket(); "
           "print(s.connect_ex(('127.0.0.1', int(sys.argv[1]))))")


def libc_connect(port):
    libc = ctypes.CDLL(None, use_errno=True)
    with socket.socket() as s:
        addr = struct.pack("<HH4s8x", socket.AF_INET, socket.htons(port),
                           socket.inet_aton("127.0.0.1"))
        if libc.connect(s.fileno(), addr, len(addr)) == 0:
            return 0
        return ctypes.get_errno()


def child_connect(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port))


def python_child(port, **kwargs):
    proc = subprocess.run([sys.executable, "-c", CONNECT, str(port)], capture_output=True,
                          text=True, timeout=60, **kwargs)
    return int(proc.stdout.strip() or -1)


def test_ctypes(request, server):
    record(request, libc_connect(server.port))


def test_psycopg2(request, postgres):
    import psycopg2
    try:
        psycopg2.connect(host="127.0.0.1", port=postgres.port, user="u", dbname="d",
                         connect_timeout=10, sslmode="disable", gssencmode="disable")
    except psycopg2.OperationalError as exc:
        text = str(exc)
    record(request, "EACCES" if "Permission denied" in text
           else "reached" if PG_MESSAGE in text else text)


def test_curl(request, server):
    proc = subprocess.run(["curl", "-sS", "-m", "20", f"http://127.0.0.1:{server.port}/"],
                          capture_output=True, text=True, timeout=60)
    record(request, proc.returncode)


def test_python_child(request, server):
    record(request, python_child(server.port))


def test_python_child_empty_env(request, server):
    record(request, python_child(server.port, env={}))


def test_python_child_path_env(request, server):
    record(request, python_child(server.port, env={"PATH": "/usr/bin:/bin"}))


def test_python_child_environ_cleared(request, server):
    from unittest import mock
    with mock.patch.dict(os.environ, clear=True):  # the test empties its own environment
        seen = python_child(server.port)
    record(request, seen)


def test_posix_spawn_empty_env(request, server):
    r, w = os.pipe()
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", CONNECT, str(server.port)], {},
                         file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)])
    os.close(w)
    with os.fdopen(r) as out:
        seen = int(out.read().strip() or -1)
    os.waitpid(pid, 0)
    record(request, seen)


def test_multiprocessing_spawn(request, server):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        record(request, pool.apply(child_connect, (server.port,)))


# CPython 3.12+ warns about fork() in a process with threads (the test's server has one)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_multiprocessing_fork(request, server):
    # C code in the forked worker: the patches it inherited judge it (Python code there
    # meets the Python-level hooks it inherited as well)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        record(request, pool.apply(libc_connect, (server.port,)))


def test_grpc(request, grpc_server):
    import grpc
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server}", options=options) as channel:
        try:
            reply = channel.unary_unary("/ng.Test/Ping")(b"x", timeout=20)
            record(request, reply.decode())
        except grpc.RpcError as exc:
            record(request, exc.code().name + ": " + (exc.details() or ""))
"""

# Each inner test: what it records when its call is blocked and when it goes through.
BLOCKED_ALLOWED: dict[str, tuple[Any, Any]] = {
    "test_ctypes": (13, 0),
    "test_psycopg2": ("EACCES", "reached"),
    "test_curl": (7, 0),
    "test_python_child": (13, 0),
    "test_python_child_empty_env": (13, 0),
    "test_python_child_path_env": (13, 0),
    "test_python_child_environ_cleared": (13, 0),
    "test_posix_spawn_empty_env": (13, 0),
    "test_multiprocessing_spawn": (13, 0),
    "test_multiprocessing_fork": (13, 0),
    "test_grpc": ("UNAVAILABLE", "pong:x"),
}
# What netguard says made each call: C code in the test process, or a child process.
ORIGIN = {name: "child" for name in BLOCKED_ALLOWED} | {
    "test_ctypes": "native",
    "test_psycopg2": "native",
    "test_grpc": "native",
}
PROGRAM = {"test_curl": "curl"}


def _inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=TESTS)
    results = pytester.path / "results.jsonl"
    monkeypatch.setenv("NG_RESULTS", str(results))
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(filter(None, [str(pytester.path), os.environ.get("PYTHONPATH")])),
    )
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)  # curl connects where it is told
    return results


def _seen(results: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for line in results.read_text().splitlines():
        item = json.loads(line)
        seen[item["test"].rpartition("::")[2]] = item["seen"]
    return seen


def _report(path: Path) -> list[dict[str, Any]]:
    document = json.loads(path.read_text())
    assert document["schema"] == "netguard-report/1"
    events: list[dict[str, Any]] = document["events"]
    return events


def _selected() -> list[str]:
    names = list(BLOCKED_ALLOWED)
    if _sanitized():
        names.remove("test_curl")  # curl hangs with the preloaded ASan runtime
    return names


def _args(names: list[str]) -> list[str]:
    return ["-p", "no:randomly", *(f"test_inner.py::{name}" for name in names), "-rA"]


def _matches(seen: object, expected: object) -> bool:
    if isinstance(expected, str) and isinstance(seen, str):
        return seen.startswith(expected)
    return seen == expected


# --------------------------------------------------------------------------- blocked, allowed


def test_small_strict_blocks_each_and_fails_each_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = _inner(pytester, monkeypatch)
    names = _selected()
    report = pytester.path / "report.json"
    result = run(
        pytester,
        "--netguard-mode=strict",
        "--netguard-native",
        f"--netguard-report={report}",
        *_args(names),
    )
    seen = _seen(results)
    for name in names:
        assert _matches(seen[name], BLOCKED_ALLOWED[name][0]), (name, seen[name], result.stdout)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == len(names), result.stdout.str()
    assert "passed" not in outcomes
    result.stdout.fnmatch_lines(["*native mode on*"])
    # the failure text names the child or the C code, the operation and destination
    text = result.stdout.str()
    for name in names:
        assert f"FAILED test_inner.py::{name}" in text
    result.stdout.fnmatch_lines(
        [
            "*netguard blocked connect to 127.0.0.1:*",
            "*test: test_inner.py::test_curl (size small, phase call)",
            "*at:   child process * (*/curl)",
            "*fix:  - do not start this program in this test*",
            "*mark the test @pytest.mark.medium*",
            "*note: a child process made this call and got EACCES*",
        ]
        if "test_curl" in names
        else ["*netguard blocked connect to 127.0.0.1:*"]
    )
    result.stdout.fnmatch_lines(
        [
            "*test: test_inner.py::test_psycopg2 (size small, phase call)",
            "*at:   C code in the test process (thread MainThread)",
            "*note: C code in the test process made this call and got EACCES*",
        ]
    )
    # every event is the running test's, with where it came from
    events = _report(report)
    by_test: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_test.setdefault(e["test"].rpartition("::")[2], []).append(e)
    assert set(by_test) == set(names), sorted(by_test)
    for name in names:
        for e in by_test[name]:
            assert (e["operation"], e["verdict"], e["phase"]) == ("connect", "blocked", "call")
            # gRPC connects an AF_INET6 socket to the v4-mapped address
            assert e["destination"].startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:"))
            assert e["origin"] == ORIGIN[name], (name, e)
            if ORIGIN[name] == "child":
                assert isinstance(e["pid"], int) and e["pid"] != os.getpid()
                assert e["program"] == PROGRAM.get(name, os.path.basename(sys.executable)) or (
                    e["program"].startswith("python")
                )
    assert _seen(results)["<unconfigure>"] == {
        "env": [],
        "ld_preload": os.environ.get("LD_PRELOAD"),
        "session_dirs": 1,
        "dirs_left": [],  # the session's directory is removed
        "loaded": True,
        "installed": False,
    }


def test_medium_allows_loopback_for_each(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = _inner(pytester, monkeypatch)
    names = _selected()
    report = pytester.path / "report.json"
    result = run(
        pytester,
        "--netguard-mode=strict",
        "--netguard-native",
        "--netguard-default-size=medium",
        f"--netguard-report={report}",
        *_args(names),
    )
    assert result.parseoutcomes() == {"passed": len(names)}, result.stdout.str()
    seen = _seen(results)
    for name in names:
        assert _matches(seen[name], BLOCKED_ALLOWED[name][1]), (name, seen[name])
    # allowed calls are listed too (the report asks for them), by the loopback rule
    allowed = {
        (e["test"].rpartition("::")[2], e["origin"])
        for e in _report(report)
        if e["verdict"] == "allowed" and e["origin"] != "python"
    }
    for name in names:
        assert (name, ORIGIN[name]) in allowed, (name, sorted(allowed))
    assert all(e["rule"] == "127.0.0.0/8" for e in _report(report) if e["origin"] != "python")


def test_warn_mode_lets_each_through_with_a_warning(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = _inner(pytester, monkeypatch)
    names = _selected()
    result = run(pytester, "--netguard-mode=warn", "--netguard-native", *_args(names))
    assert result.parseoutcomes().get("passed") == len(names), result.stdout.str()
    seen = _seen(results)
    for name in names:
        assert _matches(seen[name], BLOCKED_ALLOWED[name][1]), (name, seen[name])
    text = result.stdout.str()
    for name in names:
        # one warning per test and destination, naming the test
        assert f"test: test_inner.py::{name} (size small, phase call)" in text, name
    result.stdout.fnmatch_lines(
        [
            "*NetworkViolationWarning: netguard let through connect to 127.0.0.1:*",
            "*network call(s) let through (warn mode):*",
        ]
    )


def test_warn_mode_under_w_error_fails_the_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warnings filter that makes the warning an error fails the test, as in strict
    mode (the child's call itself already went through)."""
    results = _inner(pytester, monkeypatch)
    result = run(
        pytester,
        "--netguard-mode=warn",
        "--netguard-native",
        "-W",
        "error::netguard.NetworkViolationWarning",
        *_args(["test_python_child"]),
    )
    assert result.parseoutcomes().get("failed") == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*netguard blocked connect to 127.0.0.1:*",
            "*note: warn mode let the call through, but a warnings filter turned*",
        ]
    )
    assert _seen(results)["test_python_child"] == 0


# --------------------------------------------------------------------------- outside

OUTSIDE = r"""
import ctypes, errno, socket, struct, subprocess, sys
import pytest

UDP = ("import errno, socket, sys\n"
       "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
       "print(s.connect_ex((sys.argv[1], 53)))")


def libc_udp(host):
    libc = ctypes.CDLL(None, use_errno=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        addr = struct.pack("<HH4s8x", socket.AF_INET, socket.htons(53), socket.inet_aton(host))
        return 0 if libc.connect(s.fileno(), addr, len(addr)) == 0 else ctypes.get_errno()


def child_udp(host, **kwargs):
    out = subprocess.run([sys.executable, "-c", UDP, host], capture_output=True, text=True,
                         timeout=60, **kwargs).stdout
    return int(out.strip() or -1)


def test_small(request):
    assert libc_udp("192.0.2.1") == errno.EACCES
    assert child_udp("198.51.100.1", env={}) == errno.EACCES


@pytest.mark.large
def test_large(request):
    assert libc_udp("192.0.2.1") == errno.ENETUNREACH
    assert child_udp("198.51.100.1", env={}) == errno.ENETUNREACH


@pytest.mark.medium
@pytest.mark.netguard(allow=["203.0.113.7:53"])
def test_rule(request):
    assert libc_udp("203.0.113.7") == errno.ENETUNREACH
    assert child_udp("203.0.113.7") == errno.ENETUNREACH
    assert child_udp("203.0.113.8") == errno.EACCES
"""


def _blocked_in_netns(
    pytester: pytest.Pytester, name: str, source: str
) -> tuple[pytest.RunResult, set[tuple[str, str, str, str]]]:
    """Run the module ``source`` in strict native mode, in a network namespace of its
    own: the result, and the blocked events of its JSON report, each as (test, phase,
    destination, origin)."""
    pytester.makepyfile(**{name: source})
    report = pytester.path / "report.json"
    result = run_in_netns(
        pytester,
        "--netguard-mode=strict",
        "--netguard-native",
        f"--netguard-report={report}",
        "-rA",
    )
    blocked = {
        (e["test"].rpartition("::")[2], e["phase"], e["destination"], e["origin"])
        for e in _report(report)
        if e["verdict"] == "blocked"
    }
    return result, blocked


def test_outside_destinations_by_size_and_rule(pytester: pytest.Pytester) -> None:
    result, blocked = _blocked_in_netns(pytester, "test_outside", OUTSIDE)
    outcomes = result.parseoutcomes()
    assert outcomes == {"failed": 2, "passed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "FAILED test_outside.py::test_small*",
            "FAILED test_outside.py::test_rule*",
        ]
    )
    assert blocked == {
        ("test_small", "call", "192.0.2.1:53", "native"),
        ("test_small", "call", "198.51.100.1:53", "child"),
        ("test_rule", "call", "203.0.113.8:53", "child"),
    }


@pytest.mark.skipif(
    int(pytest.__version__.split(".")[0]) < 9, reason="pytest's subtests came with pytest 9"
)
def test_native_mode_holds_after_a_subtest(pytester: pytest.Pytester) -> None:
    # a subtest's report comes in the middle of the call phase: C code and children stay
    # under the test's policy after it
    inner = OUTSIDE.split("def test_small")[0] + """
def test_after_a_subtest(subtests):
    with subtests.test(msg="first"):
        pass
    assert libc_udp("192.0.2.2") == errno.EACCES
    assert child_udp("198.51.100.2", env={}) == errno.EACCES
"""
    result, blocked = _blocked_in_netns(pytester, "test_sub", inner)
    result.stdout.fnmatch_lines(["FAILED test_sub.py::test_after_a_subtest*"])
    assert blocked == {
        ("test_after_a_subtest", "call", "192.0.2.2:53", "native"),
        ("test_after_a_subtest", "call", "198.51.100.2:53", "child"),
    }


def test_outside_destination_in_warn_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_warn=OUTSIDE.replace("== errno.EACCES", "== errno.ENETUNREACH").split(
            "@pytest.mark.large"
        )[0]
    )
    result = run_in_netns(pytester, "--netguard-mode=warn", "--netguard-native", "-rA")
    assert result.parseoutcomes().get("passed") == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*NetworkViolationWarning: netguard let through connect to 192.0.2.1:53*",
            "*at:   C code in the test process*",
            "*NetworkViolationWarning: netguard let through connect to 198.51.100.1:53*",
            "*at:   child process *",
        ]
    )


# --------------------------------------------------------------------------- switch and header

OFF = r"""
import os, subprocess, sys

def test_nothing_native(request):
    assert "netguard._native" not in sys.modules
    assert "netguard.native" not in sys.modules
    assert "netguard._native_phases" not in sys.modules
    assert not [k for k in os.environ if k.startswith("NETGUARD_NATIVE_")]
    assert os.environ.get("LD_PRELOAD") == os.environ.get("NG_OUTER_LD_PRELOAD")
    out = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('LD_PRELOAD'))"],
                         env={}, capture_output=True, text=True).stdout
    assert "_preload" not in out
"""


@pytest.mark.parametrize(
    ("args", "header"),
    [
        (["--netguard-mode=strict"], "netguard: mode strict, default size small, *"),
        (
            ["--netguard-mode=off", "--netguard-native"],
            "netguard: off (command line --netguard-mode); nothing is checked; native mode "
            "needs mode strict or warn: off",
        ),
        ([], "netguard: off (default); nothing is checked"),
    ],
)
def test_native_off_loads_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], header: str
) -> None:
    monkeypatch.setenv("NG_OUTER_LD_PRELOAD", os.environ.get("LD_PRELOAD", ""))
    if "LD_PRELOAD" not in os.environ:
        monkeypatch.setenv("LD_PRELOAD", "")
    pytester.makepyfile(test_off=OFF)
    result = run(pytester, *args)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([header])
    assert "native mode on" not in result.stdout.str()


def test_native_from_the_environment_and_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    monkeypatch.setenv("NETGUARD_NATIVE", "1")
    result = run(pytester, "--netguard-mode=warn")
    result.stdout.fnmatch_lines(["netguard: mode warn, *; native mode on"])
    monkeypatch.delenv("NETGUARD_NATIVE")
    pytester.makeini("[pytest]\nnetguard_native = yes\nnetguard_mode = strict\n")
    result = run(pytester)
    result.stdout.fnmatch_lines(["netguard: mode strict, *; native mode on"])
    monkeypatch.setenv("NETGUARD_NATIVE", "sometimes")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*netguard: NETGUARD_NATIVE='sometimes' from the environment: expected one of*"]
    )


def test_not_linux_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import sys, pytest

        REAL = sys.platform

        @pytest.hookimpl(tryfirst=True)
        def pytest_configure(config):
            sys.platform = "darwin"  # what netguard's configure sees

        def pytest_sessionstart(session):
            sys.platform = REAL  # for everything after it
        """
    )
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = run(pytester, "--netguard-mode=strict", "--netguard-native")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*netguard: native mode (command line --netguard-native) needs Linux*this is darwin*"]
    )
    # with mode off, native mode does nothing, anywhere
    result = run(pytester, "--netguard-native")
    assert result.ret == 0, result.stderr.str()


def test_curl_is_installed() -> None:
    """The curl tests above need it: install Debian's curl (apt-get install curl)."""
    assert shutil.which("curl"), "curl is missing: apt-get install curl"


def test_under_xdist_the_controller_reports_every_worker_event(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = _inner(pytester, monkeypatch)
    names = ["test_ctypes", "test_python_child", "test_python_child_empty_env"]
    report = pytester.path / "report.json"
    result = run(
        pytester,
        "-n",
        "2",
        "--netguard-mode=strict",
        "--netguard-native",
        f"--netguard-report={report}",
        *_args(names),
    )
    assert result.parseoutcomes().get("failed") == len(names), result.stdout.str()
    result.stdout.fnmatch_lines(["netguard: mode strict, *; native mode on"])
    assert {n: _seen(results)[n] for n in names} == dict.fromkeys(names, 13)
    blocked = {
        (e["test"].rpartition("::")[2], e["origin"])
        for e in _report(report)
        if e["verdict"] == "blocked"
    }
    assert blocked == {(n, ORIGIN[n]) for n in names}
    summary = result.stdout.str().split("= netguard =")[1]
    assert "[NG001] (child process " in summary
    assert "[NG001] (C code in the test process)" in summary


BAD_POLICY = r"""
import os, subprocess, sys

def test_child_with_its_own_policy_variable():
    code = "import socket; print(socket.socket().connect_ex(('127.0.0.1', 9)))"
    env = {"NETGUARD_NATIVE_POLICY": "/nonexistent/policy.ngp"}  # kept: the child's own
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True).stdout
    assert out.strip() == "13"  # fails closed
"""


@pytest.mark.parametrize("mode", ["strict", "warn"])
def test_a_child_that_cannot_read_its_policy(pytester: pytest.Pytester, mode: str) -> None:
    """A child's own NETGUARD_NATIVE_* variables are kept; one that names no usable policy
    denies every call (in warn mode too) and says why, and the test fails in strict."""
    pytester.makepyfile(test_bad=BAD_POLICY)
    result = run(pytester, f"--netguard-mode={mode}", "--netguard-native", "-rA")
    result.stdout.fnmatch_lines(
        [
            "*PytestWarning: netguard: native mode in child process * (python*): cannot open "
            "the policy /nonexistent/policy.ngp*every network call is denied",
        ]
    )
    if mode == "strict":
        assert result.parseoutcomes().get("failed") == 1, result.stdout.str()
        result.stdout.fnmatch_lines(["*netguard blocked connect to 127.0.0.1:9*"])
    else:
        assert result.parseoutcomes().get("passed") == 1, result.stdout.str()
        result.stdout.fnmatch_lines(["*NetworkViolationWarning: netguard let through*"])


ONCE = r"""
import socket

def test_python_connect(request):
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(server.getsockname())  # UDP: nothing is sent
        socket.getaddrinfo("localhost", 80)
"""


def test_python_code_is_judged_once(pytester: pytest.Pytester) -> None:
    """A call of Python code is judged by the Python-level hooks; native mode does not
    judge the C call below them (_socket's) again: one warning, one event."""
    pytester.makepyfile(test_once=ONCE)
    report = pytester.path / "report.json"
    result = run(
        pytester,
        "--netguard-mode=warn",
        "--netguard-native",
        f"--netguard-report={report}",
        "-rA",
    )
    assert result.parseoutcomes() == {"passed": 1, "warnings": 1}, result.stdout.str()
    events = [(e["operation"], e["verdict"], e["origin"]) for e in _report(report)]
    assert events == [
        ("connect", "warned", "python"),
        ("getaddrinfo", "allowed", "python"),
    ], events
