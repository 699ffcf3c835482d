"""The crypto-free half of the signing profile (keys and the API live in ``shared.httpsig``).

RFC 9421 signature bases, ``Signature-Input`` checks, RFC 9530 digests and the
in-memory nonce store, over the strict RFC 8941 structured fields of
:mod:`shared.sfv` (re-exported here). Everything that reads received data raises
:class:`AuthError` and nothing else.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Protocol

from shared.errors import AuthError, StaleRequestError
from shared.sfv import (
    MAX_FIELD_CHARS,
    MAX_LIST_ITEMS,
    MAX_MEMBERS,
    MAX_PARAMS,
    BareItem,
    DuplicateKeyError,
    InnerList,
    Item,
    Member,
    Params,
    Token,
    b64decode_strict,
    param,
    parse_component_id,
    parse_dictionary,
    serialize_bare,
    serialize_item,
    serialize_member,
    serialize_params,
)

__all__ = [
    "ALG",
    "KNOWN_PARAMS",
    "MAX_FIELD_CHARS",
    "MAX_LIST_ITEMS",
    "MAX_MEMBERS",
    "MAX_PARAMS",
    "NONCE",
    "BareItem",
    "Candidate",
    "DuplicateKeyError",
    "Headers",
    "HttpMessage",
    "HttpResponse",
    "InnerList",
    "Item",
    "Member",
    "MemoryNonceStore",
    "NonceStore",
    "Params",
    "Token",
    "b64decode_strict",
    "check_content_digest",
    "check_params",
    "component_value",
    "content_digest",
    "new_nonce",
    "param",
    "parse_component_id",
    "parse_dictionary",
    "select_signature",
    "serialize_bare",
    "serialize_item",
    "serialize_member",
    "serialize_params",
    "signature_base",
]

ALG: Final = "ed25519"
NONCE = re.compile(r"[A-Za-z0-9_\-]{16,128}")  # base64url and hex alphabets (docs/api.md)
KNOWN_PARAMS = frozenset({"created", "expires", "nonce", "keyid", "alg", "tag"})

_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")
_VISIBLE = re.compile(r"[!-~]+")
# An absolute URI as the server saw it (visible ASCII): no userinfo, no fragment.
_URI = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<host>\[[0-9A-Fa-f:.]+\]|[^/?#@:\[\]]+)"
    r"(?::(?P<port>[0-9]{0,5}))?(?P<path>/[^?#]*)?(?:\?(?P<query>[^#]*))?"
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive fields; repeated lines joined with ", " (RFC 9110 5.3).

    Takes a mapping or any iterable of (name, value) pairs (werkzeug ``request.headers``,
    requests' ``CaseInsensitiveDict``). Lines are trimmed of spaces and tabs (RFC 9421 2.1).
    """

    __slots__ = ("_fields",)

    def __init__(self, source: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        lines: dict[str, list[str]] = {}
        for name, value in source.items() if isinstance(source, Mapping) else source:
            lines.setdefault(str(name).lower(), []).append(str(value).strip(" \t"))
        self._fields = {name: ", ".join(values) for name, values in lines.items()}

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"

    def replacing(self, name: str, value: str) -> Headers:
        """A copy in which field ``name`` has exactly ``value``."""
        return Headers({**self._fields, name.lower(): value})


def _coerce(message: HttpMessage | HttpResponse) -> None:
    if not isinstance(message.headers, Headers):
        object.__setattr__(message, "headers", Headers(message.headers))
    if not isinstance(message.body, bytes):
        object.__setattr__(message, "body", bytes(message.body))


@dataclass(frozen=True)
class HttpMessage:
    """A request as plain values: method, full target URI, fields, exact body bytes."""

    method: str
    target_uri: str
    headers: Headers
    body: bytes = b""

    def __post_init__(self) -> None:
        _coerce(self)


@dataclass(frozen=True)
class HttpResponse:
    """A response as plain values: status code, fields, exact body bytes."""

    status: int
    headers: Headers
    body: bytes = b""

    def __post_init__(self) -> None:
        _coerce(self)


def _derived(name: str, msg: HttpMessage | HttpResponse) -> str:
    """The value of a derived component (RFC 9421 section 2.2)."""
    if isinstance(msg, HttpResponse):
        if name != "@status" or not 100 <= msg.status <= 999:
            raise AuthError(f"{name} is not available on a response without ;req")
        return str(msg.status)
    if name == "@method":
        if not _METHOD.fullmatch(msg.method):
            raise AuthError("malformed method")
        return msg.method
    uri = _URI.fullmatch(msg.target_uri) if _VISIBLE.fullmatch(msg.target_uri) else None
    if uri is None:
        raise AuthError("target URI is not absolute visible ASCII without userinfo, fragment")
    scheme, host, port = uri["scheme"], uri["host"], uri["port"]
    path = uri["path"] or "/"
    query = "" if uri["query"] is None else "?" + uri["query"]
    if name == "@authority":
        keep_port = port and port.lstrip("0") != _DEFAULT_PORTS.get(scheme.lower())
        return host.lower() + (f":{port}" if keep_port else "")
    derived = {
        "@target-uri": f"{scheme}://{host}{'' if port is None else ':' + port}{path}{query}",
        "@scheme": scheme.lower(),
        "@request-target": path + query,
        "@path": path,
        "@query": query or "?",
    }
    if name not in derived:
        raise AuthError(f"unsupported derived component {name!r}")
    return derived[name]


def component_value(
    component: Item, msg: HttpMessage | HttpResponse, request: Headers | None = None
) -> str:
    """Resolve one covered component to its signature-base value.

    ``request`` holds the fields of the request a response answers, for fields flagged
    ``;req`` such as ``"signature";req;key="sig1"`` (derived ``;req`` components are
    not supported: a response here never needs them).

    Raises:
        AuthError: unknown component or parameter, missing field or member, bad value.
    """
    name, params = component.value, dict(component.params)
    if not isinstance(name, str) or not name or name != name.lower():
        raise AuthError("component names are non-empty lowercase strings")
    if set(params) - {"req", "key"}:
        raise AuthError(f"unsupported parameter on component {name!r}")
    target: HttpMessage | HttpResponse | Headers = msg
    if "req" in params:
        if params["req"] is not True or not isinstance(msg, HttpResponse) or request is None:
            raise AuthError(f"{name!r};req is only usable on a response to a known request")
        target = request
    if name.startswith("@"):
        if "key" in params or isinstance(target, Headers):
            raise AuthError(f"cannot resolve derived component {name!r}")
        return _derived(name, target)
    fields = target if isinstance(target, Headers) else target.headers
    if name not in fields:
        raise AuthError(f"covered field {name!r} is missing")
    value = fields[name]
    if "key" in params:
        members = parse_dictionary(value)
        if not isinstance(params["key"], str) or params["key"] not in members:
            raise AuthError(f"covered member of {name!r} is missing")
        value = serialize_member(members[params["key"]])
    if not _FIELD_VALUE.fullmatch(value):
        raise AuthError(f"value of {name!r} has controls or non-ASCII characters")
    return value


def signature_base(
    covered: InnerList, msg: HttpMessage | HttpResponse, request: Headers | None = None
) -> bytes:
    """Build the RFC 9421 section 2.5 signature base for one ``Signature-Input`` member.

    ``covered`` holds the component identifiers and the signature parameters; its
    serialization becomes the final ``"@signature-params"`` line.

    Raises:
        AuthError: a component is duplicated, unknown or cannot be resolved.
    """
    lines: list[str] = []
    seen: set[tuple[BareItem, frozenset[tuple[str, BareItem]]]] = set()
    for component in covered.items:
        identity = (component.value, frozenset(component.params))
        if identity in seen or component.value == "@signature-params":
            raise AuthError("a component is covered twice, or is @signature-params")
        seen.add(identity)
        lines.append(f"{serialize_item(component)}: {component_value(component, msg, request)}")
    lines.append(f'"@signature-params": {serialize_member(covered)}')
    return "\n".join(lines).encode("ascii")


@dataclass(frozen=True)
class Candidate:
    """The signature chosen for verification: label, keyid, covered list, raw bytes."""

    label: str
    keyid: str
    covered: InnerList
    signature: bytes

    def covers(self, name: str) -> bool:
        """Whether the plain component ``name`` (no parameters) is covered."""
        return Item(name) in self.covered.items


def select_signature(fields: Headers, known: Callable[[str], bool]) -> Candidate:
    """Pick the first ``Signature-Input`` member whose keyid is known, with its signature.

    Raises:
        AuthError: unsigned, malformed, no known keyid, or not a 64-byte signature.
    """
    if "signature-input" not in fields or "signature" not in fields:
        raise AuthError("unsigned: Signature-Input or Signature is missing")
    inputs = parse_dictionary(fields["signature-input"])
    values = parse_dictionary(fields["signature"])
    # Every Signature member must be a byte sequence: a header carrying anything
    # else was not produced by a signer, so it is refused rather than skipped.
    if any(not isinstance(v, Item) or not isinstance(v.value, bytes) for v in values.values()):
        raise AuthError("a Signature member is not a byte sequence")
    for label, member in inputs.items():
        if not isinstance(member, InnerList):
            raise AuthError(f"Signature-Input {label!r} is not an inner list")
        keyid = param(member.params, "keyid")
        if not isinstance(keyid, str) or not known(keyid):
            continue
        value = values.get(label)
        if not isinstance(value, Item) or not isinstance(value.value, bytes):
            raise AuthError(f"no Signature byte sequence for label {label!r}")
        if len(value.value) != 64:
            raise AuthError("an Ed25519 signature is 64 bytes")
        return Candidate(label, keyid, member, value.value)
    raise AuthError("no signature by a known keyid")


def check_params(
    params: Params, now_s: int, max_skew_s: float, *, need_nonce: bool
) -> tuple[int, str | None]:
    """Check alg, nonce format, ``created``/``expires``; return created and nonce.

    Raises:
        StaleRequestError: ``created`` is more than ``max_skew_s`` from now, or expired.
        AuthError: unknown parameter, wrong alg, missing/malformed nonce or created.
    """
    unknown = sorted({name for name, _ in params} - KNOWN_PARAMS)
    if unknown:
        raise AuthError(f"unsupported signature parameter {unknown[0]!r}")
    if param(params, "alg") not in (None, ALG):
        raise AuthError("alg must be ed25519")
    nonce = param(params, "nonce")
    if nonce is not None and not (isinstance(nonce, str) and NONCE.fullmatch(nonce)):
        raise AuthError("nonce is not 16-128 base64url/hex characters")
    if nonce is None and need_nonce:
        raise AuthError("nonce is missing")
    created, expires = param(params, "created"), param(params, "expires")
    if not isinstance(created, int) or isinstance(created, bool):
        raise AuthError("created is missing or not an integer")
    if expires is not None and (not isinstance(expires, int) or expires < now_s):
        raise StaleRequestError("signature expired")
    if abs(now_s - created) > max_skew_s:
        raise StaleRequestError(f"created is {now_s - created:+d} s off, allowed {max_skew_s:g}")
    return created, nonce


_DIGESTS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


def content_digest(body: bytes) -> str:
    """The RFC 9530 ``Content-Digest`` of ``body``: ``sha-256=:<base64>:``."""
    return "sha-256=" + serialize_bare(hashlib.sha256(body).digest())


def check_content_digest(value: str | None, body: bytes) -> None:
    """Check a received ``Content-Digest``: sha-256 required, sha-512 checked if also sent.

    Raises:
        AuthError: missing, malformed, without sha-256, or not matching the body.
    """
    if value is None:
        raise AuthError("Content-Digest is missing")
    members = parse_dictionary(value)
    if "sha-256" not in members:
        raise AuthError("Content-Digest has no sha-256 member")
    for name, member in members.items():
        if name in _DIGESTS:
            if not isinstance(member, Item) or not isinstance(member.value, bytes):
                raise AuthError(f"Content-Digest {name} is not a byte sequence")
            if not hmac.compare_digest(member.value, _DIGESTS[name](body).digest()):
                raise AuthError(f"Content-Digest {name} does not match the body")


def new_nonce() -> str:
    """32 random base64url characters (192 bits)."""
    return secrets.token_urlsafe(24)


class NonceStore(Protocol):
    """Remembers (keyid, nonce) pairs for at least ``max_skew`` after their ``created``."""

    def use(self, keyid: str, nonce: str, created: int, now: int) -> bool:
        """Record the nonce; return False if it was already seen inside the window."""
        ...


class MemoryNonceStore:
    """Thread-safe in-memory :class:`NonceStore` for tests and clients (lost on restart).

    ``window`` must be at least the verifier's ``max_skew``: a nonce is kept until
    ``max(created, now) + window``. With ``max_entries`` live nonces it refuses new
    requests rather than forget old nonces early.
    """

    def __init__(self, window: timedelta = timedelta(minutes=5), max_entries: int = 10**5) -> None:
        self._window_s, self._max_entries = int(window.total_seconds()), max_entries
        self._expiry: dict[tuple[str, str], int] = {}
        self._heap: list[tuple[int, str, str]] = []
        self._lock = threading.Lock()

    def use(self, keyid: str, nonce: str, created: int, now: int) -> bool:
        """Record the nonce; return False if it was already seen inside the window.

        Raises:
            AuthError: the store is full of live nonces.
        """
        with self._lock:
            while self._heap and self._heap[0][0] < now:
                expiry, old_keyid, old_nonce = heapq.heappop(self._heap)
                if self._expiry.get((old_keyid, old_nonce)) == expiry:
                    del self._expiry[(old_keyid, old_nonce)]
            if (keyid, nonce) in self._expiry:
                return False
            if len(self._expiry) >= self._max_entries:
                raise AuthError("nonce store is full")
            self._expiry[(keyid, nonce)] = expiry = max(created, now) + self._window_s
            heapq.heappush(self._heap, (expiry, keyid, nonce))
            return True
