"""The exception, the warning and the messages netguard shows people.

A denied network operation becomes a :class:`Violation` record (built by the deny callback in
:mod:`netguard._guard`); strict mode turns it into a :class:`NetworkViolationError`, warn mode
into a :class:`NetworkViolationWarning`. Both carry the same data attributes and the same
multi-line message: what was blocked, why, how to fix it, and a stable message slug whose
entry in ``docs/messages.md`` explains more.

Slugs:

=========  ===================================================================
``NG001``  a socket operation (connect, connect_ex, sendto, sendmsg) was blocked
``NG002``  a DNS lookup was blocked (getaddrinfo, gethostbyname(_ex),
           gethostbyaddr, getnameinfo, or a host name given to connect/sendto)
=========  ===================================================================

Native mode (``--netguard-native``) reports the calls of C code in the test process and
of child processes with the same slugs; their ``origin`` says where the call came from:
``"python"`` (netguard's Python-level hooks), ``"native"`` (C code in the test process,
judged through its GOT) or ``"child"`` (a child process, judged by the preload library),
with the child's ``pid`` and ``program``.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

import pytest

from netguard._record import Record, init

__all__ = [
    "DNS_OPS",
    "DOCS_PAGE",
    "ORIGINS",
    "SLUG_DNS",
    "SLUG_SOCKET",
    "NetworkViolationError",
    "NetworkViolationWarning",
    "Violation",
    "format_destination",
    "slug_for",
    "suggest_rule",
]

SLUG_SOCKET = "NG001"
SLUG_DNS = "NG002"
DOCS_PAGE = "docs/messages.md"

#: Operations that are name lookups (the hooked DNS functions, and native mode's).
DNS_OPS = frozenset(
    {
        "getaddrinfo",
        "gethostbyname",
        "gethostbyname_ex",
        "gethostbyaddr",
        "getnameinfo",
        "gethostbyname2",
        "gethostbyname_r",
        "gethostbyname2_r",
    }
)

#: Where a call was judged: netguard's Python-level hooks, C code in the test process
#: (native mode), a child process (native mode's preload library).
ORIGINS = ("python", "native", "child")

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_AF_UNIX: int = getattr(socket, "AF_UNIX", 1)


# --------------------------------------------------------------------------- formatting


def format_destination(family: int, host: str | bytes | None, port: int | None) -> str:
    """Format a destination the way every netguard message and report shows it.

    >>> format_destination(socket.AF_INET, "192.0.2.10", 443)
    '192.0.2.10:443'
    >>> format_destination(socket.AF_INET6, "2001:db8::1", 443)
    '[2001:db8::1]:443'
    >>> format_destination(socket.AF_UNIX, "/run/db.sock", None)
    'unix:/run/db.sock'
    >>> format_destination(0, "example.com", None)
    'dns:example.com'
    >>> format_destination(0, "example.com", 443)
    'dns:example.com:443'

    ``family`` 0 is a name (DNS). An abstract AF_UNIX name arrives as ``@name`` (or as the
    raw NUL-prefixed path) and is shown as ``unix:@name``.
    """
    if isinstance(host, bytes):
        host = os.fsdecode(host)
    if host is None:
        host = ""
    if family == _AF_UNIX:
        if host.startswith("\x00"):
            host = "@" + host[1:]
        return "unix:" + host
    if family == _AF_INET6:
        return f"[{host}]" if port is None else f"[{host}]:{port}"
    if family == 0:
        if port is None:
            return "dns:" + host
        if ":" in host:  # an address given to a reverse lookup: keep the port apart
            return f"dns:[{host}]:{port}"
        return f"dns:{host}:{port}"
    return host if port is None else f"{host}:{port}"


def slug_for(op: str, family: int) -> str:
    """The message slug of a denied operation: ``NG002`` for lookups, else ``NG001``."""
    if family == 0 or op in DNS_OPS:
        return SLUG_DNS
    return SLUG_SOCKET


def _is_address(host: str) -> bool:
    text = host.partition("%")[0]
    for family in (_AF_INET, _AF_INET6):
        try:
            socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
        return True
    return False


def suggest_rule(op: str, family: int, host: str | None, port: int | None) -> str | None:
    """The exact rule text that would allow this operation, or ``None`` if no rule can.

    A reverse lookup (``gethostbyaddr`` or ``getnameinfo`` of an address) is allowed only
    for loopback addresses or when everything is allowed, so no rule is suggested for it;
    of a name, it is judged as a lookup of that name.
    """
    if host is None:
        return None
    if family == _AF_UNIX:
        return format_destination(family, host, None)
    if family == _AF_INET:
        return host if port is None else f"{host}:{port}"
    if family == _AF_INET6:
        address = host.partition("%")[0]
        return address if port is None else f"[{address}]:{port}"
    if family == 0:
        if _is_address(host):
            return None  # a reverse lookup: allowed for loopback only, never by a rule
        name = host.lower().rstrip(".")
        return name if not port else f"{name}:{port}"
    return None


def _is_loopback(family: int, host: str | None) -> bool:
    if host is None:
        return False
    if family == _AF_UNIX:
        return True  # AF_UNIX never leaves the machine; medium tests may use it
    if family == _AF_INET:
        return host.startswith("127.")
    if family == _AF_INET6:
        address = host.partition("%")[0].lower()
        if address.startswith("::ffff:") and "." in address:  # v4-mapped: judged as IPv4
            return address[7:].startswith("127.")
        return address in ("::1", "0:0:0:0:0:0:0:1")
    if family == 0:
        name = host.lower().rstrip(".")
        return name == "localhost" or name.endswith(".localhost") or name.startswith("127.")
    return False


def _why(op: str, family: int, host: str | None, size: str | None) -> str:
    lookup = family == 0 or op in DNS_OPS
    if size == "small":
        if lookup:
            return "small tests may not look up any name but localhost"
        return "small tests may not use the network at all, loopback included"
    if size == "medium":
        if lookup:
            return "medium tests may look up only localhost (and *.localhost)"
        return "medium tests may use loopback and AF_UNIX only"
    if lookup and host is not None and _is_address(host):
        return "reverse lookups are allowed only for loopback addresses"
    if lookup:
        return f"no host rule of the active policy matches {host}"
    what = "unix socket path" if family == _AF_UNIX else "destination"
    return f"no rule of the active policy allows this {what}"


def _default_hint(
    op: str,
    family: int,
    host: str | None,
    port: int | None,
    test: str | None,
    size: str | None,
    phase: str | None = None,
    origin: str = "python",
) -> str:
    """Ways to fix the violation, one per line, most local first."""
    rule = suggest_rule(op, family, host, port)
    if origin == "child":
        first = "do not start this program in this test: put a fake in its place (a stub on PATH)"
    elif origin == "native":
        first = "mock the library's client (its connect function), or inject a fake client"
    else:
        first = "mock the call, or inject a fake client into the code under test"
    options = [first]
    if test is None:
        if rule is not None:
            options.append(f"add a rule that allows it: {rule}")
        elif family == 0:
            options.append(
                f"no rule allows a reverse lookup: mock socket.{op}, or allow everything "
                "(netguard.Policy(allow_all=True))"
            )
        else:
            options.append("allow everything: netguard.Policy(allow_all=True)")
        return "\n".join(options)
    if phase == "collection":
        # importing a test module: markers do not apply, only the session's settings
        options.insert(
            0,
            "do not reach the network at import time: move the call into a fixture or "
            "into the test that needs it (then its size and markers apply)",
        )
        if rule is not None and size not in ("small", None):
            options.append(f"allow it for the whole run: --netguard-allow={rule}")
        if size in ("small", "medium"):
            wider = "medium" if size == "small" and _is_loopback(family, host) else "large"
            options.append(
                f"collection runs under the default size: --netguard-default-size={wider} "
                "allows it (for every unmarked test as well)"
            )
        return "\n".join(options)
    if rule is not None:
        options.append(f"allow it in this test: @pytest.mark.netguard(allow=[{rule!r}])")
        if size not in ("small", None):
            options.append(f"allow it in every test: --netguard-allow={rule}")
    if size == "small" and _is_loopback(family, host):
        options.append("mark the test @pytest.mark.medium (loopback and AF_UNIX allowed)")
    elif size in ("small", "medium"):
        options.append("mark the test @pytest.mark.large (any network)")
    options.append("let this test reach anything: @pytest.mark.allow_network")
    return "\n".join(options)


def _format_message(
    op: str,
    family: int,
    host: str | None,
    destination: str,
    test: str | None,
    size: str | None,
    phase: str | None,
    hint: str,
    slug: str,
    swallowed: int,
    blocked: bool,
    escalated: bool = False,
    where: str | None = None,
    origin: str = "python",
) -> str:
    verb = "of" if op in DNS_OPS else "to"
    if blocked:
        lines = [f"netguard blocked {op} {verb} {destination}"]
    else:
        lines = [f"netguard let through {op} {verb} {destination} (warn mode; strict blocks it)"]
    if test is not None:
        context = ", ".join(
            part
            for part in (
                f"size {size}" if size is not None else "",
                f"phase {phase}" if phase is not None else "",
            )
            if part
        )
        lines.append(f"  test: {test}" + (f" ({context})" if context else ""))
    if where is not None:
        lines.append(f"  at:   {where}")
    lines.append(f"  why:  {_why(op, family, host, size)}")
    hint_lines = hint.splitlines() or [""]
    lines.append(f"  fix:  - {hint_lines[0]}")
    lines.extend(f"        - {line}" for line in hint_lines[1:])
    if swallowed:
        counted = "1 violation" if swallowed == 1 else f"{swallowed} violations, this is the first"
        if origin == "child":
            lines.append(
                f"  note: a child process made this call and got EACCES; what it did with the "
                f"error was its business, the test fails all the same ({counted})"
            )
        elif origin == "native":
            lines.append(
                f"  note: C code in the test process made this call and got EACCES; the "
                f"library's own error (if any) does not say netguard ({counted})"
            )
        else:
            lines.append(f"  note: the code under test swallowed this error ({counted})")
    if escalated and origin != "python":
        lines.append(
            "  note: warn mode let the call through, but a warnings filter turned "
            "NetworkViolationWarning into an error (-W error), so the test fails"
        )
    elif escalated:
        lines.append(
            "  note: warn mode, but a warnings filter turned NetworkViolationWarning into an "
            "error (-W error), so netguard blocked the call"
        )
    lines.append(f"  see:  {slug} in {DOCS_PAGE}#{slug.lower()}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the exception


def _rebuild(cls: type[Any], state: dict[str, Any]) -> Any:
    """Unpickle a violation exception or warning (``__reduce__`` below)."""
    return cls(**state)


class _ViolationData:
    """The constructor, attributes and message shared by the exception and the warning."""

    _blocked: bool  # the message says "blocked" (the exception) or "let through"

    op: str
    family: int
    host: str | None
    port: int | None
    destination: str
    test: str | None
    size: str | None
    phase: str | None
    where: str | None
    slug: str
    rule: str | None
    hint: str
    swallowed: int
    escalated: bool
    origin: str
    pid: int | None
    program: str | None
    message: str

    def __init__(
        self,
        op: str,
        family: int,
        host: str | None,
        port: int | None,
        *,
        test: str | None = None,
        size: str | None = None,
        phase: str | None = None,
        where: str | None = None,
        hint: str | None = None,
        swallowed: int = 0,
        escalated: bool = False,
        origin: str = "python",
        pid: int | None = None,
        program: str | None = None,
    ) -> None:
        self.op = op
        self.family = family
        self.host = host
        self.port = port
        self.destination = format_destination(family, host, port)
        self.test = test
        self.size = size
        self.phase = phase
        self.where = where
        self.slug = slug_for(op, family)
        self.rule = suggest_rule(op, family, host, port)
        if hint is None:
            hint = _default_hint(op, family, host, port, test, size, phase, origin)
        self.hint = hint
        self.swallowed = swallowed
        self.escalated = escalated
        self.origin = origin
        self.pid = pid
        self.program = program
        self.message = _format_message(
            op,
            family,
            host,
            self.destination,
            test,
            size,
            phase,
            self.hint,
            self.slug,
            swallowed,
            self._blocked,
            escalated,
            where,
            origin,
        )
        self._init_base(self.message)

    def _init_base(self, message: str) -> None:
        raise NotImplementedError  # pragma: no cover

    def _state(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "family": self.family,
            "host": self.host,
            "port": self.port,
            "test": self.test,
            "size": self.size,
            "phase": self.phase,
            "where": self.where,
            "hint": self.hint,
            "swallowed": self.swallowed,
            "escalated": self.escalated,
            "origin": self.origin,
            "pid": self.pid,
            "program": self.program,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduction would call cls(*self.args), which does not match the
        # signature; rebuild from the keyword arguments instead, and carry __dict__ so
        # anything added later (notes, the plugin's own attributes) survives too.
        return (_rebuild, (type(self), self._state()), dict(self.__dict__))

    def __str__(self) -> str:
        return self.message


class NetworkViolationError(_ViolationData, OSError):
    """A network operation the active netguard policy does not allow (strict mode).

    Raised from inside the hooked call (``connect``, ``sendto``, ``getaddrinfo``, ...)
    before anything reaches the network.

    Why an :class:`OSError`: code that opens a socket cleans up on ``OSError`` only.
    ``socket.create_connection`` closes the socket it created when ``connect`` raises an
    ``OSError`` and lets anything else escape with the socket still open (a
    ``ResourceWarning`` and a leaked descriptor); ``http.client``, ``urllib``, ``urllib3``
    and ``requests`` treat an ``OSError`` as a failed connection and close, wrap and retry
    as they would for a refused one. ``errno`` is ``EACCES``, the error a denied call gets
    in native mode. Catching ``OSError`` therefore also catches this error; netguard still
    notices (a strict guard re-raises a swallowed violation when it exits).

    Attributes: ``op`` (``"connect"``, ``"getaddrinfo"``, ...), ``family`` (``AF_INET``,
    ``AF_INET6``, ``AF_UNIX``, or ``0`` for a name), ``host``, ``port`` (or ``None``),
    ``destination`` (``"192.0.2.10:443"``, ``"[2001:db8::1]:443"``, ``"unix:/p"``,
    ``"dns:example.com"``), ``test`` and ``size`` and ``phase`` (or ``None`` outside the
    pytest plugin), ``where`` (the call site: ``"tests/test_api.py:12 (test_fetch)"``,
    the first frame outside netguard, the standard library and installed packages, or
    ``None``), ``slug`` (``"NG001"``, ...), ``rule`` (the rule text that would allow
    the operation, or ``None``), ``hint`` (how to fix it), ``swallowed`` (non-zero when
    raised by a guard on exit because the code under test swallowed the original error:
    the number of violations recorded) and ``escalated`` (true in warn mode when a
    warnings filter such as ``-W error`` turned the warning into an error: the call was
    then blocked as in strict mode). Native mode adds ``origin`` (``"python"``,
    ``"native"`` for C code in the test process, ``"child"`` for a child process) and,
    for a child, its ``pid`` and ``program`` (both ``None`` otherwise).
    """

    _blocked = True

    def _init_base(self, message: str) -> None:
        OSError.__init__(self, errno.EACCES, message)


class NetworkViolationWarning(_ViolationData, pytest.PytestWarning):
    """A network operation the active policy does not allow, let through (warn mode).

    A :class:`pytest.PytestWarning`, so pytest's warning summary lists it. It carries the
    same attributes and message as :class:`NetworkViolationError`. When a warnings filter
    turns it into an error (``-W error::netguard.NetworkViolationWarning``), the call
    raises a :class:`NetworkViolationError` instead, chained from this warning (an
    ``OSError``, so the caller's cleanup runs), and the test fails as in strict mode.
    """

    _blocked = False

    def _init_base(self, message: str) -> None:
        pytest.PytestWarning.__init__(self, message)


NetworkViolationError.__module__ = "netguard"
NetworkViolationWarning.__module__ = "netguard"


# --------------------------------------------------------------------------- the record


class Violation(Record):
    """One denied operation, as recorded by a guard (``Guard.violations``).

    ``thread`` is the name of the thread that made the call, ``timestamp`` its
    ``time.time()``; ``test``, ``size`` and ``phase`` are the guard's context when the
    call was denied (``None`` outside the pytest plugin); ``where`` is the call site in
    the user's code, as messages show it. ``origin`` is where the call was judged (see
    :data:`ORIGINS`); a child's call has its ``pid`` and ``program``.
    """

    __slots__ = (
        "op", "family", "host", "port", "destination", "thread", "timestamp",
        "test", "size", "phase", "where", "origin", "pid", "program",
    )
    op: str
    family: int
    host: str | None
    port: int | None
    destination: str
    thread: str
    timestamp: float
    test: str | None
    size: str | None
    phase: str | None
    where: str | None
    origin: str
    pid: int | None
    program: str | None

    def __init__(
        self,
        op: str,
        family: int,
        host: str | None,
        port: int | None,
        destination: str,
        thread: str,
        timestamp: float,
        test: str | None = None,
        size: str | None = None,
        phase: str | None = None,
        where: str | None = None,
        origin: str = "python",
        pid: int | None = None,
        program: str | None = None,
    ) -> None:
        init(self, "op", op)
        init(self, "family", family)
        init(self, "host", host)
        init(self, "port", port)
        init(self, "destination", destination)
        init(self, "thread", thread)
        init(self, "timestamp", timestamp)
        init(self, "test", test)
        init(self, "size", size)
        init(self, "phase", phase)
        init(self, "where", where)
        init(self, "origin", origin)
        init(self, "pid", pid)
        init(self, "program", program)

    @property
    def slug(self) -> str:
        return slug_for(self.op, self.family)

    def error(self, *, swallowed: int = 0, escalated: bool = False) -> NetworkViolationError:
        """The :class:`NetworkViolationError` for this violation."""
        return NetworkViolationError(
            self.op,
            self.family,
            self.host,
            self.port,
            test=self.test,
            size=self.size,
            phase=self.phase,
            where=self.where,
            swallowed=swallowed,
            escalated=escalated,
            origin=self.origin,
            pid=self.pid,
            program=self.program,
        )

    def warning(self) -> NetworkViolationWarning:
        """The :class:`NetworkViolationWarning` for this violation."""
        return NetworkViolationWarning(
            self.op,
            self.family,
            self.host,
            self.port,
            test=self.test,
            size=self.size,
            phase=self.phase,
            where=self.where,
            origin=self.origin,
            pid=self.pid,
            program=self.program,
        )
