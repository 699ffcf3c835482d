"""The installed version of witness-failover, for every CLI's ``--version``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Final

DISTRIBUTION: Final = "witness-failover"


def installed_version() -> str:
    """The distribution's version from its installed metadata, or ``"unknown"`` if not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def version_text(prog: str) -> str:
    """What ``PROG --version`` prints: ``PROG (witness-failover) X.Y.Z``."""
    return f"{prog} ({DISTRIBUTION}) {installed_version()}"
