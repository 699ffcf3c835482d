"""Threat T3/T10: an address whose requests keep being refused is read at a fixed pace.

The signer's real HTTP front (`signer.serving.FrontServer`) serves a WSGI app that
answers by path: an unsigned 401 (what a forged request gets), a signed 403 (what an
authenticated client gets on a route its role may not use), or a signed 200. After
`refusal_burst_per_source` + 1 unsigned refusals, the next request from that address
is not read until its turn; requests from other addresses, and signed answers, are
never held back. Clients connect from other loopback addresses (127.0.0.x).
"""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from support.front import running_front

from signer.serving import FrontServer, ServeOptions

pytestmark = pytest.mark.timeout(60)

WAIT_S = 10.0
FLOODER, WATCHER, SCANNER = "127.0.0.3", "127.0.0.2", "127.0.0.4"
BURST = 2
PACE_S = 2.0  # one refused request per PACE_S once the burst is spent


class PathApp:
    """Answers by path; records (address, path) of every request it is handed."""

    def __init__(self) -> None:
        self.arrived: queue.Queue[tuple[str, str]] = queue.Queue()

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        self.arrived.put((environ["REMOTE_ADDR"], path))
        if path.startswith("/forged"):
            start_response("401 UNAUTHORIZED", [("Content-Length", "2")])
        elif path.startswith("/forbidden"):
            start_response("403 FORBIDDEN", [("Content-Length", "2"), ("Signature", "sig1=:AA==:")])
        else:
            start_response("200 OK", [("Content-Length", "2"), ("Signature", "sig1=:AA==:")])
        return [b"{}"]


def front(app: PathApp, header_timeout_s: float = 10) -> AbstractContextManager[FrontServer]:
    """The signer's front with a small burst and a slow pace, on its own thread and hub."""
    return running_front(app, ServeOptions(host="127.0.0.1", port=0, threads=2,
                                           header_timeout_s=header_timeout_s,
                                           refusals_per_source_per_s=1 / PACE_S,
                                           refusal_burst_per_source=BURST))


def connect(port: int, source: str) -> socket.socket:
    """A connection to the front from the loopback address ``source``."""
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT_S,
                                    source_address=(source, 0))


def read_answer(sock: socket.socket) -> bytes:
    """Read one whole answer (headers, then Content-Length bytes); return its status line."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed mid-answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError("connection closed in the answer's body")
        body += chunk
    return head.split(b"\r\n", 1)[0]


def ask(port: int, source: str, path: str) -> bytes:
    """One GET on its own connection; the answer's status line."""
    with connect(port, source) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: signer\r\nConnection: close\r\n\r\n".encode())
        return read_answer(sock)


def test_a_refused_address_waits_its_turn_while_another_is_served_at_once() -> None:
    """Burst + 1 forged requests answered at once; the next is read only after PACE_S, and a
    request sent from another address in the meantime is handed to the app first."""
    app = PathApp()
    with front(app) as server:
        port = server.socket.getsockname()[1]
        for i in range(BURST + 1):
            assert ask(port, FLOODER, f"/forged{i}") == b"HTTP/1.1 401 UNAUTHORIZED"
        assert [app.arrived.get(timeout=WAIT_S)[1] for _ in range(BURST + 1)] == [
            f"/forged{i}" for i in range(BURST + 1)]
        with connect(port, FLOODER) as held:
            sent_at = time.monotonic()
            held.sendall(b"GET /forged-paced HTTP/1.1\r\nHost: signer\r\n\r\n")
            assert ask(port, WATCHER, "/v1/status") == b"HTTP/1.1 200 OK"
            assert app.arrived.get(timeout=WAIT_S) == (WATCHER, "/v1/status")
            assert read_answer(held).startswith(b"HTTP/1.1 401")
            assert time.monotonic() - sent_at >= PACE_S * 0.9
            assert app.arrived.get(timeout=WAIT_S) == (FLOODER, "/forged-paced")


def test_signed_answers_never_count_and_malformed_requests_do() -> None:
    """A client whose every answer is signed (403 included) is never paced; an address that
    sends broken request lines, which gevent itself answers 400, is."""
    app = PathApp()
    with front(app) as server:
        port = server.socket.getsockname()[1]
        for i in range(4 * BURST):
            assert ask(port, WATCHER, f"/forbidden{i}") == b"HTTP/1.1 403 FORBIDDEN"
        assert server.pacer.delay(WATCHER, server.clock()) == 0.0
        assert len(server.pacer) == 0
        for _ in range(BURST + 2):
            with connect(port, SCANNER) as sock:
                sock.sendall(b"NOT A REQUEST\r\n\r\n")
                assert read_answer(sock).startswith(b"HTTP/1.1 400")
        assert server.pacer.delay(SCANNER, server.clock()) > 0
        assert ask(port, WATCHER, "/v1/status") == b"HTTP/1.1 200 OK"


def test_a_connection_answered_signed_is_not_queued_behind_its_own_address() -> None:
    """The flood comes from the watcher's own address: a new connection from there waits
    its turn, but the watcher's kept-alive connection, whose last answer was signed, is
    read at once, ahead of the flood's request that was queued before it."""
    app = PathApp()
    status = b"GET /v1/status HTTP/1.1\r\nHost: signer\r\n\r\n"
    with front(app) as server, connect(server.socket.getsockname()[1], WATCHER) as kept:
        port = server.socket.getsockname()[1]
        kept.sendall(status)
        assert read_answer(kept) == b"HTTP/1.1 200 OK"
        for i in range(BURST + 1):
            assert ask(port, WATCHER, f"/forged{i}") == b"HTTP/1.1 401 UNAUTHORIZED"
        before = server.pacer.delay(WATCHER, server.clock())
        assert before > 0  # the address is paced
        with connect(port, WATCHER) as held:
            held.sendall(b"GET /forged-paced HTTP/1.1\r\nHost: signer\r\n\r\n")
            deadline = time.monotonic() + WAIT_S
            while server.pacer.delay(WATCHER, server.clock()) < before + PACE_S / 2:
                assert time.monotonic() < deadline, "the flood's request never took its turn"
                time.sleep(0.01)
            for _ in range(2):  # the second is admitted after the flood's request queued
                kept.sendall(status)
                assert read_answer(kept) == b"HTTP/1.1 200 OK"
            arrived = [app.arrived.get(timeout=WAIT_S)[1] for _ in range(BURST + 5)]
            assert arrived == ["/v1/status", *(f"/forged{i}" for i in range(BURST + 1)),
                               "/v1/status", "/v1/status", "/forged-paced"]
            assert read_answer(held).startswith(b"HTTP/1.1 401")


def test_a_turn_further_off_than_the_header_deadline_closes_the_connection_unread() -> None:
    """With the header deadline shorter than the pace, a paced address's next connection
    is closed at once without a byte read or an answer, and costs the address no debt:
    a paced connection lasts no longer than any other."""
    app = PathApp()
    with front(app, header_timeout_s=PACE_S / 2) as server:
        port = server.socket.getsockname()[1]
        for i in range(BURST + 1):
            assert ask(port, FLOODER, f"/forged{i}") == b"HTTP/1.1 401 UNAUTHORIZED"
        before = server.pacer.delay(FLOODER, server.clock())
        assert before > PACE_S / 2
        with connect(port, FLOODER) as sock:
            sock.sendall(b"GET /forged-late HTTP/1.1\r\nHost: signer\r\n\r\n")
            try:
                closed = sock.recv(4096) == b""
            except ConnectionResetError:
                closed = True
            assert closed
        assert server.pacer.delay(FLOODER, server.clock()) <= before
        assert ask(port, WATCHER, "/v1/status") == b"HTTP/1.1 200 OK"
        assert [app.arrived.get(timeout=WAIT_S)[1] for _ in range(BURST + 2)] == [
            *(f"/forged{i}" for i in range(BURST + 1)), "/v1/status"]
