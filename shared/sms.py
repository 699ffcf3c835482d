"""SMS alerts through Twilio: the only module that imports ``twilio``.

Its types (the client, its HTTP client, its exceptions) stay here: callers get
a :class:`shared.notify.Notifier` and :class:`shared.errors.NotifyError`.
Import this module only where SMS is configured; the ``Notifier`` port and its
wrappers are in :mod:`shared.notify`, which does not load twilio.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

import requests
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from shared.errors import ConfigError, NotifyError
from shared.notify import RevealsSecret

log = logging.getLogger(__name__)

TWILIO_API_BASE: Final = "https://api.twilio.com"
MAX_SMS_CHARS: Final = 1600  # Twilio's limit on a message body
# twilio's Client reads os.environ (TWILIO_EDGE, TWILIO_REGION, ...) when handed
# an empty mapping; a non-empty one without those names keeps it off the
# environment, which only config modules read (STYLE.md section 4).
_NO_ENVIRONMENT: Final = {"WITNESS_FAILOVER": "environment is read by config modules only"}


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
