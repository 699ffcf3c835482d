"""The signer's admission rules (signer/admission.py): fair thread shares, refusal pacing."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.admission import FairShare, RefusalPacer


def test_empty_share_pops_nothing() -> None:
    """Nothing waiting: pop says so instead of raising."""
    share: FairShare[int] = FairShare(per_source=1)
    assert share.pop() is None
    assert len(share) == 0


def test_a_share_needs_at_least_one_slot_per_source() -> None:
    """per_source 0 would let no request run: refused at construction."""
    with pytest.raises(ValueError, match="per_source"):
        FairShare(per_source=0)


def test_no_source_gets_more_than_its_share_even_with_slots_free() -> None:
    """At its cap a source waits, whatever else is free; a slot given back lets it go on."""
    share: FairShare[str] = FairShare(per_source=1)
    share.push("a", "a0")
    share.push("a", "a1")
    assert share.pop() == ("a", "a0")
    assert share.pop() is None  # a holds its one slot; a1 waits
    assert share.waiting_from("a") == 1
    share.finish("a")
    assert share.pop() == ("a", "a1")


def test_one_source_is_first_in_first_out() -> None:
    """Items from a single source come out in the order they were pushed."""
    share: FairShare[int] = FairShare(per_source=5)
    for i in range(5):
        share.push("10.0.0.1", i)
    assert [share.pop() for _ in range(5)] == [("10.0.0.1", i) for i in range(5)]
    assert share.pop() is None
    assert share.holding("10.0.0.1") == 5


def test_a_source_holding_a_slot_yields_the_next_to_one_holding_none() -> None:
    """The flooder holds the thread and has three waiting; the watcher, last to come, is next."""
    share: FairShare[str] = FairShare(per_source=4)
    share.start("flood")
    for i in (1, 2, 3):
        share.push("flood", f"f{i}")
    share.push("watcher", "w")
    share.finish("flood")  # f0 is done, but the flood's own backlog still waits
    share.start("flood")  # ... and so does another of its requests in another thread
    assert share.pop() == ("watcher", "w")
    assert [share.pop() for _ in range(3)] == [("flood", "f1"), ("flood", "f2"), ("flood", "f3")]


def test_equal_sources_take_turns_in_order_of_arrival() -> None:
    """Three sources with backlogs and equal shares are served a, b, c, a, b, c."""
    share: FairShare[str] = FairShare(per_source=2)
    for source in "abc":
        for i in range(2):
            share.push(source, f"{source}{i}")
    assert [item for _, item in filter(None, (share.pop() for _ in range(6)))] == [
        "a0", "b0", "c0", "a1", "b1", "c1"]


def test_finish_gives_the_slot_back_to_the_count() -> None:
    """Holdings go up with start and pop, down with finish, and vanish at zero."""
    share: FairShare[str] = FairShare(per_source=2)
    share.start("a")
    share.push("a", "a1")
    assert share.pop() == ("a", "a1")
    assert share.holding("a") == 2
    share.finish("a")
    share.finish("a")
    assert share.holding("a") == 0
    share.push("b", "b0")
    share.push("a", "a2")
    share.start("b")
    assert share.pop() == ("a", "a2")  # b holds one, a none: a first although b came first


def test_remove_takes_a_waiter_out_and_counts() -> None:
    """A waiter that gives up leaves the queue; removing it twice is refused."""
    share: FairShare[str] = FairShare(per_source=2)
    share.push("a", "a0")
    share.push("a", "a1")
    share.push("b", "b0")
    assert share.remove("a", "a0") is True
    assert share.remove("a", "a0") is False
    assert share.remove("zzz", "a1") is False
    assert (len(share), share.waiting_from("a"), share.waiting_from("b")) == (2, 1, 1)
    assert share.remove("b", "b0") is True
    assert share.waiting_from("b") == 0
    assert [share.pop(), share.pop()] == [("a", "a1"), None]


_STEP = st.one_of(st.tuples(st.just("push"), st.sampled_from("abcd")),
                  st.tuples(st.just("start"), st.sampled_from("abcd")),
                  st.tuples(st.just("pop"), st.just("")),
                  st.tuples(st.just("finish"), st.integers(0, 10)))


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 3), st.lists(_STEP, max_size=80))
def test_every_slot_goes_to_a_least_served_waiting_source(
        per_source: int, steps: list[tuple[str, object]]) -> None:
    """Property: each pop serves a waiting source that holds the fewest slots; nothing is lost.

    Steps push an item from a source, take a slot without waiting, hand out a slot,
    or give one back. Only a source under its share may be served. Among the least
    served, the one served longest ago goes first
    (a source that went quiet counts as never served), then the one waiting longest.
    Each source's items keep
    their order and every pushed item comes out exactly once.
    """
    share: FairShare[tuple[str, int]] = FairShare(per_source=per_source)
    pushed: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    held: list[str] = []  # one entry per slot held
    popped: list[tuple[str, int]] = []
    last: dict[str, int] = {}  # the model's record of when each source was last served
    since: dict[str, int] = {}  # ... and of when each began waiting
    for tick, (step, arg) in enumerate(steps):
        if step == "push":
            source = str(arg)
            if not waiting[source]:
                since[source] = tick
            share.push(source, (source, pushed[source]))
            pushed[source] += 1
            waiting[source] += 1
        elif step == "start":
            share.start(str(arg))
            held.append(str(arg))
            last[str(arg)] = tick
        elif step == "finish":
            if held:
                source = held.pop(int(str(arg)) % len(held))
                share.finish(source)
                if source not in held and not waiting[source]:
                    last.pop(source, None)
        else:
            expected = min((s for s, n in waiting.items() if n and held.count(s) < per_source),
                           default=None,
                           key=lambda s: (held.count(s), last.get(s, -1), since[s]))
            got = share.pop()
            if got is None:
                assert expected is None
                continue
            source, item = got
            assert item[0] == source
            assert source == expected
            waiting[source] -= 1
            held.append(source)
            last[source] = tick
            popped.append(item)
        for source in "abcd":
            assert share.holding(source) == held.count(source)
            assert share.waiting_from(source) == waiting[source]
    while held:
        share.finish(held.pop())
    while (got := share.pop()) is not None:
        popped.append(got[1])
        share.finish(got[0])
    for source, count in pushed.items():
        assert [n for s, n in popped if s == source] == list(range(count))
    assert len(popped) == sum(pushed.values())


# ---- RefusalPacer -------------------------------------------------------------------


def _refuse(pacer: RefusalPacer, source: str, now: float) -> float:
    """One request from ``source`` at ``now`` that is refused; return how long it waited."""
    delay, charge = pacer.admit(source, now)
    pacer.settle(source, now + delay, charge=charge, refused=True)
    return delay


def test_pacer_parameters_must_allow_requests() -> None:
    """A pace of zero or a burst under one would never read a refused source again."""
    with pytest.raises(ValueError, match="per_s"):
        RefusalPacer(per_s=0, burst=5, total_per_s=100)
    with pytest.raises(ValueError, match="total_per_s"):
        RefusalPacer(per_s=1, burst=5, total_per_s=0)
    with pytest.raises(ValueError, match="burst"):
        RefusalPacer(per_s=1, burst=0, total_per_s=100)


def test_a_source_that_is_never_refused_is_never_delayed_nor_charged() -> None:
    """Genuine traffic from an address with no refusals: no wait, no charge, no record."""
    pacer = RefusalPacer(per_s=10, burst=3, total_per_s=100)
    for i in range(1000):
        delay, charge = pacer.admit("watcher", i * 0.001)
        assert (delay, charge) == (0.0, 0.0)
        pacer.settle("watcher", i * 0.001, charge=charge, refused=False)
    assert len(pacer) == 0


def test_burst_then_pace_then_debt_falls_off() -> None:
    """burst + 1 refusals at once, then one per 1/per_s; once paid off, at once again."""
    pacer = RefusalPacer(per_s=10, burst=3, total_per_s=100)
    assert [_refuse(pacer, "flood", 0.0) for _ in range(4)] == [0.0] * 4
    waits = [pacer.admit("flood", 0.0) for _ in range(3)]  # three requests queue up
    assert waits == [(pytest.approx(0.1), pytest.approx(0.1)),
                     (pytest.approx(0.2), pytest.approx(0.1)),
                     (pytest.approx(0.3), pytest.approx(0.1))]
    for delay, charge in waits:
        pacer.settle("flood", delay, charge=charge, refused=True)
    assert pacer.delay("flood", 0.3) == pytest.approx(0.1)
    assert pacer.delay("flood", 0.5) == 0.0  # the debt now within the burst
    assert pacer.delay("other", 0.0) == 0.0  # one address's debt is its own
    delay, charge = pacer.admit("flood", 0.6)
    assert (delay, charge) == (0.0, pytest.approx(0.1))  # in debt: charged, not delayed
    pacer.settle("flood", 0.6, charge=charge, refused=False)  # it was genuine: refunded
    assert pacer.admit("flood", 0.65) == (0.0, pytest.approx(0.1))  # the debt as it was
    pacer.settle("flood", 0.65, charge=0.1, refused=False)
    assert pacer.admit("flood", 0.71) == (0.0, 0.0)  # paid off at 0.7 and forgotten
    assert len(pacer) == 0


def test_a_genuine_request_from_a_paced_source_costs_it_nothing() -> None:
    """Charged at admission, refunded when the answer is signed: the next refusal waits as
    before."""
    pacer = RefusalPacer(per_s=1, burst=1, total_per_s=100)
    _refuse(pacer, "s", 0.0)
    _refuse(pacer, "s", 0.0)
    before = pacer.delay("s", 0.0)
    delay, charge = pacer.admit("s", 0.0)
    assert (delay, charge) == (before, 1.0)
    pacer.settle("s", delay, charge=charge, refused=False)
    assert pacer.delay("s", delay) == pytest.approx(before - delay)


def test_many_sources_in_debt_share_the_total_pace() -> None:
    """Fifty addresses in debt at once: each refusal costs each its share of total_per_s, so
    together they are read at about total_per_s; one refusal on record still reads at once."""
    pacer = RefusalPacer(per_s=10, burst=30, total_per_s=100)
    for i in range(50):
        _refuse(pacer, f"10.0.0.{i}", 0.0)
    assert len(pacer) == 50
    assert pacer.step(0.0) == pytest.approx(0.5)  # 50 in debt / 100 a second
    assert pacer.admit("10.0.0.0", 0.0) == (0.0, pytest.approx(0.5))  # within its burst
    assert pacer.delay("watcher", 0.0) == 0.0
    _refuse(pacer, "watcher", 0.0)  # a retry after a stale clock, say
    assert pacer.delay("watcher", 0.0) == 0.0  # ... is still read at once


def test_the_table_of_sources_is_swept_of_paid_off_debt() -> None:
    """Many addresses refused once each, long ago: the table keeps only those in debt."""
    pacer = RefusalPacer(per_s=100, burst=1, total_per_s=1000)
    for i in range(5000):
        _refuse(pacer, f"10.0.{i // 256}.{i % 256}", i * 1.0)
    assert len(pacer) <= 2


@settings(max_examples=300, deadline=None)
@given(st.floats(0.5, 50), st.integers(1, 20),
       st.lists(st.tuples(st.sampled_from("ab"), st.floats(0, 0.5), st.booleans()),
                max_size=120))
def test_refusals_read_from_one_source_stay_under_burst_plus_pace(
        per_s: float, burst: int, arrivals: list[tuple[str, float, bool]]) -> None:
    """Property: in any time window W, a source has at most burst + 1 + W * per_s refused
    requests read, whatever arrives; genuine requests are never charged for one another.

    Arrivals come from two sources at non-decreasing times; each is read at the time
    ``admit`` allows, and refused or not as drawn. The read times of refused requests
    are checked against the GCRA bound over every window that starts at one of them.
    """
    pacer = RefusalPacer(per_s=per_s, burst=burst, total_per_s=1e9)
    now = 0.0
    reads: dict[str, list[float]] = {"a": [], "b": []}
    for source, gap, refused in arrivals:
        now += gap
        delay, charge = pacer.admit(source, now)
        assert delay >= 0
        if not charge:
            assert delay == 0
        read_at = now + delay
        pacer.settle(source, read_at, charge=charge, refused=refused)
        if refused:
            reads[source].append(read_at)
    for times in reads.values():
        times.sort()
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                window = times[j] - start
                assert j - i + 1 <= burst + 1 + window * per_s + 1e-6


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 60), st.integers(1, 4), st.sampled_from([20.0, 100.0]))
def test_a_flood_from_many_sources_is_read_at_about_the_total_pace(
        sources: int, connections: int, total_per_s: float) -> None:
    """Property: ``sources`` addresses, each with ``connections`` connections that send a
    forged request as soon as the last was answered, for 30 simulated seconds: refused
    requests read in all stay under every source's burst + 1 plus the total pace, and
    each source's under its own burst + 1 plus the per-source pace.

    A discrete-event simulation on the pure object: each connection asks ``admit`` at
    the simulated time its previous answer went out, and is read when it says.
    """
    per_s, burst, horizon = 10.0, 5, 30.0
    pacer = RefusalPacer(per_s=per_s, burst=burst, total_per_s=total_per_s)
    queue = [(0.0, s, c) for s in range(sources) for c in range(connections)]
    reads = Counter[int]()
    while queue:
        queue.sort()
        now, source, conn = queue.pop(0)
        if now >= horizon:
            continue
        delay, charge = pacer.admit(str(source), now)
        read_at = now + delay
        if read_at >= horizon:
            continue
        pacer.settle(str(source), read_at, charge=charge, refused=True)
        reads[source] += 1
        queue.append((read_at + 0.001, source, conn))  # answered a millisecond later
    total = sum(reads.values())
    assert total <= sources * (burst + 1) + horizon * max(total_per_s, 0) + sources
    for source in range(sources):
        assert reads[source] <= burst + 1 + horizon * per_s + 1
