"""Leak check of the C core: many guarded calls must not grow memory or object counts.

Run as a script, in a process of its own (the hooks and the audit hook stay for the life
of the process)::

    python tests/leakcheck.py            # N = 100000 calls per operation
    NETGUARD_LEAKCHECK_N=2000 python tests/leakcheck.py

Every operation of the C core is repeated: allowed and denied socket calls on loopback
(connect, connect_ex, sendto, sendmsg, a hostname connect, AF_UNIX, the audit backstop,
warn mode), allowed and denied lookups (getaddrinfo, gethostbyname, gethostbyaddr,
getnameinfo, a lookup that learns addresses), policy builds with to_bytes/from_bytes, and
the base switch (a test's phases through the plugin's per-phase path).
Each operation first runs a warm-up (caches, free lists, the learned-address dict), then
N times (N // 10 for the slow ones: real lookups in /etc/hosts, policy builds) between two
measurements of:

* tracemalloc's current traced size (PyMem and PyObject allocations, which is where the
  C core allocates): growth above BOUND bytes fails;
* sys.getallocatedblocks() (pymalloc blocks; 0 under PYTHONMALLOC=malloc): growth above
  BLOCKS fails;
* sys.gettotalrefcount() where it exists (debug builds): growth above REFS fails;
* ru_maxrss over the whole main phase: growth above RSS_BOUND fails.

It also checks that the callback was called exactly once per denied call and never for
an allowed one. Prints a table and "leakcheck: ok", or "leakcheck: FAILED" and exits 1.
Packets go to loopback only; denied destinations outside (192.0.2.0/24) are refused
before anything is sent.

Under a memory tool (ASan's quarantine, valgrind's freed-block list) ru_maxrss says
nothing about leaks, so it is reported but not judged there.

NETGUARD_LEAKCHECK_LSAN=1 (under an ASan build with ASAN_OPTIONS=detect_leaks=1, see
scripts/sanitize) also runs LeakSanitizer's check after the warm-up and after the main
phase, and fails on any leak report whose stack goes through netguard's C sources, or that
holds at least N/2 objects (one per call: a leak in the hot path, whoever allocated it).
CPython's own few leaks are listed and not judged; tracemalloc is not used in this mode
(its bookkeeping leaks, with our frames in the stacks). Use
ASAN_OPTIONS=fast_unwind_on_malloc=0 so that stacks go through libpython.
"""

from __future__ import annotations

import _socket
import ctypes
import gc
import os
import resource
import socket
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any, NamedTuple

from netguard import _impl
from netguard.rules import parse_rule

N = int(os.environ.get("NETGUARD_LEAKCHECK_N", "100000"))
WARMUP = max(N // 20, 100)
BOUND = 64 * 1024  # bytes of traced growth per operation
BLOCKS = 64  # pymalloc blocks of growth per operation
REFS = 64  # total refcount growth per operation (debug builds)
RSS_BOUND = 16 * 1024 * 1024  # maxrss growth over the whole main phase (bytes)
OUTSIDE = ("192.0.2.1", 443)  # TEST-NET-1: only ever denied
AF_INET = socket.AF_INET


class Denied(Exception):
    """What the callback raises in strict mode."""


class Op(NamedTuple):
    """One operation of the check: what it calls, under which policy and mode."""

    name: str
    policy: Any  # None: no policy active (the policy-building operation)
    fn: Callable[[], object]
    denied: bool = False  # every call is denied (the callback is called once per call)
    strict: bool = False  # the audit backstop judges
    warn: bool = False  # the callback returns: denied calls proceed
    slow: bool = False  # a real lookup in /etc/hosts or a policy build: N // 10 times


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.warn = False

    def __call__(self, op: str, family: int, host: str, port: int | None) -> None:
        self.calls += 1
        if not self.warn:
            raise Denied(op, family, host, port)


def rules(*texts: str) -> list[Any]:
    return [parse_rule(t, source="leakcheck") for t in texts]


NETGUARD_SOURCES = ("_netguard.c", "ng_build.c", "ng_policy.c", "/_netguard.cpython")


def memory_tool() -> str | None:
    """The memory tool running this process, "asan" or "valgrind", or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            maps = f.read()
    except OSError:
        return None
    if "libasan" in maps:
        return "asan"
    if "vgpreload" in maps:
        return "valgrind"
    return None


def lsan_report() -> list[tuple[int, int, str]] | None:
    """Run LeakSanitizer's recoverable check now; its leak records as (bytes, objects,
    text), or None without LSan. The report (written by LSan to fd 2) is echoed."""
    try:
        fn = ctypes.CDLL(None).__lsan_do_recoverable_leak_check
    except (AttributeError, OSError):
        return None
    fn.restype = ctypes.c_int
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as out:
        os.dup2(out.fileno(), 2)
        try:
            fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    print(text, end="")
    records = []
    for block in text.split("\n\n"):
        head = block.strip().splitlines()[0] if block.strip() else ""
        words = head.split()
        if head.startswith(("Direct leak of", "Indirect leak of")) and "object(s)" in words:
            size = int(words[3])
            count = int(words[words.index("object(s)") - 1])
            records.append((size, count, block.strip()))
    return records


def main() -> int:
    c = _impl.load("c")
    ng = c.module
    counter = Counter()
    tmp = tempfile.mkdtemp(prefix="netguard-leakcheck-")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw_udp = _socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bypasses the hooks
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_path = os.path.join(tmp, "absent.sock")

    allow = c.compile(rules("127.0.0.0/8", "[::1]", "unix:" + tmp + "/*"))
    learn = c.compile(rules(f"localhost:{port}"), dns_localhost=False)
    deny = c.compile([], dns_localhost=False)
    build_rules = rules(
        "10.0.0.0/8:443", "10.1.0.0/16:80", "[2001:db8::/32]:80-90", "example.com", "unix:/x"
    )

    def unix_allowed() -> None:
        try:
            unix.connect(unix_path)
        except FileNotFoundError:  # allowed: the kernel answered
            pass

    def build() -> None:
        p = c.compile(build_rules)
        c.from_bytes(p.to_bytes()).allows("10.1.0.1", 80)

    owner = object()

    def base_switch() -> None:
        # a test's phases through the plugin's path: aimed at a new item, three clean
        # phases, one with a denied call, one marked, one started by Python; the aim then
        # forgotten
        item = object()
        ng.deactivate()  # the base level judges (run() set the stack's)
        ng.aim_base(item, owner, deny, False, True)
        for _ in range(3):
            ng.enter_base(item)
            if ng.leave_base() is not None:
                raise AssertionError("a clean phase was handed to Python")
        ng.enter_base(item)
        try:
            udp.connect(here)
        except Denied as exc:
            denied = exc  # raised again at the end: run() counts it
        else:
            raise AssertionError("the base level did not deny")
        if ng.leave_base() is not owner:
            raise AssertionError("a phase with a denied call was not handed to Python")
        ng.enter_base(item)
        ng.mark_base()
        if ng.leave_base() is not owner:
            raise AssertionError("a marked phase was not handed to Python")
        ng.aim_base(item, owner, None, False, False)
        ng.start_base()
        ng.leave_base()
        ng.aim_base(None, None, None, False, False)
        raise denied

    here = ("127.0.0.1", port)
    ops = [
        Op("connect allowed", allow, lambda: udp.connect(here)),
        Op("connect denied", deny, lambda: udp.connect(here), denied=True),
        Op("connect denied outside", deny, lambda: udp.connect(OUTSIDE), denied=True),
        Op("connect_ex allowed", allow, lambda: udp.connect_ex(("127.1", port))),
        Op("connect_ex denied", deny, lambda: udp.connect_ex(("127.1", port)), denied=True),
        Op("sendto allowed", allow, lambda: udp.sendto(b"x", here)),
        Op("sendto denied", deny, lambda: udp.sendto(b"x", 0, here), denied=True),
        Op("sendmsg allowed", allow, lambda: udp.sendmsg([b"x"], [], 0, here)),
        Op("sendmsg denied", deny, lambda: udp.sendmsg([b"x"], [], 0, here), denied=True),
        Op("warn connect", deny, lambda: udp.connect(here), denied=True, warn=True),
        Op("hostname allowed", allow, lambda: udp.connect(("localhost", port)), slow=True),
        Op("hostname denied", deny, lambda: udp.connect(("localhost", port)), denied=True),
        Op("unix allowed", allow, unix_allowed),
        Op("unix denied", deny, lambda: unix.connect(unix_path), denied=True),
        Op("audit allowed", allow, lambda: raw_udp.connect(here), strict=True),
        Op("audit denied", deny, lambda: raw_udp.connect(here), strict=True, denied=True),
        Op("getaddrinfo allowed", allow, lambda: socket.getaddrinfo("localhost", port, AF_INET)),
        Op(
            "getaddrinfo learns",
            learn,
            lambda: socket.getaddrinfo("localhost", port, AF_INET),
            slow=True,
        ),
        Op("getaddrinfo denied", deny, lambda: socket.getaddrinfo("localhost", port), denied=True),
        Op("gethostbyname allowed", allow, lambda: socket.gethostbyname("localhost"), slow=True),
        Op("gethostbyname denied", deny, lambda: socket.gethostbyname("localhost"), denied=True),
        Op(
            "gethostbyname_ex denied",
            deny,
            lambda: socket.gethostbyname_ex("localhost"),
            denied=True,
        ),
        Op("gethostbyaddr denied", deny, lambda: socket.gethostbyaddr(OUTSIDE[0]), denied=True),
        Op(
            "getnameinfo allowed",
            allow,
            lambda: socket.getnameinfo(here, socket.NI_NUMERICSERV),
            slow=True,
        ),
        Op("getnameinfo denied", deny, lambda: socket.getnameinfo(OUTSIDE, 0), denied=True),
        Op("policy build + blob", None, build, slow=True),
        Op("base switch", None, base_switch, denied=True),
    ]

    def run(op: Op, times: int) -> None:
        ng.activate(op.policy, op.strict)
        counter.warn = op.warn
        call = op.fn
        before = counter.calls
        for _ in range(times):
            try:
                call()
            except Denied:
                if not op.denied or op.warn:
                    raise
            else:
                if op.denied and not op.warn:
                    raise AssertionError(f"{op.name}: a denied call was not denied")
        ng.activate(None, False)
        got = counter.calls - before
        want = times if op.denied else 0
        if got != want:
            raise AssertionError(f"{op.name}: {got} callbacks for {times} calls, expected {want}")

    ng.install(counter)
    failures: list[str] = []
    try:
        for entry in ops:  # warm-up: caches, free lists, learned addresses
            run(entry, WARMUP)
        gc.collect()
        use_lsan = os.environ.get("NETGUARD_LEAKCHECK_LSAN", "") not in ("", "0")
        lsan_before = lsan_report() if use_lsan else None
        if use_lsan and lsan_before is None:
            failures.append("NETGUARD_LEAKCHECK_LSAN is set but LeakSanitizer is not loaded")
        tool = memory_tool()
        # tracemalloc's own bookkeeping shows up in LeakSanitizer's reports (with our
        # frames in its stacks): with LSan, LSan measures instead
        tracing = not use_lsan
        if tracing:
            tracemalloc.start()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"leakcheck: {N} calls per operation, warm-up {WARMUP}")
        print(
            f"{'operation (* N // 10)':28} {'traced':>10} {'blocks':>8} {'refs':>8} {'seconds':>8}"
        )
        totalrefs = getattr(sys, "gettotalrefcount", None)
        for entry in ops:
            gc.collect()
            mem0 = tracemalloc.get_traced_memory()[0] if tracing else 0
            blocks0 = sys.getallocatedblocks()
            refs0 = totalrefs() if totalrefs else 0
            times = N // 10 if entry.slow else N
            t0 = time.perf_counter()
            run(entry, times)
            seconds = time.perf_counter() - t0
            gc.collect()
            grew = (tracemalloc.get_traced_memory()[0] - mem0) if tracing else 0
            blocks = sys.getallocatedblocks() - blocks0
            refs = (totalrefs() - refs0) if totalrefs else 0
            label = entry.name + (" *" if entry.slow else "")
            print(f"{label:28} {grew:>10} {blocks:>8} {refs:>8} {seconds:>8.2f}")
            if grew > BOUND or blocks > BLOCKS or refs > REFS:
                failures.append(
                    f"{entry.name}: grew {grew} bytes, {blocks} blocks, {refs} refs "
                    f"over {times} calls"
                )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
        if tool:
            print(f"maxrss growth over the main phase: {rss} bytes (not judged under {tool})")
        else:
            print(f"maxrss growth over the main phase: {rss} bytes")
            if rss > RSS_BOUND:
                failures.append(f"maxrss grew by {rss} bytes over the main phase")
        tracemalloc.stop()
        if learn.learned == 0:
            failures.append("the learning policy learned nothing")
        gc.collect()
        if lsan_before is not None:
            lsan_after = lsan_report() or []
            print(
                f"LeakSanitizer: {len(lsan_before)} leak records after the warm-up, "
                f"{len(lsan_after)} after the main phase"
            )
            for size, count, text in lsan_after:
                ours = any(name in text for name in NETGUARD_SOURCES)
                if ours or (count >= N // 2 and "_tracemalloc.c" not in text):
                    failures.append(f"LeakSanitizer: {size} bytes in {count} objects:\n{text}")
    finally:
        ng.activate(None, False)
        ng.uninstall()
        for s in (sink, udp, raw_udp, unix):
            s.close()
        os.rmdir(tmp)
    if failures:
        print("leakcheck: FAILED")
        for line in failures:
            print("  " + line)
        return 1
    print("leakcheck: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
