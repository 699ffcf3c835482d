"""Unit tests for the RFC 9421 / RFC 9530 Ed25519 signing profile (shared/httpsig.py)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import pickle
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.errors import (
    AuthError,
    ConfigError,
    ReplayError,
    RequestInvalidError,
    StaleRequestError,
)
from shared.httpsig import (
    Ed25519PublicKey,
    Ed25519Signer,
    Headers,
    HttpMessage,
    HttpResponse,
    MemoryNonceStore,
    VerifiedRequest,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_request,
    sign_response,
    signed_headers_for,
    verify_request,
    verify_response,
)
from shared.httpsig_base import (
    DuplicateKeyError,
    InnerList,
    Item,
    Token,
    check_content_digest,
    check_params,
    component_value,
    content_digest,
    parse_component_id,
    parse_dictionary,
    select_signature,
    serialize_bare,
    serialize_member,
    signature_base,
)

NOW = datetime(2025, 11, 25, 12, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
WATCHER = Ed25519Signer(bytes(range(32)))
SIGNER = Ed25519Signer(bytes(range(32, 64)))
MALLORY = Ed25519Signer(b"\x07" * 32)
KEYS = {"watcher": WATCHER.public_key}
URL = "http://127.0.0.1:8081/v1/failover"
BODY = (
    b'{"witness": "alice", "failing_key": "STM6LLegbAgLAy28EHrffBVuANFWcFgmqRMW13wBmTExqFE9SCkg4",'
    b' "observed_total_missed": 12, "reason": "2 misses since armed", "dry_run": false}'
)
NONCE = "n0nce-n0nce-n0nce-n0nce-n0nce-AB"
OK_PARAMS = (("created", NOW_S), ("nonce", NONCE), ("keyid", "watcher"), ("alg", "ed25519"))
MINIMAL = ("@method", "@path", "content-digest")


def request(body: bytes = BODY, url: str = URL, method: str = "POST") -> HttpMessage:
    return HttpMessage(method, url, Headers({"Content-Type": "application/json"}), body)


def signed(
    *,
    key: Ed25519Signer = WATCHER,
    keyid: str = "watcher",
    now: datetime = NOW,
    nonce: str | None = None,
    body: bytes = BODY,
    url: str = URL,
) -> HttpMessage:
    msg = request(body, url)
    added = sign_request(msg, key, keyid, now, nonce=nonce)
    return with_fields(msg, **added)


def with_fields(msg: HttpMessage, **fields: str | None) -> HttpMessage:
    """A copy of msg with fields set (None removes), names given with '_' for '-'."""
    out = dict(msg.headers)
    for name, value in fields.items():
        out.pop(name.replace("_", "-").lower(), None)
        if value is not None:
            out[name.replace("_", "-").lower()] = value
    return dataclasses.replace(msg, headers=Headers(out))


def raw_sign(
    msg: HttpMessage | HttpResponse,
    components: Sequence[str],
    params: Sequence[tuple[str, object]] = OK_PARAMS,
    *,
    key: Ed25519Signer = WATCHER,
    digest: str | None = None,
    sent: Headers | None = None,
) -> HttpMessage | HttpResponse:
    """Sign exactly what we are told, bypassing sign_request's own checks."""
    fields = dict(msg.headers)
    fields["content-digest"] = content_digest(msg.body) if digest is None else digest
    msg = dataclasses.replace(msg, headers=Headers(fields))
    covered = InnerList(tuple(parse_component_id(c) for c in components), tuple(params))  # type: ignore[arg-type]
    signature = key.sign(signature_base(covered, msg, sent))
    fields["signature-input"] = f"sig1={serialize_member(covered)}"
    fields["signature"] = f"sig1={serialize_bare(signature)}"
    return dataclasses.replace(msg, headers=Headers(fields))


def verify(msg: HttpMessage, store: MemoryNonceStore | None = None) -> VerifiedRequest:
    return verify_request(msg, KEYS, store or MemoryNonceStore(), NOW)


def raises_exactly(error: type[Exception], fn: Callable[[], object]) -> Exception:
    with pytest.raises(error) as caught:
        fn()
    assert type(caught.value) is error, repr(caught.value)
    return caught.value


# --- happy path and exact wire format ------------------------------------------------------


def test_signed_request_verifies_and_exposes_what_was_signed() -> None:
    """A request signed with the profile verifies and the result carries its signed facts."""
    verified = verify(signed(nonce=NONCE))
    assert (verified.keyid, verified.label, verified.nonce, verified.created) == (
        "watcher", "sig1", NONCE, NOW_S)
    assert verified.body == BODY
    assert verified.covered == (
        '"@method"', '"@target-uri"', '"@path"', '"content-digest"', '"content-type"')
    assert len(verified.signature) == 64


def test_sign_request_emits_the_design_wire_format() -> None:
    """Content-Digest, Signature-Input and Signature have exactly the DESIGN.md shapes."""
    added = sign_request(request(), WATCHER, "watcher", NOW, nonce=NONCE)
    digest = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    assert added["Content-Digest"] == f"sha-256=:{digest}:"
    assert added["Signature-Input"] == (
        'sig1=("@method" "@target-uri" "@path" "content-digest" "content-type")'
        f';created={NOW_S};nonce="{NONCE}";keyid="watcher";alg="ed25519"'
    )
    assert added["Signature"].startswith("sig1=:")
    assert added["Signature"].endswith(":")


def test_signature_is_over_the_rfc9421_signature_base() -> None:
    """The signature verifies over the section 2.5 base written out by hand."""
    added = sign_request(request(), WATCHER, "watcher", NOW, nonce=NONCE)
    base = (
        '"@method": POST\n'
        f'"@target-uri": {URL}\n'
        '"@path": /v1/failover\n'
        f'"content-digest": {added["Content-Digest"]}\n'
        '"content-type": application/json\n'
        '"@signature-params": ' + added["Signature-Input"].removeprefix("sig1=")
    ).encode()
    signature = base64.b64decode(added["Signature"].removeprefix("sig1=:").removesuffix(":"))
    assert WATCHER.public_key.verify(base, signature)


def test_rfc9421_appendix_b26_ed25519_vector() -> None:
    """Our signature base and Ed25519 signature match RFC 9421 appendix B.2.6 byte for byte."""
    # test-key-ed25519 (RFC 9421 appendix B.1.4): PKCS#8 / SPKI DER, raw key in the last 32 bytes.
    seed = base64.b64decode("MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF")
    public = base64.b64decode("MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=")
    msg = HttpMessage("POST", "https://example.com/foo?param=Value&Pet=dog", Headers({
        "Host": "example.com",
        "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
        "Content-Type": "application/json",
        "Content-Digest": "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7"
                          "BNNyealdVLvRwEmTHWXvJwew==:",
        "Content-Length": "18",
    }), b'{"hello": "world"}')
    member = parse_dictionary(
        'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
        ';created=1618884473;keyid="test-key-ed25519"')["sig-b26"]
    assert isinstance(member, InnerList)
    base = signature_base(member, msg)
    assert base == (
        b'"date": Tue, 20 Apr 2021 02:07:55 GMT\n"@method": POST\n"@path": /foo\n'
        b'"@authority": example.com\n"content-type": application/json\n"content-length": 18\n'
        b'"@signature-params": ("date" "@method" "@path" "@authority" "content-type"'
        b' "content-length");created=1618884473;keyid="test-key-ed25519"'
    )
    expected = ("wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp"
                "5WPpBKRCw==")
    signer = Ed25519Signer(seed[-32:])
    assert signer.public_key.raw == public[-32:]
    assert base64.b64encode(signer.sign(base)).decode() == expected


def test_rfc9530_content_digest_example() -> None:
    """The digest of the RFC 9530 example body is the one the RFC prints."""
    assert content_digest(b'{"hello": "world"}') == (
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:")


@pytest.mark.parametrize(("component", "expected"), [
    pytest.param("@method", "POST", id="method"),
    pytest.param("@target-uri", "https://Example.COM:443/a/b?x=1&y", id="target-uri-verbatim"),
    pytest.param("@authority", "example.com", id="authority-lowercased-default-port-dropped"),
    pytest.param("@scheme", "https", id="scheme"),
    pytest.param("@request-target", "/a/b?x=1&y", id="request-target"),
    pytest.param("@path", "/a/b", id="path"),
    pytest.param("@query", "?x=1&y", id="query"),
    pytest.param("x-multi", "a, b", id="repeated-field-lines-joined"),
    pytest.param("content-type", "application/json", id="field-case-insensitive-trimmed"),
])
def test_derived_and_field_component_values(component: str, expected: str) -> None:
    """Derived components and fields resolve as RFC 9421 sections 2.1 and 2.2 define."""
    msg = HttpMessage("POST", "https://Example.COM:443/a/b?x=1&y", Headers(
        [("X-Multi", "a"), ("x-multi", " b\t"), ("CONTENT-TYPE", " application/json ")]))
    assert component_value(Item(component), msg) == expected


@pytest.mark.parametrize(("url", "component", "expected"), [
    pytest.param("http://h:8080", "@path", "/", id="empty-path-is-slash"),
    pytest.param("http://h:8080", "@query", "?", id="absent-query-is-question-mark"),
    pytest.param("http://h:8080", "@authority", "h:8080", id="non-default-port-kept"),
    pytest.param("http://[::1]:80/x", "@authority", "[::1]", id="ipv6-default-port-dropped"),
    pytest.param("http://h:080/x", "@authority", "h", id="zero-padded-default-port-dropped"),
    pytest.param("http://h/x", "@target-uri", "http://h/x", id="target-uri-without-port"),
])
def test_derived_component_edge_cases(url: str, component: str, expected: str) -> None:
    """Empty paths, absent queries and ports follow RFC 9421 section 2.2."""
    assert component_value(Item(component), HttpMessage("GET", url, Headers())) == expected


@pytest.mark.parametrize("components", [
    pytest.param(("@method", "@path", "content-digest"), id="path-only"),
    pytest.param(("@method", "@target-uri", "content-digest"), id="target-uri-only"),
    pytest.param(("content-digest", "@authority", "@scheme", "@request-target", "@query",
                  "@method", "content-type", "@path"), id="extra-components-any-order"),
])
def test_accepted_coverage_variants(components: tuple[str, ...]) -> None:
    """Any coverage including @method, content-digest and a path form is accepted."""
    msg = request(url=URL + "?dry=1")
    assert verify(with_fields(msg, **sign_request(
        msg, WATCHER, "watcher", NOW, components=components))).keyid == "watcher"


def test_signed_headers_for_with_and_without_content_type() -> None:
    """The convenience helper produces headers that verify, covering content-type only if sent."""
    for content_type in ("application/json", None):
        fields = signed_headers_for("POST", URL, BODY, content_type, WATCHER, "watcher", NOW)
        assert ("content-type" in fields["Signature-Input"]) is (content_type is not None)
        assert verify(HttpMessage("POST", URL, Headers(fields), BODY)).body == BODY


def test_default_nonce_is_32_base64url_characters_and_fresh() -> None:
    """Without an explicit nonce each signature gets a new 32-character base64url one."""
    nonces = {verify(signed()).nonce for _ in range(5)}
    assert len(nonces) == 5
    assert all(len(n) == 32 and n.replace("-", "").replace("_", "").isalnum() for n in nonces)


# --- rejected requests ---------------------------------------------------------------------


def _forged() -> HttpMessage:
    return signed(key=MALLORY)


def _unknown_keyid() -> HttpMessage:
    return signed(key=MALLORY, keyid="mallory")


def _body_altered() -> HttpMessage:
    return dataclasses.replace(signed(), body=BODY.replace(b"12", b"13"))


def _body_and_digest_altered() -> HttpMessage:
    body = BODY.replace(b"12", b"13")
    return dataclasses.replace(with_fields(signed(), content_digest=content_digest(body)),
                               body=body)


def _method_altered() -> HttpMessage:
    return dataclasses.replace(signed(), method="PUT")


def _path_altered() -> HttpMessage:
    return dataclasses.replace(signed(), target_uri=URL.replace("failover", "fallover"))


def _query_added() -> HttpMessage:
    return dataclasses.replace(signed(), target_uri=URL + "?dry_run=1")


def _content_type_altered() -> HttpMessage:
    return with_fields(signed(), content_type="text/plain")


def _digest_missing() -> HttpMessage:
    return with_fields(signed(), content_digest=None)


def _signature_missing() -> HttpMessage:
    return with_fields(signed(), signature=None)


def _signature_input_missing() -> HttpMessage:
    return with_fields(signed(), signature_input=None)


def _label_mismatch() -> HttpMessage:
    msg = signed()
    return with_fields(msg, signature="sig2" + msg.headers["signature"].removeprefix("sig1"))


def _signature_truncated() -> HttpMessage:
    return with_fields(signed(), signature="sig1=:" + base64.b64encode(b"x" * 63).decode() + ":")


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _signature_noncanonical_base64() -> HttpMessage:
    msg = signed()
    value = msg.headers["signature"]
    # 64 bytes -> 86 characters + "=="; the low 4 bits of the 86th are unused, so
    # flipping one gives a second spelling of the very same signature bytes.
    twin = value[:-4] + B64[B64.index(value[-4]) ^ 1] + value[-3:]
    assert base64.b64decode(twin[6:-1]) == base64.b64decode(value[6:-1])
    return with_fields(msg, signature=twin)


def _first_known_signature_invalid() -> HttpMessage:
    good = signed()
    bad = signed(key=MALLORY)
    return with_fields(
        good,
        signature_input="bad=" + bad.headers["signature-input"].removeprefix("sig1=") + ", "
        + good.headers["signature-input"],
        signature="bad=" + bad.headers["signature"].removeprefix("sig1=") + ", "
        + good.headers["signature"],
    )


def _raw(components: Sequence[str] = MINIMAL, **params: object) -> Callable[[], HttpMessage]:
    def build() -> HttpMessage:
        merged = dict(OK_PARAMS) | params
        kept = [(k, v) for k, v in merged.items() if v is not None]
        out = raw_sign(request(), components, kept)
        assert isinstance(out, HttpMessage)
        return out
    return build


def _raw_digest(digest: str) -> Callable[[], HttpMessage]:
    def build() -> HttpMessage:
        out = raw_sign(request(), MINIMAL, OK_PARAMS, digest=digest)
        assert isinstance(out, HttpMessage)
        return out
    return build


SHA512 = base64.b64encode(hashlib.sha512(BODY).digest()).decode()
SHA256 = base64.b64encode(hashlib.sha256(BODY).digest()).decode()


@pytest.mark.parametrize(("tamper", "error"), [
    pytest.param(_forged, AuthError, id="forged-signature"),
    pytest.param(_unknown_keyid, AuthError, id="unknown-keyid"),
    pytest.param(lambda: signed(now=NOW - timedelta(seconds=31)), StaleRequestError,
                 id="created-31s-old"),
    pytest.param(lambda: signed(now=NOW + timedelta(seconds=31)), StaleRequestError,
                 id="created-31s-in-future"),
    pytest.param(_body_altered, AuthError, id="body-altered"),
    pytest.param(_body_and_digest_altered, AuthError, id="body-and-digest-altered"),
    pytest.param(_method_altered, AuthError, id="method-altered"),
    pytest.param(_path_altered, AuthError, id="path-altered"),
    pytest.param(_query_added, AuthError, id="query-added"),
    pytest.param(_content_type_altered, AuthError, id="content-type-altered"),
    pytest.param(_digest_missing, AuthError, id="digest-missing"),
    pytest.param(_signature_missing, AuthError, id="signature-missing"),
    pytest.param(_signature_input_missing, AuthError, id="signature-input-missing"),
    pytest.param(_label_mismatch, AuthError, id="label-mismatch"),
    pytest.param(_signature_truncated, AuthError, id="signature-63-bytes"),
    pytest.param(_signature_noncanonical_base64, AuthError, id="signature-noncanonical-b64"),
    pytest.param(_first_known_signature_invalid, AuthError, id="first-known-label-invalid"),
    pytest.param(_raw(("@method", "@path")), AuthError, id="content-digest-not-covered"),
    pytest.param(_raw(("@path", "content-digest")), AuthError, id="method-not-covered"),
    pytest.param(_raw(("@method", "content-digest", "@authority")), AuthError,
                 id="path-not-covered"),
    pytest.param(_raw(nonce="short-nonce-15c"), AuthError, id="nonce-15-chars"),
    pytest.param(_raw(nonce="a" * 129), AuthError, id="nonce-129-chars"),
    pytest.param(_raw(nonce="bad+nonce/alphabet="), AuthError, id="nonce-bad-alphabet"),
    pytest.param(_raw(nonce=123456789012345), AuthError, id="nonce-not-a-string"),
    pytest.param(_raw(nonce=None), AuthError, id="nonce-missing"),
    pytest.param(_raw(alg="rsa-pss-sha512"), AuthError, id="alg-mismatch"),
    pytest.param(_raw(alg=Token("ed25519")), AuthError, id="alg-as-token"),
    pytest.param(_raw(created=None), AuthError, id="created-missing"),
    pytest.param(_raw(created="1764072000"), AuthError, id="created-as-string"),
    pytest.param(_raw(expires=NOW_S - 1), StaleRequestError, id="expired"),
    pytest.param(_raw(unexpected="x"), AuthError, id="unknown-parameter"),
    pytest.param(_raw_digest(f"sha-512=:{SHA512}:"), AuthError, id="digest-sha512-only"),
    pytest.param(_raw_digest(f"sha-256=:{SHA256}:, sha-512=:{SHA256}:"), AuthError,
                 id="digest-sha512-member-wrong"),
    pytest.param(_raw_digest("sha-256=abc"), AuthError, id="digest-not-byte-sequence"),
    pytest.param(_raw_digest("sha-256=:" + base64.b64encode(b"\0" * 32).decode() + ":"),
                 AuthError, id="digest-mismatch"),
])
def test_rejected_requests(tamper: Callable[[], HttpMessage], error: type[Exception]) -> None:
    """Every forged, altered, stale or non-conforming request raises the specific error."""
    msg = tamper()
    raises_exactly(error, lambda: verify(msg))


@pytest.mark.parametrize(("field", "value"), [
    pytest.param("signature-input", "sig1", id="input-not-inner-list"),
    pytest.param("signature-input", 'sig1=("@method"', id="input-unterminated"),
    pytest.param("signature-input", 'sig1=("@METHOD");keyid="watcher"', id="uppercase-component"),
    pytest.param("signature-input", "sig1=(@method)", id="unquoted-component"),
    pytest.param("signature-input", "sig1=();created=1.5", id="decimal"),
    pytest.param("signature-input", "sig1=();created=1234567890123456", id="integer-16-digits"),
    pytest.param("signature-input", "sig1=(\"é\")", id="non-ascii"),
    pytest.param("signature-input", "sig1=()," * 2000, id="oversized"),
    pytest.param("signature-input", "sig1=(),", id="trailing-comma"),
    pytest.param("signature-input", "sig1=(\"a\"\t\"b\")", id="tab-in-inner-list"),
    pytest.param("signature", "sig1=:!!!!:", id="signature-not-base64"),
    pytest.param("signature", "sig1=abc", id="signature-token"),
    pytest.param("signature", "sig1=:" + "A" * 86 + "=:", id="signature-bad-padding"),
    pytest.param("content-digest", "sha-256=:Zm9v", id="digest-unterminated"),
    pytest.param("content-digest", "\x00", id="digest-nul"),
])
def test_malformed_headers_raise_auth_error(field: str, value: str) -> None:
    """Malformed structured fields are authentication failures, never crashes."""
    msg = with_fields(signed(), **{field: value})
    raises_exactly(AuthError, lambda: verify(msg))


def _label_twice() -> HttpMessage:
    msg = signed()
    sig_input, sig = msg.headers["signature-input"], msg.headers["signature"]
    return with_fields(msg, signature_input=f"{sig_input}, {sig_input}", signature=f"{sig}, {sig}")


def _created_twice() -> HttpMessage:
    msg = signed()
    return with_fields(msg, signature_input=msg.headers["signature-input"] + f";created={NOW_S}")


def _keyid_twice() -> HttpMessage:
    msg = signed()
    return with_fields(msg, signature_input=msg.headers["signature-input"] + ';keyid="watcher"')


@pytest.mark.parametrize("tamper", [
    pytest.param(_label_twice, id="label-twice-with-known-keyid"),
    pytest.param(_created_twice, id="created-twice"),
    pytest.param(_keyid_twice, id="keyid-twice"),
])
def test_duplicate_members_or_parameters_are_refused(tamper: Callable[[], HttpMessage]) -> None:
    """A genuine request repeating a label, parameter or digest with the same value is refused.

    Each duplicate repeats exactly what was signed, so nothing but the duplicate itself
    can be the reason: RFC 8941 would let the last one win; this profile refuses.
    """
    verify(signed())  # the same request without the duplicate is accepted
    raises_exactly(DuplicateKeyError, lambda: verify(tamper()))


def test_duplicate_digest_member_is_refused() -> None:
    """A Content-Digest naming sha-256 twice, both right, is refused for the duplicate."""
    digest = content_digest(BODY)
    check_content_digest(digest, BODY)
    raises_exactly(DuplicateKeyError, lambda: check_content_digest(f"{digest}, {digest}", BODY))


@pytest.mark.parametrize("components", [
    pytest.param(("@method", "@path", "content-digest", "@method"), id="duplicate-component"),
    pytest.param(("@method", "@path", "content-digest", "@signature-params"),
                 id="covers-signature-params"),
    pytest.param(("@method", "@path", "content-digest", "@query-param"), id="unsupported-derived"),
    pytest.param(("@method", "@path", "content-digest", "@status"), id="status-on-request"),
    pytest.param(("@method", "@path", "content-digest", '"content-type";sf'),
                 id="unsupported-sf-flag"),
    pytest.param(("@method", "@path", "content-digest", "x-absent"), id="absent-field"),
    pytest.param(('"@method";req', "@path", "content-digest"), id="req-flag-on-request"),
    pytest.param(("@method", "@path", "content-digest", '"content-type";key="a"'),
                 id="key-on-non-dictionary-field"),
])
def test_unresolvable_components_are_refused(components: tuple[str, ...]) -> None:
    """Components that cannot be resolved or are duplicated are refused on both sides."""
    raises_exactly(RequestInvalidError, lambda: sign_request(
        request(), WATCHER, "watcher", NOW, components=components))
    covered = InnerList(tuple(parse_component_id(c) for c in components), OK_PARAMS)
    fields = dict(request().headers) | {
        "content-digest": content_digest(BODY),
        "signature-input": f"sig1={serialize_member(covered)}",
        "signature": "sig1=" + serialize_bare(b"\1" * 64),
    }
    msg = HttpMessage("POST", URL, Headers(fields), BODY)
    raises_exactly(AuthError, lambda: verify(msg))


@pytest.mark.parametrize("url", [
    pytest.param("http://127.0.0.1:8081/v1/failover#frag", id="fragment"),
    pytest.param("http://user@127.0.0.1:8081/v1/failover", id="userinfo"),
    pytest.param("http://127.0.0.1:8081/v1/fail over", id="space"),
    pytest.param("/v1/failover", id="relative"),
    pytest.param("http://127.0.0.1:8081/v1/f\u00e4ilover", id="non-ascii"),
])
def test_unusable_target_uris(url: str) -> None:
    """A target URI with a fragment, userinfo, spaces or no scheme cannot be signed or verified."""
    raises_exactly(RequestInvalidError, lambda: sign_request(request(url=url), WATCHER, "w", NOW))
    msg = dataclasses.replace(signed(), target_uri=url)
    raises_exactly(AuthError, lambda: verify(msg))


def test_boundary_skew_of_30s_is_accepted() -> None:
    """created exactly max_skew old or ahead is still accepted."""
    for delta in (timedelta(seconds=-30), timedelta(seconds=30)):
        assert verify(signed(now=NOW + delta)).created == NOW_S + int(delta.total_seconds())


def test_first_signature_with_known_keyid_is_used() -> None:
    """A leading signature by an unknown keyid is skipped; the known one is verified."""
    good, other = signed(), signed(key=MALLORY, keyid="mallory")
    msg = with_fields(
        good,
        signature_input="other=" + other.headers["signature-input"].removeprefix("sig1=") + ", "
        + "mine=" + good.headers["signature-input"].removeprefix("sig1="),
        signature="other=" + other.headers["signature"].removeprefix("sig1=") + ", "
        + "mine=" + good.headers["signature"].removeprefix("sig1="),
    )
    assert verify(msg).label == "mine"


def test_replayed_request_is_refused() -> None:
    """The same signed request verified twice against one store is a replay."""
    store, msg = MemoryNonceStore(), signed()
    verify(msg, store)
    raises_exactly(ReplayError, lambda: verify(msg, store))


def test_fresh_nonces_from_one_key_all_pass() -> None:
    """Requests from one key with different nonces all verify against one store."""
    store = MemoryNonceStore()
    nonces = [NONCE, NONCE.replace("AB", "CD"), "0123456789abcdef"]
    assert [verify(signed(nonce=n), store).nonce for n in nonces] == nonces
    raises_exactly(ReplayError, lambda: verify(signed(nonce=nonces[1]), store))


def test_nonce_is_scoped_per_keyid() -> None:
    """The same nonce from two different clients is not a replay."""
    store = MemoryNonceStore()
    keys = {"watcher": WATCHER.public_key, "operator": SIGNER.public_key}
    verify_request(signed(nonce=NONCE), keys, store, NOW)
    verify_request(signed(key=SIGNER, keyid="operator", nonce=NONCE), keys, store, NOW)


def test_forged_request_does_not_burn_the_nonce() -> None:
    """A forgery carrying a genuine nonce is refused before the nonce store is touched."""
    calls: list[tuple[str, str]] = []

    class RecordingStore(MemoryNonceStore):
        def use(self, keyid: str, nonce: str, created: int, now: int) -> bool:
            calls.append((keyid, nonce))
            return super().use(keyid, nonce, created, now)

    store = RecordingStore()
    for forged in (signed(key=MALLORY, nonce=NONCE), _body_altered()):
        raises_exactly(AuthError, lambda f=forged: verify(f, store))  # type: ignore[misc]
    assert calls == []
    assert verify(signed(nonce=NONCE), store).nonce == NONCE


def test_verified_request_cannot_be_built_directly() -> None:
    """Only verify_request can construct a VerifiedRequest."""
    raises_exactly(AuthError, lambda: VerifiedRequest(
        keyid="watcher", label="sig1", nonce=NONCE, created=NOW_S, covered=(), method="POST",
        target_uri=URL, signature=b"", signature_header="", body=BODY))


def test_naive_clock_values_are_refused() -> None:
    """A naive datetime cannot silently be read as local time."""
    naive = NOW.replace(tzinfo=None)
    raises_exactly(RequestInvalidError, lambda: sign_request(request(), WATCHER, "w", naive))
    raises_exactly(AuthError, lambda: verify_request(signed(), KEYS, MemoryNonceStore(), naive))


@pytest.mark.parametrize(("nonce", "label"), [
    pytest.param("too-short", "sig1", id="short-nonce"),
    pytest.param(NONCE, "Sig1", id="uppercase-label"),
    pytest.param(NONCE, "sig 1", id="label-with-space"),
])
def test_sign_request_refuses_bad_nonce_or_label(nonce: str, label: str) -> None:
    """The signer refuses to emit a nonce or label its own verifier would refuse."""
    raises_exactly(RequestInvalidError, lambda: sign_request(
        request(), WATCHER, "watcher", NOW, nonce=nonce, label=label))


# --- nonce store ---------------------------------------------------------------------------


def test_memory_nonce_store_window_and_capacity() -> None:
    """Nonces are remembered for the window, then forgotten; a full store refuses, not forgets."""
    store = MemoryNonceStore(window=timedelta(seconds=60), max_entries=2)
    assert store.use("k", "a", created=100, now=100)
    assert not store.use("k", "a", created=100, now=160)
    assert store.use("k", "b", created=100, now=100)
    raises_exactly(AuthError, lambda: store.use("k", "c", created=100, now=150))
    assert store.use("k", "a", created=100, now=161)


# --- responses -----------------------------------------------------------------------------


def answer(verified: VerifiedRequest, *, key: Ed25519Signer = SIGNER, now: datetime = NOW,
           status: int = 200, body: bytes = b'{"state": "confirmed"}',
           keyid: str = "signer") -> HttpResponse:
    resp = HttpResponse(status, Headers({"Content-Type": "application/json"}), body)
    added = sign_response(resp, verified, key, now, keyid=keyid)
    return dataclasses.replace(resp, headers=Headers(dict(resp.headers) | added))


def check_answer(resp: HttpResponse, sent: HttpMessage, now: datetime = NOW) -> None:
    verify_response(resp, sent.headers, SIGNER.public_key, now)


def test_signed_response_verifies_and_covers_the_request_signature() -> None:
    """A response signed for a request verifies against that request's headers."""
    sent = signed()
    resp = answer(verify(sent))
    assert resp.headers["signature-input"].startswith(
        'sig1=("@status" "content-digest" "signature";req;key="sig1");created=')
    check_answer(resp, sent)


def test_response_component_value_is_the_request_signature_member() -> None:
    """"signature";req;key=label resolves to the request's Signature member serialization."""
    sent = signed()
    resp = HttpResponse(200, Headers(), b"")
    value = component_value(parse_component_id('"signature";req;key="sig1"'), resp, sent.headers)
    assert value == sent.headers["signature"].removeprefix("sig1=")


def _unsigned(sent: HttpMessage) -> HttpResponse:
    return HttpResponse(200, Headers({"Content-Type": "application/json"}), b"{}")


def _wrong_key(sent: HttpMessage) -> HttpResponse:
    return answer(verify(sent), key=MALLORY)


def _wrong_keyid(sent: HttpMessage) -> HttpResponse:
    return answer(verify(sent), keyid="watcher")


def _stale(sent: HttpMessage) -> HttpResponse:
    return answer(verify(sent), now=NOW - timedelta(seconds=31))


def _future(sent: HttpMessage) -> HttpResponse:
    return answer(verify(sent), now=NOW + timedelta(seconds=31))


def _for_other_request(sent: HttpMessage) -> HttpResponse:
    return answer(verify(signed(body=b'{"witness": "bob"}')))


def _old_answer_same_route(sent: HttpMessage) -> HttpResponse:
    # Same method, URI and body as `sent`, only an earlier nonce: the classic replay.
    return answer(verify(signed(now=NOW - timedelta(seconds=5))))


def _body_altered_response(sent: HttpMessage) -> HttpResponse:
    return dataclasses.replace(answer(verify(sent)), body=b'{"state": "refused"}')


def _status_altered(sent: HttpMessage) -> HttpResponse:
    return dataclasses.replace(answer(verify(sent)), status=202)


def _unbound(sent: HttpMessage) -> HttpResponse:
    resp = HttpResponse(200, Headers(), b"{}")
    params = (("created", NOW_S), ("keyid", "signer"), ("alg", "ed25519"))
    out = raw_sign(resp, ("@status", "content-digest"), params, key=SIGNER)
    assert isinstance(out, HttpResponse)
    return out


def _bound_to_missing_label(sent: HttpMessage) -> HttpResponse:
    resp = HttpResponse(200, Headers(), b"{}")
    params = (("created", NOW_S), ("keyid", "signer"))
    other = Headers({"signature": "other=" + sent.headers["signature"].removeprefix("sig1=")})
    out = raw_sign(resp, ("@status", "content-digest", '"signature";req;key="other"'),
                   params, key=SIGNER, sent=other)
    assert isinstance(out, HttpResponse)
    return out


@pytest.mark.parametrize(("tamper", "error"), [
    pytest.param(_unsigned, AuthError, id="unsigned"),
    pytest.param(_wrong_key, AuthError, id="wrong-key"),
    pytest.param(_wrong_keyid, AuthError, id="wrong-keyid"),
    pytest.param(_stale, StaleRequestError, id="stale-31s"),
    pytest.param(_future, StaleRequestError, id="future-31s"),
    pytest.param(_for_other_request, AuthError, id="bound-to-different-request"),
    pytest.param(_old_answer_same_route, AuthError, id="old-answer-for-new-request"),
    pytest.param(_body_altered_response, AuthError, id="body-altered"),
    pytest.param(_status_altered, AuthError, id="status-altered"),
    pytest.param(_unbound, AuthError, id="not-bound-to-request"),
    pytest.param(_bound_to_missing_label, AuthError, id="bound-to-label-never-sent"),
])
def test_rejected_responses(
    tamper: Callable[[HttpMessage], HttpResponse], error: type[Exception]
) -> None:
    """Unsigned, wrongly signed, stale, altered or unbound answers raise the specific error."""
    sent = signed()
    resp = tamper(sent)
    raises_exactly(error, lambda: check_answer(resp, sent))


def test_response_check_needs_the_sent_signature() -> None:
    """Without the Signature we sent, no response can be bound and all are refused."""
    sent = signed()
    resp = answer(verify(sent))
    raises_exactly(AuthError, lambda: verify_response(
        resp, with_fields(sent, signature=None).headers, SIGNER.public_key, NOW))


# --- key files -----------------------------------------------------------------------------


def write(path: Path, data: bytes, mode: int) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


SEED_B64 = base64.b64encode(bytes(range(32))).decode()


def test_generate_keypair_modes_and_round_trip(tmp_path: Path) -> None:
    """generate_keypair writes 0600/0644 files that load back into a matching pair."""
    old_umask = os.umask(0o077)
    try:
        signer = generate_keypair(tmp_path / "w.key", tmp_path / "w.pub")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "w.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "w.pub").stat().st_mode & 0o777 == 0o644
    loaded, public = load_private_key(tmp_path / "w.key"), load_public_key(tmp_path / "w.pub")
    assert loaded.public_key == public == signer.public_key
    assert public.verify(b"m", loaded.sign(b"m"))


@pytest.mark.parametrize("existing", ["w.key", "w.pub"])
def test_generate_keypair_never_overwrites(tmp_path: Path, existing: str) -> None:
    """An existing private or public key file is never replaced, and no half pair is left."""
    (tmp_path / existing).write_text("keep me\n")
    error = raises_exactly(ConfigError, lambda: generate_keypair(
        tmp_path / "w.key", tmp_path / "w.pub"))
    assert existing in str(error)
    assert (tmp_path / existing).read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_load_private_key_accepts_strict_modes(tmp_path: Path) -> None:
    """Mode 0600 and 0400 key files with or without a trailing newline load."""
    for mode, text in ((0o600, SEED_B64 + "\n"), (0o400, SEED_B64)):
        path = write(tmp_path / f"k{mode:o}", text.encode(), mode)
        assert load_private_key(path).public_key == WATCHER.public_key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o660])
def test_load_private_key_refuses_group_or_other_bits(tmp_path: Path, mode: int) -> None:
    """A private key readable or writable by group/others is refused, naming the file."""
    path = write(tmp_path / "w.key", SEED_B64.encode(), mode)
    assert str(path) in str(raises_exactly(ConfigError, lambda: load_private_key(path)))


@pytest.mark.parametrize("content", [
    pytest.param(b"", id="empty"),
    pytest.param(b"not base64 at all!!\n", id="not-base64"),
    pytest.param(base64.b64encode(b"k" * 31) + b"\n", id="31-bytes"),
    pytest.param(base64.b64encode(b"k" * 64) + b"\n", id="64-bytes"),
    pytest.param(SEED_B64.encode() + b"\n" + SEED_B64.encode() + b"\n", id="two-lines"),
    pytest.param(b"\xff" + SEED_B64.encode()[1:], id="binary"),
    pytest.param(SEED_B64.encode() * 40, id="huge"),
])
def test_malformed_private_key_is_refused_without_echoing_it(
    tmp_path: Path, content: bytes
) -> None:
    """A malformed private key file is a ConfigError that quotes none of its content."""
    path = write(tmp_path / "w.key", content, 0o600)
    error = raises_exactly(ConfigError, lambda: load_private_key(path))
    assert str(path) in str(error)
    assert SEED_B64[:8] not in str(error)
    assert error.__cause__ is None


@pytest.mark.parametrize(("content", "mode"), [
    pytest.param(b"AAAA\n", 0o644, id="short"),
    pytest.param(WATCHER.public_key.to_base64().encode(), 0o646, id="world-writable"),
])
def test_bad_public_key_files_are_refused(tmp_path: Path, content: bytes, mode: int) -> None:
    """A malformed or world-writable public key file is a ConfigError naming the file."""
    path = write(tmp_path / "w.pub", content, mode)
    assert str(path) in str(raises_exactly(ConfigError, lambda: load_public_key(path)))


def test_missing_or_non_regular_key_files_are_refused(tmp_path: Path) -> None:
    """A missing path or a directory is a ConfigError, not an OSError."""
    raises_exactly(ConfigError, lambda: load_private_key(tmp_path / "absent.key"))
    (tmp_path / "dir.key").mkdir(mode=0o700)
    raises_exactly(ConfigError, lambda: load_private_key(tmp_path / "dir.key"))


def test_private_key_never_shows_its_seed() -> None:
    """repr, str and pickling of a private key never reveal the seed."""
    seed_forms = (SEED_B64, bytes(range(32)).hex(), repr(bytes(range(32))))
    for shown in (repr(WATCHER), str(WATCHER), f"{WATCHER}"):
        assert "redacted" in shown
        assert WATCHER.public_key.to_base64() in shown
        assert not any(form in shown for form in seed_forms)
    with pytest.raises(TypeError):
        pickle.dumps(WATCHER)


@pytest.mark.parametrize("raw", [b"", b"x" * 31, b"x" * 33])
def test_key_constructors_check_length(raw: bytes) -> None:
    """Seeds and public keys must be exactly 32 bytes."""
    raises_exactly(ConfigError, lambda: Ed25519Signer(raw))
    raises_exactly(ConfigError, lambda: Ed25519PublicKey(raw))


# --- edges of the crypto-free half (each pinned after a surviving mutant) ------------------


def test_headers_trim_only_spaces_and_tabs() -> None:
    """Field values lose surrounding SP and HTAB only (RFC 9421 2.1), nothing else."""
    fields = Headers({"A": " \tXy X\t ", "B": "v\x0b", "C": "\x0cv"})
    assert (fields["a"], fields["b"], fields["c"]) == ("Xy X", "v\x0b", "\x0cv")


def test_headers_replacing_is_case_insensitive() -> None:
    """replacing() overwrites the field whatever the case of its name, keeping one entry."""
    fields = Headers({"Content-Digest": "old", "X": "1"}).replacing("CONTENT-DIGEST", "new")
    assert dict(fields) == {"content-digest": "new", "x": "1"}


def test_messages_coerce_plain_headers_and_bodies() -> None:
    """HttpMessage/HttpResponse turn a plain dict and a bytearray into Headers and bytes."""
    msg = HttpMessage("POST", URL, {"X-A": "1"}, bytearray(b"xy"))  # type: ignore[arg-type]
    resp = HttpResponse(200, {"X-B": "2"}, memoryview(b"z"))  # type: ignore[arg-type]
    assert isinstance(msg.headers, Headers)
    assert msg.headers["x-a"] == "1"
    assert type(msg.body) is bytes
    assert msg.body == b"xy"
    assert isinstance(resp.headers, Headers)
    assert resp.headers["x-b"] == "2"
    assert type(resp.body) is bytes
    assert resp.body == b"z"


@pytest.mark.parametrize(("status", "ok"), [(99, False), (100, True), (999, True), (1000, False)])
def test_status_component_range(status: int, ok: bool) -> None:
    """"@status" resolves for three-digit codes only."""
    resp = HttpResponse(status, Headers())
    if ok:
        assert component_value(Item("@status"), resp) == str(status)
    else:
        raises_exactly(AuthError, lambda: component_value(Item("@status"), resp))


SENT = Headers({"signature": "sig1=:" + "A" * 86 + "==:"})


@pytest.mark.parametrize(("component", "msg", "request_fields"), [
    pytest.param(Item("@method"), HttpResponse(200, Headers()), None, id="method-on-response"),
    pytest.param(Item("@status", (("key", "a"),)), HttpResponse(200, Headers()), None,
                 id="key-on-derived"),
    pytest.param(Item("Content-Type"), request(), None, id="uppercase-field-name"),
    pytest.param(Item(""), request(), None, id="empty-name"),
    pytest.param(Item(1), request(), None, id="integer-name"),
    pytest.param(Item(b"x"), request(), None, id="bytes-name"),
    pytest.param(Item("signature", (("req", True), ("key", "sig1"))),
                 HttpResponse(200, Headers()), None, id="req-without-request"),
    pytest.param(Item("signature", (("req", True), ("key", "sig1"))), request(), SENT,
                 id="req-on-a-request"),
    pytest.param(Item("signature", (("req", False), ("key", "sig1"))),
                 HttpResponse(200, Headers()), SENT, id="req-false"),
    pytest.param(Item("signature", (("req", True), ("key", "absent"))),
                 HttpResponse(200, Headers()), SENT, id="absent-member"),
    pytest.param(Item("signature", (("req", True), ("key", 1))),
                 HttpResponse(200, Headers()), SENT, id="non-string-member-key"),
])
def test_unresolvable_component_raises_auth_error(
        component: Item, msg: HttpMessage | HttpResponse, request_fields: Headers | None) -> None:
    """Each component that cannot be resolved raises AuthError itself, called directly."""
    raises_exactly(AuthError, lambda: component_value(component, msg, request_fields))


@pytest.mark.parametrize("fields", [
    pytest.param({"signature-input": 'sig1=();keyid="watcher"'}, id="signature-missing"),
    pytest.param({"signature": "sig1=:" + "A" * 86 + "==:"}, id="signature-input-missing"),
])
def test_select_signature_needs_both_fields(fields: dict[str, str]) -> None:
    """Without either Signature-Input or Signature, selection raises AuthError itself."""
    raises_exactly(AuthError, lambda: select_signature(Headers(fields), "watcher".__eq__))


def test_every_signature_member_must_be_bytes() -> None:
    """A genuine request whose Signature also carries a non-byte member is refused."""
    msg = signed()
    verify(msg)
    for extra in ("other=1", 'other="x"', "other=(:AA==:)"):
        tampered = with_fields(msg, signature=msg.headers["signature"] + ", " + extra)
        raises_exactly(AuthError, lambda m=tampered: verify(m))  # type: ignore[misc]


@pytest.mark.parametrize(("params", "error"), [
    pytest.param((("created", "1"), ("nonce", NONCE)), AuthError, id="created-string"),
    pytest.param((("created", True), ("nonce", NONCE)), AuthError, id="created-boolean"),
    pytest.param((("created", NOW_S), ("nonce", NONCE), ("expires", NOW_S - 1)),
                 StaleRequestError, id="expired-one-second-ago"),
    pytest.param((("created", NOW_S), ("nonce", NONCE), ("expires", "x")),
                 StaleRequestError, id="expires-not-an-integer"),
])
def test_check_params_refusals(params: tuple[tuple[str, object], ...],
                               error: type[Exception]) -> None:
    """created must be an integer (not a boolean); expires an integer not in the past."""
    raises_exactly(error, lambda: check_params(params, NOW_S, 30, need_nonce=True))  # type: ignore[arg-type]


@pytest.mark.parametrize("expires", [NOW_S, NOW_S + 10])
def test_check_params_accepts_expires_now_or_later(expires: int) -> None:
    """An expires of now or later is accepted, and created and nonce are returned."""
    params = (("created", NOW_S), ("nonce", NONCE), ("expires", expires))
    assert check_params(params, NOW_S, 30, need_nonce=True) == (NOW_S, NONCE)


@pytest.mark.parametrize("value", ["sha-256=abc", 'sha-256="x"', "sha-256=(:AA==:)",
                                   f"sha-256=:{SHA256}:, sha-512=abc"])
def test_digest_members_must_be_byte_sequences(value: str) -> None:
    """A sha-256 or sha-512 member that is not a byte sequence raises AuthError itself."""
    raises_exactly(AuthError, lambda: check_content_digest(value, BODY))


# --- edges of the keyed half (each pinned after a surviving mutant) ------------------------


def test_public_keys_compare_and_hash_by_value() -> None:
    """Equal keys are equal and hash alike; different keys are different."""
    again = Ed25519PublicKey(WATCHER.public_key.raw)
    assert again == WATCHER.public_key
    assert hash(again) == hash(WATCHER.public_key)
    assert len({again, WATCHER.public_key, SIGNER.public_key}) == 2
    assert WATCHER.public_key != SIGNER.public_key
    assert WATCHER.public_key != WATCHER.public_key.raw


def test_key_files_with_crlf_line_ending_load(tmp_path: Path) -> None:
    """A key file written with a CRLF line ending (an editor on Windows) still loads."""
    private = write(tmp_path / "w.key", (SEED_B64 + "\r\n").encode(), 0o600)
    public = write(tmp_path / "w.pub", (WATCHER.public_key.to_base64() + "\r\n").encode(), 0o644)
    assert load_private_key(private).public_key == WATCHER.public_key
    assert load_public_key(public) == WATCHER.public_key


@pytest.mark.parametrize("mode", [0o644, 0o755, 0o645, 0o444])
def test_public_key_may_be_readable_and_executable(tmp_path: Path, mode: int) -> None:
    """A public key file is refused only when others may write it, not for r or x bits."""
    path = write(tmp_path / "w.pub", WATCHER.public_key.to_base64().encode(), mode)
    assert load_public_key(path) == WATCHER.public_key


def test_generate_keypair_cleans_up_when_the_public_file_fails(tmp_path: Path) -> None:
    """If the public file cannot be created, the private one is removed and ConfigError raised."""
    with pytest.raises(ConfigError) as caught:
        generate_keypair(tmp_path / "w.key", tmp_path / "missing-dir" / "w.pub")
    assert "cannot create key file" in str(caught.value)
    assert not (tmp_path / "w.key").exists()


def test_signed_headers_for_names_and_explicit_nonce() -> None:
    """signed_headers_for returns exactly the four canonical names and uses a given nonce."""
    headers = signed_headers_for("POST", URL, BODY, "application/json", WATCHER, "watcher", NOW,
                                 nonce=NONCE)
    assert set(headers) == {"Content-Type", "Content-Digest", "Signature-Input", "Signature"}
    assert f';nonce="{NONCE}";' in headers["Signature-Input"]


def test_verified_request_carries_method_and_target() -> None:
    """The VerifiedRequest names the method and target URI that were verified."""
    verified = verify(signed())
    assert (verified.method, verified.target_uri, verified.body) == ("POST", URL, BODY)


def test_sign_response_uses_a_given_nonce() -> None:
    """sign_response puts an explicit nonce into the answer's Signature-Input."""
    resp = HttpResponse(200, Headers(), b"{}")
    added = sign_response(resp, verify(signed()), SIGNER, NOW, nonce=NONCE)
    assert f';nonce="{NONCE}";' in added["Signature-Input"]


def test_answer_without_nonce_is_accepted() -> None:
    """An answer bound to our request needs created but no nonce of its own (RFC 9421 2.3)."""
    sent = signed()
    resp = raw_sign(HttpResponse(200, Headers(), b"{}"),
                    ("@status", "content-digest", '"signature";req;key="sig1"'),
                    (("created", NOW_S), ("keyid", "signer"), ("alg", "ed25519")),
                    key=SIGNER, sent=sent.headers)
    assert isinstance(resp, HttpResponse)
    check_answer(resp, sent)


@pytest.mark.parametrize("binding", [
    pytest.param('"signature-input";req;key="sig1"', id="request-signature-input-member"),
    pytest.param('"content-digest";req', id="request-digest"),
    pytest.param('"signature";key="sig1"', id="signature-without-req"),
])
def test_answer_bound_to_anything_but_our_signature_is_refused(binding: str) -> None:
    """An answer must cover our request's Signature member; other request parts do not bind."""
    sent = signed()
    resp = HttpResponse(200, Headers({"signature": "sig1=:" + "A" * 86 + "==:"}), b"{}")
    out = raw_sign(resp, ("@status", "content-digest", binding),
                   (("created", NOW_S), ("keyid", "signer")), key=SIGNER, sent=sent.headers)
    assert isinstance(out, HttpResponse)
    raises_exactly(AuthError, lambda: check_answer(out, sent))
