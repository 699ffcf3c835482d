"""Notifiers: the ``Notifier`` port, a log fallback, and wrappers that keep alerts off the path.

Compose as ``RateLimitedNotifier(FanOutNotifier([NonBlockingNotifier(TwilioNotifier(...)),
NonBlockingNotifier(AppriseNotifier(...))]), ...)``: the rate limit runs in the
caller's thread (cheap, keeps a flood out of the queue), each channel sends from
its own background thread, so a hung or failing channel never delays another one
or a failover. The Twilio notifier is in :mod:`shared.sms`, the one module that
imports ``twilio``; the apprise channels (Telegram, Discord, Slack, Matrix,
e-mail, ntfy, webhooks) are in :mod:`shared.channels`, the one module that imports
``apprise``: importing this one loads neither.

The rate-limit rule (docs/observability.md): an event in :data:`URGENT_EVENTS`
(approval needed, a switch requested, done, refused or failed, a request expired,
the signer refusing to act) is never suppressed, neither by the per-event interval
nor by the hourly cap; only an identical repeat (same event, same text, which
names the request id) inside the interval is. Every other event (conditions such
as unhealthy RPC nodes or authentication failures) is limited per event name and
counted against the hourly cap.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, Protocol

from shared.clock import Clock
from shared.config import read_private_text
from shared.errors import ConfigError, NotifyError
from shared.secret import Secret

log = logging.getLogger(__name__)

# Alerts an operator must act on or must know happened, one per request: never rate-limited.
URGENT_EVENTS: Final = frozenset({
    "approval_needed", "request_refused", "request_expired", "switched", "switch_failed",
    "switch_unconfirmed", "signer_not_ready", "switch_requested", "switch_confirmed",
    "switch_refused", "key_changed",
})


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


class LabelledNotifier:
    """Rewrites each text through ``label`` (e.g. node names next to keys) before sending."""

    def __init__(self, inner: Notifier, label: Callable[[str], str]) -> None:
        self._inner = inner
        self._label = label

    def send(self, event: str, text: str) -> None:
        """Send the labelled text.

        Raises:
            NotifyError: from the wrapped notifier.
        """
        self._inner.send(event, self._label(text))

    def __repr__(self) -> str:
        return f"LabelledNotifier({self._inner!r})"


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
                log.warning("notifier closed; dropped notification [%s]: %s", event, text)
                return
            try:
                self._queue.put_nowait((event, text))
            except queue.Full:
                self.dropped += 1
                log.warning("notification queue full; dropped [%s] (%d dropped so far): %s",
                            event, self.dropped, text)

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
                # The full text stays in the log (request id, deadline): the operator can
                # still act on it. Channel errors are sanitised where they are raised (no
                # token, no apprise URL); the text is our own.
                log.warning("notification [%s] not delivered (%s): %s", event, e, text)
            except Exception:
                # A notifier bug must not kill the worker: later alerts still matter.
                log.exception("notifier raised unexpectedly for [%s]", event)

    def __repr__(self) -> str:
        return f"NonBlockingNotifier({self._inner!r}, queued={self._queue.qsize()})"


class FanOutNotifier:
    """Sends every notification to each channel; one failing channel never stops the others."""

    def __init__(self, channels: Sequence[Notifier]) -> None:
        if not channels:
            raise ConfigError("at least one notification channel is required", field="notify")
        self._channels = list(channels)

    def send(self, event: str, text: str) -> None:
        """Try every channel.

        Raises:
            NotifyError: at least one channel failed (after all were tried).
        """
        failures: list[str] = []
        for channel in self._channels:
            try:
                channel.send(event, text)
            except NotifyError as e:
                failures.append(str(e))
            except Exception as e:  # a channel's bug must not keep the others from sending
                log.exception("notification channel %r raised unexpectedly", channel)
                failures.append(type(e).__name__)
        if failures:
            raise NotifyError(f"{len(failures)} of {len(self._channels)} channel(s) failed: "
                              + "; ".join(failures))

    def close(self) -> None:
        """Close the channels that can be closed (queues drain first)."""
        for channel in self._channels:
            close = getattr(channel, "close", None)
            if callable(close):
                close()

    def __repr__(self) -> str:
        return f"FanOutNotifier({', '.join(map(repr, self._channels))})"


class RateLimitedNotifier:
    """Suppresses repeats of one event and caps the hourly total, so an outage is not 500 SMS.

    Events in :data:`URGENT_EVENTS` pass whatever the cap; only an identical repeat
    (same event and text) inside the interval is suppressed.
    """

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
        urgent = event in URGENT_EVENTS
        # SECURITY/ops: an urgent alert is keyed by its text, which names the request id:
        # a second request's approval_needed is never taken for a repeat of the first.
        key = f"{event}\x00{text}" if urgent else event
        with self._lock:
            while self._sent and now - self._sent[0] >= timedelta(hours=1):
                self._sent.popleft()
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                reason: str | None = f"sent less than {self._interval} ago"
            elif not urgent and len(self._sent) >= self._max_per_hour:
                reason = f"hourly cap of {self._max_per_hour} reached"
            else:
                reason = None
                self._last[key] = now
                self._sent.append(now)
                suppressed = self._suppressed.pop(key, 0)
            if reason is not None:
                self._suppressed[key] += 1
        if reason is not None:
            log.warning("notification [%s] suppressed (%s): %s", event, reason, text)
            return
        if suppressed:
            text = f"{text} (+{suppressed} similar suppressed)"
        self._inner.send(event, text)

    def __repr__(self) -> str:
        return f"RateLimitedNotifier({self._inner!r}, max_per_hour={self._max_per_hour})"


_MAX_URL_FILE_BYTES: Final = 65536


def parse_url_lines(text: str) -> list[str]:
    """The notification URLs in ``text``: one per line, blank lines and ``#`` comments skipped.

    Raises:
        ConfigError: a line is not ``scheme://...`` (named by number only: it may hold a token).
    """
    urls: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        scheme, sep, rest = stripped.partition("://")
        if not sep or not rest or not scheme.replace("+", "").isalnum():
            # SECURITY: T8 — never echo the line, it may be a webhook URL with its token.
            raise ConfigError(f"line {number} is not a notification URL (scheme://...)")
        urls.append(stripped)
    return urls


def read_url_file(path: Path, *, config_path: Path, field: str) -> list[Secret]:
    """The notification URLs in ``path``: a regular file, not a symlink, mode 0600 or 0400.

    Raises:
        ConfigError: missing, unsafe mode, too large, not UTF-8, a malformed line, or empty.
    """
    where = {"path": str(config_path), "field": field}
    text = read_private_text(path, config_path=config_path, field=field,
                             max_bytes=_MAX_URL_FILE_BYTES)
    try:
        urls = parse_url_lines(text)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}", **where) from e
    if not urls:
        raise ConfigError(f"{path} lists no notification URL", **where)
    return [Secret(u) for u in urls]
