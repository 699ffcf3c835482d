"""The devnet's block producer and transaction pool. Pure: time is slots, not clocks.

hived facts this module follows (libraries/chain/database.cpp):
- ``update_global_dynamic_data``: when block b is applied, the producer skipped
  ``slot(b) - 1`` slots; every witness scheduled in them, except b's producer,
  gets ``total_missed += 1``. Nothing is counted until a block is applied, so a
  halted chain counts nothing.
- ``update_signing_witness``: the producer's ``last_aslot`` and
  ``last_confirmed_block_num`` are set from the block.
- ``update_witness_schedule``: the schedule is reshuffled every
  ``num_scheduled_witnesses`` blocks; witnesses with the null key are left out.
- TaPoS: ``ref_block_num`` selects the block summary ``n & 0xFFFF``; the prefix is
  the id's second 32-bit word.
- A key set by a transaction in block N is checked from block N+1 on: the
  producer of a slot is decided before the block's transactions apply.
"""

from __future__ import annotations

import copy
import hashlib
import random
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from devnet import codec, evaluator
from devnet.errors import TxRejectedError
from devnet.keys import PrivateKey, sign_digest
from devnet.state import AcceptedTransaction, Block, ChainState
from shared.chains import BLOCK_INTERVAL_S, MAX_EXPIRATION_S, NULL_KEY, TAPOS_WINDOW

BLOCKS_PER_DAY = 28800  # HIVE_BLOCKS_PER_DAY: a witness missing this long is shut down
ZERO_ID = "0" * 40


@dataclass
class Node:
    """A producer process of the watched witness: a signing key, up or down.

    A ``stuck`` node runs but is out of sync (its head frozen). hived's witness
    plugin does not produce on a node that is not synced (witness_plugin.cpp,
    ``not_synced``), so a stuck node produces nothing, like a stopped one.
    """

    name: str
    key: PrivateKey
    up: bool = True
    stuck: bool = False

    @property
    def producing(self) -> bool:
        """Whether this node signs blocks in its witness's slots."""
        return self.up and not self.stuck

    @property
    def public_key(self) -> str:
        """The node's public signing key."""
        return self.key.public_key()


@dataclass(frozen=True)
class SlotRecord:
    """What happened in one slot: who was scheduled and whether a block came."""

    aslot: int
    time: datetime
    witness: str
    produced: bool


class Chain:
    """A single-node chain: schedule, production, missed-block accounting, tx pool.

    Not thread-safe: the server serialises every call under one lock.
    """

    def __init__(
        self,
        state: ChainState,
        *,
        watched: str,
        nodes: Sequence[Node],
        witness_keys: dict[str, PrivateKey],
        genesis_time: datetime,
        seed: int,
        slot_log_size: int = 4096,
    ) -> None:
        self.state = state
        self.profile = state.profile
        self.watched = watched
        self.nodes: dict[str, Node] = {n.name: n for n in nodes}
        self._witness_keys = witness_keys
        self._seed = seed
        self.head_time = genesis_time
        self.head_num = 0
        self.head_id = ZERO_ID
        self.current_aslot = 0
        self.pending_slots = 0  # slots elapsed since the head block
        self.double_production = 0
        self.watched_scheduled = 0  # slots the watched witness was scheduled for
        self.watched_produced = 0  # of those, slots it filled
        self.halted = False
        self.blocks: deque[Block] = deque(maxlen=TAPOS_WINDOW + 16)
        self._summaries: dict[int, str] = {}
        self._pending: list[codec.DecodedTransaction] = []
        self._pending_state = copy.deepcopy(state)
        self._recent_txids: dict[str, datetime] = {}
        self.slot_log: deque[SlotRecord] = deque(maxlen=slot_log_size)
        self.schedule: list[str] = []
        self.next_shuffle_block_num = 0
        self._reshuffle()

    # ---- schedule -------------------------------------------------------

    def _reshuffle(self) -> None:
        """Shuffle the active witnesses for the next round (hived: per round)."""
        active = sorted(w.owner for w in self.state.witnesses.values() if w.signing_key != NULL_KEY)
        rng = random.Random(f"{self._seed}:{self.head_num}")  # noqa: S311 - schedule, not a secret
        rng.shuffle(active)
        self.schedule = active
        self.next_shuffle_block_num = self.head_num + max(len(active), 1)

    def scheduled_witness(self, slot: int) -> str:
        """The witness scheduled ``slot`` slots after the head block (slot >= 1)."""
        if not self.schedule:
            return ""
        return self.schedule[(self.current_aslot + slot) % len(self.schedule)]

    def slot_time(self, slot: int) -> datetime:
        """Chain time of the slot ``slot`` slots after the head block."""
        return self.head_time + timedelta(seconds=BLOCK_INTERVAL_S * slot)

    @property
    def now(self) -> datetime:
        """The chain's current time: the latest slot that has begun."""
        return self.slot_time(self.pending_slots)

    # ---- production -----------------------------------------------------

    def producers_for(self, signing_key: str) -> list[Node]:
        """Producing (up, in sync) nodes that hold the private key of ``signing_key``."""
        return [n for n in self.nodes.values() if n.producing and n.public_key == signing_key]

    def tick(self) -> Block | None:
        """Advance chain time by one slot; produce a block if its witness can.

        A halted chain does not advance at all, so it counts nothing.
        """
        if self.halted:
            return None
        self.pending_slots += 1
        slot = self.pending_slots
        owner = self.scheduled_witness(slot)
        witness = self.state.witnesses.get(owner)
        signer: PrivateKey | None = None
        if witness is not None and witness.signing_key != NULL_KEY:
            if owner == self.watched:
                nodes = self.producers_for(witness.signing_key)
                if len(nodes) > 1:
                    # SECURITY: two live producers with one key is the hazard
                    # a failover must never create; count it so tests see it.
                    self.double_production += 1
                signer = nodes[0].key if nodes else None
            else:
                signer = self._witness_keys.get(owner)
                if signer is not None and signer.public_key() != witness.signing_key:
                    signer = None
        aslot = self.current_aslot + slot
        self.slot_log.append(SlotRecord(aslot, self.slot_time(slot), owner, signer is not None))
        if owner == self.watched:
            self.watched_scheduled += 1
            self.watched_produced += signer is not None
        if signer is None:
            return None
        return self._produce(slot, owner, signer)

    def _produce(self, slot: int, owner: str, signer: PrivateKey) -> Block:
        """Apply a block in ``slot`` by ``owner``: misses, txs, producer, schedule."""
        timestamp = self.slot_time(slot)
        number = self.head_num + 1
        new_state = copy.deepcopy(self.state)
        # update_global_dynamic_data: slots skipped before this block are misses.
        for skipped in range(1, slot):
            missed = new_state.witnesses.get(self.scheduled_witness(skipped))
            if missed is None or missed.owner == owner:
                continue
            missed.total_missed += 1
            if number - missed.last_confirmed_block_num > BLOCKS_PER_DAY:
                missed.signing_key = NULL_KEY  # hived's shutdown_witness_operation
        included: list[AcceptedTransaction] = []
        for decoded in self._pending:
            if decoded.expiration <= timestamp:
                continue
            trial = copy.deepcopy(new_state)
            try:
                evaluator.apply_transaction(trial, decoded, self.profile)
            except TxRejectedError:
                continue
            new_state = trial
            included.append(AcceptedTransaction(decoded.txid, decoded, number, len(included)))
        aslot = self.current_aslot + slot
        producer = new_state.witnesses[owner]
        producer.last_aslot = aslot
        producer.last_confirmed_block_num = number
        merkle = codec.transaction_merkle_root([t.decoded for t in included])
        header = codec.pack_block_header(self.head_id, timestamp, owner, merkle)
        # hived: witness_signature = sign_compact(sha256(packed block_header));
        # the id hashes the signed header.
        raw_signature = sign_digest(signer, hashlib.sha256(header).digest())
        block_id = codec.block_id(header, number, raw_signature)
        signature = raw_signature.hex()
        block = Block(
            number=number,
            block_id=block_id,
            previous=self.head_id,
            timestamp=timestamp,
            witness=owner,
            signing_key=signer.public_key(),
            witness_signature=signature,
            transaction_merkle_root=merkle,
            transactions=tuple(included),
            aslot=aslot,
        )
        self.state = new_state
        self.head_num = number
        self.head_id = block_id
        self.head_time = timestamp
        self.current_aslot = aslot
        self.pending_slots = 0
        self.blocks.append(block)
        self._summaries[number & 0xFFFF] = block_id
        self._pending = []
        self._pending_state = copy.deepcopy(new_state)
        self._prune_txids()
        if number >= self.next_shuffle_block_num:
            self._reshuffle()
        return block

    # ---- transactions -----------------------------------------------------

    def push_transaction(self, tx_json: object) -> codec.DecodedTransaction:
        """Check a transaction like hived and queue it for the next block.

        Raises:
            TxRejectedError: it would be rejected by hived; nothing changed.
        """
        decoded = codec.decode_transaction(tx_json, self.profile)
        reference = self.head_time
        # hived: now < expiration <= now + HIVE_MAX_TIME_UNTIL_EXPIRATION
        if decoded.expiration <= reference:
            raise TxRejectedError(
                f"transaction expiration exception: {decoded.expiration:%Y-%m-%dT%H:%M:%S} "
                f"is not after head block time {reference:%Y-%m-%dT%H:%M:%S}")
        if decoded.expiration > reference + timedelta(seconds=MAX_EXPIRATION_S):
            raise TxRejectedError(
                "transaction expiration exception: expiration more than "
                f"{MAX_EXPIRATION_S} s after head block time")
        self._check_tapos(decoded.ref_block_num, decoded.ref_block_prefix)
        if decoded.txid in self._recent_txids:
            raise TxRejectedError("Duplicate transaction check failed")
        trial = copy.deepcopy(self._pending_state)
        evaluator.check_authority(trial, decoded, self.profile)
        evaluator.apply_transaction(trial, decoded, self.profile)
        self._pending_state = trial
        self._pending.append(decoded)
        self._recent_txids[decoded.txid] = decoded.expiration
        return decoded

    def _check_tapos(self, ref_block_num: int, ref_block_prefix: int) -> None:
        """Raise unless TaPoS names one of the last 65,536 blocks."""
        block_id = self._summaries.get(ref_block_num)
        if block_id is None:
            raise TxRejectedError("transaction tapos exception: unknown reference block")
        prefix = struct.unpack_from("<I", bytes.fromhex(block_id), 4)[0]
        if prefix != ref_block_prefix:
            raise TxRejectedError("transaction tapos exception: ref_block_prefix mismatch")

    def _prune_txids(self) -> None:
        """Forget transaction ids whose expiration has passed (hived does the same)."""
        expired = [t for t, exp in self._recent_txids.items() if exp <= self.head_time]
        for txid in expired:
            del self._recent_txids[txid]

    @property
    def pending_count(self) -> int:
        """Transactions waiting for the next block."""
        return len(self._pending)

    # ---- reads ------------------------------------------------------------

    def block(self, number: int) -> Block | None:
        """Block ``number`` if it is still kept, else None."""
        if not self.blocks:
            return None
        first = self.blocks[0].number
        if number < first or number > self.head_num:
            return None
        return self.blocks[number - first]

    def find_transaction(self, txid: str) -> AcceptedTransaction | None:
        """The included transaction with id ``txid`` among kept blocks."""
        for block in reversed(self.blocks):
            for tx in block.transactions:
                if tx.txid == txid:
                    return tx
        return None

    @property
    def last_irreversible_block_num(self) -> int:
        """One block behind head: one node, so finality is immediate but for the head."""
        return max(self.head_num - 1, 0)


def witness_private_key(seed: str, owner: str) -> PrivateKey:
    """The deterministic throwaway key of a non-watched devnet witness."""
    return PrivateKey.from_seed(f"{seed}:witness:{owner}")

