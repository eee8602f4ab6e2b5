"""netguard's cost on a test suite in instructions, counted with callgrind: deterministic.

    python benchmarks/suite_instructions.py                 200 and 400 tests, none + strict
    python benchmarks/suite_instructions.py --tests 300 --states none,strict,warn
    python benchmarks/suite_instructions.py --states none,hooks1,wrap3,strict
    python benchmarks/suite_instructions.py --direct --jobs 2     5,000 tests, the ratio itself
    python benchmarks/suite_instructions.py --direct --jobs 2 --hash-seeds 0,1,2

Wall-clock ratios of whole pytest runs move by several percent from run to run on a
shared 2-core machine (benchmarks/suite.py quotes their medians and confidence
intervals); instruction counts do not. This generates the suite of benchmarks/suite.py,
runs ``pytest -q -p no:cacheprovider`` on its first N and first 2N tests under
``valgrind --tool=callgrind`` for each state, and splits the counts into

    per test    (count(2N) - count(N)) / N          what one more test costs
    fixed       count(N) - N * per test             start-up, collection set-up, exit

and then, against the state ``none`` (the plugin not loaded), the overhead per test and
the fixed overhead, and the ratio a suite of ``--suite`` tests (default 5,000, the size
of benchmarks/suite.py) would see in instructions. Instructions are not time: Python
code runs at a different number of instructions per cycle than the rest of a pytest run,
so treat the ratio as a reproducible proxy of suite.py's wall-clock ratio, not a
replacement. ``--direct`` counts one run of the whole ``--suite`` per state instead (about
five minutes per state on this machine; ``--jobs 2`` runs two at a time): the ratio itself.

The states ``hooks1``, ``hooks6`` and ``wrap3`` leave netguard out and load a plugin of
no-op hook implementations instead (one tryfirst call per test; six, as strict mode's phase
hooks were until 2026-12-06; the three trylast phase wrappers strict mode has now): what
pytest's hook dispatch costs any per-phase guard, before it does anything. The bytecode
caches are warmed by one untimed run of each state first, and every run has
``PYTHONHASHSEED=0`` (a random seed moves the per-test counts by several thousand
instructions between runs) and, where ``setarch -R`` exists, no address-space
randomisation: a run's count is then exactly reproducible. It is still not a smooth
function of the code: a change anywhere shifts when the garbage collector runs and which
entries of CPython's type-attribute cache collide, which moves a 400-test run by a few
million instructions either way. The split of N and 2N tests turns that into about 10k
per test of uncertainty at the default N; ``--direct`` at 5,000 tests into about 0.2%.
The hash seed moves a whole run more, up to ~0.4% of the baseline itself (dict layouts,
and so allocations and collisions): ``--hash-seeds 0,1,2`` counts each state under each
seed and gives the median of the per-seed ratios.
Needs valgrind. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

import suite as suite_mod  # benchmarks/ is on sys.path: the same generated suite
from _common import text_table

STATES = {
    "none": ("-p", "no:netguard"),
    "off": (),
    "strict": ("--netguard-mode=strict",),
    "warn": ("--netguard-mode=warn",),
    # What pluggy's dispatch alone costs, netguard not loaded: a plugin with one no-op
    # tryfirst pytest_runtest_setup (one call per test); one with no-op tryfirst hooks
    # for setup, call, teardown and makereport (six calls per test: strict mode's phase
    # hooks until 2026-12-06); and one with the three no-op trylast phase wrappers strict
    # mode has now.
    "hooks1": ("-p", "no:netguard", "-p", "_ng_noop_hooks1"),
    "hooks6": ("-p", "no:netguard", "-p", "_ng_noop_hooks6"),
    "wrap3": ("-p", "no:netguard", "-p", "_ng_noop_wrap3"),
}

_NOOP_PHASES = {
    "setup": "item",
    "call": "item",
    "teardown": "item",
    "makereport": "item, call",
}


def write_noop_plugins(directory: str) -> None:
    """The plugin modules of the ``hooks1``, ``hooks6`` and ``wrap3`` states, in
    ``directory``."""
    plain = (("_ng_noop_hooks1", ["setup"]), ("_ng_noop_hooks6", list(_NOOP_PHASES)))
    for name, phases in (*plain, ("_ng_noop_wrap3", ["setup", "call", "teardown"])):
        wrapper = name == "_ng_noop_wrap3"
        lines = ["import pytest", "", "", "class NoOp:"]
        for phase in phases:
            signature = f"    def pytest_runtest_{phase}(self, {_NOOP_PHASES[phase]}):"
            if wrapper:  # the shape of strict mode's: an except clause around the yield
                body = ["        try:", "            return (yield)"]
                body += ["        except BaseException:", "            raise"]
                lines += ["    @pytest.hookimpl(wrapper=True, trylast=True)", signature, *body]
            else:
                lines += ["    @pytest.hookimpl(tryfirst=True)", signature, "        pass"]
            lines.append("")
        lines += [
            "",
            "def pytest_configure(config):",
            f"    config.pluginmanager.register(NoOp(), {name + '-hooks'!r})",
        ]
        with open(os.path.join(directory, name + ".py"), "w") as f:
            f.write("\n".join(lines) + "\n")


def valgrind_prefix() -> list[str]:
    """``valgrind --tool=callgrind``, under ``setarch -R`` where there is one: without
    address-space randomisation a run's count is exactly reproducible (with it, object
    addresses and so the order of identity-keyed dicts and sets change from run to run)."""
    prefix = ["valgrind", "--tool=callgrind"]
    setarch = shutil.which("setarch")
    if setarch is not None and sys.platform.startswith("linux"):
        prefix = [setarch, os.uname().machine, "-R", *prefix]
    return prefix


def count(
    python: str, directory: str, out_dir: str, modules: list[str], state: str, env: dict[str, str]
) -> int:
    """Instructions of one ``pytest`` run of ``modules`` in ``state`` (callgrind's total).

    callgrind writes its file into ``out_dir``, not the suite's directory: pytest's
    rootdir is on ``sys.path``, and the import system lists that directory, so every file
    added there changes what a run costs."""
    with tempfile.NamedTemporaryFile(prefix=f"callgrind.{state}.", dir=out_dir) as out:
        proc = subprocess.run(
            [
                *valgrind_prefix(),
                f"--callgrind-out-file={out.name}",
                python,
                *suite_mod.PYTEST_ARGS,
                *STATES[state],
                *modules,
            ],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(f"{state}: pytest failed under callgrind:\n{proc.stdout}{proc.stderr}")
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if match is None:
        raise SystemExit(f"{state}: no instruction count in callgrind's output:\n{proc.stderr}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=200, help="N (a multiple of 100)")
    parser.add_argument(
        "--states", default="none,strict", help="comma list of " + ", ".join(STATES)
    )
    parser.add_argument("--suite", type=int, default=5000, help="suite size for the ratio")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="count one run of --suite tests per state instead of N and 2N (slower: the "
        "ratio itself, without the per-test and fixed split)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="callgrind runs at a time")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument(
        "--hash-seeds",
        default="0",
        help="with --direct: comma list of PYTHONHASHSEED values, each a run per state "
        "(the seed moves the whole run's count by ~0.4%%: the median ratio over a few "
        "seeds is the figure to quote)",
    )
    args = parser.parse_args(argv)
    states = args.states.split(",")
    if "none" not in states or any(s not in STATES for s in states):
        parser.error(f"--states: a comma list of {', '.join(STATES)} including none")
    try:
        hash_seeds = [int(x) for x in args.hash_seeds.split(",")]
    except ValueError:
        parser.error(f"--hash-seeds: a comma list of integers, not {args.hash_seeds!r}")
    if not args.direct:
        hash_seeds = [0]
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    n = args.tests
    sizes = (args.suite,) if args.direct else (n, 2 * n)
    with tempfile.TemporaryDirectory(prefix="netguard-instr-") as tmp:
        directory = os.path.join(tmp, "suite")
        out_dir = os.path.join(tmp, "callgrind")
        os.mkdir(out_dir)
        suite_mod.generate_suite(directory, max(sizes), args.seed)
        env = suite_mod.child_env(suite_mod.snapshot_package(os.path.join(tmp, "pkg")))
        plugins = os.path.join(tmp, "plugins")
        os.mkdir(plugins)
        write_noop_plugins(plugins)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), plugins]))
        modules = sorted(m for m in os.listdir(directory) if m.startswith("test_gen_"))
        per_module = suite_mod.TESTS_PER_MODULE
        for state in states:  # warm the bytecode caches (pytest's rewritten ones too)
            subprocess.run(
                [sys.executable, *suite_mod.PYTEST_ARGS, *STATES[state], *modules],
                cwd=directory,
                env=env,
                capture_output=True,
                check=True,
            )
        runs = [(state, size, h) for h in hash_seeds for state in states for size in sizes]
        print(
            f"  {len(runs)} runs under callgrind ({', '.join(map(str, sizes))} tests), "
            f"{args.jobs} at a time...",
            file=sys.stderr,
        )
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {
                run: pool.submit(
                    count,
                    sys.executable,
                    directory,
                    out_dir,
                    modules[: run[1] // per_module],
                    run[0],
                    {**env, "PYTHONHASHSEED": str(run[2])},
                )
                for run in runs
            }
            totals = {run: future.result() for run, future in futures.items()}
    if args.direct:
        print(f"instructions (callgrind), suite of benchmarks/suite.py, {args.suite:,} tests")
        rows = []
        for state in states:
            row = [state]
            ratios = []
            for h in hash_seeds:
                base = totals[("none", args.suite, h)]
                total = totals[(state, args.suite, h)]
                ratios.append(total / base)
                row += [f"{total / 1e6:,.1f}M", f"{(total - base) / 1e6:+,.1f}M"]
                row.append(f"{total / base:.4f}")
            rows.append([*row, f"{statistics.median(ratios):.4f}"] if len(hash_seeds) > 1 else row)
        headers = ["state"]
        for h in hash_seeds:
            seed = f" (seed {h})" if len(hash_seeds) > 1 else ""
            headers += [f"total{seed}", "vs none", "ratio"]
        headers += ["median ratio"] if len(hash_seeds) > 1 else []
        print("\n".join(text_table(headers, rows, right=set(range(1, len(headers))))))
        return 0
    counts = {state: (totals[(state, n, 0)], totals[(state, 2 * n, 0)]) for state in states}
    base_small, base_big = counts["none"]
    base_per = (base_big - base_small) / n
    base_fixed = base_small - n * base_per
    base_total = base_fixed + args.suite * base_per
    rows = []
    for state in states:
        small, big = counts[state]
        per = (big - small) / n
        fixed = small - n * per
        total = fixed + args.suite * per
        rows.append(
            [
                state,
                f"{per / 1e3:,.1f}k",
                f"{(per - base_per) / 1e3:+,.1f}k",
                f"{fixed / 1e6:,.1f}M",
                f"{(fixed - base_fixed) / 1e6:+,.1f}M",
                f"{total / base_total:.4f}",
            ]
        )
    print(
        f"instructions (callgrind), suite of benchmarks/suite.py, {n} and {2 * n} tests; "
        f"ratio: a {args.suite:,}-test suite against none"
    )
    headers = ["state", "per test", "vs none", "fixed", "vs none", "ratio"]
    print("\n".join(text_table(headers, rows, right={1, 2, 3, 4, 5})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
