"""The watcher's Prometheus metrics, exposed through ``prometheus_client``.

:class:`Metrics` keeps plain values that the daemon sets (:meth:`Metrics.update`) and a
per-instance :class:`CollectorRegistry`; at each scrape its collector turns them into
metric families. More metrics (the producer nodes' health, say) are added either as
:data:`_FIELDS` rows or as ``prometheus_client`` metrics registered on
:attr:`Metrics.registry`. Served by :class:`MetricsServer` (:mod:`shared.metrics`).

Names (unchanged from the hand-written exposition this replaces): see docs/observability.md.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.metrics import MetricsServer as _Server
from watcher.core import Phase

__all__ = ["Metrics", "MetricsServer"]

_PHASES: Final = get_args(Phase)
PREFIX: Final = "witness_watcher_"
Kind = Literal["counter", "gauge"]
# attribute -> (metric name without the prefix, kind, help)
_FIELDS: Final[dict[str, tuple[str, Kind, str]]] = {
    "polls": ("polls", "counter", "Polls of the RPC nodes."),
    "rpc_calls": ("rpc_calls", "counter", "JSON-RPC calls sent."),
    "requests_sent": ("requests_sent", "counter",
                      "Failover requests created (retries not counted)."),
    "signer_http_requests": ("signer_http_requests", "counter",
                             "HTTP requests sent to the signer, retries included."),
    "misses_since_armed": ("misses_since_armed", "gauge",
                           "Missed blocks since the baseline was armed."),
    "fresh_nodes": ("fresh_nodes", "gauge", "RPC nodes with an advancing head."),
    "head_block_number": ("head_block_number", "gauge", "Head block seen by the fresh nodes."),
    "preemptive_requests_sent": ("preemptive_requests_sent", "counter",
                                 "Pre-emptive failover requests created (health evidence)."),
    "probe_calls": ("probe_calls", "counter", "Probes of the producer nodes' APIs."),
    "last_poll_time": ("last_poll_timestamp_seconds", "gauge",
                       "Unix time of the last completed poll (0 before the first)."),
}


class Metrics(Collector):
    """Counters and gauges the daemon updates; scraped through :attr:`registry`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.polls = 0
        self.rpc_calls = 0
        self.requests_sent = 0
        self.signer_http_requests = 0
        self.misses_since_armed = 0
        self.fresh_nodes = 0
        self.head_block_number = 0
        self.last_poll_time = 0.0
        self.phase: str = "unarmed"
        self.alerts: Counter[str] = Counter()
        self.probe_calls = 0
        self.preemptive_requests_sent = 0
        self.node_health: tuple[NodeGauge, ...] = ()  # producer nodes, when probed
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def update(self, **values: Any) -> None:
        """Set gauges / counters by name (one lock for a consistent scrape)."""
        with self._lock:
            for name, value in values.items():
                if not hasattr(self, name) or name.startswith("_") or name == "registry":
                    raise AttributeError(name)
                setattr(self, name, value)
            if "polls" in values:
                self.last_poll_time = time.time()

    def count_alert(self, kind: str) -> None:
        """One more alert of ``kind``."""
        with self._lock:
            self.alerts[kind] += 1

    def collect(self) -> Iterator[Metric]:
        """The metric families, from one consistent snapshot (called by the registry)."""
        with self._lock:
            values = {attr: getattr(self, attr) for attr in _FIELDS}
            phase, alerts, nodes = self.phase, dict(self.alerts), self.node_health
        for attr, (name, kind, text) in _FIELDS.items():
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(PREFIX + name, text, value=values[attr])
        state = GaugeMetricFamily(PREFIX + "state", "The watcher's phase (1 for the current one).",
                                  labels=["phase"])
        for p in _PHASES:
            state.add_metric([p], int(p == phase))
        yield state
        counted = CounterMetricFamily(PREFIX + "alerts", "Alerts raised, by kind.",
                                      labels=["kind"])
        for kind_, count in sorted(alerts.items()):
            counted.add_metric([kind_], count)
        yield counted
        yield from _node_families(nodes)

    def render(self) -> str:
        """The Prometheus text exposition (what ``GET /metrics`` serves)."""
        from prometheus_client import generate_latest  # noqa: PLC0415

        return generate_latest(self.registry).decode()


@dataclass(frozen=True)
class NodeGauge:
    """One producer node's health as a metric: up (0/1) and head lag (None: unknown)."""

    node: str
    up: bool
    lag_blocks: int | None


def _node_families(nodes: tuple[NodeGauge, ...]) -> Iterator[Metric]:
    """``witness_node_up`` and ``witness_node_head_lag_blocks`` per probed producer node."""
    if not nodes:
        return
    up = GaugeMetricFamily("witness_node_up", "Whether the producer node answers, in sync "
                           "(1) or not (0).", labels=["node"])
    lag = GaugeMetricFamily("witness_node_head_lag_blocks", "Blocks the node's head lags "
                            "the chain's head.", labels=["node"])
    for n in nodes:
        up.add_metric([n.node], int(n.up))
        if n.lag_blocks is not None:
            lag.add_metric([n.node], n.lag_blocks)
    yield up
    yield lag


class MetricsServer(_Server):
    """Serves ``GET /metrics`` of a :class:`Metrics` on ``host:port`` in a daemon thread."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        """Bind the port (0: any free one).

        Raises:
            OSError: the port cannot be bound.
        """
        super().__init__(metrics.registry, host, port)
