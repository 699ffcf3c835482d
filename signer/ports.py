"""The signer's ports: what the service needs from the chain, the clock and the notifier.

The service (``signer/service.py``) is handed implementations of these; tests
hand in the devnet-backed real ones, never mocks of the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.chaindata import DynamicProps, WitnessInfo
from signer.policy import ChainView


@dataclass(frozen=True)
class BuiltTransaction:
    """A signed key-change transaction, ready to broadcast (never stored pre-signed)."""

    tx_id: str
    target_key: str
    expiration: datetime
    operation: str  # "witness_update" or "witness_set_properties"
    tx_json: dict[str, object]  # condenser (legacy) JSON, signatures included


@dataclass(frozen=True)
class WitnessReading:
    """One agreed read of the chain: the policy's view, the raw witness and the head.

    A decision is made on ``view`` and its transaction is built from the same
    reading: url and props from ``witness``, TaPoS from ``head``.
    """

    view: ChainView
    witness: WitnessInfo
    head: DynamicProps  # the newest block every agreeing node has: TaPoS refers to it


@dataclass(frozen=True)
class Inclusion:
    """Where a transaction landed, as re-read from the chain."""

    tx_id: str
    block_num: int
    signing_key: str  # the witness's on-chain key after inclusion


class SignerChain(Protocol):
    """Everything the signer does with the chain, over its own RPC node(s)."""

    def read_witness(self) -> WitnessReading:
        """Read the witness and head from the configured nodes, with quorum and stale checks.

        Raises:
            ChainUnavailableError: too few fresh nodes answered (never act).
            ChainDataError: the nodes disagree or say something impossible.
        """
        ...

    def read_view(self) -> ChainView:
        """The view of :meth:`read_witness` (same errors)."""
        ...

    def check_chain_id(self) -> None:
        """Verify every reachable node's get_config chain id equals the profile's.

        Raises:
            ChainDataError: a node is on another chain.
            ChainUnavailableError: no node answered.
        """
        ...

    def build(self, reading: WitnessReading, target_key: str) -> BuiltTransaction:
        """Build and sign the key change to ``target_key`` from ``reading``; no chain read.

        Url, props and TaPoS come from ``reading`` (the chain), never from config.

        Raises:
            ChainDataError: the chain id was not checked, or the reading cannot be sent back.
            PolicyError: the target is refused in this mode.
            KeystoreError: no key for the mode.
        """
        ...

    def broadcast(self, tx: BuiltTransaction) -> None:
        """Send ``tx`` to the node(s).

        Raises:
            BroadcastError: every node rejected or could not be reached.
        """
        ...

    def find_inclusion(self, tx: BuiltTransaction | str, target_key: str) -> Inclusion | None:
        """Whether the change landed: the tx is in a block, or the key is on chain."""
        ...
