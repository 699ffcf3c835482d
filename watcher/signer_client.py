"""The watcher's client of the signer's HTTP API: signed requests, verified answers.

Every request is signed (RFC 9421, :func:`shared.httpsig.signed_headers_for`) over
the exact body bytes sent; every answer is accepted only if the signer's key
signed it for that very request (:func:`shared.httpsig.verify_response`), and only
then parsed. Network errors, 5xx without a request state and answers that do not
verify are retried with exponential backoff and jitter, each attempt with a fresh
nonce and the same body (a failover carries a ``request_id``, so a retry gets the
same answer, never a second switch).

An answer that does not verify is explained (:mod:`watcher.diagnosis`): the
signer's unsigned 401 reason, clock skew, a URL that is not a witness-signer.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Final

import requests

from shared.clock import Clock
from shared.errors import AuthError, FailoverError
from shared.httpsig import (
    Ed25519PublicKey,
    Ed25519Signer,
    Headers,
    HttpResponse,
    signed_headers_for,
    verify_response,
)
from shared.tls import requests_verify
from watcher.diagnosis import Context, Received, explain

log = logging.getLogger(__name__)

FINAL_STATES: Final = frozenset({"confirmed", "failed", "refused", "expired", "denied",
                                 "dry_run", "not_found"})
_MAX_ANSWER_BYTES: Final = 1 << 20
_JSON: Final = "application/json"


class SignerUnreachableError(FailoverError):
    """No usable answer from the signer after every attempt (network down, 5xx)."""


class UntrustedAnswerError(AuthError):
    """The signer's answer is unsigned, wrongly signed, stale or not bound to our request."""


class SignerProtocolError(FailoverError):
    """A verified answer that is not what the API promises (not JSON, no state)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the authentic answer's HTTP status, when there was one


@dataclass(frozen=True)
class SignerAnswer:
    """A verified answer about a failover request."""

    status: int
    state: str
    request_id: str | None
    target_key: str | None
    tx_id: str | None
    block_num: int | None
    detail: str
    body: Mapping[str, object] = field(repr=False)

    @property
    def final(self) -> bool:
        """Whether the request will not change any more."""
        return self.state in FINAL_STATES


def _opt(doc: Mapping[str, object], name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) else None


def parse_answer(status: int, doc: Mapping[str, object]) -> SignerAnswer:
    """A :class:`SignerAnswer` from a verified JSON body.

    Raises:
        SignerProtocolError: no request state in it.
    """
    state = doc.get("state")
    if status == 404:
        state = "not_found"
    if not isinstance(state, str) or not state:
        error = doc.get("error") or doc.get("detail") or ""
        raise SignerProtocolError(f"HTTP {status} answer without a request state "
                                  f"{str(error)[:200]}".rstrip(), status=status)
    block = doc.get("block_num")
    return SignerAnswer(
        status=status, state=state, request_id=_opt(doc, "request_id"),
        target_key=_opt(doc, "target_key"), tx_id=_opt(doc, "tx_id"),
        block_num=block if isinstance(block, int) and not isinstance(block, bool) else None,
        detail=str(doc.get("detail") or doc.get("note") or doc.get("error") or "")[:300],
        body=doc)


class _RetryableError(FailoverError):
    """One attempt failed in a way another attempt may fix; never escapes this module."""

    def __init__(self, error: FailoverError) -> None:
        super().__init__(str(error))
        self.error = error


class SignerClient:
    """Talks to one signer as one client id; safe for one thread at a time."""

    def __init__(self, base_url: str, key: Ed25519Signer, keyid: str,
                 signer_key: Ed25519PublicKey, *, clock: Clock,
                 sleep: Callable[[float], object], timeout_s: float = 10.0, attempts: int = 4,
                 backoff_s: float = 0.5, max_backoff_s: float = 8.0,
                 max_skew: timedelta = timedelta(seconds=30),
                 session: requests.Session | None = None,
                 ca_file: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.keyid = keyid
        self._signer_key = signer_key
        self._clock = clock
        self._sleep = sleep
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_skew = max_skew
        self._session = session or requests.Session()
        # The signer's own CA (e.g. a self-signed certificate) instead of the system's.
        # Passed with every request: a session default would lose to REQUESTS_CA_BUNDLE.
        self._verify = requests_verify(ca_file)
        self._random = secrets.SystemRandom()
        self.requests_sent = 0  # HTTP requests, retries included (metrics)

    def __repr__(self) -> str:
        return f"SignerClient({self.base_url!r}, keyid={self.keyid!r})"

    def _once(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, object]]:
        url = self.base_url + path
        headers = signed_headers_for(method, url, body, _JSON if body else None, self._key,
                                     self.keyid, self._clock.now())
        self.requests_sent += 1
        try:
            with self._session.request(method, url, data=body or None, headers=headers,
                                       timeout=self.timeout_s, allow_redirects=False,
                                       stream=True, verify=self._verify) as response:
                content = response.raw.read(_MAX_ANSWER_BYTES + 1, decode_content=True)
                status, received = response.status_code, Headers(response.headers.items())
        except requests.RequestException as e:
            raise _RetryableError(
                SignerUnreachableError(f"{method} {path}: {type(e).__name__}")) from e
        if len(content) > _MAX_ANSWER_BYTES:
            raise _RetryableError(
                UntrustedAnswerError(f"{method} {path}: answer too large to verify"))
        try:
            # SECURITY: T2 — verify the received bytes, bound to our signature, then parse.
            verify_response(HttpResponse(status, received, content), headers, self._signer_key,
                            self._clock.now(), self.max_skew)
        except AuthError as e:
            why = explain(Received(status, received, content), e, Context(
                method, url, self.keyid, self._key.public_key.to_base64(), self._clock.now(),
                self.max_skew))
            log.warning("answer rejected: %s", why)
            raise _RetryableError(UntrustedAnswerError(why)) from e
        try:
            doc = json.loads(content)
        except ValueError as e:
            raise SignerProtocolError(f"{method} {path}: answer is not JSON",
                                      status=status) from e
        if not isinstance(doc, dict):
            raise SignerProtocolError(f"{method} {path}: answer is not a JSON object")
        if status >= 500 and "state" not in doc:
            # A signed 503 (chain unavailable at the signer): worth another try.
            raise _RetryableError(SignerUnreachableError(f"{method} {path}: HTTP {status} "
                                                f"{str(doc.get('error', ''))[:80]}"))
        return status, doc

    def _exchange(self, method: str, path: str, body: bytes = b"",
                  attempts: int | None = None) -> tuple[int, dict[str, object]]:
        """One request with retries.

        Raises:
            SignerUnreachableError: network errors or 5xx on every attempt.
            UntrustedAnswerError: the last answer did not verify.
            SignerProtocolError: a verified answer that makes no sense.
        """
        tries = attempts or self.attempts
        for attempt in range(tries):
            try:
                return self._once(method, path, body)
            except _RetryableError as retry:
                if attempt + 1 >= tries:
                    raise retry.error from retry.__cause__
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
                delay = delay / 2 + self._random.uniform(0, delay / 2)  # jitter
                log.info("%s %s failed (%s); retry %d/%d in %.2f s", method, path,
                         retry.error, attempt + 1, tries - 1, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def failover(self, body: bytes) -> SignerAnswer:
        """POST /v1/failover with ``body`` (the exact bytes; kept for retries).

        Raises:
            SignerUnreachableError, UntrustedAnswerError, SignerProtocolError.
        """
        return parse_answer(*self._exchange("POST", "/v1/failover", body))

    def request_state(self, request_id: str, attempts: int | None = None) -> SignerAnswer:
        """GET /v1/requests/<id>.

        Raises:
            SignerUnreachableError, UntrustedAnswerError, SignerProtocolError.
        """
        return parse_answer(*self._exchange("GET", f"/v1/requests/{request_id}",
                                            attempts=attempts))

    def follow(self, answer: SignerAnswer, timeout_s: float, interval_s: float) -> SignerAnswer:
        """Poll a non-final request until it is final or ``timeout_s`` passed; the last answer.

        Raises:
            SignerUnreachableError, UntrustedAnswerError, SignerProtocolError.
        """
        start = self._clock.now()
        while not answer.final and answer.request_id:
            if (self._clock.now() - start).total_seconds() >= timeout_s:
                break
            self._sleep(interval_s)
            answer = self.request_state(answer.request_id)
        return answer

    def status(self) -> dict[str, object]:
        """GET /v1/status: the signer's verified view of the witness.

        Raises:
            SignerUnreachableError, UntrustedAnswerError, SignerProtocolError.
        """
        status, doc = self._exchange("GET", "/v1/status")
        if status != 200:
            raise SignerProtocolError(f"GET /v1/status: HTTP {status} {doc.get('error', '')}")
        return doc

    def close(self) -> None:
        """Release the connection pool."""
        self._session.close()
