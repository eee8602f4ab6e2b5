"""What the pytest plugin keeps for a session: settings, policies, and every violation.

:mod:`netguard.plugin` holds only the hooks; they call into one :class:`NetguardSession`,
created in ``pytest_configure`` when the mode is not ``off`` (in ``off`` mode none of this
module is imported and nothing is patched). The hooks stay installed for the session; each
collector and each phase of each test runs inside a :func:`netguard.guard` with the policy
of its size, so switching tests is a pointer swap in the C core.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from netguard._guard import Guard, guard, install_hooks, uninstall_hooks
from netguard._report import REPORT_ATTR, event_dict
from netguard.config import Settings
from netguard.errors import Violation
from netguard.policy import (
    CompiledPolicyInfo,
    MarkerError,
    PolicySet,
    marker_data,
    resolve_markers,
)
from netguard.rules import RuleError

__all__ = ["COLLECTION", "NetguardSession"]

#: The test id that events during collection (importing test modules) are attributed to.
COLLECTION = "<collection>"

_POLICY = pytest.StashKey["tuple[CompiledPolicyInfo, str] | BaseException"]()
_WARNED = pytest.StashKey["set[str]"]()
_PHASES = pytest.StashKey["dict[str, list[dict[str, Any]]]"]()


class NetguardSession:
    """The enforcing side of the plugin for one pytest session."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policies = PolicySet(settings.allow_rules)
        self.impl = install_hooks(self.policies.impl)
        self.policies.precompile()
        self.default = self.policies.for_test(settings.default_size)
        # every violation of the run, from this process or from xdist workers' reports
        self.events: list[dict[str, Any]] = []
        self._collection_warned: set[str] = set()

    def close(self) -> None:
        uninstall_hooks()

    # ------------------------------------------------------------------ attribution

    def _item_policy(self, item: pytest.Item) -> tuple[CompiledPolicyInfo, str]:
        """The policy and size of ``item``, resolved once from its markers.

        A marker error fails the test's setup; its teardown then runs under the default
        size (it must still be guarded).
        """
        cached = item.stash.get(_POLICY, None)
        if cached is None:
            try:
                markers = resolve_markers(
                    marker_data(item), default=self.settings.default_size, where=item.nodeid
                )
                info = self.policies.for_test(
                    markers.size, markers.extra, allow_network=markers.allow_network
                )
                cached = (info, markers.size)
            except (MarkerError, RuleError) as exc:
                cached = exc
            item.stash[_POLICY] = cached
        if isinstance(cached, BaseException):
            raise cached
        return cached

    def phase_guard(self, item: pytest.Item, phase: str) -> Guard:
        """The guard for one phase of ``item`` (setup, call, teardown): its size's policy.

        The caller enters it around the phase and then passes its violations to
        :meth:`keep`.
        """
        problem = None
        try:
            info, size = self._item_policy(item)
        except (MarkerError, RuleError) as exc:
            problem = str(exc)
            info, size = self.default, self.settings.default_size
        if problem is not None and phase == "setup":
            pytest.fail(f"netguard: {problem}", pytrace=False)
        return guard(
            info.policy,
            self.settings.mode,
            test=item.nodeid,
            size=size,
            phase=phase,
            warned=item.stash.setdefault(_WARNED, set()),
        )

    @contextlib.contextmanager
    def collection(self) -> Iterator[list[Violation]]:
        """Run one collector (importing a test module) under the default size.

        Yields the list the guard records into; the caller attaches what it holds to the
        collection report, and a violation the module swallowed fails that module's
        collection rather than the session.
        """
        g = guard(
            self.default.policy,
            self.settings.mode,
            test=COLLECTION,
            size=self.settings.default_size,
            phase="collection",
            warned=self._collection_warned,
        )
        with g:
            try:
                yield g.violations
            finally:
                g.violations.clear()  # reported through the collection report instead

    def keep(self, violations: list[Violation], item: pytest.Item, phase: str) -> None:
        """Remember the violations of a phase of ``item`` for its report."""
        item.stash.setdefault(_PHASES, {})[phase] = [event_dict(v) for v in violations]
        for v in violations:
            # one JUnit XML property per violation (pytest's junitxml reads these)
            item.user_properties.append((f"netguard_{v.slug.lower()}", v.destination))

    @staticmethod
    def attach(item: pytest.Item, report: pytest.TestReport) -> None:
        """Put the violations of ``report``'s phase on the report."""
        events = item.stash.get(_PHASES, {}).pop(report.when, None)
        if events:
            setattr(report, REPORT_ATTR, events)

    def collect_events(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        """Take the violations a report carries (this process's, or a worker's)."""
        self.events.extend(getattr(report, REPORT_ATTR, None) or ())

    # ------------------------------------------------------------------ reporting

    def header(self) -> str:
        s = self.settings
        return (
            f"netguard: mode {s.mode}, default size {s.default_size}, "
            f"{len(s.allow_rules)} allow rule(s), implementation {self.impl.name} "
            f"({self.impl.path})"
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
                lines.append(f"    {e['phase']}: {e['op']} {e['destination']} [{e['slug']}]")
        lines.append("by destination:")
        counts = Counter(e["destination"] for e in self.events)
        for destination, n in counts.most_common():
            lines.append(f"  {n:>5}  {destination}")
        return lines

    @staticmethod
    def collection_failure(violations: list[Violation]) -> str:
        """The text of a collection error for a module that swallowed a strict violation."""
        return str(violations[0].error(swallowed=len(violations)))
