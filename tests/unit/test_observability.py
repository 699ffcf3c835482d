"""Logs and alert settings: JSON lines, quiet third-party loggers, key labels, state lines on
change, apprise URLs in both configs, the signer's metrics listener settings, and the
client's request id in the signer's audit."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.twilio_fixture import FAKE_ACCOUNT_SID

from drill.fake_webhook import WebhookRecorder
from drill.service_files import signer_toml
from shared.chains import NULL_KEY
from shared.errors import ConfigError
from shared.logsetup import QUIET_LOGGERS, configure_logging
from shared.logtext import ChangeLog, KeyLabels
from shared.notify import LabelledNotifier
from signer.config import SignerConfig
from signer.lifecycle import Lifecycle
from signer.policy import FailoverAsk
from signer.store import Store, client_request_id
from watcher import report
from watcher.app import build_notifier
from watcher.config import WatcherConfig

PRIMARY = "STM" + "P" * 50
BACKUP = "STM" + "B" * 50
WATCHER_TOML = f"""
[watcher]
account = "alice"
rpc_nodes = ["http://127.0.0.1:1"]
miss_threshold = 2

[[nodes]]
name = "primary"
public_key = "{PRIMARY}"

[signer]
url = "http://127.0.0.1:2"
key = "keys/watcher.key"
signer_public_key = "keys/signer.pub"
"""
SECRET = "tok-3f9a7c-webhook-secret"


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Restore the root logger and the quieted loggers' levels after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {n: logging.getLogger(n).level for n in QUIET_LOGGERS}
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)


def test_json_lines_carry_fields_and_extras(root_logging: None) -> None:
    """--log-format json writes one JSON object a line with time, level, logger, message and
    the extra fields of the call (request_id)."""
    out = io.StringIO()
    configure_logging(logging.INFO, "json", out)
    logging.getLogger("watcher.daemon").warning("requesting failover %s", "r1",
                                                extra={"request_id": "r1"})
    doc = json.loads(out.getvalue().splitlines()[-1])
    assert doc["level"] == "WARNING"
    assert doc["logger"] == "watcher.daemon"
    assert doc["message"] == "requesting failover r1"
    assert doc["request_id"] == "r1"
    assert doc["time"].startswith(str(datetime.now(UTC).year))


def test_third_party_info_lines_are_quieted(root_logging: None) -> None:
    """twilio's HTTP client (Account SID), urllib3 and apprise INFO lines are not written,
    even with -v."""
    out = io.StringIO()
    configure_logging(logging.DEBUG, "text", out)
    logging.getLogger("twilio.http_client").info("POST Request: AccountSid=%s",
                                                 FAKE_ACCOUNT_SID)
    logging.getLogger("urllib3.connectionpool").debug("POST /hook/%s", SECRET)
    logging.getLogger("apprise").info("Loaded URL json://%s@host", SECRET)
    logging.getLogger("signer.executor").debug("our own debug line")
    text = out.getvalue()
    assert FAKE_ACCOUNT_SID not in text
    assert SECRET not in text
    assert "our own debug line" in text


def test_second_configure_does_not_duplicate_lines(root_logging: None) -> None:
    """Configuring twice keeps one handler: each line is written once."""
    out = io.StringIO()
    configure_logging(logging.INFO, "text", out)
    configure_logging(logging.INFO, "text", out)
    logging.getLogger("x").info("once")
    assert out.getvalue().count("once") == 1


@pytest.mark.parametrize(("key", "label"), [
    pytest.param(BACKUP, "STM" + "B" * 9 + "…(backup1)", id="configured"),
    pytest.param(NULL_KEY, "the null key (disabled)", id="null-key"),
    pytest.param("STM" + "Z" * 50, "STM" + "Z" * 50 + " (not a configured node)", id="foreign"),
    pytest.param(None, "-", id="none"),
])
def test_key_labels(key: str | None, label: str) -> None:
    """A key is shown short with its node name; the null key and foreign keys say so."""
    assert KeyLabels({PRIMARY: "primary", BACKUP: "backup1"})(key) == label


def test_annotate_names_every_configured_key_once() -> None:
    """Alert texts get the node name after each configured key, and annotating is idempotent."""
    labels = KeyLabels({PRIMARY: "primary", BACKUP: "backup1"})
    text = labels.annotate(f"switched {PRIMARY} -> {BACKUP}")
    assert text == f"switched {PRIMARY} (primary) -> {BACKUP} (backup1)"
    assert labels.annotate(text) == text


def test_labelled_notifier_rewrites_text() -> None:
    """LabelledNotifier passes the annotated text to its inner notifier."""
    sent: list[tuple[str, str]] = []

    class Inner:
        def send(self, event: str, text: str) -> None:
            sent.append((event, text))

    LabelledNotifier(Inner(), KeyLabels({BACKUP: "backup1"}).annotate).send("switched", BACKUP)
    assert sent == [("switched", f"{BACKUP} (backup1)")]


def test_change_log_logs_on_change_and_reminds() -> None:
    """A repeated state line is logged once, again when it changes, and as a reminder later."""
    t = [0.0]
    changes = ChangeLog(reminder_s=300, monotonic=lambda: t[0])
    assert changes.should_log("answer", ("r1", "pending"))
    t[0] = 5
    assert not changes.should_log("answer", ("r1", "pending"))
    assert changes.should_log("answer", ("r1", "approved"))
    t[0] = 304
    assert not changes.should_log("answer", ("r1", "approved"))
    t[0] = 305
    assert changes.should_log("answer", ("r1", "approved"))
    changes.forget("answer")
    assert changes.should_log("answer", ("r1", "approved"))


def _urls(tmp_path: Path, url: str, mode: int = 0o600) -> Path:
    path = tmp_path / "keys" / "apprise.urls"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"# alert channels\n\n{url}\n")
    path.chmod(mode)
    return path


def test_watcher_apprise_urls_from_file(tmp_path: Path) -> None:
    """[alerts] apprise_urls_file is read (0600) relative to the config; repr hides the URL."""
    _urls(tmp_path, f"json://127.0.0.1:1/{SECRET}")
    path = tmp_path / "watcher.toml"
    path.write_text(WATCHER_TOML + '\n[alerts]\napprise_urls_file = "keys/apprise.urls"\n')
    config = WatcherConfig.load(path, environ={})
    urls = config.apprise_urls()
    assert [u.reveal() for u in urls] == [f"json://127.0.0.1:1/{SECRET}"]
    assert SECRET not in repr(config) + repr(urls)


def test_watcher_apprise_file_mode_checked(tmp_path: Path) -> None:
    """A URL file readable by others is a ConfigError naming the field."""
    _urls(tmp_path, "json://127.0.0.1:1/", mode=0o644)
    path = tmp_path / "watcher.toml"
    path.write_text(WATCHER_TOML + '\n[alerts]\napprise_urls_file = "keys/apprise.urls"\n')
    with pytest.raises(ConfigError, match=r"alerts\.apprise_urls_file"):
        WatcherConfig.load(path, environ={}).apprise_urls()


def test_watcher_apprise_urls_from_environment(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """apprise_urls_env reads URLs from the environment, with a warning; unset is an error."""
    path = tmp_path / "watcher.toml"
    path.write_text(WATCHER_TOML + '\n[alerts]\napprise_urls_env = "ALERT_URLS"\n')
    config = WatcherConfig.load(path, environ={"ALERT_URLS": "json://127.0.0.1:1/a form://h/b"})
    assert [u.reveal() for u in config.apprise_urls()] == ["json://127.0.0.1:1/a", "form://h/b"]
    with caplog.at_level(logging.WARNING):
        _, close = build_notifier(config, clock=_Clock())
    close()
    assert "from the environment (ALERT_URLS)" in caplog.text
    with pytest.raises(ConfigError, match="ALERT_URLS"):
        WatcherConfig.load(path, environ={}).apprise_urls()


class _Clock:
    def now(self) -> datetime:
        return datetime(2030, 1, 1, tzinfo=UTC)


def test_watcher_notifier_delivers_with_node_names(tmp_path: Path) -> None:
    """The watcher's notifier chain sends an urgent alert to the apprise channel, labelled."""
    with WebhookRecorder() as hook:
        _urls(tmp_path, hook.url())
        path = tmp_path / "watcher.toml"
        path.write_text(WATCHER_TOML + '\n[alerts]\napprise_urls_file = "keys/apprise.urls"\n')
        notifier, close = build_notifier(WatcherConfig.load(path, environ={}), _Clock())
        notifier.send("switch_requested", f"alice: failover from {PRIMARY}; request r1")
        close()
        assert hook.wait_for_posts(1, 10)
    expected = f"alice: failover from {PRIMARY} (primary); request r1"
    assert hook.posts[0].fields["message"] == expected


def test_watcher_check_sends_apprise_test(tmp_path: Path) -> None:
    """`witness-watcher check --send-test` reports the channel and delivers a test message."""
    with WebhookRecorder() as hook:
        _urls(tmp_path, hook.url())
        path = tmp_path / "watcher.toml"
        path.write_text(WATCHER_TOML + '\n[alerts]\napprise_urls_file = "keys/apprise.urls"\n')
        result = report.CheckReport()
        report._check_apprise(WatcherConfig.load(path, environ={}), result, send_test=True)
        assert hook.posts[0].fields["message"] == "alice: witness-watcher test message"
    assert [(c.name, c.ok) for c in result.checks] == [("apprise", True)]
    assert "channel 1 (JSON)" in result.checks[0].detail


def _signer_toml(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "signer.toml"
    path.write_text(signer_toml(port_base=18090, chain="hive", key_mode="active",
                                node_keys=[("primary", PRIMARY), ("backup1", BACKUP)],
                                config_path=path) + extra)
    return path


def test_signer_metrics_off_by_default(tmp_path: Path) -> None:
    """Without [metrics] the signer serves no metrics."""
    assert SignerConfig.load(_signer_toml(tmp_path, "")).metrics_port is None


@pytest.mark.parametrize(("extra", "field"), [
    pytest.param('\n[metrics]\nhost = "0.0.0.0"\nport = 9102\n', "metrics.host",
                 id="off-loopback"),
    pytest.param("\n[metrics]\nport = 18091\n", "metrics.port", id="api-port"),
    pytest.param("\n[metrics]\nport = 9102\npath = \"/m\"\n", "metrics.path", id="unknown"),
])
def test_signer_metrics_settings_refused(tmp_path: Path, extra: str, field: str) -> None:
    """The metrics listener stays on loopback and never shares the API port."""
    with pytest.raises(ConfigError, match=field):
        SignerConfig.load(_signer_toml(tmp_path, extra))


def test_signer_apprise_urls_from_file(tmp_path: Path) -> None:
    """[notify] apprise_urls_file is read with the 0600 check."""
    _urls(tmp_path, "json://127.0.0.1:1/hook")
    config = SignerConfig.load(_signer_toml(
        tmp_path, '\n[notify]\napprise_urls_file = "keys/apprise.urls"\n'
        '\n[metrics]\nport = 9102\n'))
    assert [u.reveal() for u in config.apprise_urls()] == ["json://127.0.0.1:1/hook"]
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 9102)


@pytest.mark.parametrize(("key", "expected"), [
    pytest.param("rid:watcher:abcDEF0123456789", "abcDEF0123456789", id="client-id"),
    pytest.param("nonce:watcher:n0nce", None, id="no-client-id"),
])
def test_client_request_id_of_idempotency_key(key: str, expected: str | None) -> None:
    """The client's request id is read back from the idempotency key, or None."""
    assert client_request_id(key) == expected


def test_every_audit_line_of_a_request_carries_the_client_id(tmp_path: Path) -> None:
    """One failover, one id: each audit row of a request has the watcher's request_id."""
    now = datetime(2030, 1, 1, tzinfo=UTC)
    with Store(tmp_path / "signer.sqlite3", clock=lambda: now) as store:
        lifecycle = Lifecycle(store)
        record, _ = lifecycle.receive(
            client_keyid="watcher", idempotency_key="rid:watcher:W-0123456789abcdef",
            digest="d" * 64, ask=FailoverAsk("alice", PRIMARY, 3, "2 misses"), now=now)
        assert lifecycle.fail(record.id, "test", now)
        rows = [r for r in store.iter_audit() if r["request_id"] == record.id]
    assert [r["event"] for r in rows] == ["request", "failed"]
    assert {r["data"]["client_request_id"] for r in rows} == {"W-0123456789abcdef"}


@pytest.mark.parametrize(("parse", "argv"), [
    pytest.param("signer", ["serve", "--config", "s.toml", "--log-format", "json"], id="signer"),
    pytest.param("watcher", ["run", "--config", "w.toml", "--log-format", "json"], id="watcher"),
])
def test_log_format_option(parse: str, argv: list[str]) -> None:
    """`witness-signer serve` and `witness-watcher run` take --log-format json; text is the
    default and anything else is a usage error."""
    from signer.cli import _parser as signer_parser  # noqa: PLC0415
    from watcher.cli import _parser as watcher_parser  # noqa: PLC0415

    parser = signer_parser() if parse == "signer" else watcher_parser()
    assert parser.parse_args(argv).log_format == "json"
    assert parser.parse_args(argv[:3]).log_format == "text"
    with pytest.raises(SystemExit):
        parser.parse_args([*argv[:3], "--log-format", "xml"])


def test_busy_metrics_port_names_the_setting(tmp_path: Path) -> None:
    """A taken metrics port is a ConfigError naming metrics.port, not a traceback."""
    import socket  # noqa: PLC0415
    from types import SimpleNamespace  # noqa: PLC0415

    from signer.metrics import start_metrics  # noqa: PLC0415

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = SignerConfig.load(_signer_toml(tmp_path, f"\n[metrics]\nport = {port}\n"))
        service = SimpleNamespace(config=config)
        with pytest.raises(ConfigError, match=r"metrics\.port") as info:
            start_metrics(config, service)  # type: ignore[arg-type]
    assert f"127.0.0.1:{port}" in str(info.value)
