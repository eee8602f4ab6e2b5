"""Test sizes x rules -> compiled policies, built once per session.

A test's policy is made of layers, each a list of rules:

1. its **size** (``small``, ``medium``, ``large``, ``xlarge``: the built-in rules below);
2. the **config rules** (``--netguard-allow``, ``NETGUARD_ALLOW``, ``netguard_allow``, the
   allowlist file), for every size but ``small``;
3. its **extra rules**, from ``@pytest.mark.netguard(allow=[...])``, for every size;
4. ``@pytest.mark.allow_network``: everything.

=========  ===============================================================================
size       built in
=========  ===============================================================================
small      nothing but a lookup of the name ``localhost`` (the core's ``DNS_LOCALHOST``
           flag, which allows no connection)
medium     ``127.0.0.0/8``, ``::1``, ``unix:*``, ``localhost``, ``*.localhost``
large      everything (a policy compiled with ``allow_all``)
xlarge     everything
=========  ===============================================================================

The core also allows, in every policy, reverse lookups of loopback addresses.

The core normalises addresses before judging them (v4-mapped IPv6 as IPv4, ``0.0.0.0`` and
``::`` as loopback), so ``127.0.0.0/8`` and ``::1`` are all the loopback rules medium
needs. AF_NETLINK and every family but AF_INET, AF_INET6 and AF_UNIX are never judged.

:class:`PolicySet` compiles each distinct combination once and hands out
:class:`CompiledPolicyInfo` objects: the compiled policy (what the hooks switch to by
pointer), and the rules it was made from, with their sources, so that a report can say
which rule allowed an event (:meth:`CompiledPolicyInfo.matching_rule`, pure Python, for the
report path only).

The marker helpers (:func:`marker_data`, :func:`size_from_markers`,
:func:`rules_from_marker`, :func:`rules_from_markers`, :func:`resolve_markers`) are pure
functions over plain data: ``(level, name, args, kwargs)`` tuples, closest level first.
"""

from __future__ import annotations

import fnmatch
import os
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from netguard import _impl
from netguard._impl import Impl, Policy
from netguard._record import Record, init
from netguard.rules import Rule, parse_rule

__all__ = [
    "DEFAULT_SIZE",
    "SIZES",
    "CompiledPolicyInfo",
    "MarkerData",
    "MarkerError",
    "PolicySet",
    "ResolvedMarkers",
    "allow_network_from_markers",
    "marker_data",
    "resolve_markers",
    "rules_from_marker",
    "rules_from_markers",
    "MarkerCache",
    "simple_size",
    "size_from_markers",
]

SIZES: Final = ("small", "medium", "large", "xlarge")
DEFAULT_SIZE: Final = "small"

#: Sizes the config rules extend (``small`` stays hermetic).
_CONFIG_SIZES: Final = frozenset({"medium", "large", "xlarge"})
#: Sizes whose policy allows everything.
_ALLOW_ALL_SIZES: Final = frozenset({"large", "xlarge"})

_AF_INET: Final = int(socket.AF_INET)
_AF_INET6: Final = int(socket.AF_INET6)
_AF_UNIX: Final = int(getattr(socket, "AF_UNIX", 1))

#: Operations that look a name up, whatever port they name (the port is not judged).
_LOOKUP_OPS: Final = frozenset({"getaddrinfo", "gethostbyname", "gethostbyname_ex"})

_V4_MASK: Final = 0xFFFFFFFF
_V4_MAPPED: Final = 0xFFFF  # address >> 32 of ::ffff:0:0/96
_V4_LOOPBACK: Final = 0x7F000001
# Characters of an IPv4 address in some form inet_aton() reads (127.1, 0x7f.1, 2130706433).
_IPV4_FORM_CHARS: Final = frozenset("0123456789abcdefABCDEFxX.")

_SIZE_CHOICES: Final = "small, medium, large or xlarge"
_NETGUARD_MARKER: Final = "netguard"
_ALLOW_NETWORK_MARKER: Final = "allow_network"
_NETGUARD_KWARGS: Final = ("allow",)

MarkerData = tuple[str, str, tuple[Any, ...], Mapping[str, Any]]
"""One marker as plain data: ``(level, name, args, kwargs)``.

``level`` names where the marker was found (a node id; see :func:`marker_data`); markers
come closest level first, as pytest's ``item.iter_markers_with_node()`` yields them.
"""


# --------------------------------------------------------------------------- roles

# How matching_rule() reads a rule of CompiledPolicyInfo.rules. Only _RULE rules are
# compiled; the others describe what the core allows through its flags.
_RULE: Final = 0  # an ordinary rule (docs/internals.md)
_LOOKUP: Final = 1  # a forward lookup of exactly this name: the DNS_LOCALHOST flag
_REVERSE: Final = 2  # a reverse lookup of an address in this block: the core, every size
_EVERYTHING: Final = 3  # ALLOW_ALL: every destination of this rule's kind (and family)


def _builtin(text: str, source: str, name: str) -> Rule:
    return parse_rule(text, source=source, name=name)


def _everything(source: str) -> tuple[tuple[Rule, int], ...]:
    """The descriptive rules of an allow-all policy, one per kind of destination.

    They are never compiled (the policy is compiled with ``allow_all``). The name rule
    ``*`` (any name, forward or reverse, any port) exists only here: it is not part of
    the rule grammar.
    """
    return (
        (_builtin("0.0.0.0/0", source, "any IPv4 address"), _EVERYTHING),
        (_builtin("::/0", source, "any IPv6 address"), _EVERYTHING),
        (_builtin("unix:*", source, "any AF_UNIX path"), _EVERYTHING),
        (Rule("host", "*", source, "any name", host="*"), _EVERYTHING),
    )


def _core_rules(source: str) -> tuple[tuple[Rule, int], ...]:
    """What the core allows in every policy: reverse lookups of loopback addresses."""
    name = "reverse lookups of loopback addresses"
    return (
        (_builtin("127.0.0.0/8", source, name), _REVERSE),
        (_builtin("::1", source, name), _REVERSE),
    )


def _size_rules(size: str) -> tuple[tuple[Rule, int], ...]:
    source = f"size {size}"
    if size == "small":
        return (
            (_builtin("localhost", source, "lookups of localhost (no connection)"), _LOOKUP),
            *_core_rules(source),
        )
    if size == "medium":
        return (
            (_builtin("127.0.0.0/8", source, "IPv4 loopback"), _RULE),
            (_builtin("::1", source, "IPv6 loopback"), _RULE),
            (_builtin("unix:*", source, "AF_UNIX sockets"), _RULE),
            (_builtin("localhost", source, "the name localhost"), _RULE),
            (_builtin("*.localhost", source, "names under .localhost"), _RULE),
            *_core_rules(source),
        )
    return _everything(source)


_SIZE_RULES: Final = {size: _size_rules(size) for size in SIZES}
_ALLOW_NETWORK_RULES: Final = _everything("@pytest.mark.allow_network")


# --------------------------------------------------------------------------- matching


def _parse_address(text: str) -> tuple[int, int] | None:
    """``(4 | 6, value)`` of a numeric host in any form the kernel reads, else ``None``."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text and _IPV4_FORM_CHARS.issuperset(text):
        try:
            return 4, int.from_bytes(socket.inet_aton(text), "big")
        except OSError:
            pass
    head = text.partition("%")[0]  # the scope id is ignored
    if ":" not in head:
        return None
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, head), "big")
    except (OSError, ValueError):
        return None
    if value >> 32 == _V4_MAPPED:
        return 4, value & _V4_MASK
    return 6, value


def _judged(address: tuple[int, int]) -> tuple[int, int]:
    """The address the core judges: the any-address of a family is its loopback."""
    family, value = address
    if value == 0:
        return (4, _V4_LOOPBACK) if family == 4 else (6, 1)
    return address


def _normal_name(host: str) -> str:
    """A name as lookups are judged: IDNA, lower-case, without one trailing dot."""
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    name = host.lower()
    return name[:-1] if name.endswith(".") else name


def _host_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


def _ports_contain(ports: tuple[tuple[int, int], ...] | None, port: int) -> bool:
    return ports is None or any(lo <= port <= hi for lo, hi in ports)


def _covers(rule: Rule, address: tuple[int, int]) -> bool:
    family, value = address
    return rule.family == family and rule.first <= value <= rule.last


# --------------------------------------------------------------------------- the info


class CompiledPolicyInfo(Record):
    """The policy of one (size, extra rules, allow_network) combination.

    ``compiled`` is the implementation's compiled policy (what ``impl.activate()`` takes);
    ``policy`` is the same object as a :class:`netguard.Policy` (what
    :func:`netguard.guard` takes). Both are shared by every combination that compiles to
    the same rules: large, xlarge and ``allow_network`` share one allow-all policy.

    ``rules`` lists every rule that makes the policy, in the order :meth:`matching_rule`
    tries them: the size's built-in rules (source ``"size medium"``, each with a name),
    the config rules (not for small), the test's extra rules, then allow_network's.
    Built-in rules that stand for what the core allows by itself (small's lookup of
    ``localhost``, reverse lookups of loopback, everything under ``allow_all``) are not
    compiled; ``compiled_rules`` is what was.
    """

    __slots__ = (
        "size", "allow_network", "extra", "rules", "compiled_rules", "compiled", "policy",
        "_entries",
    )
    _hidden = ("_entries",)
    # compared by identity: equal infos are the same object (see PolicySet.for_test)
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    size: str
    allow_network: bool
    extra: tuple[Rule, ...]
    rules: tuple[Rule, ...]
    compiled_rules: tuple[Rule, ...]
    compiled: Any
    policy: Policy
    _entries: tuple[tuple[Rule, int], ...]

    def __init__(
        self,
        size: str,
        allow_network: bool,
        extra: tuple[Rule, ...],
        rules: tuple[Rule, ...],
        compiled_rules: tuple[Rule, ...],
        compiled: Any,
        policy: Policy,
        _entries: tuple[tuple[Rule, int], ...],
    ) -> None:
        init(self, "size", size)
        init(self, "allow_network", allow_network)
        init(self, "extra", extra)
        init(self, "rules", rules)
        init(self, "compiled_rules", compiled_rules)
        init(self, "compiled", compiled)
        init(self, "policy", policy)
        init(self, "_entries", _entries)

    @property
    def allow_all(self) -> bool:
        """Whether the policy allows everything (large, xlarge, allow_network)."""
        return self.policy.allow_all

    @property
    def implementation(self) -> str:
        """The implementation that compiled the policy: ``"c"`` or ``"python"``."""
        return self.policy.implementation

    def allows(self, host: str, port: int | None = None) -> bool:
        """The compiled policy's static answer (see ``netguard.Policy.allows``)."""
        return bool(self.compiled.allows(host, port))

    def matching_rule(self, op: str, family: int, host: str, port: int | None) -> Rule | None:
        """The rule that allows this event, or ``None`` when the policy denies it.

        The arguments are those of the deny callback (``docs/internals.md``): ``family``
        ``AF_INET``/``AF_INET6`` with an address and a port; ``AF_UNIX`` with a path
        (``@name`` or a leading NUL for abstract; ``port`` is ignored); ``0`` with a name
        (a forward lookup, or a name given to ``connect``/``sendto``/``sendmsg``) or with
        an address (a reverse lookup).

        The first rule of :attr:`rules` that allows the event wins, so the answer comes
        from the first layer that allows it (size, config rules, extra rules,
        allow_network): an extra rule is named only when the size and the config rules do
        not already allow the event. For a name given to a socket
        operation, a rule that covers the name *and the port* wins over one that allows
        only the lookup (the address is then judged on its own).

        Static, like ``allows()``: addresses learned from lookups are not considered.
        Pure Python and linear in the number of rules: for reports, not for the hot path.
        ``ValueError`` for an address without a port, an empty name, or a family the core
        never judges.
        """
        entries = self._entries
        if family == _AF_UNIX:
            # An abstract name (leading NUL) is shown as @name; a path ends at a NUL.
            path = "@" + host[1:] if host.startswith("\x00") else host.partition("\x00")[0]
            encoded = os.fsencode(path)  # the core matches the file-system bytes
            for rule, role in entries:
                if rule.kind == "unix" and (
                    role == _EVERYTHING
                    or (role == _RULE and fnmatch.fnmatchcase(encoded, os.fsencode(rule.path)))
                ):
                    return rule
            return None
        if family == _AF_INET or family == _AF_INET6:
            if port is None:
                raise ValueError(f"a port is required with an address ({host!r})")
            address = _parse_address(host)
            if address is None:
                return None
            address = _judged(address)
            for rule, role in entries:
                if rule.kind != "ip" or rule.family != address[0]:
                    continue
                if role == _EVERYTHING or (
                    role == _RULE and _covers(rule, address) and _ports_contain(rule.ports, port)
                ):
                    return rule
            return None
        if family != 0:
            raise ValueError(f"address family {family} is never judged by netguard")
        address = _parse_address(host)
        if address is not None:
            return self._reverse_rule(_judged(address))
        name = _normal_name(host)
        if not name:
            raise ValueError("an empty name is not a lookup")
        return self._name_rule(name, None if op in _LOOKUP_OPS else port)

    def _reverse_rule(self, address: tuple[int, int]) -> Rule | None:
        for rule, role in self._entries:
            if role == _EVERYTHING and rule.kind == "host":
                return rule
            if role == _REVERSE and _covers(rule, address):
                return rule
        return None

    def _name_rule(self, name: str, port: int | None) -> Rule | None:
        """The rule for a name; with a port, prefer one that covers the port too."""
        lookup: Rule | None = None
        for rule, role in self._entries:
            if rule.kind != "host":
                continue
            if role == _EVERYTHING:
                return rule
            if role == _LOOKUP:
                if name == rule.host:
                    if port is None:
                        return rule
                    lookup = lookup or rule
            elif role == _RULE and _host_matches(rule.host, name):
                if port is None or _ports_contain(rule.ports, port):
                    return rule
                lookup = lookup or rule
        return lookup

    def __repr__(self) -> str:
        flags = ", allow_network" if self.allow_network else ""
        return (
            f"<CompiledPolicyInfo size={self.size!r}{flags} extra={len(self.extra)} "
            f"rules={len(self.rules)} allow_all={self.allow_all} impl={self.implementation!r}>"
        )


# --------------------------------------------------------------------------- the set


def _semantic(rule: Rule) -> tuple[Any, ...]:
    """What a rule allows, without its text, source and name."""
    return (rule.kind, rule.family, rule.first, rule.last, rule.ports, rule.host, rule.path)


def _check_rules(rules: object, what: str) -> tuple[Rule, ...]:
    if isinstance(rules, (str, bytes)):
        raise TypeError(
            f"{what} must be a sequence of netguard.rules.Rule, not a single "
            f"{type(rules).__name__}: {rules!r}"
        )
    if not isinstance(rules, Iterable):
        raise TypeError(f"{what} must be a sequence of netguard.rules.Rule, not {rules!r}")
    checked = tuple(rules)
    for rule in checked:
        if not isinstance(rule, Rule):
            raise TypeError(
                f"{what} must hold netguard.rules.Rule objects (parse rule text with "
                f"netguard.rules.parse_rule), not {type(rule).__name__}: {rule!r}"
            )
    return checked


def _check_size(size: object, what: str = "test size") -> str:
    if not isinstance(size, str) or size not in SIZES:
        raise ValueError(f"unknown {what} {size!r}: expected {_SIZE_CHOICES}")
    return size


_InfoKey = tuple[str, tuple[Rule, ...], bool]


class PolicySet:
    """Every policy of a session: ``config_rules`` combined with sizes and markers.

    ``config_rules`` are the session's rules (already parsed, with their sources); they
    extend medium, large and xlarge. ``impl`` is the implementation that compiles every
    policy of the set; by default the current one, chosen on first use (so building a
    set loads nothing).

    :meth:`for_test` returns the same :class:`CompiledPolicyInfo` for the same
    arguments, and compiles only when the rules differ in what they allow from every
    policy compiled so far: extra rules that differ only in source share one compiled
    policy, and large, xlarge and ``allow_network`` share one allow-all policy. A
    session of thousands of tests compiles a handful.
    """

    __slots__ = ("_compiled", "_compiles", "_config", "_impl", "_infos", "_lock")

    def __init__(self, config_rules: Sequence[Rule] = (), *, impl: Impl | None = None) -> None:
        if impl is not None and not isinstance(impl, Impl):
            raise TypeError(f"impl must be a netguard._impl.Impl or None, not {impl!r}")
        self._config = _check_rules(config_rules, "config_rules")
        self._impl = impl
        self._infos: dict[_InfoKey, CompiledPolicyInfo] = {}
        self._compiled: dict[object, Policy] = {}
        self._compiles = 0
        self._lock = threading.Lock()

    @property
    def config_rules(self) -> tuple[Rule, ...]:
        """The session's config rules, as given."""
        return self._config

    @property
    def impl(self) -> Impl:
        """The implementation compiling this set's policies (chosen on first use)."""
        impl = self._impl
        if impl is None:
            impl = self._impl = _impl.current()
        return impl

    @property
    def compile_count(self) -> int:
        """How many policies this set has compiled."""
        return self._compiles

    def for_test(
        self, size: str, extra: Sequence[Rule] = (), allow_network: bool = False
    ) -> CompiledPolicyInfo:
        """The policy of a test of ``size`` with ``extra`` rules (its netguard markers).

        ``ValueError`` for an unknown size (naming the accepted ones), ``TypeError`` when
        ``extra`` holds anything but :class:`~netguard.rules.Rule` objects.
        """
        key = (size, tuple(extra), bool(allow_network))
        info = self._infos.get(key)
        if info is None:
            with self._lock:
                info = self._infos.get(key)
                if info is None:
                    info = self._infos[key] = self._build(*key)
        return info

    def precompile(self) -> None:
        """Compile the plain policy of every size now (at session start, say), so a
        compile error or the compile time does not land inside the first test."""
        for size in SIZES:
            self.for_test(size)

    def _build(
        self, size: str, extra: tuple[Rule, ...], allow_network: bool
    ) -> CompiledPolicyInfo:
        _check_size(size)
        extra = _check_rules(extra, "extra rules")
        entries: list[tuple[Rule, int]] = list(_SIZE_RULES[size])
        if size in _CONFIG_SIZES:
            entries.extend((rule, _RULE) for rule in self._config)
        entries.extend((rule, _RULE) for rule in extra)
        if allow_network:
            entries.extend(_ALLOW_NETWORK_RULES)
        allow_all = allow_network or size in _ALLOW_ALL_SIZES
        compiled_rules = () if allow_all else tuple(r for r, role in entries if role == _RULE)
        policy = self._policy(compiled_rules, allow_all)
        return CompiledPolicyInfo(
            size=size,
            allow_network=allow_network,
            extra=extra,
            rules=tuple(rule for rule, _ in entries),
            compiled_rules=compiled_rules,
            compiled=policy._compiled,
            policy=policy,
            _entries=tuple(entries),
        )

    def _policy(self, rules: tuple[Rule, ...], allow_all: bool) -> Policy:
        """The compiled policy for ``rules``: from the cache, else compiled (lock held)."""
        key: object = True if allow_all else frozenset(map(_semantic, rules))
        policy = self._compiled.get(key)
        if policy is None:
            impl = self.impl
            compiled = impl.compile(rules, allow_all=allow_all, dns_localhost=True)
            self._compiles += 1
            # A netguard.Policy around the compiled object, so netguard.guard() takes it;
            # built the way Policy.from_bytes builds one around an existing object.
            policy = Policy.__new__(Policy)
            policy.rules = rules
            policy.allow_all = allow_all
            policy.source = "netguard.policy.PolicySet"
            policy._impl = impl
            policy._compiled = compiled
            self._compiled[key] = policy
        return policy

    def __repr__(self) -> str:
        impl = "not chosen yet" if self._impl is None else repr(self._impl.name)
        return (
            f"<netguard PolicySet config_rules={len(self._config)} "
            f"combinations={len(self._infos)} compiled={self._compiles} impl={impl}>"
        )


# --------------------------------------------------------------------------- markers


class MarkerError(ValueError):
    """A netguard marker that cannot be used: ``str(err)`` is ``"{where}: {reason}"``.

    ``where`` names the test. Survives pickling (so it can cross pytest-xdist workers).
    """

    where: str
    reason: str

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.where, self.reason), self.__dict__)


class ResolvedMarkers(NamedTuple):
    """What a test's markers say: the arguments of :meth:`PolicySet.for_test`."""

    size: str
    extra: tuple[Rule, ...]
    allow_network: bool


def _show(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """A marker as it was written: ``@pytest.mark.small('x', k=1)``."""
    if not args and not kwargs:
        return f"@pytest.mark.{name}"
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"@pytest.mark.{name}({', '.join(shown)})"


def _and(items: Sequence[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def marker_data(item: Any) -> list[MarkerData]:
    """The markers of a pytest item as plain data, closest level first.

    Levels, closest first: the marks of the item's parameter set
    (``pytest.param(..., marks=...)``, level ``"{nodeid} (parameters)"``); the test
    function's own marks (decorators, ``item.add_marker()``); then each enclosing node:
    a class's own marks (level: its node id), the marks it inherits from each base
    class in MRO order (level ``"{nodeid} (from Base)"``), the module's ``pytestmark``,
    and so on up. So a size on a parameter set overrides the function's, a subclass's
    overrides its base class's, and a class's overrides its module's.

    Duck-typed over pytest's ``Node`` API (``listchain()``, ``own_markers``, ``obj``,
    ``callspec``), which pytest 7.4 to 9 share.
    """
    data: list[MarkerData] = []
    for node in reversed(item.listchain()):
        nodeid: str = node.nodeid
        marks: list[Any] = list(getattr(node, "own_markers", ()))
        if node is item:
            callspec = getattr(item, "callspec", None)
            param_ids = {id(m) for m in getattr(callspec, "marks", ())}
            if param_ids:
                level = f"{nodeid} (parameters)"
                data.extend((level, m.name, m.args, m.kwargs) for m in marks if id(m) in param_ids)
                marks = [m for m in marks if id(m) not in param_ids]
            data.extend((nodeid, m.name, m.args, m.kwargs) for m in marks)
            continue
        cls = getattr(node, "obj", None) if marks else None
        if not isinstance(cls, type):
            data.extend((nodeid, m.name, m.args, m.kwargs) for m in marks)
            continue
        # pytest gives a class node the marks of its whole MRO, base classes first;
        # give each class of the MRO its own level, the class itself closest.
        origin: dict[int, type] = {}
        for klass in reversed(cls.__mro__):
            declared = klass.__dict__.get("pytestmark", [])
            for m in declared if isinstance(declared, list) else [declared]:
                origin[id(getattr(m, "mark", m))] = klass
        for klass in cls.__mro__:
            level = nodeid if klass is cls else f"{nodeid} (from {klass.__qualname__})"
            data.extend(
                (level, m.name, m.args, m.kwargs) for m in marks if origin.get(id(m), cls) is klass
            )
    return data


_OUR_MARKERS: Final = frozenset((*SIZES, _NETGUARD_MARKER, _ALLOW_NETWORK_MARKER))


_COMPLEX: Final = "complex"  # markers that need resolve_markers (see simple_size)
_UNKNOWN: Final = object()


def _scan(marks: Iterable[Any]) -> str | None:
    """One node's own markers: ``None`` (no netguard marker), its one size (argument-free
    size markers that agree), or :data:`_COMPLEX` (anything else)."""
    size: str | None = None
    for mark in marks:
        name = mark.name
        if name not in _OUR_MARKERS:
            continue
        if name not in SIZES or mark.args or mark.kwargs or (size is not None and name != size):
            return _COMPLEX
        size = name
    return size


class MarkerCache:
    """What the markers of each collector (module, class) and its parents say, for
    :func:`simple_size`, kept for a session: by node identity, plus the last parent asked
    about (consecutive tests share their parent, and an identity check is the cheapest
    lookup there is)."""

    __slots__ = ("by_node", "last_node", "last")

    def __init__(self) -> None:
        self.by_node: dict[int, str | None] = {}
        self.last_node: object = _UNKNOWN
        self.last: str | None = None


def simple_size(item: Any, default: str, cache: MarkerCache | None = None) -> str | None:
    """The size of a pytest item whose markers are simple; ``None`` when they are not.

    Simple: netguard's only markers on the item and its parents are size markers without
    arguments, and those on each node agree. The answer is then the one
    :func:`resolve_markers` gives (with no extra rules and no ``allow_network``), found
    without building :func:`marker_data`; for anything else (a ``netguard`` or
    ``allow_network`` marker, arguments, two sizes on one node) ``None`` says to take the
    full path, which also explains every mistake. ``cache`` remembers what each parent
    node's chain says, so each test scans only its own markers.
    """
    marks = item.own_markers
    own = _scan(marks) if marks else None
    if own is _COMPLEX:
        return None
    parent = item.parent
    if cache is None:
        outer = _outer(parent, None)
    elif parent is cache.last_node:
        outer = cache.last
    else:
        outer = _outer(parent, cache.by_node)
        cache.last_node, cache.last = parent, outer
    if outer is _COMPLEX:
        return None
    return own or outer or default


def _outer(node: Any, cache: dict[int, str | None] | None) -> str | None:
    """What ``node`` and its parents say, closest first (see :func:`simple_size`)."""
    if node is None:
        return None
    if cache is not None:
        known = cache.get(id(node), _UNKNOWN)
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
    here = _scan(getattr(node, "own_markers", ()))
    if here is _COMPLEX:
        result: str | None = _COMPLEX
    else:
        up = _outer(getattr(node, "parent", None), cache)
        result = _COMPLEX if up is _COMPLEX else (here or up)
    if cache is not None:
        cache[id(node)] = result  # nodes live as long as the session that keeps the cache
    return result


def size_from_markers(markers: Iterable[MarkerData], default: str, where: str) -> str:
    """The size of the test ``where`` from its markers; ``default`` when none has one.

    ``markers`` are ``(level, name, args, kwargs)``, closest level first (see
    :func:`marker_data`). The closest level with a size marker decides: a size on the
    function overrides one on its class, which overrides one on the module. Different
    size markers at that one level are a :class:`MarkerError` naming ``where``, the level
    and every marker; the same size twice is fine. A size marker with arguments is a
    :class:`MarkerError`; ``default`` not a size is a ``ValueError``.
    """
    _check_size(default, "default size")
    level: str | None = None
    names: list[str] = []
    for marker_level, name, args, kwargs in markers:
        if name not in SIZES:
            continue
        if args or kwargs:
            raise MarkerError(
                where,
                f"size markers take no arguments: {_show(name, args, kwargs)} "
                f"on {marker_level}; write @pytest.mark.{name}",
            )
        if level is None:
            level = marker_level
        if marker_level == level and name not in names:
            names.append(name)
    if level is None:
        return default
    if len(names) > 1:
        shown = _and([f"@pytest.mark.{n}" for n in names])
        raise MarkerError(
            where,
            f"conflicting size markers {shown} on {level}: a test has one size; keep one "
            "of them (a size marker closer to the test overrides one further out, as on "
            "a function over its class or module)",
        )
    return names[0]


def rules_from_marker(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], where: str
) -> tuple[Rule, ...]:
    """The rules of one ``@pytest.mark.netguard(allow=[RULE, ...])`` on test ``where``.

    Each rule's source is ``"@pytest.mark.netguard(allow=...) on {where}"``, so a bad rule
    is a :class:`~netguard.rules.RuleError` naming the test, the marker, the rule and the
    reason. Anything else wrong with the marker (positional arguments, unknown keywords,
    ``allow`` not a list of strings) is a :class:`MarkerError`. ``Rule`` objects are
    taken as they are.
    """
    marker = "@pytest.mark.netguard"
    if args:
        raise MarkerError(
            where,
            f"{_show(_NETGUARD_MARKER, args, kwargs)}: {marker} takes keyword arguments "
            "only; write @pytest.mark.netguard(allow=[RULE, ...])",
        )
    unknown = [k for k in kwargs if k not in _NETGUARD_KWARGS]
    if unknown:
        raise MarkerError(
            where,
            f"{_show(_NETGUARD_MARKER, args, kwargs)}: unknown argument "
            f"{_and(unknown)}; {marker} accepts allow=[RULE, ...]",
        )
    allow = kwargs.get("allow", ())
    if isinstance(allow, (str, bytes)):
        raise MarkerError(
            where,
            f"{marker}(allow={allow!r}): allow takes a list of rules, not a single "
            f"{type(allow).__name__}; write allow=[{allow!r}]",
        )
    if not isinstance(allow, Iterable):
        raise MarkerError(
            where,
            f"{marker}(allow={allow!r}): allow takes a list of rules, not {type(allow).__name__}",
        )
    source = f"{marker}(allow=...) on {where}"
    rules: list[Rule] = []
    for item in allow:
        if isinstance(item, Rule):
            rules.append(item)
        elif isinstance(item, str):
            rules.append(parse_rule(item, source=source))
        else:
            raise MarkerError(
                where,
                f"{marker}(allow=...): a rule is a string, not {type(item).__name__}: {item!r}",
            )
    return tuple(rules)


def rules_from_markers(markers: Iterable[MarkerData], where: str) -> tuple[Rule, ...]:
    """The rules of every ``netguard`` marker of test ``where``, at every level.

    Unlike sizes, they add up: a ``netguard(allow=...)`` on the module and one on the
    function both apply. Closest first; a rule repeated exactly is kept once.
    """
    rules: dict[Rule, None] = {}
    for _level, name, args, kwargs in markers:
        if name == _NETGUARD_MARKER:
            rules.update(dict.fromkeys(rules_from_marker(args, kwargs, where)))
    return tuple(rules)


def allow_network_from_markers(markers: Iterable[MarkerData], where: str) -> bool:
    """Whether an ``allow_network`` marker applies to test ``where`` (at any level).

    ``allow_network`` takes no arguments: any is a :class:`MarkerError`.
    """
    found = False
    for level, name, args, kwargs in markers:
        if name == _ALLOW_NETWORK_MARKER:
            if args or kwargs:
                raise MarkerError(
                    where,
                    f"{_show(name, args, kwargs)} on {level}: allow_network takes no "
                    "arguments; write @pytest.mark.allow_network",
                )
            found = True
    return found


def resolve_markers(markers: Iterable[MarkerData], *, default: str, where: str) -> ResolvedMarkers:
    """Size, extra rules and allow_network of test ``where``, from its markers.

    ``PolicySet.for_test(*resolve_markers(marker_data(item), default=..., where=...))``
    is the policy of a pytest item.
    """
    data = list(markers)
    return ResolvedMarkers(
        size_from_markers(data, default, where),
        rules_from_markers(data, where),
        allow_network_from_markers(data, where),
    )
