"""The signer's Prometheus metrics, on a listener of their own (``[metrics]`` in signer.toml).

A collector reads the service at each scrape: readiness, the armed baseline, request
counts by state and the last switch from the state database, authentication failures,
the HTTP front's refusal pacing, and the signer's own view of the chain (read at most
every ``chain_cache_s``, so a scrape never floods the RPC nodes). Never served on the
API port. Names: see docs/observability.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.errors import ChainError, ConfigError
from shared.logtext import KeyLabels
from shared.metrics import MetricsServer
from signer.admission import FrontCounts
from signer.config import SignerConfig
from signer.policy import ChainView
from signer.schema import STATES
from signer.service import SignerService

__all__ = ["PREFIX", "SignerMetrics", "registry_for", "start_metrics"]

log = logging.getLogger(__name__)

PREFIX: Final = "witness_signer_"


class SignerMetrics(Collector):
    """Turns the service's state into metric families at each scrape."""

    def __init__(self, service: SignerService, *, chain_cache_s: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic,
                 front: Callable[[], FrontCounts] | None = None) -> None:
        self._service = service
        self._front = front
        self._labels = KeyLabels((k.public_key, k.name) for k in service.config.node_keys)
        self._cache_s = chain_cache_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._view: ChainView | None = None
        self._view_ok = False
        self._read_at: float | None = None

    def _chain_view(self) -> tuple[ChainView | None, bool]:
        with self._lock:
            now = self._monotonic()
            if self._read_at is None or now - self._read_at >= self._cache_s:
                self._read_at = now
                try:
                    self._view, self._view_ok = self._service.executor.chain.read_view(), True
                except ChainError as e:
                    log.debug("metrics: chain unavailable: %s", e)
                    self._view_ok = False
            return self._view, self._view_ok

    def _gauge(self, name: str, text: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(PREFIX + name, text, value=value)

    def _key_info(self, name: str, text: str, key: str | None) -> GaugeMetricFamily:
        info = GaugeMetricFamily(PREFIX + name, text, labels=["key", "node"])
        if key is not None:
            info.add_metric([key, self._labels.name(key) or "unknown"], 1)
        return info

    def collect(self) -> Iterator[Metric]:
        """The metric families (called by the registry at each scrape)."""
        service = self._service
        store = service.store
        yield self._gauge("ready", "1 when the signer checked the chain, is armed and "
                          "reconciled, and accepts requests.", int(service.executor.ready))
        view, ok = self._chain_view()
        yield self._gauge("chain_up", "1 when the last read of the chain (the signer's own "
                          "RPC nodes) succeeded.", int(ok))
        yield self._gauge("head_block_number", "Head block of the signer's last chain read.",
                          view.head_block_num if view else 0)
        yield self._gauge("total_missed", "The witness's total_missed as the signer last "
                          "read it.", view.total_missed if view else 0)
        yield self._key_info("signing_key_info", "The on-chain signing key and its configured "
                             "node (1 for the current one).", view.signing_key if view else None)
        armed = store.get_armed()
        yield self._gauge("armed", "1 when the signer has an armed baseline.",
                          int(armed is not None))
        yield self._gauge("armed_baseline_missed", "total_missed at the armed baseline.",
                          armed.baseline_missed if armed else 0)
        yield self._gauge("armed_rounds", "Rotation rounds used since armed.",
                          armed.rounds if armed else 0)
        yield self._key_info("armed_key_info", "The key the signer is armed on and its node.",
                             armed.armed_key if armed else None)
        misses = (view.total_missed - armed.baseline_missed) if armed and view else 0
        yield self._gauge("misses_since_armed", "Missed blocks since the armed baseline, as "
                          "the signer sees the chain.", max(misses, 0))
        switches = store.switches()
        yield CounterMetricFamily(PREFIX + "switches", "Key switches confirmed on chain.",
                                  value=len(switches))
        yield self._gauge("last_switch_timestamp_seconds", "Unix time of the last confirmed "
                          "switch (0 if none).",
                          max((s.at.timestamp() for s in switches), default=0))
        counts = Counter(r.state for r in store.requests_in_state(*STATES))
        requests = GaugeMetricFamily(PREFIX + "requests", "Failover requests by state.",
                                     labels=["state"])
        for state in sorted(STATES):
            requests.add_metric([state], counts.get(state, 0))
        yield requests
        yield CounterMetricFamily(PREFIX + "auth_failures", "Requests refused as not authentic "
                                  "(401) since the start.", value=service.auth_failures)
        front = self._front() if self._front is not None else FrontCounts(0, 0, 0)
        yield self._gauge("paced_sources", "Addresses whose requests are paced now (refused "
                          "unauthenticated lately).", front.sources_in_debt)
        yield CounterMetricFamily(PREFIX + "paced_requests", "Requests read only after waiting "
                                  "for their turn (refusal pacing) since the start.",
                                  value=front.paced_requests)
        yield CounterMetricFamily(PREFIX + "paced_closed", "Connections closed unread because "
                                  "their turn was past the header deadline, since the start.",
                                  value=front.closed_unread)


def registry_for(service: SignerService, *, chain_cache_s: float = 5.0,
                 front: Callable[[], FrontCounts] | None = None) -> CollectorRegistry:
    """A registry of its own holding the signer's collector (no process global).

    ``front`` gives the HTTP front's pacing figures (zeros without it). Not
    auto-described: registering must not read the chain or the store.
    """
    registry = CollectorRegistry()
    registry.register(SignerMetrics(service, chain_cache_s=chain_cache_s, front=front))
    return registry


def start_metrics(config: SignerConfig, service: SignerService,
                  front: Callable[[], FrontCounts] | None = None) -> Callable[[], None]:
    """Serve the signer's metrics on their own loopback listener; return its closer.

    Raises:
        ConfigError: the metrics port cannot be bound (names the setting).
    """
    assert config.metrics_port is not None
    try:
        server = MetricsServer(registry_for(service, front=front), config.metrics_host,
                               config.metrics_port).start()
    except OSError as e:
        raise ConfigError(f"cannot listen on {config.metrics_host}:{config.metrics_port}: "
                          f"{e.strerror or e}", path=str(config.path),
                          field="metrics.port") from e
    log.info("metrics on http://%s:%d/metrics", config.metrics_host, server.port)
    return server.close
