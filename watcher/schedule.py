"""When to look: the witness's next slot from the schedule, and the next poll time. Pure.

hived's ``get_scheduled_witness(s)`` is
``current_shuffled_witnesses[(current_aslot + s) % num_scheduled_witnesses]`` for
the slot ``s`` slots after the head block, until the head reaches
``next_shuffle_block_num`` and the schedule is reshuffled. A missed slot shows
in ``total_missed`` only when the *next* block is applied, so the poll that can
see a miss is the one right after the block that follows the witness's slot.

Chain time is not wall time (the devnet runs its 3-second chain clock faster):
when a slot's block can be seen is estimated from the wall time at which new
heads were first seen (:class:`SlotClock`), with ``block_interval_s`` in wall
seconds. The poll for a block comes a little before its estimated sighting and
repeats every :attr:`Timing.min_gap_s` until it shows (for ``visible_after_s``),
so the watcher looks as soon as the block that can reveal a miss appears.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from shared.errors import ChainDataError

_LATE_SLOTS = 2  # a sighting this many slots after its estimated start contradicts it
_SHIFT_SIGHTINGS = 2  # consecutive contradicting sightings that replace the estimate
_EARLY = 0.25  # the poll for a block comes this share of a slot before its estimated sighting


@dataclass(frozen=True)
class Schedule:
    """The shuffled round in force until ``next_shuffle_block_num``."""

    shuffled: tuple[str, ...]
    next_shuffle_block_num: int


def parse_schedule(doc: object) -> Schedule:
    """Parse ``condenser_api.get_witness_schedule``.

    Raises:
        ChainDataError: missing or mistyped fields.
    """
    if not isinstance(doc, dict):
        raise ChainDataError("witness schedule: not an object")
    names = doc.get("current_shuffled_witnesses")
    count = doc.get("num_scheduled_witnesses")
    next_shuffle = doc.get("next_shuffle_block_num")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ChainDataError("witness schedule: current_shuffled_witnesses is not a name list")
    for name, value in (("num_scheduled_witnesses", count),
                        ("next_shuffle_block_num", next_shuffle)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ChainDataError(f"witness schedule: {name} is not a non-negative integer")
    assert isinstance(count, int)  # narrowed above
    assert isinstance(next_shuffle, int)
    if not 1 <= count <= len(names):
        raise ChainDataError("witness schedule: num_scheduled_witnesses out of range")
    return Schedule(tuple(names[:count]), next_shuffle)


def slots_until(schedule: Schedule, account: str, head_aslot: int,
                head_block_number: int) -> int | None:
    """Slots after the head until ``account``'s next slot, if this schedule still decides it.

    Slot ``s`` follows at most ``s - 1`` blocks, so it is still governed by this
    schedule while ``s <= next_shuffle_block_num - head_block_number``.
    """
    horizon = min(schedule.next_shuffle_block_num - head_block_number, len(schedule.shuffled))
    for s in range(1, horizon + 1):
        if schedule.shuffled[(head_aslot + s) % len(schedule.shuffled)] == account:
            return s
    return None


@dataclass(frozen=True)
class SlotClock:
    """Estimates the wall time at which an absolute slot's block is first seen.

    Each first sighting of a new head is an upper bound on when its block could be
    seen; the smallest bound since the estimate was last replaced is the estimate
    (we see blocks late, never early). A *tight* sighting, within a quarter slot of
    a poll that did not see that block yet, also bounds it from below: it replaces
    an estimate it proves too early, and :attr:`settled` says one was made.

    A sighting earlier than the estimate is taken at once (the local clock stepped
    back). Sightings much later than the estimate mean it went wrong: the chain's
    slot clock paused (a devnet halt) or the local clock stepped forward. One such
    sighting may be a lagging node; :data:`_SHIFT_SIGHTINGS` in a row replace the
    estimate, so it heals within a few blocks instead of never.
    """

    interval_s: float
    origin: float | None = None  # estimated wall epoch seconds of absolute slot 0
    last_aslot: int = -1
    late: tuple[float, ...] = ()  # consecutive origins that contradict ``origin``
    polled_at: float | None = None  # wall epoch seconds of the last poll
    settled: bool = False  # a tight sighting since the estimate was last replaced

    def observe(self, aslot: int, seen_at: datetime) -> SlotClock:
        """Record that a poll at ``seen_at`` found the head in slot ``aslot``."""
        at = seen_at.timestamp()
        if aslot <= self.last_aslot:
            return replace(self, polled_at=at)
        new = replace(self, last_aslot=aslot, polled_at=at, late=())
        origin = at - aslot * self.interval_s
        before = self.polled_at  # None until the first poll
        if before is not None and 0 <= at - before <= _EARLY * self.interval_s:
            # Not there at the last poll, there at this one: the block showed in between.
            floor = before - aslot * self.interval_s
            if self.origin is None or self.origin < floor or origin < self.origin:
                return replace(new, origin=origin, settled=True)
            return replace(new, settled=True)
        if self.origin is None or origin < self.origin - _LATE_SLOTS * self.interval_s:
            return replace(new, origin=origin, settled=False)  # first, or a step back
        if origin <= self.origin:
            return replace(new, origin=origin)
        if origin - self.origin <= _LATE_SLOTS * self.interval_s:
            return new
        late = (*self.late, origin)
        if len(late) < _SHIFT_SIGHTINGS:
            return replace(new, late=late)
        return replace(new, origin=min(late), settled=False)

    def slot_start(self, aslot: int) -> datetime | None:
        """When slot ``aslot``'s block should be seen at the earliest (None before any sighting)."""
        if self.origin is None:
            return None
        return datetime.fromtimestamp(self.origin + aslot * self.interval_s, UTC)


@dataclass(frozen=True)
class Timing:
    """Wall-clock timing of the watcher (watcher.toml)."""

    block_interval_s: float
    max_poll_interval_s: float
    stale_after_s: float
    visible_after_s: float  # past its estimated sighting, a block may still show this late

    @property
    def min_gap_s(self) -> float:
        """Never poll twice within this (no busy loop whatever the estimates say)."""
        return self.block_interval_s / 10


@dataclass(frozen=True)
class PollPlan:
    """When to poll next, why, and the witness's next slot if known."""

    at: datetime
    why: str
    next_slot_aslot: int | None = None
    next_slot_eta: datetime | None = None


def plan_next_poll(now: datetime, *, head_aslot: int | None, head_block_number: int | None,
                   schedule: Schedule | None, account: str, clock: SlotClock,
                   timing: Timing) -> PollPlan:
    """The next poll: right after the block following the witness's slot, else later.

    Never later than ``max_poll_interval_s`` (staleness needs the head tracked),
    never sooner than :attr:`Timing.min_gap_s`.
    """
    interval = timedelta(seconds=timing.block_interval_s)
    latest = now + timedelta(seconds=timing.max_poll_interval_s)
    if head_aslot is None or head_block_number is None:
        return _bounded(PollPlan(now + interval, "no fresh head yet"), now, latest, timing)
    if schedule is None or head_block_number >= schedule.next_shuffle_block_num:
        return _bounded(PollPlan(now + interval, "schedule unknown"), now, latest, timing)
    if clock.origin is not None and not clock.settled:
        # Until one sighting is tight, look every min_gap_s: the next block gives one.
        return _bounded(PollPlan(now, "settling the slot clock"), now, latest, timing)
    s = slots_until(schedule, account, head_aslot, head_block_number)
    if s is None:
        # Not in what is left of this round: look again once the round is over.
        target = head_aslot + schedule.next_shuffle_block_num - head_block_number
        slot_aslot, why = None, "after the reshuffle"
    else:
        target = head_aslot + s + 1  # the block after the slot makes a miss visible
        slot_aslot, why = head_aslot + s, f"after {account}'s slot {head_aslot + s}"
    start = clock.slot_start(target)
    eta = None if slot_aslot is None else clock.slot_start(slot_aslot)
    if start is None:
        return _bounded(PollPlan(now + interval, why, slot_aslot, eta), now, latest, timing)
    # A little early: if the block is there already, the sighting tightens the estimate.
    at = start - interval * _EARLY
    if at <= now:
        # Not there yet. Within visible_after_s of its estimated sighting look again
        # at once (the miss shows the moment it comes; that sighting is tight); then
        # every half slot. Long overdue while the head is fresh (a halted chain has no
        # fresh head) means the estimate is wrong (a halt paused the devnet's slots,
        # the local clock stepped): poll every block so fresh sightings correct it.
        overdue = (now - start).total_seconds()
        if overdue < timing.visible_after_s:
            at = now
        else:
            at = now + (interval / 2 if overdue < timing.stale_after_s else interval)
        why = f"{why} (overdue {overdue:.2f} s)"
    return _bounded(PollPlan(at, why, slot_aslot, eta), now, latest, timing)


def _bounded(plan: PollPlan, now: datetime, latest: datetime, timing: Timing) -> PollPlan:
    earliest = now + timedelta(seconds=timing.min_gap_s)
    return replace(plan, at=max(earliest, min(plan.at, latest)))
