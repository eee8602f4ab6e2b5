"""Running pytest with the netguard plugin, for the plugin's tests (pytester, subprocesses).

Imported explicitly by the test modules (tests/ is not a package, so ``from pluginrun
import ...``), like ``netns``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping

import pytest

from netguard.config import OPTIONS
from netns import check_lo_failure, isolated_argv

__all__ = ["NETGUARD_VARS", "UDP", "run", "run_in_netns"]

#: Every environment variable a setting of netguard's is read from (one per row of the
#: options table): cleared for inner runs (see conftest.py).
NETGUARD_VARS = tuple(option.env for option in OPTIONS)

#: A module for inner test suites: ``udp_connect(host, port)``. A UDP connect sends no
#: packet; an allowed destination outside loopback meets ENETUNREACH inside the private
#: network namespace of :func:`run_in_netns`, which counts as let through. A run that
#: lets such a call through must use :func:`run_in_netns` (tests/backstop.py stops it
#: anywhere else).
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


#: pytest plugins that come with libraries the docs' examples use (requirements-test.txt):
#: importing them costs about 0.45 s per pytest process, and the suite starts hundreds, so
#: inner runs leave them out unless asked for all plugins (the docs' examples are).
#: (pytester removes PYTEST_ADDOPTS from the environment of its runs, hence the flags.)
UNRELATED_PLUGINS = ("respx", "pytest_httpserver", "anyio")


def _base_args(all_plugins: bool) -> list[str]:
    args = ["-p", "no:cacheprovider", "--strict-markers"]
    if not all_plugins:
        args += [f"-pno:{name}" for name in UNRELATED_PLUGINS]
    return args


def run(pytester: pytest.Pytester, *args: str, all_plugins: bool = False) -> pytest.RunResult:
    """pytest in a subprocess: netguard loads through its entry point, as a user's would.

    Other installed plugins load too with ``all_plugins``; else those of
    :data:`UNRELATED_PLUGINS` are left out.
    """
    return pytester.runpytest_subprocess(*_base_args(all_plugins), *args)


def run_in_netns(
    pytester: pytest.Pytester,
    *args: str,
    env: Mapping[str, str | None] | None = None,
    all_plugins: bool = False,
) -> pytest.RunResult:
    """:func:`run`, with the pytest subprocess in a private network namespace of its own.

    For inner runs that let a call to an outside destination through (warn mode, a rule,
    a large test): inside the namespace it fails in the kernel with ENETUNREACH, and no
    packet exists, whether the outer session is isolated or not. ``env`` as for
    ``netns.isolated_argv``, ``all_plugins`` as for :func:`run`. Skips the test on systems
    without network namespaces; on Linux a refused ``unshare -rn`` is an error.
    """
    # What runpytest_subprocess does, with the command wrapped: a fresh --basetemp.
    basetemp = tempfile.mkdtemp(prefix="runpytest-", dir=pytester.path)
    argv = [sys.executable, "-mpytest", f"--basetemp={basetemp}"]
    argv += [*_base_args(all_plugins), *args]
    result = pytester.run(*isolated_argv(argv, env=env))
    check_lo_failure(result.ret, os.linesep.join(result.errlines))
    return result
