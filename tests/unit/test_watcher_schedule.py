"""Schedule awareness: the witness's next slot, slot timing from head sightings, poll times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import ChainDataError
from watcher.schedule import (
    Schedule,
    SlotClock,
    Timing,
    parse_schedule,
    plan_next_poll,
    slots_until,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ROUND = ("w0", "w1", "alice", "w3", "w4")
# 21 witnesses, alice 15 slots after aslot 100 (115 % 21 == 10).
LONG_ROUND = tuple("alice" if i == 10 else f"w{i}" for i in range(21))
TIMING = Timing(block_interval_s=3.0, max_poll_interval_s=30.0, stale_after_s=15.0,
                visible_after_s=1.0)


def schedule_doc(names: list[str], count: int, next_shuffle: int) -> dict[str, object]:
    """A get_witness_schedule answer (padded to 21 names like hived's array)."""
    return {"current_shuffled_witnesses": names + [""] * (21 - len(names)),
            "num_scheduled_witnesses": count, "next_shuffle_block_num": next_shuffle,
            "median_props": {}}


def test_parse_schedule_drops_padding() -> None:
    """The padded 21-name array is cut to num_scheduled_witnesses."""
    parsed = parse_schedule(schedule_doc(list(ROUND), 5, 120))
    assert parsed == Schedule(ROUND, 120)


@pytest.mark.parametrize("doc", [
    pytest.param([], id="not-an-object"),
    pytest.param({"current_shuffled_witnesses": "alice", "num_scheduled_witnesses": 1,
                  "next_shuffle_block_num": 1}, id="names-not-a-list"),
    pytest.param(schedule_doc(["a", "b"], 0, 5), id="zero-scheduled"),
    pytest.param(schedule_doc(["a", "b"], 30, 5), id="more-scheduled-than-names"),
    pytest.param(schedule_doc(["a"], 1, -1), id="negative-shuffle-block"),
    pytest.param({**schedule_doc(["a"], 1, 5), "num_scheduled_witnesses": True},
                 id="boolean-count"),
])
def test_parse_schedule_rejects_garbage(doc: object) -> None:
    """A malformed schedule is a ChainDataError, never a crash."""
    with pytest.raises(ChainDataError):
        parse_schedule(doc)


# aslot 100 -> position 0; alice is at position 2.
@pytest.mark.parametrize(("head_aslot", "head_block", "next_shuffle", "expected"), [
    pytest.param(100, 50, 60, 2, id="two-slots-ahead"),
    pytest.param(102, 50, 60, 5, id="just-produced-next-round-same-schedule"),
    pytest.param(101, 50, 60, 1, id="next-slot"),
    pytest.param(100, 50, 51, None, id="beyond-the-reshuffle"),
    pytest.param(100, 50, 52, 2, id="exactly-at-the-horizon"),
    pytest.param(100, 60, 60, None, id="schedule-already-stale"),
])
def test_slots_until(head_aslot: int, head_block: int, next_shuffle: int,
                     expected: int | None) -> None:
    """Slots until alice's next slot, only while this schedule still decides it."""
    assert slots_until(Schedule(ROUND, next_shuffle), "alice", head_aslot, head_block) == expected


def test_slots_until_absent_witness() -> None:
    """A witness not in the round has no slot in it."""
    assert slots_until(Schedule(ROUND, 1000), "bob", 100, 50) is None


@settings(max_examples=200, deadline=None)
@given(st.permutations(list(ROUND)), st.integers(0, 10**6))
def test_slots_until_matches_hived_formula(order: list[str], aslot: int) -> None:
    """The slot found is the first s with shuffled[(aslot + s) % n] == alice (hived)."""
    s = slots_until(Schedule(tuple(order), 10**9), "alice", aslot, 0)
    assert s is not None
    assert order[(aslot + s) % len(order)] == "alice"
    assert all(order[(aslot + k) % len(order)] != "alice" for k in range(1, s))


def test_slot_clock_takes_the_earliest_sighting() -> None:
    """A late sighting does not push slot estimates later; an early one pulls them in."""
    clock = SlotClock(3.0).observe(100, T0 + timedelta(seconds=2))
    clock = clock.observe(101, T0 + timedelta(seconds=3.5))  # seen 0.5 s after its start
    assert clock.slot_start(102) == T0 + timedelta(seconds=6.5)
    assert clock.observe(101, T0 + timedelta(seconds=99)) is clock  # not a new head


def test_slot_clock_without_sightings() -> None:
    """No sighting, no estimate."""
    assert SlotClock(3.0).slot_start(5) is None


def _clock_at_slot_100() -> SlotClock:
    return SlotClock(3.0).observe(100, T0)


@pytest.mark.parametrize(("now_s", "head_aslot", "head_block", "sched", "expected_s"), [
    pytest.param(0.0, 100, 50, Schedule(ROUND, 60), 3 * 3 + 1, id="after-the-block-after-slot"),
    pytest.param(0.0, 100, 50, Schedule(ROUND, 51), 1 * 3 + 1, id="after-the-reshuffle"),
    pytest.param(0.0, 100, 50, None, 3, id="schedule-unknown"),
    pytest.param(0.0, None, None, Schedule(ROUND, 60), 3, id="no-fresh-head"),
    pytest.param(12.0, 100, 50, Schedule(ROUND, 60), 12 + 1.5, id="overdue-look-soon"),
    pytest.param(40.0, 100, 50, Schedule(ROUND, 60), 40 + 30, id="long-overdue-back-off"),
    pytest.param(0.0, 100, 50, Schedule(LONG_ROUND, 80), 30, id="capped-by-max-poll-interval"),
])
def test_plan_next_poll(now_s: float, head_aslot: int | None, head_block: int | None,
                        sched: Schedule | None, expected_s: float) -> None:
    """The next poll comes right after the block following alice's slot, within bounds."""
    plan = plan_next_poll(T0 + timedelta(seconds=now_s), head_aslot=head_aslot,
                          head_block_number=head_block, schedule=sched, account="alice",
                          clock=_clock_at_slot_100(), timing=TIMING)
    assert plan.at == T0 + timedelta(seconds=expected_s)


def test_plan_reports_next_slot_eta() -> None:
    """The plan names alice's slot and when it begins."""
    plan = plan_next_poll(T0, head_aslot=100, head_block_number=50, schedule=Schedule(ROUND, 60),
                          account="alice", clock=_clock_at_slot_100(), timing=TIMING)
    assert plan.next_slot_aslot == 102
    assert plan.next_slot_eta == T0 + timedelta(seconds=6)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1000), st.integers(0, 10**6), st.integers(0, 10**5), st.integers(1, 40))
def test_plan_is_always_bounded(now_s: float, aslot: int, block: int, ahead: int) -> None:
    """Whatever the inputs, the next poll is between min_gap and max_poll_interval from now."""
    now = T0 + timedelta(seconds=now_s)
    plan = plan_next_poll(now, head_aslot=aslot, head_block_number=block,
                          schedule=Schedule(ROUND, block + ahead), account="alice",
                          clock=SlotClock(3.0).observe(aslot // 2, T0), timing=TIMING)
    gap = (plan.at - now).total_seconds()
    assert TIMING.min_gap_s - 1e-6 <= gap <= TIMING.max_poll_interval_s + 1e-6
