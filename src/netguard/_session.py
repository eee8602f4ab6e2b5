"""What the pytest plugin keeps for a session: settings, policies, and every violation.

:mod:`netguard.plugin` holds only the hooks; they call into one :class:`NetguardSession`,
created in ``pytest_configure`` when the mode is not ``off`` (in ``off`` mode none of this
module is imported and nothing is patched). The hooks stay installed for the session. Each
collector runs inside a :func:`netguard.guard` of the default size; each phase of each test
runs under one session-wide guard, re-aimed at each test and made the base guard (beneath
any guard the test enters itself) for the phase, so switching tests and phases is a
pointer swap in the C core.
"""

from __future__ import annotations

import socket
import time
import types
from collections import Counter
from collections.abc import Callable, Generator
from typing import Any

import pytest

from netguard._guard import (
    Guard,
    exempt_loopback,
    install_hooks,
    leave_base,
    uninstall_hooks,
)
from netguard._report import ALLOWED_ATTR, REPORT_ATTR, SCHEMA, event_dict
from netguard.config import Settings
from netguard.errors import Violation, format_destination
from netguard.policy import (
    SIZES,
    CompiledPolicyInfo,
    MarkerCache,
    MarkerError,
    PolicySet,
    marker_data,
    resolve_markers,
    simple_size,
)
from netguard.rules import RuleError

__all__ = ["COLLECTION", "Enforcing", "NetguardSession", "Reports"]

#: The test id that events during collection (importing test modules) are attributed to.
COLLECTION = "<collection>"

# The names the plugin registers its hook objects under, and the order in which
# pytest_unconfigure unregisters them.
ENFORCING = "netguard-enforcing"  # Enforcing
PHASES = "netguard-phases"  # NetguardSession: the hooks of each test's phases
NATIVE = "netguard-native"  # netguard._native_phases.NativePhases, in native mode
REPORTS = "netguard-reports"  # Reports, from the first phase with events
PLUGIN_NAMES = (REPORTS, NATIVE, PHASES, ENFORCING)


def _phase_hook(phase: str) -> Callable[..., Generator[None, object, object]]:
    """The hook of one phase of each test (see NetguardSession): a trylast wrapper that
    runs the phase's implementations under the test's guard."""

    @pytest.hookimpl(wrapper=True, trylast=True)
    def hook(self: NetguardSession, item: pytest.Item) -> Generator[None, object, object]:
        self._guard.phase = phase
        if not self._core.enter_base(item):
            self._start(item, phase)
        try:
            result = yield
        except BaseException as exc:
            __tracebackhide__ = True  # the report shows the violation, not this frame
            g = self._core.leave_base()
            if g is not None:
                self._end_phase(item, g, exc)
            raise
        g = self._core.leave_base()
        if g is not None:
            __tracebackhide__ = True
            self._end_phase(item, g, None)
        return result

    hook.__name__ = hook.__qualname__ = f"pytest_runtest_{phase}"
    return hook


class NetguardSession:
    """The enforcing side of the plugin for one pytest session."""

    # Slots, as on every object the per-test hooks read: pluggy's registration calls
    # dir() on a plugin, which gives a plain instance a materialized __dict__, and CPython
    # 3.11 then reads its attributes the slow, generic way (7 times per test for _core).
    __slots__ = (
        "settings",
        "policies",
        "impl",
        "_socketpair",
        "default",
        "_plain",
        "_guard",
        "_item",
        "_marker_cache",
        "_default_size",
        "_info",
        "_problem",
        "_core",
        "_pending",
        "events",
        "allowed",
        "_collection_warned",
        "_current",
        "_observed",
        "on_first_events",
        "observing",
        "native",
    )

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policies = PolicySet(settings.allow_rules)
        self.impl = install_hooks(self.policies.impl)
        # Where socket.socketpair is Python (Windows), it connects loopback sockets, and
        # asyncio's event loops call it: exempt it, so event loops work in small tests.
        self._socketpair = socket.socketpair
        if not isinstance(self._socketpair, types.BuiltinFunctionType):
            socket.socketpair = exempt_loopback(self._socketpair)
        self.policies.precompile()
        self.default = self.policies.for_test(settings.default_size)
        self._plain = {size: self.policies.for_test(size) for size in SIZES}
        # The guard of every test's phases, aimed at the test whose phases run now (its
        # policy, and the marker problem that fails its setup).
        self._guard = Guard(
            self.default.policy,
            settings.mode,
            warned=set() if settings.mode == "warn" else None,
        )
        self._item: pytest.Item | None = None
        # what the markers of each collector (module, class) and its parents say
        self._marker_cache = MarkerCache()
        self._default_size = settings.default_size
        self._info = self.default
        self._problem: str | None = None
        # the implementation's module: each phase calls its base switch (see _start), a
        # module attribute being the cheapest call there is
        self._core = self.impl.module
        # (node id, phase) -> (violations, allowed events) of a phase, until its report
        self._pending: dict[tuple[str, str], tuple[list[Any], list[Any]]] = {}
        # every violation of the run, from this process or from xdist workers' reports
        self.events: list[dict[str, Any]] = []
        # every allowed event (only while observing), likewise
        self.allowed: list[dict[str, Any]] = []
        self._collection_warned: set[str] = set()
        # what runs now (test id, phase, size, policy), for the observer
        self._current: tuple[str, str, str, CompiledPolicyInfo] | None = None
        self._observed: list[dict[str, Any]] = []
        # called once, at the first phase with events (the plugin registers its report
        # hook then: a clean run pays nothing per report)
        self.on_first_events: Callable[[], None] | None = None
        self.observing = bool(settings.report or settings.verbose)
        # native mode is on (netguard._native_phases holds its hooks): the header says
        # so, and every event of the JSON report has its origin
        self.native = False
        if self.observing:
            from netguard._observe import set_observer

            set_observer(self._observe)

    def close(self) -> None:
        leave_base()  # a phase that never ended (the wrappers end every phase they start)
        if self.observing:
            from netguard._observe import set_observer

            set_observer(None)
        socket.socketpair = self._socketpair
        uninstall_hooks()

    # ------------------------------------------------------------------ attribution

    def _resolve(self, item: pytest.Item) -> tuple[CompiledPolicyInfo, str, str | None]:
        """The policy and size of ``item`` from markers that are not simple (see
        :meth:`_start`), and the marker problem that fails its setup, if any (its phases
        then run under the default size): the full path of
        :func:`netguard.policy.resolve_markers`, which also explains every mistake."""
        try:
            markers = resolve_markers(
                marker_data(item), default=self.settings.default_size, where=item.nodeid
            )
            info = self.policies.for_test(
                markers.size, markers.extra, allow_network=markers.allow_network
            )
        except (MarkerError, RuleError) as exc:
            return self.default, self.settings.default_size, str(exc)
        return info, markers.size, None

    # ------------------------------------------------------------------ the phases

    # Each phase of a test (setup, call, teardown) runs under the test's guard, made the
    # base guard (beneath any guard the test enters itself) for exactly the time pytest's
    # hook of the phase runs its implementations: fixtures, the test. One trylast wrapper
    # per phase (_phase_hook), the innermost of the phase's wrappers, enters before its
    # yield and leaves after it, whether the phase raised or not; pytest's own machinery
    # (the other wrappers, the report and its hooks) runs outside, between phases. Not
    # pytest_runtest_makereport: pytest's subtests call that hook in the middle of the call
    # phase, for each subtest, and the guard would end there. The guard is aimed at each
    # test once (_start: the implementation's base switch); then a clean phase is its name
    # set on the guard and one call of the implementation each way, enter_base and
    # leave_base (C: a policy pointer swap each, touching no Python object), and Python
    # runs only for a new test, a marker problem, observed events or a denied call.

    pytest_runtest_setup = _phase_hook("setup")
    pytest_runtest_call = _phase_hook("call")
    pytest_runtest_teardown = _phase_hook("teardown")

    def _start(self, item: pytest.Item, phase: str) -> None:
        """Start a phase the quick path left to Python: the first of a new test, or one of
        a test whose setup fails for a marker problem, or one whose events are observed."""
        if item is not self._item:
            # A new test: aim the guard at it (its policy and size, and the marker problem
            # that fails its setup). One guard serves every test. The common case, no
            # netguard marker but plain size markers, is a quick scan.
            size = simple_size(item, self._default_size, self._marker_cache)
            if size is not None:
                info, problem = self._plain[size], None
            else:
                info, size, problem = self._resolve(item)
            self._item, self._info, self._problem = item, info, problem
            quick = problem is None and not self.observing
            self._guard._aim(info.policy, item.nodeid, size, item, quick)
            if quick:
                self._core.start_base()
                return
        if self._problem is not None and phase == "setup":
            pytest.fail(f"netguard: {self._problem}", pytrace=False)
        if self.observing:
            g = self._guard
            self._current = (g.test, phase, g.size, self._info)  # type: ignore[assignment]
        self._core.start_base()  # (replacing a phase that never ended)

    def _end_phase(self, item: pytest.Item, g: Guard, exc: BaseException | None) -> None:
        """A phase the quick path left to Python (see :meth:`_start`), which ended with
        ``exc`` (or None): keep its violations and observed events for its report (see
        :meth:`take_report`); in strict mode a violation the phase swallowed is raised
        here, and becomes the phase's error."""
        __tracebackhide__ = True
        if self.observing:
            self._current = None
        if not g.violations and not self._observed:
            return
        events = [event_dict(v) for v in g.violations]
        self._pending[(item.nodeid, g.phase or "")] = (events, self.take_observed())
        if self.on_first_events is not None:
            self.on_first_events()  # reports must carry events from now on
            self.on_first_events = None
        for v in g.violations:
            # one JUnit XML property per violation (pytest's junitxml reads these)
            item.user_properties.append((f"netguard_{v.slug.lower()}", v.destination))
        try:
            g._raise_swallowed(exc)
        finally:
            g.violations = []
            g.escalated = False

    def take_report(self, report: pytest.TestReport) -> None:
        """Put the violations and observed events of ``report``'s phase on it."""
        pending = self._pending.pop((report.nodeid, report.when), None)
        if pending is not None:
            events, allowed = pending
            if events:
                setattr(report, REPORT_ATTR, events)
            if allowed:
                setattr(report, ALLOWED_ATTR, allowed)

    def collection(self) -> Guard:
        """The guard of one collector (importing a test module): the default size,
        attributed to ``<collection>``. The caller enters it around the collector, takes
        its violations for the collection report before it exits (a violation the module
        swallowed fails that module's collection rather than the session), and calls
        :meth:`collection_done`."""
        size = self.settings.default_size
        self._current = (COLLECTION, "collection", size, self.default)
        return Guard(
            self.default.policy,
            self.settings.mode,
            test=COLLECTION,
            size=size,
            phase="collection",
            warned=self._collection_warned,
        )

    def collection_done(self, g: Guard) -> list[Violation]:
        """What the collector's guard ``g`` recorded, taken from it: the collection report
        carries them instead (see :meth:`collection`)."""
        violations, g.violations = g.violations, []
        self._current = None
        return violations

    def collect_events(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        """Take the violations a report carries (this process's, or a worker's)."""
        self.events.extend(getattr(report, REPORT_ATTR, None) or ())
        self.allowed.extend(getattr(report, ALLOWED_ATTR, None) or ())

    # ------------------------------------------------------------------ observing

    def _observe(
        self,
        op: str,
        family: int,
        host: str,
        port: int | None,
        origin: str = "python",
        pid: int | None = None,
        program: str | None = None,
    ) -> None:
        """An event that reached the socket layer: netguard allowed it (or warned).
        Native mode reports the allowed calls of C code and children here too, with
        their ``origin`` (and a child's ``pid`` and ``program``)."""
        if family == 0 and _is_numeric(host):
            return  # a numeric "lookup" asks nothing of the network
        current = self._current
        if current is None:
            test, phase, size, info = "<session>", "", "", None
        else:
            test, phase, size, info = current
        rule = None
        if info is not None:
            try:
                rule = info.matching_rule(op, family, host, port)
            except ValueError:
                rule = None
            if rule is None and self.settings.mode == "warn":
                return  # let through in warn mode: a violation, recorded as one
        self._observed.append(
            {
                "test": test,
                "phase": phase,
                "size": size,
                "op": op,
                "family": family,
                "host": host,
                "port": port,
                "destination": format_destination(family, host, port),
                "rule": None if rule is None else str(rule),
                "rule_name": None if rule is None else rule.name,
                "rule_source": None if rule is None else rule.source,
                "timestamp": time.time(),
                "origin": origin,
                "pid": pid,
                "program": program,
            }
        )

    def take_observed(self) -> list[dict[str, Any]]:
        observed, self._observed = self._observed, []
        return observed

    def all_events(self) -> list[dict[str, Any]]:
        """Every event of the run, with its verdict, in time order."""
        verdict = "blocked" if self.settings.mode == "strict" else "warned"
        events = [{**e, "verdict": "allowed"} for e in self.allowed]
        events += [{**e, "verdict": verdict, "rule": None} for e in self.events]
        events.sort(key=lambda e: e.get("timestamp") or 0.0)
        return events

    def write_report(self, path: str) -> None:
        """The JSON report of ``--netguard-report``."""
        import json

        from netguard._observe import FAMILIES  # (here, as json: only reports need it)

        s = self.settings
        native = self.native  # then every event says where it came from
        document = {
            "schema": SCHEMA,
            "mode": s.mode,
            "default_size": s.default_size,
            "implementation": self.impl.name,
            "events": [
                {
                    "test": e["test"],
                    "phase": e["phase"],
                    "size": e["size"],
                    "operation": e["op"],
                    "family": FAMILIES.get(e["family"], str(e["family"])),
                    "destination": e["destination"],
                    "verdict": e["verdict"],
                    "rule": e.get("rule"),
                    "rule_name": e.get("rule_name"),
                    **(_origin_fields(e) if native else {}),
                }
                for e in self.all_events()
            ],
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)
            f.write("\n")

    def verbose_table(self) -> list[str]:
        """The ``--netguard-verbose`` table: every event and the rule that allowed it."""
        from netguard._observe import FAMILIES

        rows = [("TEST", "FAMILY", "ADDR:PORT", "STATUS", "RULE")]
        for e in self.all_events():
            rule = e.get("rule") or "-"
            if e.get("rule_name"):
                rule = f"{rule} ({e['rule_name']})"
            rows.append(
                (
                    str(e["test"]),
                    FAMILIES.get(e["family"], str(e["family"])),
                    e["destination"] + _origin_text(e),
                    e["verdict"].upper(),
                    rule,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return [
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + "  " + r[4]
            for r in rows
        ]

    # ------------------------------------------------------------------ reporting

    def header(self) -> str:
        s = self.settings
        safety = ", database URLs checked" if s.database_safety else ""
        return (
            f"netguard: mode {s.mode}, default size {s.default_size}, "
            f"{len(s.allow_rules)} allow rule(s){safety}, implementation {self.impl.name} "
            f"({self.impl.path})" + ("; native mode on" if self.native else "")
        )

    def summary(self) -> list[str]:
        """The end-of-run summary: violations by test, then counts by destination."""
        if not self.events:
            return []
        verb = "blocked" if self.settings.mode == "strict" else "let through (warn mode)"
        lines = [f"{len(self.events)} network call(s) {verb}:"]
        by_test: dict[str, list[dict[str, Any]]] = {}
        for e in self.events:
            by_test.setdefault(e["test"] or "<session>", []).append(e)
        for test, events in by_test.items():
            lines.append(f"  {test} ({events[0]['size']})")
            for e in events:
                lines.append(
                    f"    {e['phase']}: {e['op']} {e['destination']} [{e['slug']}]"
                    + _origin_text(e)
                )
        lines.append("by destination:")
        counts = Counter(e["destination"] for e in self.events)
        for destination, n in counts.most_common():
            lines.append(f"  {n:>5}  {destination}")
        return lines

    @staticmethod
    def collection_failure(violations: list[Violation]) -> str:
        """The text of a collection error for a module that swallowed a strict violation."""
        return str(violations[0].error(swallowed=len(violations)))


class Reports:
    """Reports carry the violations and events of their phase; under pytest-xdist they come
    from the workers, and the controller (which prints and writes) collects them.

    Registered only where there is something to carry: on pytest-xdist's controller from
    the start, elsewhere from the first phase with events, so a clean run pays nothing per
    report. tryfirst: before pytest-xdist's worker sends the report to the controller.
    """

    __slots__ = ("session",)

    def __init__(self, session: NetguardSession) -> None:
        self.session = session

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        session = self.session
        if session._pending:
            session.take_report(report)
        if _carries_events(report):
            session.collect_events(report)


class Enforcing:
    """The hooks that enforce and report, registered by ``pytest_configure`` only when
    the mode is not ``off``."""

    __slots__ = ("config", "session", "reporting")

    def __init__(self, config: pytest.Config, session: NetguardSession) -> None:
        self.config = config
        self.session = session
        self.reporting = False

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, object, object]:
        session = self.session
        g = session.collection()
        with g:
            try:
                report = yield
            finally:
                violations = session.collection_done(g)
        assert isinstance(report, pytest.CollectReport)
        if violations:
            setattr(report, REPORT_ATTR, [event_dict(v) for v in violations])
            if session.settings.mode == "strict" and report.passed:
                # the module swallowed the error: its collection fails all the same
                report.outcome = "failed"
                report.longrepr = session.collection_failure(violations)
        return report

    def start_reports(self) -> None:
        """Register the hook that puts each phase's events on its report (once)."""
        if not self.reporting:
            self.config.pluginmanager.register(Reports(self.session), REPORTS)
            self.reporting = True

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if _carries_events(report):
            self.session.collect_events(report)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        lines = self.session.summary()
        if self.session.settings.verbose:
            lines += ["every network event:", *self.session.verbose_table()]
        if lines:
            terminalreporter.section("netguard")
            for line in lines:
                terminalreporter.line(line)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        report = self.session.settings.report
        if report is None or hasattr(session.config, "workerinput"):
            return  # under pytest-xdist the controller writes the report
        self.session.write_report(str(report))


def _carries_events(report: pytest.TestReport | pytest.CollectReport) -> bool:
    """Whether ``report`` carries netguard's events (a look into its ``__dict__``: a
    ``hasattr`` that fails raises and catches an AttributeError, once per report)."""
    attrs = report.__dict__
    return REPORT_ATTR in attrs or ALLOWED_ATTR in attrs


def _origin_fields(e: dict[str, Any]) -> dict[str, Any]:
    """The JSON report's ``origin`` of an event, and a child's ``pid`` and ``program``."""
    origin = e.get("origin") or "python"
    if origin == "child":
        return {"origin": origin, "pid": e.get("pid"), "program": e.get("program")}
    return {"origin": origin}


def _origin_text(e: dict[str, Any]) -> str:
    """How the summary and the table say where a native-mode event came from."""
    origin = e.get("origin")
    if origin == "child":
        return f" (child process {e.get('pid')}: {e.get('program') or '?'})"
    if origin == "native":
        return " (C code in the test process)"
    return ""


def _is_numeric(host: str) -> bool:
    import ipaddress  # here, as json in write_report: only reports need them

    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True
