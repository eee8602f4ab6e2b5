"""netguard's pytest plugin, loaded through the ``pytest11`` entry point.

For now it only reports, in the session header, a ``NETGUARD_MODE`` it does not enforce
yet; sizes, modes and configuration arrive with the plugin proper. Importing it must stay
cheap and side-effect free: it imports nothing from netguard, never loads the C extension
and patches nothing.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows it)
if TYPE_CHECKING:
    import pytest
del TYPE_CHECKING

__all__ = ["pytest_report_header"]


def pytest_report_header(config: pytest.Config) -> str | None:
    """``netguard: NETGUARD_MODE=... is not enforced yet`` when the variable is set."""
    mode = os.environ.get("NETGUARD_MODE")
    if not mode:
        return None
    return f"netguard: NETGUARD_MODE={mode!r} is not enforced yet (plugin in development)"
