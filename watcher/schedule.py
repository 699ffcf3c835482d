"""When to look: the witness's next slot from the schedule, and the next poll time. Pure.

hived's ``get_scheduled_witness(s)`` is
``current_shuffled_witnesses[(current_aslot + s) % num_scheduled_witnesses]`` for
the slot ``s`` slots after the head block, until the head reaches
``next_shuffle_block_num`` and the schedule is reshuffled. A missed slot shows
in ``total_missed`` only when the *next* block is applied, so the poll that can
see a miss is the one right after the block that follows the witness's slot.

Chain time is not wall time (the devnet runs its 3-second chain clock faster):
slot start times are estimated from the wall time at which new heads were
first seen (:class:`SlotClock`), with ``block_interval_s`` in wall seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from shared.errors import ChainDataError

_SAMPLES = 8  # first sightings of new heads kept to estimate the slot phase


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
    """Estimates the wall time at which an absolute slot begins, from head sightings.

    Each first sighting of a new head gives an upper bound on when its slot began;
    the smallest of the recent bounds is the estimate (we see blocks late, never early).
    """

    interval_s: float
    origins: tuple[float, ...] = ()  # estimated wall epoch seconds of absolute slot 0
    last_aslot: int = -1

    def observe(self, aslot: int, seen_at: datetime) -> SlotClock:
        """Record that the head was in slot ``aslot`` at ``seen_at``."""
        if aslot <= self.last_aslot:
            return self
        origin = seen_at.timestamp() - aslot * self.interval_s
        return replace(self, origins=(*self.origins, origin)[-_SAMPLES:], last_aslot=aslot)

    def slot_start(self, aslot: int) -> datetime | None:
        """The estimated wall time at which slot ``aslot`` begins (None before any sighting)."""
        if not self.origins:
            return None
        return datetime.fromtimestamp(min(self.origins) + aslot * self.interval_s, UTC)


@dataclass(frozen=True)
class Timing:
    """Wall-clock timing of the watcher (watcher.toml)."""

    block_interval_s: float
    max_poll_interval_s: float
    stale_after_s: float
    visible_after_s: float  # after a slot begins, when its block shows on the API nodes

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
    at = start + timedelta(seconds=timing.visible_after_s)
    if at <= now:
        # The block is late. Look again soon, or back off if the chain seems stopped.
        overdue = (now - at).total_seconds()
        at = now + (interval / 2 if overdue < timing.stale_after_s else latest - now)
        why = f"{why} (overdue {overdue:.1f} s)"
    return _bounded(PollPlan(at, why, slot_aslot, eta), now, latest, timing)


def _bounded(plan: PollPlan, now: datetime, latest: datetime, timing: Timing) -> PollPlan:
    earliest = now + timedelta(seconds=timing.min_gap_s)
    return replace(plan, at=max(earliest, min(plan.at, latest)))
