"""Prometheus text metrics of the watcher, served on loopback by a small stdlib HTTP server."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, get_args

from watcher.core import Phase

log = logging.getLogger(__name__)

_PHASES: Final = get_args(Phase)
_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Counters and gauges the daemon updates; :meth:`render` is the exposition text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.polls = 0
        self.rpc_calls = 0
        self.requests_sent = 0
        self.signer_http_requests = 0
        self.misses_since_armed = 0
        self.fresh_nodes = 0
        self.head_block_number = 0
        self.phase: str = "unarmed"
        self.alerts: Counter[str] = Counter()
        self.probe_calls = 0
        self.preemptive_requests_sent = 0
        self.node_health: tuple[NodeGauge, ...] = ()  # producer nodes, when probed

    def update(self, **values: Any) -> None:
        """Set gauges / counters by name (one lock for a consistent scrape)."""
        with self._lock:
            for name, value in values.items():
                if not hasattr(self, name) or name.startswith("_"):
                    raise AttributeError(name)
                setattr(self, name, value)

    def count_alert(self, kind: str) -> None:
        """One more alert of ``kind``."""
        with self._lock:
            self.alerts[kind] += 1

    def render(self) -> str:
        """The Prometheus text exposition format."""
        with self._lock:
            lines = [
                *_metric("polls_total", "counter", "Polls of the RPC nodes.", self.polls),
                *_metric("rpc_calls_total", "counter", "JSON-RPC calls sent.", self.rpc_calls),
                *_metric("requests_sent_total", "counter",
                         "Failover requests created (retries not counted).", self.requests_sent),
                *_metric("preemptive_requests_sent_total", "counter",
                         "Pre-emptive failover requests created (health evidence).",
                         self.preemptive_requests_sent),
                *_metric("signer_http_requests_total", "counter",
                         "HTTP requests sent to the signer, retries included.",
                         self.signer_http_requests),
                *_metric("misses_since_armed", "gauge",
                         "Missed blocks since the baseline was armed.", self.misses_since_armed),
                *_metric("fresh_nodes", "gauge", "RPC nodes with an advancing head.",
                         self.fresh_nodes),
                *_metric("head_block_number", "gauge", "Head block seen by the fresh nodes.",
                         self.head_block_number),
                "# HELP witness_watcher_state The watcher's phase (1 for the current one).",
                "# TYPE witness_watcher_state gauge",
                *(f'witness_watcher_state{{phase="{p}"}} {int(p == self.phase)}'
                  for p in _PHASES),
                "# HELP witness_watcher_alerts_total Alerts raised, by kind.",
                "# TYPE witness_watcher_alerts_total counter",
                *(f'witness_watcher_alerts_total{{kind="{k}"}} {v}'
                  for k, v in sorted(self.alerts.items())),
                *node_health_lines(self.probe_calls, self.node_health),
            ]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class NodeGauge:
    """One producer node's health as a metric: up (0/1) and head lag (None: unknown)."""

    node: str
    up: bool
    lag_blocks: int | None


def node_health_lines(probe_calls: int, nodes: tuple[NodeGauge, ...]) -> list[str]:
    """The producer-node health metrics (nothing when no node is probed)."""
    if not nodes:
        return []

    def label(name: str) -> str:
        return name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return [
        *_metric("probe_calls_total", "counter", "Probes of the producer nodes' APIs.",
                 probe_calls),
        "# HELP witness_node_up Whether the producer node answers, in sync (1) or not (0).",
        "# TYPE witness_node_up gauge",
        *(f'witness_node_up{{node="{label(n.node)}"}} {int(n.up)}' for n in nodes),
        "# HELP witness_node_head_lag_blocks Blocks the node's head lags the chain's head.",
        "# TYPE witness_node_head_lag_blocks gauge",
        *(f'witness_node_head_lag_blocks{{node="{label(n.node)}"}} {n.lag_blocks}' for n in nodes
          if n.lag_blocks is not None),
    ]


def _metric(name: str, kind: str, text: str, value: int) -> list[str]:
    full = f"witness_watcher_{name}"
    return [f"# HELP {full} {text}", f"# TYPE {full} {kind}", f"{full} {value}"]


class MetricsServer:
    """Serves ``GET /metrics`` on ``host:port`` in a daemon thread."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        handler = _handler_for(metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, name="metrics",
                                        daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        """Start serving; return self."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


def _handler_for(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._send(404, b"not found\n", "text/plain")
                return
            self._send(200, metrics.render().encode(), _CONTENT_TYPE)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            log.debug("metrics: %s", format % args)

    return Handler
