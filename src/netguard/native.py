"""Native mode for child processes: the preload library, its inputs, and its events.

A child process judges its own network calls with netguard's preload library
(``netguard/_preload*.so``, built from ``src/ng_preload.c``; Linux only), which reads:

=========================  ===========================================================
``LD_PRELOAD``             the library (prepended to any value already there)
``NETGUARD_NATIVE_POLICY`` a compiled policy blob (``Policy.to_bytes()`` of the C core)
``NETGUARD_NATIVE_MODE``   ``strict`` (a denied call fails with EACCES) or ``warn``
``NETGUARD_NATIVE_EVENTS`` the events file: one JSON object per line, appended
``NETGUARD_NATIVE_TEST``   the test id events are labelled with
``NETGUARD_NATIVE_SIZE``   the test's size, for the same labels
``NETGUARD_NATIVE_PHASE``  the phase (``setup``, ``call``, ``teardown``), optional
``NETGUARD_NATIVE_RECORD`` ``all`` records allowed calls too (default: denied only)
=========================  ===========================================================

:class:`NativeSession` keeps one directory per session: each distinct policy is written
there once (:meth:`NativeSession.policy_file`), :meth:`NativeSession.child_env` gives the
variables a child needs, and :meth:`NativeSession.drain` reads the events children have
appended since the last call. See ``docs/native.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any, Final

__all__ = [
    "ENV_EVENTS",
    "ENV_MODE",
    "ENV_PHASE",
    "ENV_POLICY",
    "ENV_RECORD",
    "ENV_SIZE",
    "ENV_TEST",
    "ENV_VARS",
    "NativeEvent",
    "NativeSession",
    "NativeUnsupported",
    "check_supported",
    "preload_value",
    "shim_path",
]

ENV_POLICY: Final = "NETGUARD_NATIVE_POLICY"
ENV_MODE: Final = "NETGUARD_NATIVE_MODE"
ENV_EVENTS: Final = "NETGUARD_NATIVE_EVENTS"
ENV_TEST: Final = "NETGUARD_NATIVE_TEST"
ENV_SIZE: Final = "NETGUARD_NATIVE_SIZE"
ENV_PHASE: Final = "NETGUARD_NATIVE_PHASE"
ENV_RECORD: Final = "NETGUARD_NATIVE_RECORD"
#: Every variable the preload library reads besides ``LD_PRELOAD``.
ENV_VARS: Final = (ENV_POLICY, ENV_MODE, ENV_EVENTS, ENV_TEST, ENV_SIZE, ENV_PHASE, ENV_RECORD)

MODES: Final = ("strict", "warn")
SIZES: Final = ("small", "medium", "large", "xlarge")

_SHIM_NAME: Final = "_preload"
_BLOB_MAGIC: Final = b"NGPOLICY"
# A sanitizer runtime must stay the first preloaded object (as in ng_native.c).
_RUNTIMES: Final = ("libasan", "libclang_rt.asan", "libtsan", "libclang_rt.tsan", "libhwasan")


class NativeUnsupported(RuntimeError):
    """Native mode cannot run here; ``str(err)`` is a one-line reason."""


# --------------------------------------------------------------------------- the library

_shim: Path | None = None


def shim_path() -> Path:
    """The preload library inside the installed package.

    Raises :class:`NativeUnsupported` on a platform other than Linux, or when the
    library is missing (a build that skipped it).
    """
    global _shim
    if _shim is not None:
        return _shim
    if not sys.platform.startswith("linux"):
        raise NativeUnsupported(
            f"native mode needs Linux (LD_PRELOAD and the GNU C library's symbols); "
            f"this is {sys.platform}"
        )
    here = Path(__file__).resolve().parent
    for suffix in EXTENSION_SUFFIXES:
        candidate = here / (_SHIM_NAME + suffix)
        if candidate.is_file():
            _shim = candidate
            return candidate
    raise NativeUnsupported(
        f"netguard's preload library ({_SHIM_NAME}*.so) is missing from {here}: "
        "reinstall netguard, or rebuild it in a checkout (pip install -e .)"
    )


def check_supported() -> None:
    """Raise :class:`NativeUnsupported` (one line) unless native mode can run here."""
    shim_path()


def preload_value(existing: str | None, shim: str | os.PathLike[str] | None = None) -> str:
    """``LD_PRELOAD`` with the preload library added to ``existing``.

    The library goes first, except behind a sanitizer runtime that is first already
    (AddressSanitizer insists on being the first preloaded object); a value that holds
    the library already is returned as it is.
    """
    path = os.fspath(shim) if shim is not None else str(shim_path())
    if not existing or not existing.strip(" :"):
        return path
    items = existing.replace(" ", ":").split(":")
    if path in items:
        return existing
    first = existing.split(":", 1)[0].split(" ", 1)[0]
    if os.path.basename(first).startswith(_RUNTIMES):
        rest = existing[len(first) :].lstrip(" :")
        return f"{first}:{path}:{rest}" if rest else f"{first}:{path}"
    return f"{path}:{existing}"


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class NativeEvent:
    """One line of the events file: a network call a child process made.

    ``verdict`` is ``"denied"`` (strict: the call failed with EACCES), ``"warned"`` (warn:
    it went through), ``"allowed"`` (only with ``NETGUARD_NATIVE_RECORD=all``) or
    ``"error"`` for an ``init`` event: the library could not use its configuration
    (``error`` says why; with no usable policy every judged call is denied).
    ``op``, ``family``, ``host`` and ``port`` are those of the deny callback
    (``docs/internals.md``): ``family`` 0 is a name, ``host`` an address's text, an AF_UNIX
    path (``@name`` for abstract) or a name; ``dest`` is the destination as every netguard
    message shows it. ``test``, ``size``, ``phase`` and ``mode`` are the labels the process
    was started with (``None`` when absent); ``exe`` is the program.
    """

    op: str
    verdict: str
    pid: int
    tid: int
    family: int = 0
    host: str | None = None
    port: int | None = None
    dest: str = ""
    test: str | None = None
    size: str | None = None
    phase: str | None = None
    mode: str | None = None
    exe: str | None = None
    error: str | None = None

    @property
    def blocked(self) -> bool:
        """Whether the call failed because of netguard (strict mode)."""
        return self.verdict == "denied"

    @property
    def program(self) -> str:
        """The program's file name (``curl``), or ``"?"``."""
        return os.path.basename(self.exe) if self.exe else "?"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NativeEvent:
        """An event from one decoded line; ``ValueError`` for anything malformed."""
        try:
            port = data.get("port")
            return cls(
                op=_text(data["op"]),
                verdict=_text(data["verdict"]),
                pid=int(data["pid"]),
                tid=int(data.get("tid", data["pid"])),
                family=int(data.get("family", 0)),
                host=_opt_text(data.get("host")),
                port=None if port is None else int(port),
                dest=_text(data.get("dest", "")),
                test=_opt_text(data.get("test")),
                size=_opt_text(data.get("size")),
                phase=_opt_text(data.get("phase")),
                mode=_opt_text(data.get("mode")),
                exe=_opt_text(data.get("exe")),
                error=_opt_text(data.get("error")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a netguard event: {exc!r}") from None


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {value!r}")
    return value


def _opt_text(value: object) -> str | None:
    return None if value is None else _text(value)


# --------------------------------------------------------------------------- the session


def _blob_of(policy: object) -> bytes:
    """The C core's blob of a policy: a ``netguard.Policy``, a ``CompiledPolicyInfo``, a
    compiled policy, or the bytes themselves. A policy compiled by the pure-Python
    reference is compiled again by the C core from its rules."""
    if isinstance(policy, (bytes, bytearray, memoryview)):
        blob = bytes(policy)
    else:
        target: Any = getattr(policy, "policy", policy)  # CompiledPolicyInfo -> Policy
        blob = bytes(target.to_bytes())
        if not blob.startswith(_BLOB_MAGIC):
            blob = _recompile(target)
    if not blob.startswith(_BLOB_MAGIC):
        raise ValueError("not a policy compiled by netguard's C core (bad magic)")
    return blob


def _recompile(policy: Any) -> bytes:
    rules = getattr(policy, "rules", None)
    if rules is None:
        raise NativeUnsupported(
            "native mode needs policies compiled by the C core, and this one was loaded "
            "from the reference implementation's bytes (NETGUARD_IMPL=python)"
        )
    from netguard import _impl

    compiled = _impl.load("c").compile(rules, allow_all=bool(policy.allow_all))
    blob: bytes = compiled.to_bytes()
    return blob


class NativeSession:
    """The files native mode shares with child processes for one session.

    ``directory`` (created if missing) holds the policy blobs and the events file; by
    default a fresh temporary directory, removed by :meth:`close`. Not thread-safe: the
    plugin calls it from the main thread.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        check_supported()
        if directory is None:
            self._dir = Path(tempfile.mkdtemp(prefix="netguard-native-"))
            self._owned = True
        else:
            self._dir = Path(directory).resolve()
            self._dir.mkdir(parents=True, exist_ok=True)
            self._owned = False
        self._events = self._dir / "events.jsonl"
        self._events.touch()
        self._by_object: dict[int, tuple[object, Path]] = {}
        self._by_digest: dict[str, Path] = {}
        self._offset = 0
        self._partial = b""
        self.malformed = 0
        """Lines of the events file that were not events (counted, skipped)."""
        self._closed = False

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def events_path(self) -> Path:
        return self._events

    @property
    def shim(self) -> Path:
        return shim_path()

    def policy_file(self, policy: object) -> Path:
        """The file holding ``policy``'s blob, written the first time it is asked for.

        ``policy``: a ``netguard.Policy``, a ``CompiledPolicyInfo``, a compiled policy of
        the C core, or blob bytes. The same object, or the same bytes, map to one file.
        """
        if self._closed:
            raise RuntimeError("this native session is closed")
        if not isinstance(policy, (bytes, bytearray, memoryview)):
            known = self._by_object.get(id(policy))
            if known is not None:
                return known[1]
        blob = _blob_of(policy)
        digest = hashlib.sha256(blob).hexdigest()[:24]
        path = self._by_digest.get(digest)
        if path is None:
            path = self._dir / f"policy-{digest}.ngp"
            # written whole and renamed into place: a child never maps half a file
            fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".policy-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
            self._by_digest[digest] = path
        if not isinstance(policy, (bytes, bytearray, memoryview)):
            self._by_object[id(policy)] = (policy, path)  # kept alive: the id stays its own
        return path

    def child_env(
        self,
        policy: object,
        test_id: str,
        size: str,
        mode: str,
        *,
        phase: str | None = None,
        record_allowed: bool = False,
        base: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The variables a child process needs to judge its calls under ``policy``.

        To be merged into the child's environment (``{**os.environ, **env}``).
        ``LD_PRELOAD`` is ``base``'s (default: ``os.environ``'s) with the library added
        (see :func:`preload_value`). ``mode`` is ``strict`` or ``warn``; ``size`` one of
        the sizes (a label: the policy decides).
        """
        if mode not in MODES:
            raise ValueError(f"native mode {mode!r}: expected strict or warn")
        if size not in SIZES:
            raise ValueError(f"test size {size!r}: expected small, medium, large or xlarge")
        environ = os.environ if base is None else base
        env = {
            "LD_PRELOAD": preload_value(environ.get("LD_PRELOAD"), self.shim),
            ENV_POLICY: str(self.policy_file(policy)),
            ENV_MODE: mode,
            ENV_EVENTS: str(self._events),
            ENV_TEST: test_id,
            ENV_SIZE: size,
        }
        if phase is not None:
            env[ENV_PHASE] = phase
        if record_allowed:
            env[ENV_RECORD] = "all"
        return env

    def drain(self) -> list[NativeEvent]:
        """The events appended since the last call, in file order.

        A last line still being written is kept for the next call; a line that is not an
        event is counted in :attr:`malformed` and skipped.
        """
        try:
            with open(self._events, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" after a complete last line
        events: list[NativeEvent] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                decoded = json.loads(line)
                if not isinstance(decoded, dict):
                    raise ValueError("not an object")
                events.append(NativeEvent.from_json(decoded))
            except ValueError:
                self.malformed += 1
        return events

    def close(self) -> None:
        """Remove the session's directory (when it made it). Children still running lose
        their events; their policy stays mapped."""
        if self._closed:
            return
        self._closed = True
        self._by_object.clear()
        if self._owned:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> NativeSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._by_digest)} policies"
        return f"<netguard NativeSession {self._dir} {state}>"
