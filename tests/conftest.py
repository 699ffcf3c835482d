"""Shared fixtures: a devnet process per test module, the local Twilio endpoint."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

import pytest

from drill.procs import ENV_PORT_RANGE, drill_port_range


def _worker_port_range() -> None:
    """Give each xdist worker its own slice of the drill ports (WITNESS_DRILL_PORTS).

    Workers pick port ranges at random and bind them a moment later; two workers picked
    overlapping ranges once, and one devnet found its port taken. Set in the worker's
    environment, so the processes it starts (`witness-devnet demo`) keep to it too.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count < 2 or os.environ.get(ENV_PORT_RANGE):
        return
    low, high = drill_port_range()
    width = (high - low) // count
    start = low + int(worker[2:]) * width
    # Bases fall in [start, start + width - span): every port stays under start + width,
    # where the next worker's slice begins.
    os.environ[ENV_PORT_RANGE] = f"{start}-{start + width}"


_worker_port_range()

# SECURITY: no test may reach the internet. Every socket connects to loopback
# only; anything else fails loudly instead of leaking traffic.
_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> None:
    host = address[0] if isinstance(address, tuple) else None
    if isinstance(host, str) and host not in {"127.0.0.1", "localhost", "::1"} and not (
        host.startswith("127.")
    ):
        raise OSError(f"test tried to reach {host}: tests must stay on loopback")
    _real_connect(self, address)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test on loopback."""
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(autouse=True)
def _beem_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give beem a throwaway home so tests never touch the user's settings database."""
    home = tmp_path_factory.getbasetemp() / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture(autouse=True, scope="session")
def _inprocess_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Write every in-process log record to a file the final log scan reads."""
    handler = logging.FileHandler(tmp_path_factory.getbasetemp() / "inprocess.log")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(handler)
    root.setLevel(previous)
    handler.close()


pytest_plugins = ["support.twilio_fixture"]
