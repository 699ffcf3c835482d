"""The signer's chain adapter against a real devnet process: chain id, switches, expiry, quorum."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drill.procs import free_port_base
from drill.services import RunningDevnet, running_devnet
from shared.chaindata import parse_dgpo, parse_witness
from shared.chains import PROFILES
from shared.clock import Clock, SystemClock
from shared.errors import BroadcastError, ChainDataError, ChainUnavailableError
from shared.rpc import HeadTracker, JsonRpcClient
from signer.chain import RpcSignerChain, is_expired
from signer.keystore import MEMLIMIT_MIN, OPSLIMIT_MIN, Keystore, Secret, create_keystore
from signer.policy import ChainView
from signer.ports import WitnessReading

CHAINS = [pytest.param("hive", id="hive"), pytest.param("steem", id="steem")]
MODES = [pytest.param("active", id="active"), pytest.param("signing", id="signing")]
# Fields of get_witness_by_account that move with block production, not with a key change.
MOVING = {"signing_key", "total_missed", "last_confirmed_block_num", "last_aslot",
          "virtual_last_update", "virtual_position", "virtual_scheduled_time"}
WAIT = timedelta(seconds=20)


class FakeClock:
    """A clock the test moves by hand (stale-head detection without sleeping)."""

    def __init__(self) -> None:
        self.current = datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        """The current fake time."""
        return self.current

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.current += timedelta(seconds=seconds)


def keystore(tmp_path: Path, devnet: RunningDevnet, mode: str) -> Keystore:
    """A fast-KDF keystore with the active WIF (active mode) or the node WIFs (signing)."""
    store = create_keystore(tmp_path / "keystore.json", Secret("devnet-only"),
                            opslimit=OPSLIMIT_MIN, memlimit=MEMLIMIT_MIN)
    if mode == "active":
        store.add(devnet.active_wif, "active")
    else:
        for name in ("primary", "backup1", "backup2"):
            store.add(devnet.node_wif(name), "signing")
    return store


def adapter(devnet: RunningDevnet, store: Keystore, *, chain: str, mode: str = "active",
            endpoints: tuple[str, ...] = ("",), quorum: int = 1,
            tx_expiration_s: float = 60, clock: Clock | None = None,
            stale_after_s: float = 30) -> RpcSignerChain:
    """An adapter over the devnet's endpoints ("" is "/", "rpc/1" is "/rpc/1")."""
    rpc = JsonRpcClient([devnet.url + e for e in endpoints], timeout_s=5)
    return RpcSignerChain(rpc, store, profile=PROFILES[chain], witness="alice",
                          key_mode=mode, quorum=quorum,  # type: ignore[arg-type]
                          tracker=HeadTracker(timedelta(seconds=stale_after_s)),
                          tx_expiration=timedelta(seconds=tx_expiration_s),
                          clock=clock or SystemClock())


def node_key(devnet: RunningDevnet, name: str) -> str:
    """The public signing key of devnet node ``name``."""
    return str(next(n["public_key"] for n in devnet.status()["nodes"] if n["name"] == name))


def witness_json(devnet: RunningDevnet) -> dict[str, Any]:
    """condenser_api.get_witness_by_account for alice."""
    result = devnet.client.call("condenser_api.get_witness_by_account", ["alice"])
    assert isinstance(result, dict)
    return result


def raw_reading(devnet: RunningDevnet) -> WitnessReading:
    """A reading taken straight from the devnet, past every check the adapter makes."""
    witness = parse_witness(witness_json(devnet), "alice")
    head = parse_dgpo(devnet.client.call("condenser_api.get_dynamic_global_properties", []))
    view = ChainView(head_block_num=head.head_block_number, signing_key=witness.signing_key,
                     total_missed=witness.total_missed, url=witness.url,
                     props=dict(witness.props))
    return WitnessReading(view=view, witness=witness, head=head)


@pytest.fixture(params=CHAINS)
def devnet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningDevnet]:
    """A fresh fast devnet of the parametrised chain."""
    with running_devnet(tmp_path / "devnet", slot_seconds=0.1, chain=request.param) as d:
        d.wait_blocks(2)
        yield d


@pytest.fixture
def hive_devnet(tmp_path: Path) -> Iterator[RunningDevnet]:
    """A fresh fast Hive devnet."""
    with running_devnet(tmp_path / "devnet", slot_seconds=0.1, chain="hive") as d:
        d.wait_blocks(2)
        yield d


# ---- chain id --------------------------------------------------------------------------


def test_chain_id_check_passes_on_the_profiles_chain(devnet: RunningDevnet,
                                                     tmp_path: Path) -> None:
    """Every devnet endpoint reports the profile's chain id, so the check passes."""
    chain_name = devnet.status()["chain"]
    chain = adapter(devnet, keystore(tmp_path, devnet, "active"), chain=chain_name,
                    endpoints=("", "rpc/1", "rpc/2"))
    chain.check_chain_id()


@pytest.mark.parametrize(("served", "configured"), [("steem", "hive"), ("hive", "steem")])
def test_chain_id_check_fails_on_the_other_chain(tmp_path: Path, served: str,
                                                 configured: str) -> None:
    """A signer configured for one chain refuses a node of the other, and then signs nothing."""
    with running_devnet(tmp_path / "devnet", slot_seconds=0.1, chain=served) as d:
        chain = adapter(d, keystore(tmp_path, d, "active"), chain=configured)
        with pytest.raises(ChainDataError):
            chain.check_chain_id()
        with pytest.raises(ChainDataError):
            chain.build(raw_reading(d), node_key(d, "backup1"))
        with pytest.raises(ChainDataError):
            chain.read_view()


def test_build_refuses_before_the_chain_id_check(hive_devnet: RunningDevnet,
                                                 tmp_path: Path) -> None:
    """Nothing is signed until check_chain_id() has passed."""
    chain = adapter(hive_devnet, keystore(tmp_path, hive_devnet, "active"), chain="hive")
    reading = chain.read_witness()
    with pytest.raises(ChainDataError):
        chain.build(reading, node_key(hive_devnet, "backup1"))


def test_chain_id_check_with_no_node_is_unavailable(hive_devnet: RunningDevnet,
                                                    tmp_path: Path) -> None:
    """With every node unreachable the check learns nothing and says so."""
    dead = f"http://127.0.0.1:{free_port_base(span=1)}/"
    rpc = JsonRpcClient([dead], timeout_s=2)
    chain = RpcSignerChain(rpc, keystore(tmp_path, hive_devnet, "active"),
                           profile=PROFILES["hive"], witness="alice", key_mode="active",
                           quorum=1, tracker=HeadTracker(timedelta(seconds=30)),
                           tx_expiration=timedelta(seconds=60), clock=SystemClock())
    with pytest.raises(ChainUnavailableError):
        chain.check_chain_id()


# ---- switching -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_switch_lands_and_keeps_url_and_props(devnet: RunningDevnet, tmp_path: Path,
                                              mode: str) -> None:
    """A switch to backup1 is included, seen on chain, and changes nothing but the key."""
    chain_name = devnet.status()["chain"]
    chain = adapter(devnet, keystore(tmp_path, devnet, mode), chain=chain_name, mode=mode,
                    endpoints=("", "rpc/1"), quorum=2)
    chain.check_chain_id()
    before = witness_json(devnet)
    target = node_key(devnet, "backup1")
    reading = chain.read_witness()
    assert reading.view.signing_key == node_key(devnet, "primary")
    assert reading.view.nodes_agreeing == 2

    tx = chain.build(reading, target)
    assert tx.operation == ("witness_update" if mode == "active" else "witness_set_properties")
    chain.broadcast(tx)
    chain.broadcast(tx)  # the node's duplicate answer counts as sent
    inclusion = chain.wait_for_inclusion(tx, timeout=WAIT, poll_s=0.05)

    assert inclusion is not None
    assert (inclusion.tx_id, inclusion.signing_key) == (tx.tx_id, target)
    located = devnet.client.call("condenser_api.get_transaction", [tx.tx_id])
    assert inclusion.block_num == located["block_num"]
    assert devnet.status()["witness"]["signing_key"] == target
    after = witness_json(devnet)
    assert after["signing_key"] == target
    assert {k: v for k, v in after.items() if k not in MOVING} == {
        k: v for k, v in before.items() if k not in MOVING}
    # A tx the node cannot locate still counts once the key is on chain (block = head).
    fallback = chain.find_inclusion("00" * 20, target)
    assert fallback is not None
    assert fallback.block_num >= inclusion.block_num


def test_each_build_takes_fresh_tapos(hive_devnet: RunningDevnet, tmp_path: Path) -> None:
    """Builds from two readings a few blocks apart reference different head blocks and ids."""
    chain = adapter(hive_devnet, keystore(tmp_path, hive_devnet, "active"), chain="hive")
    chain.check_chain_id()
    first = chain.build(chain.read_witness(), node_key(hive_devnet, "backup1"))
    hive_devnet.wait_blocks(2)
    second = chain.build(chain.read_witness(), node_key(hive_devnet, "backup1"))
    assert first.tx_json["ref_block_num"] != second.tx_json["ref_block_num"]
    assert first.tx_id != second.tx_id
    assert second.expiration > first.expiration


def test_expired_transaction_is_not_included(hive_devnet: RunningDevnet, tmp_path: Path) -> None:
    """A tx left until after its expiration is refused, never lands, and is_expired says so."""
    chain = adapter(hive_devnet, keystore(tmp_path, hive_devnet, "active"), chain="hive",
                    tx_expiration_s=3)
    chain.check_chain_id()
    target = node_key(hive_devnet, "backup1")
    tx = chain.build(chain.read_witness(), target)
    hive_devnet.wait_blocks(3)

    assert is_expired(tx, chain.head())
    with pytest.raises(BroadcastError, match="expiration"):
        chain.broadcast(tx)
    assert chain.wait_for_inclusion(tx, timeout=WAIT, poll_s=0.05) is None
    assert chain.find_inclusion(tx, target) is None
    assert hive_devnet.status()["witness"]["signing_key"] == node_key(hive_devnet, "primary")


def test_rejected_transaction_raises_with_the_nodes_message(hive_devnet: RunningDevnet,
                                                            tmp_path: Path) -> None:
    """A tx signed by a key without authority is rejected: BroadcastError, key unchanged."""
    store = create_keystore(tmp_path / "keystore.json", Secret("devnet-only"),
                            opslimit=OPSLIMIT_MIN, memlimit=MEMLIMIT_MIN)
    store.add(hive_devnet.node_wif("backup2"), "active")  # not alice's active key
    chain = adapter(hive_devnet, store, chain="hive")
    chain.check_chain_id()
    tx = chain.build(chain.read_witness(), node_key(hive_devnet, "backup1"))
    with pytest.raises(BroadcastError, match="authority"):
        chain.broadcast(tx)
    hive_devnet.wait_blocks(2)
    assert hive_devnet.status()["witness"]["signing_key"] == node_key(hive_devnet, "primary")


def test_broadcast_with_no_node_reachable_fails(hive_devnet: RunningDevnet,
                                                tmp_path: Path) -> None:
    """When no node can be reached the broadcast raises BroadcastError, nothing lands."""
    store = keystore(tmp_path, hive_devnet, "active")
    chain = adapter(hive_devnet, store, chain="hive")
    chain.check_chain_id()
    tx = chain.build(chain.read_witness(), node_key(hive_devnet, "backup1"))
    dead = JsonRpcClient([f"http://127.0.0.1:{free_port_base(span=1)}/"], timeout_s=2)
    offline = RpcSignerChain(dead, store, profile=PROFILES["hive"], witness="alice",
                             key_mode="active", quorum=1,
                             tracker=HeadTracker(timedelta(seconds=30)),
                             tx_expiration=timedelta(seconds=60), clock=SystemClock())
    with pytest.raises(BroadcastError):
        offline.broadcast(tx)
    assert hive_devnet.status()["witness"]["signing_key"] == node_key(hive_devnet, "primary")


# ---- quorum, stale and lying nodes -----------------------------------------------------


def test_frozen_head_node_is_dropped(hive_devnet: RunningDevnet, tmp_path: Path) -> None:
    """A node whose head stops is stale after stale_after: quorum 2 fails, quorum 1 holds."""
    store = keystore(tmp_path, hive_devnet, "active")
    clock = FakeClock()
    both = ("", "rpc/1")
    strict = adapter(hive_devnet, store, chain="hive", endpoints=both, quorum=2, clock=clock,
                     stale_after_s=5)
    lenient = adapter(hive_devnet, store, chain="hive", endpoints=both, quorum=1, clock=clock,
                      stale_after_s=5)
    hive_devnet.client.call("devnet.set_faults", {"endpoint": "/rpc/1", "freeze_head": True})
    # A head is only known to be frozen once it stood still for stale_after.
    assert strict.read_view().nodes_agreeing == 2
    assert lenient.read_view().nodes_agreeing == 2
    hive_devnet.wait_blocks(2)
    clock.advance(6)

    with pytest.raises(ChainUnavailableError):
        strict.read_view()
    view = lenient.read_view()
    assert view.nodes_agreeing == 1
    assert view.head_block_num >= hive_devnet.status()["head_block_number"] - 2


def test_lying_node_makes_a_two_node_quorum_fail(hive_devnet: RunningDevnet,
                                                 tmp_path: Path) -> None:
    """With one of two nodes inflating total_missed, the reading fails instead of trusting it."""
    store = keystore(tmp_path, hive_devnet, "active")
    hive_devnet.client.call("devnet.set_faults", {"endpoint": "/rpc/1", "wrong_data": True})
    for quorum in (1, 2):
        chain = adapter(hive_devnet, store, chain="hive", endpoints=("", "rpc/1"),
                        quorum=quorum)
        with pytest.raises(ChainDataError):
            chain.read_view()


def test_lying_node_is_outvoted_by_two_honest_ones(hive_devnet: RunningDevnet,
                                                   tmp_path: Path) -> None:
    """Two honest nodes of three agree: the view is theirs, not the liar's."""
    store = keystore(tmp_path, hive_devnet, "active")
    hive_devnet.client.call("devnet.set_faults", {"endpoint": "/rpc/1", "wrong_data": True})
    chain = adapter(hive_devnet, store, chain="hive", endpoints=("", "rpc/1", "rpc/2"),
                    quorum=2)
    view = chain.read_view()
    assert view.nodes_agreeing == 2
    assert view.total_missed == witness_json(hive_devnet)["total_missed"]


def test_timeout_on_a_halted_chain_is_not_expiry(hive_devnet: RunningDevnet,
                                                 tmp_path: Path) -> None:
    """On a halted chain the wait times out unexpired; the same tx lands after resume."""
    chain = adapter(hive_devnet, keystore(tmp_path, hive_devnet, "active"), chain="hive",
                    tx_expiration_s=3600)
    chain.check_chain_id()
    target = node_key(hive_devnet, "backup1")
    tx = chain.build(chain.read_witness(), target)
    hive_devnet.client.call("devnet.halt", {})
    chain.broadcast(tx)

    assert chain.wait_for_inclusion(tx, timeout=timedelta(seconds=0.5), poll_s=0.05) is None
    assert not is_expired(tx, chain.head())  # so the caller must not rebuild yet
    hive_devnet.client.call("devnet.resume", {})
    inclusion = chain.wait_for_inclusion(tx, timeout=WAIT, poll_s=0.05)
    assert inclusion is not None
    assert inclusion.tx_id == tx.tx_id
