"""Fuzz the parsers the network reaches for a while; prints one JSON object with counts.

Run: ``.venv/bin/python bench/fuzz_parsers.py --seconds 300``. The time is split evenly
between the targets: structured fields, signature selection and parameters,
``Content-Digest``, whole-request and whole-response verification, and the signer's
JSON body parsers. Inputs come from Hypothesis (grammar tokens spliced into genuine
headers, arbitrary text and bytes, near-schema JSON), in batches with fresh seeds.
Each target may raise only the project's typed error for it (AuthError, or
RequestInvalidError with status 422); anything else is an escape, listed in the output,
and the exit status is 1. ``tests/unit/test_fuzz_parsers.py`` is the bounded version.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared.errors import AuthError, FailoverError, RequestInvalidError
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
)
from signer.messages import parse_failover, parse_json_object, parse_verdict

NOW = datetime(2025, 11, 25, 12, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
WATCHER, SIGNER = Ed25519Signer(bytes(range(32))), Ed25519Signer(bytes(range(32, 64)))
KEYS = {"watcher": WATCHER.public_key}
URL = "http://127.0.0.1:8081/v1/failover"
BODY = json.dumps({"witness": "alice", "failing_key": "STM" + "5" * 50,
                   "observed_total_missed": 12, "reason": "fuzz"}).encode()
_REQ = HttpMessage("POST", URL, Headers({"Content-Type": "application/json"}), BODY)
SIGNED = dataclasses.replace(_REQ, headers=Headers(
    dict(_REQ.headers) | sign_request(_REQ, WATCHER, "watcher", NOW)))
VERIFIED = verify_request(SIGNED, KEYS, MemoryNonceStore(), NOW)
_ANS = HttpResponse(200, Headers({"Content-Type": "application/json"}), b'{"state":"x"}')
ANSWER = dataclasses.replace(_ANS, headers=Headers(
    dict(_ANS.headers) | sign_response(_ANS, VERIFIED, SIGNER, NOW)))

_SF_TOKENS = ["sig1", "sig2", "=", "(", ")", ";", ",", " ", "\t", '"', "\\", ":", "?0", "?1",
              "-", "*", "0", "1", "9" * 16, ".", "created", "nonce", "keyid", "alg", "expires",
              "req", "key", '"@method"', '"@path"', '"content-digest"', '"signature"',
              "ed25519", '"watcher"', "AAAA", "=:", ":AA==:", "sha-256", "sha-512", "\u00e9",
              "\x00", "A" * 86 + "==", "@status"]
SF_TEXT = st.lists(st.sampled_from(_SF_TOKENS), max_size=40).map("".join)
ANY_TEXT = st.text(max_size=400)


def spliced(original: str) -> st.SearchStrategy[str]:
    """``original`` with a few grammar tokens inserted, replaced or deleted."""
    @st.composite
    def build(draw: st.DrawFn) -> str:
        text = original
        for _ in range(draw(st.integers(1, 4))):
            at, cut = draw(st.integers(0, len(text))), draw(st.integers(0, 6))
            text = text[:at] + draw(SF_TEXT.filter(lambda s: len(s) < 20)) + text[at + cut:]
        return text
    return build()


def _sfv(text: str) -> None:
    parse_dictionary(text)
    parse_component_id(text)


def _selection(pair: tuple[str, str]) -> None:
    fields = Headers({"signature-input": pair[0], "signature": pair[1]})
    chosen = select_signature(fields, "watcher".__eq__)
    check_params(chosen.covered.params, NOW_S, 30, need_nonce=True)
    for component in chosen.covered.items:
        component_value(component, SIGNED)


def _digest(pair: tuple[str, bytes]) -> None:
    check_content_digest(pair[0], pair[1])


def _request(pair: tuple[str, str]) -> None:
    fields = dict(SIGNED.headers) | {pair[0]: pair[1]}
    verify_request(dataclasses.replace(SIGNED, headers=Headers(fields)), KEYS,
                   MemoryNonceStore(), NOW)


def _response(pair: tuple[str, str]) -> None:
    fields = dict(ANSWER.headers) | {pair[0]: pair[1]}
    verify_response(dataclasses.replace(ANSWER, headers=Headers(fields)), SIGNED.headers,
                    SIGNER.public_key, NOW)


def _json(body: bytes) -> None:
    # The object and verdict parsers must refuse with 422 only; the failover parser's
    # own outcome is what gets counted.
    for parse in (parse_json_object, parse_verdict):
        try:
            parse(body)
        except RequestInvalidError as e:
            if e.status != 422:
                raise AssertionError(f"status {e.status}") from e
    parse_failover(body)


def _field_pair(names: tuple[str, ...], source: Headers) -> st.SearchStrategy[tuple[str, str]]:
    # A value that trims back to the genuine one is no change (RFC 9110 5.5): left out, so
    # that "accepted" counts only changed fields that still verified (it should stay 0).
    return st.sampled_from(names).flatmap(
        lambda name: st.tuples(st.just(name), spliced(source[name]) | SF_TEXT | ANY_TEXT)
    ).filter(lambda pair: pair[1].strip(" \t") != source[pair[0]])


_LEAF = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
         | st.text(max_size=60) | st.sampled_from(["STM" + "5" * 50, "5H" + "x" * 49, 2**63]))
_NAMES = ["witness", "failing_key", "observed_total_missed", "reason", "target_key", "dry_run",
          "request_id", "extra"]
_JSON_BODIES = st.one_of(
    st.binary(max_size=400),
    st.recursive(_LEAF, lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.sampled_from(_NAMES) | st.text(max_size=10), inner,
                                   max_size=8), max_leaves=20).map(
        lambda doc: json.dumps(doc).encode()),
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.sampled_from([b'{"a": NaN}', b'{"a": 1, "a": 2}', b"\xff\xfe", b'{"a": 1e999}', b""]),
)

TARGETS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], None], type[FailoverError]]] = {
    "structured_fields": (SF_TEXT | ANY_TEXT, _sfv, AuthError),
    "signature_selection": (st.tuples(spliced(SIGNED.headers["signature-input"]) | SF_TEXT,
                                      spliced(SIGNED.headers["signature"]) | SF_TEXT),
                            _selection, AuthError),
    "content_digest": (st.tuples(spliced(SIGNED.headers["content-digest"]) | SF_TEXT | ANY_TEXT,
                                 st.binary(max_size=64)), _digest, AuthError),
    "verify_request": (_field_pair(("signature-input", "signature", "content-digest",
                                    "content-type"), SIGNED.headers), _request, AuthError),
    "verify_response": (_field_pair(("signature-input", "signature", "content-digest"),
                                    ANSWER.headers), _response, AuthError),
    "json_body": (_JSON_BODIES, _json, RequestInvalidError),
}


def fuzz(name: str, seconds: float, batch: int) -> dict[str, Any]:
    """Run one target for ``seconds``; outcome counts and any escaped exceptions."""
    strategy, target, allowed = TARGETS[name]
    outcomes: Counter[str] = Counter()
    escapes: list[dict[str, str]] = []

    @settings(max_examples=batch, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(value: Any) -> None:
        try:
            target(value)
            outcomes["accepted"] += 1
        except allowed as e:
            outcomes[type(e).__name__] += 1
        except Exception as e:  # noqa: BLE001 - an escape is what this script looks for
            outcomes["ESCAPED"] += 1
            if len(escapes) < 20:
                escapes.append({"error": f"{type(e).__name__}: {e}"[:200],
                                "input": repr(value)[:300]})

    start = time.monotonic()
    while time.monotonic() - start < seconds:
        run()
    elapsed = time.monotonic() - start
    examples = sum(outcomes.values())
    return {"examples": examples, "seconds": round(elapsed, 1),
            "per_second": round(examples / elapsed), "outcomes": dict(outcomes.most_common()),
            "escapes": escapes}


def main(argv: list[str] | None = None) -> int:
    """Fuzz every target; print the JSON report; exit 1 if anything escaped."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="total time (default 60)")
    parser.add_argument("--batch", type=int, default=100, help="examples per Hypothesis run")
    parser.add_argument("--only", choices=sorted(TARGETS), action="append",
                        help="fuzz only this target (repeatable)")
    args = parser.parse_args(argv)
    names = args.only or list(TARGETS)
    results = {name: fuzz(name, args.seconds / len(names), args.batch) for name in names}
    report = {"benchmark": "fuzz_parsers", "seconds": args.seconds,
              "examples": sum(r["examples"] for r in results.values()),
              "escaped": sum(r["outcomes"].get("ESCAPED", 0) for r in results.values()),
              "targets": results}
    print(json.dumps(report, indent=2))
    return 1 if report["escaped"] else 0


if __name__ == "__main__":
    sys.exit(main())
