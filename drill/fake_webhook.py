"""A local webhook endpoint that records what is posted to it: apprise's ``json://`` and
``form://`` channels point at it in tests and drills, so no notification leaves the machine.

``set_mode("error")`` answers 500 (a failing channel), ``set_mode("hang")`` holds each
request until :meth:`release` or ``hang_max_s`` (a hung channel).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from drill.recorder import Recorder

_MAX_BODY = 64 << 10


@dataclass(frozen=True)
class Posted:
    """One request the recorder accepted."""

    path: str
    content_type: str
    fields: dict[str, Any]


class WebhookRecorder(Recorder):
    """A threaded HTTP server on 127.0.0.1 that records JSON or form posts."""

    def __init__(self, *, hang_max_s: float = 30.0) -> None:
        super().__init__(_handler_for(self), "fake-webhook", hang_max_s=hang_max_s)
        self._posts: list[Posted] = []

    def url(self, scheme: str = "json", path: str = "/hook") -> str:
        """An apprise URL for this recorder, e.g. ``json://127.0.0.1:PORT/hook``."""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @property
    def posts(self) -> list[Posted]:
        """A copy of what was accepted so far."""
        with self._cond:
            return list(self._posts)

    def wait_for_posts(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` posts were accepted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._posts) >= count, timeout)

    def _handle(self, path: str, content_type: str, body: bytes) -> int:
        if self._arrived() == "error":
            return 500
        if content_type.startswith("application/json"):
            try:
                fields = json.loads(body.decode())
            except (UnicodeDecodeError, ValueError):
                return 400
        else:
            fields = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        with self._cond:
            self._posts.append(Posted(path, content_type, fields if isinstance(fields, dict)
                                      else {"value": fields}))
            self._cond.notify_all()
        return 200


def _handler_for(recorder: WebhookRecorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status = 413 if length > _MAX_BODY else recorder._handle(
                self.path, self.headers.get("Content-Type") or "", self.rfile.read(length))
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            """Keep the test output quiet."""

    return Handler
