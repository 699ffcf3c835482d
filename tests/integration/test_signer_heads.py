"""The signer's per-block head cache against a real devnet: fewer reads, same safety checks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drill.services import RunningDevnet, running_devnet
from shared.chains import PROFILES
from shared.errors import ChainDataError, ChainUnavailableError
from shared.rpc import HeadTracker, JsonRpcClient
from signer.chain import RpcSignerChain
from signer.heads import HeadCache
from signer.keystore import MEMLIMIT_MIN, OPSLIMIT_MIN, Keystore, Secret, create_keystore


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


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[RunningDevnet]:
    """A fresh fast Hive devnet."""
    with running_devnet(tmp_path / "devnet", slot_seconds=0.1, chain="hive") as d:
        d.wait_blocks(2)
        yield d


def keystore(tmp_path: Path, devnet: RunningDevnet) -> Keystore:
    """A fast-KDF keystore holding the devnet's active key."""
    store = create_keystore(tmp_path / "keystore.json", Secret("devnet-only"),
                            opslimit=OPSLIMIT_MIN, memlimit=MEMLIMIT_MIN)
    store.add(devnet.active_wif, "active")
    return store


def adapter(devnet: RunningDevnet, store: Keystore, *, chain: str = "hive", quorum: int = 1,
            endpoints: tuple[str, ...] = ("", "rpc/1"), clock: FakeClock | None = None,
            stale_after_s: float = 30, timeout_s: float = 5,
            ) -> tuple[RpcSignerChain, JsonRpcClient, HeadCache]:
    """An adapter with a head cache over the devnet's endpoints."""
    rpc = JsonRpcClient([devnet.url + e for e in endpoints], timeout_s=timeout_s)
    cache = HeadCache(max_age_s=stale_after_s)
    chain_ = RpcSignerChain(rpc, store, profile=PROFILES[chain], witness="alice",
                            key_mode="active", quorum=quorum,
                            tracker=HeadTracker(timedelta(seconds=stale_after_s)),
                            tx_expiration=timedelta(seconds=60),
                            clock=clock or FakeClock(), heads=cache)
    return chain_, rpc, cache


def test_fresh_cached_heads_leave_one_call_per_node(devnet: RunningDevnet,
                                                    tmp_path: Path) -> None:
    """After a refresh, a reading asks each node for the witness only; TaPoS is a real block."""
    chain, rpc, _ = adapter(devnet, keystore(tmp_path, devnet))
    chain.check_chain_id()
    chain.refresh_heads()
    before = rpc.calls
    reading = chain.read_witness()
    assert rpc.calls - before == 2  # get_witness_by_account on each of the two nodes
    block = devnet.client.call("condenser_api.get_block", [reading.head.head_block_number])
    assert block["block_id"] == reading.head.head_block_id
    chain.close()


def test_without_a_refresh_the_heads_are_read_inline(devnet: RunningDevnet,
                                                     tmp_path: Path) -> None:
    """No cached head (or one too old): each node is asked for its head and the witness."""
    chain, rpc, cache = adapter(devnet, keystore(tmp_path, devnet))
    chain.check_chain_id()
    before = rpc.calls
    chain.read_witness()
    assert rpc.calls - before == 4
    later = time.monotonic() + cache.max_age_s + 1
    assert all(cache.usable(url, later) is None for url in rpc.urls)
    chain.close()


def test_stale_node_is_read_inline_and_dropped(devnet: RunningDevnet, tmp_path: Path) -> None:
    """A frozen node flagged by the refresh is not served from the cache: quorum 2 fails."""
    clock = FakeClock()
    store = keystore(tmp_path, devnet)
    strict, _, cache = adapter(devnet, store, quorum=2, clock=clock, stale_after_s=5)
    strict.check_chain_id()
    strict.refresh_heads()
    assert strict.read_view().nodes_agreeing == 2
    devnet.client.call("devnet.set_faults", {"endpoint": "/rpc/1", "freeze_head": True})
    strict.refresh_heads()
    devnet.wait_blocks(2)
    clock.advance(6)
    strict.refresh_heads()
    frozen = devnet.url + "rpc/1"
    assert cache.usable(frozen, time.monotonic()) is None
    assert cache.usable(devnet.url, time.monotonic()) is not None
    with pytest.raises(ChainUnavailableError):
        strict.read_view()
    strict.close()


def test_refresh_on_another_chain_caches_nothing(devnet: RunningDevnet, tmp_path: Path) -> None:
    """A signer configured for Steem against a Hive node: no head cached, nothing read."""
    chain, rpc, cache = adapter(devnet, keystore(tmp_path, devnet), chain="steem",
                                endpoints=("",))
    chain.refresh_heads()  # before the chain id check: not read at all
    assert rpc.calls == 0
    with pytest.raises(ChainDataError):
        chain.check_chain_id()
    chain.refresh_heads()
    assert cache.usable(devnet.url, time.monotonic()) is None
    with pytest.raises(ChainDataError):
        chain.read_view()
    chain.close()


def test_nodes_are_read_in_parallel(devnet: RunningDevnet, tmp_path: Path) -> None:
    """Two nodes each 0.4 s slow answer in about 0.4 s, not 0.8 s (and 1.6 s without cache)."""
    chain, _, _ = adapter(devnet, keystore(tmp_path, devnet))
    chain.check_chain_id()
    chain.refresh_heads()
    for endpoint in ("/", "/rpc/1"):
        devnet.client.call("devnet.set_faults", {"endpoint": endpoint, "latency_s": 0.4})
    started = time.monotonic()
    assert chain.read_view().nodes_agreeing == 2
    assert time.monotonic() - started < 0.75
    chain.close()
