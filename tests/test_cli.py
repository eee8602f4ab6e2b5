"""The ``netguard`` command: ``netguard run`` and ``netguard check``, run as a user runs
them (``python -m netguard`` and the console script, in subprocesses).

Commands run by ``netguard run`` connect only to loopback; an outside destination
appears only inside a private network namespace (``netns.run_isolated``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netguard.cli import EXIT_BLOCKED

NETGUARD = [sys.executable, "-m", "netguard"]

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="netguard run needs native mode (Linux)"
)

CONNECT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.connect(("127.0.0.1", int(sys.argv[1])))
        print("connected")
    except PermissionError:
        print("denied")
    finally:
        s.close()
""")


def netguard(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETGUARD_NATIVE_")}
    return subprocess.run(
        [*NETGUARD, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


# --------------------------------------------------------------------------- help


def test_help_documents_the_commands_and_exit_statuses():
    result = netguard("--help")
    assert result.returncode == 0
    assert "run " in result.stdout and "check " in result.stdout
    assert f"{EXIT_BLOCKED} in strict mode when netguard blocked a call" in result.stdout
    for command in ("run", "check"):
        sub = netguard(command, "--help")
        assert sub.returncode == 0
        assert "--allow RULE" in sub.stdout and "--allowlist FILE" in sub.stdout
        assert "exit status:" in sub.stdout


def test_console_script():
    script = Path(sys.executable).with_name("netguard")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (not installed by pip)")
    result = subprocess.run(
        [str(script), "check", "--size", "medium", "127.0.0.1:80"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- check


def test_check_loopback():
    result = netguard("check", "127.0.0.1:5432")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "127.0.0.1:5432",
        "  small   blocked",
        "  medium  allowed  127.0.0.0/8 (size medium: IPv4 loopback)",
        "  large   allowed  0.0.0.0/0 (size large: any IPv4 address)",
        "  xlarge  allowed  0.0.0.0/0 (size xlarge: any IPv4 address)",
    ]


def test_check_names_the_rule_and_its_source(tmp_path):
    allowlist = tmp_path / "allow.toml"
    allowlist.write_text(
        'version = 1\n\n[[allowlist]]\nname = "warehouse"\nfamily = "inet"\n'
        'cidr = "10.20.0.0/16"\nport = 5439\n'
    )
    result = netguard(
        "check", "--allow", "10.0.0.0/8:443", "--allowlist", str(allowlist), "10.20.1.2:5439"
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "10.20.1.2:5439"
    assert lines[1] == "  small   blocked  (--allow and --allowlist rules do not extend small)"
    assert lines[2].startswith("  medium  allowed  10.20.0.0/16:5439 (")
    assert lines[2].endswith("allow.toml:3: warehouse)")
    result = netguard("check", "--allow", "10.0.0.0/8:443", "10.20.1.2:443")
    assert "  medium  allowed  10.0.0.0/8:443 (--allow[1])" in result.stdout.splitlines()


@pytest.mark.parametrize(
    ("dest", "shown", "medium"),
    [
        ("[::1]:8080", "[::1]:8080", "allowed  ::1 (size medium: IPv6 loopback)"),
        (
            "unix:/run/db.sock",
            "unix:/run/db.sock",
            "allowed  unix:* (size medium: AF_UNIX sockets)",
        ),
        ("dns:localhost", "dns:localhost", "allowed  localhost (size medium: the name localhost)"),
        ("dns:db.example.com", "dns:db.example.com", "blocked"),
        (
            "api.localhost:80",
            "api.localhost:80",
            "allowed  *.localhost (size medium: names under .localhost)",
        ),
    ],
)
def test_check_destination_forms(dest, shown, medium):
    result = netguard("check", dest)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == shown
    assert lines[2].split(None, 1)[1] == medium


def test_check_a_name_whose_lookup_alone_is_allowed():
    result = netguard("check", "--allow", "db.example.com:5432", "db.example.com:80")
    medium = result.stdout.splitlines()[2]
    assert medium.startswith("  medium  lookup only  the lookup is allowed by db.example.com:5432")
    assert medium.endswith("the connection is judged on the addresses the name resolves to")


def test_check_with_a_size_answers_in_its_exit_status():
    assert netguard("check", "--size", "medium", "127.0.0.1:80").returncode == 0
    blocked = netguard("check", "--size", "small", "127.0.0.1:80")
    assert blocked.returncode == 1
    assert blocked.stdout.splitlines() == ["127.0.0.1:80", "  small   blocked"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--allow", "10.0.0.0/33", "1.2.3.4:80"], "--allow[1]: invalid rule '10.0.0.0/33'"),
        (["--allow", "a.example:80,[::1]:x", "1.2.3.4:80"], "--allow[2]: invalid rule '[::1]:x'"),
        (
            ["--allowlist", "/nonexistent/allow.toml", "1.2.3.4:80"],
            "cannot read the allowlist file",
        ),
        (["10.0.0.1"], "destination '10.0.0.1' has no port"),
        (["2001:db8::1"], "write [2001:db8::1]:PORT"),
        (["10.0.0.1:99999"], "the port must be a number 0..65535"),
        (["dns:10.0.0.1"], "dns: needs a host name"),
    ],
)
def test_check_usage_errors(args, message):
    result = netguard("check", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("netguard check: error: ")


def test_unknown_size_is_an_argparse_error():
    result = netguard("check", "--size", "tiny", "127.0.0.1:80")
    assert result.returncode == 2
    assert "invalid choice: 'tiny'" in result.stderr


# --------------------------------------------------------------------------- run


@linux_only
def test_run_blocks_in_small_strict(loopback_tcp):
    _, port = loopback_tcp
    result = netguard("run", "--", sys.executable, "-c", CONNECT, str(port))
    assert result.stdout == "denied\n"
    assert result.returncode == EXIT_BLOCKED
    lines = result.stderr.splitlines()
    assert lines[0].startswith("netguard: network calls (strict, size small): 1 blocked: ")
    assert lines[1].split() == [
        "blocked",
        "connect",
        f"127.0.0.1:{port}",
        "1x",
        Path(sys.executable).resolve().name,
    ]
    assert lines[2] == (
        f"netguard: exit status {EXIT_BLOCKED}: netguard blocked network calls "
        "(the command's own exit status was 0)"
    )


@linux_only
def test_run_allows_loopback_in_medium(loopback_tcp):
    _, port = loopback_tcp
    result = netguard("run", "--size", "medium", "--", sys.executable, "-c", CONNECT, str(port))
    assert (result.returncode, result.stdout) == (0, "connected\n")
    assert result.stderr.startswith(
        "netguard: no network call was blocked (strict, size medium): "
    )


@linux_only
def test_run_warn_mode_keeps_the_commands_status(loopback_tcp):
    _, port = loopback_tcp
    code = CONNECT + "\nsys.exit(4)\n"
    result = netguard("run", "--mode", "warn", "--", sys.executable, "-c", code, str(port))
    assert (result.returncode, result.stdout) == (4, "connected\n")
    lines = result.stderr.splitlines()
    assert lines[0].startswith(
        "netguard: network calls (warn, size small): 1 let through with a warning: "
    )
    assert lines[1].split()[:3] == ["warned", "connect", f"127.0.0.1:{port}"]


@linux_only
def test_run_counts_repeated_calls_and_children(loopback_tcp):
    _, port = loopback_tcp
    code = textwrap.dedent(f"""
        import subprocess, sys
        for _ in range(3):
            subprocess.run([sys.executable, "-c", {CONNECT!r}, "{port}"], env={{}})
    """)
    result = netguard("run", "--", sys.executable, "-c", code)
    assert result.stdout == "denied\n" * 3
    assert result.returncode == EXIT_BLOCKED
    assert result.stderr.splitlines()[1].split()[:4] == [
        "blocked",
        "connect",
        f"127.0.0.1:{port}",
        "3x",
    ]


@linux_only
@pytest.mark.parametrize(
    ("command", "status", "stderr"),
    [
        (["-c", "import sys; sys.exit(5)"], 5, "no network call was blocked"),
        (
            ["-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"],
            128 + signal.SIGTERM,
            "",
        ),
    ],
)
def test_run_passes_on_the_commands_status(command, status, stderr):
    result = netguard("run", "--", sys.executable, *command)
    assert result.returncode == status
    assert stderr in result.stderr


@linux_only
def test_run_command_errors(tmp_path):
    missing = netguard("run", "--", str(tmp_path / "no-such-program"))
    assert missing.returncode == 127
    assert "netguard: command not found: " in missing.stderr
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    denied = netguard("run", "--", str(script))
    assert denied.returncode == 126
    assert "netguard: command not executable: " in denied.stderr
    empty = netguard("run")
    assert empty.returncode == 2
    assert "no command given" in empty.stderr
    bad = netguard("run", "--allow", "300.1.2.3:80", "--", "true")
    assert bad.returncode == 2 and "--allow[1]: invalid rule '300.1.2.3:80'" in bad.stderr


@linux_only
def test_run_writes_events_and_records_allowed_calls(loopback_tcp, tmp_path):
    _, port = loopback_tcp
    events = tmp_path / "events.jsonl"
    result = netguard(
        "run",
        "--size",
        "medium",
        "--record-allowed",
        "--events",
        str(events),
        "--test-id",
        "build::step",
        "--",
        sys.executable,
        "-c",
        CONNECT,
        str(port),
    )
    assert result.returncode == 0
    assert result.stderr.splitlines()[0].startswith(
        "netguard: network calls (strict, size medium): 1 allowed: "
    )
    (event,) = [json.loads(line) for line in events.read_text().splitlines()]
    assert (event["op"], event["verdict"], event["dest"]) == (
        "connect",
        "allowed",
        f"127.0.0.1:{port}",
    )
    assert (event["test"], event["size"], event["mode"]) == ("build::step", "medium", "strict")


@linux_only
def test_run_notes_that_rules_do_not_extend_small():
    result = netguard("run", "--allow", "127.0.0.1", "--", sys.executable, "-c", "pass")
    assert result.returncode == 0
    assert "--allow and --allowlist rules do not extend small" in result.stderr


@linux_only
@pytest.mark.parametrize(("port", "status"), [(443, 0), (80, EXIT_BLOCKED)])
def test_run_with_a_rule_for_an_outside_destination(port, status):
    """In a private namespace: the allowed UDP connect meets ENETUNREACH, the other
    EACCES."""
    from netns import run_isolated

    udp = textwrap.dedent(f"""
        import errno, socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.connect(("192.0.2.1", {port}))
        except OSError as exc:
            print(errno.errorcode[exc.errno])
    """)
    code = textwrap.dedent(f"""
        import subprocess, sys
        r = subprocess.run([sys.executable, "-m", "netguard", "run", "--size", "medium",
                            "--allow", "192.0.2.0/24:443", "--", sys.executable, "-c", {udp!r}],
                           capture_output=True, text=True)
        sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); sys.exit(r.returncode)
    """)
    result = run_isolated(code)
    assert result.returncode == status, result.stderr
    assert result.stdout.strip() == ("ENETUNREACH" if port == 443 else "EACCES")
