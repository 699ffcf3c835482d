"""A signed JSON client of the signer's API: one request out, one verified answer back.

The request is signed with :func:`shared.httpsig.signed_headers_for` over the exact
body bytes; the answer is accepted only if the signer's key signed it for that very
request (:func:`shared.httpsig.verify_response`), and only then parsed. No retry:
an operator's tool reports and lets the human decide (the watcher has its own
retrying client).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
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

_MAX_ANSWER_BYTES: Final = 1 << 20
_JSON: Final = "application/json"


class UnreachableError(FailoverError):
    """The signer did not answer (network error, timeout, TLS failure)."""


class UnverifiedAnswerError(AuthError):
    """The answer is unsigned, wrongly signed, stale or not bound to our request."""


class AnswerFormatError(FailoverError):
    """A verified answer that is not a JSON object."""


@dataclass(frozen=True)
class VerifiedAnswer:
    """A signer's answer whose signature verified: its status and JSON object."""

    status: int
    doc: dict[str, object]


class SignedJsonClient:
    """Signs requests as ``keyid`` and verifies the signer's answers; one thread at a time.

    ``ca_file`` is the CA bundle that signs the signer's TLS certificate (None: the
    system's store).
    """

    def __init__(self, base_url: str, key: Ed25519Signer, keyid: str,
                 signer_key: Ed25519PublicKey, *, clock: Clock, timeout_s: float = 10.0,
                 ca_file: str | None = None,
                 max_skew: timedelta = timedelta(seconds=30)) -> None:
        self.base_url = base_url.rstrip("/")
        self.keyid = keyid
        self._key = key
        self._signer_key = signer_key
        self._clock = clock
        self._timeout_s = timeout_s
        self._verify: str | bool = ca_file or True
        self._max_skew = max_skew
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"SignedJsonClient({self.base_url!r}, keyid={self.keyid!r})"

    def call(self, method: str, path: str, doc: object = None) -> VerifiedAnswer:
        """Send ``doc`` (JSON, or no body when None) signed; return the verified answer.

        Raises:
            UnreachableError: no answer.
            UnverifiedAnswerError: the answer did not verify.
            AnswerFormatError: a verified answer that is not a JSON object.
        """
        body = b"" if doc is None else json.dumps(doc, separators=(",", ":")).encode()
        url = self.base_url + path
        headers = signed_headers_for(method, url, body, _JSON if body else None, self._key,
                                     self.keyid, self._clock.now())
        try:
            with self._session.request(method, url, data=body or None, headers=headers,
                                       timeout=self._timeout_s, allow_redirects=False,
                                       stream=True, verify=self._verify) as response:
                content = response.raw.read(_MAX_ANSWER_BYTES + 1, decode_content=True)
                status, received = response.status_code, Headers(response.headers.items())
        except requests.RequestException as e:
            raise UnreachableError(f"{method} {url}: {type(e).__name__}: {e}") from e
        if len(content) > _MAX_ANSWER_BYTES:
            raise UnverifiedAnswerError(f"{method} {path}: answer too large to verify")
        try:
            # SECURITY: T2 — verify the received bytes, bound to our signature, then parse.
            verify_response(HttpResponse(status, received, content), headers,
                            self._signer_key, self._clock.now(), self._max_skew)
        except AuthError as e:
            raise UnverifiedAnswerError(f"{method} {path}: HTTP {status} answer not "
                                        f"authentic: {e}") from e
        try:
            parsed = json.loads(content)
        except ValueError as e:
            raise AnswerFormatError(f"{method} {path}: answer is not JSON") from e
        if not isinstance(parsed, dict):
            raise AnswerFormatError(f"{method} {path}: answer is not a JSON object")
        return VerifiedAnswer(status, parsed)

    def close(self) -> None:
        """Release the connection pool."""
        self._session.close()
