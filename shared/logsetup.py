"""The services' logging setup: plain text or JSON lines, third-party loggers quieted.

The only module that imports ``pythonjsonlogger``. Each CLI calls :func:`configure_logging`
once, in its composition root. JSON lines carry ``time``, ``level``, ``logger`` and
``message``, plus any ``extra={...}`` fields a log call adds (``request_id``...).
"""

from __future__ import annotations

import logging
import sys
from typing import Final, Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers of libraries that log too much at INFO or DEBUG for an operator: twilio's
# HTTP client logs every request with the Account SID, urllib3 every connection and
# request path (a webhook token is in the path), apprise every URL it loads.
QUIET_LOGGERS: Final = ("twilio", "twilio.http_client", "urllib3", "apprise", "requests",
                        "beemapi", "beem", "gevent")


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter for ``fmt``: ``text`` (one human line) or ``json`` (one JSON object)."""
    if fmt == "json":
        return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                             rename_fields={"asctime": "time", "levelname": "level",
                                            "name": "logger"},
                             datefmt="%Y-%m-%dT%H:%M:%S%z", json_ensure_ascii=False)
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(level: int, fmt: LogFormat = "text", stream: TextIO | None = None) -> None:
    """Log to ``stream`` (stderr) at ``level`` in ``fmt``; third-party loggers at WARNING.

    Replaces the root logger's handlers, so a second call (tests) does not duplicate lines.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        # SECURITY: T8 — these libraries' DEBUG/INFO lines carry SIDs and request paths.
        logging.getLogger(name).setLevel(logging.WARNING)
