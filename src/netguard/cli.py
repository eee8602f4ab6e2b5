"""The ``netguard`` command: ``netguard run`` and ``netguard check``.

``netguard run [--mode strict|warn] [--size SIZE] [--allow RULE]... [--allowlist FILE]
-- CMD ARGS`` runs any command under a test size's policy through native mode's preload
library (Linux), then prints a summary of its network events to stderr.

``netguard check DEST [--size SIZE] [--allow RULE]... [--allowlist FILE]`` says, for each
size, whether a destination is allowed and by which rule.

Rules and allowlist files are read by the same code as the plugin's (``netguard.rules``,
``netguard.config``), and follow the same layering: ``--allow`` and ``--allowlist`` rules
extend medium, large and xlarge; small stays hermetic. Exit statuses are in
:data:`EXIT_STATUSES` and ``docs/native.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:
    from netguard.native import NativeEvent
    from netguard.policy import CompiledPolicyInfo, PolicySet
    from netguard.rules import Rule

__all__ = ["EXIT_BLOCKED", "EXIT_STATUSES", "EXIT_USAGE", "main"]

EXIT_USAGE: Final = 2
#: ``netguard run`` in strict mode when netguard blocked at least one call.
EXIT_BLOCKED: Final = 3
EXIT_NOT_EXECUTABLE: Final = 126
EXIT_NOT_FOUND: Final = 127

EXIT_STATUSES: Final = f"""\
exit status:
  netguard run    the command's own status; 128+N when a signal N ended it;
                  {EXIT_BLOCKED} in strict mode when netguard blocked a call (whatever the
                  command returned); {EXIT_NOT_EXECUTABLE} command not executable; \
{EXIT_NOT_FOUND} command not found
  netguard check  0, or with --size: 0 allowed, 1 blocked
  both            {EXIT_USAGE} for a usage error (a bad rule, allowlist or destination),
                  or where native mode cannot run (netguard run, not on Linux)"""

SIZES: Final = ("small", "medium", "large", "xlarge")

_AF_UNIX: Final = int(getattr(socket, "AF_UNIX", 1))


class _UsageError(Exception):
    """A bad argument found after argparse (a rule, a file, a destination)."""


# --------------------------------------------------------------------------- parsing


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netguard",
        description=(
            "Run a command under netguard's network policy for a test size, or ask "
            "whether a destination is allowed (the native mode page of the docs: "
            "docs/native.md)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_STATUSES,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run a command under a size's policy and summarise its network calls",
        description=(
            "Run CMD with netguard's preload library (Linux): every connect, sendto, "
            "sendmsg and name lookup the command and its child processes make through "
            "the C library is judged by the policy of --size. In strict mode a blocked "
            "call fails with EACCES (Permission denied); in warn mode it goes through. "
            "A summary of the blocked (or warned) calls goes to stderr."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  netguard run -- ./build.sh\n"
            "  netguard run --size medium --allow db.internal:5432 -- make test\n"
            "  netguard run --mode warn -- curl -sS https://example.com/\n\n" + EXIT_STATUSES
        ),
    )
    run.add_argument(
        "--mode",
        choices=("strict", "warn"),
        default="strict",
        help="strict: a blocked call fails (default); warn: it goes through, and is reported",
    )
    _size_option(run, default="small")
    _rule_options(run)
    run.add_argument(
        "--record-allowed",
        action="store_true",
        help="record allowed calls too, and list them in the summary",
    )
    run.add_argument(
        "--events",
        metavar="PATH",
        help="also write every event as a JSON line to PATH",
    )
    run.add_argument(
        "--test-id",
        default="<netguard run>",
        metavar="ID",
        help="the label events carry as their test id (default: %(default)s)",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command")

    check = commands.add_parser(
        "check",
        help="say for each size whether a destination is allowed, and by which rule",
        description=(
            "Judge DEST with the policy of each size (or of --size only), as a test's "
            "connection or lookup would be, without touching the network."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "destinations:\n"
            "  HOST:PORT     an IPv4 address (any form the kernel reads) or a name, and a port\n"
            "  [IPV6]:PORT   an IPv6 address and a port\n"
            "  unix:PATH     an AF_UNIX socket (unix:@name for an abstract one)\n"
            "  dns:NAME      a lookup of NAME\n\n"
            "examples:\n"
            "  netguard check 127.0.0.1:5432\n"
            "  netguard check --allow 10.0.0.0/8:443 10.1.2.3:443\n"
            "  netguard check --size small dns:localhost\n\n" + EXIT_STATUSES
        ),
    )
    check.add_argument("dest", metavar="DEST", help="the destination (forms below)")
    _size_option(check, default=None)
    _rule_options(check)
    return parser


def _size_option(parser: argparse.ArgumentParser, default: str | None) -> None:
    if default is None:
        text = "judge for this size only; exit status 0 when allowed, 1 when blocked"
    else:
        text = "the test size whose policy applies (default: %(default)s)"
    parser.add_argument("--size", choices=SIZES, default=default, help=text)


def _rule_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="RULE",
        help=(
            "a rule extending medium, large and xlarge (small stays hermetic); may be "
            "repeated, and one value may hold several rules separated by commas"
        ),
    )
    parser.add_argument(
        "--allowlist",
        metavar="FILE",
        help="an allowlist file of named rules (TOML; .yaml/.yml with the yaml extra)",
    )


def _rules(args: argparse.Namespace) -> list[Rule]:
    """The rules of --allow and --allowlist, each with its source, as the plugin reads
    them (``--allow[N]``, ``FILE:LINE``)."""
    from netguard.config import ConfigError, load_allowlist, split_rules
    from netguard.rules import RuleError, parse_rule

    rules: list[Rule] = []
    texts = [text for value in args.allow for text in split_rules(value)]
    for index, text in enumerate(texts, 1):
        try:
            rules.append(parse_rule(text, source=f"--allow[{index}]"))
        except RuleError as err:
            raise _UsageError(str(err)) from None
    if args.allowlist is not None:
        try:
            rules.extend(load_allowlist(args.allowlist))
        except ConfigError as err:
            raise _UsageError(str(err)) from None
    return rules


def _policies(rules: Sequence[Rule]) -> PolicySet:
    from netguard.policy import PolicySet

    return PolicySet(rules)


# --------------------------------------------------------------------------- check


class _Dest:
    """A destination to judge: what ``allows()`` and ``matching_rule()`` take."""

    def __init__(self, op: str, family: int, host: str, port: int | None) -> None:
        self.op = op
        self.family = family
        self.host = host
        self.port = port

    @property
    def is_name(self) -> bool:
        return self.family == 0

    def shown(self) -> str:
        from netguard.errors import format_destination

        if self.is_name and self.port is not None:
            return f"{self.host}:{self.port}"  # a connection to a name, not a lookup
        return format_destination(self.family, self.host, self.port)


def _parse_port(text: str, dest: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise _UsageError(f"destination {dest!r}: the port must be a number 0..65535")
    return int(text)


def _parse_dest(dest: str) -> _Dest:
    from netguard.policy import _parse_address

    if dest.startswith("unix:"):
        path = dest[5:]
        if not path:
            raise _UsageError(f"destination {dest!r}: unix: needs a path (or @name)")
        return _Dest("connect", _AF_UNIX, path, None)
    if dest.startswith("dns:"):
        name = dest[4:]
        if not name or _parse_address(name) is not None:
            raise _UsageError(f"destination {dest!r}: dns: needs a host name")
        return _Dest("getaddrinfo", 0, name, None)
    if dest.startswith("["):
        host, sep, port = dest[1:].partition("]:")
        if not sep:
            raise _UsageError(f"destination {dest!r}: write [IPV6]:PORT")
        address = _parse_address(host)
        if address is None or ":" not in host:
            raise _UsageError(f"destination {dest!r}: {host!r} is not an IPv6 address")
        return _Dest("connect", int(socket.AF_INET6), host, _parse_port(port, dest))
    whole = _parse_address(dest)
    if whole is not None and ":" in dest:
        raise _UsageError(f"destination {dest!r} has no port: write [{dest}]:PORT")
    host, sep, port = dest.rpartition(":")
    if not sep or not host:
        raise _UsageError(
            f"destination {dest!r} has no port: write HOST:PORT, [IPV6]:PORT, unix:PATH "
            "or dns:NAME"
        )
    if ":" in host:
        raise _UsageError(f"destination {dest!r}: write an IPv6 address as [{host}]:{port}")
    number = _parse_port(port, dest)
    if _parse_address(host) is not None:
        return _Dest("connect", int(socket.AF_INET), host, number)
    return _Dest("connect", 0, host, number)


def _describe(rule: Rule) -> str:
    where = f"{rule.source}: {rule.name}" if rule.name else rule.source
    return f"{rule.text} ({where})"


def _verdict(info: CompiledPolicyInfo, dest: _Dest) -> tuple[str, str]:
    """("allowed" | "blocked" | "lookup only", the rule or an explanation)."""
    if dest.family == _AF_UNIX:
        allowed = info.allows("unix:" + dest.host)
    elif dest.is_name and dest.port is None:
        allowed = info.allows(dest.host)
    else:
        allowed = info.allows(dest.host, dest.port)
    rule = info.matching_rule(dest.op, dest.family, dest.host, dest.port)
    if allowed:
        return "allowed", _describe(rule) if rule is not None else ""
    if dest.is_name and dest.port is not None and info.allows(dest.host):
        shown = _describe(rule) if rule is not None else "the DNS policy"
        return (
            "lookup only",
            f"the lookup is allowed by {shown}; the connection is judged on the "
            "addresses the name resolves to",
        )
    return "blocked", ""


def _check(args: argparse.Namespace, out: TextIO) -> int:
    rules = _rules(args)
    dest = _parse_dest(args.dest)
    policies = _policies(rules)
    sizes = [args.size] if args.size else list(SIZES)
    rows: list[tuple[str, str, str]] = []
    for size in sizes:
        verdict, why = _verdict(policies.for_test(size), dest)
        if size == "small" and verdict != "allowed" and rules:
            why = why or "(--allow and --allowlist rules do not extend small)"
        rows.append((size, verdict, why))
    out.write(dest.shown() + "\n")
    width = max(len(v) for _, v, _ in rows)
    for size, verdict, why in rows:
        out.write(f"  {size:<7} {verdict:<{width}}  {why}".rstrip() + "\n")
    if args.size:
        return 0 if rows[0][1] == "allowed" else 1
    return 0


# --------------------------------------------------------------------------- run


def _summary(
    events: Sequence[NativeEvent], mode: str, size: str, command: Sequence[str]
) -> list[str]:
    shown = " ".join(shlex.join(command).split())  # one line, whatever the arguments hold
    if len(shown) > 60:
        shown = shown[:57] + "..."
    lines: list[str] = []
    for event in events:
        if event.verdict == "error":
            lines.append(f"netguard: {event.program} (pid {event.pid}): {event.error}")
    calls = [e for e in events if e.verdict != "error"]
    counts = Counter((e.verdict, e.op, e.dest) for e in calls)
    programs: dict[tuple[str, str, str], set[str]] = {}
    for e in calls:
        programs.setdefault((e.verdict, e.op, e.dest), set()).add(e.program)
    blocked = sum(n for (verdict, _, _), n in counts.items() if verdict == "denied")
    warned = sum(n for (verdict, _, _), n in counts.items() if verdict == "warned")
    allowed = sum(n for (verdict, _, _), n in counts.items() if verdict == "allowed")
    if not calls:
        what = "blocked" if mode == "strict" else "warned about"
        lines.append(f"netguard: no network call was {what} ({mode}, size {size}): {shown}")
        return lines
    parts = []
    if blocked:
        parts.append(f"{blocked} blocked")
    if warned:
        parts.append(f"{warned} let through with a warning")
    if allowed:
        parts.append(f"{allowed} allowed")
    lines.append(f"netguard: network calls ({mode}, size {size}): {', '.join(parts)}: {shown}")
    order = {"denied": 0, "warned": 1, "allowed": 2}
    keys = sorted(counts, key=lambda k: (order.get(k[0], 3), -counts[k], k[1], k[2]))
    label = {"denied": "blocked", "warned": "warned", "allowed": "allowed"}
    rows = [
        (
            label.get(v, v),
            op,
            dest,
            f"{counts[(v, op, dest)]}x",
            ", ".join(sorted(programs[(v, op, dest)])),
        )
        for v, op, dest in keys
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) if i != 3 else row[i].rjust(widths[i]) for i in range(4)]
        lines.append("  " + "  ".join(cells) + "  " + row[4])
    return lines


def _signals(proc: subprocess.Popen[bytes]) -> dict[int, object]:
    """While the command runs: keyboard signals reach it through the terminal (netguard
    waits for it, to print the summary); termination signals are passed on to it."""

    def wait_for_child(signum: int, frame: FrameType | None) -> None:
        pass

    def forward(signum: int, frame: FrameType | None) -> None:
        try:
            proc.send_signal(signum)
        except OSError:
            pass

    previous: dict[int, object] = {}
    for name, handler in (
        ("SIGINT", wait_for_child),
        ("SIGQUIT", wait_for_child),
        ("SIGTERM", forward),
        ("SIGHUP", forward),
    ):
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, handler)
    return previous


def _run(args: argparse.Namespace, err: TextIO) -> int:
    from netguard.native import NativeSession, NativeUnsupported

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise _UsageError("no command given: netguard run [OPTIONS] -- CMD ARGS")
    rules = _rules(args)
    info = _policies(rules).for_test(args.size)
    if rules and args.size == "small":
        err.write(
            "netguard: note: --allow and --allowlist rules do not extend small (small "
            "stays hermetic); use --size medium or larger\n"
        )
    try:
        session = NativeSession()
    except NativeUnsupported as exc:
        raise _UsageError(f"netguard run cannot run here: {exc}") from None
    with session:
        env = dict(os.environ)
        env.update(
            session.child_env(
                info,
                args.test_id,
                args.size,
                args.mode,
                record_allowed=args.record_allowed,
            )
        )
        try:
            proc = subprocess.Popen(command, env=env)
        except FileNotFoundError:
            err.write(f"netguard: command not found: {command[0]}\n")
            return EXIT_NOT_FOUND
        except PermissionError:
            err.write(f"netguard: command not executable: {command[0]}\n")
            return EXIT_NOT_EXECUTABLE
        previous = _signals(proc)
        try:
            status = proc.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
        events = session.drain()
    if args.events:
        with open(args.events, "w", encoding="utf-8") as f:
            for event in events:
                f.write(json.dumps(_event_dict(event)) + "\n")
    for line in _summary(events, args.mode, args.size, command):
        err.write(line + "\n")
    code = 128 - status if status < 0 else status
    if args.mode == "strict" and any(e.blocked for e in events):
        err.write(
            f"netguard: exit status {EXIT_BLOCKED}: netguard blocked network calls "
            f"(the command's own exit status was {code})\n"
        )
        return EXIT_BLOCKED
    return code


def _event_dict(event: NativeEvent) -> dict[str, object]:
    return {k: v for k, v in dataclasses.asdict(event).items() if v is not None}


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """The ``netguard`` command; returns the exit status (see :data:`EXIT_STATUSES`)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return _check(args, sys.stdout)
        return _run(args, sys.stderr)
    except _UsageError as exc:
        sub = "netguard " + args.command
        sys.stderr.write(f"{sub}: error: {exc}\n")
        return EXIT_USAGE
