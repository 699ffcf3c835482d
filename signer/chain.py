"""The signer's chain adapter: read the witness, build, sign, broadcast and confirm a key change.

Building is pure (:func:`build_switch_operation`, :func:`tapos`,
:func:`build_unsigned_transaction`); :class:`RpcSignerChain` is the I/O shell over
:class:`shared.rpc.JsonRpcClient`. beem serves only as a serialiser, never its
network classes (they keep a settings database under ``$HOME`` and default the
chain id to zeros). Every beem exception is translated here, ``from e``.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beembase import operations as beem_operations
from beembase.objects import Operation
from beembase.signedtransactions import Signed_Transaction
from beemgraphenebase.account import PublicKey

from shared.chaindata import DynamicProps, WitnessInfo, parse_dgpo
from shared.chains import ADDRESS_PREFIX, MAX_EXPIRATION_S, NULL_KEY, ChainProfile
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
from signer.keystore import Keystore
from signer.policy import ChainView, KeyMode
from signer.ports import BuiltTransaction, Inclusion

log = logging.getLogger(__name__)

MAX_URL_BYTES = 2048  # HIVE_MAX_WITNESS_URL_LENGTH (libraries/protocol/config.hpp)
MIN_BLOCK_SIZE = 65536  # HIVE_MIN_BLOCK_SIZE_LIMIT, checked by chain_properties::validate
PERCENT_100 = 10000  # HIVE_100_PERCENT, the interest rate's upper bound
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
_LEGACY_AMOUNT = re.compile(r"(\d+)\.(\d+) ([A-Z]+)")
_MANGLED_BY_BEEM = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass(frozen=True)
class Tapos:
    """TaPoS fields and the expiration, all derived from one head block."""

    ref_block_num: int
    ref_block_prefix: int
    expiration: datetime


@dataclass(frozen=True)
class WitnessReading:
    """The agreed reading behind a :class:`ChainView`: the raw witness and its head."""

    view: ChainView
    witness: WitnessInfo
    head: DynamicProps


def build_switch_operation(mode: KeyMode, witness: WitnessInfo, target_key: str,
                           profile: ChainProfile) -> tuple[str, dict[str, Any]]:
    """Return (op name, op dict) switching ``witness`` to ``target_key``; pure.

    Raises:
        PolicyError: unknown mode, invalid target, or the null key in signing mode.
        ChainDataError: the chain's url or props cannot be sent back unchanged.
    """
    return _switch_operation(mode, witness.owner, witness, target_key, profile)


def _switch_operation(mode: str, owner: str, chain: WitnessInfo | ChainView, target_key: str,
                      profile: ChainProfile) -> tuple[str, dict[str, Any]]:
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
                                expiration=fields.expiration.strftime(_TIME_FORMAT),
                                operations=[op])
        sent = op.json()[1]
        bytes(tx)  # a bad value fails here, not while signing
    except Exception as e:  # beem raises bare Exception/AssertionError/ValueError
        raise ChainDataError(f"cannot serialise {op_name}: {type(e).__name__}") from e
    # The JSON a node parses must say what the signed bytes say (beem re-formats amounts).
    if op_name == "witness_update" and sent != dict(op_dict):
        raise ChainDataError("beem's JSON of witness_update differs from the values given")
    return tx


def is_expired(tx: BuiltTransaction, head: DynamicProps) -> bool:
    """Whether ``tx`` can no longer be included: hived requires head time < expiration."""
    return head.time >= tx.expiration


class RpcSignerChain:
    """:class:`signer.ports.SignerChain` over the signer's own RPC node(s)."""

    def __init__(self, rpc: JsonRpcClient, keystore: Keystore, *, profile: ChainProfile,
                 witness: str, key_mode: KeyMode, quorum: int, tracker: HeadTracker,
                 tx_expiration: timedelta, clock: Clock) -> None:
        if not 1 <= quorum <= len(rpc.urls):
            raise ConfigError(f"must be 1..{len(rpc.urls)}", field="chain.quorum")
        if not 0 < int(tx_expiration.total_seconds()) <= MAX_EXPIRATION_S:
            raise ConfigError(f"must be 1..{MAX_EXPIRATION_S} s", field="chain.tx_expiration_s")
        self._rpc, self._keystore, self._profile = rpc, keystore, profile
        self._witness, self._mode, self._quorum = witness, key_mode, quorum
        self._tracker, self._lifetime, self._clock = tracker, tx_expiration, clock
        self._lock = threading.Lock()
        self._verified: set[str] = set()
        self._chain_checked = False

    def check_chain_id(self) -> None:
        """Verify every reachable node's get_config chain id equals the profile's.

        Raises:
            ChainDataError: a node is on another chain or reports no chain id.
            ChainUnavailableError: no node answered.
        """
        if not sum(self._reachable(url) for url in self._rpc.urls):
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

    def _fresh_readings(self) -> list[NodeReading]:
        """Readings of verified nodes whose head still advances; others are dropped."""
        now, fresh = self._clock.now(), []
        for url in self._rpc.urls:
            if not self._reachable(url):
                continue
            try:
                reading = self._rpc.read_node(url, self._witness)
            except ChainError as e:
                log.warning("no witness reading from %s: %s", url, e)
                continue
            if self._tracker.observe(url, reading.props.head_block_number, now):
                fresh.append(reading)
            else:
                log.warning("%s is stale at block %d; ignored", url,
                            reading.props.head_block_number)
        return fresh

    def _enough(self, fresh: list[NodeReading]) -> None:
        if len(fresh) < self._quorum:
            raise ChainUnavailableError(
                f"only {len(fresh)} fresh node(s) answered, {self._quorum} required")

    def read_witness(self) -> WitnessReading:
        """Read the witness from ``quorum`` fresh nodes that agree; keep the raw reading.

        Nodes must agree on key, total_missed, url and props (what build() sends back).

        Raises:
            ChainUnavailableError: fewer than ``quorum`` fresh nodes answered.
            ChainDataError: enough answered but they disagree, or a node is on another chain.
        """
        fresh = self._fresh_readings()
        self._enough(fresh)
        ranked = Counter(_agreement_key(r.witness) for r in fresh).most_common()
        best, count = ranked[0]
        # SECURITY: T4 — a liar is outvoted or the reading fails; never chosen by a tie.
        if count < self._quorum or (len(ranked) > 1 and ranked[1][1] == count):
            seen = ", ".join(f"{r.url}: {r.witness.signing_key} missed {r.witness.total_missed}"
                             for r in fresh)
            raise ChainDataError(f"RPC nodes disagree about {self._witness}: {seen}")
        agreeing = [r for r in fresh if _agreement_key(r.witness) == best]
        head = max((r.props for r in agreeing), key=lambda p: p.head_block_number)
        w = agreeing[0].witness
        view = ChainView(head_block_num=head.head_block_number, signing_key=w.signing_key,
                         total_missed=w.total_missed, url=w.url, props=dict(w.props),
                         nodes_agreeing=count)
        return WitnessReading(view=view, witness=w, head=head)

    def read_view(self) -> ChainView:
        """The :class:`ChainView` of :meth:`read_witness` (same errors)."""
        return self.read_witness().view

    def head(self) -> DynamicProps:
        """The head of the first verified, fresh node that answers.

        Raises:
            ChainUnavailableError: no fresh node answered.
            ChainDataError: a node is on another chain.
        """
        now = self._clock.now()
        for url in self._rpc.urls:
            if not self._reachable(url):
                continue
            try:
                head = parse_dgpo(self._rpc.call_node(
                    url, "condenser_api.get_dynamic_global_properties", []))
            except ChainError as e:
                log.warning("no head from %s: %s", url, e)
                continue
            if self._tracker.observe(url, head.head_block_number, now):
                return head
        raise ChainUnavailableError("no fresh RPC node gave its head block")

    def build(self, view: ChainView | WitnessReading | WitnessInfo,
              target_key: str) -> BuiltTransaction:
        """Build and sign the key change to ``target_key`` with fresh TaPoS.

        Url, props and the current key come from ``view`` (the chain), never from config.

        Raises:
            ChainDataError: the chain id was not checked, or the chain's data is unusable.
            ChainUnavailableError: TaPoS could not be read.
            PolicyError: the target is refused in this mode, or another witness.
            KeystoreError: no key for the mode.
        """
        with self._lock:
            checked = self._chain_checked
        if not checked:  # SECURITY: T6 — nothing is signed before the chain id is known
            raise ChainDataError("chain id not verified: call check_chain_id() before signing")
        source = view.witness if isinstance(view, WitnessReading) else view
        owner = source.owner if isinstance(source, WitnessInfo) else self._witness
        if owner != self._witness:
            raise PolicyError(f"this signer serves {self._witness!r}, not {owner!r}")
        op_name, op_dict = _switch_operation(self._mode, owner, source, target_key, self._profile)
        fields = tapos(self.head(), self._lifetime)  # fresh every call, never reused
        tx = build_unsigned_transaction(op_name, op_dict, fields)
        signer = source.signing_key if self._mode == "signing" else self._active_key()
        self._keystore.sign_transaction(tx, signer, self._profile.chain_id)
        try:
            tx_id = str(tx.id)  # sha256 of the packed unsigned tx, first 20 bytes (hived)
            tx_json = json.loads(json.dumps(tx.json()))
        except Exception as e:  # beem raises bare exceptions while serialising
            raise ChainDataError(f"cannot serialise the signed tx: {type(e).__name__}") from e
        log.info("built %s for %s -> %s: tx %s, expires %s", op_name, owner, target_key, tx_id,
                 fields.expiration.strftime(_TIME_FORMAT))
        return BuiltTransaction(tx_id=tx_id, target_key=target_key,
                                expiration=fields.expiration, operation=op_name,
                                tx_json=tx_json)

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
