"""Pure-Python twin of the C core :mod:`netguard._netguard`.

This module implements the interface fixed in ``docs/internals.md`` (policy, hooks, deny
callback) with the standard library only. It has two jobs:

* **test oracle**: the C matcher is compared against it, so it is written to be obviously
  right rather than fast. Matching is a plain linear scan ("does any rule cover both the
  address and the port?") with :mod:`ipaddress`, deliberately unlike the C interval sweep,
  so that a differential test between the two means something.
* **fallback**: selected only explicitly (``NETGUARD_IMPL=python``), so its hooks really
  work: Python functions set on :class:`socket.socket` and in the :mod:`socket` and
  :mod:`_socket` modules, calling the original C functions.

Limitations compared with the C core:

* **No audit-hook backstop.** ``activate(policy, strict=True)`` only records the flag.
  ``_socket.socket`` used directly, and bound methods or functions captured before
  :func:`install`, are not judged.
* Every guarded call enters Python, allowed ones included (the C hooks do not), so an
  allowed connect costs microseconds rather than nanoseconds.

Choices made where the contract is silent (the C core must match them):

* The callback is called at most once per operation. A hostname denied by the DNS policy
  in ``connect``/``sendto``/``sendmsg`` is reported once (family ``0``); if the callback
  returns, the name is resolved and the call proceeds without judging the address too.
* The name given to the callback is the host as the caller wrote it (``str`` unchanged,
  ``bytes`` decoded as ASCII with ``surrogateescape``), not the normalised name used for
  matching (lower-cased, IDNA-encoded, one trailing dot removed).
* A numeric address is judged by its own family whatever the socket's family (``"1.2.3.4"``
  on an ``AF_INET6`` socket is judged as the IPv4 address; the original call then fails as
  it always does). ``""`` is the socket family's any-address (``0.0.0.0`` or ``::``) and
  ``"<broadcast>"`` is ``255.255.255.255``, as in CPython's parser.
* A hostname resolved inside ``connect``/``sendto``/``sendmsg`` under a matching host rule
  teaches every returned address, like an explicit ``getaddrinfo``. The numeric address
  handed to the original call is the first result; for ``AF_INET6`` its flowinfo and scope
  id come from the resolved tuple unless the caller's tuple gave them.
* ``getaddrinfo`` with ``AI_NUMERICHOST`` in its flags is not a lookup. The name it judges
  is cut at the first NUL, as the C library reads it.
* ``gethostbyaddr`` of a *name* (CPython resolves it forwards first) is judged as a lookup
  of that name by the DNS policy; of an address, as a reverse lookup.
* In :meth:`Policy.allows`, ``""`` and ``"<broadcast>"`` are names, not addresses, and
  ``[...]`` may hold an IPv4 or an IPv6 address.
* AF_UNIX paths may be any bytes-like object (CPython accepts them); a path that is not
  abstract is cut at its first NUL, as the kernel reads it. Unix rules match with Python's
  :func:`fnmatch.fnmatchcase`: ``\\`` is an ordinary character (no escapes) and an
  unclosed ``[`` is literal, unlike libc ``fnmatch(3)``; on the file-system encoding's
  bytes, so ``?`` is one byte, as the C core matches.
* The any-address of a family is judged as that family's loopback: ``0.0.0.0``,
  ``::ffff:0.0.0.0`` and ``""`` on an IPv4 socket as ``127.0.0.1``; ``::`` and ``""`` on
  an IPv6 socket as ``::1`` (where the kernel connects them).
* Flags with unknown bits are a ValueError. ``from_bytes`` raises TypeError for an
  argument that is not bytes-like, ValueError for every malformed blob.
"""

from __future__ import annotations

import _socket
import fnmatch
import ipaddress
import json
import operator
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple, Protocol, SupportsIndex

__all__ = [
    "ALLOW_ALL",
    "DNS_LOCALHOST",
    "Policy",
    "activate",
    "activate_base",
    "active",
    "aim_base",
    "base_owner",
    "deactivate",
    "enter_base",
    "install",
    "is_installed",
    "leave_base",
    "mark_base",
    "start_base",
    "uninstall",
]

ALLOW_ALL: Final = 1
DNS_LOCALHOST: Final = 2
_KNOWN_FLAGS: Final = ALLOW_ALL | DNS_LOCALHOST

#: ``to_bytes()`` output starts with this line; the digit is the format version.
_MAGIC: Final = b"NGREF1\n"
_MAGIC_PREFIX: Final = b"NGREF"

_AF_INET: Final[int] = _socket.AF_INET
_AF_INET6: Final[int] = _socket.AF_INET6
_AF_UNIX: Final[int | None] = getattr(_socket, "AF_UNIX", None)
_AI_NUMERICHOST: Final[int] = _socket.AI_NUMERICHOST
_NI_NUMERICHOST: Final[int] = _socket.NI_NUMERICHOST

_MAX_PORT: Final = 65535
_MAX_ADDRESS: Final = {4: 2**32 - 1, 6: 2**128 - 1}
_RULE_KINDS: Final = ("ip", "host", "unix")
_RULE_FIELDS: Final = (
    "kind",
    "text",
    "source",
    "name",
    "family",
    "first",
    "last",
    "ports",
    "host",
    "path",
)

# Characters of an IPv4 address in any form inet_aton() reads (dotted, hex, octal, one
# number). Checking them first rejects what glibc's inet_aton() would accept only
# because it stops at white space ("127.0.0.1 junk"), which getaddrinfo() refuses.
_IPV4_CHARS: Final = frozenset("0123456789abcdefABCDEFxX.")
_THIS_HOST_V4: Final = ipaddress.IPv4Address("127.0.0.1")
_THIS_HOST_V6: Final = ipaddress.IPv6Address(1)
_ANY_V4: Final = ipaddress.IPv4Address(0)
_ANY_V6: Final = ipaddress.IPv6Address(0)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``None`` for any port, else sorted, disjoint ``(lo, hi)`` ranges.
PortSet = tuple[tuple[int, int], ...] | None
DenyCallback = Callable[[str, int, str, int | None], object]

# The C members behind socket.socket.family/.type: plain ints, no enum conversion.
_sock_family: Final = _socket.socket.family.__get__
_sock_type: Final = _socket.socket.type.__get__


class RuleLike(Protocol):
    """What :class:`Policy` reads from a rule (``netguard.rules.Rule`` fits)."""

    @property
    def kind(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def family(self) -> int: ...
    @property
    def first(self) -> int: ...
    @property
    def last(self) -> int: ...
    @property
    def ports(self) -> PortSet: ...
    @property
    def host(self) -> str | None: ...
    @property
    def path(self) -> str | None: ...


class _Entry(NamedTuple):
    """A validated copy of one rule (the same fields as ``netguard.rules.Rule``)."""

    kind: str
    text: str
    source: str
    name: str | None
    family: int
    first: int
    last: int
    ports: PortSet
    host: str | None
    path: str | None


class _IPRule(NamedTuple):
    low: Address
    high: Address
    ports: PortSet


# --------------------------------------------------------------------------- validation


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_type(value: object, types: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, types) or isinstance(value, bool):
        raise TypeError(f"{what}: unexpected type {type(value).__name__}")


def _check_flags(flags: object) -> int:
    _check_type(flags, int, "flags")
    assert isinstance(flags, int)
    if flags < 0 or flags & ~_KNOWN_FLAGS:
        raise ValueError(f"flags: unknown bits in {flags!r}")
    return int(flags)


def _check_ports(ports: object, what: str) -> PortSet:
    if ports is None:
        return None
    _check_type(ports, (tuple, list), what)
    assert isinstance(ports, (tuple, list))
    if not ports:
        raise ValueError(f"{what}: an empty port set (use None for any port)")
    ranges: list[tuple[int, int]] = []
    for item in ports:
        _check_type(item, (tuple, list), what)
        if len(item) != 2 or not (_is_int(item[0]) and _is_int(item[1])):
            raise ValueError(f"{what}: {item!r} is not a (lo, hi) pair of ints")
        lo, hi = int(item[0]), int(item[1])
        if not 0 <= lo <= hi <= _MAX_PORT:
            raise ValueError(f"{what}: bad port range {lo}-{hi}")
        if ranges and lo <= ranges[-1][1]:
            raise ValueError(f"{what}: port ranges are not sorted and disjoint")
        ranges.append((lo, hi))
    return tuple(ranges)


def _checked_entry(rule: RuleLike) -> _Entry:
    """Validate the fields of a rule-like object; TypeError or ValueError if wrong."""
    missing = [field for field in _RULE_FIELDS if not hasattr(rule, field)]
    if missing:
        raise TypeError(f"not a rule (no {', '.join(missing)}): {rule!r}")
    kind = rule.kind
    what = f"rule {getattr(rule, 'text', '?')!r}"
    _check_type(kind, str, what + ": kind")
    if kind not in _RULE_KINDS:
        raise ValueError(f"{what}: unknown kind {kind!r}")
    text, source, name = rule.text, rule.source, rule.name
    _check_type(text, str, what + ": text")
    _check_type(source, str, what + ": source")
    if name is not None:
        _check_type(name, str, what + ": name")
    family, first, last = rule.family, rule.first, rule.last
    for value, field in ((family, "family"), (first, "first"), (last, "last")):
        _check_type(value, int, f"{what}: {field}")
    ports = _check_ports(rule.ports, what + ": ports")
    host, path = rule.host, rule.path
    for text_value, field in ((host, "host"), (path, "path")):
        if text_value is not None:
            _check_type(text_value, str, f"{what}: {field}")
    if kind == "ip":
        if family not in (4, 6):
            raise ValueError(f"{what}: family must be 4 or 6, not {family!r}")
        if not 0 <= first <= last <= _MAX_ADDRESS[family]:
            raise ValueError(f"{what}: bad address range {first}..{last}")
    elif family != 0:
        raise ValueError(f"{what}: family must be 0 for a {kind} rule")
    if kind == "host":
        if not host or host != host.lower() or host.endswith(".") or host == "*.":
            raise ValueError(f"{what}: bad host {host!r}")
    elif kind == "unix":
        if path is None:
            raise ValueError(f"{what}: a unix rule needs a path")
        if ports is not None:
            raise ValueError(f"{what}: a unix rule takes no ports")
    return _Entry(kind, text, source, name, int(family), int(first), int(last), ports, host, path)


def _check_port(port: SupportsIndex) -> int:
    value = operator.index(port)
    if not 0 <= value <= _MAX_PORT:
        raise ValueError(f"port must be 0-{_MAX_PORT}, not {value}")
    return value


# ------------------------------------------------------------------------ port sets


def _ports_contain(ports: PortSet, port: int) -> bool:
    if ports is None:
        return True
    return any(lo <= port <= hi for lo, hi in ports)


def _union_ports(a: PortSet, b: PortSet) -> PortSet:
    if a is None or b is None:
        return None
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(a + b):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


# ------------------------------------------------------------------------ addresses


class _IP(NamedTuple):
    """A parsed numeric address: its family (AF_INET/AF_INET6) and packed bytes."""

    family: int
    packed: bytes

    @property
    def text(self) -> str:
        """Canonical text as the C library writes it (``::ffff:1.2.3.4`` stays so)."""
        return socket.inet_ntop(self.family, self.packed)

    def judged(self) -> Address:
        """The address a policy judges: v4-mapped -> IPv4, any-address -> loopback."""
        addr: Address
        if self.family == _AF_INET:
            addr = ipaddress.IPv4Address(self.packed)
        else:
            addr = ipaddress.IPv6Address(self.packed)
            mapped = addr.ipv4_mapped
            if mapped is not None:
                addr = mapped
        if addr == _ANY_V4:
            return _THIS_HOST_V4
        if addr == _ANY_V6:
            return _THIS_HOST_V6
        return addr


def _parse_ip(text: str) -> _IP | None:
    """Parse a numeric host as the C library does; ``None`` if it is a name.

    IPv4 in every inet_aton() form (``127.1``, ``0x7f.1``, ``2130706433``, ``0177.0.0.1``);
    IPv6 as inet_pton() reads it, with an optional ``%scope`` (ignored).
    """
    if text and _IPV4_CHARS.issuperset(text):
        try:
            return _IP(_AF_INET, socket.inet_aton(text))
        except (OSError, ValueError):
            pass
    head = text.partition("%")[0]
    if ":" in head:
        try:
            return _IP(_AF_INET6, socket.inet_pton(_AF_INET6, head))
        except (OSError, ValueError):
            pass
    return None


def _parse_setipaddr(text: str, family: int) -> _IP | None:
    """Numeric host as CPython's setipaddr() reads it for a socket of ``family``.

    Adds two special forms to :func:`_parse_ip`: ``""`` is the any-address of the
    family (``0.0.0.0`` for AF_UNSPEC) and ``"<broadcast>"`` is ``255.255.255.255``.
    """
    if text == "":
        if family == _AF_INET6:
            return _IP(_AF_INET6, bytes(16))
        return _IP(_AF_INET, bytes(4))
    if text == "<broadcast>":
        return _IP(_AF_INET, b"\xff\xff\xff\xff")
    return _parse_ip(text)


def _ip_of_sockaddr(sockaddr: object) -> _IP | None:
    """The address of an (host, port, ...) tuple returned by the C library, if numeric."""
    if isinstance(sockaddr, tuple) and sockaddr and isinstance(sockaddr[0], str):
        return _parse_ip(sockaddr[0])
    return None


class _Host(NamedTuple):
    """A host argument as CPython hands it to the C library."""

    display: str  # as the caller wrote it (for the callback)
    text: str  # what the C library sees: IDNA-encoded, ASCII (surrogates for odd bytes)
    value: str | bytes  # an immutable value to give the original call


def _read_host(
    host: object, *, idna_always: bool, bytearray_ok: bool = True, cut_nul: bool = False
) -> _Host | None:
    """Read a host argument like CPython; ``None`` where CPython would raise.

    ``idna_always``: ``str`` is always IDNA-encoded (getaddrinfo, gethostby*), not only
    when it is not ASCII (connect's parser). ``cut_nul``: the C string ends at the first
    NUL (getaddrinfo does not check); otherwise a NUL is an error.
    """
    value: str | bytes
    if isinstance(host, str):
        display = value = str.__str__(host)
        if idna_always or not host.isascii():
            try:
                text = host.encode("idna").decode("ascii")
            except UnicodeError:
                return None
        else:
            text = value
    elif isinstance(host, bytes) or (bytearray_ok and isinstance(host, bytearray)):
        value = bytes(host)
        display = text = value.decode("ascii", "surrogateescape")
    else:
        return None
    if "\0" in text:
        if not cut_nul:
            return None
        text = text.partition("\0")[0]
        display = display.partition("\0")[0]
    return _Host(display, text, value)


def _normal_name(text: str) -> str:
    """The name a lookup is judged by: lower-case, without its trailing dot."""
    name = text.lower()
    return name[:-1] if name.endswith(".") else name


def _host_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


def _port_number(port: object) -> int | None:
    """A getaddrinfo port as the callback reports it: an int if numeric, else None."""
    if type(port) is int:
        return port
    if isinstance(port, bytes):
        port = port.decode("ascii", "replace")
    if isinstance(port, str) and port.isascii() and port.isdigit():
        try:
            return int(port)
        except ValueError:  # more digits than int() accepts
            return None
    return None


def _unix_path(address: object) -> tuple[str, object] | None:
    """(text, value for the original call) of an AF_UNIX address; None if unreadable."""
    value: object
    if isinstance(address, str):
        try:
            raw = os.fsencode(address)
        except UnicodeError:
            return None
        value = str.__str__(address)
    else:
        try:
            raw = bytes(memoryview(address))  # type: ignore[arg-type]
        except TypeError:
            return None
        value = raw
    if raw.startswith(b"\0"):
        return "@" + os.fsdecode(raw[1:]), value
    return os.fsdecode(raw.partition(b"\0")[0]), value


# --------------------------------------------------------------------------- policy


class Policy:
    """A compiled policy: rules plus flags, and the addresses learned from lookups.

    ``Policy(rules, flags=DNS_LOCALHOST)`` reads the fields of each rule (see
    ``netguard.rules.Rule``); a field of the wrong type is a :class:`TypeError`, a bad
    value a :class:`ValueError`.
    """

    __slots__ = ("__weakref__", "_entries", "_flags", "_hosts", "_ips", "_learned", "_lock")

    _entries: tuple[_Entry, ...]
    _flags: int
    _ips: tuple[_IPRule, ...]
    _hosts: tuple[_Entry, ...]
    _learned: dict[Address, PortSet]
    _lock: threading.Lock

    def __init__(self, rules: Iterable[RuleLike], flags: int = DNS_LOCALHOST) -> None:
        self._flags = _check_flags(flags)
        self._entries = tuple(_checked_entry(rule) for rule in rules)
        ips: list[_IPRule] = []
        for e in self._entries:
            if e.kind == "ip":
                make = ipaddress.IPv4Address if e.family == 4 else ipaddress.IPv6Address
                ips.append(_IPRule(make(e.first), make(e.last), e.ports))
        self._ips = tuple(ips)
        self._hosts = tuple(e for e in self._entries if e.kind == "host")
        self._learned = {}
        self._lock = threading.Lock()

    @property
    def flags(self) -> int:
        """``ALLOW_ALL`` and/or ``DNS_LOCALHOST``."""
        return self._flags

    def __repr__(self) -> str:
        names = [n for n, bit in (("ALLOW_ALL", 1), ("DNS_LOCALHOST", 2)) if self._flags & bit]
        flags = "|".join(names) or "0"
        return f"<netguard._reference.Policy rules={len(self._entries)} flags={flags}>"

    # ------------------------------------------------------------------ questions

    def allows(self, host: str, port: int | None = None) -> bool:
        """Static answer for a destination; learned addresses are ignored.

        ``host`` is an IP address in any form the kernel reads (``[...]`` allowed; a port
        is required), ``unix:PATH`` (no port), or a name: with ``port=None``, whether a
        lookup of it is allowed; with a port, whether a host rule covers name and port.
        """
        if not isinstance(host, str):
            raise TypeError(f"host must be str, not {type(host).__name__}")
        number = None if port is None else _check_port(port)
        if host.startswith("unix:"):
            if number is not None:
                raise ValueError("a unix: destination takes no port")
            return self._allow_all() or self._unix_covered(host[5:])
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        ip = _parse_ip(bare)
        if ip is not None:
            if number is None:
                raise ValueError(f"a port is required with an IP address ({host!r})")
            return self._allow_all() or self._ip_covered(ip.judged(), number)
        if host.isascii():
            text = host
        else:
            try:
                text = host.encode("idna").decode("ascii")
            except UnicodeError:
                text = host
        name = _normal_name(text)
        if number is None:
            return name == "" or self._lookup_allowed(name)
        return self._allow_all() or any(
            _ports_contain(e.ports, number) for e in self._host_rules(name)
        )

    def _allow_all(self) -> bool:
        return bool(self._flags & ALLOW_ALL)

    def _ip_covered(self, addr: Address, port: int) -> bool:
        """Does any ip rule cover both the (judged) address and the port?"""
        return any(
            r.low.version == addr.version
            and r.low <= addr <= r.high  # type: ignore[operator]
            and _ports_contain(r.ports, port)
            for r in self._ips
        )

    def _learned_covers(self, addr: Address, port: int) -> bool:
        with self._lock:
            if addr not in self._learned:
                return False
            ports = self._learned[addr]
        return _ports_contain(ports, port)

    def _address_allowed(self, ip: _IP, port: int) -> bool:
        """Hooks: ALLOW_ALL, a static rule or a learned address."""
        addr = ip.judged()
        return (
            self._allow_all() or self._ip_covered(addr, port) or self._learned_covers(addr, port)
        )

    def _unix_covered(self, path: str) -> bool:
        # bytes, as the kernel sees the path: '?' is one byte, as in the C core
        raw = os.fsencode(path)
        return any(
            e.kind == "unix"
            and e.path is not None
            and fnmatch.fnmatchcase(raw, os.fsencode(e.path))
            for e in self._entries
        )

    def _host_rules(self, name: str) -> list[_Entry]:
        return [e for e in self._hosts if e.host and _host_matches(e.host, name)]

    def _lookup_allowed(self, name: str) -> bool:
        """May ``name`` (normalised, not numeric) be looked up?"""
        if self._allow_all():
            return True
        if name == "localhost" and self._flags & DNS_LOCALHOST:
            return True
        return bool(self._host_rules(name))

    def _reverse_allowed(self, ip: _IP) -> bool:
        return self._allow_all() or ip.judged().is_loopback

    def _learn(self, ips: Iterable[_IP], rules: list[_Entry]) -> None:
        """Remember addresses a lookup allowed by ``rules`` returned, on their ports."""
        ports: PortSet = rules[0].ports
        for e in rules[1:]:
            ports = _union_ports(ports, e.ports)
        with self._lock:
            for ip in ips:
                addr = ip.judged()
                if addr in self._learned:
                    self._learned[addr] = _union_ports(self._learned[addr], ports)
                else:
                    self._learned[addr] = ports

    # -------------------------------------------------------------- serialisation

    def to_bytes(self) -> bytes:
        """The rules and flags (not the learned addresses) in this module's format."""
        body = {
            "flags": self._flags,
            "rules": [
                {
                    **e._asdict(),
                    "ports": None if e.ports is None else [list(r) for r in e.ports],
                }
                for e in self._entries
            ],
        }
        return _MAGIC + json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> Policy:
        """Rebuild a policy from :meth:`to_bytes` output; ValueError if malformed."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected a bytes-like object, not {type(data).__name__}")
        raw = bytes(data)
        if not raw.startswith(_MAGIC):
            if raw.startswith(_MAGIC_PREFIX):
                raise ValueError("unsupported netguard reference policy version")
            raise ValueError("not a netguard reference policy (bad magic)")
        try:
            body = json.loads(
                raw[len(_MAGIC) :].decode("utf-8"),
                object_pairs_hook=_unique_keys,
                parse_constant=_no_constant,
            )
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"malformed policy: {exc}") from None
        try:
            return _policy_from_json(cls, body)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed policy: {exc}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _policy_from_json(cls: type[Policy], body: object) -> Policy:
    if not isinstance(body, dict) or set(body) != {"flags", "rules"}:
        raise ValueError("expected an object with 'flags' and 'rules'")
    rules = body["rules"]
    if not isinstance(rules, list):
        raise ValueError("'rules' must be a list")
    entries: list[_Entry] = []
    for item in rules:
        if not isinstance(item, dict) or set(item) != set(_RULE_FIELDS):
            raise ValueError(f"a rule must be an object with the keys {_RULE_FIELDS}")
        ports = item["ports"]
        if isinstance(ports, list):
            ports = tuple(tuple(r) if isinstance(r, list) else r for r in ports)
        entries.append(_Entry(**{**item, "ports": ports}))
    return cls(entries, body["flags"])


# ---------------------------------------------------------------------------- hooks


class _Installation:
    """One install(): the callback, what was patched, and whether it is still live.

    The hooks are closures over their installation, so a hook captured before
    uninstall() (or racing with it) only passes calls through once ``live`` is false.
    """

    def __init__(self, callback: DenyCallback) -> None:
        self.callback = callback
        self.live = True
        # the getaddrinfo that resolves a name given to connect/sendto/sendmsg
        self.resolve: Callable[..., Any] = _socket.__dict__.get("getaddrinfo", _socket.getaddrinfo)
        # (owner, attribute name, previous value or _ABSENT), in patching order
        self.saved: list[tuple[object, str, object]] = []

    def policy(self) -> Policy | None:
        """The policy to judge by now, or None to pass the call through."""
        policy = _state.policy
        if policy is None or not self.live or policy._flags & ALLOW_ALL:
            return None
        return policy

    def deny(self, op: str, family: int, host: str, port: int | None) -> None:
        if _state.base_owner is not None:
            _state.base_marked = True  # leave_base() hands the phase to Python
        self.callback(op, family, host, port)


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.installation: _Installation | None = None
        # what the hooks judge by: the guard stack's level while set, else the base's
        self.policy: Policy | None = None
        self.strict = False
        self.top: tuple[Policy | None, bool] | None = None
        self.base: tuple[Policy | None, bool] = (None, False)
        # the base switch: (item, owner, policy, strict, quick) of the aimed test, or
        # None; the owner of the running phase, and whether it has something to report
        self.aim: tuple[object, Any, Policy | None, bool, bool] | None = None
        self.base_owner: Any = None
        self.base_marked = False

    def update(self) -> None:
        self.policy, self.strict = self.top if self.top is not None else self.base


_state = _State()
_ABSENT: Final = object()

_SOCKET_DNS: Final = ("gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo")
_GAI_PARAMS: Final = ("host", "port", "family", "type", "proto", "flags")


def _guard_inet(
    inst: _Installation, policy: Policy, op: str, sock: Any, family: int, address: object
) -> object:
    """Judge an AF_INET/AF_INET6 address; return what the original call should get."""
    if not isinstance(address, tuple) or not (
        len(address) == 2 if family == _AF_INET else 2 <= len(address) <= 4
    ):
        return address
    host = _read_host(address[0], idna_always=False)
    try:
        port = operator.index(address[1])
        extra = [operator.index(v) & 0xFFFFFFFF for v in address[2:]]
    except TypeError:
        return address
    if host is None or not 0 <= port <= _MAX_PORT or (extra and extra[0] > 0xFFFFF):
        return address  # the original raises its usual error
    ip = _parse_setipaddr(host.text, family)
    if ip is not None:
        if not policy._address_allowed(ip, port):
            inst.deny(op, ip.family, ip.text, port)
        return (host.value, port, *address[2:])

    # A name: judge the lookup, resolve once, judge the result, pass it on numeric.
    name = _normal_name(host.text)
    name_denied = not policy._lookup_allowed(name)
    if name_denied:
        inst.deny(op, 0, name, port)
    infos = inst.resolve(host.value, port, family, _sock_type(sock))
    if not infos:
        raise OSError(f"getaddrinfo returned no address for {host.display!r}")
    sockaddr = infos[0][4]
    rules = policy._host_rules(name)
    if rules:
        policy._learn(_addresses_of(infos), rules)
    if not name_denied and not any(_ports_contain(e.ports, port) for e in rules):
        ip = _ip_of_sockaddr(sockaddr)
        if ip is None:
            inst.deny(op, family, str(sockaddr[0]), port)
        elif not policy._address_allowed(ip, port):
            inst.deny(op, ip.family, ip.text, port)
    if family == _AF_INET:
        return (sockaddr[0], port)
    # flowinfo and scope id: the caller's where given, else the resolved ones
    flowinfo, scope_id = (*sockaddr[2:4], 0, 0)[:2]
    if len(address) >= 3:
        flowinfo = address[2]
    if len(address) == 4:
        scope_id = address[3]
    return (sockaddr[0], port, flowinfo, scope_id)


def _guard_address(
    inst: _Installation, policy: Policy, op: str, sock: Any, address: object
) -> object:
    """Judge one destination of a socket call; return the address to pass on."""
    try:
        family = _sock_family(sock)
    except TypeError:  # not a socket: the original raises
        return address
    if family == _AF_INET or family == _AF_INET6:
        return _guard_inet(inst, policy, op, sock, family, address)
    if family == _AF_UNIX:
        path = _unix_path(address)
        if path is None:
            return address
        if not policy._unix_covered(path[0]):
            inst.deny(op, family, path[0], None)
        return path[1]
    return address


def _addresses_of(infos: object) -> list[_IP]:
    """The numeric addresses in a getaddrinfo() result (defensive: fakes exist)."""
    ips: list[_IP] = []
    if isinstance(infos, list):
        for info in infos:
            if isinstance(info, tuple) and len(info) == 5:
                ip = _ip_of_sockaddr(info[4])
                if ip is not None:
                    ips.append(ip)
    return ips


def _addresses_of_texts(texts: object) -> list[_IP]:
    if not isinstance(texts, list):
        return []
    return [ip for ip in (_parse_ip(t) for t in texts if isinstance(t, str)) if ip is not None]


def _make_socket_hooks(inst: _Installation) -> dict[str, Callable[..., Any]]:
    sock_cls = _socket.socket

    def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        policy = inst.policy()
        if policy is not None and len(args) == 1 and not kwargs:
            args = (_guard_address(inst, policy, "connect", self, args[0]),)
        return sock_cls.connect(self, *args, **kwargs)

    def connect_ex(self: Any, *args: Any, **kwargs: Any) -> Any:
        policy = inst.policy()
        if policy is not None and len(args) == 1 and not kwargs:
            args = (_guard_address(inst, policy, "connect_ex", self, args[0]),)
        return sock_cls.connect_ex(self, *args, **kwargs)

    def sendto(self: Any, *args: Any, **kwargs: Any) -> Any:
        # sendto(data, address) or sendto(data, flags, address)
        policy = inst.policy()
        if policy is not None and len(args) in (2, 3) and not kwargs:
            address = _guard_address(inst, policy, "sendto", self, args[-1])
            args = (*args[:-1], address)
        return sock_cls.sendto(self, *args, **kwargs)

    def sendmsg(self: Any, *args: Any, **kwargs: Any) -> Any:
        # sendmsg(buffers[, ancdata[, flags[, address]]]); no address, nothing to judge
        policy = inst.policy()
        if policy is not None and len(args) == 4 and not kwargs and args[3] is not None:
            address = _guard_address(inst, policy, "sendmsg", self, args[3])
            args = (*args[:3], address)
        return sock_cls.sendmsg(self, *args, **kwargs)

    hooks: dict[str, Callable[..., Any]] = {
        "connect": connect,
        "connect_ex": connect_ex,
        "sendto": sendto,
    }
    if hasattr(sock_cls, "sendmsg"):
        hooks["sendmsg"] = sendmsg
    for attr, hook in hooks.items():
        hook.__qualname__ = f"socket.{attr}"
        hook.__doc__ = getattr(sock_cls, attr).__doc__
    return hooks


def _judge_name_lookup(
    inst: _Installation, policy: Policy, op: str, host: _Host, port: int | None
) -> list[_Entry]:
    """Judge a forward lookup; return the host rules that allow it (to learn from)."""
    name = _normal_name(host.text)
    if not policy._lookup_allowed(name):
        inst.deny(op, 0, name, port)
        return []
    return policy._host_rules(name)


def _make_getaddrinfo(inst: _Installation, original: Callable[..., Any]) -> Callable[..., Any]:
    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        policy = inst.policy()
        if policy is None or len(args) > len(_GAI_PARAMS):
            return original(*args, **kwargs)
        bound = dict(zip(_GAI_PARAMS, args, strict=False))
        if any(k not in _GAI_PARAMS or k in bound for k in kwargs):
            return original(*args, **kwargs)
        bound.update(kwargs)
        if "host" not in bound or "port" not in bound:
            return original(*args, **kwargs)
        try:
            flags = operator.index(bound.get("flags", 0))
        except TypeError:
            return original(*args, **kwargs)
        raw_host = bound["host"]
        if raw_host is None or flags & _AI_NUMERICHOST:
            return original(*args, **kwargs)
        host = _read_host(raw_host, idna_always=True, bytearray_ok=False, cut_nul=True)
        if host is None or host.text == "" or _parse_ip(host.text) is not None:
            return original(*args, **kwargs)
        rules = _judge_name_lookup(inst, policy, "getaddrinfo", host, _port_number(bound["port"]))
        result = original(*args, **kwargs)
        if rules:
            policy._learn(_addresses_of(result), rules)
        return result

    return getaddrinfo


def _make_gethostbyname(
    inst: _Installation, original: Callable[..., Any], op: str
) -> Callable[..., Any]:
    # gethostbyname and gethostbyname_ex: one host argument, read by setipaddr(AF_INET)
    def hook(*args: Any, **kwargs: Any) -> Any:
        policy = inst.policy()
        if policy is None or len(args) != 1 or kwargs:
            return original(*args, **kwargs)
        host = _read_host(args[0], idna_always=True)
        if host is None:
            return original(*args)
        if _parse_setipaddr(host.text, _AF_INET) is not None:  # not a lookup
            return original(host.value)
        rules = _judge_name_lookup(inst, policy, op, host, None)
        result = original(host.value)
        if rules:
            if op == "gethostbyname":
                policy._learn(_addresses_of_texts([result]), rules)
            elif isinstance(result, tuple) and len(result) == 3:
                policy._learn(_addresses_of_texts(result[2]), rules)
        return result

    return hook


def _make_gethostbyaddr(inst: _Installation, original: Callable[..., Any]) -> Callable[..., Any]:
    def gethostbyaddr(*args: Any, **kwargs: Any) -> Any:
        policy = inst.policy()
        if policy is None or len(args) != 1 or kwargs:
            return original(*args, **kwargs)
        host = _read_host(args[0], idna_always=True)
        if host is None:
            return original(*args)
        ip = _parse_setipaddr(host.text, 0)
        if ip is None:  # a name: CPython looks it up before the reverse lookup
            _judge_name_lookup(inst, policy, "gethostbyaddr", host, None)
        elif not policy._reverse_allowed(ip):
            inst.deny("gethostbyaddr", 0, ip.text, None)
        return original(host.value)

    return gethostbyaddr


def _make_getnameinfo(inst: _Installation, original: Callable[..., Any]) -> Callable[..., Any]:
    def getnameinfo(*args: Any, **kwargs: Any) -> Any:
        policy = inst.policy()
        if policy is None or len(args) != 2 or kwargs:
            return original(*args, **kwargs)
        sockaddr, flags = args
        try:
            flags = operator.index(flags)
        except TypeError:
            return original(*args)
        if flags & _NI_NUMERICHOST:
            return original(sockaddr, flags)
        # CPython parses the host with AI_NUMERICHOST: a name is an error, not a lookup.
        ip = _ip_of_sockaddr(sockaddr) if isinstance(sockaddr, tuple) else None
        if ip is not None and not policy._reverse_allowed(ip):
            inst.deny("getnameinfo", 0, ip.text, None)
        return original(sockaddr, flags)

    return getnameinfo


def _make_dns_hook(
    inst: _Installation, attr: str, original: Callable[..., Any]
) -> Callable[..., Any]:
    hook: Callable[..., Any]
    if attr == "getaddrinfo":
        hook = _make_getaddrinfo(inst, original)
    elif attr in ("gethostbyname", "gethostbyname_ex"):
        hook = _make_gethostbyname(inst, original, attr)
    elif attr == "gethostbyaddr":
        hook = _make_gethostbyaddr(inst, original)
    else:
        hook = _make_getnameinfo(inst, original)
    hook.__name__ = hook.__qualname__ = attr
    hook.__doc__ = getattr(original, "__doc__", None)
    return hook


def _patch(inst: _Installation, owner: Any, attr: str, value: object) -> None:
    inst.saved.append((owner, attr, owner.__dict__.get(attr, _ABSENT)))
    setattr(owner, attr, value)


def install(callback: DenyCallback) -> None:
    """Install the socket and DNS hooks; ``callback(op, family, host, port)`` on denial.

    RuntimeError if the hooks are already installed.
    """
    if not callable(callback):
        raise TypeError("callback must be callable")
    with _state.lock:
        if _state.installation is not None:
            raise RuntimeError("netguard hooks are already installed")
        inst = _Installation(callback)
        try:
            for attr, hook in _make_socket_hooks(inst).items():
                _patch(inst, socket.socket, attr, hook)
            for module, names in (
                (_socket, ("getaddrinfo", *_SOCKET_DNS)),
                (socket, _SOCKET_DNS),
            ):
                for attr in names:
                    original = module.__dict__.get(attr, _ABSENT)
                    if original is not _ABSENT:
                        _patch(inst, module, attr, _make_dns_hook(inst, attr, original))
        except BaseException:
            _restore(inst)
            raise
        _state.installation = inst


def _restore(inst: _Installation) -> None:
    inst.live = False
    for owner, attr, old in reversed(inst.saved):
        if old is _ABSENT:
            if attr in vars(owner):
                delattr(owner, attr)
        else:
            setattr(owner, attr, old)
    inst.saved.clear()


def uninstall() -> None:
    """Restore every patched attribute exactly; no-op when not installed."""
    with _state.lock:
        inst = _state.installation
        if inst is None:
            return
        _state.installation = None
        _state.top, _state.base = None, (None, False)
        _state.aim = _state.base_owner = None
        _state.base_marked = False
        _state.update()
        _restore(inst)


def is_installed() -> bool:
    """Are the hooks installed?"""
    return _state.installation is not None


def _level(policy: Policy | None, strict: bool) -> tuple[Policy | None, bool]:
    if policy is not None and not isinstance(policy, Policy):
        raise TypeError(f"policy must be a Policy or None, not {type(policy).__name__}")
    return policy, bool(strict) and policy is not None


def activate(policy: Policy | None, strict: bool) -> None:
    """Make ``policy`` the active one (``None``: no checks at all): the guard stack's
    level, which holds until :func:`deactivate`, whatever the base.

    ``strict`` is only recorded: the audit-hook backstop exists in the C core only.
    """
    level = _level(policy, strict)
    with _state.lock:
        _state.top = level
        _state.update()


def deactivate() -> None:
    """End the guard stack's level: the base's policy (:func:`activate_base`) holds."""
    with _state.lock:
        _state.top = None
        _state.update()


def activate_base(policy: Policy | None, strict: bool) -> None:
    """Set the base level: the policy that holds while the stack's level is not set."""
    level = _level(policy, strict)
    with _state.lock:
        _state.base = level
        _state.update()


def active() -> Policy | None:
    """The active policy, or ``None``."""
    return _state.policy


# The base switch: the pytest plugin aims it once per test and starts and ends each phase
# with one call each. The C core does there what the Python side otherwise would. Nothing
# reads the owner's attributes: a denial during the phase (_Installation.deny) or
# mark_base() is what makes a phase worth reporting.


def aim_base(item: object, owner: Any, policy: Policy | None, strict: bool, quick: bool) -> None:
    """Aim the base switch at the phases of ``item`` (compared by identity): each phase
    started by :func:`start_base` (or, when ``quick``, by :func:`enter_base`) sets the
    base level to ``policy`` and ``strict`` as :func:`activate_base` would, and makes
    ``owner`` (what the caller records the phase's violations on) the running phase's
    owner. ``owner=None`` forgets the aim."""
    quick = bool(quick)
    level = _level(policy, strict)
    with _state.lock:
        _state.aim = None if owner is None else (item, owner, *level, quick)


def _start(aim: tuple[object, Any, Policy | None, bool, bool]) -> None:
    with _state.lock:
        _state.base_owner = aim[1]
        _state.base_marked = False
        _state.base = (aim[2], aim[3])
        _state.update()


def enter_base(item: object) -> bool:
    """Start a phase of ``item`` as :func:`start_base` does if it is the aimed test and
    the aim was quick, and return True; else change nothing and return False."""
    aim = _state.aim
    if aim is None or not aim[4] or aim[0] is not item:
        return False
    _start(aim)
    return True


def start_base() -> None:
    """Start a phase of the aimed test: the aimed policy becomes the base level, the owner
    the running phase's (replacing a phase that never ended)."""
    aim = _state.aim
    if aim is None:
        raise RuntimeError("start_base(): nothing aimed (aim_base() first)")
    _start(aim)


def mark_base() -> None:
    """Say that the running phase has something to report (violations recorded without a
    denial of these hooks), so that :func:`leave_base` returns its owner."""
    with _state.lock:
        if _state.base_owner is not None:
            _state.base_marked = True


def leave_base() -> Any:
    """End the running phase (the base level is cleared). Return its owner when Python has
    something to do (a denial during the phase, :func:`mark_base`, an aim that was not
    quick or has changed), else None; None too when no phase runs."""
    with _state.lock:
        owner = _state.base_owner
        if owner is None:
            return None
        aim = _state.aim
        report = _state.base_marked or aim is None or not aim[4] or aim[1] is not owner
        _state.base_owner = None
        _state.base_marked = False
        _state.base = (None, False)
        _state.update()
    return owner if report else None


def base_owner() -> Any:
    """The owner of the running phase, or None between phases."""
    return _state.base_owner
