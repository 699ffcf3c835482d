"""The watcher's signer client: signed requests, only verified answers, bounded retries."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shared.clock import SystemClock
from shared.httpsig import (
    Ed25519Signer,
    Headers,
    HttpMessage,
    HttpResponse,
    MemoryNonceStore,
    VerifiedRequest,
    sign_response,
    verify_request,
)
from watcher.signer_client import (
    SignerClient,
    SignerProtocolError,
    SignerUnreachableError,
    UntrustedAnswerError,
)

WATCHER_KEY = Ed25519Signer.generate()
SIGNER_KEY = Ed25519Signer.generate()
OTHER_KEY = Ed25519Signer.generate()
BODY = b'{"failing_key":"STMx","request_id":"rrrrrrrrrrrrrrrrrrrr","witness":"alice"}'
Answer = tuple[int, dict[str, Any]]
Tamper = Callable[[int, dict[str, str], bytes, VerifiedRequest], tuple[dict[str, str], bytes]]


class StubSigner:
    """A signer API stand-in: verifies each request, answers from a script, signs the answer."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.tamper: Tamper | None = None
        self.received: list[tuple[str, str, bytes, str]] = []  # method, path, body, nonce
        self.last_signed: tuple[dict[str, str], bytes] | None = None
        self._nonces = MemoryNonceStore()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                msg = HttpMessage(self.command, f"{stub.url}{self.path}",
                                  Headers(self.headers.items()), body)
                verified = verify_request(msg, {"watcher": WATCHER_KEY.public_key},
                                          stub._nonces, datetime.now(UTC))
                stub.received.append((self.command, self.path, body, verified.nonce))
                status, doc = stub.script.pop(0) if len(stub.script) > 1 else stub.script[0]
                out = json.dumps(doc).encode()
                headers = {"Content-Type": "application/json"}
                headers.update(sign_response(HttpResponse(status, Headers(headers), out),
                                             verified, SIGNER_KEY, datetime.now(UTC)))
                if stub.tamper is not None:
                    headers, out = stub.tamper(status, headers, out, verified)
                else:
                    stub.last_signed = (headers, out)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass

        return Handler


@pytest.fixture
def stub() -> Iterator[StubSigner]:
    """A running stub signer."""
    server = StubSigner()
    yield server
    server.close()


def client(url: str, attempts: int = 3) -> tuple[SignerClient, list[float]]:
    """A client that records its backoff sleeps instead of sleeping."""
    sleeps: list[float] = []
    c = SignerClient(url, WATCHER_KEY, "watcher", SIGNER_KEY.public_key, clock=SystemClock(),
                     sleep=sleeps.append, timeout_s=2, attempts=attempts, backoff_s=0.4)
    return c, sleeps


CONFIRMED = (200, {"state": "confirmed", "request_id": "sig1", "target_key": "STMb",
                   "tx_id": "ab" * 20, "block_num": 9})


def test_confirmed_answer_is_verified_and_parsed(stub: StubSigner) -> None:
    """A signed answer bound to our request is accepted and parsed; the exact body was sent."""
    stub.script = [CONFIRMED]
    c, _ = client(stub.url)
    answer = c.failover(BODY)
    assert (answer.state, answer.tx_id, answer.block_num, answer.final) == (
        "confirmed", "ab" * 20, 9, True)
    assert stub.received[0][:3] == ("POST", "/v1/failover", BODY)


def test_retries_5xx_with_fresh_nonce_same_body(stub: StubSigner) -> None:
    """503 is retried with backoff: same body, new nonce each time, then the final answer."""
    stub.script = [(503, {"error": "chain unavailable"}), (503, {"error": "x"}), CONFIRMED]
    c, sleeps = client(stub.url)
    assert c.failover(BODY).state == "confirmed"
    assert [r[2] for r in stub.received] == [BODY] * 3
    assert len({r[3] for r in stub.received}) == 3
    assert len(sleeps) == 2
    assert 0.2 <= sleeps[0] <= 0.4
    assert 0.4 <= sleeps[1] <= 0.8


def test_signed_failure_state_is_final_not_retried(stub: StubSigner) -> None:
    """A signed 502 carrying state "failed" is the answer, not a network error."""
    stub.script = [(502, {"state": "failed", "request_id": "sig1", "detail": "expired"})]
    c, sleeps = client(stub.url)
    assert c.failover(BODY).state == "failed"
    assert sleeps == []


def test_network_down_raises_after_attempts() -> None:
    """Nothing listening: every attempt fails, then SignerUnreachableError."""
    c, sleeps = client("http://127.0.0.1:9", attempts=3)
    with pytest.raises(SignerUnreachableError):
        c.failover(BODY)
    assert len(sleeps) == 2


def _unsigned(status: int, headers: dict[str, str], body: bytes,
              req: VerifiedRequest) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": "application/json"}, body


def _wrong_key(status: int, headers: dict[str, str], body: bytes,
               req: VerifiedRequest) -> tuple[dict[str, str], bytes]:
    base = {"Content-Type": "application/json"}
    return {**base, **sign_response(HttpResponse(status, Headers(base), body), req, OTHER_KEY,
                                    datetime.now(UTC))}, body


def _stale(status: int, headers: dict[str, str], body: bytes,
           req: VerifiedRequest) -> tuple[dict[str, str], bytes]:
    base = {"Content-Type": "application/json"}
    old = datetime.now(UTC) - timedelta(minutes=5)
    return {**base, **sign_response(HttpResponse(status, Headers(base), body), req, SIGNER_KEY,
                                    old)}, body


def _altered_body(status: int, headers: dict[str, str], body: bytes,
                  req: VerifiedRequest) -> tuple[dict[str, str], bytes]:
    return headers, body.replace(b"refused", b"confirmed")


@pytest.mark.parametrize("tamper", [_unsigned, _wrong_key, _stale, _altered_body],
                         ids=lambda f: f.__name__.strip("_"))
def test_untrusted_answers_are_rejected(stub: StubSigner, tamper: Tamper) -> None:
    """Unsigned, wrongly signed, stale or altered answers raise UntrustedAnswerError."""
    stub.script = [(409, {"state": "refused", "detail": "no evidence"})]
    stub.tamper = tamper
    c, _ = client(stub.url, attempts=2)
    with pytest.raises(UntrustedAnswerError):
        c.failover(BODY)


def test_replayed_answer_for_another_request_is_rejected(stub: StubSigner) -> None:
    """A genuine signed answer to an earlier request does not pass for a new one (unbound)."""
    stub.script = [CONFIRMED]
    c, _ = client(stub.url, attempts=1)
    c.failover(BODY)
    assert stub.last_signed is not None
    old_headers, old_body = stub.last_signed
    stub.tamper = lambda status, headers, body, req: (old_headers, old_body)
    with pytest.raises(UntrustedAnswerError):
        c.failover(BODY)


def test_follow_polls_pending_until_final(stub: StubSigner) -> None:
    """A pending request is followed with GET /v1/requests/<id> until it is final."""
    pending = (202, {"state": "pending", "request_id": "sig1"})
    stub.script = [pending, pending, CONFIRMED]
    c, sleeps = client(stub.url)
    first = c.failover(BODY)
    assert not first.final
    final = c.follow(first, timeout_s=30, interval_s=0.01)
    assert final.state == "confirmed"
    assert [r[:2] for r in stub.received[1:]] == [("GET", "/v1/requests/sig1")] * 2
    assert sleeps == [0.01, 0.01]


def test_verified_answer_without_state_is_a_protocol_error(stub: StubSigner) -> None:
    """A signed 422 without a request state is reported, not retried."""
    stub.script = [(422, {"error": "invalid request", "detail": "unknown field"})]
    c, sleeps = client(stub.url)
    with pytest.raises(SignerProtocolError):
        c.failover(BODY)
    assert sleeps == []


def test_status_round_trip(stub: StubSigner) -> None:
    """GET /v1/status returns the verified document."""
    stub.script = [(200, {"witness": "alice", "ready": True})]
    c, _ = client(stub.url)
    assert c.status() == {"witness": "alice", "ready": True}
    assert stub.received[0][:2] == ("GET", "/v1/status")
