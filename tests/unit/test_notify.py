"""shared/notify.py and shared/sms.py: the real twilio Client against a local fake endpoint."""

from __future__ import annotations

import base64
import logging
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support.twilio_fixture import FAKE_ACCOUNT_SID, FAKE_AUTH_TOKEN

from drill.fake_twilio import FakeTwilio
from shared.errors import ConfigError, NotifyError
from shared.notify import LogNotifier, NonBlockingNotifier, RateLimitedNotifier
from shared.sms import MAX_SMS_CHARS, TwilioNotifier

pytestmark = pytest.mark.timeout(30)

FROM = "+15550000001"
TO = ["+15550000002", "+15550000003"]


class _Token:
    """A redacting secret wrapper, as the config layer would hand in."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<Secret redacted>"


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.delivered = threading.Event()

    def send(self, event: str, text: str) -> None:
        self.sent.append((event, text))
        self.delivered.set()


class _Blocking:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def send(self, event: str, text: str) -> None:
        self.started.set()
        self.release.wait(10)


class _FakeClock:
    def __init__(self) -> None:
        self.t = datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@pytest.fixture
def make_twilio() -> Iterator[Callable[..., TwilioNotifier]]:
    """Build TwilioNotifiers and close their connection pools afterwards."""
    made: list[TwilioNotifier] = []

    def make(base_url: str, token: object = FAKE_AUTH_TOKEN, **kwargs: object) -> TwilioNotifier:
        kwargs.setdefault("timeout_s", 5)
        notifier = TwilioNotifier(FAKE_ACCOUNT_SID, token, FROM, TO,  # type: ignore[arg-type]
                                  api_base_url=base_url, **kwargs)  # type: ignore[arg-type]
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_client_delivers_to_fake_endpoint(
    fake_twilio: FakeTwilio, make_twilio: Callable[..., TwilioNotifier]
) -> None:
    """The real twilio Client sends one SMS per recipient with the right To, From and Body."""
    make_twilio(fake_twilio.base_url, _Token(FAKE_AUTH_TOKEN)).send(
        "failover.confirmed", "alice now signs with backup1"
    )
    messages = fake_twilio.messages
    assert [m.to for m in messages] == TO
    assert {m.from_ for m in messages} == {FROM}
    assert {m.body for m in messages} == {"[failover.confirmed] alice now signs with backup1"}
    assert all(m.sid.startswith("SM") for m in messages)


def test_bad_credentials_never_leak_the_token(
    fake_twilio: FakeTwilio, make_twilio: Callable[..., TwilioNotifier],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 401 is a NotifyError; the token is in no message, traceback or log record."""
    token = "wrong-token-7f3a9c1d"
    basic = base64.b64encode(f"{FAKE_ACCOUNT_SID}:{token}".encode()).decode()
    with caplog.at_level(logging.DEBUG), pytest.raises(NotifyError, match="HTTP 401") as info:
        make_twilio(fake_twilio.base_url, token).send("failover.failed", "text")
    rendered = "".join(traceback.format_exception(info.value))
    for leak in (token, basic):
        assert leak not in str(info.value)
        assert leak not in rendered
        assert leak not in caplog.text
    assert fake_twilio.messages == []


def test_repr_hides_token(fake_twilio: FakeTwilio,
                          make_twilio: Callable[..., TwilioNotifier]) -> None:
    """The notifier's repr names no token."""
    assert FAKE_AUTH_TOKEN not in repr(make_twilio(fake_twilio.base_url))


def test_server_error_is_notify_error(
    fake_twilio: FakeTwilio, make_twilio: Callable[..., TwilioNotifier]
) -> None:
    """A 500 from Twilio is a NotifyError that says every recipient failed."""
    fake_twilio.set_mode("error")
    with pytest.raises(NotifyError, match=r"2 of 2 recipient\(s\).*HTTP 500"):
        make_twilio(fake_twilio.base_url).send("failover.failed", "text")


def test_unreachable_endpoint_is_notify_error(
    make_twilio: Callable[..., TwilioNotifier],
) -> None:
    """A connection failure is translated to NotifyError naming only the failure kind."""
    base = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(NotifyError, match="ConnectionError") as info:
        make_twilio(base).send("failover.failed", "text")
    assert base not in str(info.value)


def test_long_text_is_truncated_to_one_sms_body(
    fake_twilio: FakeTwilio, make_twilio: Callable[..., TwilioNotifier]
) -> None:
    """A body longer than Twilio's limit is cut to MAX_SMS_CHARS."""
    make_twilio(fake_twilio.base_url).send("e", "x" * 5000)
    assert {len(m.body) for m in fake_twilio.messages} == {MAX_SMS_CHARS}


@pytest.mark.parametrize("url", [
    pytest.param("http://api.example.com", id="cleartext-to-remote-host"),
    pytest.param("https://user:pw@api.example.com", id="credentials-in-url"),
    pytest.param("https://api.example.com/?x=1", id="query"),
    pytest.param("ftp://127.0.0.1", id="other-scheme"),
])
def test_unsafe_base_url_refused(url: str) -> None:
    """A base URL that could expose the token is refused at start-up."""
    with pytest.raises(ConfigError, match="api_base_url"):
        TwilioNotifier(FAKE_ACCOUNT_SID, FAKE_AUTH_TOKEN, FROM, TO, api_base_url=url)


@pytest.mark.parametrize("to", [pytest.param([], id="none"), pytest.param([""], id="empty"),
                                pytest.param("+15550000002", id="bare-string")])
def test_bad_recipients_refused(to: list[str]) -> None:
    """A notifier without a proper list of recipients is a ConfigError."""
    with pytest.raises(ConfigError):
        TwilioNotifier(FAKE_ACCOUNT_SID, FAKE_AUTH_TOKEN, FROM, to)


def test_hung_endpoint_does_not_block_send(
    fake_twilio: FakeTwilio, make_twilio: Callable[..., TwilioNotifier]
) -> None:
    """With the endpoint hanging, NonBlockingNotifier.send returns in under 50 ms."""
    fake_twilio.set_mode("hang")
    notifier = NonBlockingNotifier(make_twilio(fake_twilio.base_url))
    for i in range(5):
        started = time.perf_counter()
        notifier.send("failover.broadcast", f"attempt {i}")
        assert time.perf_counter() - started < 0.05
    fake_twilio.release()
    assert fake_twilio.wait_for_messages(10, timeout=10)
    assert notifier.close(timeout=10)


def test_failing_endpoint_does_not_raise_into_caller(
    fake_twilio: FakeTwilio, make_twilio: Callable[..., TwilioNotifier],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Twilio failure is logged by the worker, never raised into the caller."""
    fake_twilio.set_mode("error")
    notifier = NonBlockingNotifier(make_twilio(fake_twilio.base_url))
    with caplog.at_level(logging.WARNING):
        notifier.send("failover.failed", "text")
        assert notifier.close(timeout=10)
    assert "not delivered" in caplog.text


def test_worker_survives_a_buggy_notifier(caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception in the inner notifier is logged and later messages still go."""
    recorder = _Recorder()
    calls = iter([RuntimeError("bug"), None])

    class _Flaky:
        def send(self, event: str, text: str) -> None:
            error = next(calls)
            if error:
                raise error
            recorder.send(event, text)

    notifier = NonBlockingNotifier(_Flaky())
    with caplog.at_level(logging.ERROR):
        notifier.send("a", "first")
        notifier.send("b", "second")
        assert notifier.close(timeout=5)
    assert recorder.sent == [("b", "second")]
    assert "raised unexpectedly" in caplog.text


def test_full_queue_drops_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    """When the queue is full, send drops the message with a log line instead of waiting."""
    inner = _Blocking()
    notifier = NonBlockingNotifier(inner, max_queue=2)
    notifier.send("e", "taken by the worker")
    assert inner.started.wait(5)
    with caplog.at_level(logging.WARNING):
        for i in range(5):
            started = time.perf_counter()
            notifier.send("e", f"queued or dropped {i}")
            assert time.perf_counter() - started < 0.05
    assert notifier.dropped == 3
    assert "dropped" in caplog.text
    inner.release.set()
    assert notifier.close(timeout=5)


def test_close_is_bounded_with_a_hung_notifier() -> None:
    """close() gives up after its timeout when the inner notifier hangs."""
    inner = _Blocking()
    notifier = NonBlockingNotifier(inner, max_queue=1)
    notifier.send("e", "hangs")
    assert inner.started.wait(5)
    notifier.send("e", "fills the queue")
    started = time.perf_counter()
    assert notifier.close(timeout=0.2) is False
    assert time.perf_counter() - started < 1.0
    inner.release.set()


def test_rate_limit_per_event_interval(caplog: pytest.LogCaptureFixture) -> None:
    """Repeats of one event inside the interval are suppressed and counted in the next message."""
    clock, recorder = _FakeClock(), _Recorder()
    notifier = RateLimitedNotifier(recorder, per_event_min_interval=timedelta(minutes=10),
                                   max_per_hour=100, clock=clock)
    notifier.send("node.down", "primary down")
    clock.advance(60)
    with caplog.at_level(logging.WARNING):
        notifier.send("node.down", "primary still down")
        notifier.send("node.down", "primary still down")
    notifier.send("failover.confirmed", "switched")
    clock.advance(9 * 60)
    notifier.send("node.down", "primary down again")
    assert recorder.sent == [
        ("node.down", "primary down"),
        ("failover.confirmed", "switched"),
        ("node.down", "primary down again (+2 similar suppressed)"),
    ]
    assert "suppressed" in caplog.text


def test_rate_limit_hourly_cap() -> None:
    """No more than max_per_hour messages go out in any rolling hour."""
    clock, recorder = _FakeClock(), _Recorder()
    notifier = RateLimitedNotifier(recorder, per_event_min_interval=timedelta(0),
                                   max_per_hour=3, clock=clock)
    for i in range(10):
        notifier.send(f"event{i}", "text")
        clock.advance(60)
    assert len(recorder.sent) == 3
    clock.advance(3600 - 10 * 60 + 1)
    notifier.send("event0", "after the hour")
    assert recorder.sent[-1] == ("event0", "after the hour")


def test_rate_limit_rejects_bad_settings() -> None:
    """A cap below one message per hour is a ConfigError."""
    with pytest.raises(ConfigError):
        RateLimitedNotifier(_Recorder(), per_event_min_interval=timedelta(0), max_per_hour=0,
                            clock=_FakeClock())


def test_log_notifier_logs(caplog: pytest.LogCaptureFixture) -> None:
    """LogNotifier writes the event and text to the log at WARNING."""
    with caplog.at_level(logging.WARNING):
        LogNotifier().send("failover.confirmed", "switched to backup1")
    assert "[failover.confirmed] switched to backup1" in caplog.text


def test_notifier_port_does_not_load_twilio() -> None:
    """Importing the Notifier port and its wrappers leaves twilio unloaded; shared.sms loads it."""
    code = ("import sys, shared.notify; assert 'twilio' not in sys.modules, 'notify'; "
            "import shared.sms; assert 'twilio' in sys.modules, 'sms'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
