"""The I/O shell of producer-node health: probe every node's own API, concurrently.

Each node with a ``health_url`` is asked ``database_api.get_dynamic_global_properties``
with a short timeout, through :class:`shared.rpc.JsonRpcClient`; all nodes at once
(threads), so a dead or slow node costs at most one timeout, and in parallel with
the signer's chain read. Classification is pure (:mod:`signer.health`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import requests

from shared.chaindata import parse_dgpo
from shared.errors import ChainError, ChainUnavailableError
from shared.rpc import JsonRpcClient
from signer.health import (
    HealthConfig,
    HealthSnapshot,
    NodeHealth,
    ProbeResult,
    classify,
    confirmed,
)

log = logging.getLogger(__name__)

PROBE_METHOD = "database_api.get_dynamic_global_properties"


@dataclass(frozen=True)
class ProbeTarget:
    """A configured node: its name, its public key and its API (None: not probed)."""

    name: str
    key: str
    url: str | None


def _why(e: ChainError) -> str:
    """A short reason for a failed probe, from the transport's own exception."""
    cause = e.__cause__
    if isinstance(cause, requests.Timeout):
        return "timeout"
    if isinstance(cause, requests.ConnectionError):
        text = str(cause).lower()
        for needle, reason in (("refused", "connection refused"), ("reset", "connection reset"),
                               ("aborted", "connection aborted")):
            if needle in text:
                return reason
        return "connection error"
    if isinstance(e, ChainUnavailableError):
        return str(e).rsplit(": ", 1)[-1]
    return f"bad answer: {str(e).rsplit(': ', 1)[-1]}"


class Probing:
    """Probes in flight, started before the chain read; :meth:`snapshot` collects them."""

    def __init__(self, prober: NodeProber, futures: dict[str, Future[ProbeResult]]) -> None:
        self._prober = prober
        self._futures = futures

    def snapshot(self, chain_head: int) -> HealthSnapshot:
        """Wait for every probe (each bounded by its timeout); classify against ``chain_head``."""
        results = {url: f.result() for url, f in self._futures.items()}
        return self._prober.classify_all(results, chain_head)


class NodeProber:
    """Probes the configured producer nodes; safe to share between threads."""

    def __init__(self, targets: Sequence[ProbeTarget], config: HealthConfig, *,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.targets = tuple(targets)
        self.config = config
        urls = [t.url for t in self.targets if t.url]
        self._rpc = JsonRpcClient(urls or ["http://127.0.0.1:1/"],
                                  timeout_s=config.probe_timeout_s)
        # Two rounds at once (a decision and a status read) still probe every node at once.
        self._pool = ThreadPoolExecutor(max_workers=max(2 * len(urls), 1),
                                        thread_name_prefix="signer-probe")
        self._sleep, self._monotonic = sleep, monotonic

    @property
    def calls(self) -> int:
        """HTTP requests sent by probes so far."""
        return self._rpc.calls

    def probe(self, url: str) -> ProbeResult:
        """Ask one node for its head; never raises (a failure is a result)."""
        started = self._monotonic()
        try:
            head = parse_dgpo(self._rpc.call_node(url, PROBE_METHOD, {})).head_block_number
        except ChainError as e:
            return ProbeResult(None, _why(e), self._monotonic() - started)
        except Exception as e:  # a probe must never break the decision  # noqa: BLE001
            return ProbeResult(None, f"probe error: {type(e).__name__}",
                               self._monotonic() - started)
        return ProbeResult(head, "", self._monotonic() - started)

    def start(self) -> Probing:
        """Start probing every node with a ``health_url`` now, in the background."""
        futures = {t.url: self._pool.submit(self.probe, t.url) for t in self.targets if t.url}
        return Probing(self, futures)

    def snapshot(self, chain_head: int) -> HealthSnapshot:
        """Probe every node now and classify against ``chain_head`` (for status, tests)."""
        return self.start().snapshot(chain_head)

    def classify_all(self, results: dict[str, ProbeResult], chain_head: int) -> HealthSnapshot:
        """Classify each target from its result (targets without a URL are unknown)."""
        lag = self.config.max_lag_blocks
        return HealthSnapshot(tuple(
            classify(t.name, t.key, results.get(t.url) if t.url else None, chain_head, lag)
            for t in self.targets), chain_head)

    def confirm_dead(self, snapshot: HealthSnapshot, key: str) -> HealthSnapshot:
        """Re-probe the node holding ``key`` while it stays dead, up to ``confirm_probes``
        probes in all, ``confirm_interval_s`` apart; dead only if every probe was."""
        node = snapshot.of_key(key)
        target = next((t for t in self.targets if t.key == key), None)
        if node is None or target is None or target.url is None or not node.dead:
            return snapshot
        seen: list[NodeHealth] = [node]
        chain_head = snapshot.chain_head or 0
        while len(seen) < self.config.confirm_probes and seen[-1].dead:
            self._sleep(self.config.confirm_interval_s)
            seen.append(classify(target.name, target.key, self.probe(target.url), chain_head,
                                 self.config.max_lag_blocks))
        return snapshot.replace_node(confirmed(seen))

    def close(self) -> None:
        """Stop the probe threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
