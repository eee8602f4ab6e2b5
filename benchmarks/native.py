"""Native mode benchmarks: what the preload library costs a child process.

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
    workers = {
        "plain": Worker("plain", argv, plain_env),
        "preloaded": Worker("preloaded", argv, {**plain_env, **preload_env}),
        "control": Worker("control", argv, plain_env),
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
                f"{r['bytes']} bytes",
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
