"""netguard's cost on a whole test suite: one command, one table.

    python benchmarks/suite.py                 full run (5,000 tests)
    python benchmarks/suite.py --quick         short run (1,000 tests, fewer rounds)
    python benchmarks/suite.py --json out.json save every number as JSON as well

Generates, in a temporary directory, a suite of small, medium and large tests (plain
functions, parametrized ones, methods of marked and unmarked classes, module-level
``pytestmark``), then times whole ``python -m pytest -q -p no:cacheprovider`` runs of it in
these states, all of them once per round in a freshly shuffled order:

    none     ``-p no:netguard``: the plugin not loaded at all (the baseline)
    off      the plugin loaded, default mode (off)
    strict   ``--netguard-mode=strict``
    control  ``-p no:netguard`` again: the noise floor of the ratios; ideally 1.000

The ratios are taken within each round (state / none), so a slow phase of a noisy machine
hits both sides. Targets (issue 3): strict / none <= 1.02; off / none <= 1.00, i.e. no
overhead that the measurement can tell from noise (judged by the 95% confidence interval
of the median ratio); ``import netguard.plugin`` <= 2 ms (netguard's modules only, not
pytest; ``-X importtime``, bytecode cache warm).

The package is copied into the temporary directory first and the runs import it from
there (``PYTHONPATH``), so edits to ``src/`` during a run cannot change what is measured.
Medium and large tests contact only 127.0.0.1 (a UDP connect, a TCP connect to a
session-scoped listener); nothing leaves the machine.

The runs keep Python's bytecode cache (``PYTHONDONTWRITEBYTECODE`` is dropped from their
environment, as are ``PYTEST_ADDOPTS``, ``PYTEST_PLUGINS`` and every ``NETGUARD_*``), and
every run must pass all its tests; strict mode is checked to fail a small test that
connects before anything is timed.

When a ratio target is missed (``--profile``: always; ``--no-profile``: never), two
diagnostics follow: a probe plugin times every test's phases from inside pytest in a few
more interleaved runs, and one run of each state under cProfile names the functions. See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import pstats
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from _common import status_line, summary, text_table  # benchmarks/ is on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# ---------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Settings:
    name: str
    tests: int  # a multiple of TESTS_PER_MODULE
    rounds: int
    warmup_rounds: int  # rounds run and thrown away (bytecode caches, page cache)
    import_runs: int
    probe_rounds: int  # rounds of the per-test probe, when looking for where time goes


FULL = Settings(
    name="full", tests=5000, rounds=20, warmup_rounds=1, import_runs=31, probe_rounds=8
)
QUICK = Settings(
    name="quick", tests=1000, rounds=8, warmup_rounds=1, import_runs=11, probe_rounds=3
)

STRICT_TARGET = 1.02
OFF_TARGET = 1.00
IMPORT_TARGET_MS = 2.0
TESTS_PER_MODULE = 100
RUN_TIMEOUT_S = 900

PYTEST_ARGS = ("-m", "pytest", "-q", "-p", "no:cacheprovider")
STATES: dict[str, tuple[str, ...]] = {
    "none": ("-p", "no:netguard"),
    "off": (),
    "strict": ("--netguard-mode=strict",),
    "control": ("-p", "no:netguard"),
}
BASELINE = "none"

# Environment variables the children must not inherit: they would change what is measured.
DROP_ENV = (
    "PYTHONDONTWRITEBYTECODE",
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "PYTHONPROFILEIMPORTTIME",
)


# ---------------------------------------------------------------------------------------
# Statistics (the same conventions as run.py)


# ---------------------------------------------------------------------------------------
# The generated suite

PYTEST_INI = """\
[pytest]
# The size markers are declared here as well, so that the run without the plugin
# (-p no:netguard) collects the same suite without an unknown-marker warning per use.
markers =
    small: no network at all
    medium: loopback only
    large: any network
"""

CONFTEST = '''\
"""Shared by every module: a session-scoped loopback listener (TCP) and receiver (UDP)."""

import socket
import struct

import pytest

# close() resets instead of leaving TIME_WAIT: thousands of connections per run
_LINGER0 = struct.pack("ii", 1, 0)


class Loopback:
    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.tcp_addr = self.listener.getsockname()
        self.receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.receiver.bind(("127.0.0.1", 0))
        self.udp_addr = self.receiver.getsockname()

    def udp_connect(self):
        """A UDP connect() to 127.0.0.1 (it sends nothing)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(self.udp_addr)
            return s.getsockname()[1]

    def tcp_connect(self):
        """A TCP connect() to the listener; the server side is accepted and closed."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
            s.connect(self.tcp_addr)
            conn, _ = self.listener.accept()
            conn.close()
            return s.getsockname()[1]

    def close(self):
        self.listener.close()
        self.receiver.close()


@pytest.fixture(scope="session")
def loopback():
    lb = Loopback()
    yield lb
    lb.close()
'''

SMALL_BODIES = (
    "total = sum(k * k for k in range({a}))\n    assert total == {a_sq}",
    "words = sorted(str(k * {b} % 97) for k in range(50))\n    assert words[0] <= words[-1]",
    "d = {{str(k): k for k in range({a})}}\n    assert sum(d.values()) == {a_sum}",
    "s = '-'.join(f'{{k:03d}}' for k in range({b}))\n    assert s.count('-') == {b_minus}",
)
MEDIUM_BODY = "assert loopback.udp_connect() > 0\n    assert loopback.tcp_connect() > 0"
LARGE_BODY = (
    "assert socket.getaddrinfo('127.0.0.1', loopback.tcp_addr[1], type=socket.SOCK_STREAM)\n"
    "    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:\n"
    "        s.sendto(b'x', loopback.udp_addr)\n"
    "    assert loopback.tcp_connect() > 0"
)


@dataclass
class Composition:
    modules: int = 0
    tests: int = 0
    small: int = 0
    medium: int = 0
    large: int = 0
    parametrized: int = 0
    in_classes: int = 0
    network: int = 0  # tests that connect (medium and large)

    def add(self, size: str, *, param: bool = False, cls: bool = False, net: bool = False) -> None:
        self.tests += 1
        setattr(self, size, getattr(self, size) + 1)
        self.parametrized += param
        self.in_classes += cls
        self.network += net

    def describe(self) -> str:
        return (
            f"{self.tests:,} tests in {self.modules} modules: {self.small:,} small, "
            f"{self.medium:,} medium, {self.large:,} large; {self.network:,} connect to "
            f"127.0.0.1; {self.parametrized:,} parametrized, {self.in_classes:,} in classes"
        )


def small_body(rng: random.Random) -> str:
    a = rng.randrange(20, 120)
    b = rng.randrange(10, 60)
    return rng.choice(SMALL_BODIES).format(
        a=a, a_sq=sum(k * k for k in range(a)), a_sum=sum(range(a)), b=b, b_minus=max(b - 1, 0)
    )


def module_source(index: int, rng: random.Random, comp: Composition) -> str:
    """One module of TESTS_PER_MODULE tests. Every tenth module carries
    ``pytestmark = pytest.mark.medium``, so its unmarked tests are medium."""
    medium_module = index % 10 == 9
    default = "medium" if medium_module else "small"
    out = ["import socket  # noqa: F401", "", "import pytest", ""]
    if medium_module:
        out += ["pytestmark = pytest.mark.medium", ""]

    def func(name: str, body: str, *, marks: Sequence[str] = (), args: str = "") -> None:
        out.extend(f"@{m}" for m in marks)
        out.append(f"def {name}({args}):\n    {body}\n")

    # 32 plain small functions, every fourth explicitly marked small (which wins over a
    # module's pytestmark)
    for i in range(32):
        explicit = i % 4 == 0
        func(f"test_pure_{i}", small_body(rng), marks=["pytest.mark.small"] if explicit else [])
        comp.add("small" if explicit else default)
    # 2 parametrized small functions x 10
    for i in range(2):
        func(
            f"test_param_{i}",
            f"assert sum(range(n * {rng.randrange(5, 40)})) >= 0",
            marks=["pytest.mark.parametrize('n', range(10))"],
            args="n",
        )
        for _ in range(10):
            comp.add(default, param=True)
    # 1 unmarked class of 10 small methods
    out.append(f"class TestPure{index}:")
    for i in range(10):
        body = small_body(rng).replace("\n    ", "\n        ")
        out.append(f"    def test_method_{i}(self):\n        {body}\n")
        comp.add(default, cls=True)
    # 1 class marked medium: 8 methods that connect
    out.append("@pytest.mark.medium")
    out.append(f"class TestLoopback{index}:")
    for i in range(8):
        body = MEDIUM_BODY.replace("\n    ", "\n        ")
        out.append(f"    def test_connect_{i}(self, loopback):\n        {body}\n")
        comp.add("medium", cls=True, net=True)
    # 14 medium functions that connect
    for i in range(14):
        func(f"test_connect_{i}", MEDIUM_BODY, marks=["pytest.mark.medium"], args="loopback")
        comp.add("medium", net=True)
    # 1 medium parametrized function x 5
    func(
        "test_connect_param",
        MEDIUM_BODY,
        marks=["pytest.mark.medium", "pytest.mark.parametrize('n', range(5))"],
        args="n, loopback",
    )
    for _ in range(5):
        comp.add("medium", param=True, net=True)
    # 1 parametrized function x 10 whose parameters 3 and 7 are medium (marks on the
    # parameter set) and connect; the others are pure work
    func(
        "test_mixed_param",
        "if n in (3, 7):\n        "
        + MEDIUM_BODY.replace("\n    ", "\n        ")
        + "\n    else:\n        assert n * n >= 0",
        marks=[
            "pytest.mark.parametrize('n', "
            "[pytest.param(k, marks=pytest.mark.medium) if k in (3, 7) else k for k in range(10)])"
        ],
        args="n, loopback",
    )
    for k in range(10):
        medium_param = k in (3, 7)
        comp.add("medium" if medium_param else default, param=True, net=medium_param)
    # 1 large test: numeric getaddrinfo, a UDP sendto and a TCP connect, all 127.0.0.1
    func("test_large", LARGE_BODY, marks=["pytest.mark.large"], args="loopback")
    comp.add("large", net=True)
    comp.modules += 1
    return "\n".join(out)


PER_MODULE = 32 + 20 + 10 + 8 + 14 + 5 + 10 + 1
assert PER_MODULE == TESTS_PER_MODULE


def generate_suite(directory: str, tests: int, seed: int) -> Composition:
    if tests <= 0 or tests % TESTS_PER_MODULE:
        raise SystemExit(f"--tests must be a positive multiple of {TESTS_PER_MODULE}")
    rng = random.Random(seed)
    comp = Composition()
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "pytest.ini"), "w") as f:
        f.write(PYTEST_INI)
    with open(os.path.join(directory, "conftest.py"), "w") as f:
        f.write(CONFTEST)
    for i in range(tests // TESTS_PER_MODULE):
        with open(os.path.join(directory, f"test_gen_{i:03d}.py"), "w") as f:
            f.write(module_source(i, rng, comp))
    return comp


# A one-test suite that must fail in strict mode: proves the plugin enforces in the runs.
VIOLATION_CHECK = """\
import socket


def test_small_connects():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", 9))
"""


# ---------------------------------------------------------------------------------------
# The package under test: a snapshot, so concurrent edits to src/ do not leak into a run


def snapshot_package(dest_root: str) -> str:
    """Copy the importable netguard package (with its built extension) under dest_root;
    return the directory to put on PYTHONPATH."""
    import netguard

    src = os.path.dirname(os.path.abspath(netguard.__file__))
    target = os.path.join(dest_root, "netguard")
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest_root


def tree_sha256(directory: str) -> str:
    h = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".pyc"):
                continue
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, directory).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def child_env(pythonpath: str | None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in DROP_ENV and not k.startswith("NETGUARD_")
    }
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    env["PYTHONHASHSEED"] = "0"
    return env


# ---------------------------------------------------------------------------------------
# Running pytest


@dataclass
class RunResult:
    wall_s: float
    cpu_s: float  # user + system of the child
    returncode: int
    passed: int
    failed: int
    errors: int
    output: str


_SUMMARY_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|warnings?|xfailed|xpassed)")


def run_pytest(
    python: str, suite: str, args: Sequence[str], env: dict[str, str], out_path: str
) -> RunResult:
    argv = [python, *PYTEST_ARGS, *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out_path, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.run(
            argv, cwd=suite, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S
        )
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(out_path) as f:
        output = f.read()
    counts = {"passed": 0, "failed": 0, "errors": 0}
    lines = [line for line in output.splitlines() if line.strip()]
    if lines:
        for n, what in _SUMMARY_COUNT.findall(lines[-1]):
            key = "errors" if what.startswith("error") else what
            if key in counts:
                counts[key] = int(n)
    return RunResult(wall, cpu, proc.returncode, output=output, **counts)


def check_run(state: str, r: RunResult, expected: int) -> None:
    if r.returncode != 0 or r.passed != expected or r.failed or r.errors:
        tail = "\n".join(r.output.splitlines()[-30:])
        raise SystemExit(
            f"state {state!r}: expected {expected} passed, got exit {r.returncode}, "
            f"{r.passed} passed, {r.failed} failed, {r.errors} errors:\n{tail}"
        )


def verify_states(
    python: str, suite: str, check_dir: str, env: dict[str, str], work: str, expected: int
) -> dict[str, str]:
    """Untimed: every state passes the suite, the report header says what is loaded, and
    strict mode fails a small test that connects. Returns each state's header line."""
    headers = {}
    for state, args in STATES.items():
        # --collect-only without -q: the report header is printed
        argv = [python, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", *args]
        out = subprocess.run(
            argv, cwd=suite, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        ).stdout
        line = next((x for x in out.splitlines() if x.startswith("netguard")), "")
        want = {"off": "netguard: off", "strict": "netguard: mode strict"}.get(state, "")
        if (want == "" and line) or (want and not line.startswith(want)):
            raise SystemExit(f"state {state!r}: unexpected netguard header {line!r}")
        if f"{expected} tests collected" not in out:
            raise SystemExit(f"state {state!r}: did not collect {expected} tests:\n{out[-3000:]}")
        headers[state] = line
    r = run_pytest(python, check_dir, STATES["strict"], env, os.path.join(work, "check.out"))
    if r.failed != 1 or not re.search(r"\bNG\d{3}\b", r.output):
        raise SystemExit(f"strict mode did not fail a small test that connects:\n{r.output}")
    r = run_pytest(python, check_dir, STATES["off"], env, os.path.join(work, "check.out"))
    if r.passed != 1:
        raise SystemExit(f"off mode failed a small test that connects:\n{r.output}")
    return headers


def bench_runs(
    python: str,
    suite: str,
    env: dict[str, str],
    work: str,
    settings: Settings,
    expected: int,
    rng: random.Random,
    progress: Callable[[str], None],
) -> dict[str, dict[str, list[float]]]:
    """Per state, the wall and CPU seconds of each counted round."""
    wall: dict[str, list[float]] = {s: [] for s in STATES}
    cpu: dict[str, list[float]] = {s: [] for s in STATES}
    order = list(STATES)
    total = settings.warmup_rounds + settings.rounds
    t_start = time.monotonic()
    for r in range(total):
        rng.shuffle(order)
        for state in order:
            res = run_pytest(python, suite, STATES[state], env, os.path.join(work, "run.out"))
            check_run(state, res, expected)
            if r >= settings.warmup_rounds:
                wall[state].append(res.wall_s)
                cpu[state].append(res.cpu_s)
        counted = r >= settings.warmup_rounds
        last = {s: wall[s][-1] for s in STATES} if counted else {}
        progress(
            f"  round {r + 1}/{total}{'' if counted else ' (warm-up)'} "
            f"({time.monotonic() - t_start:.0f} s)"
            + (
                ": "
                + ", ".join(f"{s} {last[s]:.2f} s" for s in STATES)
                + f"; strict/none {last['strict'] / last['none']:.3f}"
                if counted
                else ""
            )
        )
    return {"wall": wall, "cpu": cpu}


def ratio_rows(raw: dict[str, dict[str, list[float]]], tests: int) -> list[dict[str, Any]]:
    wall, cpu = raw["wall"], raw["cpu"]
    base = wall[BASELINE]

    def row(key: str, title: str, state: str, target: float | None, by_ci: bool) -> dict[str, Any]:
        ratios = [x / y for x, y in zip(wall[state], base, strict=True)]
        cpu_ratios = [x / y for x, y in zip(cpu[state], cpu[BASELINE], strict=True)]
        deltas = [x - y for x, y in zip(wall[state], base, strict=True)]
        rs = summary(ratios)
        if target is None:
            status = "info"
        elif by_ci:
            # no overhead the measurement can tell from noise: the CI reaches the target
            status = "PASS" if rs["ci95_lo"] <= target else "MISS"
        else:
            status = "PASS" if rs["median"] <= target else "MISS"
        return {
            "id": key,
            "title": title,
            "kind": "ratio",
            "state": state,
            "baseline_s": summary(base),
            "state_s": summary(wall[state]),
            "delta_s": summary(deltas),
            "us_per_test": summary([d / tests * 1e6 for d in deltas]),
            "ratio": rs,
            "cpu_ratio": summary(cpu_ratios),
            "target": target,
            "judged_by": "ci" if by_ci else "median",
            "status": status,
        }

    return [
        row("s1", "strict mode vs not installed", "strict", STRICT_TARGET, False),
        row("s2", "installed, off vs not installed", "off", OFF_TARGET, True),
        row("s3", "control: not installed vs not installed", "control", None, False),
    ]


# ---------------------------------------------------------------------------------------
# Import time

_IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)\s*$")
PYTEST_MODULES = ("pytest", "_pytest", "pluggy")


def parse_importtime(stderr: str) -> list[tuple[int, int, int, str]]:
    """(self us, cumulative us, depth, module) per line, in the order printed (children
    before their parent)."""
    rows = []
    for line in stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m:
            rows.append((int(m[1]), int(m[2]), (len(m[3]) - 1) // 2, m[4]))
    return rows


def is_netguard(name: str) -> bool:
    return name == "netguard" or name.startswith("netguard.")


def netguard_import_cost(
    rows: list[tuple[int, int, int, str]], excluded: Callable[[str], bool]
) -> dict[str, Any]:
    """From one -X importtime output: netguard's own cost.

    ``self_us``: the self times of netguard's modules. ``cumulative_us``: every module
    imported under a top-level netguard import (the stdlib modules netguard needs
    included) minus the subtrees rooted at a module ``excluded`` says pytest has loaded
    before it loads a plugin. ``modules``: (self, cumulative without those) per netguard
    module."""
    self_us = 0
    cumulative = 0
    modules: dict[str, tuple[int, int]] = {}
    # Lines come children first; a line at depth d adopts the open entries deeper than d.
    stack: list[tuple[int, str, int, int]] = []  # depth, name, cumulative, pytest inside
    for self_t, cum_t, depth, name in rows:
        pytest_inside = 0
        while stack and stack[-1][0] > depth:
            _, child, child_cum, child_pytest = stack.pop()
            pytest_inside += child_cum if excluded(child) else child_pytest
        stack.append((depth, name, cum_t, pytest_inside))
        if is_netguard(name):
            self_us += self_t
            modules[name] = (self_t, cum_t - pytest_inside)
            if depth == 0:
                cumulative += cum_t - pytest_inside
    return {"self_us": self_us, "cumulative_us": cumulative, "modules": modules}


def _is_pytest(name: str) -> bool:
    return name.split(".")[0] in PYTEST_MODULES


def modules_of_pytest(python: str, env: dict[str, str]) -> frozenset[str]:
    """Every module ``import pytest`` loads (stdlib ones included)."""
    out = subprocess.run(
        [python, "-c", "import sys, pytest; print('\\n'.join(sys.modules))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return frozenset(out.split())


# key: (what follows `python -X importtime`, which subtrees to leave out: "pytest" = those
# of pytest, _pytest and pluggy; "loaded" = those of every module `import pytest` loads)
SESSION_ARGS = ("-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider")
IMPORT_CASES: dict[str, tuple[tuple[str, ...], str]] = {
    "plugin": (("-c", "import netguard.plugin"), "loaded"),
    "plugin_literal": (("-c", "import netguard.plugin"), "pytest"),
    "after_pytest": (("-c", "import pytest; import netguard.plugin"), "loaded"),
    # everything of netguard's a pytest session imports (the plugin's hooks import more)
    "session_off": (SESSION_ARGS, "loaded"),
    "session_strict": ((*SESSION_ARGS, *STATES["strict"]), "loaded"),
}


def bench_import(
    python: str, env: dict[str, str], work: str, runs: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Each of IMPORT_CASES under ``-X importtime``, bytecode cache warm, `runs` times. The
    pytest sessions run in an empty directory (nothing collected)."""
    assert "PYTHONDONTWRITEBYTECODE" not in env
    empty = os.path.join(work, "empty")
    os.makedirs(empty, exist_ok=True)
    with open(os.path.join(empty, "pytest.ini"), "w") as f:
        f.write("[pytest]\n")
    loaded = modules_of_pytest(python, env)
    excluders: dict[str, Callable[[str], bool]] = {
        "pytest": _is_pytest,
        "loaded": lambda name: name in loaded or _is_pytest(name),
    }
    commands = list(dict.fromkeys(args for args, _ in IMPORT_CASES.values()))
    for args in commands:  # warm-up: writes the .pyc files of the snapshot
        subprocess.run([python, *args], env=env, cwd=empty, capture_output=True)
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in IMPORT_CASES}
    for _ in range(runs):
        for args in commands:
            proc = subprocess.run(
                [python, "-X", "importtime", *args],
                env=env,
                cwd=empty,
                capture_output=True,
                text=True,
            )
            if proc.returncode not in (0, 5):  # 5: pytest collected nothing
                raise SystemExit(f"{args}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
            tree = parse_importtime(proc.stderr)
            for k, (case_args, excl) in IMPORT_CASES.items():
                if case_args == args:
                    samples[k].append(netguard_import_cost(tree, excluders[excl]))
    progress(f"  import: {runs} runs of each")
    out: dict[str, Any] = {}
    for k, runs_ in samples.items():
        names = sorted({n for s in runs_ for n in s["modules"]})
        out[k] = {
            "self_ms": summary([s["self_us"] / 1e3 for s in runs_]),
            "cumulative_ms": summary([s["cumulative_us"] / 1e3 for s in runs_]),
            "modules_ms": {
                n: {
                    "self": statistics.median(
                        s["modules"][n][0] / 1e3 for s in runs_ if n in s["modules"]
                    ),
                    "cumulative": statistics.median(
                        s["modules"][n][1] / 1e3 for s in runs_ if n in s["modules"]
                    ),
                }
                for n in names
            },
        }
    return out


def import_rows(imp: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, title, case, target in (
        ("i1", "import netguard.plugin: netguard only", "plugin", IMPORT_TARGET_MS),
        ("i2", "import netguard.plugin: all but pytest's own tree", "plugin_literal", None),
        ("i3", "import pytest; import netguard.plugin", "after_pytest", None),
        ("i4", "pytest session, off: all netguard imports", "session_off", None),
        ("i5", "pytest session, strict: all netguard imports", "session_strict", None),
    ):
        c = imp[case]["cumulative_ms"]
        status = "info" if target is None else ("PASS" if c["median"] <= target else "MISS")
        rows.append(
            {
                "id": key,
                "title": title,
                "kind": "import",
                "self_ms": imp[case]["self_ms"],
                "cumulative_ms": c,
                "modules_ms": imp[case]["modules_ms"],
                "target": target,
                "status": status,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------
# Where a state's extra time goes, 1: per-test times measured inside pytest (no profiler)

PROBE_MODULE = "ngbench_probe"
PROBE_SOURCE = '''\
"""Loaded with -p ngbench_probe: times each test's protocol and phases from wrappers
outside every other plugin's (tryfirst), and the collection; writes JSON at exit."""

import json
import os
import time

import pytest

_now = time.perf_counter_ns
_T0 = _now()
_SIZES = ("small", "medium", "large", "xlarge")
_tests = {}
_totals = {}


def _size(item):
    for mark in item.iter_markers():  # closest first, parameter marks included
        if mark.name in _SIZES:
            return mark.name
    return "small"


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    _totals["sessionstart_at"] = _now() - _T0  # every plugin configured


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_collection(session):
    t = _now()
    try:
        return (yield)
    finally:
        _totals["collection"] = _now() - t


def pytest_collection_modifyitems(items):
    for item in items:
        _tests[item.nodeid] = {"size": _size(item)}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    t = _now()
    _totals.setdefault("first_test_at", t - _T0)
    try:
        return (yield)
    finally:
        end = _now()
        _tests[item.nodeid]["protocol"] = end - t
        _totals["last_test_end_at"] = end - _T0


def _phase(name):
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def hook(item):
        t = _now()
        try:
            return (yield)
        finally:
            _tests[item.nodeid][name] = _now() - t

    return hook


pytest_runtest_setup = _phase("setup")
pytest_runtest_call = _phase("call")
pytest_runtest_teardown = _phase("teardown")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    _totals["unconfigure_at"] = _now() - _T0  # every other plugin unconfigured
    with open(os.environ["NGBENCH_PROBE_OUT"], "w") as f:
        json.dump({"totals": _totals, "tests": _tests}, f)
'''

PHASES = ("setup", "call", "teardown")


def probe_states(
    python: str,
    suite: str,
    env: dict[str, str],
    work: str,
    expected: int,
    rounds: int,
    rng: random.Random,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """`rounds` interleaved runs of none, off and strict with the probe plugin.

    Per state and size, for the protocol and each phase: the median over a run's tests,
    then over rounds the median of those (``us_per_test``) and of their differences to
    none's in the same round (``delta_us``): pairing by round keeps a slow minute of a
    shared machine out of the differences. Per state, the parts of a run likewise
    (``totals_s``, ``delta_s``)."""
    probe_dir = os.path.join(work, "probe")
    os.makedirs(probe_dir, exist_ok=True)
    with open(os.path.join(probe_dir, PROBE_MODULE + ".py"), "w") as f:
        f.write(PROBE_SOURCE)
    penv = dict(env)
    penv["PYTHONPATH"] = os.pathsep.join(p for p in (probe_dir, env.get("PYTHONPATH")) if p)
    states = ("none", "off", "strict")
    # state -> one dict per round: size -> key -> median us over the run's tests
    per_test: dict[str, list[dict[str, dict[str, float]]]] = {s: [] for s in states}
    # state -> one dict per round: part of the run -> seconds
    totals: dict[str, list[dict[str, float]]] = {s: [] for s in states}
    counts: dict[str, int] = {}
    order = list(states)
    for r in range(rounds):
        rng.shuffle(order)
        for state in order:
            out = os.path.join(work, "probe.json")
            penv["NGBENCH_PROBE_OUT"] = out
            res = run_pytest(
                python,
                suite,
                (*STATES[state], "-p", PROBE_MODULE),
                penv,
                os.path.join(work, "probe.out"),
            )
            check_run(state, res, expected)
            with open(out) as f:
                data = json.load(f)
            d = {k: v / 1e9 for k, v in data["totals"].items()}
            tests_s = sum(t["protocol"] for t in data["tests"].values()) / 1e9
            totals[state].append(
                {
                    "wall": res.wall_s,
                    # interpreter, import of pytest, exit: outside the probe's view
                    "outside": res.wall_s - d["unconfigure_at"],
                    "startup": d["sessionstart_at"],  # plugins loaded and configured
                    "collection": d["collection"],
                    "tests": tests_s,
                    "between": d["last_test_end_at"] - d["first_test_at"] - tests_s,
                    "finish": d["unconfigure_at"] - d["last_test_end_at"],
                }
            )
            samples: dict[str, dict[str, list[int]]] = {}
            for t in data["tests"].values():
                by_size = samples.setdefault(t["size"], {})
                for key in ("protocol", *PHASES):
                    by_size.setdefault(key, []).append(t[key])
            medians = {}
            for size, series in samples.items():
                med = {k: statistics.median(v) / 1e3 for k, v in series.items()}
                med["other"] = med["protocol"] - sum(med[p] for p in PHASES)
                medians[size] = med
                counts[size] = len(series["protocol"])
            per_test[state].append(medians)
        progress(f"  probe round {r + 1}/{rounds}")

    def over_rounds(
        series: list[dict[str, float]], base: list[dict[str, float]]
    ) -> tuple[dict[str, float], dict[str, float]]:
        keys = series[0].keys()
        value = {k: statistics.median(x[k] for x in series) for k in keys}
        delta = {
            k: statistics.median(x[k] - b[k] for x, b in zip(series, base, strict=True))
            for k in keys
        }
        return value, delta

    result: dict[str, Any] = {"rounds": rounds, "tests_by_size": counts, "states": {}}
    for state in states:
        totals_s, delta_s = over_rounds(totals[state], totals["none"])
        us: dict[str, dict[str, float]] = {}
        delta_us: dict[str, dict[str, float]] = {}
        for size in counts:
            us[size], delta_us[size] = over_rounds(
                [x[size] for x in per_test[state]], [x[size] for x in per_test["none"]]
            )
        result["states"][state] = {
            "totals_s": totals_s,
            "delta_s": delta_s,
            "us_per_test": us,
            "delta_us": delta_us,
        }
    return result


def render_probe(probe: dict[str, Any], tests: int) -> str:
    st = probe["states"]
    base = st["none"]
    out = [
        f"Per test, measured inside pytest by a probe plugin ({probe['rounds']} interleaved "
        "rounds, no profiler). Seconds: median over rounds of each part of a run; (+x): "
        "median over rounds of the difference to none in the same round.",
    ]
    keys = ("wall", "outside", "startup", "collection", "tests", "between", "finish")
    cells = []
    for state in ("none", "off", "strict"):
        t, dt = st[state]["totals_s"], st[state]["delta_s"]
        cells.append(
            [state]
            + [f"{t[k]:.3f}" if state == "none" else f"{t[k]:.3f} ({dt[k]:+.3f})" for k in keys]
        )
    out += text_table(["state", *(f"{k} s" for k in keys)], cells, set(range(1, len(keys) + 1)))
    out.append(
        "outside: before the probe loads and after it unconfigures (interpreter, pytest "
        "import, exit); startup: until every plugin is configured; tests: the sum of the "
        "tests' protocols; between: the rest of the test loop; finish: summaries, unconfigure."
    )
    for state in ("off", "strict"):
        extra = st[state]["delta_s"]["tests"]
        out.append(
            f"{state}: the tests' protocols take {extra * 1e3:+.0f} ms in all "
            f"({extra / tests * 1e6:+.1f} us per test), "
            f"{extra / base['totals_s']['wall'] * 100:+.1f}% of the baseline's wall time"
        )
    out.append("")
    out.append(
        "us: per round the median over the run's tests of that size, then the median over "
        "rounds; other = protocol - setup - call - teardown (reports, logging, the hooks "
        "between phases)."
    )
    cells = []
    order = ("small", "medium", "large", "xlarge")
    for size in sorted(probe["tests_by_size"], key=order.index):
        for state in ("none", "off", "strict"):
            v, dv = st[state]["us_per_test"][size], st[state]["delta_us"][size]
            cells.append(
                [
                    f"{size} ({probe['tests_by_size'][size]:,})" if state == "none" else "",
                    state,
                    *(
                        f"{v[key]:.1f}" if state == "none" else f"{v[key]:.1f} ({dv[key]:+.1f})"
                        for key in ("protocol", *PHASES, "other")
                    ),
                ]
            )
    out += text_table(
        ["size (tests)", "state", "protocol us", "setup us", "call us", "teardown us", "other us"],
        cells,
        {2, 3, 4, 5, 6},
    )
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# Where a state's extra time goes, 2: cProfile, function by function


_ADDRESS = re.compile(r" at 0x[0-9a-f]+")
_LIB_PREFIX = re.compile(r"^.*?/(?:site-packages|python\d+\.\d+)/")


def profile_states(
    python: str, suite: str, env: dict[str, str], work: str, expected: int, package_dir: str
) -> dict[str, Any]:
    """One run of none, off and strict under cProfile; per function, the difference in
    own time (tottime) against none, per test, and netguard's own functions."""
    stats: dict[str, pstats.Stats] = {}
    walls: dict[str, float] = {}
    for state in ("none", "off", "strict"):
        prof = os.path.join(work, f"{state}.prof")
        argv = ["-m", "cProfile", "-o", prof, *PYTEST_ARGS, *STATES[state]]
        before = time.perf_counter()
        proc = subprocess.run(
            [python, *argv],
            cwd=suite,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S * 3,
        )
        walls[state] = time.perf_counter() - before
        if proc.returncode != 0:
            raise SystemExit(f"profiled {state} run failed:\n{proc.stdout[-3000:]}")
        stats[state] = pstats.Stats(prof)

    def label(key: tuple[str, int, str]) -> str:
        filename, line, func = key
        if filename == "~":
            return _ADDRESS.sub("", func)  # "<function socket.close at 0x7f...>"
        if filename.startswith(package_dir):
            short = "netguard/" + os.path.relpath(filename, os.path.join(package_dir, "netguard"))
        else:
            short = _LIB_PREFIX.sub("", filename)
        return f"{short}:{line}({func})"

    def table(s: pstats.Stats) -> dict[str, tuple[int, float, float, bool]]:
        """label -> (primitive calls, tottime, cumtime, is netguard's)"""
        raw: dict[Any, Any] = s.stats  # type: ignore[attr-defined]
        out: dict[str, tuple[int, float, float, bool]] = {}
        for k, v in raw.items():
            lab = label(k)
            n, tt, ct, _ = out.get(lab, (0, 0.0, 0.0, False))
            out[lab] = (n + v[1], tt + v[2], ct + v[3], k[0].startswith(package_dir))
        return out

    base = table(stats["none"])
    result: dict[str, Any] = {"profiled_wall_s": walls, "states": {}}
    for state in ("off", "strict"):
        cur = table(stats[state])
        diffs = []
        for lab in set(cur) | set(base):
            n1, tt1, _, _ = cur.get(lab, (0, 0.0, 0.0, False))
            n0, tt0, _, _ = base.get(lab, (0, 0.0, 0.0, False))
            # Python functions whose call count changed: the differences of the others
            # are noise (a GC pause lands on whatever runs), and a builtin's line sums
            # every caller's (one import in a plugin's module would show here)
            if n1 != n0 and not lab.startswith("<"):
                diffs.append((tt1 - tt0, n1 - n0, lab))
        diffs.sort(reverse=True)
        own: list[dict[str, Any]] = [
            {"function": lab, "calls": n, "tottime_s": tt, "cumtime_s": ct}
            for lab, (n, tt, ct, mine) in cur.items()
            if mine
        ]
        own.sort(key=lambda d: -d["tottime_s"])
        total_tt = sum(v[1] for v in cur.values())
        base_tt = sum(v[1] for v in base.values())
        result["states"][state] = {
            "total_tottime_s": total_tt,
            "extra_tottime_s": total_tt - base_tt,
            "extra_us_per_test": (total_tt - base_tt) / expected * 1e6,
            "netguard_tottime_s": sum(d["tottime_s"] for d in own),
            "top_increases": [
                {"function": f, "delta_tottime_s": d, "delta_calls": n} for d, n, f in diffs[:25]
            ],
            "netguard_functions": own[:40],
        }
    return result


def render_profile(prof: dict[str, Any], tests: int) -> str:
    out = []
    w = prof["profiled_wall_s"]
    out.append(
        f"Under cProfile (one run each; the profiler inflates Python calls): none "
        f"{w['none']:.1f} s, off {w['off']:.1f} s, strict {w['strict']:.1f} s."
    )
    for state in ("off", "strict"):
        s = prof["states"][state]
        out.append("")
        out.append(
            f"{state}: netguard's own functions {s['netguard_tottime_s']:.2f} s "
            f"({s['netguard_tottime_s'] / tests * 1e6:.1f} us/test, profiled)"
        )
        cells = [
            [f"{d['delta_tottime_s'] / tests * 1e6:+.2f}", f"{d['delta_calls']:+,}", d["function"]]
            for d in s["top_increases"][:15]
        ]
        out += text_table(
            ["us/test", "calls", "own time vs none (Python functions whose call count changed)"],
            cells,
            {0, 1},
        )
        if state == "strict":
            out.append("")
            cells = [
                [
                    f"{d['tottime_s'] / tests * 1e6:.2f}",
                    f"{d['cumtime_s'] / tests * 1e6:.2f}",
                    f"{d['calls']:,}",
                    d["function"],
                ]
                for d in s["netguard_functions"][:20]
            ]
            out += text_table(
                ["own us/test", "cum us/test", "calls", "netguard function"], cells, {0, 1, 2}
            )
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# Report


def machine_info(python: str, env: dict[str, str], package_dir: str) -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = subprocess.run(
        [
            python,
            "-c",
            "import sys, pytest, pluggy, netguard, importlib.metadata as m;"
            "print(sys.version.split()[0]); print(pytest.__version__); print(pluggy.__version__);"
            "print(netguard.implementation()[1]);"
            "print(','.join(sorted({e.name for e in m.entry_points(group='pytest11')})))",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    head = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", REPO, "status", "--porcelain", "--", "src/netguard"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": versions[0],
        "pytest": versions[1],
        "pluggy": versions[2],
        "extension": versions[3],
        "pytest11_plugins": versions[4],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "package_sha256": tree_sha256(os.path.join(package_dir, "netguard")),
        "git_head": head,
        "src_modified": bool(dirty),
        "loadavg_start": os.getloadavg(),
    }


def render(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    out = []
    s = meta["settings"]
    out.append(
        f"netguard suite benchmark ({s['name']} run), {meta['date']}: Python {meta['python']}, "
        f"pytest {meta['pytest']}, pluggy {meta['pluggy']}, {meta['cpus']} CPUs "
        f"({meta['cpu_model']})"
    )
    out.append(
        f"package: snapshot of git {meta['git_head']}"
        f"{' + uncommitted changes in src/netguard' if meta['src_modified'] else ''} "
        f"(sha256 {meta['package_sha256'][:12]}); pytest11 plugins: {meta['pytest11_plugins']}"
    )
    out.append(f"suite: {meta['composition']}")
    if "loadavg_end" in meta:
        out.append(
            "load average (1 min) at start / end: "
            f"{meta['loadavg_start'][0]:.2f} / {meta['loadavg_end'][0]:.2f}"
        )
    ratio = [r for r in rows if r["kind"] == "ratio"]
    if ratio:
        out.append("")
        out.append(
            f"Whole runs ({' '.join(PYTEST_ARGS[1:])}): {s['rounds']} rounds of "
            f"{', '.join(STATES)}, shuffled per round. seconds: median over rounds. ratio: "
            "median of per-round ratios,"
        )
        out.append(
            "[p25-p75] and the 95% CI of that median. us/test: median per-round difference / "
            "tests. cpu: the same ratio of user+sys time."
        )
        cells = []
        for r in ratio:
            rs = r["ratio"]
            target = "-"
            if r["target"] is not None:
                target = f"<= {r['target']:.2f}" + (" (CI)" if r["judged_by"] == "ci" else "")
            cells.append(
                [
                    r["id"],
                    r["title"],
                    f"{r['baseline_s']['median']:.2f}",
                    f"{r['state_s']['median']:.2f}",
                    f"{r['us_per_test']['median']:+.1f}",
                    f"{rs['median']:.3f}",
                    f"[{rs['p25']:.3f}-{rs['p75']:.3f}]",
                    f"{rs['ci95_lo']:.3f}-{rs['ci95_hi']:.3f}",
                    f"{r['cpu_ratio']['median']:.3f}",
                    target,
                    r["status"],
                ]
            )
        out += text_table(
            [
                "#",
                "benchmark",
                "none s",
                "state s",
                "us/test",
                "ratio",
                "p25-p75",
                "95% CI",
                "cpu",
                "target",
                "status",
            ],
            cells,
            right={2, 3, 4, 5, 8},
        )
        out.append(
            "(CI): judged by the 95% CI: PASS when it reaches the target, i.e. the runs cannot "
            "tell the state from the baseline; s3 shows the noise floor."
        )
    imp = [r for r in rows if r["kind"] == "import"]
    if imp:
        out.append("")
        out.append(
            f"Import: python -X importtime -c ..., {s['import_runs']} runs, bytecode cache warm "
            "(PYTHONDONTWRITEBYTECODE unset). ms: median [p25-p75] over runs."
        )
        cells = []
        for r in imp:
            c = r["cumulative_ms"]
            cells.append(
                [
                    r["id"],
                    r["title"],
                    f"{r['self_ms']['median']:.2f}",
                    f"{c['median']:.2f}",
                    f"[{c['p25']:.2f}-{c['p75']:.2f}]",
                    "-" if r["target"] is None else f"<= {r['target']:.0f} ms",
                    r["status"],
                ]
            )
        out += text_table(
            ["#", "benchmark", "self ms", "cumul. ms", "p25-p75", "target", "status"],
            cells,
            right={2, 3},
        )
        for r in imp:
            if r["id"] in ("i1", "i4", "i5"):
                mods = sorted(r["modules_ms"].items(), key=lambda kv: -kv[1]["self"])
                out.append(
                    f"  {r['id']} by module, self ms: "
                    + ", ".join(f"{n.removeprefix('netguard.')} {v['self']:.2f}" for n, v in mods)
                )
    out.append("")
    out.append(status_line(rows))
    control = next((r for r in rows if r["id"] == "s3"), None)
    if control is not None:
        lo, hi = control["ratio"]["ci95_lo"], control["ratio"]["ci95_hi"]
        noise = STRICT_TARGET - 1
        if lo < 1 - noise or hi > 1 + noise:
            out.append(
                f"note: the control's 95% CI ({lo:.3f}-{hi:.3f}) is wider than "
                f"+-{noise:.0%}: this machine cannot resolve s1's target in time today; "
                "count instructions instead (suite_instructions.py --direct --hash-seeds "
                "0,1,2; benchmarks/README.md)"
            )
    return "\n".join(out)


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 tests, fewer rounds")
    parser.add_argument("--tests", type=int, help=f"tests in the suite (x{TESTS_PER_MODULE})")
    parser.add_argument("--rounds", type=int, help="counted rounds")
    parser.add_argument("--import-runs", type=int, help="runs of the import measurement")
    parser.add_argument("--json", metavar="PATH", help="also write every number to PATH")
    parser.add_argument("--only", choices=("runs", "import"), help="measure one part only")
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--profile", action="store_true", help="profile even if all pass")
    profile.add_argument("--no-profile", action="store_true", help="never profile")
    parser.add_argument("--seed", type=int, default=20240611, help="default %(default)s")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter with pytest and netguard"
    )
    parser.add_argument("--keep", metavar="DIR", help="generate the suite in DIR and keep it")
    parser.add_argument(
        "--no-snapshot",
        action="store_true",
        help="import netguard from where it is installed, not from a copy",
    )
    args = parser.parse_args(argv)

    settings = QUICK if args.quick else FULL
    settings = Settings(
        name=settings.name,
        tests=args.tests or settings.tests,
        rounds=args.rounds or settings.rounds,
        warmup_rounds=settings.warmup_rounds,
        import_runs=args.import_runs or settings.import_runs,
        probe_rounds=settings.probe_rounds,
    )

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t_all = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="netguard-suite-")
    try:
        pkg_root = os.path.join(tmp, "pkg")
        if args.no_snapshot:
            import netguard

            pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(netguard.__file__)))
            env = child_env(None)
        else:
            os.makedirs(pkg_root)
            snapshot_package(pkg_root)
            env = child_env(pkg_root)
        suite = os.path.abspath(args.keep) if args.keep else os.path.join(tmp, "suite")
        if args.keep and os.path.exists(suite):
            shutil.rmtree(suite)
        comp = generate_suite(suite, settings.tests, args.seed)
        check_dir = os.path.join(tmp, "check")
        os.makedirs(check_dir)
        with open(os.path.join(check_dir, "test_violation.py"), "w") as f:
            f.write(VIOLATION_CHECK)
        progress(f"suite: {comp.describe()} in {suite}")

        meta = machine_info(args.python, env, pkg_root)
        if not args.no_snapshot and not meta["extension"].startswith(pkg_root):
            raise SystemExit(f"the runs import {meta['extension']}, not the snapshot")
        meta["settings"] = settings.__dict__
        meta["seed"] = args.seed
        meta["composition"] = comp.describe()
        meta["states"] = {k: [*PYTEST_ARGS, *v] for k, v in STATES.items()}

        rows: list[dict[str, Any]] = []
        raw: dict[str, Any] = {}
        prof: dict[str, Any] | None = None
        probe: dict[str, Any] | None = None
        if args.only in (None, "runs"):
            progress("checking the states (untimed)...")
            meta["headers"] = verify_states(args.python, suite, check_dir, env, tmp, comp.tests)
            progress("timed runs...")
            raw = bench_runs(
                args.python,
                suite,
                env,
                tmp,
                settings,
                comp.tests,
                random.Random(args.seed),
                progress,
            )
            rows += ratio_rows(raw, comp.tests)
        if args.only in (None, "import"):
            progress("import time...")
            rows += import_rows(
                bench_import(args.python, env, tmp, settings.import_runs, progress)
            )
        missed_run = any(r["kind"] == "ratio" and r["status"] == "MISS" for r in rows)
        if args.only in (None, "runs") and (args.profile or (missed_run and not args.no_profile)):
            progress("where the time goes: per-test probe...")
            probe = probe_states(
                args.python,
                suite,
                env,
                tmp,
                comp.tests,
                settings.probe_rounds,
                random.Random(args.seed + 1),
                progress,
            )
            progress("where the time goes: one run of none, off and strict under cProfile...")
            prof = profile_states(args.python, suite, env, tmp, comp.tests, pkg_root)
        meta["loadavg_end"] = os.getloadavg()
        meta["elapsed_s"] = round(time.monotonic() - t_all, 1)

        print(render(meta, rows))
        if probe is not None:
            print()
            print(render_probe(probe, comp.tests))
        if prof is not None:
            print()
            print(render_profile(prof, comp.tests))
        print(f"\n(run took {meta['elapsed_s']:.0f} s)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {"meta": meta, "rows": rows, "raw": raw, "probe": probe, "profile": prof},
                    f,
                    indent=1,
                )
                f.write("\n")
            progress(f"wrote {args.json}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
