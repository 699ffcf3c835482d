"""Threat T10: slow and hostile clients cannot starve the signer (`witness-signer serve`).

The real signer process on a devnet drill directory, with short deadlines so the test
stays bounded. Slow clients connect from other loopback addresses (127.0.0.x, which
Linux routes locally) so the per-source cap can be told apart from the legitimate
client on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import statistics
import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from drill.procs import console_script, free_port_base, start_process
from drill.services import Service, running_devnet, running_signer
from shared.httpsig import (
    Headers,
    HttpResponse,
    load_private_key,
    load_public_key,
    signed_headers_for,
    verify_response,
)
from signer.admission import SourceLimiter, source_of

HEADER_TIMEOUT_S = 3.0
BODY_TIMEOUT_S = 3.0
PER_SOURCE = 25
SLOW_SOURCES = 5  # per kind: 5 sources x 20 connections x 2 kinds = 200 connections
PER_SLOW_SOURCE = 20
LIMITS = f"""header_timeout_s = {HEADER_TIMEOUT_S}
body_timeout_s = {BODY_TIMEOUT_S}
max_connections_per_source = {PER_SOURCE}
"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running devnet whose drill's signer.toml has short deadlines and a cap of 25."""
    directory = tmp_path_factory.mktemp("slow") / "drill"
    with running_devnet(directory):
        path = directory / "signer.toml"
        text = path.read_text()
        assert "\nthreads = 4\n" in text
        path.write_text(text.replace("\nthreads = 4\n", "\nthreads = 4\n" + LIMITS, 1))
        yield directory


@pytest.fixture(scope="module")
def signer(drill: Path) -> Iterator[Service]:
    """`witness-signer serve` on the drill, plain HTTP."""
    with running_signer(drill) as service:
        yield service


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key (mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "keys" / "tls.crt", directory / "keys" / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_signer(drill: Path) -> Iterator[tuple[Service, Path]]:
    """A second `witness-signer serve` on the drill's devnet over HTTPS (own port and state)."""
    cert, key = _self_signed(drill)
    config = tomllib.loads((drill / "signer.toml").read_text())["signer"]
    port = free_port_base(span=1)
    text = (drill / "signer.toml").read_text()
    text = text.replace(f"\nport = {config['port']}\n", f"\nport = {port}\n", 1)
    text = text.replace(f'state_dir = "{config["state_dir"]}"',
                        f'state_dir = "{config["state_dir"]}-tls"', 1)
    text = text.replace("\nthreads = 4\n",
                        f'\nthreads = 4\ntls_cert = "{cert}"\ntls_key = "{key}"\n', 1)
    path = drill / "signer-tls.toml"
    path.write_text(text)
    log = drill / "signer-tls.log"
    service = Service(start_process([console_script("witness-signer"), "serve", "--config",
                                     str(path)], log), log, f"https://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while "listening on https://" not in log.read_text():
            if service.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"TLS signer did not start: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield service, cert
    finally:
        service.stop()


def _connect(url: str, source: str) -> socket.socket:
    """A TCP connection to the signer of ``url`` from the local address ``source``."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=5,
                                    source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)  # blocking: MSG_DONTWAIT probes then return at once
    return sock


def _slow_header(url: str, source: str) -> socket.socket:
    """A request line and part of a header; the rest is dribbled a byte at a time."""
    sock = _connect(url, source)
    sock.sendall(b"POST /v1/failover HTTP/1.1\r\nHost: signer\r\nX-Slow: ")
    return sock


def _slow_body(url: str, source: str) -> socket.socket:
    """Complete headers announcing 1000 bytes, then a few body bytes and nothing more."""
    sock = _connect(url, source)
    sock.sendall(b"POST /v1/failover HTTP/1.1\r\nHost: signer\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 1000\r\n\r\n{\"wit")
    return sock


def _is_open(sock: socket.socket) -> bool:
    """True while the server has neither closed nor reset the connection."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the server to close ``sock`` (an answer may come first)."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


class Dribbler:
    """Sends one byte every ``interval_s`` on each socket until stopped (slowloris)."""

    def __init__(self, socks: list[socket.socket], payload: bytes, interval_s: float) -> None:
        self._socks, self._payload, self._interval_s = socks, payload, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            for sock in self._socks:
                try:
                    sock.send(self._payload, socket.MSG_DONTWAIT)
                except OSError:
                    continue  # closed by the server: that is the point

    def stop(self) -> None:
        """Stop dribbling."""
        self._stop.set()
        self._thread.join(timeout=5)


def _signed_failover(url: str, directory: Path, verify: Path | bool = True
                     ) -> tuple[float, requests.Response]:
    """POST a signed /v1/failover as the watcher; verify the signed answer; return its time."""
    raw = json.dumps({"witness": "alice", "failing_key": "STM" + "1" * 50,
                      "observed_total_missed": 0, "reason": "slow-client test"}).encode()
    target = f"{url}/v1/failover"
    headers = signed_headers_for("POST", target, raw, "application/json",
                                 load_private_key(directory / "keys" / "watcher.key"),
                                 "watcher", datetime.now(UTC))
    started = time.perf_counter()
    response = requests.post(target, data=raw, headers=headers, timeout=10,
                             verify=str(verify) if isinstance(verify, Path) else verify)
    elapsed = time.perf_counter() - started
    verify_response(HttpResponse(response.status_code, Headers(response.headers.items()),
                                 response.content), headers,
                    load_public_key(directory / "keys" / "signer.pub"), datetime.now(UTC))
    return elapsed, response


def test_signed_request_answers_within_a_second_while_200_slow_connections_are_held(
        signer: Service) -> None:
    """200 slowloris connections (slow headers, slow bodies) are held; the watcher's signed
    request and /healthz still answer in under 1 s, and the server then closes every slow
    connection at its deadline."""
    directory = signer.log.parent
    idle = [_signed_failover(signer.url, directory)[0] for _ in range(5)]
    slow_headers = [_slow_header(signer.url, f"127.0.0.{10 + i % SLOW_SOURCES}")
                    for i in range(SLOW_SOURCES * PER_SLOW_SOURCE)]
    slow_bodies = [_slow_body(signer.url, f"127.0.0.{20 + i % SLOW_SOURCES}")
                   for i in range(SLOW_SOURCES * PER_SLOW_SOURCE)]
    held = slow_headers + slow_bodies
    dribbler = Dribbler(slow_headers, b"a", 0.25)
    opened = time.monotonic()
    try:
        time.sleep(0.5)
        assert sum(map(_is_open, held)) == 200  # all under the per-source cap: all held
        times = []
        for _ in range(5):
            elapsed, response = _signed_failover(signer.url, directory)
            assert response.status_code in (403, 409), response.text  # authenticated, refused
            times.append(elapsed)
        started = time.perf_counter()
        assert requests.get(f"{signer.url}/healthz", timeout=5).status_code == 200
        health_s = time.perf_counter() - started
        assert max(times) < 1.0, times
        assert health_s < 1.0
        assert time.monotonic() - opened < HEADER_TIMEOUT_S  # measured while all were held
        print(f"\nslow clients: 200 held; signed failover answered in median "
              f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
              f"(none held: median {statistics.median(idle) * 1000:.0f} ms, max "
              f"{max(idle) * 1000:.0f} ms); /healthz {health_s * 1000:.0f} ms")
        # The dribbling goes on, yet each connection is closed at its deadline.
        limit = HEADER_TIMEOUT_S + BODY_TIMEOUT_S + 2.0
        deadline = opened + limit
        assert all(_closed_by_server(s, max(deadline - time.monotonic(), 0.1)) for s in held)
        print(f"slow clients: all 200 closed by the server after "
              f"{time.monotonic() - opened:.1f} s (deadlines {HEADER_TIMEOUT_S} s + "
              f"{BODY_TIMEOUT_S} s)")
    finally:
        dribbler.stop()
        for sock in held:
            sock.close()


def test_one_source_over_its_cap_is_refused_while_others_are_served(signer: Service) -> None:
    """Connection 26 from one address is closed at once; 127.0.0.1 is still served."""
    socks = [_slow_header(signer.url, "127.0.0.40") for _ in range(PER_SOURCE + 5)]
    try:
        refused = [s for s in socks[PER_SOURCE:] if _closed_by_server(s, 1.0)]
        assert len(refused) == 5
        assert all(_is_open(s) for s in socks[:PER_SOURCE])
        other = _slow_header(signer.url, "127.0.0.41")
        time.sleep(0.2)
        assert _is_open(other)  # another source is not affected by the first one's cap
        other.close()
        started = time.perf_counter()
        assert requests.get(f"{signer.url}/healthz", timeout=5).status_code == 200
        assert time.perf_counter() - started < 1.0
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize(("address", "source"), [
    pytest.param("127.0.0.2", "127.0.0.2", id="ipv4"),
    pytest.param("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64", id="ipv6-64"),
    pytest.param("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64", id="ipv6-same-64"),
    pytest.param("::ffff:10.0.0.7", "10.0.0.7", id="ipv4-mapped"),
])
def test_sources_are_counted_per_address_and_per_ipv6_64(address: str, source: str) -> None:
    """The cap counts an IPv4 address alone and an IPv6 address by its /64."""
    assert source_of(address) == source
    limiter = SourceLimiter(2)
    assert [limiter.admit(source_of(address)) for _ in range(3)] == [True, True, False]
    limiter.release(source_of(address))
    assert limiter.admit(source) is True
    assert limiter.open_from(source) == 2


def test_tls_front_answers_signed_requests_and_drops_stalled_handshakes(
        tls_signer: tuple[Service, Path]) -> None:
    """Over HTTPS a signed request is answered and verified (scheme in the signature base),
    while 50 connections that never start a TLS handshake are held and then closed at the
    header deadline."""
    service, cert = tls_signer
    stalled = [_connect(service.url, f"127.0.0.{60 + i % 5}") for i in range(50)]
    opened = time.monotonic()
    try:
        elapsed, response = _signed_failover(service.url, service.log.parent, verify=cert)
        assert response.status_code in (403, 409), response.text
        assert elapsed < 1.0
        assert requests.get(f"{service.url}/healthz", timeout=5,
                            verify=str(cert)).status_code == 200
        assert all(_closed_by_server(s, HEADER_TIMEOUT_S + 2.0) for s in stalled)
        assert time.monotonic() - opened < HEADER_TIMEOUT_S + 2.0
    finally:
        for sock in stalled:
            sock.close()
