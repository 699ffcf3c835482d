"""Property tests for the signing profile: tampering, garbage input and round trips."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import AuthError
from shared.httpsig import (
    Ed25519Signer,
    Headers,
    HttpMessage,
    HttpResponse,
    MemoryNonceStore,
    sign_request,
    sign_response,
    verify_request,
    verify_response,
)
from shared.httpsig_base import (
    BareItem,
    InnerList,
    Item,
    Member,
    Token,
    parse_dictionary,
    serialize_member,
)

NOW = datetime(2025, 11, 25, 12, 0, 0, tzinfo=UTC)
WATCHER = Ed25519Signer(bytes(range(32)))
SIGNER = Ed25519Signer(bytes(range(32, 64)))
KEYS = {"watcher": WATCHER.public_key}
URL = "http://signer.example:8081/v1/failover?dry_run=0"
BODY = b'{"witness": "alice", "observed_total_missed": 12, "dry_run": false}'
# The verifier's last-resort translation of unexpected exceptions; the parser itself
# should never need it, so properties also assert it was not reached.
SAFETY_NET = "malformed signature headers"
SIGNATURE_FIELDS = ("content-digest", "signature-input", "signature", "content-type")
SF_ALPHABET = 'sig1=():;"?*-0123456789abcAZ@ ,\\\t+/.é\x00'


def _sign(msg: HttpMessage) -> HttpMessage:
    added = sign_request(msg, WATCHER, "watcher", NOW, nonce="n" * 32)
    return dataclasses.replace(msg, headers=Headers(dict(msg.headers) | added))


SIGNED = _sign(HttpMessage("POST", URL, Headers({"Content-Type": "application/json"}), BODY))
VERIFIED = verify_request(SIGNED, KEYS, MemoryNonceStore(), NOW)
_RESP = HttpResponse(200, Headers({"Content-Type": "application/json"}), b'{"state": "pending"}')
ANSWER = dataclasses.replace(_RESP, headers=Headers(
    dict(_RESP.headers) | sign_response(_RESP, VERIFIED, SIGNER, NOW, nonce="r" * 32)))


def _verify(msg: HttpMessage) -> None:
    verify_request(msg, KEYS, MemoryNonceStore(), NOW)


def _assert_auth_error(fn: object, *args: object) -> None:
    with pytest.raises(AuthError) as caught:
        fn(*args)  # type: ignore[operator]
    assert str(caught.value) != SAFETY_NET, repr(caught.value.__cause__)


@st.composite
def _changed_text(draw: st.DrawFn, original: str) -> str:
    index = draw(st.integers(0, len(original) - 1))
    char = draw(st.characters().filter(lambda c: c != original[index]))
    return original[:index] + char + original[index + 1:]


@st.composite
def _single_change(draw: st.DrawFn) -> HttpMessage:
    part = draw(st.sampled_from(("method", "target_uri", "body", *SIGNATURE_FIELDS)))
    if part == "body":
        index = draw(st.integers(0, len(BODY) - 1))
        byte = draw(st.integers(0, 255).filter(lambda b: b != BODY[index]))
        return dataclasses.replace(SIGNED, body=BODY[:index] + bytes([byte]) + BODY[index + 1:])
    if part == "method":
        return dataclasses.replace(SIGNED, method=draw(_changed_text(SIGNED.method)))
    if part == "target_uri":
        return dataclasses.replace(SIGNED, target_uri=draw(_changed_text(SIGNED.target_uri)))
    fields = dict(SIGNED.headers)
    fields[part] = draw(_changed_text(fields[part]))
    return dataclasses.replace(SIGNED, headers=Headers(fields))


@settings(max_examples=400, deadline=None)
@given(_single_change())
def test_any_single_change_to_a_signed_request_is_rejected(msg: HttpMessage) -> None:
    """Changing one byte of method, URI, body or any signed/signature field fails with AuthError."""
    _assert_auth_error(_verify, msg)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(("content-digest", "signature-input", "signature", "status")), st.data())
def test_any_single_change_to_a_signed_response_is_rejected(part: str, data: st.DataObject) -> None:
    """Changing one byte of a signed response's status, digest or signature fields fails."""
    if part == "status":
        resp = dataclasses.replace(ANSWER, status=data.draw(st.integers(100, 999).filter(
            lambda s: s != ANSWER.status)))
    else:
        fields = dict(ANSWER.headers)
        fields[part] = data.draw(_changed_text(fields[part]))
        resp = dataclasses.replace(ANSWER, headers=Headers(fields))
    _assert_auth_error(verify_response, resp, SIGNED.headers, SIGNER.public_key, NOW)


_GARBAGE = st.one_of(st.text(max_size=300), st.text(alphabet=SF_ALPHABET, max_size=300))


@st.composite
def _mangled(draw: st.DrawFn, original: str) -> str:
    """A few random inserts, deletions and replacements: garbage that parses a long way."""
    text = original
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + draw(st.text(alphabet=SF_ALPHABET, max_size=3)) + text[at + cut:]
    return text


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SIGNATURE_FIELDS), st.data())
def test_garbage_header_values_only_ever_raise_auth_error(
    field: str, data: st.DataObject
) -> None:
    """Arbitrary or mangled text in any signature-related field raises AuthError only."""
    fields = dict(SIGNED.headers)
    value = data.draw(_GARBAGE | _mangled(fields[field]))
    if value.strip(" \t") == fields[field]:
        return  # surrounding whitespace is not part of a field value (RFC 9110 5.5)
    fields[field] = value
    _assert_auth_error(_verify, dataclasses.replace(SIGNED, headers=Headers(fields)))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(("method", "target_uri")), st.text(max_size=200))
def test_garbage_method_or_uri_only_ever_raises_auth_error(part: str, value: str) -> None:
    """Arbitrary text as method or target URI raises AuthError and nothing else."""
    changed = (dataclasses.replace(SIGNED, method=value) if part == "method"
               else dataclasses.replace(SIGNED, target_uri=value))
    _assert_auth_error(_verify, changed)


@settings(max_examples=300, deadline=None)
@given(_GARBAGE)
def test_parser_accepts_or_raises_auth_error_and_round_trips(text: str) -> None:
    """parse_dictionary raises only AuthError; whatever it accepts re-serializes to itself."""
    try:
        parsed = parse_dictionary(text)
    except AuthError:
        return
    again = ", ".join(f"{k}={serialize_member(v)}" for k, v in parsed.items())
    assert parse_dictionary(again) == parsed


def _word(first: str, rest: str) -> st.SearchStrategy[str]:
    return st.builds(str.__add__, st.sampled_from(first), st.text(alphabet=rest, max_size=8))


_LC = "abcdefghijklmnopqrstuvwxyz"
_KEYS = _word(_LC + "*", _LC + "0123456789_-.*")
_BARE: st.SearchStrategy[BareItem] = st.one_of(
    st.integers(-(10**15) + 1, 10**15 - 1),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    st.binary(max_size=40),
    st.booleans(),
    _word(_LC + "XYZ*", "!#$%&'*+-.^_`|~09azAZ:/").map(Token),
)
_PARAMS = st.dictionaries(_KEYS, _BARE, max_size=4).map(lambda d: tuple(d.items()))
_ITEM = st.builds(Item, _BARE, _PARAMS)
_MEMBER: st.SearchStrategy[Member] = st.one_of(
    _ITEM, st.builds(InnerList, st.lists(_ITEM, max_size=5).map(tuple), _PARAMS))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_KEYS, _MEMBER, min_size=1, max_size=6))
def test_structured_field_serialize_parse_round_trip(members: dict[str, Member]) -> None:
    """Any dictionary we can serialize parses back to the same values."""
    text = ", ".join(f"{k}={serialize_member(v)}" for k, v in members.items())
    assert parse_dictionary(text) == members


_PATH = st.text(alphabet="abcxyz019-._~%!$&'()*+,;=:@/", max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=2048),
    path=_PATH,
    query=st.none() | st.text(alphabet="abc019=&%+/?", max_size=20),
    method=st.sampled_from(("GET", "POST", "PUT", "DELETE", "PATCH")),
    label=st.from_regex(r"[a-z][a-z0-9_\-.]{0,10}", fullmatch=True),
    keyid=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1),
)
def test_sign_verify_round_trip(
    *, body: bytes, path: str, query: str | None, method: str, label: str, keyid: str
) -> None:
    """Any body, path, query, method, label and keyid signed by us verifies unchanged."""
    url = "http://127.0.0.1:8081/" + path + ("" if query is None else "?" + query)
    msg = HttpMessage(method, url, Headers({"Content-Type": "application/octet-stream"}), body)
    msg = dataclasses.replace(msg, headers=Headers(
        dict(msg.headers) | sign_request(msg, WATCHER, keyid, NOW, label=label)))
    verified = verify_request(msg, {keyid: WATCHER.public_key}, MemoryNonceStore(), NOW)
    assert (verified.body, verified.label, verified.keyid, verified.target_uri) == (
        body, label, keyid, url)
    resp = HttpResponse(200, Headers(), body[::-1])
    resp = dataclasses.replace(resp, headers=Headers(sign_response(resp, verified, SIGNER, NOW)))
    verify_response(resp, msg.headers, SIGNER.public_key, NOW)
