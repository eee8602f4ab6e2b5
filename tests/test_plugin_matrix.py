"""The plugin's settings, sizes and entry points, through real pytest runs.

Configuration from every source and the precedence between them; bad values from every
source, each a usage error naming where it came from; each mode with each size; each
entry point of the core blocked in a small test. Only loopback and documentation
addresses appear, and nothing but UDP connects (which send no packet) reach outside, in
runs made with ``run_in_netns`` (a private network namespace of their own).
"""

from __future__ import annotations

import json

import pytest

from pluginrun import UDP, run, run_in_netns

pytestmark = pytest.mark.usefixtures("clean_netguard_env")


# --------------------------------------------------------------------------- each source


SOURCES = ["cli", "env", "ini"]


def configure(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    option: str,
    value: str,
) -> list[str]:
    """Set one option from one source; the extra command-line arguments to pass."""
    flag, env, ini = (
        f"--netguard-{option.replace('_', '-')}",
        f"NETGUARD_{option.upper()}",
        (f"netguard_{option}"),
    )
    if source == "cli":
        return [f"{flag}={value}"]
    if source == "env":
        monkeypatch.setenv(env, value)
        return []
    pytester.makeini(f"[pytest]\n{ini} = {value}\n")
    return []


@pytest.mark.parametrize("source", SOURCES)
def test_mode_from_each_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    pytester.makepyfile(
        udp=UDP, test_m="from udp import udp_connect\ndef test_small(): udp_connect('127.0.0.1')\n"
    )
    args = configure(pytester, monkeypatch, source, "mode", "strict")
    result = run(pytester, *args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["netguard: mode strict, default size small*"])


@pytest.mark.parametrize("source", SOURCES)
def test_default_size_from_each_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    pytester.makepyfile(
        udp=UDP,
        test_m="from udp import udp_connect\ndef test_unmarked(): udp_connect('127.0.0.1')\n",
    )
    args = configure(pytester, monkeypatch, source, "default_size", "medium")
    result = run(pytester, "--netguard-mode=strict", *args) if source != "ini" else None
    if result is None:
        pytester.makeini("[pytest]\nnetguard_default_size = medium\nnetguard_mode = strict\n")
        result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["netguard: mode strict, default size medium*"])


@pytest.mark.parametrize("source", SOURCES)
def test_allow_from_each_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    pytester.makepyfile(
        udp=UDP,
        test_a="import pytest\nfrom udp import udp_connect\n"
        "@pytest.mark.medium\ndef test_m(): udp_connect('192.0.2.1', 53)\n",
    )
    if source == "ini":
        pytester.makeini(
            "[pytest]\nnetguard_mode = strict\nnetguard_allow =\n    192.0.2.0/24:53\n"
        )
        args: list[str] = []
    else:
        args = [
            "--netguard-mode=strict",
            *configure(pytester, monkeypatch, source, "allow", "192.0.2.0/24:53"),
        ]
    result = run_in_netns(pytester, *args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*1 allow rule(s)*"])


@pytest.mark.parametrize("source", SOURCES)
def test_allowlist_report_verbose_from_each_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    pytester.makefile(
        ".toml",
        allow='version = 1\n[[allowlist]]\nname = "dns"\ncidr = "192.0.2.0/24"\nport = 53\n',
    )
    pytester.makepyfile(
        udp=UDP,
        test_a="import pytest\nfrom udp import udp_connect\n"
        "@pytest.mark.medium\ndef test_m(): udp_connect('192.0.2.1', 53)\n",
    )
    values = {"allowlist": "allow.toml", "report": "out.json", "verbose": "true"}
    args = ["--netguard-mode=strict"]
    if source == "cli":
        args += [
            "--netguard-allowlist=allow.toml",
            "--netguard-report=out.json",
            "--netguard-verbose",
        ]
    elif source == "env":
        for option, value in values.items():
            monkeypatch.setenv(f"NETGUARD_{option.upper()}", value)
    else:
        pytester.makeini(
            "[pytest]\n" + "".join(f"netguard_{k} = {v}\n" for k, v in values.items())
        )
    result = run_in_netns(pytester, *args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["every network event:", "*192.0.2.1:53*ALLOWED*192.0.2.0/24:53 (dns)"]
    )
    document = json.loads((pytester.path / "out.json").read_text())
    assert [e["rule_name"] for e in document["events"]] == ["dns"]


def test_precedence_cli_over_env_over_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nnetguard_mode = off\nnetguard_default_size = large\n")
    pytester.makepyfile(test_p="def test_ok(): pass\n")
    monkeypatch.setenv("NETGUARD_MODE", "warn")
    monkeypatch.setenv("NETGUARD_DEFAULT_SIZE", "medium")
    result = run(pytester, "--netguard-mode=strict")
    result.stdout.fnmatch_lines(["netguard: mode strict, default size medium*"])
    monkeypatch.delenv("NETGUARD_DEFAULT_SIZE")
    result = run(pytester)
    result.stdout.fnmatch_lines(["netguard: mode warn, default size large*"])


# --------------------------------------------------------------------------- bad values

BAD = [
    # (source, option, value, what the message must contain)
    ("cli", "mode", "strictt", "strictt"),
    ("env", "mode", "strictt", "NETGUARD_MODE='strictt' from the environment"),
    ("ini", "mode", "strictt", "netguard_mode"),
    ("cli", "mode", "", "--netguard-mode"),
    ("env", "mode", "STRICT ON", "NETGUARD_MODE"),
    ("cli", "default_size", "huge", "--netguard-default-size"),
    ("env", "default_size", "tiny", "NETGUARD_DEFAULT_SIZE='tiny'"),
    ("ini", "default_size", "enormous", "netguard_default_size"),
    ("env", "verbose", "maybe", "NETGUARD_VERBOSE"),
    ("ini", "verbose", "perhaps", "netguard_verbose"),
    ("cli", "allow", "10.0.0.1/8", "host bits set; did you mean 10.0.0.0/8?"),
    ("env", "allow", "10.0.0.1/8", "NETGUARD_ALLOW"),
    ("ini", "allow", "10.0.0.1/8", "netguard_allow"),
    ("cli", "allow", "1.2.3.4:70000", "70000"),
    ("cli", "allow", "1.2.3.4:90-80", "90-80"),
    ("cli", "allow", "1.2.3.4:http", "http"),
    ("env", "allow", "1.2.3.4:0x50", "0x50"),
    ("env", "allow", "300.1.2.3", "300.1.2.3"),
    ("env", "allow", "10.0.0.0/33", "10.0.0.0/33"),
    ("ini", "allow", "[::1", "[::1"),
    ("cli", "allow", "2001:db8::/129", "2001:db8::/129"),
    ("cli", "allow", "unix:", "unix:"),
    ("cli", "allow", "bad-host-name!", "invalid character '!' in host name"),
    ("cli", "allow", "127.1", "127.1"),
    ("cli", "allow", "[1.2.3.4]:80", "[1.2.3.4]:80"),
    ("cli", "allowlist", "missing.toml", "missing.toml"),
    ("env", "allowlist", "missing.toml", "NETGUARD_ALLOWLIST"),
    ("ini", "allowlist", "missing.toml", "netguard_allowlist"),
]


@pytest.mark.parametrize(("source", "option", "value", "needle"), BAD)
def test_bad_value_is_a_sourced_usage_error(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    option: str,
    value: str,
    needle: str,
) -> None:
    pytester.makepyfile(test_x="def test_ok(): pass\n")
    args = configure(pytester, monkeypatch, source, option, value)
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    err = result.stderr.str()
    assert "netguard: " in err
    assert needle in err


ALLOWLIST_BAD = [
    ("version = 2\nallowlist = []\n", "allow.toml:1"),
    ("allowlist = []\n", "version"),
    ('version = 1\n[[allowlist]]\ncidr = "10.0.0.0/8"\n', "allow.toml:2"),
    ('version = 1\n[[allowlist]]\nname = "a"\n', "allow.toml:2"),
    (
        'version = 1\n[[allowlist]]\nname = "a"\naddr = "10.0.0.1"\ncidr = "10.0.0.0/8"\n',
        "allow.toml:2",
    ),
    ('version = 1\n[[allowlist]]\nname = "a"\ncidr = "10.0.0.1/8"\n', "host bits set"),
    ('version = 1\n[[allowlist]]\nname = "a"\naddr = "10.0.0.1"\nport = 99999\n', "99999"),
    ('version = 1\n[[allowlist]]\nname = "a"\naddr = "10.0.0.1"\ncolour = "red"\n', "colour"),
    ("version = 1\n[[allowlist\n", "allow.toml"),
    ('version = 1\n[[allowlist]]\nname = "a"\nhost = "10.0.0.1"\n', "allow.toml:2"),
]


@pytest.mark.parametrize(("content", "needle"), ALLOWLIST_BAD)
def test_bad_allowlist_file_names_file_and_line(
    pytester: pytest.Pytester, content: str, needle: str
) -> None:
    pytester.makefile(".toml", allow=content)
    pytester.makepyfile(test_x="def test_ok(): pass\n")
    result = run(pytester, "--netguard-mode=strict", "--netguard-allowlist=allow.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert needle in result.stderr.str()


# --------------------------------------------------------------------------- modes x sizes

OUTCOME = {
    # (mode, size): the outcome of a test that connects to loopback and to 192.0.2.1
    ("strict", "small"): "failed",
    ("strict", "medium"): "failed",  # loopback yes, 192.0.2.1 no
    ("strict", "large"): "passed",
    ("strict", "xlarge"): "passed",
    ("warn", "small"): "passed",
    ("warn", "medium"): "passed",
    ("warn", "large"): "passed",
    ("warn", "xlarge"): "passed",
    ("off", "small"): "passed",
    ("off", "medium"): "passed",
    ("off", "large"): "passed",
    ("off", "xlarge"): "passed",
}
WARNINGS = {("warn", "small"): 2, ("warn", "medium"): 1}


@pytest.mark.parametrize(("mode", "size"), sorted(OUTCOME))
def test_each_mode_with_each_size(pytester: pytest.Pytester, mode: str, size: str) -> None:
    pytester.makepyfile(
        udp=UDP,
        test_ms=f"""
        import pytest
        from udp import udp_connect

        @pytest.mark.{size}
        def test_it():
            udp_connect("127.0.0.1")
            udp_connect("192.0.2.1")
        """,
    )
    # 192.0.2.1 goes through unless strict mode blocks it
    result = run_in_netns(pytester, f"--netguard-mode={mode}", "-W", "default")
    expected = OUTCOME[(mode, size)]
    result.assert_outcomes(**{expected: 1}, warnings=WARNINGS.get((mode, size), 0))


# --------------------------------------------------------------------------- entry points

ENTRY_POINTS = {
    "connect": "s = socket.socket(); s.connect(('127.0.0.1', 9))",
    "connect_ex": "s = socket.socket(); s.connect_ex(('127.0.0.1', 9))",
    "sendto": "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.sendto(b'x', ('127.0.0.1', 9))",
    "sendmsg": "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.sendmsg([b'x'], [], 0, ('127.0.0.1', 9))",
    "getaddrinfo": "socket.getaddrinfo('api.example.com', 443)",
    "gethostbyname": "socket.gethostbyname('api.example.com')",
    "gethostbyname_ex": "socket.gethostbyname_ex('api.example.com')",
    "gethostbyaddr": "socket.gethostbyaddr('192.0.2.1')",
    "getnameinfo": "socket.getnameinfo(('192.0.2.1', 80), 0)",
    "unix": "s = socket.socket(socket.AF_UNIX); s.connect('/nonexistent/netguard.sock')",
    "raw _socket": "import _socket; s = _socket.socket(); s.connect(('127.0.0.1', 9))",
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_point_is_blocked_in_a_small_test(
    pytester: pytest.Pytester, entry: str
) -> None:
    pytester.makepyfile(
        test_e=f"""
        import socket

        def test_it():
            {ENTRY_POINTS[entry]}
        """,
    )
    result = run(pytester, "--netguard-mode=strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*netguard blocked *"])
