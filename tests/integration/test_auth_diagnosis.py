"""Diagnosis end to end: the real signer app refuses, the real watcher client says why.

Each case drives the watcher's :class:`SignerClient` against the signer's Flask app
(built from a drill's signer.toml over a devnet process) or, for a wrong URL, an
HTTP server that is not a signer. The watcher's message names the cause; the
signer's log names the rejected keyid; nothing reaches the chain.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from werkzeug.serving import WSGIRequestHandler, make_server

from drill.services import RunningDevnet, running_devnet
from shared.clock import Clock, SystemClock
from shared.errors import ConfigError
from shared.httpsig import Ed25519Signer, load_private_key, load_public_key
from signer.app import build_service
from signer.config import SignerConfig
from signer.http import create_app
from signer.service import ServiceOptions
from watcher.app import build_signer_client
from watcher.config import WatcherConfig
from watcher.signer_client import SignerClient, SignerUnreachableError, UntrustedAnswerError

pytestmark = pytest.mark.slow


class ShiftedClock:
    """The wall clock moved by a fixed offset: a signer whose clock is wrong, without sleeping."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        """Wall-clock UTC plus the offset."""
        return datetime.now(UTC) + self.offset


class AppDateHandler(WSGIRequestHandler):
    """werkzeug's handler minus the stdlib's own Date: the app's is the only one, as in gevent."""

    def send_response(self, code: int, message: str | None = None) -> None:
        """Status line only; the app's headers (its Date included) follow."""
        self.log_request(code)
        self.send_response_only(code, message)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevnet]:
    """One devnet process for the module (the signer checks its chain id at start)."""
    with running_devnet(tmp_path_factory.mktemp("devnet"), slot_seconds=0.1) as running:
        yield running


@contextmanager
def serve_signer(devnet: RunningDevnet, state_dir: Path, clock: Clock | None = None, *,
                 tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """The drill's signer (optionally on a shifted clock, or TLS) on 127.0.0.1; its URL."""
    config = replace(SignerConfig.load(devnet.dir / "signer.toml"), state_dir=state_dir,
                     rpc_nodes=(devnet.url,))
    service = build_service(config, clock=clock, options=ServiceOptions(tick_s=0.1))
    service.start()
    server = make_server("127.0.0.1", 0, create_app(service, config.max_body_bytes),
                         threaded=True, request_handler=AppDateHandler, ssl_context=tls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        service.close()


def client(devnet: RunningDevnet, url: str, *, keyid: str = "watcher",
           key: Ed25519Signer | None = None) -> SignerClient:
    """The watcher's real client, one attempt, no proxy from the environment."""
    session = requests.Session()
    session.trust_env = False
    return SignerClient(url, key or load_private_key(devnet.dir / "keys" / "watcher.key"), keyid,
                        load_public_key(devnet.dir / "keys" / "signer.pub"),
                        clock=ShiftedClock(timedelta(0)), sleep=lambda _s: None, attempts=1,
                        session=session)


def refusal(c: SignerClient) -> str:
    """The message of the UntrustedAnswerError a status request ends in."""
    with pytest.raises(UntrustedAnswerError) as refused:
        c.status()
    c.close()
    return str(refused.value)


def signer_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the signer's authentication module logged."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "signer.auth")


def test_unknown_keyid_is_named_by_both_sides(devnet: RunningDevnet, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """An unconfigured keyid: the watcher says to check [[clients]], the signer logs the keyid."""
    caplog.set_level(logging.WARNING, logger="signer.auth")
    stranger = Ed25519Signer.generate()
    with serve_signer(devnet, tmp_path) as url:
        text = refusal(client(devnet, url, keyid="watcher-2", key=stranger))
    assert "the signer does not know keyid 'watcher-2'" in text
    assert f"it is not this watcher's ({stranger.public_key.to_base64()})" in text
    assert "check [[clients]] in signer.toml" in text
    assert "signer hint 'key_or_signature', unauthenticated" in text
    assert "keyid 'watcher-2' (UNKNOWN): no such client" in signer_log(caplog)


def test_bad_signature_is_told_apart_in_the_signer_log(devnet: RunningDevnet, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A configured keyid with the wrong key pair: same public hint, the signer's log says which."""
    caplog.set_level(logging.WARNING, logger="signer.auth")
    with serve_signer(devnet, tmp_path) as url:
        text = refusal(client(devnet, url, key=Ed25519Signer.generate()))
    assert "the signer does not know keyid 'watcher', or the public key it holds" in text
    assert "keyid 'watcher' (configured): signature does not verify" in signer_log(caplog)


@pytest.mark.parametrize("offset_s", [95, -95], ids=["signer_ahead", "signer_behind"])
def test_clock_skew_is_measured(devnet: RunningDevnet, tmp_path: Path, offset_s: int) -> None:
    """A signer whose (injected) clock is off: the watcher reports the skew in seconds."""
    with serve_signer(devnet, tmp_path, clock=ShiftedClock(timedelta(seconds=offset_s))) as url:
        text = refusal(client(devnet, url))
    found = re.search(r"clock skew: the signer's clock differs from this host's by ([+-]\d+) s, "
                      r"more than the allowed 30 s", text)
    assert found is not None, text
    assert abs(int(found.group(1)) - offset_s) <= 2
    assert "signer hint 'stale'" in text


class NotASigner(BaseHTTPRequestHandler):
    """Some other web server: an HTML 404 for everything."""

    def _answer(self) -> None:
        body = b"<html><body><h1>404 Not Found</h1></body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815  (http.server's naming)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the base's name)
        """Keep the test output quiet."""


def test_wrong_url_is_not_a_signer(devnet: RunningDevnet) -> None:
    """A URL that reaches some other web server is reported as a wrong URL, naming the setting."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotASigner)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        text = refusal(client(devnet, url))
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    assert text.startswith(f"wrong URL: the answer to GET {url}/v1/status is not from a "
                           "witness-signer (HTTP 404, text/html, unsigned")
    assert "check [signer] url in watcher.toml" in text


def test_devnet_url_is_not_a_signer(devnet: RunningDevnet) -> None:
    """The devnet's JSON-RPC port mistaken for the signer's is a wrong URL too, not a 401."""
    text = refusal(client(devnet, devnet.url.rstrip("/")))
    assert "not from a witness-signer" in text or "not a witness-signer's signed answer" in text
    assert "[signer] url" in text


def self_signed(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway self-signed certificate for 127.0.0.1, and a server context using it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "signer.crt", directory / "signer.tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, context


def watcher_config(devnet: RunningDevnet, url: str, ca_file: Path | None) -> WatcherConfig:
    """The drill's watcher.toml pointed at ``url``, with ``[signer] ca_file`` when given."""
    text = (devnet.dir / "watcher.toml").read_text()
    text = re.sub(r'(?m)^url = ".*"$', f'url = "{url}"', text, count=1)
    if ca_file is not None:
        text = text.replace("[signer]\n", f'[signer]\nca_file = "{ca_file}"\n', 1)
    path = devnet.dir / "watcher-tls.toml"
    path.write_text(text)
    return WatcherConfig.load(path)


def test_ca_file_lets_the_watcher_trust_a_self_signed_signer(devnet: RunningDevnet,
                                                            tmp_path: Path) -> None:
    """With [signer] ca_file the watcher trusts a self-signed signer; without, TLS fails."""
    cert, context = self_signed(tmp_path)
    with serve_signer(devnet, tmp_path / "state", tls=context) as url:
        trusting = build_signer_client(watcher_config(devnet, url, cert), SystemClock(),
                                       lambda _s: None)
        assert trusting.status()["witness"] == "alice"
        trusting.close()
        default = build_signer_client(watcher_config(devnet, url, None), SystemClock(),
                                      lambda _s: None)
        default.attempts = 1
        with pytest.raises(SignerUnreachableError, match="SSLError"):
            default.status()
        default.close()


def test_ca_file_is_checked_at_start_up(devnet: RunningDevnet, tmp_path: Path) -> None:
    """A ca_file that is missing, not PEM, or set for an http URL is a config error naming it."""
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    for url, ca_file, words in (("https://127.0.0.1:1", tmp_path / "missing.pem", "no such file"),
                                ("https://127.0.0.1:1", not_pem, "not a readable PEM"),
                                ("http://127.0.0.1:1", not_pem, "is not https")):
        with pytest.raises(ConfigError, match=words) as refused:
            watcher_config(devnet, url, ca_file)
        assert "signer.ca_file" in str(refused.value)
