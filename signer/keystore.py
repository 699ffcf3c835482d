"""The encrypted chain-key store: the only signer module that decrypts chain private keys.

On disk (JSON, mode 0600)::

    {"format": "witness-failover-keystore", "version": 1,
     "kdf": {"name": "argon2id", "opslimit": 3, "memlimit": 268435456, "salt": "<b64>"},
     "cipher": {"name": "xsalsa20poly1305", "box": "<b64 of nonce || ciphertext>"}}

The box (``nacl.secret.SecretBox``, key = Argon2id(passphrase, salt)) holds
``{"keys": {"STM...": {"role": "active" | "signing", "wif": "5..."}}}``. Nothing
but the KDF parameters and the ciphertext is stored in the clear.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import threading
from pathlib import Path
from typing import Any, Final, Literal, NoReturn, Protocol, TypeGuard, cast, get_args

import nacl.exceptions
import nacl.pwhash.argon2id
import nacl.secret
import nacl.utils
from beemgraphenebase.account import PrivateKey, PublicKey
from beemgraphenebase.base58 import base58CheckDecode, base58CheckEncode
from beemgraphenebase.ecdsasig import sign_message, verify_message

from shared.chains import ADDRESS_PREFIX
from shared.errors import KeystoreError
from shared.secret import Secret
from signer.authority import check_authority
from signer.passphrase import PassphraseSource, read_passphrase, read_wif_noecho
from signer.privatefile import read_private_file, write_private_file

__all__ = [
    "FORMAT",
    "MEMLIMIT_INTERACTIVE",
    "MEMLIMIT_MIN",
    "MEMLIMIT_MODERATE",
    "OPSLIMIT_INTERACTIVE",
    "OPSLIMIT_MIN",
    "OPSLIMIT_MODERATE",
    "ROLES",
    "VERSION",
    "Keystore",
    "PassphraseSource",
    "Role",
    "Secret",
    "SignableTransaction",
    "SigningKey",
    "check_authority",
    "create_keystore",
    "read_passphrase",
    "read_wif_noecho",
]

Role = Literal["active", "signing"]
ROLES: Final[tuple[str, ...]] = get_args(Role)

FORMAT: Final = "witness-failover-keystore"
VERSION: Final = 1
OPSLIMIT_MODERATE: Final[int] = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
MEMLIMIT_MODERATE: Final[int] = nacl.pwhash.argon2id.MEMLIMIT_MODERATE
OPSLIMIT_INTERACTIVE: Final[int] = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
MEMLIMIT_INTERACTIVE: Final[int] = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
OPSLIMIT_MIN: Final[int] = nacl.pwhash.argon2id.OPSLIMIT_MIN
MEMLIMIT_MIN: Final[int] = nacl.pwhash.argon2id.MEMLIMIT_MIN
# SECURITY: the KDF cost is read from the (unauthenticated) file; cap it so a
# planted keystore cannot make the signer allocate unbounded memory.
_MEMLIMIT_CEILING: Final = 4 << 30
_OPSLIMIT_CEILING: Final = 64
_MAX_FILE_BYTES: Final = 1 << 20
_SECP256K1_ORDER: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_CHAIN_ID = re.compile(r"[0-9a-f]{64}")


class SignableTransaction(Protocol):
    """The part of beem's ``Signed_Transaction`` the keystore uses."""

    def deriveDigest(self, chain: dict[str, str]) -> None:  # noqa: N802 - beem's method name
        """Serialise the transaction and compute its digest for ``chain``."""

    def sign(self, wifkeys: list[str], chain: dict[str, str]) -> object:
        """Replace the signatures by ones made with ``wifkeys`` for ``chain``."""

    def verify(self, pubkeys: list[Any], chain: dict[str, str]) -> list[str]:
        """Raise unless every key in ``pubkeys`` signed the transaction for ``chain``."""


class SigningKey:
    """Opaque handle on one chain key: it can sign a transaction and nothing else."""

    __slots__ = ("_lock", "_raw", "public_key", "role")

    def __init__(self, public_key: str, role: Role, raw: bytearray, lock: threading.RLock) -> None:
        self.public_key = public_key
        self.role: Role = role
        self._raw = raw
        self._lock = lock

    def sign_transaction(self, tx: SignableTransaction, chain_id: str) -> None:
        """Sign ``tx`` in place for the explicit ``chain_id`` (64 lowercase hex digits).

        The WIF exists as a string only for the duration of this call. Existing
        signatures are replaced (beem's behaviour).

        Raises:
            KeystoreError: bad chain id, closed keystore, unserialisable tx, or signing failed.
        """
        if not isinstance(chain_id, str) or not _CHAIN_ID.fullmatch(chain_id):
            raise KeystoreError("chain id must be 64 lowercase hex digits")
        # SECURITY: always an explicit chain dict; beem's named chains ("HIVE",
        # "STEEM") and its defaults carry the all-zero id (T6, wrong chain).
        chain = {"chain_id": chain_id, "prefix": ADDRESS_PREFIX}
        try:
            tx.deriveDigest(chain)
        except Exception as e:  # beem raises bare Exception/AssertionError
            raise KeystoreError(f"transaction cannot be serialised: {type(e).__name__}") from e
        failure: str | None = None
        with self._lock:
            if not any(self._raw):  # zeroed by Keystore.close(); a real key is never 0
                raise KeystoreError("keystore is closed")
            try:
                tx.sign([_wif_from_raw(self._raw)], chain=chain)
            except Exception as e:  # noqa: BLE001 - beem raises bare Exception/AssertionError
                failure = type(e).__name__
            finally:
                # SECURITY: beem keeps the WIFs it signed with on the transaction
                # (Signed_Transaction.sign sets self.privkeys); scrub them.
                with contextlib.suppress(TypeError):  # no __dict__: nothing stored
                    vars(tx).pop("privkeys", None)
        if failure is not None:
            # SECURITY: not chained: the cause's frames hold the WIF in their locals.
            raise KeystoreError(f"signing failed: {failure}")
        try:
            tx.verify([PublicKey(self.public_key, prefix=ADDRESS_PREFIX)], chain=chain)
        except Exception as e:  # beem raises bare Exception
            raise KeystoreError("signature does not verify against the key's public key") from e

    def __repr__(self) -> str:
        return f"<SigningKey {self.public_key} role={self.role}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SigningKey cannot be pickled")


class Keystore:
    """Decrypted chain keys in memory; build with :meth:`open` or :func:`create_keystore`."""

    def __init__(self, path: Path, opslimit: int, memlimit: int) -> None:
        self._path = path
        self._opslimit = opslimit
        self._memlimit = memlimit
        self._lock = threading.RLock()
        self._keys: dict[str, SigningKey] = {}

    @classmethod
    def open(cls, path: str | Path, passphrase: Secret) -> Keystore:
        """Read, check and decrypt the keystore at ``path``.

        Raises:
            KeystoreError: missing or unsafe file, bad format, or wrong passphrase.
        """
        path = Path(path)
        raw_file = read_private_file(path, "keystore", _MAX_FILE_BYTES)
        if raw_file is None:
            raise KeystoreError(f"{path}: no keystore here; create or import one first")
        salt, box, opslimit, memlimit = _parse_envelope(path, raw_file)
        key = _derive_key(passphrase, salt, opslimit, memlimit)
        try:
            plaintext = nacl.secret.SecretBox(key).decrypt(box)
        except nacl.exceptions.CryptoError as e:
            raise KeystoreError(f"{path}: wrong passphrase or corrupted keystore") from e
        store = cls(path, opslimit, memlimit)
        entries = _parse_payload(plaintext)
        if entries is None:
            # SECURITY: not chained: a JSON error would carry the plaintext (.doc).
            raise KeystoreError(f"{path}: keystore payload is malformed")
        with contextlib.ExitStack() as on_error:
            on_error.callback(store.close)  # zero what was loaded if any entry is bad
            for pubkey, (role, wif) in entries.items():
                if store._add(wif, role) != pubkey:
                    raise KeystoreError(f"{path}: entry {pubkey} does not hold that key")
            on_error.pop_all()
        return store

    @property
    def path(self) -> Path:
        """Where the keystore lives on disk."""
        return self._path

    def public_keys(self, role: Role | None = None) -> list[str]:
        """Return the public keys held, optionally only those with ``role``."""
        with self._lock:
            return [k for k, v in self._keys.items() if role is None or v.role == role]

    def add(self, wif: Secret | str, role: Role) -> str:
        """Add a WIF private key under ``role`` in memory and return its public key.

        Raises:
            KeystoreError: invalid WIF (never echoed), unknown role, or a role conflict.
        """
        if role not in ROLES:
            raise KeystoreError(f"unknown role {role!r}; expected one of {list(ROLES)}")
        text = wif.reveal() if isinstance(wif, Secret) else wif
        return self._add(text.strip() if isinstance(text, str) else "", role)

    def _add(self, wif: str, role: Role) -> str:
        raw = _raw_from_wif(wif)
        if raw is None:
            raise KeystoreError("not a valid WIF private key")
        pubkey = str(PrivateKey(raw.hex(), prefix=ADDRESS_PREFIX).pubkey)
        with self._lock:
            existing = self._keys.get(pubkey)
            if existing is not None and existing.role != role:
                raise KeystoreError(f"{pubkey} is already held with role {existing.role}")
            if existing is None:
                self._keys[pubkey] = SigningKey(pubkey, role, raw, self._lock)
        return pubkey

    def save(self, passphrase: Secret) -> None:
        """Encrypt the keys under ``passphrase`` (fresh salt and nonce) and replace the file.

        Saving with a different passphrase changes it.

        Raises:
            KeystoreError: the file cannot be written or the keystore is closed.
        """
        with self._lock:
            payload = {
                k: {"role": v.role, "wif": _wif_from_raw(self._live(v))}
                for k, v in self._keys.items()
            }
            plaintext = json.dumps({"keys": payload}, sort_keys=True).encode()
        _write_keystore(self._path, passphrase, plaintext, self._opslimit, self._memlimit)

    def private_key_for(self, pubkey: str) -> SigningKey:
        """Return the signing handle for ``pubkey``.

        Raises:
            KeystoreError: the key is not held.
        """
        with self._lock:
            try:
                return self._keys[pubkey]
            except KeyError:
                raise KeystoreError(f"no private key for {pubkey} in {self._path}") from None

    def sign_transaction(self, tx: SignableTransaction, pubkey: str, chain_id: str) -> None:
        """Sign ``tx`` in place with the key of ``pubkey`` for the explicit ``chain_id``.

        Raises:
            KeystoreError: key not held, bad chain id, or signing failed.
        """
        self.private_key_for(pubkey).sign_transaction(tx, chain_id)

    def close(self) -> None:
        """Overwrite the key bytes held (best effort: CPython may keep transient copies)."""
        with self._lock:
            for entry in self._keys.values():
                entry._raw[:] = bytes(len(entry._raw))

    def __enter__(self) -> Keystore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Keystore {self._path} keys={len(self._keys)}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Keystore cannot be pickled")

    def _live(self, entry: SigningKey) -> bytearray:
        if not any(entry._raw):
            raise KeystoreError("keystore is closed")
        return entry._raw


def warm_up_signing() -> None:
    """Sign and verify once with a throwaway key, so the first real switch is not the
    first signature of the process (the curve's tables are built lazily: that first
    one costs about twice a later one, on the failover's critical path).

    Raises:
        KeystoreError: signing does not work in this environment.
    """
    throwaway = PrivateKey()
    try:
        verify_message(b"warm-up", sign_message(b"warm-up", str(throwaway)))
    except Exception as e:  # noqa: BLE001 - beem raises bare Exception/AssertionError
        raise KeystoreError(f"signing does not work: {type(e).__name__}") from None


def create_keystore(
    path: str | Path,
    passphrase: Secret,
    *,
    opslimit: int = OPSLIMIT_MODERATE,
    memlimit: int = MEMLIMIT_MODERATE,
) -> Keystore:
    """Write a new, empty keystore at ``path`` and return it open.

    Raises:
        KeystoreError: the file exists, the cost is out of range, or it cannot be written.
    """
    path = Path(path)
    _check_cost(path, opslimit, memlimit)
    if path.exists() or path.is_symlink():
        raise KeystoreError(f"{path}: already exists; refusing to overwrite a keystore")
    store = Keystore(path, opslimit, memlimit)
    store.save(passphrase)
    return store


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _raw_from_wif(wif: str) -> bytearray | None:
    """Decode a WIF to its 32 secret bytes, or None; never raises, never echoes it."""
    try:
        payload = bytes.fromhex(base58CheckDecode(wif, skip_first_bytes=False))
    except (AssertionError, ValueError, KeyError, TypeError, IndexError):
        return None
    if len(payload) == 34 and payload[-1] == 1:  # compressed-pubkey WIF ("K"/"L")
        payload = payload[:-1]
    if len(payload) != 33 or payload[0] != 0x80:
        return None
    if not 0 < int.from_bytes(payload[1:], "big") < _SECP256K1_ORDER:
        return None
    return bytearray(payload[1:])


def _wif_from_raw(raw: bytearray) -> str:
    return cast(str, base58CheckEncode(0x80, raw.hex()))


def _parse_envelope(path: Path, data: bytes) -> tuple[bytes, bytes, int, int]:
    try:
        doc = json.loads(data)
        kdf, cipher = doc["kdf"], doc["cipher"]
        if doc["format"] != FORMAT or doc["version"] != VERSION:
            raise KeystoreError(f"{path}: not a version {VERSION} {FORMAT} file")
        if kdf["name"] != "argon2id" or cipher["name"] != "xsalsa20poly1305":
            raise KeystoreError(f"{path}: unsupported kdf or cipher")
        salt = base64.b64decode(kdf["salt"], validate=True)
        box = base64.b64decode(cipher["box"], validate=True)
        opslimit, memlimit = kdf["opslimit"], kdf["memlimit"]
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise KeystoreError(f"{path}: not a readable keystore file ({type(e).__name__})") from e
    if len(salt) != nacl.pwhash.argon2id.SALTBYTES:
        raise KeystoreError(f"{path}: salt has the wrong length")
    _check_cost(path, opslimit, memlimit)
    return salt, box, opslimit, memlimit


def _parse_payload(plaintext: bytes) -> dict[str, tuple[Role, str]] | None:
    try:
        keys = json.loads(plaintext)["keys"]
        out = {p: (e["role"], e["wif"]) for p, e in keys.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if all(isinstance(p, str) and r in ROLES and isinstance(w, str) for p, (r, w) in out.items()):
        return out
    return None


def _check_cost(path: Path, opslimit: object, memlimit: object) -> None:
    ok_ops = _is_int(opslimit) and OPSLIMIT_MIN <= opslimit <= _OPSLIMIT_CEILING
    ok_mem = _is_int(memlimit) and MEMLIMIT_MIN <= memlimit <= _MEMLIMIT_CEILING
    if not (ok_ops and ok_mem):
        raise KeystoreError(f"{path}: Argon2id opslimit/memlimit out of range")


def _derive_key(passphrase: Secret, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    if not isinstance(passphrase, Secret) or not passphrase.reveal():
        raise KeystoreError("the passphrase must be a non-empty Secret")
    try:
        return nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE, passphrase.reveal().encode(), salt,
            opslimit=opslimit, memlimit=memlimit,
        )
    except nacl.exceptions.CryptoError as e:
        raise KeystoreError(f"key derivation failed: {type(e).__name__}") from e


def _write_keystore(
    path: Path, passphrase: Secret, plaintext: bytes, opslimit: int, memlimit: int
) -> None:
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    box = nacl.secret.SecretBox(_derive_key(passphrase, salt, opslimit, memlimit))
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "kdf": {"name": "argon2id", "opslimit": opslimit, "memlimit": memlimit,
                "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "xsalsa20poly1305",
                   "box": base64.b64encode(bytes(box.encrypt(plaintext))).decode()},
    }
    write_private_file(path, (json.dumps(doc, indent=2) + "\n").encode(), "keystore")
