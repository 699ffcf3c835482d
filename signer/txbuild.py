"""The pure transaction builder: the key-change operation, TaPoS and beem's unsigned tx.

Values in, values out: no sockets, no clock, no keys (:mod:`signer.keystore` signs,
:mod:`signer.chain` reads the chain and broadcasts). beem serves only as a
serialiser; every beem exception is translated here, ``from e``. beem's
transaction object stays between this module and the keystore:
:func:`sign_switch` returns our own :class:`BuiltTransaction`.
:func:`build_unsigned_transaction` returns beem's object for the keystore's and
the byte-level tests only.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from beembase import operations as beem_operations
from beembase.objects import Operation
from beembase.signedtransactions import Signed_Transaction
from beemgraphenebase.account import PublicKey

from shared.chaindata import DynamicProps, WitnessInfo
from shared.chains import ADDRESS_PREFIX, MAX_EXPIRATION_S, NULL_KEY, ChainProfile
from shared.errors import ChainDataError, PolicyError
from signer.policy import ChainView, KeyMode
from signer.ports import BuiltTransaction

__all__ = [
    "MAX_URL_BYTES",
    "MIN_BLOCK_SIZE",
    "PERCENT_100",
    "TIME_FORMAT",
    "Tapos",
    "build_switch_operation",
    "build_switch_operation_from",
    "build_unsigned_transaction",
    "is_expired",
    "sign_switch",
    "tapos",
]

log = logging.getLogger(__name__)

MAX_URL_BYTES = 2048  # HIVE_MAX_WITNESS_URL_LENGTH (libraries/protocol/config.hpp)
MIN_BLOCK_SIZE = 65536  # HIVE_MIN_BLOCK_SIZE_LIMIT, checked by chain_properties::validate
PERCENT_100 = 10000  # HIVE_100_PERCENT, the interest rate's upper bound
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"  # hived's fc::time_point_sec
_LEGACY_AMOUNT = re.compile(r"(\d+)\.(\d+) ([A-Z]+)")
_MANGLED_BY_BEEM = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass(frozen=True)
class Tapos:
    """TaPoS fields and the expiration, all derived from one head block."""

    ref_block_num: int
    ref_block_prefix: int
    expiration: datetime


def build_switch_operation(mode: KeyMode, witness: WitnessInfo, target_key: str,
                           profile: ChainProfile) -> tuple[str, dict[str, Any]]:
    """Return (op name, op dict) switching ``witness`` to ``target_key``; pure.

    Raises:
        PolicyError: unknown mode, invalid target, or the null key in signing mode.
        ChainDataError: the chain's url or props cannot be sent back unchanged.
    """
    return build_switch_operation_from(mode, witness.owner, witness, target_key, profile)


def build_switch_operation_from(
    mode: str, owner: str, chain: WitnessInfo | ChainView, target_key: str, profile: ChainProfile
) -> tuple[str, dict[str, Any]]:
    """:func:`build_switch_operation` from a witness or a view read for ``owner``; pure.

    Raises:
        PolicyError: unknown mode, invalid target, or the null key in signing mode.
        ChainDataError: the chain's url or props cannot be sent back unchanged.
    """
    _check_public_key(target_key, "target key")
    if mode == "signing":
        # witness_set_properties cannot re-enable a witness (the null key is no
        # authority), and disabling is left to the active key (DESIGN.md, key modes).
        if NULL_KEY in (target_key, chain.signing_key):
            raise PolicyError("signing mode neither sets nor replaces the null key; "
                              "that needs witness_update in active mode")
        _check_public_key(chain.signing_key, "on-chain signing key")
        # Only the props sent change (HF20): nothing but the key moves.
        return "witness_set_properties", {"owner": owner, "props": [
            ["key", chain.signing_key], ["new_signing_key", target_key]]}
    if mode != "active":
        raise PolicyError(f"unknown key mode {mode!r}")
    # SECURITY: T6 — witness_update overwrites url and props; send the chain's own back.
    return "witness_update", {
        "owner": owner,
        "url": _checked_url(chain.url),
        "block_signing_key": target_key,
        "props": _legacy_props(chain.props, profile),
        "fee": f"{0:.{profile.core.precision}f} {profile.core.symbol}",  # ignored by hived
    }


def _check_public_key(key: str, what: str) -> None:
    if key == NULL_KEY:
        return
    try:
        canonical = str(PublicKey(key, prefix=ADDRESS_PREFIX)) == key
    except Exception as e:  # beem raises bare AssertionError/ValueError on bad keys
        raise PolicyError(f"{what} is not a valid {ADDRESS_PREFIX} public key") from e
    if not canonical:
        raise PolicyError(f"{what} is not a canonical {ADDRESS_PREFIX} public key")


def _checked_url(url: object) -> str:
    # witness_update_operation::validate: 0 < size <= HIVE_MAX_WITNESS_URL_LENGTH, UTF-8.
    if not isinstance(url, str):
        raise ChainDataError("the witness url on chain is not a string")
    try:
        size = len(url.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise ChainDataError("the witness url on chain is not valid UTF-8") from e
    if not 0 < size <= MAX_URL_BYTES:
        raise ChainDataError(f"the witness url on chain has {size} bytes; "
                             f"witness_update needs 1..{MAX_URL_BYTES}")
    # beem 0.24.26's String.unicodify packs control characters other than \t \n \r
    # as text ("\x1f" -> "u001f"): the signed bytes would not match the JSON sent.
    if _MANGLED_BY_BEEM.search(url):
        raise ChainDataError("the witness url on chain holds control characters that "
                             "beem cannot serialise faithfully")
    return url


def _legacy_props(props: Mapping[str, object], profile: ChainProfile) -> dict[str, Any]:
    """witness_update's three legacy_chain_properties, under this chain's field names."""
    own, foreign = profile.interest_field, profile.foreign_interest_field
    # SECURITY: hived ignores unknown JSON fields, so the other chain's name would
    # silently pack a default rate and change the witness's vote: map it, or refuse.
    if own in props and foreign in props and props[own] != props[foreign]:
        raise ChainDataError(f"witness props carry both {own} and {foreign}, different")
    if foreign in props and own not in props:
        log.warning("witness props name the interest rate %s on %s; sent as %s",
                    foreign, profile.name, own)
    rate = props.get(own, props.get(foreign))
    if isinstance(rate, bool) or not isinstance(rate, int) or not 0 <= rate <= PERCENT_100:
        raise ChainDataError(f"witness props: {own} missing or not in 0..{PERCENT_100}")
    size = props.get("maximum_block_size")
    if isinstance(size, bool) or not isinstance(size, int) or not (
            MIN_BLOCK_SIZE <= size < 2**32):
        raise ChainDataError("witness props: maximum_block_size missing or out of range")
    return {"account_creation_fee": _core_amount(props.get("account_creation_fee"), profile),
            "maximum_block_size": size, own: rate}


def _core_amount(value: object, profile: ChainProfile) -> str:
    """A core-asset amount (legacy string or NAI object) as this chain's legacy string."""
    core, amount = profile.core, None
    if isinstance(value, str):
        m = _LEGACY_AMOUNT.fullmatch(value)
        # The legacy binary name (STEEM on Hive) packs identically; another chain's does not.
        if m and len(m[2]) == core.precision and m[3] in (core.symbol, core.legacy_name):
            amount = int(m[1] + m[2])
    elif isinstance(value, dict) and (value.get("nai"), value.get("precision")) == (
            core.nai, core.precision):
        raw = value.get("amount")
        amount = int(raw) if isinstance(raw, str) and raw.isdigit() else None
    if amount is None or amount >= 2**63:
        raise ChainDataError(f"witness props: account_creation_fee is not a {core.symbol} amount")
    whole, frac = divmod(amount, 10**core.precision)
    return f"{whole}.{frac:0{core.precision}d} {core.symbol}"


def tapos(head: DynamicProps, lifetime: timedelta) -> Tapos:
    """TaPoS on ``head`` and an expiration ``lifetime`` after its CHAIN time; pure.

    Raises:
        ChainDataError: ``lifetime`` is outside 1..3600 s.
    """
    seconds = int(lifetime.total_seconds())
    if not 0 < seconds <= MAX_EXPIRATION_S:
        raise ChainDataError(f"transaction lifetime must be 1..{MAX_EXPIRATION_S} s")
    block_id = bytes.fromhex(head.head_block_id)
    return Tapos(ref_block_num=head.head_block_number & 0xFFFF,
                 ref_block_prefix=int.from_bytes(block_id[4:8], "little"),
                 expiration=head.time + timedelta(seconds=seconds))


def build_unsigned_transaction(op_name: str, op_dict: Mapping[str, Any],
                               fields: Tapos) -> Signed_Transaction:
    """beem's transaction for one operation with explicit TaPoS and expiration; pure.

    Raises:
        ChainDataError: beem cannot serialise the operation.
    """
    klass = {"witness_update": beem_operations.Witness_update,
             "witness_set_properties": beem_operations.Witness_set_properties}.get(op_name)
    if klass is None:
        raise ChainDataError(f"unsupported operation {op_name!r}")
    try:
        op = Operation(klass(**copy.deepcopy(dict(op_dict)),  # beem writes into props
                             prefix=ADDRESS_PREFIX))
        tx = Signed_Transaction(ref_block_num=fields.ref_block_num,
                                ref_block_prefix=fields.ref_block_prefix,
                                expiration=fields.expiration.strftime(TIME_FORMAT),
                                operations=[op])
        sent = op.json()[1]
        bytes(tx)  # a bad value fails here, not while signing
    except Exception as e:  # beem raises bare Exception/AssertionError/ValueError
        raise ChainDataError(f"cannot serialise {op_name}: {type(e).__name__}") from e
    # The JSON a node parses must say what the signed bytes say (beem re-formats amounts).
    if op_name == "witness_update" and sent != dict(op_dict):
        raise ChainDataError("beem's JSON of witness_update differs from the values given")
    return tx


class TransactionSigner(Protocol):
    """What signs beem's transaction in place: :class:`signer.keystore.Keystore`."""

    def sign_transaction(self, tx: Signed_Transaction, pubkey: str, chain_id: str) -> None:
        """Sign ``tx`` in place with the key of ``pubkey`` for ``chain_id``."""
        ...


def sign_switch(op_name: str, op_dict: Mapping[str, Any], fields: Tapos, *, target_key: str,
                signer: TransactionSigner, pubkey: str, chain_id: str) -> BuiltTransaction:
    """Build the transaction, have ``signer`` sign it with ``pubkey``; return our own value.

    Raises:
        ChainDataError: beem cannot serialise the operation or the signed transaction.
        KeystoreError: the key is not held, or signing failed.
    """
    tx = build_unsigned_transaction(op_name, op_dict, fields)
    signer.sign_transaction(tx, pubkey, chain_id)
    try:
        tx_id = str(tx.id)  # sha256 of the packed unsigned tx, first 20 bytes (hived)
        tx_json = json.loads(json.dumps(tx.json()))
    except Exception as e:  # beem raises bare exceptions while serialising
        raise ChainDataError(f"cannot serialise the signed tx: {type(e).__name__}") from e
    return BuiltTransaction(tx_id=tx_id, target_key=target_key, expiration=fields.expiration,
                            operation=op_name, tx_json=tx_json)


def is_expired(tx: BuiltTransaction, head: DynamicProps) -> bool:
    """Whether ``tx`` can no longer be included: hived requires head time < expiration."""
    return head.time >= tx.expiration
