"""netguard's pytest plugin, loaded through the ``pytest11`` entry point.

Hooks only: the options come from :mod:`netguard.config`, the policies from
:mod:`netguard.policy`, the per-session state from :mod:`netguard._session`. With the mode
``off`` (the default) the plugin registers its options and markers and nothing else: the C
extension is not loaded and nothing is patched.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

from netguard._report import ALLOWED_ATTR, REPORT_ATTR, event_dict

if TYPE_CHECKING:
    from netguard._session import NetguardSession
    from netguard.config import Settings

__all__ = [
    "pytest_addoption",
    "pytest_collectreport",
    "pytest_configure",
    "pytest_make_collect_report",
    "pytest_report_header",
    "pytest_runtest_call",
    "pytest_runtest_logreport",
    "pytest_runtest_makereport",
    "pytest_runtest_setup",
    "pytest_runtest_teardown",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "pytest_unconfigure",
]

_SETTINGS: pytest.StashKey[Settings] = pytest.StashKey()
# The config of the run, for the report hooks, which get no config argument.
_current_config: pytest.Config | None = None
_SESSION: pytest.StashKey[NetguardSession] = pytest.StashKey()

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
    global _current_config
    _current_config = config
    if settings.mode == "off":
        return
    from netguard._session import NetguardSession

    config.stash[_SESSION] = NetguardSession(settings)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _current_config
    if _current_config is config:
        _current_config = None
    session = config.stash.get(_SESSION, None)
    if session is not None:
        session.close()
        del config.stash[_SESSION]


def pytest_report_header(config: pytest.Config) -> str | None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        return session.header()
    settings = config.stash.get(_SETTINGS, None)
    if settings is None:
        return None
    return f"netguard: off ({settings.mode_source}); nothing is checked"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, object, object]:
    session = collector.config.stash.get(_SESSION, None)
    if session is None:
        return (yield)
    with session.collection() as violations:
        report = yield
        assert isinstance(report, pytest.CollectReport)
        if violations:
            setattr(report, REPORT_ATTR, [event_dict(v) for v in violations])
            if session.settings.mode == "strict" and report.passed:
                # the module swallowed the error: its collection fails all the same
                report.outcome = "failed"
                report.longrepr = session.collection_failure(violations)
        return report


def _phase(item: pytest.Item, phase: str) -> Generator[None, object, object]:
    __tracebackhide__ = True
    session = item.config.stash.get(_SESSION, None)
    if session is None:
        return (yield)
    g = session.phase_guard(item, phase)
    try:
        with g:
            return (yield)
    finally:
        session.keep(g.violations, item, phase)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    __tracebackhide__ = True
    return (yield from _phase(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    __tracebackhide__ = True
    return (yield from _phase(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    __tracebackhide__ = True
    return (yield from _phase(item, "teardown"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    session = item.config.stash.get(_SESSION, None)
    if session is not None:
        session.attach(item, report)
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _take_events(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _take_events(report)


def _take_events(report: pytest.TestReport | pytest.CollectReport) -> None:
    # reports carry no config (under pytest-xdist they come from other processes)
    if _current_config is None or (
        getattr(report, REPORT_ATTR, None) is None and getattr(report, ALLOWED_ATTR, None) is None
    ):
        return
    session = _current_config.stash.get(_SESSION, None)
    if session is not None:
        session.collect_events(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    session = terminalreporter.config.stash.get(_SESSION, None)
    if session is None:
        return
    lines = session.summary()
    if session.settings.verbose:
        lines += ["every network event:", *session.verbose_table()]
    if lines:
        terminalreporter.section("netguard")
        for line in lines:
            terminalreporter.line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    ng = session.config.stash.get(_SESSION, None)
    if ng is None or ng.settings.report is None or hasattr(session.config, "workerinput"):
        return  # under pytest-xdist the controller writes the report
    ng.write_report(str(ng.settings.report))
