"""The suite's backstop: no packet to a non-loopback address, however the suite is run.

DESIGN.md section 4: no test may send a packet to a non-loopback address. Tests that need
an outside destination run that part in a private network namespace of their own
(``netns.run_isolated``, ``pluginrun.run_in_netns``). This module catches a test that
forgot to: in a process that is *not* inside a private network namespace, an audit hook
raises :class:`OutboundCallBlocked` for

- ``connect``/``connect_ex``, ``sendto`` and ``sendmsg`` towards an address that is not
  loopback (or ``0.0.0.0``/``::``, which mean this host), and any destination of a family
  other than AF_INET, AF_INET6, AF_UNIX and AF_NETLINK;
- name lookups (``getaddrinfo``, ``gethostbyname(_ex)``) of any name but ``localhost``,
  and reverse lookups (``gethostbyaddr``, ``getnameinfo``) of addresses other than
  loopback: those may send a DNS query.

CPython raises these audit events after parsing the address and before the system call
(``sock_connect``, ``sock_connect_ex``, ``sock_sendto``, ``sock_sendmsg`` and
``socket_getaddrinfo`` in Modules/socketmodule.c call ``PySys_Audit`` right before
``connect()``/``sendto()``/``sendmsg()``/``getaddrinfo()``), so the call never reaches the
kernel. netguard's own hooks deny a call before the original method runs, so a call
netguard blocks raises no event; one it lets through (warn mode, a rule, a large test)
does, and meets this hook.

What it cannot stop: a host *name* passed to ``connect``/``sendto`` is resolved by CPython
before the event (the lookup may already have queried DNS; the connect is still stopped),
and C code that bypasses the ``socket`` module. The strace audit in docs/development.md
covers those.

Where it runs:

- the test session itself and its pytest-xdist workers: ``tests/conftest.py`` installs it
  when :func:`session_isolated` is false, and fails the phase of a test that made such a
  call, even if the test swallowed the exception;
- every Python process the tests start that keeps ``PYTHONPATH``: the session exports
  :data:`SITE_DIR` (a ``sitecustomize``) and :data:`ENABLE_VAR`; the child checks its own
  namespace, so children inside a per-test namespace run unhindered.

``NETGUARD_TESTS_ASSUME_SHARED_NETNS=1`` makes a session inside a namespace behave as if it
were not (to audit the per-test isolation with the session's namespace as a second net);
the per-test namespace helpers remove it for their children, which are isolated for real.

Standard library only, and nothing heavy at import: a ``sitecustomize`` imports it into
every child process, before pytest starts there. So pytest does not rewrite its asserts
(it has none), and does not warn that it cannot when a development install's metadata
lists tests/ among a plugin's files: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = [
    "ASSUME_SHARED_VAR",
    "ENABLE_VAR",
    "SITE_DIR",
    "OutboundCallBlocked",
    "child_environment",
    "in_isolated_netns",
    "install",
    "is_installed",
    "numeric_getnameinfo",
    "outbound",
    "session_isolated",
    "take_blocked",
]

#: Set to 1: treat this process as *not* isolated even inside a namespace.
ASSUME_SHARED_VAR = "NETGUARD_TESTS_ASSUME_SHARED_NETNS"
#: Set to 1 by a session that runs the backstop: its Python children install it too.
ENABLE_VAR = "NETGUARD_TESTS_BACKSTOP"
#: The directory holding the ``sitecustomize`` that installs the backstop in children.
SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backstop_site")


class OutboundCallBlocked(BaseException):
    """A call that could send a packet off this machine, stopped before the system call.

    A ``BaseException``, like ``KeyboardInterrupt``: ``except OSError`` and ``except
    Exception`` in the code under test do not swallow it, and pytest reports it as the
    test's failure.
    """


_installed = False
_blocked: list[str] = []  # messages of the calls stopped since the last take_blocked()
_print = False  # children: also say so on stderr at once, in case it is swallowed
_numeric_getnameinfo = 0  # > 0 inside numeric_getnameinfo()


# --------------------------------------------------------------------------- namespaces


def interfaces() -> set[str]:
    """Names of the network interfaces of this process's network namespace."""
    # /proc/self/net shows the network namespace of this process. /sys/class/net does not:
    # sysfs shows the namespace of whoever mounted it, so after `unshare -n` without a new
    # mount it still lists the host's interfaces.
    try:
        with open("/proc/self/net/dev", encoding="ascii") as f:
            lines = f.read().splitlines()[2:]  # two header lines
    except OSError:
        import socket

        return {name for _, name in socket.if_nameindex()}
    return {line.split(":", 1)[0].strip() for line in lines if ":" in line}


def in_isolated_netns() -> bool:
    """True when this process's network namespace has no interface but loopback."""
    return interfaces() == {"lo"}


def session_isolated() -> bool:
    """Whether this process may rely on its namespace: isolated, and not told otherwise."""
    return os.environ.get(ASSUME_SHARED_VAR, "") != "1" and in_isolated_netns()


# --------------------------------------------------------------------------- the judge


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("ascii", "replace")
    return None


def _ip(host: str) -> Any:
    """The address ``host`` spells, in any form the kernel accepts, or None for a name."""
    import ipaddress
    import socket

    bare = host.split("%", 1)[0]  # an IPv6 scope id
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))  # 127.1, 2130706433, ...
    except (OSError, ValueError):
        return None


def _loopback_ip(ip: Any) -> bool:
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_loopback or ip.is_unspecified)  # 0.0.0.0 and :: mean this host


def _local_name(name: str) -> bool:
    # Only localhost: /etc/hosts answers it. Names under .localhost are loopback by RFC 6761,
    # but a resolver that does not know that sends them to its DNS server. The resolver
    # reads a name up to a NUL.
    return name.split("\0", 1)[0].rstrip(".").lower() == "localhost"


def _local_destination(host: object) -> bool:
    text = _text(host)
    if text is None:
        return False
    if text == "" or _local_name(text):  # "" is INADDR_ANY: this host
        return True
    ip = _ip(text)
    return ip is not None and _loopback_ip(ip)


def outbound(event: str, args: tuple[Any, ...]) -> str | None:
    """What the audited call would send off this machine, or None when it stays here."""
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        import socket

        sock, address = args[0], args[1]
        if address is None:  # sendmsg on a connected socket: its connect was judged
            return None
        family = sock.family
        op = event.split(".", 1)[1]
        if family in (socket.AF_INET, socket.AF_INET6):
            if isinstance(address, tuple) and address and _local_destination(address[0]):
                return None
            return f"{op} to {address!r}"
        if family == getattr(socket, "AF_UNIX", None) or family == getattr(
            socket, "AF_NETLINK", None
        ):
            return None
        return f"{op} on a socket of family {family!r} to {address!r}"
    if event in ("socket.getaddrinfo", "socket.gethostbyname"):
        host = args[0]
        if host is None:  # getaddrinfo(None, port): the wildcard or loopback, no lookup
            return None
        text = _text(host)
        if text is not None and (text == "" or _local_name(text) or _ip(text) is not None):
            return None  # numeric: no lookup
        return f"{event.split('.', 1)[1]} of {host!r}"
    if event in ("socket.gethostbyaddr", "socket.getnameinfo"):
        target = args[0]
        if event == "socket.getnameinfo":
            if _numeric_getnameinfo:
                return None
            if isinstance(target, tuple) and target:
                target = target[0]
        if _local_destination(target):
            return None
        return f"{event.split('.', 1)[1]} of {target!r} (a reverse lookup may query DNS)"
    return None


# --------------------------------------------------------------------------- the hook


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not event.startswith("socket."):
        return
    what = outbound(event, args)
    if what is None:
        return
    message = (
        f"netguard's test backstop stopped {what} before the system call: this process "
        "is not in a private network namespace, and nothing may leave this machine "
        "(DESIGN.md section 4). Run the part that reaches out with netns.run_isolated() "
        "or pluginrun.run_in_netns(), or use a loopback destination."
    )
    _blocked.append(message)
    if _print:
        print(message, file=sys.stderr, flush=True)
    raise OutboundCallBlocked(message)


def install(*, announce: bool = False) -> None:
    """Add the audit hook to this process (once; audit hooks cannot be removed).

    ``announce``: also print each stopped call to stderr as it happens (child processes,
    where nobody collects :func:`take_blocked`).
    """
    global _installed, _print
    _print = _print or announce
    if _installed:
        return
    sys.addaudithook(_audit)
    _installed = True


@contextlib.contextmanager
def numeric_getnameinfo() -> Iterator[None]:
    """Let ``getnameinfo`` of any address through, for calls with ``NI_NUMERICHOST``.

    Such a call asks nothing of the network, but its audit event does not carry the flags,
    so the backstop cannot tell it from a reverse lookup: a test that makes one says so.
    """
    global _numeric_getnameinfo
    _numeric_getnameinfo += 1
    try:
        yield
    finally:
        _numeric_getnameinfo -= 1


def is_installed() -> bool:
    return _installed


def take_blocked() -> list[str]:
    """The messages of the calls stopped since the last call, and forget them."""
    taken = _blocked[:]
    del _blocked[:]
    return taken


def child_environment(environ: dict[str, str] | os._Environ[str]) -> None:
    """Make Python children started with ``environ`` install the backstop themselves."""
    environ[ENABLE_VAR] = "1"
    parts = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if SITE_DIR not in parts:
        environ["PYTHONPATH"] = os.pathsep.join([SITE_DIR, *parts])
