"""Each producer node's own JSON-RPC API: its port, its view of the chain, its faults.

A watcher or signer asks a producer node directly whether it is alive and in sync
(docs/devnet.md, "Producer-node APIs and node faults"). The devnet gives every node
of the watched witness such an API on its own port:

- up and in sync: the node's head is the chain's head (it shares the chain);
- stopped: the listening socket is closed and open connections are shut down, so
  the port refuses connections as the port of a dead host's process does; starting
  the node listens again on the same port;
- ``stuck``: answers from a copy of the chain taken when the fault was set (head
  frozen, out of sync); the chain's producer skips a stuck node (:mod:`devnet.chain`);
- ``slow_s``: every answer waits that long first;
- ``partition``: connections from the listed source addresses (or networks) are
  reset when accepted (``partition_mode = "reset"``) or held unanswered until the
  client gives up (``"drop"``), while every other source is served: one side of a
  network partition, e.g. the watcher's address but not the signer's.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devnet.access import ChainAccess
from devnet.faults import NodeFaults
from devnet.rpc import Dispatcher
from shared.errors import ConfigError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
POLL_INTERVAL_S = 0.05  # how soon a stop closes the listening socket
HOLD_LIMIT_S = 60.0  # a dropped connection is held at most this long


class NodeApi:
    """One producer node's JSON-RPC listener, opened while the node is up."""

    def __init__(self, name: str, host: str, port: int, access: ChainAccess, *,
                 sync_timeout_s: float, port_given: bool = True) -> None:
        self.name = name
        self.host = host
        self._port = port
        # A port derived from devnet.port may fall back to a free one at first start;
        # a port named in devnet.toml, or once bound, is kept or the start fails.
        self._may_move = not port_given
        self._access = access
        self._live = Dispatcher(access, {}, sync_timeout_s=sync_timeout_s, node_name=name)
        self._faults = NodeFaults()
        self._frozen: Dispatcher | None = None
        self._frozen_access: ChainAccess | None = None
        self._state_lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._server: _NodeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port: as configured until first bound, then the bound one (kept on restart)."""
        return self._port

    @property
    def url(self) -> str:
        """The API's URL."""
        return f"http://{self.host}:{self._port}/"

    @property
    def faults(self) -> NodeFaults:
        """The node's current faults."""
        with self._state_lock:
            return self._faults

    def dispatcher(self) -> Dispatcher:
        """What answers requests now: the live chain, or the stuck node's frozen copy."""
        with self._state_lock:
            return self._frozen or self._live

    def head_block_number(self) -> int:
        """The head of the node's own view of the chain."""
        with self._state_lock:
            access = self._frozen_access or self._access
        with access.lock:
            return access.chain.head_num

    def set_faults(self, faults: NodeFaults) -> None:
        """Apply ``faults``; becoming stuck freezes the view at the current head.

        The caller sets the chain's node ``stuck`` under the same (re-entrant) chain
        lock, so the frozen head is the last head the node produced on.
        """
        # Lock order everywhere: the chain's, then this node's state.
        with self._access.lock, self._state_lock:
            if faults.stuck and self._frozen is None:
                frozen = ChainAccess(copy.deepcopy(self._access.chain))
                self._frozen_access = frozen
                self._frozen = Dispatcher(frozen, {}, sync_timeout_s=0.5, node_name=self.name)
            elif not faults.stuck:
                self._frozen = self._frozen_access = None
            self._faults = faults

    def open(self) -> None:
        """Listen on the node's port (the same one after a restart).

        Raises:
            ConfigError: the port cannot be bound (in use, not permitted).
        """
        with self._open_lock:
            if self._server is not None:
                return
            server = self._bind()
            self._port = int(server.server_address[1])
            self._may_move = False
            thread = threading.Thread(target=server.serve_forever, args=(POLL_INTERVAL_S,),
                                      name=f"node-api-{self.name}", daemon=True)
            self._server, self._thread = server, thread
            thread.start()
        log.info("node %s API listening on %s", self.name, self.url)

    def _bind(self) -> _NodeHTTPServer:
        try:
            return _NodeHTTPServer(self, (self.host, self._port))
        except OSError as e:
            if not (self._may_move and e.errno == errno.EADDRINUSE):
                raise ConfigError(f"cannot listen on {self.host}:{self._port} for node "
                                  f"{self.name}: {e.strerror}", field="nodes.api_port") from e
        log.warning("node %s: default API port %s is in use; taking a free port (name "
                    "api_port in devnet.toml to insist)", self.name, self._port)
        return self._bind_any()

    def _bind_any(self) -> _NodeHTTPServer:
        try:
            return _NodeHTTPServer(self, (self.host, 0))
        except OSError as e:
            raise ConfigError(f"cannot listen on {self.host} for node {self.name}: "
                              f"{e.strerror}", field="nodes.api_port") from e

    def close(self) -> None:
        """Stop listening and shut every open connection: the port now refuses."""
        with self._open_lock:
            server, thread = self._server, self._thread
            if server is None:
                return
            self._server = self._thread = None
            server.closed.set()
            server.shutdown()
            server.server_close()
            server.drop_connections()
            if thread is not None:
                thread.join(timeout=5)
        log.info("node %s API closed", self.name)


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset instead of an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _NodeHTTPServer(ThreadingHTTPServer):
    """The listener of one node; knows its connections so a stop can cut them."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, node: NodeApi, address: tuple[str, int]) -> None:
        self.node = node
        self.closed = threading.Event()
        self._connections: set[socket.socket] = set()
        self._resets: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _NodeHandler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        faults = self.node.faults
        if faults.partition_mode == "reset" and faults.cuts_off(client_address[0]):
            _reset(request)
            return False
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def reset_when_done(self, request: socket.socket) -> None:
        """End ``request``'s connection with a reset once its handler returns."""
        with self._conn_lock:
            self._resets.add(request)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
            reset = request in self._resets
            self._resets.discard(request)
        if reset:
            _reset(request)
        else:
            super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Shut down every open connection (their handlers then see EOF and end)."""
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _NodeHandler(BaseHTTPRequestHandler):
    server: _NodeHTTPServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # see devnet.server._Handler

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("node %s: %s %s", self.server.node.name, self.address_string(),
                  format % args)

    def _cut_off(self) -> bool:
        """Apply a partition to this request; True when it must go unanswered."""
        faults = self.server.node.faults
        if not faults.cuts_off(self.client_address[0]):
            return False
        self.close_connection = True
        if faults.partition_mode == "drop":
            # Packets dropped: the client hears nothing until it gives up.
            self.server.closed.wait(HOLD_LIMIT_S)
        self.server.reset_when_done(self.connection)
        return True

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self._cut_off():
            return
        self._send(200, b'{"devnet": "ok"}')

    def do_POST(self) -> None:
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
        if self._cut_off():
            return
        node = self.server.node
        slow_s = node.faults.slow_s
        if slow_s and self.server.closed.wait(slow_s):
            self.close_connection = True  # stopped while answering slowly: no answer
            return
        answer = node.dispatcher().handle(body)
        if self.server.closed.is_set():
            self.close_connection = True
            return
        if answer is None:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(200, answer)
