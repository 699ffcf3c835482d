"""shared/channels.py and the notifier rules: apprise against a local webhook, fan-out,
the urgent-event rate-limit rule, and full text of failed deliveries in the log."""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.twilio_fixture import FAKE_ACCOUNT_SID, FAKE_AUTH_TOKEN

from drill.fake_twilio import FakeTwilio
from drill.fake_webhook import WebhookRecorder
from shared.channels import AppriseNotifier
from shared.errors import ConfigError, NotifyError
from shared.notify import (
    FanOutNotifier,
    NonBlockingNotifier,
    RateLimitedNotifier,
    parse_url_lines,
    read_url_file,
)
from shared.sms import TwilioNotifier

pytestmark = pytest.mark.timeout(30)

SECRET = "s3cr3t-webhook-token-42"


class _Clock:
    def __init__(self) -> None:
        self.t = datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, event: str, text: str) -> None:
        self.sent.append((event, text))


class _Failing:
    def send(self, event: str, text: str) -> None:
        raise NotifyError("channel down")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def webhook() -> object:
    """A local recording webhook endpoint."""
    with WebhookRecorder(hang_max_s=5) as server:
        yield server


@pytest.mark.parametrize("scheme", ["json", "form"])
def test_apprise_delivers_to_local_webhook(webhook: WebhookRecorder, scheme: str) -> None:
    """The real apprise client posts the event and text to a json:// or form:// endpoint."""
    AppriseNotifier([webhook.url(scheme)]).send("approval_needed", "request abc approve by 12:00Z")
    posts = webhook.posts
    assert len(posts) == 1
    assert posts[0].fields["message"] == "request abc approve by 12:00Z"
    assert "approval_needed" in posts[0].fields["title"]


def test_apprise_failure_names_channel_never_url(webhook: WebhookRecorder,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A refused delivery is a NotifyError naming the channel; neither it nor the log shows
    the URL's secret parts."""
    webhook.set_mode("error")
    url = f"json://user:{SECRET}@127.0.0.1:{webhook.port}/{SECRET}x?token={SECRET}y"
    notifier = AppriseNotifier([url])
    # apprise's own logger at DEBUG (redacted by the channel module); urllib3 stays at
    # WARNING as the services' logging setup keeps it (its DEBUG lines show request paths).
    with caplog.at_level(logging.DEBUG, logger="apprise"), caplog.at_level(logging.INFO), \
            pytest.raises(NotifyError) as info:
        notifier.send("switch_failed", "request r1 FAILED")
    assert "channel 1 (JSON)" in str(info.value)
    assert SECRET not in str(info.value) + repr(notifier) + caplog.text


def test_unreachable_channel_is_notify_error() -> None:
    """A channel nobody listens on fails with NotifyError, not an exception of apprise's."""
    with pytest.raises(NotifyError):
        AppriseNotifier([f"json://127.0.0.1:{_closed_port()}/?cto=1&rto=1"]).send("e", "t")


def test_unsupported_url_refused_without_echo(caplog: pytest.LogCaptureFixture) -> None:
    """A URL apprise does not know is a ConfigError naming its position, never the URL."""
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as info:
        AppriseNotifier(["json://127.0.0.1:1/", f"nosuch://{SECRET}"])
    assert "URL 2" in str(info.value)
    assert SECRET not in str(info.value) + caplog.text


def test_fan_out_one_failing_channel_does_not_block_others(
        webhook: WebhookRecorder, fake_twilio: FakeTwilio) -> None:
    """SMS and apprise both get the alert while a third channel fails; the failure is raised
    after every channel was tried."""
    sms = TwilioNotifier(FAKE_ACCOUNT_SID, FAKE_AUTH_TOKEN, "+15550000001", ["+15550000002"],
                         api_base_url=fake_twilio.base_url)
    fan = FanOutNotifier([_Failing(), sms, AppriseNotifier([webhook.url()])])
    with pytest.raises(NotifyError, match="1 of 3"):
        fan.send("switched", "alice: switched to backup1")
    assert [m.body for m in fake_twilio.messages] == ["[switched] alice: switched to backup1"]
    assert webhook.posts[0].fields["message"] == "alice: switched to backup1"
    sms.close()


def test_hung_channel_does_not_delay_the_other(webhook: WebhookRecorder,
                                               fake_twilio: FakeTwilio) -> None:
    """With each channel behind its own queue, a hung webhook never delays the SMS."""
    webhook.set_mode("hang")
    sms = TwilioNotifier(FAKE_ACCOUNT_SID, FAKE_AUTH_TOKEN, "+15550000001", ["+15550000002"],
                         api_base_url=fake_twilio.base_url)
    queued = [NonBlockingNotifier(AppriseNotifier([webhook.url()])), NonBlockingNotifier(sms)]
    fan = FanOutNotifier(queued)
    started = time.perf_counter()
    fan.send("switched", "text")
    assert time.perf_counter() - started < 0.5
    assert fake_twilio.wait_for_messages(1, 5)
    webhook.release()
    assert webhook.wait_for_posts(1, 5)
    for q in queued:
        assert q.close(5)
    sms.close()


def test_second_request_alert_not_suppressed() -> None:
    """Two approval_needed alerts of different requests inside the interval both go out,
    even past the hourly cap; an identical repeat is suppressed."""
    clock, inner = _Clock(), _Recorder()
    limited = RateLimitedNotifier(inner, per_event_min_interval=timedelta(minutes=1),
                                  max_per_hour=1, clock=clock)
    limited.send("auth_failures", "many")  # uses up the hourly cap
    limited.send("approval_needed", "request aaa approve by 12:00Z")
    clock.advance(5)
    limited.send("approval_needed", "request bbb approve by 12:01Z")
    limited.send("approval_needed", "request bbb approve by 12:01Z")
    limited.send("switch_failed", "request bbb FAILED")
    limited.send("rpc_unhealthy", "nodes down")  # not urgent: capped
    assert [t for _, t in inner.sent] == ["many", "request aaa approve by 12:00Z",
                                          "request bbb approve by 12:01Z", "request bbb FAILED"]


def test_failed_delivery_keeps_full_text(fake_twilio: FakeTwilio,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """A failed SMS leaves the whole alert (request id, deadline) in the log, but no token."""
    fake_twilio.set_mode("error")
    sms = TwilioNotifier(FAKE_ACCOUNT_SID, FAKE_AUTH_TOKEN, "+15550000001", ["+15550000002"],
                         api_base_url=fake_twilio.base_url)
    queued = NonBlockingNotifier(sms)
    text = "alice: request 0123abcd needs an operator, approve before 12:34:56Z"
    with caplog.at_level(logging.WARNING):
        queued.send("approval_needed", text)
        assert queued.close(10)
    assert "not delivered" in caplog.text
    assert text in caplog.text
    assert FAKE_AUTH_TOKEN not in caplog.text
    sms.close()


def test_url_lines_parse_comments_and_blank() -> None:
    """One URL a line; comments and blank lines are skipped."""
    text = "# alerts\n\njson://127.0.0.1:1/a\n  tgram://123:abc/456  # not a comment\n"
    assert parse_url_lines(text) == ["json://127.0.0.1:1/a", "tgram://123:abc/456  # not a comment"]


def test_url_line_error_never_echoes_the_line() -> None:
    """A malformed line is named by number only: it may hold a token."""
    with pytest.raises(ConfigError, match="line 2") as info:
        parse_url_lines(f"json://h/\n{SECRET}\n")
    assert SECRET not in str(info.value)


def test_url_file_needs_mode_0600(tmp_path: Path) -> None:
    """A URL file readable by others is refused; mode 0600 is read."""
    path = tmp_path / "apprise.urls"
    path.write_text("json://127.0.0.1:1/\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="0600"):
        read_url_file(path, config_path=tmp_path / "x.toml", field="alerts.apprise_urls_file")
    path.chmod(0o600)
    urls = read_url_file(path, config_path=tmp_path / "x.toml", field="a")
    assert [u.reveal() for u in urls] == ["json://127.0.0.1:1/"]
    assert "127.0.0.1" not in repr(urls)


def test_url_file_symlink_refused(tmp_path: Path) -> None:
    """A symlinked URL file is refused (O_NOFOLLOW)."""
    real = tmp_path / "real"
    real.write_text("json://127.0.0.1:1/\n")
    real.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigError):
        read_url_file(link, config_path=tmp_path / "x.toml", field="a")


def test_fan_out_survives_a_buggy_channel(webhook: WebhookRecorder) -> None:
    """A channel raising a non-notify exception is reported; the next channel still sends."""
    class Buggy:
        def send(self, event: str, text: str) -> None:
            raise RuntimeError("bug")


    with pytest.raises(NotifyError):
        FanOutNotifier([Buggy(), AppriseNotifier([webhook.url()])]).send("e", "t")

    assert len(webhook.posts) == 1


@pytest.mark.parametrize(("url", "secret", "kept"), [
    pytest.param(f"tgram://123456:{SECRET}/-100123", f"123456:{SECRET}", None, id="telegram"),
    pytest.param(f"json://hooks.example.com/{SECRET}", SECRET, "hooks.example.com",
                 id="webhook-path"),
    pytest.param(f"mailtos://user:{SECRET}@mail.example.com", SECRET, "mail.example.com",
                 id="mail-password"),
])
def test_secret_parts_cover_tokens_not_hosts(url: str, secret: str, kept: str | None) -> None:
    """The redaction set holds a URL's token wherever apprise puts it, but not a webhook's
    host name, which stays readable in apprise's warnings."""
    from shared.channels import secret_parts  # noqa: PLC0415

    parts = secret_parts(url)
    assert secret in parts
    if kept is not None:
        assert kept not in parts
