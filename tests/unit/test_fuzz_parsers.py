"""Fuzz every parser the network reaches: only the project's typed errors ever escape.

Structured fields, ``Signature-Input``/``Signature`` selection and parameters,
``Content-Digest``, whole-request and whole-response verification, and the signer's
JSON body parsers, each fed grammar-aware garbage (tokens of its own syntax spliced
together) as well as arbitrary text and bytes. Bounded: a few seconds in all.
``bench/fuzz_parsers.py`` runs the same kind of inputs for minutes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import AuthError, RequestInvalidError
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
    check_content_digest,
    check_params,
    component_value,
    parse_component_id,
    parse_dictionary,
    select_signature,
    serialize_member,
)
from signer.messages import parse_failover, parse_json_object, parse_verdict

NOW = datetime(2025, 11, 25, 12, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
WATCHER = Ed25519Signer(bytes(range(32)))
SIGNER = Ed25519Signer(bytes(range(32, 64)))
KEYS = {"watcher": WATCHER.public_key}
URL = "http://127.0.0.1:8081/v1/failover"
BODY = json.dumps({"witness": "alice", "failing_key": "STM" + "5" * 50,
                   "observed_total_missed": 12, "reason": "fuzz"}).encode()
_REQUEST = HttpMessage("POST", URL, Headers({"Content-Type": "application/json"}), BODY)
SIGNED = dataclasses.replace(_REQUEST, headers=Headers(
    dict(_REQUEST.headers) | sign_request(_REQUEST, WATCHER, "watcher", NOW)))
VERIFIED = verify_request(SIGNED, KEYS, MemoryNonceStore(), NOW)
_ANSWER = HttpResponse(200, Headers({"Content-Type": "application/json"}), b'{"state":"x"}')
ANSWER = dataclasses.replace(_ANSWER, headers=Headers(
    dict(_ANSWER.headers) | sign_response(_ANSWER, VERIFIED, SIGNER, NOW)))

# Pieces of the structured-field and signature grammar, so that spliced text reaches
# deep parser states (inner lists, parameters, byte sequences) instead of failing at
# the first character.
_SF_TOKENS = ["sig1", "sig2", "=", "(", ")", ";", ",", " ", "\t", '"', "\\", ":", "?0", "?1",
              "-", "*", "0", "1", "16", "9" * 16, ".", "created", "nonce", "keyid", "alg",
              "expires", "req", "key", '"@method"', '"@path"', '"content-digest"',
              '"signature"', "ed25519", '"watcher"', "AAAA", "=:", ":AA==:", "sha-256",
              "sha-512", "\u00e9", "\x00", "A" * 86 + "==", "@status"]
SF_TEXT = st.lists(st.sampled_from(_SF_TOKENS), max_size=40).map("".join)
ANY_TEXT = st.text(max_size=300)


def _spliced(original: str) -> st.SearchStrategy[str]:
    """``original`` with a few grammar tokens inserted, replaced or deleted."""
    @st.composite
    def build(draw: st.DrawFn) -> str:
        text = original
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(text)))
            cut = draw(st.integers(0, 6))
            text = text[:at] + draw(SF_TEXT.filter(lambda s: len(s) < 20)) + text[at + cut:]
        return text
    return build()


def only_typed(error: type[Exception], check: Callable[[], object]) -> None:
    """Run ``check``: it returns, or raises ``error`` (or a subclass), nothing else."""
    with contextlib.suppress(error):
        check()


@settings(max_examples=200, deadline=None)
@given(text=SF_TEXT | ANY_TEXT)
def test_structured_fields_raise_only_auth_error(text: str) -> None:
    """parse_dictionary and parse_component_id raise AuthError or parse; nothing else."""
    only_typed(AuthError, lambda: parse_dictionary(text))
    only_typed(AuthError, lambda: parse_component_id(text))


@settings(max_examples=100, deadline=None)
@given(signature_input=_spliced(SIGNED.headers["signature-input"]) | SF_TEXT,
       signature=_spliced(SIGNED.headers["signature"]) | SF_TEXT)
def test_signature_selection_and_parameters_raise_only_auth_error(
        signature_input: str, signature: str) -> None:
    """Mangled Signature-Input/Signature pairs: selection and parameter checks raise AuthError."""
    fields = Headers({"signature-input": signature_input, "signature": signature})

    def check() -> None:
        chosen = select_signature(fields, lambda keyid: keyid == "watcher")
        check_params(chosen.covered.params, NOW_S, 30, need_nonce=True)
        for component in chosen.covered.items:
            component_value(component, SIGNED)

    only_typed(AuthError, check)


@settings(max_examples=100, deadline=None)
@given(value=_spliced(SIGNED.headers["content-digest"]) | SF_TEXT | ANY_TEXT,
       body=st.binary(max_size=64))
def test_content_digest_raises_only_auth_error(value: str, body: bytes) -> None:
    """Any Content-Digest value against any body: a match, or AuthError."""
    only_typed(AuthError, lambda: check_content_digest(value, body))


_FIELDS = ("signature-input", "signature", "content-digest", "content-type")


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(_FIELDS), data=st.data(), body=st.none() | st.binary(max_size=64))
def test_whole_request_verification_raises_only_auth_error(
        field: str, data: st.DataObject, body: bytes | None) -> None:
    """A genuine request with one field mangled (and maybe its body swapped): AuthError only."""
    fields = dict(SIGNED.headers)
    fields[field] = data.draw(_spliced(fields[field]) | SF_TEXT)
    msg = dataclasses.replace(SIGNED, headers=Headers(fields),
                              body=SIGNED.body if body is None else body)
    only_typed(AuthError, lambda: verify_request(msg, KEYS, MemoryNonceStore(), NOW))


@settings(max_examples=80, deadline=None)
@given(field=st.sampled_from(("signature-input", "signature", "content-digest")),
       data=st.data(), status=st.integers(-1000, 100_000))
def test_whole_response_verification_raises_only_auth_error(
        field: str, data: st.DataObject, status: int) -> None:
    """A genuine answer with one field mangled and any status code: AuthError only."""
    fields = dict(ANSWER.headers)
    fields[field] = data.draw(_spliced(fields[field]) | SF_TEXT)
    resp = dataclasses.replace(ANSWER, status=status, headers=Headers(fields))
    only_typed(AuthError, lambda: verify_response(resp, SIGNED.headers, SIGNER.public_key, NOW))


# ---- the JSON body: parsed only after verification, but a client key can be stolen -------

_JSON_LEAF = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
              | st.text(max_size=60))
_JSON = st.recursive(_JSON_LEAF, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=15)
_FAILOVER_VALUES = st.one_of(
    _JSON_LEAF, st.sampled_from(["alice", "STM" + "5" * 50, "5H" + "x" * 49, "a" * 201,
                                 "r\x00", 2**63, -1, True, "0123456789abcdef"]))


@st.composite
def failover_docs(draw: st.DrawFn) -> bytes:
    """Bodies near the schema: the right names with any values, plus stray names."""
    names = draw(st.lists(st.sampled_from(["witness", "failing_key", "observed_total_missed",
                                           "reason", "target_key", "dry_run", "request_id",
                                           "extra"]), max_size=8, unique=True))
    return json.dumps({name: draw(_FAILOVER_VALUES) for name in names}).encode()


_RAW_JSON = st.one_of(
    st.binary(max_size=300),
    _JSON.map(lambda doc: json.dumps(doc).encode()),
    failover_docs(),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 3000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.sampled_from([b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1, "a": 2}', b"\xff\xfe",
                     b'{"a": 1e999}', b'"\\ud800"', b"", b" ", b"{}" * 2]),
)


@settings(max_examples=150, deadline=None)
@given(body=_RAW_JSON)
def test_json_body_parsers_raise_only_request_invalid(body: bytes) -> None:
    """parse_json_object, parse_failover and parse_verdict raise RequestInvalidError only."""
    statuses = set()
    for parse in (parse_json_object, parse_failover, parse_verdict):
        try:
            parse(body)
        except RequestInvalidError as e:
            statuses.add(e.status)
    assert statuses <= {422}


@pytest.mark.parametrize("depth", [10, 5000, 100_000])
def test_deeply_nested_json_is_a_422(depth: int) -> None:
    """Nesting deep enough to exhaust the recursion limit is a 422, not a crash."""
    with pytest.raises(RequestInvalidError):
        parse_failover(b"[" * depth + b"]" * depth)


def test_fuzzed_inputs_are_not_trivially_refused() -> None:
    """The splicing keeps some inputs valid enough to pass the parser (it reaches deep)."""
    parsed = 0
    for seed_text in (SIGNED.headers["signature-input"], SIGNED.headers["signature"]):
        for cut in range(len(seed_text)):
            try:
                parse_dictionary(seed_text[:cut] + " " + seed_text[cut:])
                parsed += 1
            except AuthError:
                pass
    assert parsed > 5
    assert serialize_member(parse_dictionary(SIGNED.headers["signature"])["sig1"])
