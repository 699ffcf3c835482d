"""Notifiers: SMS via Twilio, a log fallback, and wrappers that keep alerts off the failover path.

Compose as ``RateLimitedNotifier(NonBlockingNotifier(TwilioNotifier(...)), ...)``:
the rate limit runs in the caller's thread (cheap, keeps a flood out of the
queue) and the SMS goes out from a background thread.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final, Protocol
from urllib.parse import urlsplit

import requests
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from shared.clock import Clock
from shared.errors import ConfigError, NotifyError

log = logging.getLogger(__name__)

TWILIO_API_BASE: Final = "https://api.twilio.com"
MAX_SMS_CHARS: Final = 1600  # Twilio's limit on a message body
# twilio's Client reads os.environ (TWILIO_EDGE, TWILIO_REGION, ...) when handed
# an empty mapping; a non-empty one without those names keeps it off the
# environment, which only config modules read (STYLE.md section 4).
_NO_ENVIRONMENT: Final = {"WITNESS_FAILOVER": "environment is read by config modules only"}


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


class _RedirectingHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio is untyped
    """Twilio's own HTTP client with ``https://api.twilio.com`` swapped for another base URL."""

    def __init__(self, base_url: str, timeout_s: float, *, loopback: bool) -> None:
        super().__init__(timeout=timeout_s)
        self._base_url = base_url.rstrip("/")
        if loopback and self.session is not None:
            # SECURITY: a loopback endpoint is never reached through an env proxy.
            self.session.trust_env = False

    def request(  # noqa: PLR0917 - the signature is twilio's HttpClient.request
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if url != TWILIO_API_BASE and not url.startswith(TWILIO_API_BASE + "/"):
            # SECURITY: with a base URL configured nothing may leave for another Twilio host.
            raise TwilioException("request outside the redirected Twilio API refused")
        return super().request(
            method, self._base_url + url[len(TWILIO_API_BASE):], params=params, data=data,
            headers=headers, auth=auth, timeout=timeout, allow_redirects=allow_redirects,
        )


class TwilioNotifier:
    """Sends each notification as an SMS to every configured number through Twilio."""

    def __init__(
        self,
        account_sid: str,
        auth_token: RevealsSecret | str,
        from_number: str,
        to_numbers: Sequence[str],
        *,
        api_base_url: str | None = None,
        timeout_s: float = 5,
    ) -> None:
        """Build the client; ``api_base_url`` replaces ``https://api.twilio.com`` (tests, relays).

        Raises:
            ConfigError: a missing field, a bad timeout, or an unsafe ``api_base_url``.
        """
        if isinstance(to_numbers, str):
            raise ConfigError("must be a list of numbers, not one string", field="twilio.to")
        if not account_sid or not from_number or not to_numbers or not all(to_numbers):
            raise ConfigError("account_sid, from_number and to_numbers are required",
                              field="twilio")
        if not timeout_s > 0:
            raise ConfigError("must be positive", field="twilio.timeout_s")
        token = auth_token if isinstance(auth_token, str) else auth_token.reveal()
        if not token:
            raise ConfigError("auth token is empty", field="twilio.auth_token")
        if api_base_url is None:
            self._http: TwilioHttpClient = TwilioHttpClient(timeout=timeout_s)
        else:
            self._http = _RedirectingHttpClient(
                api_base_url, timeout_s, loopback=_check_base_url(api_base_url)
            )
        self._from = from_number
        self._to = list(to_numbers)
        self._client = Client(
            username=account_sid, password=token, account_sid=account_sid,
            http_client=self._http, environment=_NO_ENVIRONMENT,
        )

    def send(self, event: str, text: str) -> None:
        """Send one SMS per recipient; try them all even if some fail.

        Raises:
            NotifyError: at least one recipient was not reached (no token, no URL in the text).
        """
        body = _sms_body(event, text)
        failures: list[str] = []
        last: Exception | None = None
        for to in self._to:
            try:
                message = self._client.messages.create(to=to, from_=self._from, body=body)
            except (TwilioException, requests.RequestException, ValueError) as e:
                # SECURITY: report the kind of failure only. Twilio's exceptions carry
                # request URIs and server text, requests' carry the prepared request.
                failures.append(f"{_mask(to)}: {_describe_failure(e)}")
                last = e
                continue
            log.info("sms sent: event=%s to=%s sid=%s", event, _mask(to), message.sid)
        if failures:
            raise NotifyError(
                f"SMS for {event} failed for {len(failures)} of {len(self._to)} "
                f"recipient(s): {'; '.join(failures)}"
            ) from last

    def close(self) -> None:
        """Release the HTTP connection pool."""
        if self._http.session is not None:
            self._http.session.close()

    def __repr__(self) -> str:
        return f"TwilioNotifier(from={self._from!r}, recipients={len(self._to)})"


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


def _check_base_url(url: str) -> bool:
    """Return whether ``url`` is a loopback URL.

    Raises:
        ConfigError: not https (or http to loopback), or it carries credentials/query.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    # SECURITY: the auth token travels in a Basic auth header; never in clear text
    # to another host, and never in the URL where logs and exceptions would show it.
    if parts.scheme not in {"https", "http"} or (parts.scheme == "http" and not loopback):
        raise ConfigError("must be https:// (http:// only to loopback)", field="api_base_url")
    if not host or parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError("must be scheme://host[:port][/path] only", field="api_base_url")
    return loopback


def _sms_body(event: str, text: str) -> str:
    body = f"[{event}] {text}"
    return body if len(body) <= MAX_SMS_CHARS else body[: MAX_SMS_CHARS - 1] + "…"


def _mask(number: str) -> str:
    return "…" + number[-4:] if len(number) > 4 else "…"


def _describe_failure(e: Exception) -> str:
    status = getattr(e, "status", None)
    if isinstance(status, int):
        return f"HTTP {status} (Twilio code {getattr(e, 'code', None)})"
    return type(e).__name__
