"""Run code where no packet can leave this host: a private network namespace.

DESIGN.md section 4: no test may send a packet to a non-loopback address. A test that
needs an outside destination (to show that netguard blocks it, or that a rule allows it)
runs that code with :func:`run_isolated`, in a fresh network namespace that has a
loopback interface and nothing else. There a connect or send to any other address fails
in the kernel with ENETUNREACH before a packet exists, whatever netguard does or fails to
do. Use 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32 for such
destinations.

Import it explicitly (pytest's default import mode puts ``tests/`` on ``sys.path``)::

    from netns import run_isolated

    def test_blocked_outside():
        result = run_isolated("import socket; ...")
        assert result.returncode == 0, result.stderr

The namespace comes from ``unshare -rn`` (an unprivileged user namespace owning a new
network namespace). On Linux, when that is not possible, the helpers raise ``RuntimeError``
saying how to enable it; they never skip there, because a skipped isolation test proves
nothing. On other systems (macOS, Windows), which have no network namespaces, they skip
the calling test with that reason (:func:`require_netns`).

:func:`isolated_argv` wraps any command the same way, for runners that start the process
themselves (``pluginrun.run_in_netns`` runs pytester's pytest subprocess with it).

A process inside such a namespace reaches the kernel with outside destinations, and that
is the point; tests/backstop.py, which stops such calls in processes that are *not*
isolated, leaves these alone (the helpers drop ``NETGUARD_TESTS_ASSUME_SHARED_NETNS`` for
their children unless the caller sets it).

``python tests/netns.py --lo-up`` brings the loopback interface up with an ioctl, for
machines without iproute2's ``ip`` (scripts/lib.sh uses it that way).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence

from backstop import ASSUME_SHARED_VAR, in_isolated_netns
from backstop import interfaces as _interfaces  # noqa: F401  (tests read it)

__all__ = [
    "bring_up_loopback",
    "in_isolated_netns",
    "isolated_argv",
    "require_netns",
    "run_isolated",
]

HOW_TO_ENABLE = """\
netguard's tests run code in a private network namespace (`unshare -rn`), which needs
unprivileged user namespaces. Enable them, then rerun:
  - Ubuntu 23.10 and later (AppArmor):
      sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0
  - Debian before 11, some hardened kernels: sudo sysctl -w kernel.unprivileged_userns_clone=1
  - everywhere: user.max_user_namespaces must be above 0 (sysctl user.max_user_namespaces)
  - in a container: allow unshare/clone with CLONE_NEWUSER (seccomp profile)
`unshare` comes with util-linux, `ip` with iproute2."""

# Exit status the namespace's shell uses when loopback could not be brought up; the
# marker on stderr tells it apart from the same status returned by the code under test.
_LO_FAILED_STATUS = 125
_LO_FAILED_MARKER = "netns: could not bring up loopback"

_unshare_works = False


def require_netns() -> None:
    """Skip the calling test where the system has no network namespaces (not Linux)."""
    if not sys.platform.startswith("linux"):
        import pytest

        pytest.skip(
            f"needs a private network namespace (Linux `unshare -rn`); {sys.platform} has "
            "none, and this test's calls must not reach a real network"
        )


def _unshare() -> str:
    """Path of a working ``unshare``, or RuntimeError saying how to get one."""
    global _unshare_works
    require_netns()
    path = shutil.which("unshare")
    if path is None:
        raise RuntimeError(f"`unshare` was not found on PATH.\n{HOW_TO_ENABLE}")
    if not _unshare_works:
        probe = subprocess.run(
            [path, "-rn", "--", sys.executable, "-c", ""],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode != 0:
            raise RuntimeError(
                "cannot create a network namespace with `unshare -rn` "
                f"(exit status {probe.returncode}: {probe.stderr.strip()!r}).\n{HOW_TO_ENABLE}"
            )
        _unshare_works = True
    return path


def _lo_up_command() -> list[str]:
    ip = shutil.which("ip")
    if ip is not None:
        return [ip, "link", "set", "lo", "up"]
    return [sys.executable, os.path.abspath(__file__), "--lo-up"]


def isolated_argv(
    argv: Sequence[str], *, env: Mapping[str, str | None] | None = None
) -> list[str]:
    """``argv`` wrapped to run in a fresh network namespace with loopback up.

    ``env`` holds variables to set (or, with the value ``None``, to remove) inside the
    namespace, on top of ``NETGUARD_TEST_NETNS=1`` and the removal of
    ``NETGUARD_TESTS_ASSUME_SHARED_NETNS`` (the child *is* isolated). When loopback cannot
    be brought up the command exits with status 125 and says so on stderr (see
    :func:`check_lo_failure`). Skips the test where there are no namespaces, raises
    ``RuntimeError`` where ``unshare -rn`` is refused.
    """
    unshare = _unshare()
    settings: dict[str, str | None] = {ASSUME_SHARED_VAR: None, "NETGUARD_TEST_NETNS": "1"}
    settings.update(env or {})
    exports = "".join(
        f"unset {name}\n" if value is None else f"export {name}={shlex.quote(value)}\n"
        for name, value in settings.items()
    )
    script = (
        f"{shlex.join(_lo_up_command())} || "
        f"{{ echo {shlex.quote(_LO_FAILED_MARKER)} >&2; exit {_LO_FAILED_STATUS}; }}\n"
        f"{exports}"
        'exec "$@"'
    )
    return [unshare, "-rn", "--", "/bin/sh", "-c", script, "netns", *argv]


def check_lo_failure(returncode: int, stderr: str) -> None:
    """RuntimeError when an :func:`isolated_argv` command failed to bring loopback up."""
    if returncode == _LO_FAILED_STATUS and _LO_FAILED_MARKER in stderr:
        raise RuntimeError(f"the namespace's loopback could not be brought up:\n{stderr}")


def run_isolated(
    code: str,
    *,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``sys.executable -c code`` in a fresh network namespace with loopback up.

    ``env`` holds variables to set (or, with the value ``None``, to remove) on top of the
    current environment. Returns the finished process with ``stdout`` and ``stderr`` as
    text; a non-zero exit status of the code is returned, not raised. Raises
    ``RuntimeError`` when no namespace can be made or its loopback cannot be brought up,
    and ``subprocess.TimeoutExpired`` after ``timeout`` seconds; skips the test on
    systems without network namespaces.
    """
    result = subprocess.run(
        isolated_argv([sys.executable, "-c", code], env=env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    check_lo_failure(result.returncode, result.stderr)
    return result


def bring_up_loopback() -> None:
    """Set IFF_UP on ``lo`` with ioctls (what ``ip link set lo up`` does)."""
    import fcntl

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    # struct ifreq: 16 bytes of name, then a union whose first member is the short
    # ifr_flags; 40 bytes covers the whole struct on every Linux ABI.
    request = bytearray(40)
    request[:2] = b"lo"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request[:] = fcntl.ioctl(sock, siocgifflags, bytes(request))
        (flags,) = struct.unpack_from("h", request, 16)
        struct.pack_into("h", request, 16, flags | iff_up)
        fcntl.ioctl(sock, siocsifflags, bytes(request))


if __name__ == "__main__":
    if sys.argv[1:] != ["--lo-up"]:
        sys.exit(f"usage: {sys.argv[0]} --lo-up")
    bring_up_loopback()
