"""``guard()``: enforce a policy for a block of code, and the deny callback behind it.

The implementation's hooks judge every socket and DNS call against the active policy; an
allowed call never reaches Python (C implementation). A denied call calls
:func:`_on_denied` once, on the calling thread, which records a
:class:`~netguard.errors.Violation` on the innermost active :class:`Guard` and then raises
(strict) or warns and returns (warn: the call proceeds).

Guards form one process-wide stack, like the active policy they control: the innermost
guard's policy and mode hold for every thread, and a violation on any thread is recorded on
the innermost guard. Guards nest; leaving one restores the policy and mode of the guard it
was nested in, and leaving the outermost one uninstalls the hooks (unless they were pinned
with :func:`install_hooks`, which the pytest plugin does once per session).
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from netguard import _impl
from netguard._impl import Impl, Policy
from netguard.errors import (
    NetworkViolationError,
    NetworkViolationWarning,
    Violation,
    format_destination,
)

__all__ = [
    "MODES",
    "Guard",
    "active_guard",
    "aim_base",
    "enter_base",
    "exempt_loopback",
    "guard",
    "install_hooks",
    "leave_base",
    "uninstall_hooks",
]

MODES = ("strict", "warn", "off")

# One lock for the stack and the hooks' state. Held only for bookkeeping, never while
# calling user code or warning; an RLock in case a hook fires on this thread meanwhile.
_lock = threading.RLock()
_stack: list[Guard] = []
# The implementation whose hooks guards use, or None; _owned when this module installed
# them (hooks installed by someone else are used but never uninstalled here).
_hooks: Impl | None = None
_owned = False
# True while install_hooks() keeps the hooks installed between guards.
_pinned = False
# (compiled policy or None, strict) of the innermost guard of the stack, as activated
# through this module; None while the stack is empty (the base guard's policy holds then).
_state: tuple[Any, bool] | None = None
# Mode of the guard that exited (or was aimed at) last: judges a denial that races the
# exit of every guard.
_fallback_mode = "strict"
# The base guard, beneath the stack (the pytest plugin's guard of the phase that runs now)
# is the owner of the implementation's base switch: see aim_base() and _base_guard().


class Guard:
    """What :func:`guard` returns: a context manager enforcing ``policy`` in ``mode``.

    ``violations`` lists every denied operation recorded while this guard was the
    innermost one (each a :class:`netguard.errors.Violation`), in order, from every thread.
    Clearing it inside the block acknowledges them: a strict guard then does not re-raise
    them on exit. ``test``, ``size`` and ``phase`` describe where the guard runs (the pytest
    plugin sets them); messages name them when set. ``escalated`` turns true in warn mode
    when a warnings filter (``-W error``) made a violation's warning an error: the call was
    then blocked, and the guard re-raises it on exit if swallowed, as a strict one would.

    A Guard is entered once; create a new one with :func:`guard` to enter again.
    """

    __slots__ = (
        "_entered",
        "_exited",
        "_prev",
        "_pushed",
        "_state",
        "escalated",
        "mode",
        "phase",
        "policy",
        "size",
        "test",
        "violations",
        "warned",
    )

    def __init__(
        self,
        policy: Policy | None,
        mode: str = "strict",
        *,
        test: str | None = None,
        size: str | None = None,
        phase: str | None = None,
        warned: set[str] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"netguard mode {mode!r}: expected strict, warn or off")
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError(
                f"netguard.guard() takes a netguard.Policy or None, not {type(policy).__name__}"
            )
        self.policy = policy
        self.mode = mode
        self.test = test
        self.size = size
        self.phase = phase
        self.warned = warned
        self.violations: list[Violation] = []
        # warn mode: a warnings filter turned a violation's warning into an error
        self.escalated = False
        self._state = self._activation()
        self._prev: tuple[Any, bool] | None = None
        self._pushed = False
        self._entered = False
        self._exited = False

    @property
    def active(self) -> bool:
        """True between ``__enter__`` and ``__exit__`` (or while the phase it is the base
        guard of runs)."""
        return self._pushed or _base_guard() is self

    @property
    def enforcing(self) -> bool:
        """True when this guard checks anything (a policy, and mode strict or warn)."""
        return self.policy is not None and self.mode != "off"

    def __repr__(self) -> str:
        state = "active" if self.active else ("exited" if self._exited else "new")
        context = "".join(
            f", {name}={value!r}"
            for name, value in (("test", self.test), ("size", self.size), ("phase", self.phase))
            if value is not None
        )
        return (
            f"<netguard.Guard {state} mode={self.mode!r}{context} policy={self.policy!r} "
            f"violations={len(self.violations)}>"
        )

    def __enter__(self) -> Guard:
        with _lock:
            if self._entered:
                raise RuntimeError("a netguard Guard can be entered only once")
            self._entered = True
            self._push()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        __tracebackhide__ = True  # pytest shows the violation, not this frame
        self._exited = True
        self._pop()
        self._raise_swallowed(exc)

    def _raise_swallowed(self, exc: BaseException | None) -> None:
        """Strict (or warn with a violation a warnings filter made an error): raise the
        first violation recorded if the block swallowed it.

        ``exc`` is the exception leaving the block, if any: when it is (or wraps) the
        violation, or is not an ``Exception`` at all (KeyboardInterrupt, SystemExit, a
        pytest outcome), nothing is raised over it.
        """
        __tracebackhide__ = True
        if not self.violations or (self.mode != "strict" and not self.escalated):
            return
        if exc is not None and (not isinstance(exc, Exception) or _carries_violation(exc)):
            # The violation surfaced (possibly wrapped: requests' ConnectionError, urllib's
            # URLError), or a KeyboardInterrupt, SystemExit or pytest outcome is on its
            # way out and must not be masked.
            return
        count = len(self.violations)
        raise self.violations[0].error(swallowed=count, escalated=self.mode != "strict")

    # The pytest plugin re-aims one guard at each test (_aim) and makes it the base guard
    # of each phase through the implementation's base switch (aim_base() below), setting
    # ``phase``; ``with`` enters a guard once.

    def _aim(
        self, policy: Policy | None, test: str | None, size: str | None, item: object, quick: bool
    ) -> None:
        """Point this (inactive) guard at another policy and test, and the implementation's
        base switch at the phases of ``item``, to run under it (see :func:`aim_base`): the
        plugin re-aims its one guard when a new test starts (in warn mode with a new set of
        destinations warned about: one warning per test and destination)."""
        global _fallback_mode
        if self._pushed:
            raise RuntimeError("an active netguard Guard cannot change its policy")
        self.policy = policy
        self.test = test
        self.size = size
        self._state = compiled, strict = self._activation()
        if self.warned is not None:
            self.warned = set()
        # aim_base(item, self, quick), inline: this runs once per test
        _fallback_mode = self.mode
        _hooks.aim_base(item, self, compiled, strict, quick)  # type: ignore[union-attr]

    def _activation(self) -> tuple[Any, bool]:
        """What entering activates: (compiled policy or None, strict)."""
        if self.policy is None or self.mode == "off":
            return (None, False)
        return (self.policy._compiled, self.mode == "strict")

    def _push(self) -> None:
        """Make this guard the innermost one and activate its policy."""
        global _state
        with _lock:
            if self._pushed:
                raise RuntimeError("this netguard Guard is already active")
            state = self._state
            impl = _hooks
            if state[0] is not None:
                impl = self.policy._impl  # type: ignore[union-attr]
                if _hooks is None:
                    _adopt(impl)
                elif _hooks is not impl:
                    raise RuntimeError(
                        f"this policy was compiled by the {impl.name!r} implementation, but "
                        f"the hooks of {_hooks.name!r} are installed; build the policy after "
                        "switching implementation"
                    )
            self._prev = _state
            if impl is not None:
                impl.activate(*state)  # the stack's level: above the base guard's
            _state = state
            self._pushed = True
            _stack.append(self)

    def _pop(self) -> None:
        """Leave: restore the policy of the guard this one was nested in."""
        global _state, _fallback_mode
        with _lock:
            if not self._pushed:
                raise RuntimeError("this netguard Guard is not active")
            self._pushed = False
            _fallback_mode = self.mode
            if _stack[-1] is self:
                _stack.pop()
                _state = self._prev
                if _hooks is not None:
                    if _state is None:
                        _hooks.deactivate()  # the base guard's policy holds again
                    else:
                        _hooks.activate(*_state)
            else:
                # Left out of order (another thread's guard is inside this one): the guard
                # that was nested in this one now restores what this one would have.
                position = _index(self)
                del _stack[position]
                _stack[position]._prev = self._prev
            if not _stack and not _pinned:
                _release()

    def _record(self, violation: Violation) -> None:
        self.violations.append(violation)


Guard.__module__ = "netguard"  # its public home; shown so in tracebacks and docs


def _adopt(impl: Impl) -> None:
    """Make ``impl``'s hooks the ones guards use, installing them if needed (lock held)."""
    global _hooks, _owned
    _owned = not impl.is_installed()
    if _owned:
        impl.install(_on_denied)
    _hooks = impl


def _release() -> None:
    """Deactivate, and uninstall the hooks if this module installed them (lock held)."""
    global _hooks, _owned, _state
    if _hooks is not None:
        _hooks.deactivate()
        _hooks.leave_base()
        _hooks.aim_base(None, None, None, False, False)
        if _owned:
            _hooks.uninstall()
    _hooks = None
    _owned = False
    _state = None


def _index(g: Guard) -> int:
    for i in range(len(_stack) - 1, -1, -1):
        if _stack[i] is g:
            return i
    raise RuntimeError("netguard guard stack is corrupt")  # pragma: no cover


def _carries_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was caused by, a NetworkViolationError (say, wrapped by
    ``requests`` into a ConnectionError): then the violation was not swallowed."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, NetworkViolationError):
            return True
        if e.__cause__ is not None:
            todo.append(e.__cause__)
        if e.__context__ is not None:
            todo.append(e.__context__)
        reason = getattr(e, "reason", None)  # urllib's URLError keeps it here
        if isinstance(reason, BaseException):
            todo.append(reason)
        for inner in getattr(e, "exceptions", None) or ():  # exception groups
            if isinstance(inner, BaseException):
                todo.append(inner)
    return False


def guard(
    policy: Policy | None,
    mode: str = "strict",
    *,
    test: str | None = None,
    size: str | None = None,
    phase: str | None = None,
    warned: set[str] | None = None,
) -> Guard:
    """Enforce ``policy`` for the duration of a ``with`` block.

    ``mode`` is ``"strict"`` (a denied call raises
    :class:`~netguard.NetworkViolationError` before anything is sent; a violation the code
    swallowed is raised when the block exits), ``"warn"`` (a denied call emits a
    :class:`~netguard.NetworkViolationWarning` and proceeds) or ``"off"`` (nothing is
    checked; nothing is patched unless an outer guard already did). ``policy=None`` allows
    everything.

    ``warned``, in warn mode, is a set of destinations already warned about: a destination
    in it is recorded but not warned about again, and a new one is added (the pytest plugin
    passes one set per test, so each test warns once per destination).

    >>> import netguard
    >>> with netguard.guard(netguard.Policy(["127.0.0.0/8"])) as g:
    ...     pass  # loopback allowed, anything else raises
    """
    return Guard(policy, mode, test=test, size=size, phase=phase, warned=warned)


guard.__module__ = "netguard"


def install_hooks(impl: Impl | None = None) -> Impl:
    """Install the hooks of ``impl`` (default: the current one) and keep them installed
    between guards until :func:`uninstall_hooks`. With no guard active nothing is checked.

    For the pytest plugin, which installs once per session and switches the policy per
    test by pointer; scripts need only :func:`guard`.
    """
    global _pinned
    with _lock:
        impl = impl if impl is not None else _impl.current()
        if _hooks is None:
            _adopt(impl)
        elif _hooks is not impl:
            raise RuntimeError(f"the hooks of {_hooks.name!r} are already installed")
        _pinned = True
        return impl


def uninstall_hooks() -> None:
    """Undo :func:`install_hooks`. ``RuntimeError`` while a guard is active."""
    global _pinned
    with _lock:
        if _stack or _base_guard() is not None:
            raise RuntimeError("cannot uninstall netguard's hooks while a guard is active")
        _pinned = False
        _release()


def aim_base(item: object, g: Guard, quick: bool) -> None:
    """Aim the implementation's base switch at the phases of ``item``, to run under ``g``:
    from now on each phase the switch starts makes ``g`` the base guard, beneath every
    guard of the stack, and its policy the base level.

    The pytest plugin's path, once per test (through :meth:`Guard._aim`, which re-aims
    the guard too and does this inline): the hooks must be installed
    (:func:`install_hooks`) and ``g`` built by the same implementation. The plugin then
    names the phase (``g.phase``) and starts and ends it with one call of the
    implementation each: ``enter_base(item)``, which starts the phase when ``quick`` (else
    Python does, with ``start_base()``: the test's setup must fail, or events are
    observed), and ``leave_base()``, which returns ``g`` only when the phase has something
    to report (a call was denied, ``mark_base()`` was called, or the aim was not quick).
    Guards entered during a phase nest on top of it: the implementation judges by the
    innermost of the stack while there is one and by the base's policy otherwise, so no
    lock is needed. A violation while no guard of the stack is active is recorded on the
    base guard.
    """
    global _fallback_mode
    _fallback_mode = g.mode
    _hooks.aim_base(item, g, *g._state, quick)  # type: ignore[union-attr]


def enter_base(g: Guard) -> None:
    """Make ``g`` the base guard now, until :func:`leave_base` (:func:`aim_base` at ``g``
    itself, then the phase started)."""
    aim_base(g, g, False)
    _hooks.start_base()  # type: ignore[union-attr]


def leave_base() -> Guard | None:
    """End the running phase; return its base guard, or ``None`` if none ran."""
    hooks = _hooks
    if hooks is None:
        return None
    g = hooks.base_owner()
    hooks.leave_base()
    return g  # type: ignore[no-any-return]


def _base_guard() -> Guard | None:
    """The base guard of the running phase, or ``None``."""
    hooks = _hooks
    return None if hooks is None else hooks.base_owner()  # type: ignore[no-any-return]


def active_guard() -> Guard | None:
    """The innermost active guard, or ``None``."""
    with _lock:
        return _stack[-1] if _stack else _base_guard()


# --------------------------------------------------------------------------- the callback


# Per thread: inside a function that may use loopback whatever the size (see below).
_exempt = threading.local()


def exempt_loopback(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, allowed loopback connections on the thread that calls it, whatever the size.

    For ``socket.socketpair`` where it is written in Python (Windows, where it connects a
    pair of loopback sockets through a listener): asyncio's event loops call it to make
    their self-pipe, so without this no event loop would start in a small test.
    """

    @functools.wraps(fn)
    def exempted(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_exempt, "depth", 0)
        _exempt.depth = depth + 1
        try:
            return fn(*args, **kwargs)
        finally:
            _exempt.depth = depth

    exempted.__netguard_exempt__ = fn  # type: ignore[attr-defined]
    return exempted


def _is_loopback(family: int, host: str | None) -> bool:
    if family not in (socket.AF_INET, socket.AF_INET6) or host is None:
        return False
    import ipaddress  # here: only denied calls get this far

    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False


def _on_denied(op: str, family: int, host: str | None, port: int | None) -> None:
    """The deny callback given to ``impl.install``: record, then raise or warn.

    Runs with the GIL on the thread that made the call, only for denied calls.
    """
    __tracebackhide__ = True  # pytest shows the user's call, not this frame
    if getattr(_exempt, "depth", 0) and _is_loopback(family, host):
        return
    with _lock:
        g = _stack[-1] if _stack else _base_guard()
        mode = g.mode if g is not None else _fallback_mode
    stacklevel, frame = _user_frame()
    violation = Violation(
        op,
        family,
        host,
        port,
        format_destination(family, host, port),
        threading.current_thread().name,
        time.time(),
        None if g is None else g.test,
        None if g is None else g.size,
        None if g is None else g.phase,
        _describe(frame),
    )
    del frame
    if g is not None:
        if not g.enforcing:
            return  # a denial judged just before a guard checking nothing took over
        g._record(violation)
    if mode == "warn":
        warned = None if g is None else g.warned
        if warned is not None and violation.destination in warned:
            return
        try:
            warnings.warn(violation.warning(), stacklevel=stacklevel)
        except NetworkViolationWarning as escalated:
            # A warnings filter made the warning an error (-W error). Block the call as
            # strict mode would, with the error strict raises: an OSError, so the caller's
            # cleanup runs (socket.create_connection closes its socket on OSError only).
            if g is not None:
                g.escalated = True
            raise violation.error(escalated=True) from escalated
        if warned is not None:
            warned.add(violation.destination)
        return
    raise violation.error()


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_skip_prefixes: tuple[str, ...] | None = None


def _library_prefixes() -> tuple[str, ...]:
    global _skip_prefixes
    if _skip_prefixes is None:
        import sysconfig

        paths = sysconfig.get_paths()
        prefixes = {_PACKAGE_DIR}
        for key in ("stdlib", "platstdlib", "purelib", "platlib"):
            path = paths.get(key)
            if path:
                prefixes.add(os.path.join(os.path.abspath(path), ""))
        _skip_prefixes = tuple(sorted(prefixes))
    return _skip_prefixes


def _is_library(filename: str) -> bool:
    if filename.startswith("<"):  # <frozen ...>, <string>: not where a user wrote the call
        return filename.startswith("<frozen")
    if os.sep + "site-packages" + os.sep in filename or "dist-packages" in filename:
        return True
    return filename.startswith(_library_prefixes())


def _user_frame() -> tuple[int, FrameType | None]:
    """Where the user's code made the denied call: the first frame outside netguard, the
    standard library and installed packages (``requests.get(...)`` in a test, not
    urllib3's socket code), or else the first outside netguard; with its ``stacklevel``
    for ``warnings.warn`` in :func:`_on_denied`."""
    frame: FrameType | None = sys._getframe(2)  # called by _on_denied (C hooks have none)
    level = 2
    fallback: tuple[int, FrameType | None] | None = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR):
            if fallback is None:
                fallback = (level, frame)
            if not _is_library(filename):
                return level, frame
        frame = frame.f_back
        level += 1
    return fallback if fallback is not None else (2, None)


def _describe(frame: FrameType | None) -> str | None:
    """A frame as messages show it: ``tests/test_api.py:12 (test_fetch)``."""
    if frame is None:
        return None
    path = frame.f_code.co_filename
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        relative = path
    if not relative.startswith(".."):
        path = relative
    return f"{path}:{frame.f_lineno} ({frame.f_code.co_name})"
