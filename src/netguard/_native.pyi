"""Typed stub of netguard._native (src/_native.c, Linux only): native mode's GOT patching.

See docs/internals.md, "The GOT mechanism".
"""

import os
from collections.abc import Iterable
from typing import TypedDict

class _Stats(TypedDict):
    objects: int
    scans: int
    patched: int
    foreign: int
    failed: int
    deferred: int

SELFTEST_NAMES: tuple[str, ...]
MAX_HOOKS: int
NAMES: tuple[str, ...]
RING_CAPACITY: int

# (op, verdict, family, host, port, pid, tid, policy index)
_Event = tuple[str, str, int, str, int | None, int, int, int]

def register(
    blob: bytes | bytearray | memoryview, path: str | os.PathLike[str] | None = None, /
) -> int: ...
def install(
    preload: str | os.PathLike[str],
    events: str | os.PathLike[str],
    /,
    *,
    strict: bool = True,
    record_allowed: bool = False,
) -> None: ...
def activate(
    policy: int | bytes | bytearray | memoryview | None, strict: bool = True, /
) -> None: ...
def drain() -> list[_Event]: ...
def dropped() -> int: ...
def _selftest_install(names: Iterable[str], /) -> None: ...
def _selftest_count(name: str, /) -> int: ...
def uninstall() -> None: ...
def installed() -> bool: ...
def rescan() -> None: ...
def patched() -> list[tuple[str, str, int, int]]: ...
def stats() -> _Stats: ...
