"""Interoperability of shared/httpsig.py with independent RFC 9421 implementations.

``requests-http-signature`` (a standard client, as DESIGN.md asks) and
``http-message-signatures`` (the library under it) sign and verify against our
code in both directions. Keys are converted between our raw 32-byte form and
``cryptography`` objects here, in tests only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)
from requests_http_signature import HTTPSignatureAuth

from shared.errors import AuthError, ReplayError
from shared.httpsig import (
    Ed25519Signer,
    Headers,
    HttpMessage,
    HttpResponse,
    MemoryNonceStore,
    VerifiedRequest,
    sign_request,
    sign_response,
    verify_request,
    verify_response,
)

NOW = dt.datetime(2025, 11, 25, 12, 0, 0, tzinfo=dt.UTC)
WATCHER_SEED, SIGNER_SEED = bytes(range(32)), bytes(range(32, 64))
WATCHER, SIGNER = Ed25519Signer(WATCHER_SEED), Ed25519Signer(SIGNER_SEED)
URL = "http://127.0.0.1:8081/v1/failover"
BODY = b'{"witness": "alice", "observed_total_missed": 12, "dry_run": false}'
RESP_BODY = b'{"request_id": "r1", "state": "confirmed"}'
COMPONENTS = ("@method", "@target-uri", "@path", "content-digest", "content-type")


def crypto_private(seed: bytes) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def crypto_public(seed: bytes) -> ed25519.Ed25519PublicKey:
    return crypto_private(seed).public_key()


def private_pem(seed: bytes) -> bytes:
    return crypto_private(seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


class FixedClockAuth(HTTPSignatureAuth):
    """The library's documented hook for ``created``: our tests inject the clock."""

    created = NOW

    def get_created(self, request: requests.PreparedRequest) -> dt.datetime:
        self.add_date(request, int(self.created.timestamp()))
        return self.created


def library_signed(*, use_nonce: bool = True) -> requests.PreparedRequest:
    auth = FixedClockAuth(
        signature_algorithm=algorithms.ED25519, key=private_pem(WATCHER_SEED), key_id="watcher",
        use_nonce=use_nonce, covered_component_ids=COMPONENTS)
    return requests.Request("POST", URL, data=BODY, auth=auth,
                            headers={"Content-Type": "application/json"}).prepare()


def as_message(prepared: requests.PreparedRequest) -> HttpMessage:
    assert isinstance(prepared.body, bytes)
    assert prepared.method
    assert prepared.url
    return HttpMessage(prepared.method, prepared.url, Headers(prepared.headers), prepared.body)


def our_verify(msg: HttpMessage, store: MemoryNonceStore | None = None,
               now: dt.datetime = NOW) -> VerifiedRequest:
    return verify_request(msg, {"watcher": WATCHER.public_key}, store or MemoryNonceStore(), now)


# --- requests-http-signature signs, we verify ----------------------------------------------


def test_requests_http_signature_request_verifies() -> None:
    """A request signed by requests-http-signature (ED25519, use_nonce) passes verify_request."""
    prepared = library_signed()
    verified = our_verify(as_message(prepared))
    assert verified.keyid == "watcher"
    assert verified.label == "pyhms"  # the library's default label
    assert verified.body == BODY
    assert '"content-digest"' in verified.covered
    assert '"date"' in verified.covered  # the library adds Date coverage on its own
    assert f'nonce="{verified.nonce}"' in prepared.headers["Signature-Input"]


def test_requests_http_signature_replay_is_refused() -> None:
    """The same library-signed request sent twice is a replay."""
    store, msg = MemoryNonceStore(), as_message(library_signed())
    our_verify(msg, store)
    with pytest.raises(ReplayError):
        our_verify(msg, store)


def test_requests_http_signature_without_nonce_is_refused() -> None:
    """Our profile insists on a nonce even from a standard client."""
    with pytest.raises(AuthError) as caught:
        our_verify(as_message(library_signed(use_nonce=False)))
    assert type(caught.value) is AuthError
    assert "nonce" in str(caught.value)


def test_requests_http_signature_body_tamper_is_refused() -> None:
    """Changing the body of a library-signed request fails the digest check."""
    msg = dataclasses.replace(as_message(library_signed()), body=BODY.replace(b"12", b"99"))
    with pytest.raises(AuthError, match="Content-Digest"):
        our_verify(msg)


# --- we sign, requests-http-signature verifies ---------------------------------------------


def test_our_request_verifies_with_requests_http_signature() -> None:
    """sign_request's output is accepted by requests-http-signature's verifier."""
    # The library's verifier reads the system clock itself, so we sign "now".
    now = dt.datetime.now(dt.UTC)
    base = HttpMessage("POST", URL, Headers({"Content-Type": "application/json"}), BODY)
    fields = {"Content-Type": "application/json", **sign_request(base, WATCHER, "watcher", now)}
    prepared = requests.Request("POST", URL, data=BODY, headers=fields).prepare()
    result = HTTPSignatureAuth.verify(
        prepared,
        require_components=("@method", "@target-uri", "@path", "content-digest"),
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(
            public_keys={"watcher": crypto_public(WATCHER_SEED)}, private_keys={}),
    )
    assert result.label == "sig1"
    assert result.body == BODY
    assert result.parameters["keyid"] == "watcher"
    assert result.nonce is not None
    assert len(result.nonce) == 32


# --- responses: our signer, their verifier, and the other way round ------------------------


@dataclass
class LibRequest:
    """The request shape http-message-signatures resolves components from."""

    method: str
    url: str
    headers: dict[str, str]


@dataclass
class LibResponse:
    """The response shape http-message-signatures resolves components from."""

    status_code: int
    headers: dict[str, str]
    request: LibRequest


def sent_request() -> tuple[LibRequest, VerifiedRequest]:
    prepared = library_signed()
    assert prepared.method
    assert prepared.url
    lib = LibRequest(prepared.method, prepared.url, dict(prepared.headers))
    return lib, our_verify(as_message(prepared))


def library_verifier() -> HTTPMessageVerifier:
    return HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(
            public_keys={"signer": crypto_public(SIGNER_SEED)}, private_keys={}))


def test_our_response_verifies_with_http_message_signatures_including_req() -> None:
    """http-message-signatures verifies sign_response, including "signature";req;key=..."""
    lib_request, verified = sent_request()
    now = dt.datetime.now(dt.UTC)  # the library checks created against its own clock
    resp = HttpResponse(200, Headers({"Content-Type": "application/json"}), RESP_BODY)
    fields = {"Content-Type": "application/json", **sign_response(resp, verified, SIGNER, now)}
    results = library_verifier().verify(
        LibResponse(200, fields, lib_request),
        require_components=("@status", "content-digest", '"signature";req;key="pyhms"'),
        body=RESP_BODY,
    )
    assert len(results) == 1
    covered = results[0].covered_components
    assert covered['"signature";req;key="pyhms"'] == (
        lib_request.headers["Signature"].removeprefix("pyhms="))
    assert results[0].body == RESP_BODY


def test_http_message_signatures_also_refuses_our_response_for_another_request() -> None:
    """The independent verifier agrees: our answer does not verify against another request."""
    _, verified = sent_request()
    other_request, _ = sent_request()  # a fresh nonce, same route
    now = dt.datetime.now(dt.UTC)
    resp = HttpResponse(200, Headers(), RESP_BODY)
    fields = sign_response(resp, verified, SIGNER, now)
    with pytest.raises(InvalidSignature):
        library_verifier().verify(LibResponse(200, fields, other_request), body=RESP_BODY)


def library_signed_response(lib_request: LibRequest, components: tuple[str, ...]) -> LibResponse:
    resp = LibResponse(200, {"Content-Type": "application/json"}, lib_request)
    HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(
            private_keys={"signer": crypto_private(SIGNER_SEED)}, public_keys={}),
    ).sign(resp, key_id="signer", created=NOW, nonce="r" * 24, label="sig1",
           covered_component_ids=components, body=RESP_BODY)
    return resp


def test_http_message_signatures_response_verifies_with_verify_response() -> None:
    """A response signed by http-message-signatures with the request binding passes."""
    lib_request, _ = sent_request()
    resp = library_signed_response(
        lib_request, ("@status", "content-digest", '"signature";req;key="pyhms"'))
    verify_response(HttpResponse(200, Headers(resp.headers), RESP_BODY), lib_request.headers,
                    SIGNER.public_key, NOW)


def test_response_bound_only_by_req_method_and_uri_is_refused() -> None:
    """A validly signed answer covering only ;req method and URI is refused as unbound."""
    # Every failover request shares method and URI, so such an answer could be
    # replayed for any later request (DESIGN.md, "Request signing profile").
    lib_request, _ = sent_request()
    resp = library_signed_response(
        lib_request, ("@status", "content-digest", '"@method";req', '"@target-uri";req'))
    with pytest.raises(AuthError, match="must cover"):
        verify_response(HttpResponse(200, Headers(resp.headers), RESP_BODY), lib_request.headers,
                        SIGNER.public_key, NOW)
