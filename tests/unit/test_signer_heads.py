"""The signer's per-block head cache: freshness, age limits, pace, and the refresh thread."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from shared.chaindata import DynamicProps
from shared.errors import ChainUnavailableError
from signer.heads import MAX_PERIOD_S, MIN_PERIOD_S, START_PERIOD_S, HeadCache, HeadRefresher

URL = "http://node-a/"


def props(number: int) -> DynamicProps:
    """A head at block ``number`` (id and time derived from it)."""
    return DynamicProps(head_block_number=number, head_block_id=f"{number:08x}" + "ab" * 16,
                        time=datetime(2030, 1, 1, tzinfo=UTC), current_aslot=number,
                        last_irreversible_block_num=number - 1, current_witness="alice")


def test_fresh_young_head_is_usable() -> None:
    """A head read just now from an advancing node is served from the cache."""
    cache = HeadCache(max_age_s=10)
    cache.record(URL, props(100), fresh=True, at=50.0)
    assert cache.usable(URL, 50.2) == props(100)


def test_head_of_a_stale_node_is_never_usable() -> None:
    """A node the stale-head tracker flagged is read inline, however young its head."""
    cache = HeadCache(max_age_s=10)
    cache.record(URL, props(100), fresh=False, at=50.0)
    assert cache.usable(URL, 50.0) is None


def test_old_head_falls_back_to_an_inline_read() -> None:
    """Past two refresh periods plus slack the cached head is not used."""
    cache = HeadCache(max_age_s=10, slack_s=0.5)
    cache.record(URL, props(100), fresh=True, at=50.0)
    limit = 2 * START_PERIOD_S + 0.5
    assert cache.usable(URL, 50.0 + limit - 0.01) is not None
    assert cache.usable(URL, 50.0 + limit + 0.01) is None


def test_max_age_caps_the_limit() -> None:
    """The node's staleness limit bounds the age even when the refresh period is long."""
    cache = HeadCache(max_age_s=0.3, slack_s=5)
    cache.record(URL, props(100), fresh=True, at=0.0)
    assert cache.usable(URL, 0.29) is not None
    assert cache.usable(URL, 0.31) is None


def test_head_from_the_future_is_not_usable() -> None:
    """A head stamped after ``now`` (a clock mix-up) is refused, not trusted."""
    cache = HeadCache(max_age_s=10)
    cache.record(URL, props(100), fresh=True, at=5.0)
    assert cache.usable(URL, 4.0) is None


def test_forgotten_and_unknown_nodes_have_no_head() -> None:
    """A node that failed its refresh loses its head; an unknown node never had one."""
    cache = HeadCache(max_age_s=10)
    cache.record(URL, props(100), fresh=True, at=1.0)
    cache.forget(URL)
    assert cache.usable(URL, 1.0) is None
    assert cache.usable("http://other/", 1.0) is None


def test_period_follows_the_observed_block_pace() -> None:
    """The refresh period is the wall time per block seen, within 0.1..3 s."""
    cache = HeadCache(max_age_s=10)
    assert cache.period_s() == START_PERIOD_S
    cache.record(URL, props(10), fresh=True, at=0.0)
    cache.record(URL, props(10), fresh=True, at=0.2)
    assert cache.block_interval_s() is None
    cache.record(URL, props(14), fresh=True, at=1.0)
    assert cache.block_interval_s() == pytest.approx(0.25)
    assert cache.period_s() == pytest.approx(0.25)
    cache.record(URL, props(15), fresh=True, at=1.01)
    cache.record(URL, props(1000), fresh=True, at=1.02)
    assert cache.period_s() == MIN_PERIOD_S
    slow = HeadCache(max_age_s=10)
    slow.record(URL, props(1), fresh=True, at=0.0)
    slow.record(URL, props(2), fresh=True, at=30.0)
    assert slow.period_s() == MAX_PERIOD_S


def test_head_going_backwards_restarts_the_pace() -> None:
    """A lower head (another chain's or a reset devnet) starts the estimate again."""
    cache = HeadCache(max_age_s=10)
    cache.record(URL, props(100), fresh=True, at=0.0)
    cache.record(URL, props(104), fresh=True, at=1.0)
    cache.record(URL, props(5), fresh=True, at=2.0)
    assert cache.block_interval_s() is None


def test_cache_refuses_a_non_positive_age() -> None:
    """A zero age limit would silently disable the cache; it is a programming error."""
    with pytest.raises(ValueError, match="max_age_s"):
        HeadCache(max_age_s=0)


def test_refresher_calls_refresh_until_stopped_and_survives_chain_errors() -> None:
    """The thread keeps refreshing after a failed refresh and stops when asked."""
    calls: list[int] = []
    twice = threading.Event()

    def refresh() -> None:
        calls.append(1)
        if len(calls) >= 2:
            twice.set()
        if len(calls) == 1:
            raise ChainUnavailableError("node down")

    cache = HeadCache(max_age_s=10)
    cache.record(URL, props(1), fresh=True, at=0.0)
    cache.record(URL, props(1001), fresh=True, at=1.0)  # pace 1 ms: period 0.1 s
    refresher = HeadRefresher(refresh, cache)
    refresher.start()
    try:
        assert twice.wait(5)
    finally:
        refresher.stop()
    seen = len(calls)
    threading.Event().wait(0.3)
    assert len(calls) == seen
