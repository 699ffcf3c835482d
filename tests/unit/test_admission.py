"""The signer's admission rules (signer/admission.py): fair shares of the application threads."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.admission import FairShare


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
