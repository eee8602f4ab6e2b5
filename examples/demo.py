"""netguard at work, outside pytest, through the public API.

    python examples/demo.py      (scripts/demo installs netguard and runs this)

Four steps under a loopback-only policy (what a medium test gets):

1. strict mode: a connect to a listener on 127.0.0.1 goes through;
2. strict mode: a connect to 192.0.2.10:443 raises netguard.NetworkViolationError before
   any packet is sent (192.0.2.0/24 is reserved for documentation: nothing answers there),
   and code that swallows that error does not hide it: leaving the guard raises it;
3. strict mode: a DNS lookup of example.com raises the same error before any query;
4. warn mode: with an empty policy, a loopback connect goes through with a warning.

Exits non-zero, saying which step, if netguard does not behave as described, so the
demo doubles as a smoke test of an install.
"""

from __future__ import annotations

import importlib.metadata
import socket
import sys
import textwrap
import warnings

import netguard

OUTSIDE = ("192.0.2.10", 443)


def show_violation(exc: BaseException | Warning | str) -> None:
    print(textwrap.indent(str(exc), "      | "))


def fail(step: str, what: str) -> None:
    print(f"\nFAILED at {step}: {what}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    original_connect = socket.socket.connect
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = server.getsockname()[:2]
        policy = netguard.Policy(["127.0.0.0/8", "::1"])
        version = importlib.metadata.version("netguard")
        print(f"netguard {version}, {policy.implementation} implementation")
        print(f"policy {policy!r}")
        print("  static answers, no network touched:")
        for host, port in (address, OUTSIDE):
            verdict = "allowed" if policy.allows(host, port) else "blocked"
            print(f"    {host}:{port} -> {verdict}")

        print("\n1. strict mode, connect to our listener on loopback")
        with netguard.guard(policy, mode="strict"):
            with socket.create_connection(address, timeout=5) as client:
                peer, _ = server.accept()
                with peer:
                    client.sendall(b"hello")
                    echoed = peer.recv(5)
        if echoed != b"hello":
            fail("step 1", f"the listener received {echoed!r}")
        print(f"   connected to {address[0]}:{address[1]} and sent {echoed!r}: allowed")

    print(f"\n2. strict mode, connect to {OUTSIDE[0]}:{OUTSIDE[1]}")
    try:
        with netguard.guard(policy, mode="strict"):
            socket.create_connection(OUTSIDE, timeout=5).close()
    except netguard.NetworkViolationError as exc:
        print("   blocked before any packet left; the error says:")
        show_violation(exc)
    except OSError as exc:
        fail("step 2", f"the connect reached the kernel ({exc!r}), netguard did not stop it")
    else:
        fail("step 2", "the connect succeeded")

    print("\n   the same connect, in code that catches and ignores every OSError:")
    try:
        with netguard.guard(policy, mode="strict"):
            try:
                socket.create_connection(OUTSIDE, timeout=5).close()
            except OSError:
                pass
    except netguard.NetworkViolationError as exc:
        print(f"   leaving the guard raised it all the same: {str(exc).splitlines()[0]}")
    else:
        fail("step 2", "a swallowed violation went unreported")

    print("\n3. strict mode, DNS lookup of example.com")
    try:
        with netguard.guard(policy, mode="strict"):
            socket.getaddrinfo("example.com", 443)
    except netguard.NetworkViolationError as exc:
        print("   blocked before any query; the error says:")
        show_violation(exc)
    except OSError as exc:
        fail("step 3", f"the lookup was attempted ({exc!r}), netguard did not stop it")
    else:
        fail("step 3", "the lookup succeeded")

    print("\n4. warn mode, empty policy, connect to a listener on loopback")
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = server.getsockname()[:2]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with netguard.guard(netguard.Policy([]), mode="warn"):
                with socket.create_connection(address, timeout=5):
                    server.accept()[0].close()
        found = [w for w in caught if issubclass(w.category, netguard.NetworkViolationWarning)]
        if not found:
            fail("step 4", "no NetworkViolationWarning was issued")
        print(f"   connected to {address[0]}:{address[1]}: let through, with this warning:")
        show_violation(found[0].message)

    if socket.socket.connect is not original_connect:
        fail("the end", "socket.socket.connect is still patched after the last guard closed")
    print("\nAfter the last guard closed, socket.socket.connect is the original again.")


if __name__ == "__main__":
    main()
