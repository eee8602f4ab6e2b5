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
network namespace). When that is not possible the helper raises ``RuntimeError`` saying
how to enable it; it never skips, because a skipped isolation test proves nothing.

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
from collections.abc import Mapping

__all__ = ["bring_up_loopback", "in_isolated_netns", "run_isolated"]

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


def _unshare() -> str:
    """Path of a working ``unshare``, or RuntimeError saying how to get one."""
    global _unshare_works
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
    and ``subprocess.TimeoutExpired`` after ``timeout`` seconds.
    """
    unshare = _unshare()
    child_env = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            child_env.pop(name, None)
        else:
            child_env[name] = value
    child_env["NETGUARD_TEST_NETNS"] = "1"
    script = (
        f"{shlex.join(_lo_up_command())} || "
        f"{{ echo {shlex.quote(_LO_FAILED_MARKER)} >&2; exit {_LO_FAILED_STATUS}; }}\n"
        'exec "$@"'
    )
    result = subprocess.run(
        [unshare, "-rn", "--", "/bin/sh", "-c", script, "netns", sys.executable, "-c", code],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode == _LO_FAILED_STATUS and _LO_FAILED_MARKER in result.stderr:
        raise RuntimeError(f"the namespace's loopback could not be brought up:\n{result.stderr}")
    return result


def _interfaces() -> set[str]:
    # /proc/self/net shows the network namespace of this process. /sys/class/net does not:
    # sysfs shows the namespace of whoever mounted it, so after `unshare -n` without a new
    # mount it still lists the host's interfaces.
    try:
        with open("/proc/self/net/dev", encoding="ascii") as f:
            lines = f.read().splitlines()[2:]  # two header lines
    except OSError:
        return {name for _, name in socket.if_nameindex()}
    return {line.split(":", 1)[0].strip() for line in lines if ":" in line}


def in_isolated_netns() -> bool:
    """True when this process's network namespace has no interface but loopback."""
    return _interfaces() == {"lo"}


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
