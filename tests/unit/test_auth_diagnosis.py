"""401 reasons: the signer's classification (no keyid oracle) and the watcher's words for them."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from shared.authhint import REASONS
from shared.errors import AuthError, StaleRequestError
from shared.httpsig import (
    Ed25519Signer,
    Headers,
    HttpMessage,
    MemoryNonceStore,
    signed_headers_for,
    verify_request,
)
from signer.auth import diagnose
from watcher.diagnosis import Context, Received, explain

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SKEW = timedelta(seconds=30)
URL = "https://signer.example/v1/failover"
BODY = b'{"witness":"alice"}'
WATCHER = Ed25519Signer.generate()
KEYS = {"watcher": WATCHER.public_key}
Tamper = Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]]


def request(keyid: str = "watcher", key: Ed25519Signer = WATCHER, *,
            at: datetime = NOW) -> tuple[dict[str, str], bytes]:
    """Headers and body of a failover request as the watcher signs it."""
    return dict(signed_headers_for("POST", URL, BODY, "application/json", key, keyid, at)), BODY


def classify(headers: dict[str, str], body: bytes) -> tuple[str, str | None, bool]:
    """Run the real verifier, then the signer's classification of its refusal."""
    msg = HttpMessage("POST", URL, Headers(headers), body)
    with pytest.raises(AuthError) as refused:
        verify_request(msg, KEYS, MemoryNonceStore(), NOW, SKEW)
    rejection = diagnose(msg, refused.value, KEYS.__contains__, NOW, SKEW)
    assert rejection.reason in REASONS
    return rejection.reason, rejection.keyid, rejection.known_keyid


def flip_signature(headers: dict[str, str]) -> dict[str, str]:
    """The same headers with one bit of the Ed25519 signature flipped."""
    label, value = headers["Signature"].split("=", 1)
    raw = bytearray(base64.b64decode(value.strip(":")))
    raw[0] ^= 1
    return {**headers, "Signature": f"{label}=:{base64.b64encode(bytes(raw)).decode()}:"}


@pytest.mark.parametrize(("make", "expected"), [
    pytest.param(lambda: request("mallory", Ed25519Signer.generate()),
                 ("key_or_signature", "mallory", False), id="unknown_keyid"),
    pytest.param(lambda: request("watcher", Ed25519Signer.generate()),
                 ("key_or_signature", "watcher", True), id="wrong_key_pair"),
    pytest.param(lambda: (flip_signature(request()[0]), BODY),
                 ("key_or_signature", "watcher", True), id="flipped_signature"),
    pytest.param(lambda: request(at=NOW - timedelta(seconds=31)),
                 ("stale", "watcher", True), id="stale_known_keyid"),
    pytest.param(lambda: request("mallory", Ed25519Signer.generate(),
                                 at=NOW + timedelta(seconds=31)),
                 ("stale", "mallory", False), id="stale_unknown_keyid"),
    pytest.param(lambda: (request()[0], BODY.replace(b"alice", b"bobby")),
                 ("bad_digest", "watcher", True), id="body_altered"),
    pytest.param(lambda: ({k: v for k, v in request()[0].items() if k != "Signature"}, BODY),
                 ("malformed", None, False), id="signature_missing"),
    pytest.param(lambda: ({**request()[0], "Signature-Input": "sig1=\x01"}, BODY),
                 ("malformed", None, False), id="garbage_header"),
])
def test_signer_classifies_refusals(make: Callable[[], tuple[dict[str, str], bytes]],
                                    expected: tuple[str, str | None, bool]) -> None:
    """Each kind of bad request gets its reason; unknown keyid and bad signature share one."""
    assert classify(*make()) == expected


def test_no_keyid_oracle_for_unauthenticated_callers() -> None:
    """For every tamper, a configured and an unknown keyid get the same public reason."""
    for at in (NOW, NOW - timedelta(seconds=60)):
        known = classify(*request("watcher", Ed25519Signer.generate(), at=at))[0]
        unknown = classify(*request("nobody", Ed25519Signer.generate(), at=at))[0]
        assert known == unknown
        headers_k, _ = request("watcher", Ed25519Signer.generate(), at=at)
        headers_u, _ = request("nobody", Ed25519Signer.generate(), at=at)
        assert classify(headers_k, b"{}")[0] == classify(headers_u, b"{}")[0]


CTX = Context("POST", URL, "watcher", WATCHER.public_key.to_base64(), NOW, SKEW)


def refusal(reason: object, *, date: datetime | None = None) -> Received:
    """A signer's unsigned 401 with ``reason`` (and a Date from the signer's clock)."""
    headers = {"Content-Type": "application/json"}
    if date is not None:
        headers["Date"] = format_datetime(date, usegmt=True)
    return Received(401, headers, json.dumps({"error": "unauthorized", "reason": reason}).encode())


@pytest.mark.parametrize(("answer", "words"), [
    pytest.param(refusal("key_or_signature"),
                 f"the signer does not know keyid 'watcher', or the public key it holds for "
                 f"it is not this watcher's ({WATCHER.public_key.to_base64()}) — check "
                 "[[clients]] in signer.toml", id="key_or_signature"),
    pytest.param(refusal("stale", date=NOW + timedelta(seconds=95)),
                 "clock skew: the signer's clock differs from this host's by +95 s, more than "
                 "the allowed 30 s", id="stale_with_date"),
    pytest.param(refusal("stale"), "clock skew: our request time is outside the allowed 30 s",
                 id="stale_without_date"),
    pytest.param(refusal("bad_digest"), "changes request bodies", id="bad_digest"),
    pytest.param(refusal("replay"), "seen this request's nonce before", id="replay"),
    pytest.param(refusal("malformed"), "strips or rewrites Signature", id="malformed"),
    pytest.param(refusal("<script>"), "no reason given", id="unknown_reason_not_echoed"),
    pytest.param(Received(404, {"Content-Type": "text/html"}, b"<html>Not Found</html>"),
                 "wrong URL: the answer to POST https://signer.example/v1/failover is not from "
                 "a witness-signer (HTTP 404, text/html", id="html_404"),
    pytest.param(Received(200, {"Content-Type": "application/json"}, b'{"result": 1}'),
                 "wrong URL", id="json_without_error"),
])
def test_watcher_explains_unverified_answers(answer: Received, words: str) -> None:
    """The watcher names the cause and where to look; a 401 hint is marked unauthenticated."""
    text = explain(answer, AuthError("unsigned: Signature-Input or Signature is missing"), CTX)
    assert words in text
    assert "<script>" not in text
    if answer.status == 401 and "no reason" not in text:
        assert "unauthenticated" in text


def test_stale_signed_answer_is_clock_skew() -> None:
    """A signed answer whose created is far off is reported as clock skew, not as forgery."""
    headers = {"Signature-Input": f'sig1=("@status");created={int(NOW.timestamp()) - 120};'
               'keyid="signer";alg="ed25519"', "Signature": "sig1=:" + "A" * 86 + "==:"}
    text = explain(Received(200, headers, b"{}"), StaleRequestError("created is +120 s off"), CTX)
    assert "clock skew: the signer's clock differs from this host's by -120 s" in text
