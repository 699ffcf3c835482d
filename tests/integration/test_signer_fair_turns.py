"""Threat T3/T10: a flood from one address cannot queue ahead of another address's request.

The signer's real HTTP front (`signer.serving.FrontServer`: gevent, the per-source
gate, one application thread) serves a WSGI app that holds every request until the
test lets it go, so the order in which waiting requests get the thread is observed
directly, without timing. Clients connect from other loopback addresses (127.0.0.x,
which Linux routes locally) so that sources differ.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from support.front import running_front

from signer.serving import FrontServer, ServeOptions

pytestmark = pytest.mark.timeout(60)

WAIT_S = 10.0
FLOODER, WATCHER = "127.0.0.3", "127.0.0.2"


class HeldApp:
    """A WSGI app that records each request's (address, path) and holds it until released."""

    def __init__(self) -> None:
        self.arrived: queue.Queue[tuple[str, str]] = queue.Queue()
        self._release: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def gate_for(self, path: str) -> threading.Event:
        """The event that lets the request for ``path`` finish."""
        with self._lock:
            return self._release.setdefault(path, threading.Event())

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        self.arrived.put((environ["REMOTE_ADDR"], path))
        if not self.gate_for(path).wait(WAIT_S):
            raise AssertionError(f"{path} was never released")
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]


def front(app: HeldApp, threads: int) -> AbstractContextManager[FrontServer]:
    """The signer's front on an ephemeral loopback port, on its own thread and hub."""
    return running_front(app, ServeOptions(host="127.0.0.1", port=0, threads=threads))


def send(port: int, source: str, path: str) -> socket.socket:
    """Open a connection from ``source`` and send a GET for ``path``; the answer is not read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S,
                                    source_address=(source, 0))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: signer\r\n\r\n".encode())
    return sock


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until true, failing after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_another_address_is_served_before_the_flooders_backlog() -> None:
    """One thread busy, three more waiting from a flooder, then one from the watcher: it is next."""
    app = HeldApp()
    with front(app, threads=1) as server:
        port = server.socket.getsockname()[1]
        sockets = [send(port, FLOODER, "/f0")]
        assert app.arrived.get(timeout=WAIT_S) == (FLOODER, "/f0")
        sockets += [send(port, FLOODER, f"/f{i}") for i in (1, 2, 3)]
        wait_for(lambda: server.gate.waiting == 3, "three flood requests waiting")
        sockets.append(send(port, WATCHER, "/w"))
        wait_for(lambda: server.gate.waiting == 4, "the watcher's request waiting")
        order = ["/f0"]
        for _ in range(4):
            app.gate_for(order[-1]).set()
            order.append(app.arrived.get(timeout=WAIT_S)[1])
        app.gate_for(order[-1]).set()
        for sock in sockets:
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
            sock.close()
    assert order == ["/f0", "/w", "/f1", "/f2", "/f3"]


def test_a_flooder_never_holds_every_thread_and_no_thread_is_lost() -> None:
    """Two threads: the flooder gets one, the watcher the other at once; all are reused after."""
    app = HeldApp()
    with front(app, threads=2) as server:
        port = server.socket.getsockname()[1]
        flood = [send(port, FLOODER, "/f0")]
        assert app.arrived.get(timeout=WAIT_S) == (FLOODER, "/f0")
        flood.append(send(port, FLOODER, "/f1"))
        wait_for(lambda: server.gate.waiting == 1, "the flooder's second request waiting")
        watcher = send(port, WATCHER, "/w")
        assert app.arrived.get(timeout=WAIT_S) == (WATCHER, "/w")  # f0 still holds its thread
        assert server.gate.waiting == 1
        app.gate_for("/f0").set()
        assert app.arrived.get(timeout=WAIT_S) == (FLOODER, "/f1")
        for path in ("/w", "/f1"):
            app.gate_for(path).set()
        for sock in (*flood, watcher):
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
            sock.close()
        again = [send(port, WATCHER, "/again0"), send(port, FLOODER, "/again1")]
        assert {app.arrived.get(timeout=WAIT_S)[1] for _ in again} == {"/again0", "/again1"}
        for path in ("/again0", "/again1"):
            app.gate_for(path).set()
        for sock in again:
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
            sock.close()
        assert server.gate.waiting == 0
