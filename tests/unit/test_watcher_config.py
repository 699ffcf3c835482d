"""watcher.toml: defaults, every error names its field, the environment is read only here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drill.service_files import watcher_toml
from shared.errors import ConfigError
from watcher.cli import EXIT_CONFIG, main
from watcher.config import ENV_FAIL_POINT, ENV_RPC_NODES, ENV_SIGNER_URL, WatcherConfig

MINIMAL = """
[watcher]
account = "alice"
rpc_nodes = ["http://127.0.0.1:1/", "http://127.0.0.1:1/rpc/1"]
miss_threshold = 2

[signer]
url = "http://127.0.0.1:2"
key = "keys/watcher.key"
signer_public_key = "keys/signer.pub"
"""
TWILIO = """
[twilio]
account_sid = "AC0123456789abcdef0123456789abcdef"
from = "+15550000000"
to = ["+15551111111"]
"""


def write(tmp_path: Path, text: str) -> Path:
    """A watcher.toml with ``text``."""
    path = tmp_path / "watcher.toml"
    path.write_text(text)
    return path


def test_minimal_config_defaults(tmp_path: Path) -> None:
    """A minimal file loads with real-chain defaults and paths relative to the file."""
    config = WatcherConfig.load(write(tmp_path, MINIMAL), environ={})
    assert config.policy.quorum == 1
    assert config.policy.miss_threshold == 2
    assert config.timing.block_interval_s == 3.0
    assert config.timing.max_poll_interval_s == 30.0
    assert config.key_path == tmp_path / "keys" / "watcher.key"
    assert config.state_dir == tmp_path / "watcher-state"
    assert config.metrics_host is None
    assert config.twilio is None


def test_drill_template_loads(tmp_path: Path) -> None:
    """The watcher.toml `witness-devnet init` writes is a valid config of this format."""
    nodes = [("primary", "STM" + "P" * 50), ("backup1", "STM" + "B" * 50)]
    config = WatcherConfig.load(write(tmp_path, watcher_toml(port_base=24000, slot_seconds=0.25,
                                                             node_keys=nodes)), environ={})
    assert config.timing.block_interval_s == 0.25
    assert config.chain_block_interval_s == 3.0
    assert config.policy.quorum == 2
    assert [n.name for n in config.node_keys] == ["primary", "backup1"]
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 24002)


@pytest.mark.parametrize(("change", "field"), [
    pytest.param(("account = \"alice\"", "account = \"Alice Smith\""), "watcher.account",
                 id="bad-account"),
    pytest.param(("miss_threshold = 2", "miss_threshold = 0"), "watcher.miss_threshold",
                 id="zero-threshold"),
    pytest.param(("miss_threshold = 2", "miss_threshold = 2\nquorum = 3"), "watcher.quorum",
                 id="quorum-above-node-count"),
    pytest.param(("miss_threshold = 2", "miss_threshold = 2\nsurprise = 1"),
                 "watcher.surprise", id="unknown-field"),
    pytest.param(('rpc_nodes = ["http://127.0.0.1:1/", "http://127.0.0.1:1/rpc/1"]',
                  'rpc_nodes = ["ftp://x/"]'), "watcher.rpc_nodes", id="not-http"),
    pytest.param(('rpc_nodes = ["http://127.0.0.1:1/", "http://127.0.0.1:1/rpc/1"]',
                  'rpc_nodes = ["http://a/", "http://a/"]'), "watcher.rpc_nodes",
                 id="duplicate-node"),
    pytest.param(('url = "http://127.0.0.1:2"', 'url = "http://user:pw@127.0.0.1:2"'),
                 "signer.url", id="credentials-in-url"),
    pytest.param(('key = "keys/watcher.key"\n', ""), "signer.key", id="missing-key"),
    pytest.param(("[signer]", "[metrics]\nhost = \"0.0.0.0\"\nport = 9\n[signer]"),
                 "metrics.host", id="metrics-off-loopback"),
    pytest.param(("[signer]", "[[nodes]]\nname = \"x\"\npublic_key = \"5Kabc\"\n[signer]"),
                 "nodes[0].public_key", id="node-key-not-public"),
])
def test_errors_name_the_field(tmp_path: Path, change: tuple[str, str], field: str) -> None:
    """Every bad field is a ConfigError naming the file and that field."""
    assert change[0] in MINIMAL
    path = write(tmp_path, MINIMAL.replace(change[0], change[1], 1))
    with pytest.raises(ConfigError) as error:
        WatcherConfig.load(path, environ={})
    assert error.value.field == field
    assert error.value.path == str(path)


def test_not_toml(tmp_path: Path) -> None:
    """A file that is not TOML is a ConfigError naming the file."""
    path = write(tmp_path, "[watcher\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        WatcherConfig.load(path, environ={})


def test_environment_overrides(tmp_path: Path) -> None:
    """The RPC node list and the signer URL can come from the environment."""
    config = WatcherConfig.load(write(tmp_path, MINIMAL), environ={
        ENV_RPC_NODES: "http://10.0.0.1:8090, http://10.0.0.2:8090",
        ENV_SIGNER_URL: "https://signer.internal:8443"})
    assert config.rpc_nodes == ("http://10.0.0.1:8090", "http://10.0.0.2:8090")
    assert config.signer_url == "https://signer.internal:8443"


def test_twilio_token_from_environment_is_redacted(tmp_path: Path) -> None:
    """The token comes from the named variable and never shows in repr or str."""
    config = WatcherConfig.load(write(tmp_path, MINIMAL + TWILIO),
                                environ={"TWILIO_AUTH_TOKEN": "tok-secret-value"})
    token = config.twilio_token()
    assert token.reveal() == "tok-secret-value"
    assert "tok-secret" not in repr(token) + str(token) + repr(config)


def test_twilio_token_missing(tmp_path: Path) -> None:
    """No token in the environment is a ConfigError naming the field, not a crash later."""
    config = WatcherConfig.load(write(tmp_path, MINIMAL + TWILIO), environ={})
    with pytest.raises(ConfigError) as error:
        config.twilio_token()
    assert error.value.field == "twilio.auth_token_env"


def test_twilio_token_file_must_be_private(tmp_path: Path) -> None:
    """A token file readable by others is refused."""
    token = tmp_path / "twilio.token"
    token.write_text("tok-file\n")
    token.chmod(0o644)
    config = WatcherConfig.load(
        write(tmp_path, MINIMAL + TWILIO + 'auth_token_file = "twilio.token"\n'), environ={})
    with pytest.raises(ConfigError) as error:
        config.twilio_token()
    assert error.value.field == "twilio.auth_token_file"
    token.chmod(0o600)
    assert config.twilio_token().reveal() == "tok-file"


def test_cli_config_error_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad config makes every command exit 2 with the field named, no traceback."""
    path = write(tmp_path, MINIMAL.replace("miss_threshold = 2", "miss_threshold = -1"))
    assert main(["status", "--config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "watcher.miss_threshold" in err
    assert "Traceback" not in err


def test_cli_keygen_writes_a_private_key_pair(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """keygen writes KEY (0600) and KEY.pub, prints only the public half, never overwrites."""
    out = tmp_path / "watcher.key"
    assert main(["keygen", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_mode & 0o777 == 0o600
    public = (tmp_path / "watcher.pub").read_text().strip()
    assert public in printed
    assert out.read_text().strip() not in printed
    assert main(["keygen", "--out", str(out)]) == EXIT_CONFIG


def test_cli_help_describes_every_command() -> None:
    """--help lists run, status, check and keygen, with the exit codes."""
    result = subprocess.run([str(Path(sys.executable).with_name("witness-watcher")), "--help"],
                            capture_output=True, text=True, timeout=30, check=True)
    for word in ("run", "status", "check", "keygen", "exit codes"):
        assert word in result.stdout


def test_fail_point_is_off_unless_named(tmp_path: Path) -> None:
    """Crash-test fail points are off by default, named by the environment, and checked."""
    path = write(tmp_path, MINIMAL)
    assert WatcherConfig.load(path, environ={}).fail_point is None
    assert WatcherConfig.load(path, environ={ENV_FAIL_POINT: "request_sent"}).fail_point == (
        "request_sent")
    with pytest.raises(ConfigError, match=ENV_FAIL_POINT):
        WatcherConfig.load(path, environ={ENV_FAIL_POINT: "request_snet"})
