"""Why an answer from the signer was not accepted, in words an operator can act on; pure.

The watcher trusts only answers the signer signed for its very request. When one
does not verify, this module tells the likely causes apart from what arrived:

- a signer's 401 with a reason (:mod:`shared.authhint`): unknown keyid or wrong key
  pair, clock skew (with the skew computed from the answer's ``Date``), a changed
  body, a replay, mangled signature headers;
- an answer that is not a witness-signer's at all (HTML, a 404, no JSON ``error``,
  no signature): the configured URL is wrong;
- a signed answer that is stale (clock skew again) or does not verify.

SECURITY: a 401 is unsigned, so its reason and its ``Date`` are hints anyone on the
path could forge. They choose the words shown to a human and nothing else: every
case is still an :class:`~watcher.signer_client.UntrustedAnswerError`, handled
exactly as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

from shared import httpsig_base as base
from shared.authhint import REASON_FIELD, REASONS
from shared.errors import AuthError, StaleRequestError


@dataclass(frozen=True)
class Received:
    """An answer as it arrived: status, header fields (any case), body bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    @property
    def signed(self) -> bool:
        """Whether it carries RFC 9421 signature fields at all."""
        return self.header("signature") is not None or self.header("signature-input") is not None

    def json_error(self) -> Mapping[str, object] | None:
        """The body as a JSON object with a string ``error`` (a signer's error shape), or None."""
        ctype = (self.header("content-type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return None
        try:
            doc = json.loads(self.body)
        except ValueError:
            return None
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc
        return None


@dataclass(frozen=True)
class Context:
    """What the watcher knows about its own side of the exchange."""

    method: str
    url: str
    keyid: str
    public_key_b64: str  # this watcher's request key, public half (safe to show)
    now: datetime
    max_skew: timedelta


def skew_of(answer: Received, now: datetime) -> float | None:
    """Seconds the answer's ``Date`` is ahead of ``now`` (negative: behind), or None."""
    value = answer.header("date")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return (when - now).total_seconds()


def signed_skew_of(answer: Received, now: datetime, keyid: str = "signer") -> float | None:
    """Seconds the answer's signed ``created`` is ahead of ``now``, or None if unreadable."""
    try:
        chosen = base.select_signature(base.Headers(answer.headers), keyid.__eq__)
        created = base.param(chosen.covered.params, "created")
    except (AuthError, ValueError, LookupError, TypeError):
        return None
    if not isinstance(created, int) or isinstance(created, bool):
        return None
    return created - now.timestamp()


def _clock_words(skew: float | None, ctx: Context, whose: str) -> str:
    allowed = f"{ctx.max_skew.total_seconds():g} s"
    if skew is None or abs(skew) <= ctx.max_skew.total_seconds():
        return (f"clock skew: {whose} is outside the allowed {allowed} of the other side's "
                "clock — sync both hosts' clocks (NTP/chrony)")
    return (f"clock skew: the signer's clock differs from this host's by {skew:+.0f} s, "
            f"more than the allowed {allowed} — sync both hosts' clocks (NTP/chrony)")


def _refusal(reason: str | None, answer: Received, ctx: Context) -> str:
    """The words for a signer's 401 carrying ``reason`` (None: an older signer gave none)."""
    hint = f"HTTP 401, signer hint {reason!r}, unauthenticated"
    if reason == "key_or_signature":
        return (f"the signer does not know keyid {ctx.keyid!r}, or the public key it holds "
                f"for it is not this watcher's ({ctx.public_key_b64}) — check [[clients]] "
                f"in signer.toml (keyid and public_key) against [signer] keyid and key in "
                f"watcher.toml; the signer's log names which ({hint})")
    if reason == "stale":
        return f"{_clock_words(skew_of(answer, ctx.now), ctx, 'our request time')} ({hint})"
    if reason == "bad_digest":
        return (f"the body the signer received does not match its Content-Digest: something "
                f"between the watcher and the signer changes request bodies (a proxy?) ({hint})")
    if reason == "replay":
        return (f"the signer has seen this request's nonce before: a replayed or duplicated "
                f"request; if it repeats, something on the path resends requests ({hint})")
    if reason == "malformed":
        return (f"the signer cannot use our signature headers: something between the watcher "
                f"and the signer strips or rewrites Signature, Signature-Input or "
                f"Content-Digest ({hint})")
    return ("the signer refused the request's signature (HTTP 401, no reason given): check "
            "[[clients]] in signer.toml, both hosts' clocks, and [signer] url in watcher.toml")


def explain(answer: Received, error: AuthError, ctx: Context) -> str:
    """One line saying why ``answer`` to our request was not accepted, and what to check."""
    where = f"{ctx.method} {ctx.url}"
    doc = answer.json_error()
    if not answer.signed:
        if doc is None:
            ctype = (answer.header("content-type") or "no content type").split(";", 1)[0]
            return (f"wrong URL: the answer to {where} is not from a witness-signer (HTTP "
                    f"{answer.status}, {ctype}, unsigned, no signer error body) — check "
                    "[signer] url in watcher.toml")
        if answer.status == 401:
            raw = doc.get(REASON_FIELD)
            # SECURITY: an unsigned field: only a known short code is named, never echoed.
            reason = raw if isinstance(raw, str) and raw in REASONS else None
            return f"{where}: {_refusal(reason, answer, ctx)}"
        return (f"{where}: unsigned HTTP {answer.status} answer {str(doc['error'])[:60]!r}, "
                "not a witness-signer's signed answer (not trusted) — if it persists, check "
                "[signer] url in watcher.toml")
    if isinstance(error, StaleRequestError):
        words = _clock_words(signed_skew_of(answer, ctx.now), ctx, "the signer's answer time")
        return f"{where}: {words} (the answer's signature: {error})"
    return f"{where}: HTTP {answer.status} answer not authentic: {error}"
