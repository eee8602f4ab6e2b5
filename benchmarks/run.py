"""netguard benchmarks: one command, one table.

    python benchmarks/run.py                 full run
    python benchmarks/run.py --quick         short run (fewer rounds, smaller samples)
    python benchmarks/run.py --json out.json save every number as JSON as well

Rows (see benchmarks/README.md for what each measures and how to read it):

1. allowed UDP connect() to 127.0.0.1, guarded vs unguarded, interleaved   target <= 1.03
2. TCP connect()+close() to a loopback listener, guarded vs unguarded       target <= 1.01
3. policy lookup ns and build time at 10 .. 1M rules, IPv4 and IPv6          <= 100 ns, <= 1 s
4. a denied connect (the deny callback raises), for information

Connect rows run in worker processes driven in lockstep by this one: each round, every
(worker, state) pair times one batch, in a shuffled order, while the others wait on their
pipe. Ratios are taken within a round, so slow phases of a noisy machine hit both sides.
Only 127.0.0.1 is ever contacted; the addresses given to count_allowed() are numbers.

This file measures the C core (netguard._netguard) directly; it does not use the Python
layers above it.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import importlib
import itertools
import json
import os
import platform
import random
import socket
import statistics
import struct
import subprocess
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from _common import status_line, summary, text_table  # benchmarks/ is on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

perf_ns = time.perf_counter_ns

# ---------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Settings:
    name: str
    udp_rounds: int
    udp_batch: int  # connects per batch, timed in slices of UDP_SLICE
    tcp_rounds: int
    tcp_batch: int  # connect+close pairs per batch, each timed (<= LISTEN_BACKLOG)
    warmup_rounds: int  # rounds run and thrown away before the counted ones
    rule_counts: tuple[int, ...]
    lookup_addresses: int  # addresses judged per lookup run
    lookup_runs: int
    build_runs: int  # Policy() builds per rule count (the median is reported)


FULL = Settings(
    name="full",
    udp_rounds=1000,
    udp_batch=2000,
    tcp_rounds=600,
    tcp_batch=256,
    warmup_rounds=20,
    rule_counts=(10, 1_000, 100_000, 1_000_000),
    lookup_addresses=1_000_000,
    lookup_runs=9,
    build_runs=5,
)

QUICK = Settings(
    name="quick",
    udp_rounds=80,
    udp_batch=1000,
    tcp_rounds=80,
    tcp_batch=64,
    warmup_rounds=5,
    rule_counts=(10, 1_000, 100_000, 1_000_000),
    lookup_addresses=200_000,
    lookup_runs=3,
    build_runs=3,
)

UDP_TARGET = 1.03
TCP_TARGET = 1.01
LOOKUP_TARGET_NS = 100.0
BUILD_TARGET_S = 1.0
BUILD_TARGET_RULES = 1_000_000
LISTEN_BACKLOG = 1024
UDP_SLICE = 100  # UDP connects per timed slice
QUERY_PORT = 443


def load_core() -> ModuleType:
    """The C core, from the source tree when the package is not importable."""
    try:
        return importlib.import_module("netguard._netguard")
    except ImportError:
        if SRC in sys.path:
            raise
        sys.path.insert(0, SRC)
        return importlib.import_module("netguard._netguard")


def core_path(ng: ModuleType) -> str:
    path = ng.__file__
    assert path is not None
    return path


# ---------------------------------------------------------------------------------------
# Statistics


# ---------------------------------------------------------------------------------------
# Connect benchmarks: the worker side


class Denied(Exception):
    """What the benchmark's deny callback raises."""


def _deny_callback(op: str, family: int, host: object, port: object) -> None:
    raise Denied(op)


class Worker:
    """Lives in a child process; times batches of connects in the state it is told."""

    def __init__(self, role: str) -> None:
        self.ng = load_core()
        self.role = role
        ng = self.ng
        empty = array("Q")
        loopback6 = array("Q", [0, 1, 0, 1, 0])
        # the medium-size policy: 127.0.0.0/8 and ::1, any port
        self.allow = ng.Policy(
            array("Q", [0x7F000000, 0x7FFFFFFF, 0]), loopback6, [None], [], [], ng.DNS_LOCALHOST
        )
        self.deny = ng.Policy(empty, empty, [], [], [], 0)  # the small-size policy
        self.strict = role == "strict"

        self.udp_server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp_server.bind(("127.0.0.1", 0))
        self.udp_addr = self.udp_server.getsockname()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(LISTEN_BACKLOG)
        self.listener.setblocking(False)
        self.tcp_addr = self.listener.getsockname()
        self.linger0 = struct.pack("ii", 1, 0)

        if self.strict:
            # The audit hook is added on the first strict activation and stays for the
            # life of the process: add it now so that every "off" batch of this worker
            # runs with the (inert) hook present, not only the later ones.
            ng.install(_deny_callback)
            ng.activate(self.allow, True)
            ng.uninstall()

    def set_state(self, state: str) -> None:
        ng = self.ng
        ng.uninstall()
        if state == "off":
            return
        ng.install(_deny_callback)
        if state == "on":
            ng.activate(self.allow, self.strict)
        elif state == "deny":
            ng.activate(self.deny, self.strict)
        else:
            raise ValueError(state)

    def check_state(self, state: str) -> None:
        hooked = socket.socket.__dict__.get("connect") is not None
        if hooked != (state != "off"):
            raise RuntimeError(f"hooks {'in' if hooked else 'not in'} place in state {state}")

    def udp_batch(self, state: str, n: int) -> dict[str, float]:
        """n connects in slices of UDP_SLICE: the median and the mean of ns per call
        over the slices. A slice hit by an interrupt or preemption moves the mean, not
        the median."""
        self.set_state(state)
        self.check_state(state)
        connect = self.udp.connect  # looked up after the switch: the hook when installed
        addr = self.udp_addr
        repeat = itertools.repeat
        slices = []
        for i in range(-max(1, n // UDP_SLICE // 10), n // UDP_SLICE):  # warm-up first
            if state == "deny":
                t0 = perf_ns()
                for _ in repeat(None, UDP_SLICE):
                    try:
                        connect(addr)
                    except Denied:
                        pass
                t1 = perf_ns()
            else:
                t0 = perf_ns()
                for _ in repeat(None, UDP_SLICE):
                    connect(addr)
                t1 = perf_ns()
            if i >= 0:
                slices.append((t1 - t0) / UDP_SLICE)
        self.set_state("off")
        return {"median": statistics.median(slices), "mean": statistics.fmean(slices)}

    def _tcp_sockets(self, n: int) -> list[socket.socket]:
        socks = []
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # close() resets instead of leaving TIME_WAIT: tens of thousands of
            # connections a minute would otherwise exhaust the ephemeral ports
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, self.linger0)
            socks.append(s)
        return socks

    def _drain(self) -> int:
        accepted = 0
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return accepted
            conn.close()
            accepted += 1

    def tcp_batch(self, state: str, n: int) -> dict[str, float]:
        """n connect+close pairs on fresh sockets, each timed: median and mean ns."""
        self.set_state(state)
        self.check_state(state)
        addr = self.tcp_addr
        for s in self._tcp_sockets(8):  # warm-up
            s.connect(addr)
            s.close()
        self._drain()
        times = []
        for s in self._tcp_sockets(n):
            t0 = perf_ns()
            s.connect(addr)
            s.close()
            times.append(perf_ns() - t0)
        self.set_state("off")
        self._drain()
        return {"median": statistics.median(times), "mean": statistics.fmean(times)}

    def serve(self) -> None:
        gc.disable()
        out = sys.stdout
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            if cmd["op"] == "udp":
                value = self.udp_batch(cmd["state"], cmd["n"])
            elif cmd["op"] == "tcp":
                value = self.tcp_batch(cmd["state"], cmd["n"])
            else:
                raise ValueError(cmd)
            out.write(json.dumps(value) + "\n")
            out.flush()


def worker_main(role: str, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    Worker(role).serve()


# ---------------------------------------------------------------------------------------
# Connect benchmarks: the driver side


class WorkerProcess:
    def __init__(self, role: str, cpu: int | None) -> None:
        env = dict(os.environ)
        core_dir = os.path.dirname(os.path.dirname(core_path(load_core())))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (core_dir, env.get("PYTHONPATH", "")) if p)
        argv = [sys.executable, os.path.abspath(__file__), "--worker", role]
        if cpu is not None:
            argv += ["--cpu", str(cpu)]
        self.role = role
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1
        )

    def run(self, op: str, state: str, n: int) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, "state": state, "n": n}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker {self.role!r} died (exit {self.proc.wait()})")
        result: dict[str, float] = json.loads(line)
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=30)


# (worker, state) pairs timed each round. "clean" never activates a strict policy, so its
# process never gets the audit hook; "strict" does, on start; "control" is a second clean
# process, the cross-process noise floor.
UDP_PLAN = [
    ("clean", "off"),
    ("clean", "on"),
    ("clean", "deny"),
    ("strict", "off"),
    ("strict", "on"),
    ("control", "off"),
]
TCP_PLAN = [
    ("clean", "off"),
    ("clean", "on"),
    ("strict", "off"),
    ("strict", "on"),
    ("control", "off"),
]


def run_interleaved(
    workers: dict[str, WorkerProcess],
    op: str,
    plan: list[tuple[str, str]],
    rounds: int,
    warmup: int,
    n: int,
    rng: random.Random,
    progress: Callable[[str], None],
) -> dict[str, list[float]]:
    """Per (worker, state): the batch medians under "worker.state" and the batch means
    under "worker.state/mean", one value per round."""
    series: dict[str, list[float]] = {}
    for w, s in plan:
        series[f"{w}.{s}"] = []
        series[f"{w}.{s}/mean"] = []
    order = list(plan)
    t_start = time.monotonic()
    for r in range(warmup + rounds):
        rng.shuffle(order)
        for w, s in order:
            value = workers[w].run(op, s, n)
            if r >= warmup:
                series[f"{w}.{s}"].append(value["median"])
                series[f"{w}.{s}/mean"].append(value["mean"])
        if r % 50 == 49:
            elapsed = time.monotonic() - t_start
            progress(f"  {op}: round {r + 1}/{warmup + rounds} ({elapsed:.0f} s)")
    return series


def ratio_series(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def connect_rows(
    op: str, series: dict[str, list[float]], target: float, label: str
) -> list[dict[str, Any]]:
    def row(
        key: str, title: str, guarded: str, unguarded: str, target: float | None, note: str
    ) -> dict[str, Any]:
        g = summary(series[guarded])
        u = summary(series[unguarded])
        ratio = summary(ratio_series(series[guarded], series[unguarded]))
        delta = summary([x - y for x, y in zip(series[guarded], series[unguarded], strict=True)])
        of_means = summary(ratio_series(series[guarded + "/mean"], series[unguarded + "/mean"]))
        status = "info" if target is None else ("PASS" if ratio["median"] <= target else "MISS")
        return {
            "id": key,
            "title": title,
            "kind": "ratio",
            "guarded_ns": g,
            "unguarded_ns": u,
            "ratio": ratio,
            "delta_ns": delta,
            "ratio_of_batch_means": of_means,
            "target": target,
            "status": status,
            "note": note,
        }

    num = "1" if op == "udp" else "2"
    rows = [
        row(
            f"{num}a",
            f"{label}, hooks, strict=False",
            "clean.on",
            "clean.off",
            target,
            "same process; hooks installed vs uninstalled",
        ),
        row(
            f"{num}b",
            f"{label}, hooks+audit, strict=True",
            "strict.on",
            "strict.off",
            target,
            "same process; the baseline carries the inert audit hook",
        ),
        row(
            f"{num}c",
            f"{label}, strict=True vs clean process",
            "strict.on",
            "clean.off",
            target,
            "cross-process; includes the audit hook's cost",
        ),
        row(
            f"{num}d",
            f"{label}, inert audit hook, unguarded",
            "strict.off",
            "clean.off",
            None,
            "cross-process; what strict leaves behind for later unguarded tests",
        ),
        row(
            f"{num}e",
            f"{label}, control: clean vs clean",
            "control.off",
            "clean.off",
            None,
            "cross-process noise floor; ideally 1.000",
        ),
    ]
    if op == "udp":
        rows.append(
            row(
                "4",
                "denied UDP connect (callback raises)",
                "clean.deny",
                "clean.off",
                None,
                "guarded = denied call incl. raise/except; unguarded = allowed unguarded call",
            )
        )
    return rows


def bench_connect(
    settings: Settings, rng: random.Random, cpu: int | None, progress: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    workers = {role: WorkerProcess(role, cpu) for role in ("clean", "strict", "control")}
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        udp = run_interleaved(
            workers,
            "udp",
            UDP_PLAN,
            settings.udp_rounds,
            settings.warmup_rounds,
            settings.udp_batch,
            rng,
            progress,
        )
        progress(f"  udp: done in {time.monotonic() - t0:.1f} s")
        rows += connect_rows("udp", udp, UDP_TARGET, "UDP connect 127.0.0.1")
        t0 = time.monotonic()
        tcp = run_interleaved(
            workers,
            "tcp",
            TCP_PLAN,
            settings.tcp_rounds,
            settings.warmup_rounds,
            settings.tcp_batch,
            rng,
            progress,
        )
        progress(f"  tcp: done in {time.monotonic() - t0:.1f} s")
        rows += connect_rows("tcp", tcp, TCP_TARGET, "TCP connect+close loopback")
        raw = {"udp": udp, "tcp": tcp}
    finally:
        for w in workers.values():
            w.close()
    return rows, raw


# ---------------------------------------------------------------------------------------
# Lookup and build benchmarks

PORTSETS: list[tuple[tuple[int, int], ...] | None] = [
    None,  # any port
    ((443, 443),),
    ((80, 80), (443, 443)),
    ((8000, 8100),),
    ((1024, 65535),),
    ((22, 22), (80, 80), (443, 443), (8080, 8090)),
]
PORTSET_WEIGHTS = [30, 30, 10, 10, 10, 10]

# IPv4 prefix lengths /8-/32, short ones rare: weight 2**(L-8) up to /24, flat beyond.
# Uniform lengths would put ~40,000 /8 rules in a 1M-rule table; those covering "any"
# port swallow the whole address space and the table collapses to a single interval.
# With these weights each length below /24 covers ~0.6% of the space and a table holds
# about as many intervals as it has rules. IPv6 /16-/128 is uniform: the space is big.
V4_PREFIXES = range(8, 33)
V4_WEIGHTS = [2 ** min(length - 8, 16) for length in V4_PREFIXES]
V6_PREFIXES = range(16, 129)
MASK64 = (1 << 64) - 1


def make_rules(family: int, n: int, rng: random.Random) -> list[tuple[int, int, int]]:
    """n random (first, last, portset index) rules: prefixes /8-/32 (IPv4, weighted as
    above) or /16-/128 (IPv6, uniform), port sets drawn from PORTSETS."""
    bits = 32 if family == 4 else 128
    if family == 4:
        lengths = rng.choices(V4_PREFIXES, weights=V4_WEIGHTS, k=n)
    else:
        lengths = rng.choices(V6_PREFIXES, k=n)
    portsets = rng.choices(range(len(PORTSETS)), weights=PORTSET_WEIGHTS, k=n)
    full = (1 << bits) - 1
    getbits = rng.getrandbits
    rules = []
    for length, ps in zip(lengths, portsets, strict=True):
        host = full >> length
        first = getbits(bits) & ~host & full
        rules.append((first, first | host, ps))
    return rules


def pack_rules(family: int, rules: list[tuple[int, int, int]]) -> array[int]:
    """The packed form _netguard.Policy takes (what netguard._impl produces)."""
    if family == 4:
        return array("Q", itertools.chain.from_iterable(rules))
    m = MASK64
    return array(
        "Q",
        itertools.chain.from_iterable(
            (f >> 64, f & m, last >> 64, last & m, ps) for f, last, ps in rules
        ),
    )


def make_addresses(
    family: int, rules: list[tuple[int, int, int]], n: int, rng: random.Random
) -> array[int]:
    """n addresses, alternately inside a random rule and uniformly random."""
    bits = 32 if family == 4 else 128
    getbits = rng.getrandbits
    nrules = len(rules)
    values = []
    for i in range(n):
        if i & 1:
            values.append(getbits(bits))
        else:
            first, last, _ = rules[getbits(32) % nrules]
            values.append(first + (getbits(bits) & (last - first)))
    if family == 4:
        return array("I", values)
    return array("Q", itertools.chain.from_iterable((v >> 64, v & MASK64) for v in values))


LOOKUP_CHUNK = 16_384


def lookup_runs(
    policy: Any, family: int, addresses: array[int], runs: int
) -> tuple[list[float], list[float], int]:
    """Time count_allowed() over all addresses, `runs` times, one chunk of LOOKUP_CHUNK
    addresses per call. Returns ns per lookup of each whole run, ns per lookup of each
    chunk, and the allowed count of one run. On a shared machine a chunk that was
    preempted is an outlier the median of chunks ignores; a whole run absorbs it."""
    per = 1 if family == 4 else 2  # array items per address
    view = memoryview(addresses)
    chunks = [view[i : i + LOOKUP_CHUNK * per] for i in range(0, len(view), LOOKUP_CHUNK * per)]
    count = policy.count_allowed
    for chunk in chunks:  # warm-up: page in the table and the addresses
        count(family, chunk, QUERY_PORT)
    run_ns: list[float] = []
    chunk_ns: list[float] = []
    allowed = 0
    for _ in range(runs):
        total = 0
        allowed = 0
        for chunk in chunks:
            t0 = perf_ns()
            allowed += count(family, chunk, QUERY_PORT)
            t = perf_ns() - t0
            total += t
            chunk_ns.append(t / (len(chunk) // per))
        run_ns.append(total / (len(view) // per))
    return run_ns, chunk_ns, allowed


def lookup_case(
    ng: ModuleType, settings: Settings, family: int, count: int, seed: int, row_id: str
) -> dict[str, Any]:
    rng = random.Random(f"{seed}-{family}-{count}")
    t_gen = time.monotonic()
    rules = make_rules(family, count, rng)
    addresses = make_addresses(family, rules, settings.lookup_addresses, rng)
    gen_s = time.monotonic() - t_gen
    empty = array("Q")
    pack_s: list[float] = []
    build_s: list[float] = []
    build_cpu_s: list[float] = []
    policy = None
    gc.collect()
    gc.disable()
    try:
        for _ in range(settings.build_runs):
            policy = None  # free the previous one before building the next
            t0 = perf_ns()
            packed = pack_rules(family, rules)
            t1 = perf_ns()
            v4, v6 = (packed, empty) if family == 4 else (empty, packed)
            c0 = time.thread_time_ns()
            t2 = perf_ns()
            policy = ng.Policy(v4, v6, PORTSETS, [], [], 0)
            t3 = perf_ns()
            c1 = time.thread_time_ns()
            pack_s.append((t1 - t0) / 1e9)
            build_s.append((t3 - t2) / 1e9)
            build_cpu_s.append((c1 - c0) / 1e9)
        assert policy is not None
        run_ns, chunk_ns, allowed = lookup_runs(policy, family, addresses, settings.lookup_runs)
    finally:
        gc.enable()
    lookup = summary(chunk_ns)
    build = statistics.median(build_s)
    lookup_ok = lookup["median"] <= LOOKUP_TARGET_NS
    build_targeted = count == BUILD_TARGET_RULES
    build_ok = not build_targeted or build <= BUILD_TARGET_S
    return {
        "id": row_id,
        "kind": "lookup",
        "title": f"IPv{family} lookup/build, {count:,} rules",
        "family": family,
        "rules": count,
        "intervals": policy.intervals[0 if family == 4 else 1],
        "blob_mb": policy.nbytes / 1e6,
        "pack_s": statistics.median(pack_s),
        "build_s": build,
        "build_runs_s": build_s,
        "build_cpu_s": statistics.median(build_cpu_s),
        "lookup_ns": lookup,
        "lookup_run_ns": summary(run_ns),
        "lookup_chunk": LOOKUP_CHUNK,
        "addresses": len(addresses) // (1 if family == 4 else 2),
        "allowed_fraction": allowed / (len(addresses) // (1 if family == 4 else 2)),
        "query_port": QUERY_PORT,
        "generate_s": gen_s,
        "lookup_target_ns": LOOKUP_TARGET_NS,
        "build_target_s": BUILD_TARGET_S if build_targeted else None,
        "status": "PASS" if lookup_ok and build_ok else "MISS",
        "lookup_status": "PASS" if lookup_ok else "MISS",
        "build_status": ("PASS" if build_ok else "MISS") if build_targeted else "-",
    }


def bench_lookup(
    settings: Settings, seed: int, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    ng = load_core()
    rows: list[dict[str, Any]] = []
    for family in (4, 6):
        for count in settings.rule_counts:
            row = lookup_case(ng, settings, family, count, seed, f"3{'abcdefgh'[len(rows)]}")
            rows.append(row)
            progress(
                f"  IPv{family} {count:>9,} rules: lookup {row['lookup_ns']['median']:.1f} ns, "
                f"build {row['build_s'] * 1e3:.1f} ms, pack {row['pack_s'] * 1e3:.1f} ms "
                f"(rules and addresses generated in {row['generate_s']:.1f} s)"
            )
    return rows


# ---------------------------------------------------------------------------------------
# Report


def machine_info(ng: ModuleType) -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "compiler": platform.python_compiler(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "extension": core_path(ng),
        "extension_sha256": sha256_file(core_path(ng)),
        "extension_mtime": datetime.datetime.fromtimestamp(
            os.path.getmtime(core_path(ng)), datetime.timezone.utc
        ).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fmt_ns(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def render(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    out = []
    s = meta["settings"]
    out.append(
        f"netguard benchmarks ({s['name']} run), {meta['date']}: Python {meta['python']} "
        f"({meta['compiler']}), {meta['cpus']} CPUs ({meta['cpu_model']})"
    )
    out.append(f"extension: {meta['extension']} (sha256 {meta['extension_sha256'][:12]})")
    conn = [r for r in rows if r["kind"] == "ratio"]
    if conn:
        out.append("")
        out.append(
            f"Connects: {s['udp_rounds']} UDP rounds of {s['udp_batch']} calls and "
            f"{s['tcp_rounds']} TCP rounds of {s['tcp_batch']}, all states interleaved. "
            "ns per call: median over rounds."
        )
        out.append(
            "ratio: median of the per-round guarded/unguarded ratios, [p25-p75], and the "
            "95% CI of that median. delta: median per-round difference."
        )
        cells = []
        for r in conn:
            ratio = r["ratio"]
            cells.append(
                [
                    r["id"],
                    r["title"],
                    fmt_ns(r["unguarded_ns"]["median"]),
                    fmt_ns(r["guarded_ns"]["median"]),
                    f"{r['delta_ns']['median']:+.0f}",
                    f"{ratio['median']:.3f}",
                    f"[{ratio['p25']:.3f}-{ratio['p75']:.3f}]",
                    f"{ratio['ci95_lo']:.3f}-{ratio['ci95_hi']:.3f}",
                    "-" if r["target"] is None else f"<= {r['target']:.2f}",
                    r["status"],
                ]
            )
        out += text_table(
            [
                "#",
                "benchmark",
                "unguarded ns",
                "guarded ns",
                "delta ns",
                "ratio",
                "p25-p75",
                "95% CI",
                "target",
                "status",
            ],
            cells,
            right={2, 3, 4, 5},
        )
    look = [r for r in rows if r["kind"] == "lookup"]
    if look:
        r0 = look[0]
        out.append("")
        out.append(
            f"Lookups: count_allowed() over {r0['addresses']:,} addresses (half inside a rule, "
            f"half random), port {QUERY_PORT}, {s['lookup_runs']} runs in calls of "
            f"{r0['lookup_chunk']:,}. lookup ns: median [p25-p75] over those calls;"
        )
        out.append(
            "whole run: median over runs of run time / addresses. build: _netguard.Policy() "
            f"from packed arrays, median of {s['build_runs']}; pack: Python packing into them."
        )
        cells = []
        for r in look:
            lk = r["lookup_ns"]
            target = f"<= {LOOKUP_TARGET_NS:.0f} ns"
            if r["build_target_s"] is not None:
                target += f", <= {r['build_target_s']:.0f} s"
            status = r["status"]
            if status == "MISS":
                what = [k for k in ("lookup", "build") if r[f"{k}_status"] == "MISS"]
                status += f" ({', '.join(what)})"
            cells.append(
                [
                    r["id"],
                    f"IPv{r['family']}",
                    f"{r['rules']:,}",
                    f"{r['intervals']:,}",
                    f"{r['blob_mb']:.2f}",
                    f"{r['pack_s'] * 1e3:.1f}",
                    f"{r['build_s'] * 1e3:.1f}",
                    f"{lk['median']:.1f}",
                    f"[{lk['p25']:.1f}-{lk['p75']:.1f}]",
                    f"{r['lookup_run_ns']['median']:.1f}",
                    target,
                    status,
                ]
            )
        out += text_table(
            [
                "#",
                "family",
                "rules",
                "intervals",
                "blob MB",
                "pack ms",
                "build ms",
                "lookup ns",
                "p25-p75",
                "whole run",
                "target",
                "status",
            ],
            cells,
            right={2, 3, 4, 5, 6, 7, 9},
        )
    out.append("")
    out.append(status_line(rows))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run: fewer rounds")
    parser.add_argument("--json", metavar="PATH", help="also write every number to PATH")
    parser.add_argument("--only", choices=("connect", "lookup"), help="run one group of rows only")
    parser.add_argument(
        "--seed", type=int, default=20240611, help="RNG seed (default %(default)s)"
    )
    parser.add_argument(
        "--cpu", type=int, default=None, help="pin the connect workers to this CPU"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker_main(args.worker, args.cpu)
        return 0

    settings = QUICK if args.quick else FULL
    ng = load_core()
    meta = machine_info(ng)
    meta["settings"] = settings.__dict__
    meta["seed"] = args.seed
    meta["cpu_pin"] = args.cpu

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    t_all = time.monotonic()
    if args.only in (None, "connect"):
        progress("connect benchmarks (interleaved workers)...")
        conn_rows, raw = bench_connect(settings, random.Random(args.seed), args.cpu, progress)
        rows += conn_rows
    if args.only in (None, "lookup"):
        progress("lookup and build benchmarks...")
        rows += bench_lookup(settings, args.seed, progress)
    meta["elapsed_s"] = round(time.monotonic() - t_all, 1)

    print(render(meta, rows))
    print(f"\n(run took {meta['elapsed_s']:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows, "raw": raw}, f, indent=1)
            f.write("\n")
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
