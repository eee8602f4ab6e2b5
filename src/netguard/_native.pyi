"""Typed stub of netguard._native (src/_native.c, Linux only): native mode's GOT patching.

See docs/internals.md, "The GOT mechanism".
"""

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

def _selftest_install(names: Iterable[str], /) -> None: ...
def _selftest_count(name: str, /) -> int: ...
def uninstall() -> None: ...
def installed() -> bool: ...
def rescan() -> None: ...
def patched() -> list[tuple[str, str, int, int]]: ...
def stats() -> _Stats: ...
