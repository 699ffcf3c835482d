"""Transactions as hived reads them from JSON, packs, hashes and checks them. Pure.

hived sources followed:
- fc/reflect/variant.hpp: JSON fills a struct field by field; unknown members are
  ignored, missing members keep their defaults.
- fc/static_variant.hpp, protocol/legacy_asset.hpp, asset.cpp: ops are ``["name", {}]``
  with "1.000 HIVE" strings (condenser) or ``{"type": "name_operation", "value": {}}``
  with NAI objects (appbase); on Hive the pre-HF24 symbols STEEM and SBD still parse.
- protocol/transaction.cpp: ``id()`` = sha256(packed unsigned tx)[:20];
  ``sig_digest()`` = sha256(chain_id + packed unsigned tx); one key may sign once.
- protocol/block.cpp: block id = sha224(packed signed header) with the block number
  big-endian in its first 4 bytes, cut to 20 bytes; merkle root = ripemd160 of the
  pairwise-sha256 tree over sha256(packed signed tx).
Only the legacy binary serialization (the one beem signs) is produced, not HF26's.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from devnet import ops
from devnet.errors import TxRejectedError
from devnet.keys import public_key_from_str, public_key_to_str, recover_public_key
from devnet.ops import (  # re-exported: the operation types are part of this API
    AccountWitnessVote,
    Amount,
    ChainProperties,
    Operation,
    RequiredAuthorities,
    Transfer,
    WitnessSetProperties,
    WitnessUpdate,
    reject,
    required_authorities,
    varint,
)
from shared.chains import Asset, ChainProfile

__all__ = [
    "AccountWitnessVote", "Amount", "ChainProperties", "DecodedTransaction", "Operation",
    "RequiredAuthorities", "Transfer", "WitnessSetProperties", "WitnessUpdate", "block_id",
    "decode_transaction", "operation_json", "pack_block_header", "recover_signers",
    "required_authorities", "transaction_hex", "transaction_json", "transaction_merkle_root",
]

MAX_TRANSACTION_SIZE = 64 * 1024 - 256  # maximum_block_size - 256 at the minimum block size
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
_INT = re.compile(r"[+-]?[0-9]{1,40}")  # bounded: int() refuses > 4300 digits
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_MISSING = object()
_IDS = {t.op_id: t.name for t in ops.OPERATION_TYPES.values()}


# ---- JSON values, read the way fc::variant converts them --------------------------------


def _object(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise reject(f"{what}: expected an object")
    return value


def _list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise reject(f"{what}: expected an array")
    return value


def _string(obj: dict[str, object], key: str, default: str = "") -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise reject(f"{key}: expected a string")
    return value


def _uint(obj: dict[str, object], key: str, bits: int, default: int = 0) -> int:
    value = obj.get(key, default)
    if isinstance(value, str) and _INT.fullmatch(value):
        value = int(value)  # fc converts numeric strings too
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise reject(f"{key}: expected an unsigned {bits}-bit integer")
    return value


def _hex(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise reject(f"{what}: expected a hex string")
    return bytes.fromhex(value)


def _public_key(obj: dict[str, object], key: str) -> str:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        return public_key_to_str(ops.NULL_KEY_BYTES)  # public_key_type() is the null key
    if not isinstance(value, str):
        raise reject(f"{key}: expected a public key string")
    public_key_from_str(value)
    return value


def _to_int64(text: str, what: str) -> int:
    if not _INT.fullmatch(text) or not -(1 << 63) <= int(text) < 1 << 63:
        raise reject(f"{what}: Couldn't parse int64_t")
    return int(text)


def _legacy_asset(text: str, profile: ChainProfile, what: str) -> Amount:
    """hived's ``legacy_asset::from_string``, including its arithmetic."""
    s = text.strip(" \t\n\r")
    space, dot = s.find(" "), s.find(".")
    if space < 0 or (dot >= 0 and dot > space):
        raise reject(f"{what}: Cannot parse asset")
    int_part, frac = (s[:dot], s[dot + 1:space]) if dot >= 0 else (s[:space], "")
    name = s[space + 1:].strip(" \t\n\r")
    assets = {a.symbol: a for a in (profile.core, profile.debt, profile.vests)}
    assets.update({a.legacy_name: a for a in (profile.core, profile.debt, profile.vests)})
    asset = assets.get(name) if re.fullmatch(r"[A-Z]{1,8}", name) else None
    if asset is None:
        raise reject(f"{what}: Cannot parse asset symbol")
    if len(frac) != asset.precision:
        raise reject(f"{what}: Incorrect decimal places")
    # hived appends the zeros and adds the fraction separately: "-1.500" is -500.
    amount = _to_int64(int_part + "0" * asset.precision, what)
    amount += _to_int64("1" + frac, what) - 10 ** asset.precision
    if not -(1 << 63) <= amount < 1 << 63:
        raise reject(f"{what}: Couldn't parse int64_t")
    return Amount(amount, asset)


def _nai_asset(value: object, profile: ChainProfile, what: str) -> Amount:
    """hived's non-legacy ``from_variant(asset)``: amount string, precision, NAI."""
    obj = _object(value, what)
    amount, precision, nai = obj.get("amount"), obj.get("precision"), obj.get("nai")
    if not isinstance(amount, str) or isinstance(precision, bool) or not isinstance(
            precision, int) or not isinstance(nai, str):
        raise reject(f"{what}: expected {{amount: string, precision: uint, nai: string}}")
    satoshis = _to_int64(amount, what)
    if satoshis < 0:
        raise reject(f"{what}: Asset amount cannot be negative")
    asset = next((a for a in (profile.core, profile.debt, profile.vests) if a.nai == nai), None)
    if asset is None or precision != asset.precision:
        raise reject(f"{what}: unknown NAI or wrong precision")
    return Amount(satoshis, asset)


def _asset(obj: dict[str, object], key: str, profile: ChainProfile, legacy: bool) -> Amount:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        return Amount(0, profile.core)  # asset() is 0 of the core asset
    if legacy:
        if not isinstance(value, str):
            raise reject(f"{key}: expected an asset string")
        return _legacy_asset(value, profile, key)
    return _nai_asset(value, profile, key)


# ---- operations from JSON --------------------------------------------------------------


def _decode_fields(name: str, v: dict[str, object], profile: ChainProfile,
                   legacy: bool) -> Operation:
    if name == "witness_update":
        props = _object(v.get("props", {}), "props")
        defaults = ChainProperties()
        fee = (_asset(props, "account_creation_fee", profile, legacy)
               if "account_creation_fee" in props
               else Amount(defaults.account_creation_fee, profile.core))
        if fee.asset != profile.core:  # legacy_hive_asset::from_asset
            raise reject(f"account_creation_fee must be {profile.core.symbol}")
        return WitnessUpdate(
            _string(v, "owner"), _string(v, "url"), _public_key(v, "block_signing_key"),
            ChainProperties(
                fee.amount,
                _uint(props, "maximum_block_size", 32, defaults.maximum_block_size),
                # The other chain's field name is unknown here: hived ignores it.
                _uint(props, profile.interest_field, 16, defaults.interest_rate)),
            _asset(v, "fee", profile, legacy))
    if name == "witness_set_properties":
        pairs: dict[str, bytes] = {}
        for pair in _list(v.get("props", []), "props"):
            item = _list(pair, "props entry")
            if len(item) != 2 or not isinstance(item[0], str):
                raise reject("props entry: expected [name, hex]")
            pairs.setdefault(item[0], _hex(item[1], item[0]))  # flat_map: first one wins
        if _list(v.get("extensions", []), "extensions"):
            raise reject("extensions are not supported by the devnet")
        return ops.witness_set_properties(_string(v, "owner"), list(pairs.items()), profile)
    if name == "transfer":
        amount = _asset(v, "amount", profile, legacy)
        return Transfer(_string(v, "from"), _string(v, "to"), amount.amount, amount.asset,
                        _string(v, "memo"))
    approve = v.get("approve", True)
    if not isinstance(approve, bool):
        raise reject("approve: expected a boolean")
    return AccountWitnessVote(_string(v, "account"), _string(v, "witness"), approve)


def _decode_operation(value: object, profile: ChainProfile, legacy: bool) -> Operation:
    if legacy:
        pair = _list(value, "operation")
        if len(pair) != 2:
            raise reject("operation: expected [name, {...}]")
        tag, body = pair
    else:
        obj = _object(value, "operation")
        if "type" not in obj or "value" not in obj:
            raise reject("operation: Type field doesn't exist.")
        tag, body = obj["type"], obj["value"]
    if isinstance(tag, int) and not isinstance(tag, bool):
        name = _IDS.get(tag)
    elif isinstance(tag, str):
        name = tag if legacy else tag.removesuffix("_operation")
        if not legacy and not tag.endswith("_operation"):
            name = None
    else:
        name = None
    if name not in ops.OPERATION_TYPES:
        raise reject(f"operation {tag!r} is unknown or not supported by the devnet")
    op = _decode_fields(name, _object(body, name), profile, legacy)
    ops.validate_operation(op, profile)
    return op


# ---- transactions ----------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedTransaction:
    """A transaction as hived holds it after parsing and validate(); built by decode only."""

    ref_block_num: int
    ref_block_prefix: int
    expiration: datetime
    operations: tuple[Operation, ...]
    signatures: tuple[bytes, ...]
    packed: bytes  # the unsigned transaction, legacy serialization
    txid: str
    legacy: bool  # condenser shape (arrays, asset strings) rather than appbase

    @property
    def packed_signed(self) -> bytes:
        """The signed transaction as packed into a block."""
        return self.packed + varint(len(self.signatures)) + b"".join(self.signatures)

    def digest(self, chain_id_hex: str) -> bytes:
        """hived's ``sig_digest``: sha256(chain id + packed unsigned transaction)."""
        return hashlib.sha256(bytes.fromhex(chain_id_hex) + self.packed).digest()


def _expiration(value: object) -> datetime:
    if value is _MISSING:
        return _EPOCH  # time_point_sec(): expired, the chain refuses it
    if not isinstance(value, str):
        raise reject("expiration: expected an ISO time string")
    try:
        when = datetime.strptime(re.sub(r"\.[0-9]*$", "", value), _TIME_FORMAT)
    except ValueError as e:
        raise reject("unable to convert ISO-formatted string to fc::time_point_sec") from e
    when = when.replace(tzinfo=UTC)
    if not 0 <= (when - _EPOCH).total_seconds() < 1 << 32:
        raise reject("expiration: out of range")
    return when


def decode_transaction(tx_json: object, profile: ChainProfile, *,
                       legacy: bool | None = None) -> DecodedTransaction:
    """Parse, validate and pack a transaction given as JSON, as hived does.

    ``legacy=True`` is condenser_api (``["name", {...}]``, asset strings), False is
    appbase (``{"type", "value"}``, NAI assets), None takes the shape of the first
    operation, as network_broadcast_api accepts both.

    Raises:
        TxRejectedError: the JSON does not convert, an operation fails validate(),
            or the transaction is too large.
    """
    tx = _object(tx_json, "transaction")
    ops_json = _list(tx.get("operations", []), "operations")
    if legacy is None:
        legacy = bool(ops_json) and isinstance(ops_json[0], list)
    if not ops_json:
        raise reject("A transaction must have at least one operation")
    operations = tuple(_decode_operation(op, profile, legacy) for op in ops_json)
    if _list(tx.get("extensions", []), "extensions"):
        raise reject("transaction extensions are not supported by the devnet")
    signatures = tuple(_hex(s, "signature") for s in _list(tx.get("signatures", []),
                                                          "signatures"))
    if any(len(s) != 65 for s in signatures):
        raise reject("signature: expected 65 bytes")
    expiration = _expiration(tx.get("expiration", _MISSING))
    ref_num, ref_prefix = _uint(tx, "ref_block_num", 16), _uint(tx, "ref_block_prefix", 32)
    packed = (struct.pack("<HII", ref_num, ref_prefix, int((expiration - _EPOCH).total_seconds()))
              + varint(len(operations))
              + b"".join(ops.pack_operation(op, profile) for op in operations) + varint(0))
    decoded = DecodedTransaction(ref_num, ref_prefix, expiration, operations, signatures, packed,
                                 hashlib.sha256(packed).digest()[:20].hex(), legacy)
    if len(decoded.packed_signed) > MAX_TRANSACTION_SIZE:
        raise reject(f"transaction is larger than {MAX_TRANSACTION_SIZE} bytes")
    return decoded


def transaction_hex(decoded: DecodedTransaction) -> str:
    """``get_transaction_hex``: the packed signed transaction in hex."""
    return decoded.packed_signed.hex()


def recover_signers(decoded: DecodedTransaction, chain_id_hex: str) -> set[str]:
    """The public keys that signed ``decoded`` for this chain, as hived recovers them.

    A signature made for another chain id recovers some other key.

    Raises:
        InvalidSignatureError: a signature is malformed or not canonical.
        TxRejectedError: two signatures of the same key.
    """
    digest = decoded.digest(chain_id_hex)
    signers: set[str] = set()
    for signature in decoded.signatures:
        key = public_key_to_str(recover_public_key(digest, signature))
        if key in signers:
            raise TxRejectedError("duplicate signature included: Duplicate signature detected")
        signers.add(key)
    return signers


# ---- JSON out, as hived renders operations in blocks -------------------------------------


def _amount_json(amount: int, asset: Asset, legacy: bool) -> object:
    if legacy:
        whole, frac = divmod(abs(amount), 10 ** asset.precision)
        sign = "-" if amount < 0 else ""
        return f"{sign}{whole}.{frac:0{asset.precision}d} {asset.symbol}"
    return {"amount": str(amount), "precision": asset.precision, "nai": asset.nai}


def operation_json(op: Operation, profile: ChainProfile, *, legacy: bool) -> object:
    """``op`` as hived renders it: condenser ``[name, {...}]`` or ``{type, value}``."""
    value: dict[str, object]
    if isinstance(op, WitnessUpdate):
        value = {"owner": op.owner, "url": op.url, "block_signing_key": op.block_signing_key,
                 "props": {"account_creation_fee": _amount_json(
                     op.props.account_creation_fee, profile.core, legacy),
                     "maximum_block_size": op.props.maximum_block_size,
                     profile.interest_field: op.props.interest_rate},
                 "fee": _amount_json(op.fee.amount, op.fee.asset, legacy)}
    elif isinstance(op, WitnessSetProperties):
        value = {"owner": op.owner, "props": [[k, v.hex()] for k, v in op.props],
                 "extensions": []}
    elif isinstance(op, Transfer):
        value = {"from": op.from_, "to": op.to,
                 "amount": _amount_json(op.amount, op.asset, legacy), "memo": op.memo}
    else:
        value = {"account": op.account, "witness": op.witness, "approve": op.approve}
    return [op.name, value] if legacy else {"type": f"{op.name}_operation", "value": value}


def transaction_json(decoded: DecodedTransaction, profile: ChainProfile, *,
                     legacy: bool) -> dict[str, Any]:
    """A signed transaction as hived renders it inside a block."""
    return {"ref_block_num": decoded.ref_block_num,
            "ref_block_prefix": decoded.ref_block_prefix,
            "expiration": decoded.expiration.strftime(_TIME_FORMAT),
            "operations": [operation_json(op, profile, legacy=legacy)
                           for op in decoded.operations],
            "extensions": [], "signatures": [s.hex() for s in decoded.signatures]}


# ---- blocks ------------------------------------------------------------------------------


def transaction_merkle_root(transactions: Sequence[DecodedTransaction]) -> str:
    """hived's ``signed_block::calculate_merkle_root`` as 40 hex digits (zeros if empty)."""
    if not transactions:
        return "0" * 40
    ids = [hashlib.sha256(t.packed_signed).digest() for t in transactions]
    while len(ids) > 1:
        paired = [hashlib.sha256(a + b).digest() for a, b in zip(ids[::2], ids[1::2],
                                                                  strict=False)]
        ids = paired + ids[len(paired) * 2:]  # an odd last hash is carried up unchanged
    return hashlib.new("ripemd160", ids[0]).hexdigest()


def pack_block_header(previous: str, timestamp: datetime, witness: str,
                      transaction_merkle_root: str) -> bytes:
    """A packed ``block_header``: previous id, time, witness, merkle root, no extensions.

    Its sha256 is the digest the witness signs.
    """
    seconds = int((timestamp - _EPOCH).total_seconds())
    return (bytes.fromhex(previous) + struct.pack("<I", seconds) + ops.pack_string(witness)
            + bytes.fromhex(transaction_merkle_root) + varint(0))


def block_id(packed_header: bytes, block_num: int, witness_signature: bytes | None = None) -> str:
    """hived's ``signed_block_header::id()``: sha224 of the packed *signed* header, the
    block number big-endian in the first 4 bytes, cut to 20 bytes.

    hived hashes the header with its 65-byte signature appended; without
    ``witness_signature`` this is the same construction over the unsigned header.
    """
    signed = packed_header + (witness_signature or b"")
    return (struct.pack(">I", block_num) + hashlib.sha224(signed).digest()[4:20]).hex()

