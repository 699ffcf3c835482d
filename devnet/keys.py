"""Graphene keys and compact signatures, written apart from beem so it can check beem.

hived sources followed (libraries/fc/src/crypto/elliptic_common.cpp and
elliptic_secp256k1.cpp):
- public key string = prefix + base58(33-byte compressed key + ripemd160(key)[:4])
  (``from_base58_with_prefix``);
- WIF = base58(0x80 + 32-byte secret + sha256(sha256(...))[:4]), as beem reads it;
- compact signature = one byte ``27 + 4 + recid`` then r and s; recovery accepts a
  first byte in [27, 35) and, since HF20, requires BIP-62 low s
  (``public_key(sig, digest)`` defaults to ``bip_0062``). Signatures made here also
  pass the older, stricter ``is_fc_canonical`` test, as beem's and cli_wallet's do.
hived's ``is_bip_0062_canonical`` memcmp()s s against a boost ``uint256_t`` object
(limbs little-endian in memory), so it in fact accepts some s > n/2; this module
applies the rule as intended, s <= n/2, which every libsecp256k1 signature meets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import coincurve
from coincurve._libsecp256k1 import ffi

from devnet.errors import InvalidKeyError, InvalidSignatureError
from shared.chains import ADDRESS_PREFIX

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_ORDER = _ORDER // 2
_WIF_VERSION = 0x80
_MAX_SIGN_TRIES = 1000
_MAX_B58_KEY_LEN = 60  # 37 bytes need at most 51 base58 digits
COMPRESSED_KEY_LEN = 33
SIGNATURE_LEN = 65


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 of ``data`` (leading zero bytes become '1')."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_ALPHABET[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`.

    Raises:
        InvalidKeyError: a character outside the base58 alphabet.
    """
    n = 0
    for c in text:
        digit = _INDEX.get(c)
        if digit is None:
            raise InvalidKeyError("invalid base58 character")
        n = n * 58 + digit
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + body


def _ripemd160(data: bytes) -> bytes:
    return hashlib.new("ripemd160", data).digest()


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def public_key_to_str(key: bytes, prefix: str = ADDRESS_PREFIX) -> str:
    """The graphene string of a 33-byte compressed public key.

    Raises:
        InvalidKeyError: ``key`` is not 33 bytes.
    """
    if len(key) != COMPRESSED_KEY_LEN:
        raise InvalidKeyError("a public key is 33 bytes")
    return prefix + b58encode(key + _ripemd160(key)[:4])


def public_key_from_str(text: str, prefix: str = ADDRESS_PREFIX) -> bytes:
    """The 33 key bytes of a graphene public key string (the null key is 33 zero bytes).

    Like hived, the point itself is not checked: the null key must decode.

    Raises:
        InvalidKeyError: wrong prefix, bad base58, wrong length or checksum.
    """
    # SECURITY: bound the length first; base58 decoding is quadratic in it.
    if not len(prefix) < len(text) <= len(prefix) + _MAX_B58_KEY_LEN:
        raise InvalidKeyError("public key has the wrong length")
    if not text.startswith(prefix):
        raise InvalidKeyError(f"public key must start with {prefix}")
    raw = b58decode(text[len(prefix):])
    if len(raw) != COMPRESSED_KEY_LEN + 4:
        raise InvalidKeyError("public key has the wrong length")
    key, check = raw[:COMPRESSED_KEY_LEN], raw[COMPRESSED_KEY_LEN:]
    if not hmac.compare_digest(_ripemd160(key)[:4], check):
        raise InvalidKeyError("public key checksum mismatch")
    return key


class PrivateKey:
    """A secp256k1 secret. Its repr and str never show the secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        """Wrap a 32-byte secret.

        Raises:
            InvalidKeyError: not 32 bytes, or not in [1, n-1].
        """
        if len(secret) != 32 or not 0 < int.from_bytes(secret, "big") < _ORDER:
            raise InvalidKeyError("a private key is a 32-byte scalar in [1, n-1]")
        self._key = coincurve.PrivateKey(secret)

    @classmethod
    def from_seed(cls, text: str) -> PrivateKey:
        """The deterministic key sha256(text), for throwaway devnet keys only."""
        return cls(hashlib.sha256(text.encode()).digest())

    @classmethod
    def generate(cls) -> PrivateKey:
        """A fresh random key from the OS CSPRNG."""
        while True:
            secret = secrets.token_bytes(32)
            if 0 < int.from_bytes(secret, "big") < _ORDER:
                return cls(secret)

    @classmethod
    def from_wif(cls, wif: str) -> PrivateKey:
        """Parse a WIF string.

        Raises:
            InvalidKeyError: bad base58, version byte, length or checksum.
        """
        if len(wif) > _MAX_B58_KEY_LEN:  # SECURITY: see public_key_from_str
            raise InvalidKeyError("not an uncompressed mainnet WIF")
        raw = b58decode(wif)
        if len(raw) != 37 or raw[0] != _WIF_VERSION:
            raise InvalidKeyError("not an uncompressed mainnet WIF")
        if not hmac.compare_digest(_sha256d(raw[:33])[:4], raw[33:]):
            raise InvalidKeyError("WIF checksum mismatch")
        return cls(raw[1:33])

    def wif(self) -> str:
        """This key as a WIF string. It is the secret: never log it."""
        body = bytes([_WIF_VERSION]) + self._key.secret
        return b58encode(body + _sha256d(body)[:4])

    def public_key_bytes(self) -> bytes:
        """The 33-byte compressed public key."""
        return bytes(self._key.public_key.format(compressed=True))

    def public_key(self, prefix: str = ADDRESS_PREFIX) -> str:
        """The public key as a graphene string ("STM...")."""
        return public_key_to_str(self.public_key_bytes(), prefix)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateKey):
            return NotImplemented
        return hmac.compare_digest(self._key.secret, other._key.secret)

    def __hash__(self) -> int:
        return hash(self.public_key_bytes())

    def __repr__(self) -> str:
        # SECURITY: only the public half may ever reach logs or tracebacks.
        return f"PrivateKey(<redacted>, public={self.public_key()})"

    __str__ = __repr__

    def __copy__(self) -> PrivateKey:
        return self  # immutable

    def __deepcopy__(self, memo: object) -> PrivateKey:
        return self  # immutable; also keeps the secret from being duplicated in memory


def is_fc_canonical(signature: bytes) -> bool:
    """fc's pre-HF20 rule: neither r nor s has its high bit set or a needless zero byte."""
    sig = signature
    return (len(sig) == SIGNATURE_LEN
            and not sig[1] & 0x80 and not (sig[1] == 0 and not sig[2] & 0x80)
            and not sig[33] & 0x80 and not (sig[33] == 0 and not sig[34] & 0x80))


def is_bip62_canonical(signature: bytes) -> bool:
    """hived's rule since HF20 (``is_bip_0062_canonical``): s <= n/2."""
    return (len(signature) == SIGNATURE_LEN
            and int.from_bytes(signature[33:65], "big") <= _HALF_ORDER)


def sign_digest(key: PrivateKey, digest: bytes) -> bytes:
    """A 65-byte compact recoverable signature of a 32-byte digest, canonical for hived.

    RFC 6979 nonces, deterministic; when r or s fails fc's canonical test the
    nonce is re-derived with a counter as extra entropy, as fc's sign_compact does.

    Raises:
        InvalidSignatureError: ``digest`` is not 32 bytes.
    """
    if len(digest) != 32:
        raise InvalidSignatureError("a digest is 32 bytes")
    signer = key._key  # the one place the secret signs
    for attempt in range(_MAX_SIGN_TRIES):
        if attempt == 0:
            raw = signer.sign_recoverable(digest, hasher=None)
        else:
            extra = ffi.new("unsigned char[32]", attempt.to_bytes(32, "big"))
            raw = signer.sign_recoverable(digest, hasher=None, custom_nonce=(ffi.NULL, extra))
        compact = bytes([27 + 4 + raw[64]]) + raw[:64]
        if is_fc_canonical(compact) and is_bip62_canonical(compact):
            return compact
    raise InvalidSignatureError("no canonical signature found")  # pragma: no cover


def recover_public_key(digest: bytes, signature: bytes) -> bytes:
    """The 33-byte compressed key that made ``signature`` over ``digest``, as hived recovers it.

    Raises:
        InvalidSignatureError: wrong length, recovery byte outside [27, 35),
            not BIP-62 canonical, or no key recovers.
    """
    if len(digest) != 32 or len(signature) != SIGNATURE_LEN:
        raise InvalidSignatureError("unable to reconstruct public key from signature")
    if not 27 <= signature[0] < 35:
        raise InvalidSignatureError("unable to reconstruct public key from signature")
    if not is_bip62_canonical(signature):
        raise InvalidSignatureError("signature is not canonical")
    recid = (signature[0] - 27) & 3
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            signature[1:] + bytes([recid]), digest, hasher=None)
    except (ValueError, TypeError) as e:
        raise InvalidSignatureError("unable to reconstruct public key from signature") from e
    return bytes(public.format(compressed=True))
