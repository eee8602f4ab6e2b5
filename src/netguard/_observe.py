"""Every network event of a run, allowed ones included, for ``--netguard-report`` and
``--netguard-verbose``.

The C core never enters Python for an allowed call; that is the point of it. When a report
or the verbose table is asked for, the plugin adds a Python audit hook instead: CPython
raises an audit event for every call that reaches the socket layer (``socket.connect``,
``socket.getaddrinfo``, ...), after netguard's hooks allowed it. A call netguard blocked
never gets there; it is a violation, recorded as such. Audit hooks cannot be removed, so
this one is inert once the session ends. It costs a Python call per audited event, paid
only in runs that asked for the report or the table.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["FAMILIES", "Observer", "set_observer"]

#: How a family is written in reports.
FAMILIES = {
    socket.AF_INET: "inet",
    socket.AF_INET6: "inet6",
    0: "dns",
}
if hasattr(socket, "AF_UNIX"):
    FAMILIES[socket.AF_UNIX] = "unix"

# (op, family, host, port) -> None; called for every network event while set.
Observer = Callable[[str, int, str, "int | None"], None]

_observer: Observer | None = None
_hook_added = False
_busy = False  # the observer itself must not be observed (it does no I/O, but be safe)

_SOCKET_OPS = {
    "socket.connect": "connect",
    "socket.sendto": "sendto",
    "socket.sendmsg": "sendmsg",
}
_DNS_OPS = {
    "socket.getaddrinfo": "getaddrinfo",
    "socket.gethostbyname": "gethostbyname",
    "socket.gethostbyaddr": "gethostbyaddr",
    "socket.getnameinfo": "getnameinfo",
}


def set_observer(observer: Observer | None) -> None:
    """Send every network event to ``observer`` (None: to nothing)."""
    global _observer, _hook_added
    _observer = observer
    if observer is not None and not _hook_added:
        sys.addaudithook(_audit)
        _hook_added = True


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("ascii", "replace")
    return None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    global _busy
    observer = _observer
    if observer is None or _busy or not event.startswith("socket."):
        return
    op = _SOCKET_OPS.get(event)
    _busy = True
    try:
        if op is not None:
            _socket_event(observer, op, args)
            return
        op = _DNS_OPS.get(event)
        if op is not None:
            _dns_event(observer, op, args)
    except Exception:
        pass
    finally:
        _busy = False


def _socket_event(observer: Observer, op: str, args: tuple[Any, ...]) -> None:
    if len(args) < 2 or args[1] is None:
        return
    sock, address = args[0], args[1]
    family = int(sock.family)
    if family in (socket.AF_INET, socket.AF_INET6):
        if not isinstance(address, tuple) or len(address) < 2:
            return
        host = _text(address[0])
        if host is None:
            return
        observer(op, family, host, int(address[1]))
    elif family == getattr(socket, "AF_UNIX", None):
        path = (
            address.decode("utf-8", "surrogateescape") if isinstance(address, bytes) else address
        )
        if isinstance(path, str):
            path = "@" + path[1:] if path.startswith("\0") else path
            observer(op, family, path, None)


def _dns_event(observer: Observer, op: str, args: tuple[Any, ...]) -> None:
    if not args:
        return
    host: object = args[0]
    port: int | None = None
    if op == "getnameinfo" and isinstance(host, tuple) and host:
        host = host[0]
    if op == "getaddrinfo" and len(args) > 1 and isinstance(args[1], int):
        port = args[1]
    name = _text(host)
    if name:
        observer(op, 0, name, port)
