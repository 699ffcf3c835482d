"""Schedule awareness: the witness's next slot, slot timing from head sightings, poll times."""

from __future__ import annotations

from dataclasses import dataclass
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
    again = clock.observe(101, T0 + timedelta(seconds=99))  # not a new head
    assert (again.last_aslot, again.slot_start(102)) == (101, clock.slot_start(102))


def test_slot_clock_without_sightings() -> None:
    """No sighting, no estimate."""
    assert SlotClock(3.0).slot_start(5) is None


def _clock_at_slot_100() -> SlotClock:
    """Settled: slot 100's block was not there 0.1 s before T0 and was at T0."""
    clock = SlotClock(3.0).observe(99, T0 - timedelta(seconds=2))
    clock = clock.observe(99, T0 - timedelta(seconds=0.1)).observe(100, T0)
    assert clock.settled
    return clock


@pytest.mark.parametrize(("now_s", "head_aslot", "head_block", "sched", "expected_s"), [
    pytest.param(0.0, 100, 50, Schedule(ROUND, 60), 3 * 3 - 0.75,
                 id="just-before-the-block-after-slot"),
    pytest.param(0.0, 100, 50, Schedule(ROUND, 51), 1 * 3 - 0.75, id="after-the-reshuffle"),
    pytest.param(9.5, 100, 50, Schedule(ROUND, 60), 9.5 + 0.3, id="due-look-again-at-once"),
    pytest.param(10.0, 100, 50, Schedule(ROUND, 60), 10 + 1.5,
                 id="visible-after-passed-every-half-slot"),
    pytest.param(24.0, 100, 50, Schedule(ROUND, 60), 24 + 3, id="stale-after-reached-every-slot"),
    pytest.param(0.0, 100, 60, Schedule(ROUND, 60), 3, id="schedule-stale-at-its-shuffle-block"),
    pytest.param(0.0, None, 50, Schedule(ROUND, 60), 3, id="no-head-slot"),
    pytest.param(0.0, 100, 50, None, 3, id="schedule-unknown"),
    pytest.param(0.0, None, None, Schedule(ROUND, 60), 3, id="no-fresh-head"),
    pytest.param(12.0, 100, 50, Schedule(ROUND, 60), 12 + 1.5, id="overdue-look-soon"),
    pytest.param(40.0, 100, 50, Schedule(ROUND, 60), 40 + 3,
                 id="long-overdue-with-fresh-head-polls-every-block"),
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


# ---- the slot clock heals itself (issue 10, item 2) -----------------------------------------


def _sighted(clock: SlotClock, first: int, count: int, at_s: float) -> SlotClock:
    """``clock`` after seeing slots first.. first+count-1, each at_s + 3 k seconds after T0."""
    for k in range(count):
        clock = clock.observe(first + k, T0 + timedelta(seconds=at_s + 3 * k))
    return clock


@pytest.mark.parametrize(("shift_s", "name"), [
    pytest.param(60.0, "halt", id="devnet-halt-pauses-slots-60s"),
    pytest.param(30.0, "step", id="local-clock-stepped-forward-30s"),
    pytest.param(-30.0, "step", id="local-clock-stepped-back-30s"),
])
def test_slot_clock_follows_a_shift_within_two_sightings(shift_s: float, name: str) -> None:
    """After a halt or a clock step, two fresh sightings put slot starts where they now are."""
    clock = _sighted(SlotClock(3.0), 100, 8, 0.0)  # slot 100 began at T0
    assert clock.slot_start(110) == T0 + timedelta(seconds=30)
    clock = _sighted(clock, 108, 2, 24.0 + shift_s)
    assert clock.slot_start(110) == T0 + timedelta(seconds=30 + shift_s), name


def test_slot_clock_takes_an_earlier_sighting_at_once() -> None:
    """A clock stepped back shows in the very first sighting after the step."""
    clock = _sighted(SlotClock(3.0), 100, 8, 0.0).observe(108, T0 + timedelta(seconds=-6))
    assert clock.slot_start(110) == T0


def test_slot_clock_ignores_one_late_sighting() -> None:
    """One head seen late (a lagging node) does not move the estimate; a timely one resets."""
    clock = _sighted(SlotClock(3.0), 100, 8, 0.0)
    late = clock.observe(108, T0 + timedelta(seconds=24 + 7))  # 7 s: more than 2 slots late
    assert late.slot_start(110) == T0 + timedelta(seconds=30)
    timely = late.observe(109, T0 + timedelta(seconds=27.5))
    assert timely.slot_start(110) == T0 + timedelta(seconds=30)
    assert timely.observe(110, T0 + timedelta(seconds=30 + 7)).slot_start(111) == (
        T0 + timedelta(seconds=33))  # the late streak started over


def test_slot_clock_tolerates_two_slots_of_lateness() -> None:
    """Sightings up to two slots late are ordinary (a late poll) and never reset anything."""
    clock = _sighted(SlotClock(3.0), 100, 8, 0.0)
    clock = _sighted(clock, 108, 3, 24.0 + 6.0)
    assert clock.slot_start(110) == T0 + timedelta(seconds=30)


@dataclass(frozen=True)
class SimChain:
    """A chain whose slot k (aslot 100 + k) shows 0.2 s after it begins, 3 s apart.

    alice is down: her slots stay empty, so the next block after each reveals a miss.

    From ``halt_at_s`` its slots pause for ``halt_s`` (the devnet's halt); from
    ``step_at_s`` the watcher's local clock reads ``step_s`` more than the real time.
    """

    halt_at_s: float = 1e9
    halt_s: float = 0.0
    step_at_s: float = 1e9
    step_s: float = 0.0

    def appears(self, k: int) -> float:
        """Real time at which slot k's block becomes visible."""
        t = 3.0 * k + 0.2
        return t + self.halt_s if t >= self.halt_at_s else t

    def head(self, t: float) -> int:
        """The newest filled slot visible at real time t."""
        k, newest = 0, 0
        while self.appears(k + 1) <= t:
            k += 1
            newest = newest if ROUND[(100 + k) % len(ROUND)] == "alice" else k
        return newest

    def local(self, t: float) -> float:
        """The watcher's clock reading at real time t."""
        return t + (self.step_s if t >= self.step_at_s else 0.0)


def simulated_polls(chain: SimChain, until_s: float) -> list[float]:
    """Real times of the watcher's polls, each planned by SlotClock and plan_next_poll."""
    clock, polls, t = SlotClock(3.0), [], 0.5
    while t < until_s:
        polls.append(t)
        k = chain.head(t)
        now = T0 + timedelta(seconds=chain.local(t))
        fresh = t - chain.appears(k) < TIMING.stale_after_s  # the reader's staleness
        if fresh:
            clock = clock.observe(100 + k, now)
        plan = plan_next_poll(now, head_aslot=100 + k if fresh else None,
                              head_block_number=50 + k if fresh else None,
                              schedule=Schedule(ROUND, 10**6), account="alice", clock=clock,
                              timing=TIMING)
        t += (plan.at - now).total_seconds()
    return polls


def reveal_lags(chain: SimChain, polls: list[float], after_s: float) -> list[float]:
    """For alice's slots after ``after_s``: from the block that reveals a miss to the next poll."""
    lags = []
    for k in range(1, chain.head(polls[-1])):
        if ROUND[(100 + k) % len(ROUND)] != "alice" or chain.appears(k + 1) < after_s:
            continue
        visible = chain.appears(k + 1)
        lags.append(min(p for p in polls if p >= visible) - visible)
    return lags


@pytest.mark.parametrize("chain", [
    pytest.param(SimChain(halt_at_s=60, halt_s=40), id="halt-40s"),
    pytest.param(SimChain(step_at_s=60, step_s=30), id="clock-plus-30s"),
    pytest.param(SimChain(step_at_s=60, step_s=-30), id="clock-minus-30s"),
])
def test_poll_lag_after_a_shift_is_as_without(chain: SimChain) -> None:
    """Three blocks after a halt or a clock step, misses are seen as soon as without it."""
    usual = reveal_lags(SimChain(), simulated_polls(SimChain(), 300), 0)
    assert max(usual) <= TIMING.min_gap_s + 1e-6  # one quick re-poll at most
    polls = simulated_polls(chain, 300)
    # The watcher can notice the shift only at its first poll after it.
    shifted = chain.appears(chain.head(60) + 1) if chain.halt_s else chain.step_at_s
    noticed = min(p for p in polls if p >= shifted)
    lags = reveal_lags(chain, polls, noticed + 3 * 3.0)
    assert len(lags) >= 10
    assert max(lags) <= TIMING.min_gap_s + 1e-6, lags


def test_unsettled_clock_polls_every_min_gap() -> None:
    """Until one sighting is tight the watcher looks every tenth of a slot for the next block."""
    clock = SlotClock(3.0).observe(100, T0)
    assert clock.settled is False
    plan = plan_next_poll(T0, head_aslot=100, head_block_number=50, schedule=Schedule(ROUND, 60),
                          account="alice", clock=clock, timing=TIMING)
    assert plan.at == T0 + timedelta(seconds=0.3)


def test_known_schedule_without_sightings_polls_each_block() -> None:
    """A schedule but no slot estimate yet: look again in one slot, naming alice's slot."""
    plan = plan_next_poll(T0, head_aslot=100, head_block_number=50, schedule=Schedule(ROUND, 60),
                          account="alice", clock=SlotClock(3.0), timing=TIMING)
    assert (plan.at, plan.next_slot_aslot, plan.next_slot_eta) == (
        T0 + timedelta(seconds=3), 102, None)


def test_parse_schedule_accepts_a_full_round_of_21() -> None:
    """Mainnet's schedule names exactly 21 witnesses for 21 slots: that is in range."""
    names = [f"w{i}" for i in range(21)]
    assert parse_schedule(schedule_doc(names, 21, 500)) == Schedule(tuple(names), 500)


def test_tight_sighting_corrects_an_estimate_proved_too_early() -> None:
    """A block absent at one poll and present 0.2 s later began in between, whatever came before."""
    clock = SlotClock(3.0).observe(100, T0 - timedelta(seconds=2))  # a sighting 2 s too early
    clock = clock.observe(100, T0 + timedelta(seconds=2.8)).observe(101, T0 + timedelta(seconds=3))
    assert clock.settled
    assert clock.slot_start(102) == T0 + timedelta(seconds=6)


@pytest.mark.parametrize("gap_s", [
    pytest.param(0.0, id="same-clock-reading"),
    pytest.param(0.2, id="fifth-of-a-second"),
    pytest.param(0.75, id="exactly-a-quarter-slot"),
])
def test_consecutive_new_heads_close_together_are_tight(gap_s: float) -> None:
    """A new head within a quarter slot of the poll that saw the previous one settles the clock."""
    clock = SlotClock(3.0).observe(99, T0 - timedelta(seconds=gap_s)).observe(100, T0)
    assert clock.settled is True
    assert clock.slot_start(101) == T0 + timedelta(seconds=3)


def test_new_head_after_more_than_a_quarter_slot_is_not_tight() -> None:
    """A block seen 0.8 s after the last poll may have shown any time in between: not tight."""
    clock = SlotClock(3.0).observe(99, T0 - timedelta(seconds=0.8)).observe(100, T0)
    assert clock.settled is False


def test_tight_sighting_keeps_an_estimate_it_does_not_contradict() -> None:
    """Not there at its estimated start, there 0.5 s later: the earlier estimate stands, settled."""
    clock = SlotClock(3.0).observe(100, T0)  # one loose sighting: slot 101 at T0 + 3
    clock = clock.observe(100, T0 + timedelta(seconds=3)).observe(101, T0 + timedelta(seconds=3.5))
    assert clock.settled is True
    assert clock.slot_start(102) == T0 + timedelta(seconds=6)


def test_settled_clock_takes_a_slightly_earlier_sighting_and_stays_settled() -> None:
    """A sighting up to two slots earlier refines the estimate; beyond that it is a step back."""
    settled = _clock_at_slot_100()
    refined = settled.observe(101, T0 + timedelta(seconds=3 - 1))
    assert (refined.settled, refined.slot_start(102)) == (True, T0 + timedelta(seconds=5))
    edge = settled.observe(101, T0 + timedelta(seconds=3 - 6))
    assert (edge.settled, edge.slot_start(102)) == (True, T0)
    stepped = settled.observe(101, T0 + timedelta(seconds=3 - 6.5))
    assert (stepped.settled, stepped.slot_start(102)) == (False, T0 - timedelta(seconds=0.5))


def test_replaced_estimate_is_unsettled() -> None:
    """Two contradicting sightings replace the estimate, which must then settle again."""
    clock = _sighted(_clock_at_slot_100(), 101, 2, 3.0 + 30)
    assert clock.settled is False
    assert clock.slot_start(110) == T0 + timedelta(seconds=60)


def test_parse_schedule_edges() -> None:
    """One scheduled witness and a shuffle at block 0 (a fresh chain) are valid."""
    assert parse_schedule(schedule_doc(["a"], 1, 0)) == Schedule(("a",), 0)
