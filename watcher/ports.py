"""The watcher daemon's ports: what it needs from the chain, the signer and the node probes.

:class:`watcher.daemon.Watcher` is handed one of each; the real ones are
:class:`watcher.reader.RpcChainReader`, :class:`watcher.signer_client.SignerClient`
and :class:`watcher.probe.HealthMonitor`; the unit tests hand in fakes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from watcher.core import Observation
from watcher.health import HealthView
from watcher.schedule import Schedule
from watcher.signer_client import SignerAnswer


class ChainReader(Protocol):
    """Reads the chain: one observation per poll, and the witness schedule."""

    @property
    def calls(self) -> int:
        """JSON-RPC calls sent so far."""
        ...

    def observe(self, now: datetime) -> Observation:
        """Poll the nodes; failures are in the observation, never raised."""
        ...

    def schedule(self) -> Schedule:
        """The witness schedule. Raises ChainError."""
        ...


class HealthSource(Protocol):
    """The producer nodes' health (see :class:`watcher.probe.HealthMonitor`)."""

    @property
    def calls(self) -> int:
        """Probes sent so far."""
        ...

    def view(self) -> HealthView:
        """The latest probe round's view."""
        ...

    def set_chain_head(self, head: int | None) -> None:
        """The chain's quorum head, to measure the nodes' lag against."""
        ...


class SignerPort(Protocol):
    """The signer's API as the watcher uses it (see :class:`SignerClient`)."""

    requests_sent: int

    def failover(self, body: bytes) -> SignerAnswer:
        """POST /v1/failover. Raises FailoverError subclasses."""
        ...

    def request_state(self, request_id: str, attempts: int | None = None) -> SignerAnswer:
        """GET /v1/requests/<id>. Raises FailoverError subclasses."""
        ...

    def follow(self, answer: SignerAnswer, timeout_s: float, interval_s: float) -> SignerAnswer:
        """Poll until final or timeout. Raises FailoverError subclasses."""
        ...
