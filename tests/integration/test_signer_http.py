"""The signer's HTTP API in-process over a real devnet: rejections change nothing, switches once."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests_http_signature import HTTPSignatureAuth, algorithms
from support.twilio_fixture import FAKE_ACCOUNT_SID, FAKE_AUTH_TOKEN
from werkzeug.serving import make_server

from devnet.keys import PrivateKey
from drill.fake_twilio import FakeTwilio
from drill.services import RunningDevnet, running_devnet
from shared.chaindata import DynamicProps
from shared.errors import ConfigError, KeystoreError
from shared.httpsig import (
    Ed25519PublicKey,
    Ed25519Signer,
    Headers,
    HttpMessage,
    HttpResponse,
    load_private_key,
    load_public_key,
    sign_request,
    signed_headers_for,
    verify_response,
)
from signer.app import build_service
from signer.chain import RpcSignerChain
from signer.config import SignerConfig, TwilioConfig
from signer.http import create_app
from signer.keystore import PassphraseSource
from signer.ports import BuiltTransaction, WitnessReading
from signer.service import ServiceOptions, SignerService

JSON = "application/json"
FOREIGN_KEY = PrivateKey.generate().public_key()  # a valid key outside the signer's list
WAIT_S = 30.0


class ShiftedClock:
    """The wall clock moved by a fixed offset: the signer's "now" without sleeping."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        """Wall-clock UTC plus the offset."""
        return datetime.now(UTC) + self.offset


@dataclass
class RecordingNotifier:
    """Keeps every notification (a human's pager, not a chain: the chain is the devnet)."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    def send(self, event: str, text: str) -> None:
        """Record the notification."""
        self.sent.append((event, text))


@dataclass
class Signer:
    """A SignerService behind the real Flask app on 127.0.0.1:<ephemeral>."""

    service: SignerService
    app: Flask
    url: str
    drill: Path
    state_dir: Path
    notifier: RecordingNotifier
    session: requests.Session

    def key(self, who: str) -> Ed25519Signer:
        """The drill's private key of ``who`` (watcher, operator)."""
        return load_private_key(self.drill / "keys" / f"{who}.key")

    @property
    def signer_public_key(self) -> Ed25519PublicKey:
        """The key the signer's answers are signed with."""
        return load_public_key(self.drill / "keys" / "signer.pub")

    def count(self, table: str) -> int:
        """Rows in one table of the signer's SQLite state."""
        with sqlite3.connect(self.state_dir / "signer.sqlite3") as db:
            # The table name is one of this file's constants, never input.
            return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608


def signer_config(devnet: RunningDevnet, state_dir: Path, **policy: Any) -> SignerConfig:
    """The drill's signer.toml with its own state directory, one RPC node, policy changes.

    One node: two endpoints read across a block boundary may disagree for a moment,
    which the chain adapter reports as ChainDataError (a 503 the watcher retries).
    """
    config = SignerConfig.load(devnet.dir / "signer.toml")
    return replace(config, state_dir=state_dir, rpc_nodes=(devnet.url,),
                   policy=replace(config.policy, **policy))


@contextmanager
def running_signer(devnet: RunningDevnet, state_dir: Path, *, clock: Any = None,
                   options: ServiceOptions | None = None, **policy: Any) -> Iterator[Signer]:
    """Build the signer from the drill's signer.toml (policy overridden), serve it, stop it."""
    config = signer_config(devnet, state_dir, **policy)
    notifier = RecordingNotifier()
    service = build_service(config, clock=clock, notifier=notifier,
                            options=options or ServiceOptions(tick_s=0.1))
    service.start()
    app = create_app(service, config.max_body_bytes)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    session = requests.Session()
    session.trust_env = False  # loopback only, never through a proxy from the environment
    try:
        yield Signer(service, app, f"http://127.0.0.1:{server.server_port}", devnet.dir,
                     state_dir, notifier, session)
    finally:
        server.shutdown()
        thread.join(10)
        session.close()
        service.close()


def node_key(devnet: RunningDevnet, name: str) -> str:
    """The public signing key of devnet node ``name``."""
    return str(next(n["public_key"] for n in devnet.status()["nodes"] if n["name"] == name))


def witness_json(devnet: RunningDevnet) -> dict[str, Any]:
    """condenser_api.get_witness_by_account for alice."""
    return dict(devnet.client.call("condenser_api.get_witness_by_account", ["alice"]))


def ask(devnet: RunningDevnet, **changes: Any) -> dict[str, Any]:
    """A well-formed failover body for the current on-chain key."""
    witness = devnet.status()["witness"]
    body = {"witness": "alice", "failing_key": witness["signing_key"],
            "observed_total_missed": witness["total_missed"], "reason": "integration test"}
    body.update(changes)
    return body


def signed(signer: Signer, method: str, path: str, body: bytes = b"", *, who: str = "watcher",
           content_type: str | None = JSON, now: datetime | None = None) -> dict[str, str]:
    """The headers our own client profile sends for this request."""
    return signed_headers_for(method, signer.url + path, body, content_type if body else None,
                              signer.key(who), who, now or datetime.now(UTC))


def send(signer: Signer, method: str, path: str, body: bytes, headers: dict[str, str]
         ) -> requests.Response:
    """Send exactly these bytes and headers."""
    return signer.session.request(method, signer.url + path, data=body, headers=headers,
                                  timeout=WAIT_S)


def call(signer: Signer, method: str, path: str, doc: Any = None, *, who: str = "watcher"
         ) -> requests.Response:
    """A genuine signed request; its answer must carry a valid signature bound to it."""
    body = b"" if doc is None else json.dumps(doc).encode()
    headers = signed(signer, method, path, body, who=who)
    response = send(signer, method, path, body, headers)
    verify_response(HttpResponse(response.status_code, response.headers, response.content),
                    headers, signer.signer_public_key, datetime.now(UTC))
    return response


def wait_for_misses(devnet: RunningDevnet, baseline: int, count: int) -> None:
    """Wait until alice's total_missed is ``count`` above ``baseline``."""
    devnet.wait_for(lambda s: s["witness"]["total_missed"] >= baseline + count, WAIT_S,
                    f"{count} misses over {baseline}")


def armed_baseline(signer: Signer) -> int:
    """The baseline the signer armed on at start-up."""
    armed = signer.service.store.get_armed()
    assert armed is not None
    return armed.baseline_missed


def wait_state(signer: Signer, request_id: str, state: str, who: str = "watcher"
               ) -> dict[str, Any]:
    """Poll GET /v1/requests/<id> until the request reaches ``state``."""
    deadline = time.monotonic() + WAIT_S
    while True:
        doc = call(signer, "GET", f"/v1/requests/{request_id}", who=who).json()
        if doc["state"] == state:
            return dict(doc)
        assert time.monotonic() < deadline, f"request stuck in {doc}"
        time.sleep(0.1)


def assert_nothing_happened(devnet: RunningDevnet, signer: Signer, key: str) -> None:
    """The chain still shows ``key``, nothing is waiting to be included, nothing was sent."""
    status = devnet.status()
    assert status["witness"]["signing_key"] == key
    assert status["pending_transactions"] == 0
    assert signer.count("broadcasts") == 0
    assert signer.count("switches") == 0


# ---- rejections: a devnet whose primary is down, so evidence accrues but nothing switches ----


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevnet]:
    """A devnet whose primary node is stopped (alice misses every slot of hers)."""
    with running_devnet(tmp_path_factory.mktemp("devnet"), slot_seconds=0.1) as devnet:
        devnet.client.call("devnet.stop_node", {"name": "primary"})
        yield devnet


@pytest.fixture(scope="module")
def guard(failing: RunningDevnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signer]:
    """A signer in manual mode on the failing devnet, for requests that must change nothing."""
    options = ServiceOptions(tick_s=0.1, failover_requests_per_min=100_000)
    with running_signer(failing, tmp_path_factory.mktemp("guard"), options=options,
                        approval="manual", min_missed=2) as signer:
        yield signer


@pytest.fixture
def primary(failing: RunningDevnet) -> str:
    """The failing devnet's on-chain key, which every rejection must leave in place."""
    return node_key(failing, "primary")


def forged_signature(signer: Signer, body: bytes) -> tuple[bytes, dict[str, str]]:
    """The watcher's genuine headers with one bit of the signature flipped."""
    headers = signed(signer, "POST", "/v1/failover", body)
    label, value = headers["Signature"].split("=", 1)
    raw = bytearray(base64.b64decode(value.strip(":")))
    raw[0] ^= 1
    headers["Signature"] = f"{label}=:{base64.b64encode(bytes(raw)).decode()}:"
    return body, headers


def unknown_keyid(signer: Signer, body: bytes) -> tuple[bytes, dict[str, str]]:
    """A well-formed request signed by a key the signer does not know."""
    return body, signed_headers_for("POST", signer.url + "/v1/failover", body, JSON,
                                    Ed25519Signer.generate(), "mallory", datetime.now(UTC))


def body_altered(signer: Signer, body: bytes) -> tuple[bytes, dict[str, str]]:
    """Headers signed for one body, sent with another of the same length."""
    headers = signed(signer, "POST", "/v1/failover", body)
    return body.replace(b"integration", b"INTEGRATION"), headers


def digest_missing(signer: Signer, body: bytes) -> tuple[bytes, dict[str, str]]:
    """A genuine signature whose covered Content-Digest field was dropped."""
    headers = signed(signer, "POST", "/v1/failover", body)
    del headers["Content-Digest"]
    return body, headers


def digest_not_covered(signer: Signer, body: bytes) -> tuple[bytes, dict[str, str]]:
    """Signed by the watcher, but content-digest is not among the covered components."""
    msg = HttpMessage("POST", signer.url + "/v1/failover", Headers({"Content-Type": JSON}), body)
    headers = sign_request(msg, signer.key("watcher"), "watcher", datetime.now(UTC),
                           components=("@method", "@target-uri", "@path", "content-type"))
    return body, {"Content-Type": JSON, **headers}


# An unknown keyid and a forged signature share one reason: no keyid oracle (threat model).
REASON_OF = {"forged_signature": "key_or_signature", "unknown_keyid": "key_or_signature",
             "body_altered": "bad_digest", "digest_missing": "bad_digest",
             "digest_not_covered": "malformed"}


@pytest.mark.parametrize("tamper", [forged_signature, unknown_keyid, body_altered,
                                    digest_missing, digest_not_covered],
                         ids=lambda f: f.__name__)
def test_unauthenticated_request_changes_nothing(
        failing: RunningDevnet, guard: Signer, primary: str,
        tamper: Callable[[Signer, bytes], tuple[bytes, dict[str, str]]]) -> None:
    """A request failing authentication gets an unsigned 401 with only a coarse reason."""
    body, headers = tamper(guard, json.dumps(ask(failing)).encode())
    response = send(guard, "POST", "/v1/failover", body, headers)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "reason": REASON_OF[tamper.__name__]}
    assert "Signature" not in response.headers
    assert_nothing_happened(failing, guard, primary)


def test_repeated_auth_failures_alert(failing: RunningDevnet, tmp_path: Path) -> None:
    """More failed authentications a minute than the threshold page a human, once."""
    options = ServiceOptions(tick_s=0.1, auth_failures_alert_per_min=3)
    with running_signer(failing, tmp_path, options=options, min_missed=2) as signer:
        for _ in range(8):
            body, headers = unknown_keyid(signer, b"{}")
            assert send(signer, "POST", "/v1/failover", body, headers).status_code == 401
        alerts = [text for event, text in signer.notifier.sent if event == "auth_failures"]
        assert len(alerts) == 1


def test_alerts_reach_twilio(failing: RunningDevnet, tmp_path: Path,
                             fake_twilio: FakeTwilio) -> None:
    """With [notify] configured, the signer's alerts go out as SMS through Twilio's client."""
    token = tmp_path / "twilio.token"
    token.write_text(FAKE_AUTH_TOKEN + "\n")
    token.chmod(0o600)
    sms = TwilioConfig(FAKE_ACCOUNT_SID, token, "TWILIO_AUTH_TOKEN", "+15550000000",
                       ("+15551111111",), fake_twilio.base_url)
    config = replace(signer_config(failing, tmp_path / "state"), twilio=sms)
    service = build_service(config, options=ServiceOptions(auth_failures_alert_per_min=1))
    try:
        client = create_app(service, config.max_body_bytes).test_client()
        for _ in range(3):
            assert client.post("/v1/failover", data=b"{}").status_code == 401
        assert fake_twilio.wait_for_messages(1, timeout=10)
        assert "failed authentications" in fake_twilio.messages[0].body
    finally:
        service.close()


def test_replayed_nonce_refused_also_after_restart(failing: RunningDevnet, tmp_path: Path,
                                                   primary: str) -> None:
    """A replayed request is refused, by the same signer and by a restarted one on its state."""
    with running_signer(failing, tmp_path, min_missed=2) as first:
        # Covering @path (not the URI with its port) lets the very same bytes reach both.
        msg = HttpMessage("GET", first.url + "/v1/status", Headers({}), b"")
        headers = sign_request(msg, first.key("watcher"), "watcher", datetime.now(UTC),
                               components=("@method", "@path", "content-digest"))
        assert send(first, "GET", "/v1/status", b"", headers).status_code == 200
        assert send(first, "GET", "/v1/status", b"", headers).status_code == 401
    with running_signer(failing, tmp_path, min_missed=2) as second:
        assert send(second, "GET", "/v1/status", b"", headers).status_code == 401
        assert_nothing_happened(failing, second, primary)


@pytest.mark.parametrize("offset_s", [31, -31], ids=["31s_old", "31s_in_future"])
def test_request_outside_clock_skew_refused(failing: RunningDevnet, tmp_path: Path,
                                            primary: str, offset_s: int) -> None:
    """A request created 31 s before or after the signer's (injected) clock is refused."""
    clock = ShiftedClock(timedelta(seconds=offset_s))
    with running_signer(failing, tmp_path, clock=clock, min_missed=2) as signer:
        body = json.dumps(ask(failing)).encode()
        response = send(signer, "POST", "/v1/failover", body, signed(signer, "POST",
                                                                       "/v1/failover", body))
        assert response.status_code == 401
        assert_nothing_happened(failing, signer, primary)


def test_build_refuses_wrong_passphrase(failing: RunningDevnet, tmp_path: Path) -> None:
    """The signer does not start with a wrong keystore passphrase."""
    wrong = [PassphraseSource.env("WITNESS_TEST_PASSPHRASE", "not-the-passphrase")]
    with pytest.raises(KeystoreError):
        build_service(signer_config(failing, tmp_path), passphrase_sources=wrong)


def test_build_refuses_keystore_readable_by_others(failing: RunningDevnet,
                                                   tmp_path: Path) -> None:
    """The signer does not start from a keystore that group or others can read."""
    copy = tmp_path / "chain.keystore"
    copy.write_bytes((failing.dir / "keys" / "chain.keystore").read_bytes())
    copy.chmod(0o644)
    with pytest.raises(KeystoreError):
        build_service(replace(signer_config(failing, tmp_path / "state"), keystore_path=copy))


def test_build_refuses_keystore_without_key_for_mode(failing: RunningDevnet,
                                                     tmp_path: Path) -> None:
    """In signing mode, a keystore holding only the active key is refused at start-up."""
    config = signer_config(failing, tmp_path / "state", key_mode="signing")
    with pytest.raises(KeystoreError, match="signing"):
        build_service(config)


def test_second_signer_on_one_state_refused(failing: RunningDevnet, tmp_path: Path) -> None:
    """Two signers on one state directory would both execute requests: the second is refused."""
    with running_signer(failing, tmp_path, min_missed=2), pytest.raises(ConfigError):
        build_service(signer_config(failing, tmp_path))


def test_oversized_body_refused_before_authentication(failing: RunningDevnet, guard: Signer,
                                                      primary: str) -> None:
    """A body over max_body_bytes is refused with 413, signed or not."""
    body = json.dumps(ask(failing, reason="x" * 10_000)).encode()
    response = send(guard, "POST", "/v1/failover", body,
                    signed(guard, "POST", "/v1/failover", body))
    assert response.status_code == 413
    assert response.json() == {"error": "invalid request"}
    assert_nothing_happened(failing, guard, primary)


def test_non_json_content_type_refused(failing: RunningDevnet, guard: Signer,
                                       primary: str) -> None:
    """An authenticated body that is not declared application/json gets 415."""
    body = json.dumps(ask(failing)).encode()
    headers = signed(guard, "POST", "/v1/failover", body, content_type="text/plain")
    response = send(guard, "POST", "/v1/failover", body, headers)
    assert response.status_code == 415
    verify_response(HttpResponse(415, response.headers, response.content), headers,
                    guard.signer_public_key, datetime.now(UTC))
    assert_nothing_happened(failing, guard, primary)


@pytest.mark.parametrize("changes", [
    pytest.param({"signing_key_wif": "x"}, id="unknown_field"),
    pytest.param({"observed_total_missed": "12"}, id="missed_as_string"),
    pytest.param({"observed_total_missed": -1}, id="negative_missed"),
    pytest.param({"observed_total_missed": True}, id="missed_as_bool"),
    pytest.param({"witness": "Alice!"}, id="bad_account_name"),
    pytest.param({"failing_key": "EOS6PrimaryKey"}, id="not_an_stm_key"),
    pytest.param({"reason": "r" * 201}, id="reason_too_long"),
    pytest.param({"dry_run": "no"}, id="dry_run_not_bool"),
    pytest.param({"request_id": "short"}, id="request_id_too_short"),
])
def test_schema_violation_refused(failing: RunningDevnet, guard: Signer, primary: str,
                                  changes: dict[str, Any]) -> None:
    """A verified body that breaks the schema gets 422 and is never acted on."""
    response = call(guard, "POST", "/v1/failover", ask(failing, **changes))
    assert response.status_code == 422
    assert_nothing_happened(failing, guard, primary)


@pytest.mark.parametrize("verb", ["approve", "deny"])
def test_watcher_key_cannot_give_verdicts(failing: RunningDevnet, guard: Signer, primary: str,
                                          verb: str) -> None:
    """A watcher key on approve/deny gets a signed 403, whatever the request id."""
    response = call(guard, "POST", f"/v1/requests/{'0' * 32}/{verb}", {})
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden"}
    assert_nothing_happened(failing, guard, primary)


def test_no_new_misses_refused(failing: RunningDevnet, tmp_path: Path, primary: str) -> None:
    """Just armed, the chain shows no new misses: 409, even in auto mode."""
    with running_signer(failing, tmp_path, min_missed=2) as signer:
        response = call(signer, "POST", "/v1/failover", ask(failing))
        assert response.status_code == 409
        assert response.json()["state"] == "refused"
        assert "[no_evidence]" in response.json()["detail"]
        assert_nothing_happened(failing, signer, primary)


def foreign_target(devnet: RunningDevnet) -> dict[str, Any]:
    """Ask for a target that is not one of the signer's node keys."""
    return ask(devnet, target_key=FOREIGN_KEY)


def wrong_failing_key(devnet: RunningDevnet) -> dict[str, Any]:
    """Claim backup1 is failing while the chain shows the primary."""
    return ask(devnet, failing_key=node_key(devnet, "backup1"))


@pytest.mark.parametrize(("make_ask", "rule"), [
    pytest.param(foreign_target, "[bad_target]", id="target_outside_list"),
    pytest.param(wrong_failing_key, "[stale_ask]", id="failing_key_not_on_chain"),
])
def test_policy_refusal_with_evidence(failing: RunningDevnet, tmp_path: Path, primary: str,
                                      make_ask: Callable[[RunningDevnet], dict[str, Any]],
                                      rule: str) -> None:
    """With misses on chain, a foreign target or a wrong failing key is still refused (409)."""
    with running_signer(failing, tmp_path, min_missed=2) as signer:
        wait_for_misses(failing, armed_baseline(signer), 2)
        response = call(signer, "POST", "/v1/failover", make_ask(failing))
        assert response.status_code == 409
        assert response.json()["detail"].startswith(rule)
        assert_nothing_happened(failing, signer, primary)


def test_client_rate_limit(failing: RunningDevnet, tmp_path: Path, primary: str) -> None:
    """More failover requests a minute than allowed get 429."""
    options = ServiceOptions(tick_s=0.1, failover_requests_per_min=2)
    with running_signer(failing, tmp_path, options=options, min_missed=2) as signer:
        codes = [call(signer, "POST", "/v1/failover", ask(failing, dry_run=True)).status_code
                 for _ in range(3)]
        assert codes[2] == 429
        assert_nothing_happened(failing, signer, primary)


def test_healthz_reveals_only_liveness(guard: Signer) -> None:
    """GET /healthz answers {"ok": true} and nothing else; unknown routes are JSON 404."""
    health = guard.session.get(guard.url + "/healthz", timeout=WAIT_S)
    assert (health.status_code, health.json()) == (200, {"ok": True})
    missing = guard.session.get(guard.url + "/admin", timeout=WAIT_S)
    assert (missing.status_code, missing.json()) == (404, {"error": "not found"})


def test_requests_http_signature_client_interoperates(failing: RunningDevnet,
                                                      guard: Signer) -> None:
    """A stock RFC 9421 client is accepted, and our signed answer verifies against it."""
    seed = base64.b64decode((guard.drill / "keys" / "watcher.key").read_text().strip())
    pem = Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    auth = HTTPSignatureAuth(signature_algorithm=algorithms.ED25519, key=pem, key_id="watcher",
                             use_nonce=True,
                             covered_component_ids=("@method", "@path", "content-digest"))
    body = json.dumps(ask(failing, dry_run=True)).encode()
    response = guard.session.post(guard.url + "/v1/failover", data=body, auth=auth,
                                  headers={"Content-Type": JSON}, timeout=WAIT_S)
    assert response.status_code in {200, 409}
    assert response.json()["state"] == "dry_run"
    verify_response(HttpResponse(response.status_code, response.headers, response.content),
                    response.request.headers, guard.signer_public_key, datetime.now(UTC))


_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.dictionaries(st.sampled_from(["Signature", "Signature-Input",
                                                "Content-Digest", "Content-Type", "Host"]),
                               _HEADER_TEXT),
       body=st.binary(max_size=2000))
def test_garbage_never_crashes(guard: Signer, headers: dict[str, str], body: bytes) -> None:
    """Random header values and bodies on /v1/failover give a 4xx, never a 500."""
    response = guard.app.test_client().post("/v1/failover", data=body, headers=headers)
    assert 400 <= response.status_code < 500
    assert response.is_json


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(st.binary(max_size=1000),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                                   lambda inner: st.lists(inner) | st.dictionaries(
                                       st.text(), inner), max_leaves=20).map(
                          lambda doc: json.dumps(doc).encode())))
def test_signed_garbage_bodies_never_crash(guard: Signer, body: bytes) -> None:
    """A genuinely signed but arbitrary body gives a 4xx, never a 500 (parse after verify)."""
    response = send(guard, "POST", "/v1/failover", body,
                    signed(guard, "POST", "/v1/failover", body))
    assert 400 <= response.status_code < 500
    assert guard.count("broadcasts") == 0


# ---- switches: a fresh devnet per test ---------------------------------------------------


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[RunningDevnet]:
    """A fresh devnet with every node up."""
    with running_devnet(tmp_path / "devnet", slot_seconds=0.1) as running:
        yield running


def crash_primary(devnet: RunningDevnet, signer: Signer, misses: int = 2) -> None:
    """Stop the primary and wait until the chain shows ``misses`` new misses."""
    devnet.client.call("devnet.stop_node", {"name": "primary"})
    wait_for_misses(devnet, armed_baseline(signer), misses)


def test_failover_switches_once_and_keeps_props(devnet: RunningDevnet, tmp_path: Path) -> None:
    """Evidence on chain: backup1 confirmed, props kept; a retried request_id never re-switches."""
    before = witness_json(devnet)
    backup1 = node_key(devnet, "backup1")
    with running_signer(devnet, tmp_path / "state", min_missed=2) as signer:
        crash_primary(devnet, signer)
        doc = ask(devnet, request_id="retry-me-0123456789")
        first = call(signer, "POST", "/v1/failover", doc)
        assert first.status_code == 200
        answer = first.json()
        assert answer["state"] in {"confirmed", "broadcast"}
        assert answer["target_key"] == backup1
        confirmed = wait_state(signer, answer["request_id"], "confirmed")
        after = witness_json(devnet)
        assert after["signing_key"] == backup1
        assert (after["url"], after["props"]) == (before["url"], before["props"])
        again = call(signer, "POST", "/v1/failover", doc)
        assert again.status_code == 200
        assert again.json()["request_id"] == answer["request_id"]
        assert again.json()["tx_id"] == confirmed["tx_id"]
        devnet.wait_blocks(3)
        assert (signer.count("switches"), signer.count("broadcasts")) == (1, 1)
        assert witness_json(devnet)["signing_key"] == backup1
        assert any(event == "switched" for event, _ in signer.notifier.sent)


def test_manual_approval_then_switch(devnet: RunningDevnet, tmp_path: Path) -> None:
    """In manual mode the request waits (202) until the operator approves, then switches."""
    with running_signer(devnet, tmp_path / "state", approval="manual", min_missed=2) as signer:
        crash_primary(devnet, signer)
        pending = call(signer, "POST", "/v1/failover", ask(devnet))
        assert pending.status_code == 202
        request_id = pending.json()["request_id"]
        assert pending.json()["state"] == "pending"
        assert "approve_by" in pending.json()
        assert any(event == "approval_needed" for event, _ in signer.notifier.sent)
        approved = call(signer, "POST", f"/v1/requests/{request_id}/approve", {}, who="operator")
        assert (approved.status_code, approved.json()["state"]) == (200, "approved")
        wait_state(signer, request_id, "confirmed")
        assert witness_json(devnet)["signing_key"] == node_key(devnet, "backup1")


def test_veto_window_passes_then_switch(devnet: RunningDevnet, tmp_path: Path) -> None:
    """In veto mode an undenied request is executed once its window has passed."""
    with running_signer(devnet, tmp_path / "state", approval="veto", min_missed=2,
                        veto_window=timedelta(seconds=1)) as signer:
        crash_primary(devnet, signer)
        pending = call(signer, "POST", "/v1/failover", ask(devnet))
        assert pending.status_code == 202
        assert "execute_at" in pending.json()
        done = wait_state(signer, pending.json()["request_id"], "confirmed")
        assert done["decided_by"] == "veto-window"
        assert witness_json(devnet)["signing_key"] == node_key(devnet, "backup1")


def test_denied_veto_request_never_switches(devnet: RunningDevnet, tmp_path: Path) -> None:
    """A request the operator denies inside the veto window is never executed."""
    primary = node_key(devnet, "primary")
    with running_signer(devnet, tmp_path / "state", approval="veto", min_missed=2,
                        veto_window=timedelta(seconds=1.5)) as signer:
        crash_primary(devnet, signer)
        pending = call(signer, "POST", "/v1/failover", ask(devnet))
        request_id = pending.json()["request_id"]
        denied = call(signer, "POST", f"/v1/requests/{request_id}/deny", {"note": "drill"},
                      who="operator")
        assert (denied.status_code, denied.json()["state"]) == (200, "denied")
        time.sleep(3)  # past the veto window: the worker must still not execute it
        assert wait_state(signer, request_id, "denied")["state"] == "denied"
        assert_nothing_happened(devnet, signer, primary)


def test_second_switch_inside_window_rate_limited(devnet: RunningDevnet, tmp_path: Path) -> None:
    """After max_switches inside the window, new evidence still gets 429 and no switch."""
    backup1 = node_key(devnet, "backup1")
    with running_signer(devnet, tmp_path / "state", min_missed=2, max_switches=1,
                        cooldown=timedelta(0)) as signer:
        crash_primary(devnet, signer)
        first = call(signer, "POST", "/v1/failover", ask(devnet))
        wait_state(signer, first.json()["request_id"], "confirmed")
        devnet.client.call("devnet.stop_node", {"name": "backup1"})
        wait_for_misses(devnet, armed_baseline(signer), 2)
        second = call(signer, "POST", "/v1/failover", ask(devnet))
        assert second.status_code == 429
        assert second.json()["detail"].startswith("[rate_limit]")
        assert witness_json(devnet)["signing_key"] == backup1
        assert (signer.count("switches"), signer.count("broadcasts")) == (1, 1)


def test_crash_after_broadcast_reconciled_without_second_switch(devnet: RunningDevnet,
                                                                tmp_path: Path) -> None:
    """A request left in 'broadcast' by a crash is confirmed from the chain on restart (T7)."""
    state = tmp_path / "state"
    backup1 = node_key(devnet, "backup1")
    crashed = build_service(signer_config(devnet, state, min_missed=2),
                            notifier=RecordingNotifier())
    try:
        crashed.executor.startup()  # chain id and arming, but no worker: it "dies" mid-way
        devnet.client.call("devnet.stop_node", {"name": "primary"})
        store, chain, now = crashed.store, crashed.executor.chain, datetime.now(UTC)
        record, _ = store.create_request(
            client_keyid="watcher", idempotency_key="crash-test", body_sha256="0" * 64,
            witness="alice", failing_key=node_key(devnet, "primary"), target_key=None, now=now)
        store.transition(record.id, {"received"}, "approved", "auto", now, target_key=backup1)
        tx = chain.build(chain.read_witness(), backup1)
        assert store.begin_broadcast(record.id, tx_id=tx.tx_id, target_key=backup1,
                                     expiration=tx.expiration, now=now) == 1
        chain.broadcast(tx)
    finally:
        crashed.close()
    devnet.wait_for(lambda s: s["witness"]["signing_key"] == backup1, WAIT_S, "backup1")
    with running_signer(devnet, state, min_missed=2) as restarted:
        done = wait_state(restarted, record.id, "confirmed")
        assert done["tx_id"] == tx.tx_id
        assert (restarted.count("switches"), restarted.count("broadcasts")) == (1, 1)
        assert witness_json(devnet)["signing_key"] == backup1


def test_auto_failover_reads_the_chain_once_before_broadcasting(
        devnet: RunningDevnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One reading feeds the decision and the build: no second read, no head read for TaPoS."""
    reads: list[str] = []
    at_broadcast: list[int] = []
    read_witness, head, broadcast = (RpcSignerChain.read_witness, RpcSignerChain.head,
                                     RpcSignerChain.broadcast)

    def counted_read(chain: RpcSignerChain) -> WitnessReading:
        reads.append("read_witness")
        return read_witness(chain)

    def counted_head(chain: RpcSignerChain) -> DynamicProps:
        reads.append("head")
        return head(chain)

    def noted_broadcast(chain: RpcSignerChain, tx: BuiltTransaction) -> None:
        at_broadcast.append(len(reads))
        broadcast(chain, tx)

    monkeypatch.setattr(RpcSignerChain, "read_witness", counted_read)
    monkeypatch.setattr(RpcSignerChain, "head", counted_head)
    monkeypatch.setattr(RpcSignerChain, "broadcast", noted_broadcast)
    with running_signer(devnet, tmp_path / "state", min_missed=2) as signer:
        crash_primary(devnet, signer)
        reads.clear()
        answer = call(signer, "POST", "/v1/failover", ask(devnet))
        assert answer.status_code == 200
        assert at_broadcast
        assert reads[:at_broadcast[0]] == ["read_witness"]
        wait_state(signer, answer.json()["request_id"], "confirmed")
        assert (signer.count("switches"), signer.count("broadcasts")) == (1, 1)
