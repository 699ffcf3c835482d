"""The request-signing profile (docs/api.md): RFC 9421 signatures, RFC 9530 digests, Ed25519.

Pure functions over plain values: no Flask, no requests, no clock (``now`` is a
parameter). The only module of ``shared`` that imports ``nacl``; signature bases
live in :mod:`shared.httpsig_base`, structured fields in :mod:`shared.sfv`.

The only way from a received request to trusted data is :func:`verify_request`. It
checks the received bytes as they are: the signature base is rebuilt from the
received fields and the body is hashed, never parsed or re-serialized.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, TypeVar

import nacl.exceptions
import nacl.signing

from shared import httpsig_base as base
from shared.errors import AuthError, ConfigError, ReplayError, RequestInvalidError
from shared.httpsig_base import Headers, HttpMessage, HttpResponse, MemoryNonceStore, NonceStore

__all__ = [
    "DEFAULT_REQUEST_COMPONENTS", "Ed25519PublicKey", "Ed25519Signer", "Headers", "HttpMessage",
    "HttpResponse", "MemoryNonceStore", "NonceStore", "VerifiedRequest", "generate_keypair",
    "load_private_key", "load_public_key", "sign_request", "sign_response",
    "signed_headers_for", "verify_request", "verify_response",
]

log = logging.getLogger(__name__)

DEFAULT_REQUEST_COMPONENTS: Final = (
    "@method", "@target-uri", "@path", "content-digest", "content-type")
DEFAULT_MAX_SKEW: Final = timedelta(seconds=30)
_LABEL: Final = re.compile(r"[a-z*][a-z0-9_\-.*]{0,63}")
_MAX_KEY_FILE: Final = 1024
_VERIFIER: Final = object()
_T = TypeVar("_T")


class Ed25519PublicKey:
    """An Ed25519 public key (32 raw bytes)."""

    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise ConfigError("an Ed25519 public key is exactly 32 bytes")
        self._key = nacl.signing.VerifyKey(raw)

    @property
    def raw(self) -> bytes:
        """The 32 raw key bytes."""
        return bytes(self._key)

    def to_base64(self) -> str:
        """The key as written in a ``.pub`` file."""
        return base64.b64encode(self.raw).decode("ascii")

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``message``."""
        try:
            self._key.verify(message, signature)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ed25519PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"Ed25519PublicKey({self.to_base64()})"


class Ed25519Signer:
    """An Ed25519 private key; its seed never shows in repr, str, errors or pickles."""

    __slots__ = ("_key", "public_key")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise ConfigError("an Ed25519 seed is exactly 32 bytes")
        self._key = nacl.signing.SigningKey(seed)
        self.public_key = Ed25519PublicKey(bytes(self._key.verify_key))

    @classmethod
    def generate(cls) -> Ed25519Signer:
        """A fresh key from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(32))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message).signature

    def __repr__(self) -> str:
        return f"Ed25519Signer(public_key={self.public_key.to_base64()}, seed=<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        # SECURITY: a pickle would copy the seed into caches, queues or crash dumps.
        raise TypeError("Ed25519Signer cannot be pickled")


def _read_key_file(path: str, what: str, forbidden_mode: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"cannot open {what}: {e.strerror}", path=path) from e
    try:
        mode = os.fstat(fd).st_mode  # of the opened file: the file checked is the file read
        if not stat.S_ISREG(mode) or mode & forbidden_mode:
            raise ConfigError(f"{what} must be a regular file without mode bits "
                              f"{forbidden_mode:03o} (it has {stat.S_IMODE(mode):03o})", path=path)
        data = os.read(fd, _MAX_KEY_FILE + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {what}: {e.strerror}", path=path) from e
    finally:
        os.close(fd)
    text = data.decode("ascii", errors="replace").removesuffix("\n").removesuffix("\r")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        # SECURITY: no exception chaining, the decoder's message could quote key bytes.
        raise ConfigError(f"malformed {what}: expected base64 of 32 bytes", path=path) from None
    if len(raw) != 32 or len(data) > _MAX_KEY_FILE:
        raise ConfigError(f"malformed {what}: expected base64 of 32 bytes", path=path)
    return raw


def load_private_key(path: str | os.PathLike[str]) -> Ed25519Signer:
    """Load a private key: base64 of the 32-byte seed on one line, no group/other mode bits.

    Raises:
        ConfigError: unreadable, accessible to group/others (mode & 0o077), or malformed.
    """
    return Ed25519Signer(_read_key_file(os.fspath(path), "private key", 0o077))


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load a public key: base64 of the 32 raw key bytes on one line.

    Raises:
        ConfigError: unreadable, world-writable, or malformed.
    """
    # SECURITY: a world-writable public key file lets anyone swap in a key they hold.
    return Ed25519PublicKey(_read_key_file(os.fspath(path), "public key", 0o002))


def _write_new_file(path: str, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as e:
        raise ConfigError(f"cannot create key file: {e.strerror}", path=path) from e
    try:
        os.fchmod(fd, mode)  # exact mode whatever the umask (a 0644 public key)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as e:
        raise ConfigError(f"cannot write key file: {e.strerror}", path=path) from e
    finally:
        os.close(fd)


def generate_keypair(
    private_path: str | os.PathLike[str], public_path: str | os.PathLike[str]
) -> Ed25519Signer:
    """Create a key pair: private file mode 0600, public file mode 0644; never overwrite.

    Raises:
        ConfigError: either file exists already or cannot be written.
    """
    private, public = os.fspath(private_path), os.fspath(public_path)
    for path in (private, public):
        if Path(path).exists() or Path(path).is_symlink():
            raise ConfigError("refusing to overwrite an existing key file", path=path)
    signer = Ed25519Signer.generate()
    seed = bytes(signer._key)  # the one place the seed leaves the object: into its file
    _write_new_file(private, base64.b64encode(seed) + b"\n", 0o600)
    try:
        _write_new_file(public, signer.public_key.to_base64().encode("ascii") + b"\n", 0o644)
    except ConfigError:
        Path(private).unlink(missing_ok=True)
        raise
    return signer


def _unix(now: datetime) -> int:
    if now.utcoffset() is None:
        raise AuthError("clock values must be timezone-aware")
    return int(now.timestamp())


def _sign(msg: HttpMessage | HttpResponse, key: Ed25519Signer, keyid: str, now: datetime, *,
          nonce: str | None, label: str, components: Sequence[str],
          request: Headers | None = None) -> dict[str, str]:
    digest = base.content_digest(msg.body)
    nonce = base.new_nonce() if nonce is None else nonce
    if not base.NONCE.fullmatch(nonce) or not _LABEL.fullmatch(label):
        raise RequestInvalidError("nonce or label has an invalid format")
    try:
        params: base.Params = (
            ("created", _unix(now)), ("nonce", nonce), ("keyid", keyid), ("alg", base.ALG))
        covered = base.InnerList(tuple(base.parse_component_id(c) for c in components), params)
        signature_input = f"{label}={base.serialize_member(covered)}"
        # "content-digest" resolves to the digest we are about to send.
        with_digest = replace(msg, headers=msg.headers.replacing("content-digest", digest))
        to_sign = base.signature_base(covered, with_digest, request)
    except AuthError as e:
        raise RequestInvalidError(f"cannot sign: {e}") from e
    signature = f"{label}={base.serialize_bare(key.sign(to_sign))}"
    return {"Content-Digest": digest, "Signature-Input": signature_input, "Signature": signature}


def sign_request(
    msg: HttpMessage, key: Ed25519Signer, keyid: str, now: datetime, *,
    nonce: str | None = None, label: str = "sig1",
    components: Sequence[str] = DEFAULT_REQUEST_COMPONENTS,
) -> dict[str, str]:
    """Sign a request; return the ``Content-Digest``, ``Signature-Input``, ``Signature`` to add.

    ``components`` are names (``"@method"``, ``"content-type"``) or serialized ids
    (``'"x-dict";key="a"'``). Covered fields must be in ``msg``, except
    ``content-digest``, which is computed here over the exact body.

    Raises:
        RequestInvalidError: a component cannot be resolved; bad nonce, label or clock.
    """
    return _sign(msg, key, keyid, now, nonce=nonce, label=label, components=components)


def signed_headers_for(  # noqa: PLR0917  (the watcher's call site reads best positionally)
    method: str, url: str, body: bytes, content_type: str | None,
    key: Ed25519Signer, keyid: str, now: datetime, *, nonce: str | None = None,
) -> dict[str, str]:
    """Every header to send for a signed request, ``Content-Type`` included when given.

    Raises:
        RequestInvalidError: see :func:`sign_request`.
    """
    fields = {} if content_type is None else {"Content-Type": content_type}
    components = [c for c in DEFAULT_REQUEST_COMPONENTS if fields or c != "content-type"]
    msg = HttpMessage(method, url, Headers(fields), body)
    return {**fields, **sign_request(msg, key, keyid, now, nonce=nonce, components=components)}


@dataclass(frozen=True)
class VerifiedRequest:
    """A request whose signature, digest, freshness and nonce all checked out.

    Only :func:`verify_request` builds one: ``__post_init__`` demands a module-private
    token. That stops accidental construction, not deliberate abuse
    (``dataclasses.replace`` copies the token); review holds that line.
    ``signature_header`` is the received ``Signature`` field, which the response
    covers as ``"signature";req;key="<label>"`` to bind itself to this request.
    """

    keyid: str
    label: str
    nonce: str
    created: int
    covered: tuple[str, ...]
    method: str
    target_uri: str
    signature: bytes = field(repr=False)
    signature_header: str = field(repr=False)
    body: bytes = field(repr=False)
    _token: object = field(default=None, repr=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        if self._token is not _VERIFIER:
            raise AuthError("a VerifiedRequest is only built by verify_request")


def _translate(check: Callable[[], _T]) -> _T:
    # SECURITY: whatever the headers hold, callers see AuthError (401), never a 500.
    try:
        return check()
    except AuthError:
        raise
    except (ValueError, LookupError, TypeError, ArithmeticError) as e:
        log.warning("unexpected %s while checking signature headers", type(e).__name__)
        raise AuthError("malformed signature headers") from e


def verify_request(
    msg: HttpMessage, keys: Mapping[str, Ed25519PublicKey], nonce_store: NonceStore,
    now: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> VerifiedRequest:
    """Authenticate a received request; the only way to a :class:`VerifiedRequest`.

    In order: the first signature by a configured keyid; alg, nonce format and
    ``created`` within ``max_skew``; coverage of ``@method``, ``content-digest`` and
    ``@path`` or ``@target-uri``; the Ed25519 signature over the received fields; the
    sha-256 ``Content-Digest`` of the body; last, the nonce is spent.

    Raises:
        StaleRequestError: ``created`` (or ``expires``) is outside the allowed skew.
        ReplayError: the nonce was already used by this key inside the window.
        AuthError: anything else, with a short diagnostic and no secret material.
    """
    now_s = _unix(now)

    def check() -> tuple[base.Candidate, int, str]:
        chosen = base.select_signature(msg.headers, keys.__contains__)
        created, nonce = base.check_params(
            chosen.covered.params, now_s, max_skew.total_seconds(), need_nonce=True)
        if not (chosen.covers("@method") and chosen.covers("content-digest")
                and (chosen.covers("@path") or chosen.covers("@target-uri"))):
            raise AuthError('must cover "@method", "content-digest" and "@path" or "@target-uri"')
        signed_bytes = base.signature_base(chosen.covered, msg)
        if not keys[chosen.keyid].verify(signed_bytes, chosen.signature):
            raise AuthError("signature does not verify")
        base.check_content_digest(msg.headers.get("content-digest"), msg.body)
        return chosen, created, str(nonce)

    chosen, created, nonce = _translate(check)
    # SECURITY: the nonce is spent only after signature and digest verified, so forged
    # requests cannot burn the nonces of genuine ones.
    if not nonce_store.use(chosen.keyid, nonce, created, now_s):
        raise ReplayError("nonce already used by this key")
    return VerifiedRequest(
        keyid=chosen.keyid, label=chosen.label, nonce=nonce, created=created,
        covered=tuple(base.serialize_member(c) for c in chosen.covered.items),
        method=msg.method, target_uri=msg.target_uri, signature=chosen.signature,
        signature_header=msg.headers["signature"], body=msg.body, _token=_VERIFIER,
    )


def sign_response(
    resp_msg: HttpResponse, req: VerifiedRequest, key: Ed25519Signer, now: datetime, *,
    keyid: str = "signer", label: str = "sig1", nonce: str | None = None,
) -> dict[str, str]:
    """Sign the answer to ``req``; return ``Content-Digest``, ``Signature-Input``, ``Signature``.

    Covers ``"@status"``, ``"content-digest"`` and ``"signature";req;key="<req.label>"``
    (RFC 9421 section 2.4), with ``created``, a fresh nonce, ``keyid`` and ``alg``.

    Raises:
        RequestInvalidError: bad label, nonce or clock value.
    """
    components = ("@status", "content-digest", f'"signature";req;key="{req.label}"')
    return _sign(resp_msg, key, keyid, now, nonce=nonce, label=label, components=components,
                 request=Headers({"signature": req.signature_header}))


def verify_response(
    resp_msg: HttpResponse, request_headers_sent: Mapping[str, str],
    signer_key: Ed25519PublicKey, now: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW,
    *, keyid: str = "signer",
) -> None:
    """Accept an answer only if ``signer_key`` signed it for the very request we sent.

    It must cover ``"@status"``, ``"content-digest"`` and, as
    ``"signature";req;key=...``, the ``Signature`` we sent (read from
    ``request_headers_sent``). Covering only the request's ``;req`` method and URI
    would not do: every failover request has the same method and URI, so an old
    signed "confirmed" answer would pass for any later request. Our request's
    signature is unique (fresh nonce and ``created``): covering it binds the answer
    to exactly one request.

    Raises:
        StaleRequestError: the answer's ``created`` is outside ``max_skew``.
        AuthError: unsigned, wrongly signed, not bound to our request, digest mismatch.
    """
    now_s, sent = _unix(now), Headers(request_headers_sent)

    def check() -> None:
        chosen = base.select_signature(resp_msg.headers, keyid.__eq__)
        base.check_params(
            chosen.covered.params, now_s, max_skew.total_seconds(), need_nonce=False)
        bound = any(c.value == "signature" and {k for k, _ in c.params} == {"req", "key"}
                    for c in chosen.covered.items)
        if not (bound and chosen.covers("@status") and chosen.covers("content-digest")):
            raise AuthError('answer must cover "@status", "content-digest" and our signature')
        signed_bytes = base.signature_base(chosen.covered, resp_msg, request=sent)
        if not signer_key.verify(signed_bytes, chosen.signature):
            raise AuthError("response signature does not verify")
        base.check_content_digest(resp_msg.headers.get("content-digest"), resp_msg.body)

    _translate(check)
