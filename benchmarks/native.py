"""Native mode benchmarks: what the preload library costs a child process, and what
native mode costs in the test process.

    python benchmarks/native.py                 full run
    python benchmarks/native.py --quick         short run
    python benchmarks/native.py --json out.json save every number as JSON as well

Rows:

1. allowed UDP connect() to 127.0.0.1 from Python in a child process, with the preload
   library (medium policy, strict) vs without, interleaved              target <= 1.05
2. the same from C (a small program built here with the C compiler, when there is one):
   the library's cost next to the bare system call, for information
3. the cost of a session's policy files: a NativeSession made and the blobs of the
   plain sizes (small, medium, large) written                           target <= 5 ms
4. the same with 1,000 config rules (for information)
5. in the test process, allowed UDP connect() from C (a small shared library built here,
   loaded after the install): netguard strict + native mode (medium) vs netguard strict
   without it                                                          target <= 1.05
6. in the test process, allowed UDP connect() from Python: netguard strict + native mode
   vs netguard strict without it (native mode leaves _socket's calls to the Python-level
   hooks: the price of telling them apart)                             target <= 1.05
7. the same, netguard strict + native mode vs no netguard at all (for information: the
   Python-level hooks' own cost is in it)
8. native mode's start-up in a session: the session's directory and the install (a scan
   of every loaded object, with psycopg2 and grpcio loaded when installed) target <= 5 ms

Connect rows run in worker processes driven in lockstep by this one: each round, every
worker times one batch, in a shuffled order, while the others wait on their pipe, and
ratios are taken within a round, so slow phases of a noisy machine hit both sides. A
"control" worker (a second one without the library) gives the noise floor. Only
127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from _common import status_line, summary, text_table  # benchmarks/ is on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

perf_ns = time.perf_counter_ns

CONNECT_TARGET = 1.05
WRITE_TARGET_MS = 5.0
SLICE = 100  # connects per timed slice


@dataclass(frozen=True)
class Settings:
    name: str
    rounds: int
    batch: int  # connects per batch, timed in slices of SLICE
    warmup_rounds: int
    write_runs: int


FULL = Settings(name="full", rounds=400, batch=2000, warmup_rounds=10, write_runs=200)
QUICK = Settings(name="quick", rounds=60, batch=1000, warmup_rounds=3, write_runs=40)


def import_netguard() -> Any:
    """netguard, from the source tree when the package is not importable."""
    try:
        import netguard.native as native
    except ImportError:
        sys.path.insert(0, SRC)
        import netguard.native as native
    return native


# ---------------------------------------------------------------------------------------
# Workers


PY_WORKER = """
import gc, json, socket, statistics, sys, time
perf_ns = time.perf_counter_ns
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", 0))
addr = server.getsockname()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
connect = udp.connect
gc.disable()
for line in sys.stdin:
    n = int(line)
    if n == 0:
        break
    slices = []
    for i in range(-max(1, n // SLICE // 10), n // SLICE):
        t0 = perf_ns()
        for _ in range(SLICE):
            connect(addr)
        t1 = perf_ns()
        if i >= 0:
            slices.append((t1 - t0) / SLICE)
    sys.stdout.write(json.dumps(statistics.median(slices)) + "\\n")
    sys.stdout.flush()
""".replace("SLICE", str(SLICE))

# In the test process: argv[1] is "py" or "c" (then argv[3] is the shared library),
# argv[2] "plain" (no netguard), "netguard" (strict, medium, no native mode) or "native"
# (the same, and native mode installed and active with the medium policy).
INPROCESS_WORKER = """
import ctypes, gc, json, socket, statistics, sys, time
perf_ns = time.perf_counter_ns
kind, setup = sys.argv[1], sys.argv[2]
if setup != "plain":
    import netguard
    from netguard.policy import PolicySet
    info = PolicySet().for_test("medium")
    netguard.guard(info.policy, "strict", test="<benchmark>", size="medium").__enter__()
if setup == "native":
    from netguard import _native, native
    files = native.NativeSession()
    _native.install(str(native.shim_path()), str(files.events_path))
    blob = native._blob_of(info.policy)
    _native.activate(_native.register(blob, str(files.policy_file(blob))), True)
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", 0))
addr = server.getsockname()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if kind == "c":
    lib = ctypes.CDLL(sys.argv[3])  # after the install: patched through the hooked dlopen
    if setup == "native" and not any(
        sym == "connect" and "bench_inprocess" in obj for obj, sym, _, _ in _native.patched()
    ):
        sys.exit("the benchmark library's connect slot was not patched")
    lib.bench_connect.restype = ctypes.c_longlong
    sin = (b"\\x02\\x00" + addr[1].to_bytes(2, "big") + socket.inet_aton(addr[0]) + bytes(8))
    fd = udp.fileno()
    def timed():
        t = lib.bench_connect(fd, sin, len(sin), SLICE)
        if t < 0:
            sys.exit("connect failed in the benchmark library")
        return t
else:
    connect = udp.connect
    def timed():
        t0 = perf_ns()
        for _ in range(SLICE):
            connect(addr)
        return perf_ns() - t0
gc.disable()
for line in sys.stdin:
    n = int(line)
    if n == 0:
        break
    slices = []
    for i in range(-max(1, n // SLICE // 10), n // SLICE):
        t = timed()
        if i >= 0:
            slices.append(t / SLICE)
    sys.stdout.write(json.dumps(statistics.median(slices)) + "\\n")
    sys.stdout.flush()
if setup == "native":
    assert not _native.drain(), "an allowed connect was recorded"
    _native.uninstall()
    files.close()
""".replace("SLICE", str(SLICE))

C_INPROCESS_LIB = r"""
#define _GNU_SOURCE
#include <sys/socket.h>
#include <time.h>

/* n connects of fd to sa: the nanoseconds they took, or -1 when one failed */
long long bench_connect(int fd, const struct sockaddr *sa, int len, int n) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        if (connect(fd, sa, (socklen_t)len) != 0) {
            return -1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
}
"""

STARTUP_WORKER = """
import json, statistics, sys, time
import psycopg2, grpc  # objects a real suite has loaded: the install scans them all
from netguard.config import Settings
from netguard._session import NetguardSession
from netguard._native_phases import NativePhases
from netguard import _native
session = NetguardSession(Settings(mode="strict", native=True))
runs = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter_ns()
    phases = NativePhases(session)
    t1 = time.perf_counter_ns()
    runs.append((t1 - t0) / 1e6)
    objects = _native.stats()["objects"]
    phases.close()
session.close()
print(json.dumps({"runs": runs, "objects": objects}))
"""

C_WORKER = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static long long now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
int main(void) {
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int server = socket(AF_INET, SOCK_DGRAM, 0), fd = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(server, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        getsockname(server, (struct sockaddr *)&sin, &len) != 0) {
        return 1;
    }
    long n;
    static double slices[100000];
    while (scanf("%ld", &n) == 1 && n > 0) {
        long count = n / SLICE;
        for (long i = -count / 10 - 1; i < count; i++) {
            long long t0 = now();
            for (int k = 0; k < SLICE; k++) {
                if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
                    return 2;
                }
            }
            long long t1 = now();
            if (i >= 0) {
                slices[i] = (double)(t1 - t0) / SLICE;
            }
        }
        qsort(slices, (size_t)count, sizeof(double), cmp);
        printf("%f\n", slices[count / 2]);
        fflush(stdout);
    }
    return 0;
}
""".replace("SLICE", str(SLICE))


class Worker:
    """A child process timing batches of allowed UDP connects, told how many on stdin."""

    def __init__(self, role: str, argv: list[str], env: dict[str, str]) -> None:
        self.role = role
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1
        )

    def batch(self, n: int) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker {self.role!r} died (exit {self.proc.wait()})")
        return float(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("0\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=30)


def connect_row(
    row_id: str,
    what: str,
    argv: list[str],
    preload_env: dict[str, str],
    s: Settings,
    target: float | None,
) -> dict[str, Any]:
    plain_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    return lockstep_row(
        row_id, what, (argv, plain_env), (argv, {**plain_env, **preload_env}), s, target
    )


def lockstep_row(
    row_id: str,
    what: str,
    base: tuple[list[str], dict[str, str]],
    other: tuple[list[str], dict[str, str]],
    s: Settings,
    target: float | None,
) -> dict[str, Any]:
    """The ratio other / base of workers timed in lockstep, with a control (a second
    base worker) for the noise floor. Reported as plain_ns and preloaded_ns."""
    workers = {
        "plain": Worker("plain", *base),
        "preloaded": Worker("preloaded", *other),
        "control": Worker("control", *base),
    }
    times: dict[str, list[float]] = {k: [] for k in workers}
    ratios: list[float] = []
    noise: list[float] = []
    try:
        for rnd in range(s.warmup_rounds + s.rounds):
            order = list(workers)
            random.shuffle(order)
            got = {k: workers[k].batch(s.batch) for k in order}
            if rnd < s.warmup_rounds:
                continue
            for k, v in got.items():
                times[k].append(v)
            ratios.append(got["preloaded"] / got["plain"])
            noise.append(got["control"] / got["plain"])
    finally:
        for w in workers.values():
            w.close()
    r = summary(ratios)
    status = "info" if target is None else ("PASS" if r["median"] <= target else "MISS")
    return {
        "id": row_id,
        "what": what,
        "plain_ns": statistics.median(times["plain"]),
        "preloaded_ns": statistics.median(times["preloaded"]),
        "ratio": r,
        "noise_ratio": summary(noise),
        "target": target,
        "status": status,
    }


# ---------------------------------------------------------------------------------------
# Policy files


def write_row(
    row_id: str, what: str, native: Any, rules: list[Any], s: Settings, target: float | None
) -> dict[str, Any]:
    """ms to make a NativeSession and write the policies of the plain sizes (compiled
    beforehand: the plugin compiles them anyway)."""
    from netguard.policy import PolicySet

    policies = PolicySet(rules)
    infos = [policies.for_test(size) for size in ("small", "medium", "large")]
    root = tempfile.mkdtemp(prefix="netguard-bench-")
    runs = []
    try:
        for i in range(s.write_runs):
            t0 = perf_ns()
            session = native.NativeSession(os.path.join(root, str(i)))
            for info in infos:
                session.policy_file(info)
            t1 = perf_ns()
            runs.append((t1 - t0) / 1e6)
            session.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ms = summary(runs)
    status = "info" if target is None else ("PASS" if ms["median"] <= target else "MISS")
    sizes = sum(len(i.policy.to_bytes()) for i in infos)
    return {
        "id": row_id,
        "what": what,
        "ms": ms,
        "bytes": sizes,
        "target": target,
        "status": status,
    }


# ---------------------------------------------------------------------------------------
# Main


def build_c_worker(directory: str) -> str | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    source = os.path.join(directory, "bench_connect.c")
    binary = os.path.join(directory, "bench_connect")
    with open(source, "w", encoding="ascii") as f:
        f.write(C_WORKER)
    subprocess.run([cc, "-O2", "-std=c11", source, "-o", binary], check=True)
    return binary


def build_c_library(directory: str) -> str | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    source = os.path.join(directory, "bench_inprocess.c")
    library = os.path.join(directory, "bench_inprocess.so")
    with open(source, "w", encoding="ascii") as f:
        f.write(C_INPROCESS_LIB)
    subprocess.run([cc, "-O2", "-std=c11", "-shared", "-fPIC", source, "-o", library], check=True)
    return library


def worker_env() -> dict[str, str]:
    """The environment of workers that import netguard: the package this script imported
    (the source tree's when it is not installed) comes first on their path."""
    import netguard

    here = os.path.dirname(os.path.dirname(os.path.abspath(netguard.__file__)))
    path = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def startup_row(row_id: str, what: str, s: Settings, target: float) -> dict[str, Any]:
    """ms for native mode's start-up in a session (NativePhases), in a fresh interpreter
    with psycopg2 and grpcio loaded."""
    env = worker_env()
    out = subprocess.run(
        [sys.executable, "-c", STARTUP_WORKER, str(max(20, s.write_runs // 4))],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    result = json.loads(out)
    ms = summary(result["runs"])
    return {
        "id": row_id,
        "what": what,
        "ms": ms,
        "objects": result["objects"],
        "target": target,
        "status": "PASS" if ms["median"] <= target else "MISS",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    args = parser.parse_args()
    s = QUICK if args.quick else FULL
    native = import_netguard()
    native.check_supported()
    from netguard.policy import PolicySet
    from netguard.rules import parse_rule

    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="netguard-bench-") as tmp,
        native.NativeSession(os.path.join(tmp, "session")) as session,
    ):
        medium = PolicySet().for_test("medium")
        preload_env = session.child_env(medium, "<benchmark>", "medium", "strict")
        rows.append(
            connect_row(
                "1",
                "UDP connect, Python child: preloaded / plain",
                [sys.executable, "-c", PY_WORKER],
                preload_env,
                s,
                CONNECT_TARGET,
            )
        )
        binary = build_c_worker(tmp)
        if binary is not None:
            rows.append(
                connect_row(
                    "2", "UDP connect, C child: preloaded / plain", [binary], preload_env, s, None
                )
            )
        assert session.drain() == [], "an allowed connect was recorded"
    rows.append(write_row("3", "session start + 3 policy files", native, [], s, WRITE_TARGET_MS))
    # disjoint blocks, so that each rule is an interval of its own
    many = [
        parse_rule(f"10.{i % 256}.{2 * (i // 256)}.0/24:443", source="bench") for i in range(1000)
    ]
    rows.append(write_row("4", "the same, 1,000 config rules", native, many, s, None))

    env = worker_env()
    py = [sys.executable, "-c", INPROCESS_WORKER, "py"]
    with tempfile.TemporaryDirectory(prefix="netguard-bench-") as tmp:
        library = build_c_library(tmp)
        if library is not None:
            c = [sys.executable, "-c", INPROCESS_WORKER, "c"]
            rows.append(
                lockstep_row(
                    "5",
                    "in process, UDP connect from C: native / netguard",
                    ([*c, "netguard", library], env),
                    ([*c, "native", library], env),
                    s,
                    CONNECT_TARGET,
                )
            )
    rows.append(
        lockstep_row(
            "6",
            "in process, UDP connect from Python: native / netguard",
            ([*py, "netguard"], env),
            ([*py, "native"], env),
            s,
            CONNECT_TARGET,
        )
    )
    rows.append(
        lockstep_row(
            "7",
            "in process, UDP connect from Python: native / no netguard",
            ([*py, "plain"], env),
            ([*py, "native"], env),
            s,
            None,
        )
    )
    rows.append(startup_row("8", "native mode's start-up in a session", s, WRITE_TARGET_MS))

    table = []
    for r in rows:
        if "ratio" in r:
            ratio = r["ratio"]
            cells = [
                r["id"],
                r["what"],
                f"{r['plain_ns']:.0f} -> {r['preloaded_ns']:.0f} ns",
                f"{ratio['median']:.3f} [{ratio['ci95_lo']:.3f}, {ratio['ci95_hi']:.3f}]",
                f"{r['noise_ratio']['median']:.3f}",
            ]
        else:
            ms = r["ms"]
            cells = [
                r["id"],
                r["what"],
                f"{r['bytes']} bytes" if "bytes" in r else f"{r['objects']} objects",
                f"{ms['median']:.3f} ms [{ms['ci95_lo']:.3f}, {ms['ci95_hi']:.3f}]",
                "",
            ]
        target = (
            "" if r["target"] is None else (f"<= {r['target']}" + (" ms" if "ms" in r else ""))
        )
        table.append([*cells, target, r["status"]])
    print(
        f"netguard native-mode benchmarks ({s.name}), {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs"
    )
    for line in text_table(
        ["row", "what", "measured", "median [95% CI]", "noise", "target", "status"],
        table,
        right={2, 3, 4},
    ):
        print(line)
    print(status_line(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "settings": s.__dict__,
                    "date": datetime.datetime.now().isoformat(),
                    "host": socket.gethostname(),
                    "rows": rows,
                },
                f,
                indent=2,
            )
    return 0 if all(r["status"] != "MISS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
