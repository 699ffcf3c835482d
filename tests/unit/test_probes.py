"""The probe I/O shell against real loopback sockets: every failure is a result, never a raise."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from signer.health import HealthConfig
from signer.probes import NodeProber, ProbeTarget

KEY = "STM" + "5" * 50
ANSWERS: dict[str, tuple[int, bytes]] = {
    "/ok": (200, json.dumps({"jsonrpc": "2.0", "id": 1, "result": {
        "head_block_number": 1000, "time": "2024-06-01T12:00:00",
        "head_block_id": "000003e8" + "0" * 32, "current_aslot": 1000,
        "last_irreversible_block_num": 980, "current_witness": "alice"}}).encode()),
    "/garbage": (200, b"<html>not json</html>"),
    "/rpc_error": (200, json.dumps({"jsonrpc": "2.0", "id": 1, "error": {
        "code": -32601, "message": "no such method"}}).encode()),
    "/unavailable": (503, b""),
}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, body = ANSWERS[self.path]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def node_url() -> Iterator[str]:
    """A tiny HTTP server on 127.0.0.1 answering per path."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("path", "state", "detail"), [
    ("/ok", "healthy", ""),
    ("/garbage", "down", "bad answer"),
    ("/rpc_error", "down", "bad answer"),
    ("/unavailable", "down", "HTTP 503"),
])
def test_probe_outcomes_are_classified(node_url: str, path: str, state: str,
                                       detail: str) -> None:
    """A node answering garbage, an RPC error or a 503 is down, with the reason kept."""
    prober = NodeProber([ProbeTarget("primary", KEY, node_url + path)], HealthConfig())
    try:
        node = prober.snapshot(1000).nodes[0]
    finally:
        prober.close()
    assert node.state == state
    assert detail in node.detail


def test_refused_port_and_missing_url() -> None:
    """A closed port is down (connection refused); a node without a URL is unknown."""
    targets = [ProbeTarget("primary", KEY, f"http://127.0.0.1:{closed_port()}/"),
               ProbeTarget("backup1", KEY.replace("5", "6"), None)]
    prober = NodeProber(targets, HealthConfig(probe_timeout_s=0.5))
    try:
        primary, backup1 = prober.snapshot(1000).nodes
    finally:
        prober.close()
    assert (primary.state, primary.detail) == ("down", "connection refused")
    assert backup1.state == "unknown"


def test_confirmation_reprobes_a_dead_node(node_url: str) -> None:
    """A dead node is probed confirm_probes times, confirm_interval_s apart, before it counts."""
    pauses: list[float] = []
    prober = NodeProber([ProbeTarget("primary", KEY, f"http://127.0.0.1:{closed_port()}/"),
                         ProbeTarget("backup1", KEY.replace("5", "6"), node_url + "/ok")],
                        HealthConfig(confirm_probes=3, confirm_interval_s=0.1),
                        sleep=pauses.append)
    try:
        snap = prober.snapshot(1000)
        before = prober.calls
        confirmed = prober.confirm_dead(snap, KEY)
        untouched = prober.confirm_dead(snap, KEY.replace("5", "6"))
    finally:
        prober.close()
    assert pauses == [0.1, 0.1]
    assert prober.calls - before == 2
    assert confirmed.of_key(KEY) is not None
    assert "3 consecutive probes failed" in confirmed.of_key(KEY).detail  # type: ignore[union-attr]
    assert untouched == snap
