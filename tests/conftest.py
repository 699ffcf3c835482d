"""Shared fixtures: a devnet process per test module, the local Twilio endpoint."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

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
