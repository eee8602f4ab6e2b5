"""The one place that picks the implementation: the C core or its pure-Python twin.

``NETGUARD_IMPL`` chooses: ``c`` (the default) loads :mod:`netguard._netguard`, ``python``
loads :mod:`netguard._reference`. A C extension that fails to import is an ``ImportError``
saying how to rebuild it; the reference twin is never chosen silently.

Nothing is loaded at import: :func:`current` loads the chosen implementation on first use
(the plugin's ``off`` mode must not load the extension). Tests switch with :func:`use`,
which returns the previous choice so a fixture can restore it.

This module also defines :class:`Policy` (exported as ``netguard.Policy``): rules compiled
by the implementation that is current when the policy is built.
"""

from __future__ import annotations

import importlib
import os
from array import array
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

from netguard._record import Record, init
from netguard.rules import Rule, parse_rule

__all__ = [
    "ALLOW_ALL",
    "DNS_LOCALHOST",
    "ENV_VAR",
    "NAMES",
    "Impl",
    "Policy",
    "chosen",
    "current",
    "load",
    "pack",
    "use",
]

ENV_VAR = "NETGUARD_IMPL"
NAMES = ("c", "python")

#: Policy flags, shared by both implementations.
ALLOW_ALL = 1
DNS_LOCALHOST = 2

_U64 = (1 << 64) - 1

_MODULES = {"c": "netguard._netguard", "python": "netguard._reference"}

_REBUILD = (
    "netguard's C extension (netguard._netguard) cannot be imported: {error}\n"
    "Rebuild it: `pip install --force-reinstall --no-binary netguard netguard`, or in a "
    "source checkout `python setup.py build_ext --inplace` (a C compiler and the Python "
    "headers are required).\n"
    "To run on the pure-Python reference implementation instead, say so explicitly: "
    f"{ENV_VAR}=python."
)


class Impl(Record):
    """One implementation of the compiled policy and the hooks (see docs/internals.md).

    ``name`` is ``"c"`` or ``"python"``; ``path`` the file of the extension module, or of
    ``_reference.py``. ``compile(rules, *, allow_all=False, dns_localhost=True)`` returns
    a compiled policy; ``activate(policy, strict)`` sets the guard stack's level, until
    ``deactivate()``; ``activate_base(policy, strict)`` what holds while the stack's level
    is unset; ``aim_base``, ``enter_base``, ``start_base``, ``mark_base``, ``leave_base``
    and ``base_owner`` are the base switch, the pytest plugin's per-phase path. The rest are
    the module's functions of the same names.
    """

    __slots__ = (
        "name", "path", "module", "compile", "from_bytes", "install", "uninstall",
        "is_installed", "activate", "deactivate", "activate_base", "active", "aim_base",
        "enter_base", "start_base", "mark_base", "leave_base", "base_owner",
    )
    name: str
    path: str
    module: ModuleType
    compile: Callable[..., Any]
    from_bytes: Callable[[bytes], Any]
    install: Callable[[Callable[[str, int, str | None, int | None], None]], None]
    uninstall: Callable[[], None]
    is_installed: Callable[[], bool]
    activate: Callable[[Any, bool], None]
    deactivate: Callable[[], None]
    activate_base: Callable[[Any, bool], None]
    active: Callable[[], Any]
    aim_base: Callable[[object, Any, Any, bool, bool], None]
    enter_base: Callable[[object], bool]
    start_base: Callable[[], None]
    mark_base: Callable[[], None]
    leave_base: Callable[[], Any]
    base_owner: Callable[[], Any]

    def __init__(
        self,
        name: str,
        path: str,
        module: ModuleType,
        compile: Callable[..., Any],
        from_bytes: Callable[[bytes], Any],
        install: Callable[[Callable[[str, int, str | None, int | None], None]], None],
        uninstall: Callable[[], None],
        is_installed: Callable[[], bool],
        activate: Callable[[Any, bool], None],
        deactivate: Callable[[], None],
        activate_base: Callable[[Any, bool], None],
        active: Callable[[], Any],
        aim_base: Callable[[object, Any, Any, bool, bool], None],
        enter_base: Callable[[object], bool],
        start_base: Callable[[], None],
        mark_base: Callable[[], None],
        leave_base: Callable[[], Any],
        base_owner: Callable[[], Any],
    ) -> None:
        init(self, "name", name)
        init(self, "path", path)
        init(self, "module", module)
        init(self, "compile", compile)
        init(self, "from_bytes", from_bytes)
        init(self, "install", install)
        init(self, "uninstall", uninstall)
        init(self, "is_installed", is_installed)
        init(self, "activate", activate)
        init(self, "deactivate", deactivate)
        init(self, "activate_base", activate_base)
        init(self, "active", active)
        init(self, "aim_base", aim_base)
        init(self, "enter_base", enter_base)
        init(self, "start_base", start_base)
        init(self, "mark_base", mark_base)
        init(self, "leave_base", leave_base)
        init(self, "base_owner", base_owner)

    def __repr__(self) -> str:
        return f"<netguard implementation {self.name!r} from {self.path}>"


# --------------------------------------------------------------------------- choosing


def chosen() -> str:
    """The implementation ``NETGUARD_IMPL`` asks for (``"c"`` when unset or empty)."""
    raw = os.environ.get(ENV_VAR, "")
    value = raw.strip().lower()
    if not value:
        return "c"
    if value not in NAMES:
        raise ValueError(f"{ENV_VAR}={raw!r} from the environment: expected c or python")
    return value


_loaded: dict[str, Impl] = {}
_current: Impl | None = None


def load(name: str) -> Impl:
    """Import implementation ``name`` (``"c"`` or ``"python"``) and describe it."""
    impl = _loaded.get(name)
    if impl is not None:
        return impl
    if name not in _MODULES:
        raise ValueError(f"netguard implementation {name!r}: expected c or python")
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:
        if name != "c":
            raise
        raise ImportError(_REBUILD.format(error=exc), name=_MODULES[name]) from exc

    if name == "c":

        def compile_rules(
            rules: Sequence[Rule], *, allow_all: bool = False, dns_localhost: bool = True
        ) -> Any:
            args = pack(rules, allow_all=allow_all, dns_localhost=dns_localhost)
            return module.Policy(*args)

    else:

        def compile_rules(
            rules: Sequence[Rule], *, allow_all: bool = False, dns_localhost: bool = True
        ) -> Any:
            return module.Policy(list(rules), _flags(allow_all, dns_localhost))

    impl = Impl(
        name=name,
        path=str(module.__file__),
        module=module,
        compile=compile_rules,
        from_bytes=module.Policy.from_bytes,
        install=module.install,
        uninstall=module.uninstall,
        is_installed=module.is_installed,
        activate=module.activate,
        deactivate=module.deactivate,
        activate_base=module.activate_base,
        active=module.active,
        aim_base=module.aim_base,
        enter_base=module.enter_base,
        start_base=module.start_base,
        mark_base=module.mark_base,
        leave_base=module.leave_base,
        base_owner=module.base_owner,
    )
    _loaded[name] = impl
    return impl


def current() -> Impl:
    """The implementation in use, loaded on first call (``NETGUARD_IMPL`` or ``c``)."""
    global _current
    impl = _current
    if impl is None:
        impl = _current = load(chosen())
    return impl


def use(choice: str | Impl | None) -> Impl | None:
    """Switch implementation; returns the previous one (``None`` if none was loaded yet).

    ``choice`` is a name, an :class:`Impl` (what an earlier call returned), or ``None`` to
    go back to the lazy choice from ``NETGUARD_IMPL``. Policies keep the implementation
    they were compiled with.
    """
    global _current
    previous = _current
    _current = load(choice) if isinstance(choice, str) else choice
    return previous


def __getattr__(name: str) -> Any:
    # IMPL is resolved on first use, so importing this module loads no implementation.
    if name == "IMPL":
        return current()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- packing


def _flags(allow_all: bool, dns_localhost: bool) -> int:
    return (ALLOW_ALL if allow_all else 0) | (DNS_LOCALHOST if dns_localhost else 0)


def pack(
    rules: Sequence[Rule], *, allow_all: bool = False, dns_localhost: bool = True
) -> tuple[array[int], array[int], list[Any], list[str], list[tuple[str, int]], int]:
    """The arguments of the C constructor ``_netguard.Policy`` for ``rules``.

    ``(ipv4, ipv6, portsets, unix, hosts, flags)``: ``ipv4`` holds ``first, last,
    portset`` per rule and ``ipv6`` ``first_hi, first_lo, last_hi, last_lo, portset``
    (uint64 each); ``portsets`` lists every distinct port set once (``None`` for any port,
    else a tuple of ``(lo, hi)`` ranges), and the rules refer to it by index.

    Written for size: a million rules pack in a few hundred milliseconds (column-wise
    comprehensions and strided array assignment, no per-rule Python loop body).
    """
    index: dict[tuple[tuple[int, int], ...] | None, int] = {}
    # setdefault(key, len(index)) gives a new key the next index: len() is evaluated first.
    intern = index.setdefault
    v4 = [r for r in rules if r.family == 4 and r.kind == "ip"]
    v6 = [r for r in rules if r.family == 6 and r.kind == "ip"]
    others = [r for r in rules if r.kind != "ip"]

    ipv4 = array("Q", bytes(24 * len(v4)))
    if v4:
        ipv4[0::3] = array("Q", [r.first for r in v4])
        ipv4[1::3] = array("Q", [r.last for r in v4])
        ipv4[2::3] = array("Q", [intern(r.ports, len(index)) for r in v4])

    ipv6 = array("Q", bytes(40 * len(v6)))
    if v6:
        ipv6[0::5] = array("Q", [r.first >> 64 for r in v6])
        ipv6[1::5] = array("Q", [r.first & _U64 for r in v6])
        ipv6[2::5] = array("Q", [r.last >> 64 for r in v6])
        ipv6[3::5] = array("Q", [r.last & _U64 for r in v6])
        ipv6[4::5] = array("Q", [intern(r.ports, len(index)) for r in v6])

    unix = [r.path for r in others if r.kind == "unix"]
    hosts = [(r.host, intern(r.ports, len(index))) for r in others if r.kind == "host"]
    unknown = [r for r in others if r.kind not in ("unix", "host")]
    if unknown:
        raise ValueError(f"rule {unknown[0].text!r} has unknown kind {unknown[0].kind!r}")
    portsets: list[Any] = list(index)
    return ipv4, ipv6, portsets, unix, hosts, _flags(allow_all, dns_localhost)


# --------------------------------------------------------------------------- the policy


class Policy:
    """Allow rules, compiled once by the current implementation.

    ``rules`` are rule strings (the grammar in ``docs/api.md``: ``127.0.0.0/8``,
    ``[::1]:8080``, ``example.com:443``, ``unix:/run/*.sock``, ...) or
    :class:`netguard.rules.Rule` objects. A bad rule raises
    :class:`netguard.rules.RuleError` naming ``source``, the text and the reason.
    ``allow_all=True`` allows everything (the rules are kept for reports).

    A policy answers :meth:`allows` without touching the network, and is what
    :func:`netguard.guard` enforces. ``rules`` is ``None`` for a policy loaded with
    :meth:`from_bytes` (the compiled form does not keep the rule texts).
    """

    __slots__ = ("_compiled", "_impl", "allow_all", "rules", "source")

    rules: tuple[Rule, ...] | None
    allow_all: bool
    source: str
    _compiled: Any
    _impl: Impl

    def __init__(
        self,
        rules: Iterable[str | Rule] = (),
        *,
        allow_all: bool = False,
        source: str = "netguard.Policy()",
    ) -> None:
        if isinstance(rules, (str, bytes)):
            raise TypeError(
                f"{source}: rules must be an iterable of rule strings, not a single "
                f"{type(rules).__name__} ({rules!r}); write [{rules!r}]"
            )
        parsed = tuple(r if isinstance(r, Rule) else parse_rule(r, source=source) for r in rules)
        impl = current()
        self.rules = parsed
        self.allow_all = bool(allow_all)
        self.source = source
        self._impl = impl
        self._compiled = impl.compile(parsed, allow_all=self.allow_all)

    @classmethod
    def from_bytes(cls, data: bytes) -> Policy:
        """Load a policy from :meth:`to_bytes` output of the current implementation.

        Raises ``ValueError`` on anything malformed (each implementation reads only its
        own format).
        """
        impl = current()
        compiled = impl.from_bytes(data)
        self = cls.__new__(cls)
        self.rules = None
        self.allow_all = bool(compiled.flags & ALLOW_ALL)
        self.source = "netguard.Policy.from_bytes()"
        self._impl = impl
        self._compiled = compiled
        return self

    def to_bytes(self) -> bytes:
        """The compiled policy as bytes (versioned, read back by :meth:`from_bytes`)."""
        data: bytes = self._compiled.to_bytes()
        return data

    def allows(self, host: str, port: int | None = None) -> bool:
        """Whether the policy allows ``host`` (and ``port``), answered without the network.

        ``host`` is an IP address (``port`` required), ``unix:PATH`` (no port), or a name:
        with ``port=None``, whether a lookup of the name is allowed; with a port, whether a
        host rule covers the name and the port.
        """
        return bool(self._compiled.allows(host, port))

    @property
    def implementation(self) -> str:
        """The implementation that compiled this policy: ``"c"`` or ``"python"``."""
        return self._impl.name

    def __repr__(self) -> str:
        parts: list[str] = []
        if self.rules is None:
            parts.append("<from bytes>")
        else:
            texts = [r.text for r in self.rules[:5]]
            shown = repr(texts)
            if len(self.rules) > 5:
                shown = f"{shown[:-1]}, ... {len(self.rules)} rules]"
            parts.append(shown)
        if self.allow_all:
            parts.append("allow_all=True")
        parts.append(f"impl={self._impl.name!r}")
        return f"netguard.Policy({', '.join(parts)})"


Policy.__module__ = "netguard"  # its public home; shown so in tracebacks and docs
