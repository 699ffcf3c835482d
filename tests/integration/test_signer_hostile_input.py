"""The signer's HTTP app served on a socket against oversized, chunked and garbled input.

The real Flask app over the real service on a devnet, served on ``127.0.0.1:0`` as in
test_signer_http.py; requests go out as raw bytes so that nothing a client library would
refuse to send is left untried.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.serving import make_server

from drill.services import RunningDevnet, running_devnet, running_signer
from shared.httpsig import load_private_key, signed_headers_for
from signer.app import build_service
from signer.config import SignerConfig
from signer.http import create_app
from signer.service import ServiceOptions

JSON = "application/json"
PATH = "/v1/failover"
MAX_BODY = 1024
TIMEOUT_S = 10.0


@dataclass
class RecordingNotifier:
    """Keeps every notification, to see whether the failed-auth alert fired."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    def send(self, event: str, text: str) -> None:
        """Record the notification."""
        self.sent.append((event, text))


@dataclass
class Served:
    """The signer app on a loopback port, with what it notified."""

    port: int
    drill: Path
    notifier: RecordingNotifier

    @property
    def url(self) -> str:
        """Base URL of the served app."""
        return f"http://127.0.0.1:{self.port}"

    def auth_alerts(self) -> int:
        """How many failed-authentication alerts the signer raised."""
        return sum(1 for event, _ in self.notifier.sent if event == "auth_failures")

    def signed(self, body: bytes, *, chunked: bool = False) -> dict[str, str]:
        """The watcher's genuine headers for ``POST /v1/failover`` with ``body``."""
        key = load_private_key(self.drill / "keys" / "watcher.key")
        headers = signed_headers_for("POST", self.url + PATH, body, JSON, key, "watcher",
                                     datetime.now(UTC))
        return headers | ({"Transfer-Encoding": "chunked"} if chunked else {})

    def raw(self, data: bytes) -> int:
        """Send ``data`` as is on a fresh connection; the status code answered (0: none)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT_S) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server may answer and close before reading everything
            answer = b""
            try:
                while b"\r\n" not in answer:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            except (ConnectionResetError, TimeoutError):
                pass
        line = answer.split(b"\r\n", 1)[0].split(b" ")
        return int(line[1]) if len(line) > 1 and line[1].isdigit() else 0


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevnet]:
    """A devnet (every node up) for the signer to read its chain id from."""
    with running_devnet(tmp_path_factory.mktemp("devnet"), slot_seconds=0.1) as running:
        yield running


@pytest.fixture(scope="module")
def served(devnet: RunningDevnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A manual-approval signer (nothing is ever broadcast) with a 1 KiB body limit.

    Every failed authentication is above the alert threshold (0 a minute, no quiet
    interval), so each 401 shows in the notifier as one alert.
    """
    config = SignerConfig.load(devnet.dir / "signer.toml")
    config = replace(config, state_dir=tmp_path_factory.mktemp("state"),
                     rpc_nodes=(devnet.url,), max_body_bytes=MAX_BODY,
                     policy=replace(config.policy, approval="manual"))
    notifier = RecordingNotifier()
    options = ServiceOptions(tick_s=0.1, auth_failures_alert_per_min=0,
                             auth_alert_interval=timedelta(0),
                             failover_requests_per_min=100_000)
    service = build_service(config, notifier=notifier, options=options)
    service.start()
    server = make_server("127.0.0.1", 0, create_app(service, config.max_body_bytes),
                         threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(server.server_port, devnet.dir, notifier)
    finally:
        server.shutdown()
        thread.join(10)
        service.close()


def ask_body(reason: str) -> bytes:
    """A well-formed failover body whose size is set by ``reason``."""
    return json.dumps({"witness": "alice", "failing_key": "STM" + "5" * 50,
                       "observed_total_missed": 1, "reason": reason}).encode()


def chunks(body: bytes, size: int = 300) -> Iterator[bytes]:
    """``body`` in pieces, so that requests sends it chunked, without Content-Length."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


def post_chunked(served: Served, body: bytes, headers: dict[str, str]) -> requests.Response:
    """POST ``body`` with Transfer-Encoding: chunked (a generator body: no length)."""
    with requests.Session() as session:
        session.trust_env = False
        return session.post(served.url + PATH, data=chunks(body), headers=headers,
                            timeout=TIMEOUT_S)


@pytest.mark.parametrize("size", [MAX_BODY + 1, 4 * MAX_BODY, 40 * MAX_BODY])
def test_oversized_chunked_body_gets_413_before_authentication(served: Served,
                                                              size: int) -> None:
    """A chunked body over the limit, genuinely signed, is a 413 and no failed login."""
    body = ask_body("x" * (size - len(ask_body(""))))
    assert len(body) == size
    alerts = served.auth_alerts()
    response = post_chunked(served, body, served.signed(body))
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 413
    assert response.json() == {"error": "invalid request"}
    assert served.auth_alerts() == alerts


def test_chunked_body_at_the_limit_is_authenticated(served: Served) -> None:
    """A chunked body of exactly the limit is read whole and authenticated (not a 413)."""
    body = ask_body("x" * (MAX_BODY - len(ask_body(""))))
    assert len(body) == MAX_BODY
    response = post_chunked(served, body, served.signed(body))
    assert response.status_code not in {401, 413}, response.text
    assert response.status_code < 500


def test_oversized_body_with_length_gets_413_and_no_failed_login(served: Served) -> None:
    """A declared oversized body is refused the same way, and an unsigned one is no login."""
    alerts = served.auth_alerts()
    body = ask_body("x" * 2 * MAX_BODY)
    request = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {JSON}\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    assert served.raw(request) == 413
    assert served.auth_alerts() == alerts


def test_failed_login_is_counted(served: Served) -> None:
    """The control: an unsigned body under the limit is a 401 and does raise the alert."""
    alerts = served.auth_alerts()
    with requests.Session() as session:
        session.trust_env = False
        response = session.post(served.url + PATH, data=chunks(ask_body("small")),
                                headers={"Content-Type": JSON}, timeout=TIMEOUT_S)
    assert response.status_code == 401
    assert served.auth_alerts() == alerts + 1


def test_served_signer_answers_oversized_chunked_body_with_413(devnet: RunningDevnet) -> None:
    """`witness-signer serve` (the gevent front) answers 413 to a signed oversized chunked body too.

    The deployed server, not the test server: the front de-chunks the body itself, and the
    signer must still see it as oversized rather than cut it and fail the digest (401).
    """
    limit = SignerConfig.load(devnet.dir / "signer.toml").max_body_bytes
    with running_signer(devnet.dir) as process:
        served = Served(int(process.url.rsplit(":", 1)[1]), devnet.dir, RecordingNotifier())
        body = ask_body("x" * (2 * limit))
        response = post_chunked(served, body, served.signed(body))
        small = ask_body("small")
        control = post_chunked(served, small, {"Content-Type": JSON})
    assert response.status_code == 413
    assert control.status_code == 401  # a chunked body under the limit reaches authentication
    failures = process.log.read_text().count("authentication failed")
    assert failures == 1, "only the unsigned control request may count as a failed login"


# ---- HTTP-level fuzz: whatever arrives on the socket, never a 5xx ------------------------

_TOKEN = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789!#$%&'*+.^_`|~"),
                 min_size=1, max_size=30)
_VALUE = st.binary(max_size=200).filter(lambda b: b"\r" not in b and b"\n" not in b)
_NAMES = st.sampled_from([b"Signature", b"Signature-Input", b"Content-Digest", b"Content-Type",
                          b"Content-Length", b"Transfer-Encoding", b"Host", b"Expect"])
_LINE = st.one_of(
    st.tuples(_NAMES, _VALUE).map(lambda nv: nv[0] + b": " + nv[1]),
    st.tuples(_TOKEN.map(str.encode), _VALUE).map(lambda nv: nv[0] + b":" + nv[1]),
    st.binary(max_size=80).filter(lambda b: b"\r" not in b and b"\n" not in b),
)
_METHOD = st.sampled_from([b"POST", b"GET", b"PUT", b"DELETE", b"OPTIONS", b"HEAD", b"PATCH",
                           b"post", b"BREW", b""])
_TARGET = st.one_of(
    st.sampled_from([b"/v1/failover", b"/v1/status", b"/v1/requests/" + b"0" * 32,
                     b"/v1/requests/x/approve", b"/healthz", b"*",
                     b"http://127.0.0.1/v1/failover", b"/v1/failover?x=1#f", b"//v1//failover"]),
    st.binary(min_size=1, max_size=60).filter(lambda b: b" " not in b and b"\r" not in b
                                             and b"\n" not in b),
)
_VERSION = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"HTTP/9.9", b"", b"HTTP/1.1x"])


def _chunked(body: bytes) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in chunks(body, 97))
    return out + b"0\r\n\r\n"


@st.composite
def garbled_requests(draw: st.DrawFn) -> bytes:
    """An HTTP/1.x request with any method, target, header lines and body framing."""
    head = draw(_METHOD) + b" " + draw(_TARGET) + b" " + draw(_VERSION) + b"\r\n"
    lines = draw(st.lists(_LINE, max_size=8))
    body = draw(st.binary(max_size=3 * MAX_BODY))
    framing = draw(st.sampled_from(["length", "chunked", "none", "wrong-length"]))
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == "wrong-length":
        lines.append(b"Content-Length: %d" % draw(st.integers(0, 4 * MAX_BODY)))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        body = _chunked(body) if draw(st.booleans()) else body
    return head + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(request=garbled_requests())
def test_garbled_requests_never_get_a_5xx(served: Served, request: bytes) -> None:
    """Random request lines, header lines and body framing on the socket never give a 5xx."""
    status = served.raw(request)
    assert status < 500, request[:300]


_PARTS = st.sampled_from(["Signature", "Signature-Input", "Content-Digest", "Content-Type",
                          "body"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(part=_PARTS, position=st.integers(0, 10_000), byte=st.integers(0, 255),
       chunked=st.booleans())
def test_genuine_request_with_one_byte_changed_never_gets_a_5xx(
        served: Served, part: str, position: int, byte: int, chunked: bool) -> None:
    """A signed request with one byte of a header or the body replaced is refused, not a 5xx."""
    body = ask_body("fuzz")
    headers = served.signed(body)
    if part == "body":
        data = bytearray(body)
        data[position % len(data)] = byte
        body = bytes(data)
    else:
        value = bytearray(headers[part].encode("latin-1"))
        value[position % len(value)] = byte if byte not in (10, 13) else 32
        headers[part] = value.decode("latin-1")
    framing = ("Transfer-Encoding: chunked\r\n" if chunked
               else f"Content-Length: {len(body)}\r\n")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n{head}{framing}"
               "Connection: close\r\n\r\n").encode("latin-1")
    status = served.raw(request + (_chunked(body) if chunked else body))
    assert status < 500
    assert status != 0, "no answer at all"
