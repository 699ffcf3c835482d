"""Serving Prometheus metrics: a registry's exposition on ``GET /metrics``, loopback only.

With :mod:`watcher.metrics` and :mod:`signer.metrics`, one of the three modules that import
``prometheus_client``. Each service builds its own :class:`CollectorRegistry` (no process
global: tests run several services in one process) and hands it to :class:`MetricsServer`,
a small threaded WSGI server of its own, apart from the signer's API listener.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

__all__ = ["CollectorRegistry", "MetricsServer"]

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        log.debug("metrics: %s", format % args)


def _only_metrics(app: WSGIApp) -> WSGIApp:
    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain"),
                                             ("Content-Length", "10")])
            return [b"not found\n"]
        return app(environ, start_response)

    return route


class MetricsServer:
    """Serves ``GET /metrics`` of ``registry`` on ``host:port`` in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        """Bind the port (0: any free one).

        Raises:
            OSError: the port cannot be bound.
        """
        self._server = make_server(host, port, _only_metrics(make_wsgi_app(registry)),
                                   server_class=_ThreadingServer, handler_class=_QuietHandler)
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
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
