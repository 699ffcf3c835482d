"""Transactions built with beem's offline serialisers, for tests that play a client.

The chain id is always explicit: beem's default is all zeros (DESIGN.md pitfall).
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta
from typing import Any

from beembase import operations
from beembase.objects import Operation
from beembase.signedtransactions import Signed_Transaction
from beemgraphenebase.account import PrivateKey as BeemPrivateKey

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def public_key(wif: str) -> str:
    """The STM public key of a WIF, computed by beem."""
    return str(BeemPrivateKey(wif, prefix="STM").pubkey)


def tapos(status: dict[str, Any]) -> tuple[int, int]:
    """TaPoS fields referencing the head block in a devnet.status document."""
    head = int(status["head_block_number"])
    prefix = struct.unpack_from("<I", bytes.fromhex(status["head_block_id"]), 4)[0]
    return head & 0xFFFF, prefix


def head_time(status: dict[str, Any]) -> datetime:
    """The head block time of a devnet.status document."""
    return datetime.strptime(status["head_block_time"], TIME_FORMAT)


def sign(op: Any, status: dict[str, Any], wifs: list[str], chain_id: str, *,
         expiration: timedelta = timedelta(seconds=60),
         ref: tuple[int, int] | None = None) -> dict[str, Any]:
    """A signed legacy (condenser) transaction JSON carrying ``op``."""
    ref_num, ref_prefix = ref or tapos(status)
    tx = Signed_Transaction(
        ref_block_num=ref_num, ref_block_prefix=ref_prefix,
        expiration=(head_time(status) + expiration).strftime(TIME_FORMAT),
        operations=[Operation(op, prefix="STM")], prefix="STM",
    )
    tx.sign(wifs, chain={"chain_id": chain_id, "prefix": "STM"})
    return dict(tx.json())


def witness_update(owner: str, url: str, key: str, props: dict[str, Any],
                   core_symbol: str) -> Any:
    """A witness_update operation (beem)."""
    return operations.Witness_update(**{
        "owner": owner, "url": url, "block_signing_key": key, "props": dict(props),
        "fee": f"0.000 {core_symbol}", "prefix": "STM"})


def witness_set_properties(owner: str, current_key: str, new_key: str) -> Any:
    """A witness_set_properties operation changing only the signing key (beem)."""
    return operations.Witness_set_properties(**{
        "owner": owner, "props": [["key", current_key], ["new_signing_key", new_key]],
        "prefix": "STM"})
