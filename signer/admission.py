"""Who gets the signer's connections and application threads: pure bookkeeping, no I/O.

The HTTP front (``signer/serving.py``) asks these objects what to do; they never
touch a socket or a greenlet, so the rules are tested on their own.

- :func:`source_of` and :class:`SourceLimiter`: the per-source connection cap
  (threat T10).
- :class:`FairShare`: which complete request waiting for an application thread
  gets the next free one. Waiters are grouped by source; the source holding the
  fewest threads goes first, the one served longest ago among equals, and no
  source holds more than its share. A flood from one address (forged requests
  each cost a signature check) therefore yields the next free thread to a
  request from another address, instead of queueing it behind the flood's whole
  backlog (threats T3, T10).
- :class:`RefusalPacer`: how long the front waits before it reads the next
  request of a source whose requests keep being refused unauthenticated. After
  a burst, such a source is read at a fixed pace, so a flood of forged requests
  from one address costs a bounded share of the CPU instead of all of it
  (threats T3, T10).
"""

from __future__ import annotations

import ipaddress
from collections import Counter, deque
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

T = TypeVar("T")

_IPV6_SOURCE_PREFIX: Final = 64  # one host or site usually holds a whole /64


def source_of(address: str) -> str:
    """The key connections are counted and queued by: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, _IPV6_SOURCE_PREFIX), strict=False))
    return str(ip)


class SourceLimiter:
    """Counts open connections per source; admits one only while its source is under the cap."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._open: Counter[str] = Counter()

    def admit(self, source: str) -> bool:
        """Count a new connection from ``source``; False (not counted) when at the cap."""
        if self._open[source] >= self._cap:
            return False
        self._open[source] += 1
        return True

    def release(self, source: str) -> None:
        """Forget one connection from ``source``."""
        self._open[source] -= 1
        if self._open[source] <= 0:
            del self._open[source]

    def open_from(self, source: str) -> int:
        """How many connections from ``source`` are open."""
        return self._open[source]


class FairShare(Generic[T]):
    """Waiters for a few shared slots, grouped by source; the next slot goes to the least served.

    :meth:`pop` picks, among the sources with a waiter that hold fewer than
    ``per_source`` slots, the one holding the fewest now (ties: the one served
    longest ago, so equals take turns; then the one waiting longest) and hands its
    oldest waiter a slot; :meth:`finish` counts a slot given back. A flood from one
    address therefore holds at most ``per_source`` slots, and yields the next free
    one to any other address that waits.
    """

    def __init__(self, per_source: int) -> None:
        if per_source < 1:
            raise ValueError("per_source must be at least 1")
        self._per_source = per_source
        self._waiters: dict[str, deque[T]] = {}  # sources with waiters, longest waiting first
        self._holding: Counter[str] = Counter()  # slots held, per source
        self._served: dict[str, int] = {}  # when each source last got a slot (a tick)
        self._tick = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def push(self, source: str, item: T) -> None:
        """Queue ``item`` behind the items already waiting from ``source``."""
        queue = self._waiters.get(source)
        if queue is None:
            queue = self._waiters[source] = deque()
        queue.append(item)
        self._count += 1

    def pop(self) -> tuple[str, T] | None:
        """Give a slot to the next waiter in turn: (its source, it); None when none may have one."""
        eligible = [s for s in self._waiters if self._holding[s] < self._per_source]
        if not eligible:
            return None
        source = min(eligible, key=lambda s: (self._holding[s], self._served.get(s, -1)))
        queue = self._waiters[source]
        item = queue.popleft()
        self._count -= 1
        if not queue:
            del self._waiters[source]
        self.start(source)
        return source, item

    def start(self, source: str) -> None:
        """Count a slot ``source`` took (from :meth:`pop`; directly only to set up a test)."""
        self._holding[source] += 1
        self._served[source] = self._tick
        self._tick += 1

    def finish(self, source: str) -> None:
        """Count a slot ``source`` gave back."""
        self._holding[source] -= 1
        if self._holding[source] <= 0:
            del self._holding[source]
            if source not in self._waiters:
                del self._served[source]  # gone quiet: bounded by the sources now active

    def holding(self, source: str) -> int:
        """How many slots ``source`` holds."""
        return self._holding[source]

    def remove(self, source: str, item: T) -> bool:
        """Take ``item`` out of the queue (its waiter gave up); False if it is not waiting."""
        queue = self._waiters.get(source)
        if queue is None:
            return False
        try:
            queue.remove(item)
        except ValueError:
            return False
        self._count -= 1
        if not queue:
            del self._waiters[source]
            if not self._holding[source]:
                self._served.pop(source, None)
        return True

    def waiting_from(self, source: str) -> int:
        """How many items from ``source`` wait."""
        queue = self._waiters.get(source)
        return 0 if queue is None else len(queue)


@dataclass(frozen=True)
class FrontCounts:
    """What the front's refusal pacing is doing, for the metrics."""

    sources_in_debt: int  # addresses with refusals on record (paid-off ones swept each second)
    paced_requests: int  # requests read only after waiting for their turn, since the start
    closed_unread: int  # connections closed because their turn was past the header deadline


class RefusalPacer:
    """Paces the sources whose requests are refused before authentication (GCRA per source).

    A *refusal* is an answer of status 400 or more that is not signed: a request the
    signer could not authenticate (401), or one it refused before trying (400, 404,
    405, 408, 413, ...). Answers to authenticated requests are signed and never count.

    Each refusal puts a *step* of debt on its source: ``1 / per_s`` seconds, or, when
    many sources are in debt at once, each one's fair share of ``total_per_s``
    (``sources in debt / total_per_s`` seconds), whichever is longer. A source without
    debt is never delayed nor charged (its first refusal is free). A source in debt is
    charged a step when its next request is admitted (the front reads nothing of it
    until the returned delay has passed); the charge is refunded by :meth:`settle` when
    that request turns out not to be refused. A source may run ``burst`` steps of
    ``1 / per_s`` ahead before it waits; past that, its requests are read one step
    apart, one after the other. Debt falls off with time.

    So one address gets ``burst + 1`` refusals at once, then ``per_s`` a second; many
    addresses together get about ``total_per_s`` a second once their bursts are spent;
    and an address with a refusal or two on record (a retry after a stale clock, say)
    is still read at once.

    The clock is any monotonic float in seconds, passed in by the caller; the object
    itself touches neither clock nor socket, and runs on one thread (the gevent hub).
    """

    def __init__(self, per_s: float, burst: int, total_per_s: float) -> None:
        if not (per_s > 0 and total_per_s > 0):
            raise ValueError("per_s and total_per_s must be above 0")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._interval = 1 / per_s
        self._total_per_s = total_per_s
        self._tolerance = burst * self._interval
        self._debt_until: dict[str, float] = {}  # sources in debt: when the debt is paid
        self._next_sweep = float("-inf")

    def step(self, now: float) -> float:
        """The debt one refusal adds at ``now`` (seconds): see the class docstring."""
        if now >= self._next_sweep:  # keep the count of sources in debt true to the second
            self._debt_until = {s: t for s, t in self._debt_until.items() if t > now}
            self._next_sweep = now + 1.0
        return max(self._interval, len(self._debt_until) / self._total_per_s)

    def admit(self, source: str, now: float) -> tuple[float, float]:
        """A request from ``source`` may be read in (delay) seconds; (delay, charge).

        ``charge`` is the debt charged for it in advance (0 when none): hand it back to
        :meth:`settle`.
        """
        paid_at = self._debt_until.get(source)
        if paid_at is None or paid_at <= now:
            self._debt_until.pop(source, None)
            return 0.0, 0.0
        charge = self.step(now)
        self._debt_until[source] = paid_at + charge
        return max(0.0, paid_at - self._tolerance - now), charge

    def settle(self, source: str, now: float, *, charge: float, refused: bool) -> None:
        """Account for a request :meth:`admit` let in: ``refused`` as defined above."""
        if refused == (charge > 0):
            return  # charged and refused: already paid; neither: nothing owed
        change = self.step(now) if refused else -charge
        paid_at = max(self._debt_until.get(source, now), now) + change
        if paid_at > now:
            self._debt_until[source] = paid_at
        else:
            self._debt_until.pop(source, None)

    def delay(self, source: str, now: float) -> float:
        """How long a request from ``source`` arriving ``now`` would wait (charging nothing)."""
        paid_at = self._debt_until.get(source)
        return 0.0 if paid_at is None else max(0.0, paid_at - self._tolerance - now)

    def __len__(self) -> int:
        """Sources with debt on record (paid-off ones are swept out once a second)."""
        return len(self._debt_until)
