"""Installs the suite's backstop (tests/backstop.py) in Python processes the tests start.

A test session that is not inside a private network namespace puts this directory first
on ``PYTHONPATH`` and sets ``NETGUARD_TESTS_BACKSTOP=1`` (``backstop.child_environment``),
so that every Python child that keeps that environment (pytester's subprocess runs,
helper scripts) stops calls to non-loopback destinations too. A child inside a private
network namespace of its own (``netns.run_isolated``, ``pluginrun.run_in_netns``) is left
alone: there the kernel stops such packets, and tests rely on reaching the kernel.

Python imports the first ``sitecustomize`` on ``sys.path``; this one then runs the one it
shadows, if any (a distribution's own ``sitecustomize``).
"""

import importlib.machinery
import importlib.util
import os
import sys


def _install_backstop() -> None:
    if os.environ.get("NETGUARD_TESTS_BACKSTOP") != "1":
        return
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, tests)
    try:
        import backstop
    finally:
        sys.path.remove(tests)
    if not backstop.session_isolated():
        backstop.install(announce=True)


def _run_shadowed() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_install_backstop()
_run_shadowed()
