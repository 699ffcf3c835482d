"""The devnet's HTTP front: virtual RPC endpoints, fault injection, the producer loop."""

from __future__ import annotations

import copy
import json
import logging
import random
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devnet.access import ChainAccess
from devnet.api_base import SERVER_ERROR, ControlError, RpcError
from devnet.chain import Chain
from devnet.config import DevnetConfig
from devnet.faults import Faults, lie, updated_endpoint_faults, updated_node_faults
from devnet.nodes import NodeApi
from devnet.rpc import Dispatcher
from shared.errors import ConfigError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
ENDPOINT_RE = re.compile(r"^/(?:rpc/(\d{1,3}))?/?$")


__all__ = ["ControlError", "Devnet", "DevnetHTTPServer", "Faults", "serve"]


class Devnet:
    """The running devnet: chain, endpoints with their faults, producer thread."""

    def __init__(self, cfg: DevnetConfig, chain: Chain) -> None:
        self.cfg = cfg
        self.access = ChainAccess(chain)
        self.endpoints = ["/"] + [f"/rpc/{i}" for i in range(1, cfg.endpoints + 1)]
        self._faults: dict[str, Faults] = {e: Faults() for e in self.endpoints}
        self._frozen: dict[str, Dispatcher] = {}
        self._faults_lock = threading.Lock()
        self._stop = threading.Event()
        self._rng = random.Random()  # noqa: S311 - fault timing, not a secret
        self.node_apis = {n.name: NodeApi(n.name, cfg.host, n.api_port, self.access,
                                          sync_timeout_s=cfg.sync_broadcast_timeout_s,
                                          port_given=n.api_port_given)
                          for n in cfg.nodes}
        control = {
            "devnet.status": self.status,
            "devnet.stop_node": self.stop_node,
            "devnet.start_node": self.start_node,
            "devnet.set_node_faults": self.set_node_faults,
            "devnet.set_faults": self.set_faults,
            "devnet.halt": self.halt,
            "devnet.resume": self.resume,
        }
        self.dispatcher = Dispatcher(self.access, control,
                                     sync_timeout_s=cfg.sync_broadcast_timeout_s)
        self._control = control
        self._producer = threading.Thread(target=self._produce_loop, name="producer", daemon=True)

    # ---- producer ---------------------------------------------------------

    def start(self) -> None:
        """Open the APIs of the nodes that are up, then produce every ``slot_seconds``.

        Raises:
            ConfigError: a node's API port cannot be bound (nothing is left open).
        """
        try:
            for name, node_api in self.node_apis.items():
                if self.access.chain.nodes[name].up:
                    node_api.open()
        except Exception:
            self.close_node_apis()
            raise
        self._producer.start()

    def stop(self) -> None:
        """Stop producing and close the node APIs; wakes any held (timed-out) requests."""
        self._stop.set()
        if self._producer.is_alive():
            self._producer.join(timeout=5)
        self.close_node_apis()

    def close_node_apis(self) -> None:
        """Close every node's API listener."""
        for node_api in self.node_apis.values():
            node_api.close()

    def _produce_loop(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            deadline += self.cfg.slot_seconds
            delay = deadline - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -self.cfg.slot_seconds * 4:
                deadline = time.monotonic()  # fell far behind: do not burst
            with self.access.lock:
                block = self.access.chain.tick()
                self.access.notify_block(block)

    # ---- control methods (JSON-RPC devnet.*) ----------------------------

    def status(self, params: object = None) -> dict[str, Any]:
        """The devnet.status document (DESIGN.md fields and more)."""
        with self.access.lock:
            chain = self.access.chain
            w = chain.state.witnesses.get(chain.watched)
            slots = [r for r in chain.slot_log if r.witness == chain.watched]
            return {
                "chain": self.cfg.chain.name,
                "chain_id": self.cfg.chain.chain_id,
                "head_block_number": chain.head_num,
                "head_block_id": chain.head_id,
                "head_block_time": chain.head_time.strftime("%Y-%m-%dT%H:%M:%S"),
                "current_aslot": chain.current_aslot,
                "slot_seconds": self.cfg.slot_seconds,
                "halted": chain.halted,
                "witness": {
                    "owner": chain.watched,
                    "signing_key": w.signing_key if w else "",
                    "total_missed": w.total_missed if w else 0,
                    "last_confirmed_block_num": w.last_confirmed_block_num if w else 0,
                    "last_aslot": w.last_aslot if w else 0,
                    "url": w.url if w else "",
                },
                "nodes": [self._node_status(n.name, n.public_key, n.up)
                          for n in chain.nodes.values()],
                "double_production": chain.double_production,
                "watched_slots": {
                    "scheduled": chain.watched_scheduled,
                    "produced": chain.watched_produced,
                    "recent_missed_aslots": [r.aslot for r in slots if not r.produced][-50:],
                },
                "pending_transactions": chain.pending_count,
                "endpoints": {e: asdict(f) for e, f in self._faults_snapshot().items()},
            }

    def _node_status(self, name: str, public_key: str, up: bool) -> dict[str, Any]:
        node_api = self.node_apis[name]
        return {"name": name, "public_key": public_key, "up": up, "api_url": node_api.url,
                "head_block_number": node_api.head_block_number(),
                "faults": node_api.faults.as_json()}

    def _node_params(self, params: object) -> str:
        if not isinstance(params, Mapping) or not isinstance(params.get("name"), str):
            raise ControlError('params must be {"name": "<node>"}')
        name = params["name"]
        if name not in self.access.chain.nodes:
            raise ControlError(f"unknown node {name!r}")
        return str(name)

    def stop_node(self, params: object) -> dict[str, Any]:
        """Take a producer node down: it stops signing blocks and its API port refuses."""
        name = self._node_params(params)
        with self.access.lock:
            self.access.chain.nodes[name].up = False
        self.node_apis[name].close()
        log.info("node %s stopped", name)
        return self.status()

    def start_node(self, params: object) -> dict[str, Any]:
        """Bring a producer node back up, its API on the same port; faults stay as set."""
        name = self._node_params(params)
        try:
            self.node_apis[name].open()
        except ConfigError as e:
            raise RpcError(SERVER_ERROR, f"node {name} cannot start: {e}") from e
        with self.access.lock:
            self.access.chain.nodes[name].up = True
        log.info("node %s started", name)
        return self.status()

    def set_node_faults(self, params: object) -> dict[str, Any]:
        """Change one node's faults (stuck, slow_s, partition); omitted fields stay."""
        name = self._node_params(params)
        assert isinstance(params, Mapping)  # checked by _node_params
        node_api = self.node_apis[name]
        faults = updated_node_faults(node_api.faults, params)
        with self.access.lock:
            # One lock for both: the node stops producing at the head it froze at.
            self.access.chain.nodes[name].stuck = faults.stuck
            node_api.set_faults(faults)
        log.info("node %s faults: %s", name, faults)
        return self.status()

    def halt(self, params: object = None) -> dict[str, Any]:
        """Stop the whole chain: no slots pass, so nothing is counted."""
        with self.access.lock:
            self.access.chain.halted = True
        return self.status()

    def resume(self, params: object = None) -> dict[str, Any]:
        """Resume a halted chain from the next slot."""
        with self.access.lock:
            self.access.chain.halted = False
        return self.status()

    def set_faults(self, params: object) -> dict[str, Any]:
        """Change one endpoint's faults; omitted fields stay as they are."""
        if not isinstance(params, Mapping):
            raise ControlError("params must be an object")
        endpoint = params.get("endpoint")
        if endpoint not in self._faults:
            raise ControlError(f"unknown endpoint {endpoint!r}; have {self.endpoints}")
        with self._faults_lock:
            new = updated_endpoint_faults(self._faults[endpoint], params)
            self._faults[endpoint] = new
            if new.freeze_head and endpoint not in self._frozen:
                self._frozen[endpoint] = self._snapshot_dispatcher()
            elif not new.freeze_head:
                self._frozen.pop(endpoint, None)
        log.info("faults on %s: %s", endpoint, new)
        return self.status()

    def _snapshot_dispatcher(self) -> Dispatcher:
        """A dispatcher over a frozen copy of the chain: a node stuck at this head."""
        with self.access.lock:
            frozen = copy.deepcopy(self.access.chain)
        return Dispatcher(ChainAccess(frozen), self._control, sync_timeout_s=0.5)

    def _faults_snapshot(self) -> dict[str, Faults]:
        with self._faults_lock:
            return dict(self._faults)

    # ---- request handling -----------------------------------------------

    def handle(self, endpoint: str, body: bytes) -> tuple[int, bytes | None]:
        """Answer one HTTP POST on ``endpoint``: (status, body or None to hang)."""
        with self._faults_lock:
            faults = self._faults[endpoint]
            dispatcher = self._frozen.get(endpoint, self.dispatcher)
        if faults.latency_s:
            self._stop.wait(faults.latency_s)
        if faults.timeout:
            return 0, None
        if faults.error_rate and self._rng.random() < faults.error_rate:
            return 503, json.dumps({"jsonrpc": "2.0", "id": None, "error": {
                "code": -32003, "message": "Unable to acquire database lock"}}).encode()
        answer = dispatcher.handle(body)
        if faults.wrong_data and answer is not None:
            answer = lie(answer)
        return 200, answer

    def hang(self, limit_s: float) -> None:
        """Hold a timed-out request open until the client gives up or we stop."""
        self._stop.wait(limit_s)


class _Handler(BaseHTTPRequestHandler):
    server: DevnetHTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, keep-alive
    # clients waited ~44 ms per call for the delayed ACK (bench/signer_bench.py).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _endpoint(self) -> str | None:
        path = self.path.split("?", 1)[0]
        m = ENDPOINT_RE.match(path)
        if not m:
            return None
        endpoint = "/" if m.group(1) is None else f"/rpc/{int(m.group(1))}"
        return endpoint if endpoint in self.server.devnet.endpoints else None

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self._endpoint() is None:
            self._send(404, b'{"error": "not found"}')
            return
        self._send(200, b'{"devnet": "ok"}')

    def do_POST(self) -> None:
        endpoint = self._endpoint()
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(411, b'{"error": "Content-Length required"}')
            return
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, b'{"error": "body too large"}')
            return
        body = self.rfile.read(length)
        if endpoint is None:
            self._send(404, b'{"error": "no such endpoint"}')
            return
        status, answer = self.server.devnet.handle(endpoint, body)
        if answer is None and status == 0:
            self.close_connection = True
            self.server.devnet.hang(60.0)
            return
        if answer is None:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(status, answer)


class DevnetHTTPServer(ThreadingHTTPServer):
    """One port, many virtual endpoints, a thread per connection."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, devnet: Devnet, host: str, port: int) -> None:
        self.devnet = devnet
        super().__init__((host, port), _Handler)


def serve(cfg: DevnetConfig, chain: Chain) -> tuple[Devnet, DevnetHTTPServer]:
    """Bind the listeners (the chain's, each up node's) and start producing.

    The caller runs ``serve_forever`` and, at the end, ``devnet.stop()``.

    Raises:
        ConfigError: a node's API port cannot be bound.
        OSError: the chain's port cannot be bound.
    """
    devnet = Devnet(cfg, chain)
    httpd = DevnetHTTPServer(devnet, cfg.host, cfg.port)
    try:
        devnet.start()
    except Exception:
        httpd.server_close()
        raise
    return devnet, httpd
