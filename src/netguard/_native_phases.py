"""Native mode in the pytest plugin: C libraries in the test process, and child processes.

Loaded by :mod:`netguard.plugin` only when native mode is on (``--netguard-native``,
``NETGUARD_NATIVE=1``, ini ``netguard_native``) and the mode is ``strict`` or ``warn``;
otherwise neither this module, nor ``netguard.native``, nor the C module
``netguard._native`` is imported, and the environment is left alone.

:class:`NativePhases` is registered as a plugin of its own, next to the session's phase
hooks (:class:`netguard._session.NetguardSession`), so that the per-test path of a
session without native mode is exactly what it was. Its hooks are ``trylast`` wrappers of
each phase, as the session's, registered after the session's, so that pluggy runs them
inside the session's:

- at the entry of each phase (setup, call, teardown): the test's policy is registered
  with ``netguard._native`` (once per distinct policy) and activated for C code in this
  process, and the test's child environment (``LD_PRELOAD``, the policy file, test id,
  size, phase, mode, events file) is put into ``os.environ``, where every child process
  finds it; ``netguard._native``'s exec and ``posix_spawn`` hooks give it back to a child
  started with an environment of its own;
- at the end of each phase (after the phase's implementations, before the session ends
  the phase): the in-process judge is switched off, the records of this process (a ring
  buffer) and of children (the events file) are drained, and each denied or warned call
  becomes a :class:`~netguard.errors.Violation` of the running phase, with its
  ``origin`` (``"native"`` or ``"child"``): the session's end of phase then fails the
  phase in strict mode, and warn mode warns once per test and destination, as for the
  Python-level hooks.

See docs/native.md ("Native mode in pytest") and docs/internals.md.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from netguard import _native, native
from netguard._report import event_dict
from netguard.errors import NetworkViolationWarning, Violation, format_destination
from netguard.native import (
    ENV_EVENTS,
    ENV_MODE,
    ENV_PHASE,
    ENV_POLICY,
    ENV_RECORD,
    ENV_SIZE,
    ENV_TEST,
    NativeEvent,
    NativeSession,
)

if TYPE_CHECKING:
    from netguard._session import NetguardSession

__all__ = ["SESSION_TEST", "NativePhases"]

#: The test id of events drained after the last phase of the session.
SESSION_TEST = "<session>"

#: The variables native mode sets in ``os.environ`` (and puts back at the end).
_VARS = ("LD_PRELOAD", ENV_POLICY, ENV_MODE, ENV_EVENTS, ENV_TEST, ENV_SIZE, ENV_PHASE, ENV_RECORD)


class NativePhases:
    """Native mode for one pytest session (see the module's docstring).

    Creating it installs ``netguard._native``'s hooks and makes the session's directory
    (policy files, events file); :meth:`close` undoes both and restores the environment.
    ``NativeUnsupported`` or ``RuntimeError`` when native mode cannot run here.
    """

    # slots: see NetguardSession's
    __slots__ = (
        "session",
        "strict",
        "record",
        "files",
        "_saved",
        "_static",
        "_policies",
        "_item",
        "_index",
        "_env_set",
        "_closed",
        "init_errors",
    )

    def __init__(self, session: NetguardSession) -> None:
        self.session = session
        self.strict = session.settings.mode == "strict"
        self.record = session.observing  # the report and the table list allowed calls
        self.files = NativeSession()
        self._saved = {name: os.environ.get(name) for name in _VARS}
        self._static: dict[str, str] = {
            "LD_PRELOAD": native.preload_value(self._saved["LD_PRELOAD"], self.files.shim),
            ENV_MODE: "strict" if self.strict else "warn",
            ENV_EVENTS: str(self.files.events_path),
        }
        if self.record:
            self._static[ENV_RECORD] = "all"
        try:
            _native.install(
                str(self.files.shim),
                str(self.files.events_path),
                strict=self.strict,
                record_allowed=self.record,
            )
        except BaseException:
            self.files.close()
            raise
        # id(netguard.Policy) -> (the policy, kept alive; its index in _native; its file)
        self._policies: dict[int, tuple[object, int, str]] = {}
        self._item: pytest.Item | None = None
        self._index = -1
        self._env_set = False
        self._closed = False
        #: Problems children reported about their configuration (``init`` events).
        self.init_errors: list[str] = []

    # ------------------------------------------------------------------ the phases

    # One trylast wrapper per phase, as the session's, and registered after it, so that
    # pluggy runs it inside the session's: it starts after the session's guard did and
    # ends before it.

    def _phase(self, item: pytest.Item, phase: str) -> Generator[None, object, object]:
        self._enter(item, phase)
        try:
            return (yield)
        finally:
            self._leave(item)

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._phase(item, "setup"))

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._phase(item, "call"))

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._phase(item, "teardown"))

    def _leave(self, item: pytest.Item) -> None:
        """End the phase for native mode, before the session ends it (and before pytest
        builds its report): what C code and children did becomes the phase's."""
        _native.activate(None)
        events = _native.drain()
        children = self.files.drain()
        if events or children:
            self._attribute(item, events, children)
            self.session._core.mark_base()  # the session's end of the phase reports them

    def _enter(self, item: pytest.Item, phase: str) -> None:
        if item is not self._item:  # (the session's wrapper has aimed its guard at it)
            self._aim(item)
        os.environ[ENV_PHASE] = phase
        _native.activate(self._index, self.strict)

    def _aim(self, item: pytest.Item) -> None:
        """The policy and labels of ``item``, whose phases start now."""
        session = self.session
        policy = session._info.policy
        entry = self._policies.get(id(policy))
        if entry is None:
            blob = native._blob_of(policy)
            path = str(self.files.policy_file(blob))
            entry = (policy, _native.register(blob, path), path)
            self._policies[id(policy)] = entry
        g = session._guard
        environ = os.environ
        if not self._env_set:
            environ.update(self._static)
            if not self.record:
                environ.pop(ENV_RECORD, None)
            self._env_set = True
        environ[ENV_POLICY] = entry[2]
        environ[ENV_TEST] = g.test or ""
        environ[ENV_SIZE] = g.size or session.settings.default_size
        self._index = entry[1]
        self._item = item

    # ------------------------------------------------------------------ attribution

    def _attribute(
        self, item: pytest.Item, events: list[tuple[Any, ...]], children: list[NativeEvent]
    ) -> None:
        """Record the drained events on the running phase's guard: violations (denied or
        warned calls), or observed events (allowed calls, when they are recorded)."""
        g = self.session._guard
        now = time.time()
        threads = {t.native_id: t.name for t in threading.enumerate()} if events else {}
        for op, verdict, family, host, port, _pid, tid, _policy in events:
            name = threads.get(tid)
            if name is None:  # a thread that C code started
                name = f"native thread {tid}"
                where = f"C code in the test process (a thread of C code, tid {tid})"
            else:
                where = f"C code in the test process (thread {name})"
            self._event(item, g, op, verdict, family, host, port, name, now, where, "native")
        for e in children:
            if e.op == "init":
                self._init_error(item, e)
                continue
            where = f"child process {e.pid} ({e.exe or '?'})"
            if e.test and e.test != g.test:
                where += f", started during {e.test}"
            self._event(
                item,
                g,
                e.op,
                e.verdict,
                e.family,
                e.host,
                e.port,
                f"pid {e.pid}",
                now,
                where,
                "child",
                e.pid,
                e.program,
            )

    def _event(
        self,
        item: pytest.Item,
        g: Any,
        op: str,
        verdict: str,
        family: int,
        host: str | None,
        port: int | None,
        thread: str,
        now: float,
        where: str,
        origin: str,
        pid: int | None = None,
        program: str | None = None,
    ) -> None:
        if verdict == "allowed":
            if self.session.observing and host is not None:
                self.session._observe(op, family, host, port, origin, pid, program)
            return
        v = Violation(
            op,
            family,
            host,
            port,
            format_destination(family, host, port),
            thread,
            now,
            g.test,
            g.size,
            g.phase,
            where,
            origin,
            pid,
            program,
        )
        g.violations.append(v)
        if self.strict:
            return  # the session's end of the phase fails it
        warned: set[str] | None = g.warned
        if warned is not None and v.destination in warned:
            return
        try:
            _warn(item, v.warning())
        except NetworkViolationWarning:
            g.escalated = True  # -W error: the phase fails as in strict mode
            return
        if warned is not None:
            warned.add(v.destination)

    def _init_error(self, item: pytest.Item, e: NativeEvent) -> None:
        """A child that could not use its configuration (and denied every call)."""
        text = (
            f"netguard: native mode in child process {e.pid} ({e.program}): "
            f"{e.error or e.host or 'unusable configuration'}"
        )
        if text in self.init_errors:
            return
        self.init_errors.append(text)
        try:
            _warn(item, pytest.PytestWarning(text))
        except Warning:
            pass  # a warnings filter made it an error: the terminal summary shows it

    # ------------------------------------------------------------------ the end

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        """Events drained after the last phase (children still running then) go to the
        summary and the report as ``<session>``'s; the environment is put back."""
        _native.activate(None)
        events = _native.drain()
        children = [e for e in self.files.drain() if e.op != "init"]
        session = self.session
        size = session.settings.default_size
        now = time.time()
        found: list[Violation] = []
        for op, verdict, family, host, port, _pid, tid, _policy in events:
            if verdict != "allowed":
                where = "C code in the test process"
                dest = format_destination(family, host, port)
                found.append(
                    Violation(
                        op,
                        family,
                        host,
                        port,
                        dest,
                        f"native thread {tid}",
                        now,
                        SESSION_TEST,
                        size,
                        "",
                        where,
                        "native",
                    )
                )
        for e in children:
            if e.verdict != "allowed":
                found.append(
                    Violation(
                        e.op,
                        e.family,
                        e.host,
                        e.port,
                        e.dest,
                        f"pid {e.pid}",
                        now,
                        SESSION_TEST,
                        e.size or size,
                        "",
                        f"child process {e.pid}",
                        "child",
                        e.pid,
                        e.program,
                    )
                )
        session.events.extend(event_dict(v) for v in found)
        self._restore_environment()

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        dropped = _native.dropped()
        if not self.init_errors and not dropped:
            return
        terminalreporter.section("netguard native mode")
        for text in self.init_errors:
            terminalreporter.line(text)
        if dropped:
            terminalreporter.line(
                f"netguard: {dropped} native event(s) of this process were not recorded: "
                f"more than {_native.RING_CAPACITY} in one phase"
            )

    def _restore_environment(self) -> None:
        if not self._env_set:
            return
        self._env_set = False
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def close(self) -> None:
        """Uninstall the hooks, put the environment back, remove the session's files."""
        if self._closed:
            return
        self._closed = True
        _native.activate(None)
        _native.uninstall()
        self._restore_environment()
        self.files.close()


def _warn(item: pytest.Item, warning: Warning) -> None:
    """Warn about ``item`` at its definition (the call's own place is in another process,
    or in C code)."""
    path, lineno, _ = item.location
    warnings.warn_explicit(
        warning, type(warning), str(item.path) if item.path else path, (lineno or 0) + 1
    )
