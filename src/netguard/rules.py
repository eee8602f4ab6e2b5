"""Rule grammar: rule text -> normalised :class:`Rule` values.

One grammar everywhere (command line, environment, ini, allowlist files, markers)::

    IP            192.0.2.1              IP:PORTS            192.0.2.1:443
    CIDR          10.0.0.0/8             CIDR:PORTS          10.0.0.0/8:80,443
    IPv6          2001:db8::1            IPv6-CIDR           2001:db8::/32
    [IPv6]        [2001:db8::1]          [IPv6]:PORTS        [2001:db8::1]:443
                                         [IPv6-CIDR]:PORTS   [2001:db8::/32]:8000-8100
    HOST          api.example.com        HOST:PORTS          *.example.com:443
    unix:PATH     unix:/run/*.sock       unix:@abstract-name

PORTS is a comma-separated list of ports and ``lo-hi`` ranges (``80,443,8000-8100``).

Normalisation: IPv4 is a strict dotted quad (``127.1``, ``0x7f.0.0.1`` and leading zeros are
errors, since the kernel reads them differently from how they look); an IPv6 scope id is
accepted and dropped; an IPv6 block inside ``::ffff:0:0/96`` becomes the IPv4 block it
denotes; host names are lower-cased without their trailing dot; ``0-65535`` is the same as
no port list. Everything after ``unix:`` (any case) is the path, so ``unix:`` rules take no
ports.

Everything here is a pure function of its arguments. Errors are :class:`RuleError`, which
names the source of the rule, the offending text and the reason. The hot path avoids
:mod:`ipaddress` (``socket.inet_pton`` plus ``int.from_bytes`` is several times faster);
the error paths may take their time to explain what is wrong.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from typing import Any

from netguard._record import Record, init

__all__ = ["Rule", "RuleError", "format_ports", "parse_ports", "parse_rule", "parse_rules"]

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop
_from_bytes = int.from_bytes

_MAX_PORT = 65535
_V4_MAPPED = 0xFFFF  # first >> 32 of an address in ::ffff:0:0/96
_V4_MASK = 0xFFFFFFFF

_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_LABEL_CHARS = _HOST_CHARS - {"."}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

# The syntax checks below are written without regular expressions: compiling the three
# patterns they replace took 1.35M instructions at every start of a strict session
# (tests/test_rules.py checks them against those patterns).


def _has_space(text: str) -> bool:
    """Whether ``text`` holds whitespace (what ``str.isspace`` and ``\\s`` call that)."""
    return any(map(str.isspace, text))


def _host_match(name: str) -> bool:
    """Whether ``name`` is a syntactically valid host name: an optional ``*.``, then
    dot-separated labels of 1 to 63 letters, digits, '-' and '_', and at most one trailing
    dot. The length of the whole name is checked separately."""
    if name[:2] == "*.":
        name = name[2:]
    if name[-1:] == ".":
        name = name[:-1]
    labels = name.split(".")
    return all(0 < len(label) <= 63 and _LABEL_CHARS.issuperset(label) for label in labels)


def _numeric_label(label: str) -> bool:
    """Whether the kernel's inet_aton() reads ``label`` as a number: decimal or octal
    digits, or hexadecimal after ``0x``."""
    if label[:2] in ("0x", "0X"):
        return _HEX_DIGITS.issuperset(label[2:])
    return label.isascii() and label.isdigit()


# An IPv6 scope id: an interface name or index (compiled on first use, as the next one).
_SCOPE = r"[A-Za-z0-9_.-]+"
# A port list glued to the end of a unix path ("unix:/x.sock:80").
_UNIX_PORT_SUFFIX = r":[0-9][0-9,-]*\Z"


class RuleError(ValueError):
    """A rule that cannot be parsed.

    ``str(err)`` is ``"{source}: invalid rule {text!r}: {reason}"``. The attributes
    survive pickling (so the error can cross pytest-xdist workers).
    """

    source: str
    text: str
    reason: str

    def __init__(self, source: str, text: str, reason: str) -> None:
        super().__init__(f"{source}: invalid rule {text!r}: {reason}")
        self.source = source
        self.text = text
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduction would call RuleError(message), losing the fields;
        # __dict__ is carried as state so notes added with add_note() survive too.
        return (type(self), (self.source, self.text, self.reason), self.__dict__)


class Rule(Record):
    """One normalised rule.

    ``kind`` is ``"ip"``, ``"host"`` or ``"unix"``. ``ip`` rules cover the addresses
    ``first..last`` (integers) of ``family`` 4 or 6; ``host`` rules a lower-case name
    (``*.example.com`` covers every name ending in ``.example.com``); ``unix`` rules a
    path glob (abstract names start with ``@``). ``ports`` is ``None`` for any port, else
    sorted, disjoint, merged ``(lo, hi)`` ranges. ``str(rule)`` is the canonical text,
    which parses back to an equal rule. Rules are frozen and compare by every field,
    ``text`` and ``source`` included; :meth:`~netguard._record.Record.replace` copies one.
    """

    __slots__ = (
        "kind", "text", "source", "name", "family", "first", "last", "ports", "host", "path"
    )
    kind: str
    text: str
    source: str
    name: str | None
    family: int
    first: int
    last: int
    ports: tuple[tuple[int, int], ...] | None
    host: str
    path: str

    def __init__(
        self,
        kind: str,
        text: str,
        source: str,
        name: str | None = None,
        family: int = 0,
        first: int = 0,
        last: int = 0,
        ports: tuple[tuple[int, int], ...] | None = None,
        host: str = "",
        path: str = "",
    ) -> None:
        init(self, "kind", kind)
        init(self, "text", text)
        init(self, "source", source)
        init(self, "name", name)
        init(self, "family", family)
        init(self, "first", first)
        init(self, "last", last)
        init(self, "ports", ports)
        init(self, "host", host)
        init(self, "path", path)

    def __str__(self) -> str:
        kind = self.kind
        if kind == "unix":
            return "unix:" + self.path
        if kind == "host":
            body = self.host
        else:
            body = _format_range(self.family, self.first, self.last)
            if self.family == 6 and self.ports:
                body = f"[{body}]"
        if self.ports:
            return f"{body}:{format_ports(self.ports)}"
        return body


def format_ports(ports: Iterable[tuple[int, int]] | None) -> str:
    """Return the canonical text of a port set: ``"80,443,8000-8100"``; ``""`` for ``None``."""
    if ports is None:
        return ""
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ports)


def parse_ports(
    text: str, *, source: str, rule_text: str | None = None
) -> tuple[tuple[int, int], ...]:
    """Parse a port list (``80``, ``80,443``, ``8000-8100``, ``80,8000-8100``).

    Returns sorted, disjoint ``(lo, hi)`` ranges, overlapping and adjacent ranges merged.
    Errors name ``rule_text`` (the whole rule) when given, else ``text``.
    """
    shown = text.strip() if rule_text is None else rule_text
    text = text.strip()
    if not text:
        raise RuleError(source, shown, "empty port list")
    if _has_space(text):
        raise RuleError(source, shown, "whitespace inside the port list")
    ranges: list[tuple[int, int]] = []
    for item in text.split(","):
        lo_text, dash, hi_text = item.partition("-")
        lo = _port(lo_text, item, source, shown)
        if dash:
            hi = _port(hi_text, item, source, shown)
            if hi < lo:
                raise RuleError(
                    source, shown, f"port range {item} is reversed; did you mean {hi}-{lo}?"
                )
        else:
            hi = lo
        ranges.append((lo, hi))
    if len(ranges) == 1:
        return (ranges[0],)
    ranges.sort()
    merged = [ranges[0]]
    for lo, hi in ranges[1:]:
        last_lo, last_hi = merged[-1]
        if lo <= last_hi + 1:
            if hi > last_hi:
                merged[-1] = (last_lo, hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


def parse_rule(text: str, *, source: str, name: str | None = None) -> Rule:
    """Parse one rule; ``source`` names where it came from (flag, variable, file:line).

    Raises :class:`RuleError` (naming ``source``, the text and the reason) for anything
    that is not a valid rule, and :class:`TypeError` when ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"{source}: a rule must be a str, not {type(text).__name__}: {text!r}")
    s = text.strip()
    if not s:
        raise RuleError(source, text, "empty rule")
    if _has_space(s):
        raise RuleError(source, s, "whitespace inside a rule")
    c0 = s[0]
    if (c0 == "u" or c0 == "U") and s[:5].lower() == "unix:":
        return _parse_unix(s, source, name)
    if c0 == "[":
        return _parse_bracketed(s, source, name)
    ncolons = s.count(":")
    ports: tuple[tuple[int, int], ...] | None = None
    if ncolons:
        if "://" in s:
            raise RuleError(source, s, "a URL is not a rule; write HOST or HOST:PORTS")
        if ncolons > 1:
            return _parse_bare_ipv6(s, source, name)
        head, _, port_text = s.partition(":")
        if not head:
            raise RuleError(source, s, "empty host before ':'")
        if not port_text:
            raise RuleError(source, s, "empty port list after ':'")
        ports = parse_ports(port_text, source=source, rule_text=s)
        if ports == ((0, _MAX_PORT),):
            ports = None
    else:
        head = s
    if "/" in head:
        addr_text, _, prefix_text = head.partition("/")
        try:
            addr = _from_bytes(_inet_pton(_AF_INET, addr_text), "big")
        except (OSError, ValueError):
            raise RuleError(source, s, _not_ipv4_before_slash(addr_text)) from None
        plen = _prefix(prefix_text, 32, s, source)
        first, last = _block(4, addr, plen, s, source)
        return Rule("ip", s, source, name, 4, first, last, ports)
    try:
        addr = _from_bytes(_inet_pton(_AF_INET, head), "big")
    except (OSError, ValueError):
        pass
    else:
        return Rule("ip", s, source, name, 4, addr, addr, ports)
    return Rule("host", s, source, name, ports=ports, host=_host(head, s, source))


def parse_rules(texts: Iterable[str], *, source: str) -> list[Rule]:
    """Parse every rule of ``texts`` (all from ``source``); the first bad one raises."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"{source}: expected an iterable of rule strings, not a single "
            f"{type(texts).__name__}: {texts!r}"
        )
    return [parse_rule(t, source=source) for t in texts]


# --------------------------------------------------------------------------- helpers


def _port(digits: str, item: str, source: str, shown: str) -> int:
    if digits.isdigit() and digits.isascii():
        port = int(digits)
        if port > _MAX_PORT:
            raise RuleError(source, shown, f"port {port} is out of range 0-{_MAX_PORT}")
        return port
    if not item:
        raise RuleError(source, shown, "empty item in port list")
    if item.count("-") > 1:
        raise RuleError(source, shown, f"port range {item!r} has more than one '-'")
    if not digits:
        raise RuleError(source, shown, f"incomplete port range {item!r}")
    if digits.isalpha():
        raise RuleError(
            source, shown, f"port {digits!r} is not a number (service names are not supported)"
        )
    raise RuleError(source, shown, f"port {digits!r} is not a number")


def _prefix(text: str, bits: int, rule: str, source: str) -> int:
    if text.isdigit() and text.isascii():
        plen = int(text)
        if plen > bits:
            raise RuleError(source, rule, f"prefix length {plen} is out of range 0-{bits}")
        return plen
    if not text:
        raise RuleError(source, rule, "missing prefix length after '/'")
    reason = f"prefix length {text!r} is not a number"
    if bits == 32:
        mask = _netmask_prefix(text)
        if mask is not None:
            reason += f"; did you mean /{mask}?"
    raise RuleError(source, rule, reason)


def _netmask_prefix(text: str) -> int | None:
    """The prefix length a dotted netmask stands for, or None."""
    try:
        mask = _from_bytes(_inet_pton(_AF_INET, text), "big")
    except (OSError, ValueError):
        return None
    inverted = mask ^ _V4_MASK
    if inverted & (inverted + 1):  # not of the form 1...10...0
        return None
    return 32 - inverted.bit_length()


def _block(family: int, addr: int, plen: int, rule: str, source: str) -> tuple[int, int]:
    """First and last address of addr/plen; host bits set is an error."""
    host_mask = (1 << ((32 if family == 4 else 128) - plen)) - 1
    if addr & host_mask:
        net = _format_addr(family, addr & ~host_mask)
        raise RuleError(source, rule, f"host bits set; did you mean {net}/{plen}?")
    return addr, addr | host_mask


def _format_addr(family: int, addr: int) -> str:
    if family == 4:
        return _inet_ntop(_AF_INET, addr.to_bytes(4, "big"))
    return _inet_ntop(_AF_INET6, addr.to_bytes(16, "big"))


def _format_range(family: int, first: int, last: int) -> str:
    bits = 32 if family == 4 else 128
    size = last - first + 1
    if size <= 0 or size & (size - 1) or first & (size - 1):
        # Not a CIDR block; only a hand-built Rule can be like this.
        return f"{_format_addr(family, first)}-{_format_addr(family, last)}"
    plen = bits - (size.bit_length() - 1)
    if plen == bits:
        return _format_addr(family, first)
    return f"{_format_addr(family, first)}/{plen}"


def _parse_unix(s: str, source: str, name: str | None) -> Rule:
    path = s[5:]
    if not path:
        raise RuleError(source, s, "empty unix socket path")
    if path == "@":
        raise RuleError(source, s, "empty abstract socket name after '@'")
    if "\x00" in path:
        raise RuleError(source, s, "NUL character in unix socket path (write abstract as @name)")
    if re.search(_UNIX_PORT_SUFFIX, path, re.ASCII):
        raise RuleError(
            source, s, "unix rules take no ports (for a literal ':' in a path, glob it as [:])"
        )
    return Rule("unix", s, source, name, path=path)


def _parse_bracketed(s: str, source: str, name: str | None) -> Rule:
    close = s.find("]")
    if close < 0:
        raise RuleError(source, s, "missing ']' after the IPv6 address")
    inner = s[1:close]
    rest = s[close + 1 :]
    if not inner:
        raise RuleError(source, s, "empty brackets: expected an IPv6 address inside")
    family, first, last = _ipv6_block(inner, s, source, bracketed=True)
    ports: tuple[tuple[int, int], ...] | None = None
    if rest:
        if rest[0] != ":":
            reason = f"unexpected {rest!r} after ']'"
            if rest[0] == "/":
                reason += "; put the prefix length inside the brackets: [ADDR/N]:PORTS"
            else:
                reason += "; expected ':PORTS' or nothing"
            raise RuleError(source, s, reason)
        if len(rest) == 1:
            raise RuleError(source, s, "empty port list after ':'")
        ports = parse_ports(rest[1:], source=source, rule_text=s)
        if ports == ((0, _MAX_PORT),):
            ports = None
    return Rule("ip", s, source, name, family, first, last, ports)


def _parse_bare_ipv6(s: str, source: str, name: str | None) -> Rule:
    family, first, last = _ipv6_block(s, s, source, bracketed=False)
    return Rule("ip", s, source, name, family, first, last, None)


def _ipv6_block(text: str, rule: str, source: str, *, bracketed: bool) -> tuple[int, int, int]:
    """Parse ``ADDR[%SCOPE][/N]`` as IPv6; returns (family, first, last).

    A block inside ::ffff:0:0/96 comes back as the IPv4 block it denotes.
    """
    addr_text, slash, prefix_text = text.partition("/")
    addr_text, pct, scope = addr_text.partition("%")
    try:
        addr = _from_bytes(_inet_pton(_AF_INET6, addr_text), "big")
    except (OSError, ValueError):
        raise RuleError(source, rule, _not_ipv6(text, rule, bracketed)) from None
    if pct and not re.fullmatch(_SCOPE, scope, re.ASCII):
        reason = "empty IPv6 scope id after '%'" if not scope else f"bad scope id {scope!r}"
        if not bracketed and ":" in scope:
            reason += "; to give ports with an IPv6 address use [ADDR]:PORTS"
        raise RuleError(source, rule, reason)
    plen = _prefix(prefix_text, 128, rule, source) if slash else 128
    first, last = _block(6, addr, plen, rule, source)
    if plen >= 96 and first >> 32 == _V4_MAPPED:
        return 4, first & _V4_MASK, last & _V4_MASK
    return 6, first, last


def _is_ipv4(text: str) -> bool:
    try:
        _inet_pton(_AF_INET, text)
    except (OSError, ValueError):
        return False
    return True


def _not_ipv6(text: str, rule: str, bracketed: bool) -> str:
    """Explain why ``text`` (ADDR[%SCOPE][/N]) is not an IPv6 address."""
    addr_text = text.partition("/")[0].partition("%")[0]
    if bracketed:
        if _is_ipv4(addr_text):
            unbracketed = text + rule[rule.index("]") + 1 :]
            return f"brackets are for IPv6 addresses; did you mean {unbracketed}?"
        return f"not a valid IPv6 address: {addr_text!r}"
    if "[" in rule or "]" in rule:
        return "unbalanced brackets: write [IPv6]:PORTS with '[' first"
    head = rule.partition(":")[0]
    if head and (not all(c in "0123456789abcdefABCDEF" for c in head) or len(head) > 4):
        return (
            "more than one ':'; separate ports with ',' (HOST:80,443), "
            "and write IPv6 addresses with ports as [ADDR]:PORTS"
        )
    addr_part, _, tail = rule.rpartition(":")
    if tail.isdigit() and tail.isascii():
        try:
            _inet_pton(_AF_INET6, addr_part.partition("%")[0])
        except (OSError, ValueError):
            pass
        else:
            return (
                "not a valid IPv6 address; to give ports with an IPv6 address, "
                f"write [{addr_part}]:{tail}"
            )
    return "not a valid IPv6 address"


def _not_ipv4_before_slash(addr_text: str) -> str:
    if not addr_text:
        return "missing address before '/'"
    labels = addr_text.split(".")
    if all(_numeric_label(label) for label in labels):
        return _ipv4_reason(addr_text)
    return "a prefix length needs an IP address, not a host name"


def _kernel_reading(text: str) -> str | None:
    """What inet_aton() -- and so CPython and the kernel -- make of ``text``, if anything."""
    try:
        return socket.inet_ntoa(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


def _ipv4_reason(text: str) -> str:
    """Explain why a numeric-looking ``text`` is not a strict dotted-quad IPv4 address."""
    parts = text.split(".")
    kernel = _kernel_reading(text)
    reason = "not a valid IPv4 address"
    if len(parts) != 4:
        reason += ": expected four dotted decimal numbers"
    else:
        for part in parts:
            if not part:
                reason += ": empty number between dots"
                break
            if not (part.isdigit() and part.isascii()):
                reason += f": {part!r} is not a decimal number (no hex in rules)"
                break
            if int(part) > 255:
                reason += f": {part} is greater than 255"
                break
            if len(part) > 1 and part[0] == "0":
                decimal = ".".join(str(int(p)) for p in parts)
                reason += f": leading zeros are not allowed (in {part!r})"
                if kernel is not None and kernel != decimal:
                    reason += f"; the kernel reads them as octal, {kernel}"
                return reason + f"; did you mean {decimal}?"
    if kernel is not None:
        reason += f"; the kernel would read it as {kernel}"
        if len(parts) == 1 and parts[0].isdigit() and int(parts[0]) <= _MAX_PORT:
            reason += "; a port alone is not a rule, give an address: 0.0.0.0/0:PORT"
        else:
            reason += f"; did you mean {kernel}?"
    return reason


def _host(head: str, rule: str, source: str) -> str:
    """Validate and normalise a host name (``head`` of ``rule``)."""
    if not _host_match(head):
        raise RuleError(source, rule, _host_reason(head))
    host = head[:-1] if head[-1] == "." else head
    if len(host) > 253:
        raise RuleError(source, rule, f"host name is longer than 253 characters ({len(host)})")
    last_label = host.rpartition(".")[2]
    if last_label[0] in "0123456789" and _numeric_label(last_label):
        labels = host.split(".")
        wildcard = labels[0] == "*"
        if wildcard and all(_numeric_label(label) for label in labels[1:]):
            raise RuleError(source, rule, "a wildcard needs a domain name, not an address")
        if not wildcard and all(_numeric_label(label) for label in labels):
            raise RuleError(source, rule, _ipv4_reason(head))
        if last_label.isdigit():
            raise RuleError(
                source,
                rule,
                f"not a valid host name: the top-level label {last_label!r} is all digits",
            )
    return host.lower()


def _host_reason(head: str) -> str:
    """Explain why ``head`` is not a valid host name (it failed the pattern)."""
    if head in (".", "*", "*."):
        if head == ".":
            return "empty host name"
        return "a wildcard needs a domain: write *.example.com"
    star = head.find("*")
    if star >= 0 and (star > 0 or not head.startswith("*.") or "*" in head[1:]):
        return "'*' is only allowed as the whole first label, as in *.example.com"
    for c in head:
        if c != "*" and c not in _HOST_CHARS:
            reason = f"invalid character {c!r} in host name"
            if not c.isascii():
                reason += "; write internationalised names in their xn-- (punycode) form"
            return reason
    body = head[2:] if head.startswith("*.") else head
    if body.endswith("."):
        body = body[:-1]
    for label in body.split("."):
        if not label:
            return "empty label in host name"
        if len(label) > 63:
            return f"label {label[:20] + '...'!r} in host name is longer than 63 characters"
    return "not a valid host name"  # pragma: no cover - the checks above are exhaustive
