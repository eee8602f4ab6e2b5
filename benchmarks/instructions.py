"""Instructions per allowed UDP connect, by hook state, counted with callgrind.

    python benchmarks/instructions.py                  off, on, inert, strict
    python benchmarks/instructions.py --calls 50000 --states off,on

Wall-clock ratios on a shared 2-core machine move by a percent from run to run;
instruction counts do not. This runs the same loop as row 1 of run.py under
`valgrind --tool=callgrind` twice per state (0 and --calls connects) and divides the
difference, so start-up costs cancel. Then, for each state against "off", the functions
whose per-connect instruction count changed: where the hook's cost is.

States: off (hooks never installed), on (hooks + a 127.0.0.0/8 policy, strict=False),
inert (hooks uninstalled after one strict activation: the audit hook stays registered),
strict (hooks + policy, strict=True: the audit backstop judges too).

Needs valgrind (callgrind_annotate). Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
STATES = ("off", "on", "inert", "strict")
ANNOTATE_LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?)(?:\s+\[[^\]]*\])?$")


def child(state: str, calls: int) -> None:
    """The measured process: `calls` connects in `state`, after 200 warm-up ones."""
    try:
        ng = importlib.import_module("netguard._netguard")
    except ImportError:
        sys.path.insert(0, SRC)
        ng = importlib.import_module("netguard._netguard")
    allow = ng.Policy(array("Q", [0x7F000000, 0x7FFFFFFF, 0]), array("Q"), [None], [], [], 2)

    def deny(*args: object) -> None:
        raise PermissionError(args)

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    addr = server.getsockname()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if state in ("inert", "strict"):
        ng.install(deny)
        ng.activate(allow, True)  # registers the audit hook, for good
        ng.uninstall()
    if state in ("on", "strict"):
        ng.install(deny)
        ng.activate(allow, state == "strict")
    connect = client.connect
    for _ in itertools.repeat(None, 200 + calls):
        connect(addr)


def count(state: str, calls: int, workdir: str) -> tuple[int, dict[str, int]]:
    """Total instructions and instructions by function (self cost) of one child run."""
    out = os.path.join(workdir, f"callgrind.{state}.{calls}")
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--dump-instr=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        state,
        str(calls),
    ]
    # a fixed hash seed: dict probe counts (and so instruction counts) stay put
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    text = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100", out],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    total = 0
    by_function: dict[str, int] = {}
    for line in text.splitlines():
        m = ANNOTATE_LINE.match(line)
        if m is None:
            continue
        ir = int(m.group(1).replace(",", ""))
        where = m.group(2)
        if where.startswith("PROGRAM TOTALS"):
            total = ir
        elif ":" in where:
            function = where.rsplit(":", 1)[1]
            by_function[function] = by_function.get(function, 0) + ir
    return total, by_function


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="connects per measured run")
    parser.add_argument("--states", default=",".join(STATES), help="comma-separated states")
    parser.add_argument("--child", nargs=2, metavar=("STATE", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        print("valgrind (with callgrind_annotate) is needed", file=sys.stderr)
        return 2
    states = [s for s in args.states.split(",") if s]
    for s in states:
        if s not in STATES:
            parser.error(f"unknown state {s!r}: expected some of {', '.join(STATES)}")
    per_call: dict[str, float] = {}
    functions: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="netguard-callgrind-") as workdir:
        for s in states:
            print(f"counting {s}...", file=sys.stderr, flush=True)
            t0, f0 = count(s, 0, workdir)
            t1, f1 = count(s, args.calls, workdir)
            per_call[s] = (t1 - t0) / args.calls
            functions[s] = {
                k: (f1.get(k, 0) - f0.get(k, 0)) / args.calls for k in set(f0) | set(f1)
            }
    print(f"instructions per allowed UDP connect to 127.0.0.1 ({args.calls:,} calls, callgrind)")
    base = per_call.get("off")
    for s in states:
        extra = "" if base is None or s == "off" else f"   {per_call[s] - base:+7.0f} vs off"
        print(f"  {s:<7} {per_call[s]:8.0f}{extra}")
    if "off" in functions:
        for s in states:
            if s == "off":
                continue
            print(f"\n{s} vs off, by function (instructions per connect, changes of 3 or more):")
            diff = [
                (functions[s].get(k, 0.0) - functions["off"].get(k, 0.0), k)
                for k in set(functions[s]) | set(functions["off"])
            ]
            for d, k in sorted(diff, reverse=True):
                if abs(d) >= 3:
                    print(f"  {d:+8.1f}  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
