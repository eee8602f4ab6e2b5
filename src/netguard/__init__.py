"""netguard: keep test suites hermetic by blocking network calls per test size.

The public API::

    netguard.Policy(rules=(), *, allow_all=False, source=...)   compiled allow rules
    netguard.guard(policy, mode="strict")                        enforce them in a block
    netguard.Guard                                               what guard() returns
    netguard.NetworkViolationError                               strict mode's error
    netguard.NetworkViolationWarning                             warn mode's warning
    netguard.implementation()                                    ("c" | "python", path)
    netguard.safety.check_url(url), .check_environment()         the database safety gate
    netguard.__version__

Importing this package is nearly free: the names above are loaded on first use, so the
pytest plugin (``netguard.plugin``) imports in well under 2 ms and its ``off`` mode never
loads the C extension.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows it)
if TYPE_CHECKING:
    from netguard._guard import Guard, guard
    from netguard._impl import Policy
    from netguard.errors import NetworkViolationError, NetworkViolationWarning

    __version__: str
del TYPE_CHECKING

__all__ = [
    "Guard",
    "NetworkViolationError",
    "NetworkViolationWarning",
    "Policy",
    "__version__",
    "guard",
    "implementation",
]

_LAZY = {
    "Guard": "netguard._guard",
    "guard": "netguard._guard",
    "Policy": "netguard._impl",
    "NetworkViolationError": "netguard.errors",
    "NetworkViolationWarning": "netguard.errors",
}


def implementation() -> tuple[str, str]:
    """The implementation in use: ``("c", path of the extension)`` or
    ``("python", path of _reference.py)``. Loads it if not loaded yet, so a broken C build
    raises ``ImportError`` here (``NETGUARD_IMPL=python`` selects the reference twin)."""
    from netguard import _impl

    impl = _impl.current()
    return impl.name, impl.path


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - always there on 3.10+
        return "0+unknown"
    try:
        return version("netguard")
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str) -> object:
    # PEP 562: load the public names on first access and cache them in the module.
    if name == "__version__":
        value: object = _version()
    elif name == "safety":  # the submodule, on first use
        import importlib

        value = importlib.import_module("netguard.safety")
    else:
        module_name = _LAZY.get(name)
        if module_name is None:
            raise AttributeError(f"module 'netguard' has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
