"""The signer's chain adapter: read the witness, build, sign, broadcast and confirm a key change.

Building is pure and lives in :mod:`signer.txbuild` (re-exported here:
:func:`build_switch_operation`, :func:`tapos`, :func:`is_expired`);
:class:`RpcSignerChain` is the I/O shell over
:class:`shared.rpc.JsonRpcClient`. beem serves only as a serialiser, never its
network classes (they keep a settings database under ``$HOME`` and default the
chain id to zeros). No beem object reaches this module: :mod:`signer.txbuild` and
:mod:`signer.keystore` translate beem's errors and return our own values.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from shared.chaindata import DynamicProps, WitnessInfo, parse_dgpo, parse_witness
from shared.chains import MAX_EXPIRATION_S, ChainProfile
from shared.clock import Clock
from shared.errors import (
    BroadcastError,
    ChainDataError,
    ChainError,
    ChainUnavailableError,
    ConfigError,
    KeystoreError,
    PolicyError,
)
from shared.rpc import HeadTracker, JsonRpcClient, NodeReading, RpcRejectedError
from signer.heads import HeadCache
from signer.keystore import Keystore
from signer.policy import ChainView, KeyMode
from signer.ports import BuiltTransaction, Inclusion, WitnessReading
from signer.txbuild import (
    MAX_URL_BYTES,
    MIN_BLOCK_SIZE,
    PERCENT_100,
    TIME_FORMAT,
    Tapos,
    build_switch_operation,
    build_switch_operation_from,
    is_expired,
    sign_switch,
    tapos,
)

__all__ = [
    "MAX_URL_BYTES",
    "MIN_BLOCK_SIZE",
    "PERCENT_100",
    "RpcSignerChain",
    "Tapos",
    "WitnessReading",
    "build_switch_operation",
    "is_expired",
    "tapos",
]

log = logging.getLogger(__name__)

READ_ATTEMPTS = 3  # reads that straddle a block disagree; a liar keeps disagreeing
READ_RETRY_S = 0.3
TAPOS_WINDOW = 0x10000  # ref_block_num is 16 bits: the TaPoS block must be among the last 65,536


class RpcSignerChain:
    """:class:`signer.ports.SignerChain` over the signer's own RPC node(s)."""

    def __init__(self, rpc: JsonRpcClient, keystore: Keystore, *, profile: ChainProfile,
                 witness: str, key_mode: KeyMode, quorum: int, tracker: HeadTracker,
                 tx_expiration: timedelta, clock: Clock, heads: HeadCache | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= quorum <= len(rpc.urls):
            raise ConfigError(f"must be 1..{len(rpc.urls)}", field="chain.quorum")
        if not 0 < int(tx_expiration.total_seconds()) <= MAX_EXPIRATION_S:
            raise ConfigError(f"must be 1..{MAX_EXPIRATION_S} s", field="chain.tx_expiration_s")
        self._rpc, self._keystore, self._profile = rpc, keystore, profile
        self._witness, self._mode, self._quorum = witness, key_mode, quorum
        self._tracker, self._lifetime, self._clock = tracker, tx_expiration, clock
        self._heads, self._monotonic = heads, monotonic
        self._lock = threading.Lock()
        self._verified: set[str] = set()
        self._chain_checked = False
        # One head read per node at a time: the refresh thread and a decision's inline read
        # must not race, or an older answer observed after a newer one looks like a
        # lagging backend (HeadTracker: "went backwards") and drops an honest node.
        self._node_locks = {url: threading.Lock() for url in rpc.urls}
        # Every node is read at once: a decision waits for the slowest node, not their sum.
        # Pool threads live on, so each keeps its keep-alive session (JsonRpcClient's is
        # per thread). Two per node: a head refresh stuck on a dead node's timeout never
        # makes a decision's read of a live node queue behind it.
        self._pool = ThreadPoolExecutor(max_workers=2 * len(rpc.urls),
                                        thread_name_prefix="signer-rpc")

    def close(self) -> None:
        """Stop the node-reading threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def heads(self) -> HeadCache | None:
        """The per-block head cache fed by :meth:`refresh_heads`, if any."""
        return self._heads

    def _each_node(self, read: Callable[[str], NodeReading | None]) -> list[NodeReading]:
        """``read`` on every node in parallel; answers in node order, None dropped.

        Raises:
            ChainDataError: a node is on another chain (from :meth:`_reachable`).
        """
        futures = [self._pool.submit(read, url) for url in self._rpc.urls]
        results = [f.result() for f in futures]
        return [r for r in results if r is not None]

    def check_chain_id(self) -> None:
        """Verify every reachable node's get_config chain id equals the profile's.

        Raises:
            ChainDataError: a node is on another chain or reports no chain id.
            ChainUnavailableError: no node answered.
        """
        futures = [self._pool.submit(self._reachable, url) for url in self._rpc.urls]
        if not sum(f.result() for f in futures):
            raise ChainUnavailableError("no RPC node answered the chain id check")
        with self._lock:
            self._chain_checked = True

    def _reachable(self, url: str) -> bool:
        """Whether ``url`` answered and is on our chain (checked once per node).

        Raises:
            ChainDataError: the node is on another chain or reports no chain id.
        """
        with self._lock:
            if url in self._verified:
                return True
        try:
            reported = self._rpc.chain_id(url)
        except ChainUnavailableError as e:
            log.warning("chain id of %s unknown: %s", url, e)
            return False
        # SECURITY: T6 — never read from, or sign for, a node of another chain.
        if reported != self._profile.chain_id:
            raise ChainDataError(f"{url} is on chain {reported}, not {self._profile.name} "
                                 f"({self._profile.chain_id})")
        with self._lock:
            self._verified.add(url)
        return True

    def _fresh_readings(self, *, cached_heads: bool = False) -> list[NodeReading]:
        """Readings of verified nodes whose head still advances (in parallel); others dropped.

        With ``cached_heads``, a node whose head the refresh read recently (and found
        advancing) is asked for the witness only; its head is the cached one.
        """
        return self._each_node(lambda url: self._read_node(url, cached_heads))

    def _read_node(self, url: str, cached_heads: bool) -> NodeReading | None:
        if not self._reachable(url):
            return None
        cached = (self._heads.usable(url, self._monotonic())
                  if cached_heads and self._heads is not None else None)
        try:
            if cached is not None:
                witness = parse_witness(self._rpc.call_node(
                    url, "condenser_api.get_witness_by_account", [self._witness]), self._witness)
                return NodeReading(url, cached, witness)
            with self._node_locks[url]:
                reading = self._rpc.read_node(url, self._witness)
                fresh = self._observe(url, reading.props)
        except ChainError as e:
            log.warning("no witness reading from %s: %s", url, e)
            return None
        if not fresh:
            log.warning("%s is stale at block %d; ignored", url, reading.props.head_block_number)
            return None
        return reading

    def refresh_heads(self) -> None:
        """Read every verified node's head (in parallel) into the head cache; once per block.

        A node that fails to answer loses its cached head; one on another chain is
        never read (nor cached). Nothing here raises: the next decision reads inline.
        """
        cache = self._heads
        if cache is None:
            return
        with self._lock:
            checked = self._chain_checked
        if not checked:
            return

        def refresh(url: str) -> NodeReading | None:
            try:
                if not self._reachable(url):
                    cache.forget(url)
                    return None
                with self._node_locks[url]:
                    self._observe(url, parse_dgpo(self._rpc.call_node(
                        url, "condenser_api.get_dynamic_global_properties", [])))
            except ChainError as e:
                cache.forget(url)
                log.debug("head refresh of %s: %s", url, e)
            return None

        self._each_node(refresh)

    def _observe(self, url: str, props: DynamicProps) -> bool:
        """Tell the stale-head tracker (and the head cache) ``url``'s head; True if fresh."""
        fresh = self._tracker.observe(url, props.head_block_number, self._clock.now())
        if self._heads is not None:
            self._heads.record(url, props, fresh=fresh, at=self._monotonic())
        return fresh

    def _enough(self, fresh: list[NodeReading]) -> None:
        if len(fresh) < self._quorum:
            raise ChainUnavailableError(
                f"only {len(fresh)} fresh node(s) answered, {self._quorum} required")

    def read_witness(self) -> WitnessReading:
        """Read the witness from ``quorum`` fresh nodes that agree; keep the raw reading.

        Nodes must agree on key, total_missed, url and props (what build() sends back).
        The nodes are read in parallel. With a head cache, the first attempt asks each
        node only for the witness and takes its head (stale-head verdict, TaPoS block,
        chain time) from the per-block refresh, if the node was fresh and the head is at
        most two block intervals old; otherwise, and on a retry, the head is read inline.

        Raises:
            ChainUnavailableError: fewer than ``quorum`` fresh nodes answered.
            ChainDataError: enough answered but they disagree, or a node is on another chain.
        """
        for attempt in range(READ_ATTEMPTS):
            # The first attempt takes heads from the per-block cache; a retry reads inline.
            fresh = self._fresh_readings(cached_heads=attempt == 0)
            self._enough(fresh)
            ranked = Counter(_agreement_key(r.witness) for r in fresh).most_common()
            best, count = ranked[0]
            # SECURITY: T4 — a liar is outvoted or the reading fails; never chosen by a tie.
            if count >= self._quorum and (len(ranked) == 1 or ranked[1][1] < count):
                break
            # Honest nodes read one block apart disagree too; read again before failing.
            if attempt + 1 == READ_ATTEMPTS:
                seen = ", ".join(f"{r.url}: {r.witness.signing_key} missed "
                                 f"{r.witness.total_missed}" for r in fresh)
                raise ChainDataError(f"RPC nodes disagree about {self._witness}: {seen}")
            time.sleep(READ_RETRY_S)
        agreeing = [r for r in fresh if _agreement_key(r.witness) == best]
        newest = max((r.props for r in agreeing), key=lambda p: p.head_block_number)
        # TaPoS refers to a block every agreeing node already has, whichever one takes it.
        common = min((r.props for r in agreeing), key=lambda p: p.head_block_number)
        if newest.head_block_number - common.head_block_number >= TAPOS_WINDOW:
            raise ChainDataError(f"TaPoS block {common.head_block_number} is not among the "
                                 f"last {TAPOS_WINDOW} blocks (head {newest.head_block_number})")
        w = agreeing[0].witness
        view = ChainView(head_block_num=newest.head_block_number, signing_key=w.signing_key,
                         total_missed=w.total_missed, url=w.url, props=dict(w.props),
                         nodes_agreeing=count)
        return WitnessReading(view=view, witness=w, head=common)

    def read_view(self) -> ChainView:
        """The :class:`ChainView` of :meth:`read_witness` (same errors); for reads, not builds."""
        return self.read_witness().view

    def head(self) -> DynamicProps:
        """The head of the first verified, fresh node that answers.

        Raises:
            ChainUnavailableError: no fresh node answered.
            ChainDataError: a node is on another chain.
        """
        for url in self._rpc.urls:
            if not self._reachable(url):
                continue
            try:
                with self._node_locks[url]:
                    head = parse_dgpo(self._rpc.call_node(
                        url, "condenser_api.get_dynamic_global_properties", []))
                    fresh = self._observe(url, head)
            except ChainError as e:
                log.warning("no head from %s: %s", url, e)
                continue
            if fresh:
                return head
        raise ChainUnavailableError("no fresh RPC node gave its head block")

    def build(self, reading: WitnessReading, target_key: str) -> BuiltTransaction:
        """Build and sign the key change to ``target_key`` from one reading; no chain read.

        Url, props and the current key come from ``reading.witness`` and TaPoS from
        ``reading.head``: the transaction says what the decision was made on. A
        fresh reading (at execution time) gives fresh TaPoS (a head of the last block
        interval or two, from the per-block refresh); no transaction is reused.

        Raises:
            ChainDataError: the chain id was not checked, or the chain's data is unusable.
            PolicyError: the target is refused in this mode, or another witness.
            KeystoreError: no key for the mode.
        """
        with self._lock:
            checked = self._chain_checked
        if not checked:  # SECURITY: T6 — nothing is signed before the chain id is known
            raise ChainDataError("chain id not verified: call check_chain_id() before signing")
        source = reading.witness
        if source.owner != self._witness:
            raise PolicyError(f"this signer serves {self._witness!r}, not {source.owner!r}")
        op_name, op_dict = build_switch_operation_from(self._mode, source.owner, source,
                                                       target_key, self._profile)
        fields = tapos(reading.head, self._lifetime)
        signer = source.signing_key if self._mode == "signing" else self._active_key()
        tx = sign_switch(op_name, op_dict, fields, target_key=target_key,
                         signer=self._keystore, pubkey=signer, chain_id=self._profile.chain_id)
        log.info("built %s for %s -> %s: tx %s, expires %s", op_name, source.owner, target_key,
                 tx.tx_id, fields.expiration.strftime(TIME_FORMAT))
        return tx

    def _active_key(self) -> str:
        keys = self._keystore.public_keys("active")
        if len(keys) != 1:
            raise KeystoreError(f"active mode needs exactly one active key, "
                                f"the keystore holds {len(keys)}")
        return keys[0]

    def broadcast(self, tx: BuiltTransaction) -> None:
        """Send ``tx`` (asynchronously) to the first node that takes it; duplicates count.

        Not the synchronous variant: it blocks until a block includes the tx.
        Inclusion is confirmed by re-reading the witness instead.

        Raises:
            BroadcastError: a node rejected it (with the node's message) or none was reached.
        """
        failures: list[str] = []
        for url in self._rpc.urls:
            try:
                reachable = self._reachable(url)
            except ChainError as e:  # another chain, or no chain id: never send there
                failures.append(str(e))
                continue
            if not reachable:
                failures.append(f"{url}: unreachable")
                continue
            try:
                self._rpc.call_node(url, "condenser_api.broadcast_transaction", [tx.tx_json])
            except RpcRejectedError as e:
                if "duplicate transaction" in e.rpc_message.lower():
                    log.info("tx %s was already known to %s", tx.tx_id, url)
                    return
                # Not sent elsewhere: another node would refuse the same bytes alike.
                raise BroadcastError(f"{url} rejected tx {tx.tx_id}: {e.rpc_message}") from e
            except ChainError as e:
                failures.append(str(e))
                log.warning("broadcast of tx %s failed: %s", tx.tx_id, e)
                continue
            log.info("broadcast tx %s to %s", tx.tx_id, url)
            return
        raise BroadcastError(f"tx {tx.tx_id} reached no node: " + "; ".join(failures))

    def find_inclusion(self, tx: BuiltTransaction | str, target_key: str) -> Inclusion | None:
        """Inclusion if ``quorum`` fresh nodes show ``target_key`` on chain, else None.

        Raises:
            ChainUnavailableError: fewer than ``quorum`` fresh nodes answered.
            ChainDataError: a node is on another chain.
        """
        return self._poll_inclusion(tx, target_key)[0]

    def _poll_inclusion(self, tx: BuiltTransaction | str,
                        target_key: str) -> tuple[Inclusion | None, NodeReading]:
        tx_id = tx if isinstance(tx, str) else tx.tx_id
        fresh = self._fresh_readings()
        self._enough(fresh)
        top = max(fresh, key=lambda r: r.props.head_block_number)
        showing = [r for r in fresh if r.witness.signing_key == target_key]
        if len(showing) < self._quorum:
            return None, top
        block_num = self._locate(showing[0].url, tx_id) or top.props.head_block_number
        return Inclusion(tx_id=tx_id, block_num=block_num, signing_key=target_key), top

    def _locate(self, url: str, tx_id: str) -> int | None:
        """The block holding ``tx_id`` if the node serves get_transaction and knows it."""
        try:
            found = self._rpc.call_node(url, "condenser_api.get_transaction", [tx_id])
        except ChainError as e:  # unknown tx, or no account_history plugin: not fatal
            log.info("get_transaction %s on %s: %s", tx_id, url, e)
            return None
        number = found.get("block_num") if isinstance(found, dict) else None
        return number if isinstance(number, int) and not isinstance(number, bool) else None

    def wait_for_inclusion(self, tx: BuiltTransaction, *, timeout: timedelta,
                           poll_s: float = 1.0, sleep: Callable[[float], None] = time.sleep,
                           monotonic: Callable[[], float] = time.monotonic) -> Inclusion | None:
        """Poll until ``tx``'s key change is on chain; None once it expired or after ``timeout``.

        After None, rebuild with fresh TaPoS only if ``is_expired(tx, chain.head())``:
        until then the first transaction may still land.
        """
        deadline = monotonic() + timeout.total_seconds()
        while True:
            try:
                found, top = self._poll_inclusion(tx, tx.target_key)
            except ChainError as e:
                log.warning("confirming tx %s: %s", tx.tx_id, e)
            else:
                if found is not None:
                    return found
                # The most advanced node read the witness after this head without the
                # new key: an expired transaction cannot land any more.
                if is_expired(tx, top.props) and top.witness.signing_key != tx.target_key:
                    log.info("tx %s expired unincluded at block %d", tx.tx_id,
                             top.props.head_block_number)
                    return None
            if monotonic() >= deadline:
                return None
            sleep(poll_s)


def _agreement_key(w: WitnessInfo) -> tuple[str, int, str, str]:
    return w.signing_key, w.total_missed, w.url, json.dumps(w.props, sort_keys=True)
