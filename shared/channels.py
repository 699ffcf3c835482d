"""Notification channels through apprise (Telegram, Discord, Slack, Matrix, e-mail, ntfy,
webhooks): the only module that imports ``apprise``.

Each channel is one secret-holding URL (``tgram://<bot token>/<chat>``,
``json://host/path`` ...). A URL is never logged, printed or put in an error: a
channel is named by its position and service name (``channel 2 (Telegram)``),
and a filter on apprise's own logger redacts the URLs and their secret parts
from what apprise logs. Apprise's types stay here; callers get a
:class:`shared.notify.Notifier` and :class:`shared.errors.NotifyError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise

from shared.errors import ConfigError, NotifyError
from shared.notify import RevealsSecret

log = logging.getLogger(__name__)

_REDACTED: Final = "<redacted>"
_MIN_SECRET_PART: Final = 6  # shorter URL parts (ports, "path") are not worth redacting
MAX_BODY_CHARS: Final = 4000
# Schemes whose host part is a real host name, not a token (generic webhooks, e-mail).
_HOST_IS_A_HOST: Final = frozenset({"json", "jsons", "form", "forms", "xml", "xmls",
                                    "mailto", "mailtos", "ntfy", "ntfys"})


class _Redactor(logging.Filter):
    """Replaces every known secret in apprise's log records by ``<redacted>``."""

    def __init__(self) -> None:
        super().__init__("")
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for secret in sorted(self.secrets, key=len, reverse=True):
            redacted = redacted.replace(secret, _REDACTED)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTOR: Final = _Redactor()
logging.getLogger("apprise").addFilter(_REDACTOR)


def secret_parts(url: str) -> set[str]:
    """The parts of ``url`` that may be secret: the URL, its user info, path segments and
    query values (each also URL-decoded), ignoring short ones."""
    parts = {url}
    try:
        split = urlsplit(url)
        candidates: list[str] = [split.netloc.rpartition("@")[0], split.username or "",
                                 split.password or "", *split.path.split("/"),
                                 *(v for _, v in parse_qsl(split.query))]
    except ValueError:
        return parts
    if not split.netloc.rpartition("@")[0] and split.scheme not in _HOST_IS_A_HOST:
        # tgram://<token>/..., discord://<id>/<token>: the "host" is the secret.
        candidates += [split.netloc, split.hostname or ""]
    for c in candidates:
        for value in (c, unquote(c)):
            if len(value) >= _MIN_SECRET_PART:
                parts.add(value)
    return parts


class AppriseNotifier:
    """Sends each notification to every configured apprise URL; tries them all."""

    def __init__(self, urls: Sequence[RevealsSecret | str], *, title: str = "witness-failover"
                 ) -> None:
        """Check every URL against apprise's plugins.

        Raises:
            ConfigError: no URL, or one that apprise does not support (named by position only).
        """
        if not urls:
            raise ConfigError("no notification URL", field="apprise_urls")
        self._title = title
        self._channels: list[tuple[str, apprise.Apprise]] = []
        for i, secret in enumerate(urls, 1):
            url = secret if isinstance(secret, str) else secret.reveal()
            _REDACTOR.secrets.update(secret_parts(url))
            channel = apprise.Apprise()
            if not channel.add(url):
                raise ConfigError(f"URL {i} is not a notification URL apprise supports "
                                  "(see https://github.com/caronc/apprise/wiki)",
                                  field="apprise_urls")
            service = next(iter(channel)).service_name or "apprise"
            self._channels.append((f"channel {i} ({service})", channel))

    @property
    def names(self) -> list[str]:
        """The channels as they are named in logs and errors (no URL)."""
        return [name for name, _ in self._channels]

    def send(self, event: str, text: str) -> None:
        """Send to every channel; try them all even if some fail.

        Raises:
            NotifyError: at least one channel did not accept it (named, never its URL).
        """
        body = text if len(text) <= MAX_BODY_CHARS else text[: MAX_BODY_CHARS - 1] + "…"
        failed = [name for name, channel in self._channels
                  if not _notify(channel, f"{self._title}: {event}", body)]
        for name, _ in self._channels:
            if name not in failed:
                log.info("notification [%s] sent to %s", event, name)
        if failed:
            raise NotifyError(f"{event} not accepted by {len(failed)} of "
                              f"{len(self._channels)} apprise channel(s): {', '.join(failed)}")

    def close(self) -> None:
        """Nothing to release: apprise opens a connection per notification."""

    def __repr__(self) -> str:
        return f"AppriseNotifier({', '.join(self.names)})"


def _notify(channel: apprise.Apprise, title: str, body: str) -> bool:
    try:
        return bool(channel.notify(body=body, title=title))
    except Exception as e:  # noqa: BLE001 - a plugin bug is a failed delivery, not a crash
        # SECURITY: T8 — the exception text may hold the URL; its type only.
        log.warning("apprise channel raised %s", type(e).__name__)
        return False
