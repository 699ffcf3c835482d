"""A local stand-in for Twilio's Messages API: tests and benchmarks point the real client at it.

Implements ``POST /2010-04-01/Accounts/<sid>/Messages.json`` with HTTP Basic
auth, form-encoded ``To``/``From``/``Body``, and a 201 answer shaped like
Twilio's Message resource. ``set_mode("error")`` answers 500, ``set_mode("hang")``
holds every request until :meth:`release` (or ``hang_max_s``) to prove that
callers do not wait for SMS delivery.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from drill.recorder import Recorder

_MESSAGES_PATH = re.compile(r"/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json")
_MAX_BODY = 64 << 10


@dataclass(frozen=True)
class RecordedMessage:
    """One message the fake accepted."""

    sid: str
    account_sid: str
    to: str
    from_: str
    body: str


class FakeTwilio(Recorder):
    """A threaded HTTP server on 127.0.0.1 that records the SMS it is asked to send."""

    def __init__(self, account_sid: str, auth_token: str, *, hang_max_s: float = 30.0) -> None:
        super().__init__(_handler_for(self), "fake-twilio", hang_max_s=hang_max_s)
        self.account_sid = account_sid
        self._auth_token = auth_token
        self._messages: list[RecordedMessage] = []
        self.requests_seen = 0

    @property
    def base_url(self) -> str:
        """The URL to hand to ``TwilioNotifier(api_base_url=...)``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[RecordedMessage]:
        """A copy of the messages accepted so far."""
        with self._cond:
            return list(self._messages)

    def wait_for_messages(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` messages were accepted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._messages) >= count, timeout)

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both comparisons always run: the fake should not teach timing leaks by example.
        user_ok = hmac.compare_digest(user.encode(), self.account_sid.encode())
        return hmac.compare_digest(password.encode(), self._auth_token.encode()) and user_ok

    def _handle_post(self, path: str, auth: str | None, form: bytes) -> tuple[int, dict[str, Any]]:
        with self._cond:
            self.requests_seen += 1
        if self._arrived() == "error":
            return 500, _error(500, 20500, "Internal Server Error")
        if not self._authorised(auth):
            return 401, _error(401, 20003, "Authenticate")
        match = _MESSAGES_PATH.fullmatch(path)
        if not match or match["sid"] != self.account_sid:
            return 404, _error(404, 20404, f"The requested resource {path} was not found")
        fields = {k: v[0] for k, v in parse_qs(form.decode(), keep_blank_values=True).items()}
        for name, code in (("To", 21604), ("From", 21603), ("Body", 21602)):
            if not fields.get(name):
                return 400, _error(400, code, f"A '{name}' parameter is required.")
        message = RecordedMessage("SM" + uuid.uuid4().hex, self.account_sid, fields["To"],
                                  fields["From"], fields["Body"])
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()
        return 201, _message_resource(message)


def _handler_for(fake: FakeTwilio) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                self._reply(413, _error(413, 20413, "Request entity too large"))
                return
            form = self.rfile.read(length)
            status, doc = fake._handle_post(self.path, self.headers.get("Authorization"), form)
            self._reply(status, doc)

        def do_GET(self) -> None:
            self._reply(405, _error(405, 20004, "Method not allowed"))

        def _reply(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="Twilio API"')
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (timeout); nothing left to tell it

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            """Keep the test output quiet."""

    return Handler


def _error(status: int, code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}


def _message_resource(m: RecordedMessage) -> dict[str, Any]:
    now = format_datetime(datetime.now(UTC))
    uri = f"/2010-04-01/Accounts/{m.account_sid}/Messages/{m.sid}"
    return {
        "account_sid": m.account_sid, "api_version": "2010-04-01", "body": m.body,
        "date_created": now, "date_sent": None, "date_updated": now,
        "direction": "outbound-api", "error_code": None, "error_message": None,
        "from": m.from_, "messaging_service_sid": None, "num_media": "0",
        "num_segments": str(max(1, -(-len(m.body) // 153))), "price": None,
        "price_unit": "USD", "sid": m.sid, "status": "queued",
        "subresource_uris": {"media": f"{uri}/Media.json"}, "to": m.to, "uri": f"{uri}.json",
    }
