"""Running pytest with the netguard plugin, for the plugin's tests (pytester, subprocesses).

Imported explicitly by the test modules (tests/ is not a package, so ``from pluginrun
import ...``), like ``netns``.
"""

from __future__ import annotations

import pytest

__all__ = ["NETGUARD_VARS", "UDP", "run"]

#: Every environment variable netguard reads: cleared for inner runs (see conftest.py).
NETGUARD_VARS = (
    "NETGUARD_MODE",
    "NETGUARD_DEFAULT_SIZE",
    "NETGUARD_ALLOW",
    "NETGUARD_ALLOWLIST",
    "NETGUARD_REPORT",
    "NETGUARD_VERBOSE",
)

#: A module for inner test suites: ``udp_connect(host, port)``. A UDP connect sends no
#: packet; an allowed destination outside loopback meets ENETUNREACH inside the private
#: network namespace the suite runs in, which counts as let through.
UDP = """
import errno, socket

def udp_connect(host, port=9):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((host, port))
    except OSError as exc:
        if isinstance(exc, PermissionError) or exc.errno != errno.ENETUNREACH:
            raise
    finally:
        s.close()
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a subprocess: netguard loads through its entry point, as a user's would."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers", *args)
