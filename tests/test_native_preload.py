"""Native mode in child processes: the preload library, through real processes.

Every test starts real programs (``python -c``, ``curl``, a C probe, multiprocessing
workers) with the environment :meth:`NativeSession.child_env` gives, and checks what the
program saw (EACCES, or a real connection to a loopback listener) and what the events
file says (operation, destination, verdict, and the test id and size the process was
labelled with). Outside destinations appear only inside a private network namespace
(``netns.run_isolated``): there an allowed call meets ENETUNREACH and a denied one
EACCES, before any packet exists.

The C judge is also compared with the pure-Python reference on random rules and
destinations (hypothesis), through the library's test entry ``ng_native_judge_for_tests``.
"""

from __future__ import annotations

import ctypes
import errno
import http.server
import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netguard import _impl, native
from netguard.native import NativeEvent, NativeSession
from netguard.policy import PolicySet
from netguard.rules import Rule, parse_rule

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="native mode is Linux only"
)

POLICIES = PolicySet()
CONFIGURED = PolicySet(
    [
        parse_rule("192.0.2.0/24:443", source="test"),
        parse_rule("[2001:db8::/32]:443", source="test"),
    ]
)

# A child's connect: prints "ok" or the errno, as JSON.
CONNECT = """
import json, socket, sys
host, port, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
try:
    if kind == "sendto":
        s.sendto(b"x", (host, port))
    elif kind == "sendmsg":
        s.sendmsg([b"x"], [], 0, (host, port))
    else:
        s.connect((host, port))
    result = "ok"
except OSError as exc:
    result = exc.errno
finally:
    s.close()
print(json.dumps(result))
"""


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def session(tmp_path: Path) -> Iterator[NativeSession]:
    with NativeSession(tmp_path / "native") as s:
        yield s


@pytest.fixture
def test_id(request: pytest.FixtureRequest) -> str:
    return str(request.node.nodeid)


def env_for(
    session: NativeSession,
    size: str,
    mode: str,
    test_id: str,
    policies: PolicySet = POLICIES,
    **kwargs: Any,
) -> dict[str, str]:
    return {
        **os.environ,
        **session.child_env(policies.for_test(size), test_id, size, mode, **kwargs),
    }


_SANITIZER_RUNTIMES = ("libasan", "libubsan", "liblsan", "libtsan", "libclang_rt")


@pytest.fixture
def uninstrumented(monkeypatch: pytest.MonkeyPatch) -> None:
    """For children that are no sanitizer build (curl; valgrind, which refuses one): the
    sanitizer build of the suite (``NETGUARD_SANITIZE=1 scripts/test``) preloads the ASan
    runtime into every process, and curl inherits it and hangs. The children's
    LD_PRELOAD is built from this process's, so the runtime is left out here."""
    preload = os.environ.get("LD_PRELOAD", "")
    kept = [
        p
        for p in preload.split(":")
        if p and not os.path.basename(p).startswith(_SANITIZER_RUNTIMES)
    ]
    if kept:
        monkeypatch.setenv("LD_PRELOAD", ":".join(kept))
    else:
        monkeypatch.delenv("LD_PRELOAD", raising=False)


def run(
    argv: Sequence[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_isolated_argv(
    argv: Sequence[str], child_env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """argv in a private network namespace (loopback only) with child_env added: for
    every call that would leave the host if netguard failed to stop it (a lookup of an
    outside name, a send to an outside address). Only argv gets child_env, not the
    Python that starts it there."""
    from netns import run_isolated

    code = (
        "import os, subprocess, sys\n"
        f"env = {{**os.environ, **{child_env!r}}}\n"
        f"r = subprocess.run({list(argv)!r}, env=env, capture_output=True, text=True)\n"
        "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); sys.exit(r.returncode)\n"
    )
    return run_isolated(code, timeout=timeout)


def python_connect(
    session: NativeSession,
    size: str,
    mode: str,
    test_id: str,
    host: str,
    port: int,
    kind: str = "tcp",
) -> tuple[object, list[NativeEvent]]:
    proc = run(
        [sys.executable, "-c", CONNECT, host, str(port), kind],
        env_for(session, size, mode, test_id),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), session.drain()


def only(events: list[NativeEvent]) -> NativeEvent:
    assert len(events) == 1, events
    return events[0]


def assert_labels(event: NativeEvent, test_id: str, size: str, mode: str = "strict") -> None:
    assert (event.test, event.size, event.mode) == (test_id, size, mode)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/native_probe.c, compiled (warnings are errors)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build tests/native_probe.c")
    out = tmp_path_factory.mktemp("probe") / "native_probe"
    source = Path(__file__).with_name("native_probe.c")
    subprocess.run(
        [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", str(source), "-o", str(out)],
        check=True,
        timeout=120,
    )
    return out


@pytest.fixture(scope="module")
def shim() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(native.shim_path()))
    lib.ng_native_judge_for_tests.restype = ctypes.c_int
    lib.ng_native_judge_for_tests.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_long,
    ]
    lib.ng_native_env_for_tests.restype = ctypes.c_int
    lib.ng_native_env_for_tests.argtypes = [
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    return lib


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 serving tmp_path (index.html says "hello")."""
    (tmp_path / "index.html").write_text("hello")

    def handler(*args: Any) -> _Quiet:
        return _Quiet(*args, directory=str(tmp_path))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# --------------------------------------------------------------------------- python -c


def test_tcp_connect_blocked_in_small_strict(session, test_id, loopback_tcp_server):
    host, port = loopback_tcp_server.address
    result, events = python_connect(session, "small", "strict", test_id, host, port)
    assert result == errno.EACCES
    event = only(events)
    assert (event.op, event.verdict, event.family) == ("connect", "denied", socket.AF_INET)
    assert (event.host, event.port, event.dest) == (host, port, f"{host}:{port}")
    assert event.blocked and event.program.startswith("python")
    assert_labels(event, test_id, "small")
    assert loopback_tcp_server.accepted == 0


def test_tcp_connect_allowed_in_medium(session, test_id, loopback_tcp_server):
    host, port = loopback_tcp_server.address
    result, events = python_connect(session, "medium", "strict", test_id, host, port)
    assert result == "ok"
    assert events == []


def test_warn_mode_lets_the_call_through_and_records_it(session, test_id, loopback_tcp_server):
    host, port = loopback_tcp_server.address
    result, events = python_connect(session, "small", "warn", test_id, host, port)
    assert result == "ok"
    event = only(events)
    assert (event.op, event.verdict, event.dest) == ("connect", "warned", f"{host}:{port}")
    assert not event.blocked
    assert_labels(event, test_id, "small", "warn")


@pytest.mark.parametrize("kind", ["sendto", "sendmsg"])
def test_udp_send_blocked_in_small_and_delivered_in_medium(session, test_id, loopback_udp, kind):
    host, port = loopback_udp.getsockname()
    result, events = python_connect(session, "small", "strict", test_id, host, port, kind)
    assert result == errno.EACCES
    event = only(events)
    assert (event.op, event.dest) == (kind, f"{host}:{port}")
    assert_labels(event, test_id, "small")

    result, events = python_connect(session, "medium", "strict", test_id, host, port, kind)
    assert result == "ok" and events == []
    assert loopback_udp.recv(16) == b"x"


def test_ipv6_loopback(session, test_id, loopback_udp6):
    host, port = loopback_udp6.getsockname()[:2]
    result, events = python_connect(session, "small", "strict", test_id, host, port, "sendto")
    assert result == errno.EACCES
    assert only(events).dest == f"[::1]:{port}"
    result, events = python_connect(session, "medium", "strict", test_id, host, port, "sendto")
    assert result == "ok" and events == []


LOOKUP = """
import json, socket, sys
results = {}
for name in sys.argv[1:]:
    try:
        socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
        results[name] = "ok"
    except socket.gaierror as exc:
        results[name] = "gaierror"
    except OSError as exc:
        results[name] = exc.errno
print(json.dumps(results))
"""


def test_getaddrinfo_follows_the_dns_policy(session, test_id):
    names = ["localhost", "db.example.invalid", "127.0.0.1"]
    env = session.child_env(POLICIES.for_test("small"), test_id, "small", "strict")
    proc = run_isolated_argv([sys.executable, "-c", LOOKUP, *names], env)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    # localhost is the one name small may look up; a numeric host is no lookup
    assert results["localhost"] == "ok"
    assert results["127.0.0.1"] == "ok"
    assert results["db.example.invalid"] == errno.EACCES
    event = only(session.drain())
    assert (event.op, event.family, event.host, event.port) == (
        "getaddrinfo",
        0,
        "db.example.invalid",
        80,
    )
    assert event.dest == "dns:db.example.invalid:80"
    assert_labels(event, test_id, "small")


def test_lookups_allowed_by_a_host_rule_teach_their_addresses(session, test_id, loopback_tcp):
    """A host rule allows the lookup and then the addresses it found, on its ports only."""
    _, port = loopback_tcp
    policy = _impl.load("c").compile([parse_rule(f"localhost:{port}", source="test")])
    code = textwrap.dedent(f"""
        import json, socket
        def connect(port):
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", port))
                return "ok"
            except OSError as exc:
                return exc.errno
            finally:
                s.close()
        before = connect({port})
        socket.getaddrinfo("localhost", {port}, socket.AF_INET)
        print(json.dumps([before, connect({port}), connect({port + 1 if port < 65535 else 1})]))
    """)
    env = {**os.environ, **session.child_env(policy, test_id, "small", "strict")}
    proc = run([sys.executable, "-c", code], env)
    assert proc.returncode == 0, proc.stderr
    before, after, other_port = json.loads(proc.stdout)
    assert before == errno.EACCES
    assert after == "ok"
    assert other_port == errno.EACCES
    assert [e.op for e in session.drain()] == ["connect", "connect"]


def test_gethostbyname_ex_is_judged(session, test_id):
    """CPython resolves the name with getaddrinfo first: that lookup is the one denied."""
    code = textwrap.dedent("""
        import socket
        try:
            socket.gethostbyname_ex("db.example.invalid")
        except OSError as exc:
            print(exc.errno)
    """)
    env = session.child_env(POLICIES.for_test("small"), test_id, "small", "strict")
    proc = run_isolated_argv([sys.executable, "-c", code], env)
    assert proc.stdout.strip() == str(errno.EACCES)
    event = only(session.drain())
    assert (event.op, event.port, event.dest) == ("getaddrinfo", None, "dns:db.example.invalid")


def test_unix_sockets(session, test_id, tmp_path):
    path = str(tmp_path / "s.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    code = textwrap.dedent("""
        import json, socket, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sys.argv[1]); print(json.dumps("ok"))
        except OSError as exc:
            print(json.dumps(exc.errno))
    """)
    try:
        small = run(
            [sys.executable, "-c", code, path], env_for(session, "small", "strict", test_id)
        )
        medium = run(
            [sys.executable, "-c", code, path], env_for(session, "medium", "strict", test_id)
        )
    finally:
        listener.close()
    assert json.loads(small.stdout) == errno.EACCES
    assert json.loads(medium.stdout) == "ok"
    event = only(session.drain())
    assert (event.family, event.host, event.port, event.dest) == (
        socket.AF_UNIX,
        path,
        None,
        f"unix:{path}",
    )


def test_odd_bytes_survive_the_events_file(session):
    """An abstract name with NUL and non-UTF-8 bytes, and a test id with quotes, a
    backslash, a newline and non-ASCII text, come back exactly."""
    test_id = 'tests/t.py::test["a\\b"\n\u00e9\u4e2d]'
    name = b"\x00netguard\x00\xff\xfe-\xc3\xa9"
    code = textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.sendto(b"x", {name!r})
        except OSError as exc:
            print(exc.errno)
    """)
    proc = run([sys.executable, "-c", code], env_for(session, "small", "strict", test_id))
    assert proc.stdout.strip() == str(errno.EACCES)
    event = only(session.drain())
    assert event.test == test_id
    shown = "@" + os.fsdecode(name[1:])
    assert event.host == shown and event.dest == "unix:" + shown
    assert os.fsencode(event.host[1:]) == name[1:]
    assert session.malformed == 0


def test_concurrent_denials_write_whole_lines(session, test_id):
    """Threads of several processes denied at once: every event arrives as one line."""
    code = textwrap.dedent("""
        import socket, threading
        def worker():
            for _ in range(50):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    s.connect(("127.0.0.1", 9))
                except PermissionError:
                    pass
                s.close()
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
    """)
    env = env_for(session, "small", "strict", test_id)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    events = session.drain()
    assert session.malformed == 0
    assert len(events) == 3 * 8 * 50
    assert {e.pid for e in events} == {p.pid for p in procs}
    assert len({e.tid for e in events}) == 3 * 8


def test_drain_keeps_a_partial_last_line(session, test_id):
    """A line still being written is read on the next drain, whole."""
    line = json.dumps(
        {
            "v": 1,
            "pid": 7,
            "tid": 7,
            "op": "connect",
            "verdict": "denied",
            "family": 2,
            "host": "127.0.0.1",
            "port": 9,
            "dest": "127.0.0.1:9",
            "test": test_id,
        }
    )
    with open(session.events_path, "ab") as f:
        f.write(line[:20].encode())
    assert session.drain() == []
    with open(session.events_path, "ab") as f:
        f.write(line[20:].encode() + b"\n" + b"not json\n")
    event = only(session.drain())
    assert (event.pid, event.test, event.dest) == (7, test_id, "127.0.0.1:9")
    assert session.malformed == 1


# --------------------------------------------------------------------------- curl


@pytest.fixture(scope="module")
def curl() -> str:
    path = shutil.which("curl")
    if path is None:
        pytest.skip("curl is not installed (Debian: apt-get install -y curl)")
    return path


def test_curl(session, test_id, curl, http_server, no_proxy_env, uninstrumented):
    url = f"http://127.0.0.1:{http_server}/"
    argv = [curl, "-sS", "--noproxy", "*", "-m", "20", url]
    small = run(argv, env_for(session, "small", "strict", test_id))
    assert small.returncode == 7, small  # couldn't connect
    event = only(session.drain())
    assert (event.op, event.dest, event.verdict) == (
        "connect",
        f"127.0.0.1:{http_server}",
        "denied",
    )
    assert event.program == "curl"
    assert_labels(event, test_id, "small")

    medium = run(argv, env_for(session, "medium", "strict", test_id))
    assert (medium.returncode, medium.stdout) == (0, "hello")
    assert session.drain() == []

    warned = run(argv, env_for(session, "small", "warn", test_id))
    assert (warned.returncode, warned.stdout) == (0, "hello")
    assert only(session.drain()).verdict == "warned"


def test_curl_name_lookup_blocked(session, test_id, curl, no_proxy_env, uninstrumented):
    argv = [curl, "-sS", "--noproxy", "*", "-m", "20", "http://db.example.invalid/"]
    env = session.child_env(POLICIES.for_test("small"), test_id, "small", "strict")
    proc = run_isolated_argv(argv, env)
    assert proc.returncode == 6  # couldn't resolve
    assert [(e.op, e.dest) for e in session.drain()] == [
        ("getaddrinfo", "dns:db.example.invalid:80")
    ]


# --------------------------------------------------------------------------- ctypes


CTYPES = """
import ctypes, ctypes.util, json, socket, struct, sys
port = int(sys.argv[1])
results = {}
for how, lib in (("CDLL(None)", ctypes.CDLL(None, use_errno=True)),
                 ("CDLL(libc)", ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True))):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    addr = struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", port,
                                                            socket.inet_aton("127.0.0.1"))
    rc = lib.connect(s.fileno(), addr, len(addr))
    results[how] = "ok" if rc == 0 else ctypes.get_errno()
    s.close()
print(json.dumps(results))
"""


def test_ctypes_libc_connect(session, test_id, loopback_tcp):
    _, port = loopback_tcp
    small = run(
        [sys.executable, "-c", CTYPES, str(port)], env_for(session, "small", "strict", test_id)
    )
    assert json.loads(small.stdout) == {"CDLL(None)": errno.EACCES, "CDLL(libc)": errno.EACCES}
    events = session.drain()
    assert [e.dest for e in events] == [f"127.0.0.1:{port}"] * 2
    medium = run(
        [sys.executable, "-c", CTYPES, str(port)], env_for(session, "medium", "strict", test_id)
    )
    assert json.loads(medium.stdout) == {"CDLL(None)": "ok", "CDLL(libc)": "ok"}


# --------------------------------------------------------------------------- children


GRANDCHILD = """
import json, os, subprocess, sys
how, port = sys.argv[1], sys.argv[2]
argv = [sys.executable, "-c", CONNECT_CODE, "127.0.0.1", port, "tcp"]
if how == "subprocess-env-empty":
    sys.stdout.write(subprocess.run(argv, env={}, capture_output=True, text=True).stdout)
elif how == "posix_spawn-env-empty":
    pid = os.posix_spawn(sys.executable, argv, {})
    os.waitpid(pid, 0)
elif how == "posix_spawnp-env-empty":
    pid = os.posix_spawnp(sys.executable, argv, {})
    os.waitpid(pid, 0)
elif how == "execve-env-empty":
    sys.stdout.flush()
    os.execve(sys.executable, argv, {})
""".replace("CONNECT_CODE", repr(CONNECT))


@pytest.mark.parametrize(
    "how",
    [
        "subprocess-env-empty",
        "posix_spawn-env-empty",
        "posix_spawnp-env-empty",
        "execve-env-empty",
    ],
)
def test_children_with_their_own_environment_stay_covered(
    session, test_id, loopback_tcp_server, how
):
    host, port = loopback_tcp_server.address
    proc = run(
        [sys.executable, "-c", GRANDCHILD, how, str(port)],
        env_for(session, "small", "strict", test_id),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == errno.EACCES
    event = only(session.drain())
    assert event.dest == f"{host}:{port}"
    assert_labels(event, test_id, "small")
    medium = run(
        [sys.executable, "-c", GRANDCHILD, how, str(port)],
        env_for(session, "medium", "strict", test_id),
    )
    assert json.loads(medium.stdout) == "ok"


MULTIPROCESSING = """
import json, multiprocessing, os, socket, sys

def work(port):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        return [os.getpid(), "ok"]
    except OSError as exc:
        return [os.getpid(), exc.errno]
    finally:
        s.close()

if __name__ == "__main__":
    context = multiprocessing.get_context(sys.argv[1])
    with context.Pool(1) as pool:
        print(json.dumps(pool.apply(work, (int(sys.argv[2]),))))
"""


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_multiprocessing_children(session, test_id, loopback_tcp, tmp_path, method):
    _, port = loopback_tcp
    script = tmp_path / "mp_child.py"
    script.write_text(MULTIPROCESSING)
    proc = run(
        [sys.executable, str(script), method, str(port)],
        env_for(session, "small", "strict", test_id),
    )
    assert proc.returncode == 0, proc.stderr
    pid, result = json.loads(proc.stdout)
    assert result == errno.EACCES
    event = only(session.drain())
    assert event.pid == pid and event.dest == f"127.0.0.1:{port}"
    assert_labels(event, test_id, "small")
    proc = run(
        [sys.executable, str(script), method, str(port)],
        env_for(session, "medium", "strict", test_id),
    )
    assert json.loads(proc.stdout)[1] == "ok"


# --------------------------------------------------------------------------- the C probe


def probe_lines(probe: Path, env: dict[str, str], *args: str, isolated: bool = False) -> list[str]:
    if isolated:
        proc = run_isolated_argv([str(probe), *args], env)
    else:
        proc = run([str(probe), *args], env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.parametrize(
    "how",
    [
        "execve",
        "execv",
        "execvp",
        "execvpe",
        "execl",
        "execlp",
        "execle",
        "fexecve",
        "posix_spawn",
        "posix_spawnp",
    ],
)
def test_every_exec_function_readds_the_environment(session, test_id, probe, how):
    """/usr/bin/env started with an empty environment prints netguard's variables."""
    env = env_for(session, "small", "strict", test_id)
    lines = probe_lines(probe, env, "exec", how)
    assert lines[-1] == f"exec {how} rc=0 status=0"
    child = dict(line.split("=", 1) for line in lines[:-1])
    assert child["LD_PRELOAD"] == str(native.shim_path())
    for name in (
        native.ENV_POLICY,
        native.ENV_MODE,
        native.ENV_EVENTS,
        native.ENV_TEST,
        native.ENV_SIZE,
    ):
        assert child[name] == env[name]
    assert len(lines) - 1 == len(child)  # nothing twice


def test_libc_calls_from_c(session, test_id, probe):
    env = session.child_env(POLICIES.for_test("small"), test_id, "small", "strict")
    lines = probe_lines(
        probe,
        env,
        "connect",
        "127.0.0.1",
        "9",
        "getaddrinfo",
        "db.example.invalid",
        "getaddrinfo",
        "localhost",
        "gethostbyname",
        "db.example.invalid",
        "gethostbyname2",
        "db.example.invalid",
        "gethostbyname_r",
        "db.example.invalid",
        "gethostbyname2_r",
        "db.example.invalid",
        "gethostbyname_r",
        "localhost",
        "gethostbyaddr",
        "127.0.0.1",
        isolated=True,
    )
    assert lines == [
        "connect rc=-1 errno=EACCES",
        "getaddrinfo rc=EAI_SYSTEM errno=EACCES",
        "getaddrinfo rc=0 errno=0",
        "gethostbyname found=0 h_errno=3 errno=EACCES",  # NO_RECOVERY
        "gethostbyname2 found=0 h_errno=3 errno=EACCES",
        "gethostbyname_r rc=EACCES found=0 h_errno=3",
        "gethostbyname2_r rc=EACCES found=0 h_errno=3",
        "gethostbyname_r rc=0 found=1",
        "gethostbyaddr found=1 errno=0",  # a reverse lookup of loopback
    ]
    assert [e.op for e in session.drain()] == [
        "connect",
        "getaddrinfo",
        "gethostbyname",
        "gethostbyname2",
        "gethostbyname_r",
        "gethostbyname2_r",
    ]


def test_sendmmsg_sends_the_messages_before_a_denied_one(session, test_id, probe):
    """Only 127.0.0.1:PORT allowed: a batch whose second message goes elsewhere sends the
    first (a partial batch, as the kernel reports one); denied first, it fails."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    port = receiver.getsockname()[1]
    other = port + 1 if port < 65535 else port - 1
    policy = _impl.load("c").compile([parse_rule(f"127.0.0.1:{port}", source="test")])
    env = {**os.environ, **session.child_env(policy, test_id, "small", "strict")}
    try:
        lines = probe_lines(
            probe, env, "sendmmsg", "127.0.0.1", str(port), "127.0.0.1", str(other)
        )
        assert lines == ["sendmmsg rc=1 errno=0"]
        assert receiver.recv(16) == b"x"
        lines = probe_lines(
            probe, env, "sendmmsg", "127.0.0.1", str(other), "127.0.0.1", str(port)
        )
        assert lines == ["sendmmsg rc=-1 errno=EACCES"]
    finally:
        receiver.close()
    assert [(e.op, e.dest) for e in session.drain()] == [
        ("sendmmsg", f"127.0.0.1:{other}"),
        ("sendmmsg", f"127.0.0.1:{other}"),
    ]


def probe_calls(sendto_host: str) -> list[str]:
    """The probe's arguments for allowed and denied calls of every kind (7 denied under
    medium), for the memory checks of the library: valgrind and the ASan build."""
    return [
        *("connect", "127.0.0.1", "9", "connect", "192.0.2.1", "9"),
        *("sendto", sendto_host, "9"),
        *("sendmmsg", "127.0.0.1", "9", "192.0.2.1", "9"),
        *("getaddrinfo", "db.example.invalid", "getaddrinfo", "localhost"),
        *("gethostbyname", "db.example.invalid", "gethostbyname_r", "localhost"),
        *("gethostbyname2_r", "db.example.invalid"),
        *("gethostbyaddr", "192.0.2.1", "getnameinfo", "198.51.100.1"),
    ]


def test_valgrind_finds_no_errors_or_leaks_in_the_shim(
    session, test_id, probe, tmp_path, uninstrumented
):
    """Allowed and denied calls of every kind under memcheck: no error, nothing
    definitely lost. In a private namespace: the denied ones name outside addresses."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    env = session.child_env(POLICIES.for_test("medium"), test_id, "medium", "strict")
    log = tmp_path / "valgrind.log"
    proc = run_isolated_argv(
        [
            valgrind,
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--error-exitcode=99",
            f"--log-file={log}",
            str(probe),
            *probe_calls("127.0.0.1"),
            *("exec", "execve", "exec", "posix_spawn"),
        ],
        env,
        timeout=300,
    )
    report = log.read_text()
    assert proc.returncode == 0, report
    assert "ERROR SUMMARY: 0 errors" in report, report
    assert "definitely lost: 0 bytes" in report or "All heap blocks were freed" in report, report
    assert [e.verdict for e in session.drain()].count("denied") == 7


@pytest.mark.source_tree
def test_sanitizer_build_of_the_shim(session, test_id, probe, tmp_path):
    """The library built with AddressSanitizer and UndefinedBehaviorSanitizer, preloaded
    behind the ASan runtime: allowed and denied calls of every kind report nothing."""
    cc = shutil.which("gcc") or shutil.which("cc")
    src = Path(__file__).resolve().parent.parent / "src"
    if cc is None or not (src / "ng_preload.c").is_file():
        pytest.skip("needs a C compiler and the C sources")
    runtime = subprocess.run(
        [cc, "-print-file-name=libasan.so"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not os.path.isabs(runtime) or not os.path.exists(runtime):
        pytest.skip(f"{cc} has no AddressSanitizer runtime")
    shim_asan = tmp_path / "preload-asan.so"
    build = subprocess.run(
        [
            cc,
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O1",
            "-g",
            "-fPIC",
            "-shared",
            "-fvisibility=hidden",
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all",
            *(str(src / f) for f in ("ng_preload.c", "ng_native.c", "ng_policy.c")),
            "-o",
            str(shim_asan),
            "-ldl",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if build.returncode != 0 and "asan" in build.stderr.lower():
        pytest.skip(f"cannot link a sanitizer build: {build.stderr.strip()[:200]}")
    assert build.returncode == 0, build.stderr
    env = session.child_env(POLICIES.for_test("medium"), test_id, "medium", "strict")
    env["LD_PRELOAD"] = f"{os.path.realpath(runtime)}:{shim_asan}"
    env["ASAN_OPTIONS"] = "detect_leaks=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1"
    proc = run_isolated_argv(
        [
            str(probe),
            *probe_calls("::1"),
        ],
        env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr
    assert proc.stdout.splitlines()[1] == "connect rc=-1 errno=EACCES"
    assert [e.verdict for e in session.drain()].count("denied") == 7


# --------------------------------------------------------------------------- failing closed


@pytest.mark.parametrize("mode", ["strict", "warn"])
@pytest.mark.parametrize("blob", [None, b"", b"NGPOLICY" + b"\0" * 200, b"garbage" * 100])
def test_a_missing_or_broken_policy_denies_everything(
    session, test_id, tmp_path, blob, loopback_tcp, mode
):
    _, port = loopback_tcp
    path = tmp_path / "policy.ngp"
    if blob is not None:
        path.write_bytes(blob)
    env = env_for(session, "large", mode, test_id)
    env[native.ENV_POLICY] = str(path)
    proc = run([sys.executable, "-c", CONNECT, "127.0.0.1", str(port), "tcp"], env)
    assert json.loads(proc.stdout) == errno.EACCES
    init, denied = session.drain()
    assert (init.op, init.verdict) == ("init", "error")
    assert str(path) in (init.error or "") and "every network call is denied" in (init.error or "")
    assert (denied.op, denied.verdict) == ("connect", "denied")


def test_an_unknown_mode_is_judged_as_strict(session, test_id, loopback_tcp):
    _, port = loopback_tcp
    env = env_for(session, "small", "strict", test_id)
    env[native.ENV_MODE] = "lenient"
    proc = run([sys.executable, "-c", CONNECT, "127.0.0.1", str(port), "tcp"], env)
    assert json.loads(proc.stdout) == errno.EACCES
    init, denied = session.drain()
    assert init.error == "NETGUARD_NATIVE_MODE is neither strict nor warn: judged as strict"
    assert (denied.verdict, denied.mode) == ("denied", "strict")


def test_without_a_policy_variable_everything_is_denied(session, test_id, loopback_tcp):
    _, port = loopback_tcp
    env = env_for(session, "large", "strict", test_id)
    del env[native.ENV_POLICY]
    proc = run([sys.executable, "-c", CONNECT, "127.0.0.1", str(port), "tcp"], env)
    assert json.loads(proc.stdout) == errno.EACCES
    init = session.drain()[0]
    assert init.error == "NETGUARD_NATIVE_POLICY is not set: every network call is denied"


# --------------------------------------------------------------------------- outside


ISOLATED = """
import json, socket
results = {}
DESTS = [("192.0.2.1", 443), ("192.0.2.1", 80), ("2001:db8::1", 443), ("198.51.100.7", 443)]
for host, port in DESTS:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((host, port))
        results[f"{host}:{port}"] = "ok"
    except OSError as exc:
        results[f"{host}:{port}"] = exc.errno
    finally:
        s.close()
print(json.dumps(results))
"""


@pytest.mark.parametrize(
    ("size", "allowed"),
    [
        ("small", set()),
        ("medium", {"192.0.2.1:443", "2001:db8::1:443"}),
        ("large", {"192.0.2.1:443", "192.0.2.1:80", "2001:db8::1:443", "198.51.100.7:443"}),
    ],
)
def test_outside_destinations_in_a_private_namespace(session, test_id, size, allowed):
    from netns import run_isolated

    env = session.child_env(CONFIGURED.for_test(size), test_id, size, "strict")
    result = run_isolated(ISOLATED, env=env)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    for dest, outcome in results.items():
        # allowed: the kernel of the empty namespace has no route; denied: EACCES
        want = (errno.ENETUNREACH, errno.EADDRNOTAVAIL) if dest in allowed else (errno.EACCES,)
        assert outcome in want, (dest, outcome)
    events = session.drain()
    assert {e.host + f":{e.port}" for e in events} == set(results) - allowed
    assert all(e.test == test_id and e.size == size for e in events)


def test_reverse_lookups_of_outside_addresses_are_denied(session, test_id, probe):
    from netns import run_isolated

    env = session.child_env(POLICIES.for_test("medium"), test_id, "medium", "strict")
    code = (
        "import subprocess, sys; "
        f"r = subprocess.run([{str(probe)!r}, 'getnameinfo', '192.0.2.1', 'gethostbyaddr', "
        "'2001:db8::1', 'getnameinfo', '127.0.0.1'], capture_output=True, text=True); "
        "print(r.stdout, end='')"
    )
    result = run_isolated(code, env=env)
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "getnameinfo rc=EAI_SYSTEM errno=EACCES",
        "gethostbyaddr found=0 errno=EACCES",
    ]
    assert [(e.op, e.dest) for e in session.drain()] == [
        ("getnameinfo", "dns:192.0.2.1"),
        ("gethostbyaddr", "dns:2001:db8::1"),
    ]


# --------------------------------------------------------------------------- the session


def test_each_policy_is_written_once(session):
    info = POLICIES.for_test("medium")
    first = session.policy_file(info)
    assert session.policy_file(info) == first
    assert session.policy_file(info.policy) == first  # the same bytes
    assert session.policy_file(info.policy.to_bytes()) == first
    assert first.read_bytes() == info.policy.to_bytes()
    assert session.policy_file(POLICIES.for_test("small")) != first


def test_a_reference_policy_is_compiled_again_by_the_c_core(session):
    rules = [parse_rule("10.0.0.0/8:443", source="test")]
    previous = _impl.use("python")
    try:
        reference = _impl.Policy(rules)
    finally:
        _impl.use(previous)
    path = session.policy_file(reference)
    assert path.read_bytes() == _impl.load("c").compile(rules).to_bytes()


def test_child_env(session, monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/opt/libother.so")
    env = session.child_env(POLICIES.for_test("small"), "t::x", "small", "warn", phase="call")
    shim = str(native.shim_path())
    assert env["LD_PRELOAD"] == f"{shim}:/opt/libother.so"
    assert env[native.ENV_MODE] == "warn" and env[native.ENV_PHASE] == "call"
    assert native.ENV_RECORD not in env
    with pytest.raises(ValueError, match="expected strict or warn"):
        session.child_env(POLICIES.for_test("small"), "t", "small", "off")
    with pytest.raises(ValueError, match="expected small, medium"):
        session.child_env(POLICIES.for_test("small"), "t", "tiny", "strict")


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (None, "{shim}"),
        ("", "{shim}"),
        ("/a.so", "{shim}:/a.so"),
        ("/a.so {shim}", "/a.so {shim}"),
        ("/usr/lib/libasan.so.8", "/usr/lib/libasan.so.8:{shim}"),
        ("/usr/lib/libasan.so.8:/b.so", "/usr/lib/libasan.so.8:{shim}:/b.so"),
    ],
)
def test_preload_value(existing, expected):
    if existing is not None:
        existing = existing.format(shim="/x/shim.so")
    assert native.preload_value(existing, "/x/shim.so") == expected.format(shim="/x/shim.so")


def test_record_allowed(session, test_id, loopback_tcp):
    host, port = loopback_tcp
    env = env_for(session, "medium", "strict", test_id, record_allowed=True)
    proc = run([sys.executable, "-c", CONNECT, host, str(port), "tcp"], env)
    assert json.loads(proc.stdout) == "ok"
    event = only(session.drain())
    assert (event.verdict, event.dest) == ("allowed", f"{host}:{port}")


# --------------------------------------------------------------------------- env composition


def env_compose(
    shim: ctypes.CDLL, envp: list[str], preload: str, vars: list[str], override: bool = False
) -> tuple[int, list[str]]:
    arr = (ctypes.c_char_p * (len(envp) + 1))(*[e.encode() for e in envp], None)
    varr = (ctypes.c_char_p * (len(vars) + 1))(*[v.encode() for v in vars], None)
    out = ctypes.create_string_buffer(65536)
    rc = shim.ng_native_env_for_tests(arr, preload.encode(), varr, int(override), out, len(out))
    assert rc >= 0
    return rc, out.value.decode().splitlines()


def test_env_compose(shim):
    vars = ["NETGUARD_NATIVE_TEST=t1", "NETGUARD_NATIVE_SIZE=small"]
    assert env_compose(shim, [], "/s.so", vars) == (
        1,
        ["NETGUARD_NATIVE_TEST=t1", "NETGUARD_NATIVE_SIZE=small", "LD_PRELOAD=/s.so"],
    )
    # the caller's own values are kept (a nested run), its LD_PRELOAD gets ours first
    _, env = env_compose(
        shim, ["A=1", "LD_PRELOAD=/o.so", "NETGUARD_NATIVE_TEST=mine"], "/s.so", vars
    )
    assert env == [
        "A=1",
        "LD_PRELOAD=/s.so:/o.so",
        "NETGUARD_NATIVE_TEST=mine",
        "NETGUARD_NATIVE_SIZE=small",
    ]
    # override replaces them
    _, env = env_compose(shim, ["NETGUARD_NATIVE_TEST=mine"], "/s.so", vars, override=True)
    assert env[0] == "NETGUARD_NATIVE_TEST=t1"
    # nothing to add: the caller's array as it is
    full = ["LD_PRELOAD=/x.so:/s.so", *vars]
    assert env_compose(shim, full, "/s.so", vars) == (0, full)
    # a sanitizer runtime stays first; only the first LD_PRELOAD counts
    _, env = env_compose(shim, ["LD_PRELOAD=/lib/libasan.so.8", "LD_PRELOAD=/z.so"], "/s.so", [])
    assert env == ["LD_PRELOAD=/lib/libasan.so.8:/s.so", "LD_PRELOAD=/z.so"]


# --------------------------------------------------------------------------- the ring


@pytest.mark.parametrize("capacity", [64, 1 << 16])
def test_ring_buffer_under_concurrent_producers(shim, capacity):
    """Four producers and a consumer at once (ctypes releases the GIL): every event pushed
    is popped once, whole, in each producer's order; a full ring drops and counts, never
    blocks."""
    shim.ng_native_ring_test_init.argtypes = [ctypes.c_uint64]
    shim.ng_native_ring_test_push.restype = ctypes.c_uint64
    shim.ng_native_ring_test_push.argtypes = [ctypes.c_uint64, ctypes.c_uint64]
    shim.ng_native_ring_test_pop.restype = ctypes.c_uint64
    shim.ng_native_ring_test_pop.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint64]
    shim.ng_native_ring_test_overflow.restype = ctypes.c_uint64
    assert shim.ng_native_ring_test_init(capacity) == 0
    producers, per_producer, chunk = 4, 40_000, 500
    pushed = [0] * producers
    done = threading.Event()

    def produce(index: int) -> None:
        base = index << 32
        for start in range(0, per_producer, chunk):
            pushed[index] += shim.ng_native_ring_test_push(base + start, chunk)

    popped: list[int] = []
    buffer = (ctypes.c_uint64 * 4096)()

    def consume() -> None:
        while True:
            finished = done.is_set()
            n = shim.ng_native_ring_test_pop(buffer, len(buffer))
            assert n != 2**64 - 1, "a torn event"
            popped.extend(buffer[:n])
            if finished and n == 0:
                return

    consumer = threading.Thread(target=consume)
    threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    consumer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    consumer.join()
    total = producers * per_producer
    assert len(popped) == sum(pushed)
    assert sum(pushed) + shim.ng_native_ring_test_overflow() == total
    assert len(set(popped)) == len(popped)
    for index in range(producers):
        mine = [t & 0xFFFFFFFF for t in popped if t >> 32 == index]
        assert mine == sorted(mine)
    if capacity == 1 << 16:
        assert sum(pushed) > 0


# --------------------------------------------------------------------------- differential


AF_INET, AF_INET6, AF_UNIX = int(socket.AF_INET), int(socket.AF_INET6), int(socket.AF_UNIX)
PORTS = ["", ":80", ":443", ":1000-2000", ":80,443,8000-8100", ":0", ":65535"]
NAMES = ["example.com", "*.example.com", "db.internal", "localhost", "*.localhost", "a.b.test"]
GLOBS = ["/run/*.sock", "@abs*", "/tmp/x", "/var/[ab]?/s", "*", "/run/db[!0-9].sock"]


@st.composite
def rule_texts(draw: st.DrawFn) -> list[str]:
    texts = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["v4", "v4", "v6", "host", "unix"]))
        ports = draw(st.sampled_from(PORTS))
        if kind == "v4":
            net = ipaddress.IPv4Network(
                (draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 32))), strict=False
            )
            texts.append(f"{net}{ports}")
        elif kind == "v6":
            net6 = ipaddress.IPv6Network(
                (draw(st.integers(0, 2**128 - 1)), draw(st.integers(0, 128))), strict=False
            )
            texts.append(f"[{net6}]{ports}" if ports else str(net6))
        elif kind == "host":
            texts.append(draw(st.sampled_from(NAMES)) + ports)
        else:
            texts.append("unix:" + draw(st.sampled_from(GLOBS)))
    return texts


def sockaddr(family: int, host: str, port: int) -> bytes:
    if family == AF_INET:
        return struct.pack("=H", AF_INET) + struct.pack("!H4s8x", port, socket.inet_aton(host))
    return struct.pack("=H", AF_INET6) + struct.pack(
        "!HI16sI", port, 0, socket.inet_pton(socket.AF_INET6, host), 0
    )


def v4_probes(rules: list[Rule], draw: st.DrawFn) -> list[str]:
    values = {0, 0x7F000001, 2**32 - 1, draw(st.integers(0, 2**32 - 1))}
    for r in rules:
        if r.kind == "ip" and r.family == 4:
            values |= {max(r.first - 1, 0), r.first, r.last, min(r.last + 1, 2**32 - 1)}
    return [str(ipaddress.IPv4Address(v)) for v in values]


def v6_probes(rules: list[Rule], draw: st.DrawFn) -> list[str]:
    values = {
        0,
        1,
        2**128 - 1,
        (0xFFFF << 32) | 0x7F000001,
        (0xFFFF << 32) | 0xC0000201,
        draw(st.integers(0, 2**128 - 1)),
    }
    for r in rules:
        if r.kind == "ip" and r.family == 6:
            values |= {max(r.first - 1, 0), r.first, r.last, min(r.last + 1, 2**128 - 1)}
        if r.kind == "ip" and r.family == 4:
            values |= {(0xFFFF << 32) | r.first, (0xFFFF << 32) | r.last}
    return [str(ipaddress.IPv6Address(v)) for v in values]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(texts=rule_texts(), data=st.data(), dns_localhost=st.booleans(), allow_all=st.booleans())
def test_c_judge_agrees_with_the_reference(shim, texts, data, dns_localhost, allow_all):
    allow_all = allow_all and data.draw(st.integers(0, 9)) == 0
    rules = [parse_rule(t, source="test") for t in texts]
    c_blob = (
        _impl.load("c").compile(rules, allow_all=allow_all, dns_localhost=dns_localhost).to_bytes()
    )
    ref = _impl.load("python").compile(rules, allow_all=allow_all, dns_localhost=dns_localhost)

    def judge(kind: int, arg: bytes, port: int = -1) -> int:
        return int(shim.ng_native_judge_for_tests(c_blob, len(c_blob), kind, arg, len(arg), port))

    ports = {0, 80, 443, 1000, 2000, 2001, 8050, 65535, data.draw(st.integers(0, 65535))}
    for host in v4_probes(rules, data.draw):
        for port in ports:
            got = judge(0, sockaddr(AF_INET, host, port))
            assert got == int(ref.allows(host, port)), (host, port)
    for host in v6_probes(rules, data.draw):
        for port in ports:
            got = judge(0, sockaddr(AF_INET6, host, port))
            assert got == int(ref.allows(host, port)), (host, port)
            # a reverse lookup: loopback (after normalisation) or everything allowed
            address = ipaddress.IPv6Address(host)
            mapped = address.ipv4_mapped
            loop = (mapped or address).is_loopback or (mapped or address).is_unspecified
            assert judge(2, sockaddr(AF_INET6, host, port)) == int(allow_all or loop), host

    names = {n.lstrip("*.") for n in NAMES} | {
        "x.example.com",
        "LOCALHOST",
        "localhost.",
        "db.internal.",
        "a.localhost",
        "other.test",
        data.draw(st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,5}){0,2}", fullmatch=True)),
    }
    for name in names:
        assert judge(1, name.encode() + b"\0") == int(ref.allows(name)), name
    assert judge(1, b"127.1\0") == 2 and judge(1, b"\0") == 2  # no lookup

    paths = [
        "/run/a.sock",
        "/run/x/y.sock",
        "/tmp/x",
        "/var/ab/s",
        "/run/dbx.sock",
        "/run/db1.sock",
        "@abs1",
        "@abc",
        data.draw(st.sampled_from(["/", "/tmp/y", "@"])),
    ]
    for path in paths:
        raw = b"\0" + path[1:].encode() if path.startswith("@") else path.encode() + b"\0"
        got = judge(0, struct.pack("=H", AF_UNIX) + raw)
        assert got == int(ref.allows("unix:" + path)), path
