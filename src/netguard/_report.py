"""Violations as plain data, and the report attribute that carries them.

Kept apart from :mod:`netguard._session` so that the plugin's report hooks can use it
without importing the enforcing side (in ``off`` mode nothing of that is loaded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netguard.errors import Violation

__all__ = ["ALLOWED_ATTR", "REPORT_ATTR", "SCHEMA", "event_dict"]

#: The attribute of a test or collection report that carries the violations of its phase,
#: as plain dicts: pytest-xdist sends every attribute of a report from the worker to the
#: controller, so the process that prints the summary sees the violations of every worker.
REPORT_ATTR = "netguard_violations"
#: The same for allowed events, recorded only for --netguard-report / --netguard-verbose.
ALLOWED_ATTR = "netguard_allowed"
#: The ``schema`` of the JSON report; a change of its meaning changes the number.
SCHEMA = "netguard-report/1"


def event_dict(v: Violation) -> dict[str, Any]:
    """A violation as plain data (JSON and xdist safe). ``origin`` is ``"python"``,
    ``"native"`` (C code in the test process) or ``"child"`` (a child process, with its
    ``pid`` and ``program``): see :data:`netguard.errors.ORIGINS`."""
    return {
        "test": v.test,
        "phase": v.phase,
        "size": v.size,
        "op": v.op,
        "family": v.family,
        "host": v.host,
        "port": v.port,
        "destination": v.destination,
        "slug": v.slug,
        "thread": v.thread,
        "timestamp": v.timestamp,
        "origin": v.origin,
        "pid": v.pid,
        "program": v.program,
    }
