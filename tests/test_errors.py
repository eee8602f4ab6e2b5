"""netguard.errors: the exception, the warning, their messages, slugs and pickling."""

from __future__ import annotations

import copy
import errno
import os
import pickle
import re
import socket
import warnings

import pytest

import netguard
from netguard.errors import (
    SLUG_DNS,
    SLUG_SOCKET,
    NetworkViolationError,
    NetworkViolationWarning,
    Violation,
    format_destination,
    suggest_rule,
)

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
AF_UNIX = getattr(socket, "AF_UNIX", 1)


@pytest.mark.parametrize(
    ("family", "host", "port", "expected"),
    [
        (socket.AF_INET, "1.2.3.4", 443, "1.2.3.4:443"),
        (socket.AF_INET, "192.0.2.10", 0, "192.0.2.10:0"),
        (socket.AF_INET, "192.0.2.10", None, "192.0.2.10"),
        (socket.AF_INET6, "2001:db8::1", 443, "[2001:db8::1]:443"),
        (socket.AF_INET6, "::1", 8080, "[::1]:8080"),
        (socket.AF_INET6, "2001:db8::1", None, "[2001:db8::1]"),
        (AF_UNIX, "/run/db.sock", None, "unix:/run/db.sock"),
        (AF_UNIX, "@name", None, "unix:@name"),
        (AF_UNIX, "\x00name", None, "unix:@name"),
        (AF_UNIX, b"/run/db.sock", None, "unix:/run/db.sock"),
        (0, "example.com", None, "dns:example.com"),
        (0, "example.com", 443, "dns:example.com:443"),
        (0, "192.0.2.1", None, "dns:192.0.2.1"),
        (0, "2001:db8::1", 80, "dns:[2001:db8::1]:80"),
    ],
)
def test_format_destination(family: int, host: str, port: int | None, expected: str) -> None:
    assert format_destination(family, host, port) == expected


@pytest.mark.parametrize(
    ("op", "family", "host", "port", "rule"),
    [
        ("connect", socket.AF_INET, "192.0.2.10", 443, "192.0.2.10:443"),
        ("sendto", socket.AF_INET6, "2001:db8::1", 53, "[2001:db8::1]:53"),
        ("connect", socket.AF_INET6, "fe80::1%eth0", 22, "[fe80::1]:22"),
        ("connect", AF_UNIX, "/run/db.sock", None, "unix:/run/db.sock"),
        ("connect", AF_UNIX, "@name", None, "unix:@name"),
        ("getaddrinfo", 0, "example.com", None, "example.com"),
        ("getaddrinfo", 0, "Example.COM.", 443, "example.com:443"),
        ("connect", 0, "api.example.com", 443, "api.example.com:443"),
        ("gethostbyname", 0, "example.com", None, "example.com"),
        ("gethostbyaddr", 0, "192.0.2.1", None, None),
        ("gethostbyaddr", 0, "host.example.com", None, "host.example.com"),
        ("getnameinfo", 0, "2001:db8::1", None, None),
    ],
)
def test_suggested_rule(op: str, family: int, host: str, port: int | None, rule: str) -> None:
    assert suggest_rule(op, family, host, port) == rule


def test_suggested_rules_parse_and_allow() -> None:
    # The rule a message suggests is valid and allows what was blocked.
    from netguard.rules import parse_rule

    for text in ("192.0.2.10:443", "[2001:db8::1]:53", "unix:/run/db.sock", "example.com:443"):
        assert parse_rule(text, source="test").text == text
    policy = netguard.Policy(["192.0.2.10:443", "[2001:db8::1]:53", "unix:/run/db.sock"])
    assert policy.allows("192.0.2.10", 443)
    assert policy.allows("2001:db8::1", 53)
    assert policy.allows("unix:/run/db.sock")


def test_error_is_an_oserror_with_eacces() -> None:
    err = NetworkViolationError("connect", socket.AF_INET, "192.0.2.10", 443)
    assert isinstance(err, OSError)
    assert not isinstance(err, PermissionError)  # exactly our class, not remapped by errno
    assert err.errno == errno.EACCES
    assert type(err).__module__ == "netguard"
    assert netguard.NetworkViolationError is NetworkViolationError


def test_error_attributes_and_message() -> None:
    err = NetworkViolationError("connect", socket.AF_INET, "192.0.2.10", 443)
    assert (err.op, err.family, err.host, err.port) == (
        "connect",
        socket.AF_INET,
        "192.0.2.10",
        443,
    )
    assert err.destination == "192.0.2.10:443"
    assert (err.test, err.size, err.phase) == (None, None, None)
    assert err.slug == SLUG_SOCKET == "NG001"
    assert err.rule == "192.0.2.10:443"
    assert err.swallowed == 0
    text = str(err)
    lines = text.splitlines()
    assert lines[0] == "netguard blocked connect to 192.0.2.10:443"
    assert "not allowed" in text or "no rule" in text
    assert "mock" in text and "fake client" in text
    assert "add a rule that allows it: 192.0.2.10:443" in text
    assert lines[-1] == "  see:  NG001 in docs/messages.md#ng001"
    assert err.hint in text.replace("        - ", "").replace("  fix:  - ", "")


def test_dns_error_message() -> None:
    err = NetworkViolationError("getaddrinfo", 0, "example.com", None)
    assert err.slug == SLUG_DNS == "NG002"
    assert err.destination == "dns:example.com"
    assert str(err).startswith("netguard blocked getaddrinfo of dns:example.com\n")
    assert "add a rule that allows it: example.com" in str(err)
    assert "docs/messages.md#ng002" in str(err)


def test_hostname_in_connect_is_a_dns_violation() -> None:
    err = NetworkViolationError("connect", 0, "api.example.com", 443)
    assert err.slug == "NG002"
    assert err.destination == "dns:api.example.com:443"
    assert err.rule == "api.example.com:443"


def test_unix_error_message() -> None:
    err = NetworkViolationError("connect", AF_UNIX, "/run/db.sock", None)
    assert err.slug == "NG001"
    assert err.destination == "unix:/run/db.sock"
    assert "add a rule that allows it: unix:/run/db.sock" in str(err)


def test_reverse_lookup_suggests_no_rule() -> None:
    err = NetworkViolationError("gethostbyaddr", 0, "192.0.2.1", None)
    assert err.rule is None
    assert "reverse lookup" in str(err)
    assert "allow_all=True" in str(err)


def test_message_with_test_context() -> None:
    err = NetworkViolationError(
        "connect",
        socket.AF_INET,
        "127.0.0.1",
        8080,
        test="t.py::test_a",
        size="small",
        phase="call",
    )
    text = str(err)
    assert "  test: t.py::test_a (size small, phase call)" in text
    assert "small tests may not use the network" in text
    assert "@pytest.mark.netguard(allow=['127.0.0.1:8080'])" in text
    assert "@pytest.mark.medium" in text  # loopback: medium would allow it
    assert "--netguard-allow" not in text  # suite rules do not extend small tests


def test_message_for_medium_test_suggests_large_and_suite_rule() -> None:
    err = NetworkViolationError(
        "connect", socket.AF_INET, "192.0.2.10", 443, test="t", size="medium"
    )
    text = str(err)
    assert "medium tests may use loopback" in text
    assert "@pytest.mark.large" in text
    assert "--netguard-allow=192.0.2.10:443" in text


def test_custom_hint() -> None:
    err = NetworkViolationError("connect", socket.AF_INET, "192.0.2.10", 443, hint="do X\ndo Y")
    assert err.hint == "do X\ndo Y"
    assert "  fix:  - do X\n        - do Y\n" in str(err)


def test_swallowed_note() -> None:
    err = NetworkViolationError("connect", socket.AF_INET, "192.0.2.10", 443, swallowed=3)
    assert err.swallowed == 3
    assert "swallowed this error (3 violations, this is the first)" in str(err)


def _attrs(obj: object) -> dict[str, object]:
    names: tuple[str, ...] = ("op", "family", "host", "port", "destination", "test", "size")
    names += ("phase", "slug", "rule", "hint", "swallowed", "escalated", "message")
    return {name: getattr(obj, name) for name in names}


@pytest.mark.parametrize("cls", [NetworkViolationError, NetworkViolationWarning])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(cls: type[NetworkViolationError], protocol: int) -> None:
    original = cls(
        "sendto",
        socket.AF_INET6,
        "2001:db8::1",
        53,
        test="tests/test_x.py::test_y[1]",
        size="medium",
        phase="setup",
        swallowed=2,
        escalated=True,
    )
    original.extra = "kept"  # type: ignore[attr-defined]
    copy_ = pickle.loads(pickle.dumps(original, protocol))
    assert type(copy_) is cls
    assert _attrs(copy_) == _attrs(original)
    assert str(copy_) == str(original)
    assert copy_.args == original.args
    assert copy_.extra == "kept"  # type: ignore[attr-defined]
    if isinstance(original, OSError):
        assert copy_.errno == errno.EACCES


def test_collection_hints_name_what_applies_at_import_time() -> None:
    # Markers do not apply while a module is imported: the hints say what does.
    err = NetworkViolationError(
        "connect", socket.AF_INET, "127.0.0.1", 80, test="<collection>", size="small",
        phase="collection",
    )  # fmt: skip
    assert "move the call into a fixture or into the test that needs it" in err.hint
    assert "--netguard-default-size=medium" in err.hint  # loopback: medium suffices
    assert "@pytest.mark" not in err.hint
    err = NetworkViolationError(
        "getaddrinfo", 0, "api.example.com", 443, test="<collection>", size="medium",
        phase="collection",
    )  # fmt: skip
    assert "--netguard-allow=api.example.com:443" in err.hint
    assert "--netguard-default-size=large" in err.hint
    assert "@pytest.mark" not in err.hint
    err = NetworkViolationError(
        "connect", socket.AF_INET, "192.0.2.1", 80, test="t", size="small", phase="call"
    )
    assert "@pytest.mark.large" in err.hint and "import time" not in err.hint


def test_pickle_keeps_custom_hint_and_notes() -> None:
    err = NetworkViolationError("connect", AF_UNIX, "@x", None, hint="custom")
    err.__notes__ = ["a note"]  # what add_note() does (3.11+)
    again = pickle.loads(pickle.dumps(err))
    assert again.hint == "custom"
    assert again.__notes__ == ["a note"]
    assert copy.copy(err).destination == "unix:@x"


def test_warning_is_a_pytest_warning() -> None:
    w = NetworkViolationWarning(
        "connect", socket.AF_INET, "192.0.2.10", 443, test="t", size="small"
    )
    assert isinstance(w, pytest.PytestWarning)
    assert type(w).__module__ == "netguard"
    err = NetworkViolationError(
        "connect", socket.AF_INET, "192.0.2.10", 443, test="t", size="small"
    )
    # the same text, but the warning says the call went through
    first, _, rest = str(w).partition("\n")
    assert first == "netguard let through connect to 192.0.2.10:443 (warn mode; strict blocks it)"
    assert rest == str(err).partition("\n")[2]
    assert w.destination == "192.0.2.10:443"
    with pytest.warns(NetworkViolationWarning, match=r"let through connect to 192\.0\.2\.10:443"):
        warnings.warn(w, stacklevel=1)


def test_violation_record_builds_error_and_warning() -> None:
    v = Violation(
        "connect",
        socket.AF_INET,
        "192.0.2.10",
        443,
        "192.0.2.10:443",
        "T",
        1.5,
        "t",
        "small",
        "call",
    )
    assert v.slug == "NG001"
    err = v.error(swallowed=4)
    assert (err.test, err.size, err.phase, err.swallowed) == ("t", "small", "call", 4)
    assert err.destination == v.destination
    warning = v.warning()
    assert (warning.test, warning.size, warning.phase) == ("t", "small", "call")
    assert pickle.loads(pickle.dumps(v)) == v


@pytest.mark.source_tree
def test_every_slug_has_a_docs_entry() -> None:
    with open(os.path.join(DOCS, "messages.md"), encoding="utf-8") as f:
        page = f.read()
    headings = re.findall(r"^## (NG\d{3})\b", page, re.MULTILINE)
    assert headings == sorted(headings)
    for slug in (SLUG_SOCKET, SLUG_DNS):
        assert slug in headings, f"docs/messages.md has no '## {slug}' entry"
