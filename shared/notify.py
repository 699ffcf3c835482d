"""Notifiers: the ``Notifier`` port, a log fallback, and wrappers that keep alerts off the path.

Compose as ``RateLimitedNotifier(NonBlockingNotifier(TwilioNotifier(...)), ...)``:
the rate limit runs in the caller's thread (cheap, keeps a flood out of the
queue) and the SMS goes out from a background thread. The Twilio notifier is in
:mod:`shared.sms`, the one module that imports ``twilio``: importing this one
never loads it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from datetime import datetime, timedelta
from typing import Protocol

from shared.clock import Clock
from shared.errors import ConfigError, NotifyError

log = logging.getLogger(__name__)


class Notifier(Protocol):
    """Tells a human that something happened."""

    def send(self, event: str, text: str) -> None:
        """Deliver ``text`` about ``event``.

        Raises:
            NotifyError: it could not be delivered.
        """
        ...


class RevealsSecret(Protocol):
    """A redacting secret wrapper, such as :class:`shared.secret.Secret`."""

    def reveal(self) -> str:
        """Return the secret itself."""
        ...


class LogNotifier:
    """Writes notifications to the log; the notifier when no SMS is configured."""

    def __init__(self, level: int = logging.WARNING) -> None:
        self._level = level

    def send(self, event: str, text: str) -> None:
        """Log the notification."""
        log.log(self._level, "notification [%s] %s", event, text)

    def __repr__(self) -> str:
        return "LogNotifier()"


class NonBlockingNotifier:
    """Hands notifications to a background thread so the caller never waits or fails."""

    def __init__(self, inner: Notifier, *, max_queue: int = 100) -> None:
        self._inner = inner
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()

    def send(self, event: str, text: str) -> None:
        """Queue the notification and return at once; drop it (logged) if the queue is full."""
        with self._lock:
            if self._closed:
                log.warning("notifier closed; dropped notification [%s]", event)
                return
            try:
                self._queue.put_nowait((event, text))
            except queue.Full:
                self.dropped += 1
                log.warning("notification queue full; dropped [%s] (%d dropped so far)",
                            event, self.dropped)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop after the queued notifications; return whether the worker ended in ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
        try:
            self._queue.put(None, timeout=max(timeout, 0.0))  # the stop mark
        except queue.Full:
            log.warning("notifier did not drain in %.1fs; abandoning queued messages", timeout)
            return False
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            event, text = item
            try:
                self._inner.send(event, text)
            except NotifyError as e:
                log.warning("notification [%s] not delivered: %s", event, e)
            except Exception:
                # A notifier bug must not kill the worker: later alerts still matter.
                log.exception("notifier raised unexpectedly for [%s]", event)

    def __repr__(self) -> str:
        return f"NonBlockingNotifier({self._inner!r}, queued={self._queue.qsize()})"


class RateLimitedNotifier:
    """Suppresses repeats of one event and caps the hourly total, so an outage is not 500 SMS."""

    def __init__(
        self,
        inner: Notifier,
        *,
        per_event_min_interval: timedelta,
        max_per_hour: int,
        clock: Clock,
    ) -> None:
        if per_event_min_interval < timedelta(0) or max_per_hour < 1:
            raise ConfigError("interval must be >= 0 and max_per_hour >= 1", field="notify")
        self._inner = inner
        self._interval = per_event_min_interval
        self._max_per_hour = max_per_hour
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, datetime] = {}
        self._sent: deque[datetime] = deque()
        self._suppressed: Counter[str] = Counter()

    def send(self, event: str, text: str) -> None:
        """Forward unless ``event`` was sent too recently or the hourly cap is reached.

        The next forwarded message of an event says how many of it were suppressed.

        Raises:
            NotifyError: from the wrapped notifier.
        """
        now = self._clock.now()
        suppressed = 0
        with self._lock:
            while self._sent and now - self._sent[0] >= timedelta(hours=1):
                self._sent.popleft()
            last = self._last.get(event)
            if last is not None and now - last < self._interval:
                reason: str | None = f"sent less than {self._interval} ago"
            elif len(self._sent) >= self._max_per_hour:
                reason = f"hourly cap of {self._max_per_hour} reached"
            else:
                reason = None
                self._last[event] = now
                self._sent.append(now)
                suppressed = self._suppressed.pop(event, 0)
            if reason is not None:
                self._suppressed[event] += 1
        if reason is not None:
            log.warning("notification [%s] suppressed (%s): %s", event, reason, text)
            return
        if suppressed:
            text = f"{text} (+{suppressed} similar suppressed)"
        self._inner.send(event, text)

    def __repr__(self) -> str:
        return f"RateLimitedNotifier({self._inner!r}, max_per_hour={self._max_per_hour})"
