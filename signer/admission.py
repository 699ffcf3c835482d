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
"""

from __future__ import annotations

import ipaddress
from collections import Counter, deque
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
