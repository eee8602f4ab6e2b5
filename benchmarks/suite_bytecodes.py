"""Where strict mode's per-test cost goes, in Python bytecodes per function: deterministic.

    PYTHON312/bin/python benchmarks/suite_bytecodes.py               300 tests
    PYTHON312/bin/python benchmarks/suite_bytecodes.py --tests 500

Needs CPython 3.12 or later (``sys.monitoring``) with netguard and pytest installed. It
generates the suite of benchmarks/suite.py, runs it in-process twice, plugin not loaded
(``-p no:netguard``) and ``--netguard-mode=strict``, counting every bytecode instruction
executed while the tests run (from ``pytest_runtestloop`` to ``pytest_sessionfinish``,
so start-up and collection are left out), and prints the functions whose counts differ,
per test. Instruction counts under callgrind (benchmarks/suite_instructions.py) say how
much; this says which Python functions. C code (the audit hook, the socket hooks) is not
counted here.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

import suite as suite_mod  # benchmarks/ is on sys.path: the same generated suite

_CHILD = r"""
import collections, json, sys
import pytest

mon = sys.monitoring
TOOL = 3
mon.use_tool_id(TOOL, "netguard-bytecodes")
counts = collections.Counter()
mon.register_callback(TOOL, mon.events.INSTRUCTION, lambda code, offset: counts.update((code,)))


class Window:
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        mon.set_events(TOOL, mon.events.INSTRUCTION)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session):
        mon.set_events(TOOL, 0)


status = pytest.main(sys.argv[2:], plugins=[Window()])
names = {}
for code, n in counts.items():
    where = code.co_filename.split("site-packages/")[-1].split("/pkg/")[-1]
    key = f"{where}:{code.co_firstlineno} {code.co_qualname}"
    names[key] = names.get(key, 0) + n
with open(sys.argv[1], "w") as f:
    json.dump(names, f)
sys.exit(int(status))
"""


def count(
    directory: str, state_args: tuple[str, ...], out: str, env: dict[str, str]
) -> dict[str, int]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, out, "-q", "-p", "no:cacheprovider", *state_args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed ({state_args}):\n{proc.stdout}{proc.stderr}")
    with open(out) as f:
        data: dict[str, int] = json.load(f)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=300, help="a multiple of 100")
    parser.add_argument("--top", type=int, default=25, help="functions to show")
    parser.add_argument("--seed", type=int, default=20240611)
    args = parser.parse_args(argv)
    if sys.version_info < (3, 12):
        raise SystemExit("needs CPython 3.12 or later (sys.monitoring)")
    with tempfile.TemporaryDirectory(prefix="netguard-bytecodes-") as tmp:
        directory = os.path.join(tmp, "suite")
        suite_mod.generate_suite(directory, args.tests, args.seed)
        env = suite_mod.child_env(suite_mod.snapshot_package(os.path.join(tmp, "pkg")))
        none = count(directory, ("-p", "no:netguard"), os.path.join(tmp, "none.json"), env)
        strict = count(
            directory, ("--netguard-mode=strict",), os.path.join(tmp, "strict.json"), env
        )
    n = args.tests
    diffs = collections.Counter({k: strict.get(k, 0) - none.get(k, 0) for k in {*none, *strict}})
    total = sum(strict.values()) - sum(none.values())
    print(
        f"bytecodes executed while {n} tests run: none {sum(none.values()) / n:,.0f} per test, "
        f"strict {sum(strict.values()) / n:,.0f} (+{total / n:,.0f})"
    )
    print(f"{'per test':>9}  function (strict - none)")
    for key, d in sorted(diffs.items(), key=lambda kv: -abs(kv[1]))[: args.top]:
        if d:
            print(f"{d / n:+9.1f}  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
