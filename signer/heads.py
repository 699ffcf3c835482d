"""Fresh heads per node, kept by a background refresh about once per block: TaPoS without a read.

The signer needs each node's head for two things: whether the node still advances
(:class:`shared.rpc.HeadTracker`) and the TaPoS block and chain time a transaction is
built on. Reading it at signing time costs a round trip on the fast path; instead
:class:`HeadRefresher` reads every node's head about once per block interval (the
interval is estimated from the heads seen) and :class:`HeadCache` keeps the latest.

:class:`HeadCache` is pure (no I/O, no clock of its own): a cached head is usable only
while it is young (:meth:`HeadCache.usable`) and the node was fresh when it was read;
otherwise the caller reads the head inline, as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from shared.chaindata import DynamicProps
from shared.errors import FailoverError

log = logging.getLogger(__name__)

MIN_PERIOD_S = 0.1
MAX_PERIOD_S = 3.0
START_PERIOD_S = 0.5


@dataclass(frozen=True)
class CachedHead:
    """One node's head as last read: its props, whether it advanced, and when (monotonic s)."""

    props: DynamicProps
    fresh: bool
    at: float


@dataclass
class _Pace:
    first_number: int
    first_at: float
    last_number: int
    last_at: float


class HeadCache:
    """The latest head per node and the observed wall interval between blocks. No I/O.

    ``max_age_s`` caps how old a cached head may be and still be used (the node's
    staleness limit); within that, a head is usable for two estimated block intervals
    plus ``slack_s``, so one late refresh does not force an inline read.
    """

    def __init__(self, *, max_age_s: float, slack_s: float = 0.5) -> None:
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self.max_age_s = max_age_s
        self.slack_s = slack_s
        self._heads: dict[str, CachedHead] = {}
        self._pace: _Pace | None = None
        self._lock = threading.Lock()

    def record(self, url: str, props: DynamicProps, *, fresh: bool, at: float) -> None:
        """Keep ``props`` as ``url``'s head read at ``at``; learn the block pace from it."""
        with self._lock:
            self._heads[url] = CachedHead(props, fresh, at)
            number = props.head_block_number
            pace = self._pace
            if pace is None or number < pace.last_number:
                self._pace = _Pace(number, at, number, at)
            elif number > pace.last_number:
                pace.last_number, pace.last_at = number, at

    def forget(self, url: str) -> None:
        """Drop ``url``'s head (it failed to answer, or is on another chain)."""
        with self._lock:
            self._heads.pop(url, None)

    def block_interval_s(self) -> float | None:
        """The mean wall time per block seen so far, or None before two distinct heads."""
        with self._lock:
            pace = self._pace
            if pace is None or pace.last_number == pace.first_number:
                return None
            return (pace.last_at - pace.first_at) / (pace.last_number - pace.first_number)

    def period_s(self) -> float:
        """How often to refresh: one block interval, within 0.1..3 s (0.5 s until known)."""
        interval = self.block_interval_s()
        if interval is None:
            return START_PERIOD_S
        return min(MAX_PERIOD_S, max(MIN_PERIOD_S, interval))

    def usable(self, url: str, now: float) -> DynamicProps | None:
        """``url``'s cached head if the node was fresh and the head is young enough, else None."""
        limit = min(self.max_age_s, 2 * self.period_s() + self.slack_s)
        with self._lock:
            head = self._heads.get(url)
        if head is None or not head.fresh or not 0 <= now - head.at <= limit:
            return None
        return head.props


class HeadRefresher:
    """Calls ``refresh`` about once per block (``cache.period_s()``) on a daemon thread."""

    def __init__(self, refresh: Callable[[], None], cache: HeadCache) -> None:
        self._refresh, self._cache = refresh, cache
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the refresh thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="head-refresher", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._refresh()
            except FailoverError as e:  # an optimisation only: reads fall back to inline heads
                log.warning("head refresh failed: %s", e)
            self._stop.wait(self._cache.period_s())
