"""netguard's pytest plugin, loaded through the ``pytest11`` entry point.

Hooks only. The options come from :mod:`netguard.config`, the policies from
:mod:`netguard.policy`, the per-session state from :mod:`netguard._session`. With the mode
``off`` (the default) the plugin registers its options and markers and nothing else: the
hooks that enforce and report are registered by ``pytest_configure`` only for ``strict``
and ``warn``, the C extension is not loaded and nothing is patched.

Importing this module puts :class:`_StandardImports` on ``sys.meta_path``: netguard's other
modules are then loaded by Python's own machinery, not by pytest's assertion rewriting.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import PathFinder
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

    from netguard._native_phases import NativePhases
    from netguard._session import NetguardSession
    from netguard.config import Settings

__all__ = [
    "pytest_addoption",
    "pytest_configure",
    "pytest_report_header",
    "pytest_unconfigure",
]

_SETTINGS: pytest.StashKey[Settings] = pytest.StashKey()
_SESSION: pytest.StashKey[NetguardSession] = pytest.StashKey()
_NATIVE_PHASES: pytest.StashKey[NativePhases] = pytest.StashKey()


class _StandardImports:
    """A meta path finder for netguard's submodules: the spec Python's own path finder
    gives, so pytest's assertion-rewriting hook (further down ``sys.meta_path``) never
    loads them.

    pytest rewrites the asserts of every module in a plugin's distribution. Its hook reads
    each cached module with ``marshal.load`` from the open file, some ten times slower
    than Python's loader (about 12 ms of reading for what strict mode imports, a run's largest
    fixed cost of netguard's), and where site-packages is read-only it parses and rewrites
    the source in every run, as the rewritten bytecode cannot be cached. netguard has no
    asserts for pytest to explain. ``netguard`` and this module are imported before the
    finder exists and stay pytest's.
    """

    @staticmethod
    def find_spec(
        name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if path is None or not name.startswith("netguard."):
            return None
        return PathFinder.find_spec(name, path, target)


if not any(type(f).__name__ == _StandardImports.__name__ for f in sys.meta_path):
    sys.meta_path.insert(0, _StandardImports())  # once per process, first in line


_MARKERS = (
    "small: a small test: no network at all (netguard)",
    "medium: a medium test: loopback and AF_UNIX only (netguard)",
    "large: a large test: any network (netguard)",
    "xlarge: an xlarge test: any network (netguard)",
    "allow_network: let this test reach anything (netguard)",
    "netguard(allow=[RULE, ...]): extra rules for this test, any size (netguard)",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    from netguard.config import OPTIONS  # here, not at import: importing the plugin is free

    group = parser.getgroup("netguard", "netguard: network guard by test size")
    for opt in OPTIONS:
        group.addoption(opt.flag, **opt.addoption_kwargs())
        parser.addini(opt.ini, **opt.addini_kwargs())


def pytest_configure(config: pytest.Config) -> None:
    for line in _MARKERS:
        config.addinivalue_line("markers", line)
    from netguard.config import OPTIONS, ConfigError, resolve

    try:
        settings = resolve(
            {o.name: config.getoption(o.dest) for o in OPTIONS},
            os.environ,
            {o.name: config.getini(o.ini) for o in OPTIONS},
            rootdir=config.rootpath,
            inifile=config.inipath,
        )
    except ConfigError as exc:
        raise pytest.UsageError(f"netguard: {exc}") from None
    config.stash[_SETTINGS] = settings
    if settings.database_safety:
        _check_databases(settings)
    if settings.mode == "off":
        return  # no per-test hook is even registered: off costs nothing per test
    if settings.native and not sys.platform.startswith("linux"):
        raise pytest.UsageError(
            f"netguard: native mode ({settings.native_source}) needs Linux (LD_PRELOAD and "
            f"the GOT of ELF objects); this is {sys.platform}. Leave it off here: the "
            "Python-level hooks still hold"
        )
    _warn_about_pytest_socket(config, settings.mode)
    from netguard._session import ENFORCING, NATIVE, PHASES, Enforcing, NetguardSession

    session = NetguardSession(settings)
    controller = _is_xdist_controller(config)
    native = _start_native(session, controller) if settings.native else None
    config.stash[_SESSION] = session
    enforcing = Enforcing(config, session)
    config.pluginmanager.register(enforcing, ENFORCING)
    config.pluginmanager.register(session, PHASES)  # the hooks of each test's phases
    if native is not None:
        config.stash[_NATIVE_PHASES] = native
        # after the session's: its trylast phase wrappers run inside the session's
        config.pluginmanager.register(native, NATIVE)
    if controller:
        enforcing.start_reports()
    else:
        session.on_first_events = enforcing.start_reports


def _start_native(session: NetguardSession, controller: bool) -> NativePhases | None:
    """Native mode's phase hooks (netguard._native_phases), or None on pytest-xdist's
    controller, which runs no test (its header says native mode is on all the same)."""
    session.native = True
    if controller:
        return None
    from netguard.native import NativeUnsupported

    try:
        from netguard._native_phases import NativePhases

        return NativePhases(session)
    except (NativeUnsupported, RuntimeError, ImportError) as exc:
        session.close()
        raise pytest.UsageError(f"netguard: native mode cannot start: {exc}") from None


def _is_xdist_controller(config: pytest.Config) -> bool:
    """Whether this process hands tests to pytest-xdist workers (and receives their
    reports): the worker processes have ``workerinput``; the controller has ``-n``/``--dist``."""
    if hasattr(config, "workerinput"):
        return False
    dist = getattr(config.option, "dist", "no")
    numprocesses = getattr(config.option, "numprocesses", None)
    return dist != "no" or bool(numprocesses)


def _check_databases(settings: Settings) -> None:
    """The database safety gate: stop before collection when a database or cache URL in
    the environment does not look like a test resource (:mod:`netguard.safety`)."""
    from netguard.safety import UnsafeEnvironmentError, check_environment

    try:
        check_environment(
            os.environ,
            variables=settings.database_safety_vars,
            local_hosts=settings.database_safety_hosts,
            prefix=settings.database_safety_prefix,
            allow=settings.allow_rules,
        )
    except UnsafeEnvironmentError as exc:
        raise pytest.UsageError(str(exc)) from None


def _warn_about_pytest_socket(config: pytest.Config, mode: str) -> None:
    """pytest-socket, loaded too, puts back its saved ``socket.socket.connect`` after each
    test, which removes netguard's hook on it: say so once, with the way out."""
    pm = config.pluginmanager
    plugin = pm.get_plugin("socket") or pm.get_plugin("pytest_socket")
    if plugin is None or getattr(plugin, "__name__", "") != "pytest_socket":
        return
    missed = (
        "warn mode misses connects from the second test on"
        if mode == "warn"
        else "strict mode still blocks connects, through its audit hook"
    )
    config.issue_config_time_warning(
        pytest.PytestConfigWarning(
            "netguard: pytest-socket is loaded as well; it restores its own saved "
            f"socket.socket.connect after each test, removing netguard's hook ({missed}). "
            "Run with -p no:socket, or uninstall pytest-socket once its markers are "
            "converted (docs/migration.md#from-pytest-socket)"
        ),
        stacklevel=2,
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        from netguard._session import PLUGIN_NAMES

        for name in PLUGIN_NAMES:
            plugin = config.pluginmanager.get_plugin(name)
            if plugin is not None:
                config.pluginmanager.unregister(plugin)
        native = config.stash.get(_NATIVE_PHASES, None)
        if native is not None:
            native.close()  # before the session: it relies on the session's hooks
            del config.stash[_NATIVE_PHASES]
        session.close()
        del config.stash[_SESSION]


def pytest_report_header(config: pytest.Config) -> str | None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        return session.header()
    settings = config.stash.get(_SETTINGS, None)
    if settings is None:
        return None
    native = "; native mode needs mode strict or warn: off" if settings.native else ""
    if settings.database_safety:
        return f"netguard: off ({settings.mode_source}); database URLs checked{native}"
    return f"netguard: off ({settings.mode_source}); nothing is checked{native}"
