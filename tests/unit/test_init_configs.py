"""`witness-signer init` / `witness-watcher init`, the .env Twilio settings and env overrides."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devnet.keys import PrivateKey
from shared.errors import ConfigError
from signer import cli as signer_cli
from signer import config as signer_config
from signer.config import SignerConfig
from signer.initconfig import write_signer_init
from watcher import cli as watcher_cli
from watcher import config as watcher_config
from watcher.config import WatcherConfig
from watcher.initconfig import write_watcher_init

SID = "AC" + "3e" * 16
TOKEN = "tok-" + "7f" * 14  # a fake Twilio token that must never leak
# What a secret would look like inside a config file: a WIF, an Ed25519 seed in
# base64, a Twilio token (32 hex), a password-ish assignment.
SECRET_SHAPES = [re.compile(p) for p in (
    r"\b5[HJK][1-9A-HJ-NP-Za-km-z]{49}\b", r"\b[A-Za-z0-9+/]{43}=", r"\b[0-9a-f]{32}\b",
    r"(?im)^\s*(passphrase|password|token|auth_token|secret)\s*=")]


def fill(text: str, keys: list[str], account: str = "alice") -> str:
    """Replace the EDIT-ME placeholders the way an operator would."""
    text = text.replace('"EDIT-ME: the witness account"', f'"{account}"')
    for key in keys:
        text = re.sub(r'"EDIT-ME: the \w+ node\'s STM public key"', f'"{key}"', text, count=1)
    assert "EDIT-ME:" not in text
    return text


def walk(value: Any) -> list[str]:
    """Every string inside a parsed TOML document."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in walk(v)]
    if isinstance(value, list):
        return [s for v in value for s in walk(v)]
    return [value] if isinstance(value, str) else []


INITS: list[Any] = [
    pytest.param(lambda out, **kw: write_signer_init(out, key_mode="signing", **kw),
                 SignerConfig.load, "signer.toml", id="signer"),
    pytest.param(write_watcher_init,
                 lambda p: WatcherConfig.load(p, environ={}), "watcher.toml", id="watcher"),
]


@pytest.mark.parametrize(("write", "load", "name"), INITS)
@pytest.mark.parametrize("chain", ["hive", "steem"])
def test_init_loads_once_placeholders_are_filled(tmp_path: Path, write: Callable[..., Any],
                                                 load: Callable[[Path], Any], name: str,
                                                 chain: str) -> None:
    """The written file is refused as is and loads after the EDIT-ME values are filled in."""
    written = write(tmp_path / "cfg", chain=chain, account=None)
    path = tmp_path / "cfg" / name
    assert path in written
    assert (tmp_path / "cfg" / "keys").stat().st_mode & 0o777 == 0o700
    with pytest.raises(ConfigError):
        load(path)
    keys = [PrivateKey.generate().public_key() for _ in range(2)]
    path.write_text(fill(path.read_text(), keys))
    config = load(path)
    assert [k.public_key for k in config.node_keys] == keys


@pytest.mark.parametrize(("write", "load", "name"), INITS)
def test_init_writes_no_secret(tmp_path: Path, write: Callable[..., Any],
                               load: Callable[[Path], Any], name: str) -> None:
    """Config files from init hold paths and names only: nothing shaped like a key or token."""
    write(tmp_path, chain="hive", account="alice")
    text = (tmp_path / name).read_text()
    for shape in SECRET_SHAPES:
        assert not shape.search(text), shape.pattern
    for value in walk(tomllib.loads(text)):
        assert not value.startswith("5") or len(value) != 51


@pytest.mark.parametrize(("write", "load", "name"), INITS)
def test_init_refuses_to_overwrite(tmp_path: Path, write: Callable[..., Any],
                                   load: Callable[[Path], Any], name: str) -> None:
    """A second init into the same directory fails and leaves the first file as it was."""
    write(tmp_path, chain="hive", account="alice")
    before = (tmp_path / name).read_text()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write(tmp_path, chain="steem", account="bob")
    assert (tmp_path / name).read_text() == before


def test_init_uses_given_nodes_and_never_contacts_them(tmp_path: Path) -> None:
    """--node values go into the file verbatim; the loopback-only guard proves no connection."""
    nodes = ["https://rpc.example.org", "https://rpc2.example.org/"]
    assert signer_cli.main(["init", "--out", str(tmp_path / "s"), "--account", "alice",
                            "--chain", "steem", "--key-mode", "active",
                            "--node", nodes[0], "--node", nodes[1]]) == 0
    raw = tomllib.loads((tmp_path / "s" / "signer.toml").read_text())
    assert raw["chain"]["nodes"] == nodes
    assert (raw["chain"]["name"], raw["witness"]["key_mode"]) == ("steem", "active")
    assert watcher_cli.main(["init", "--out", str(tmp_path / "w"), "--node", nodes[0],
                             "--signer-url", "https://signer.example:8443"]) == 0
    raw = tomllib.loads((tmp_path / "w" / "watcher.toml").read_text())
    assert (raw["watcher"]["rpc_nodes"], raw["watcher"]["quorum"]) == ([nodes[0]], 1)
    assert raw["signer"]["url"] == "https://signer.example:8443"


@pytest.mark.parametrize("argv", [
    pytest.param(["--node", "ftp://x"], id="not_http"),
    pytest.param(["--node", "https://user:pw@x"], id="credentials_in_url"),
    pytest.param(["--account", "Not An Account"], id="bad_account"),
])
def test_init_rejects_bad_arguments(tmp_path: Path, argv: list[str]) -> None:
    """A bad node URL or account name exits 2 and writes nothing."""
    assert signer_cli.main(["init", "--out", str(tmp_path / "s"), *argv]) == 2
    assert watcher_cli.main(["init", "--out", str(tmp_path / "w"), *argv]) == 2
    assert not (tmp_path / "s" / "signer.toml").exists()
    assert not (tmp_path / "w" / "watcher.toml").exists()


PARSERS = [pytest.param(signer_config.parse_env_text, id="signer"),
           pytest.param(watcher_config.parse_env_text, id="watcher")]


@pytest.mark.parametrize("parse", PARSERS)
def test_env_text_parsing(parse: Callable[[str, Path], dict[str, str]]) -> None:
    """Comments, blank lines, export, quotes and inline comments parse as python-dotenv would."""
    text = (f"# Twilio\n\nTWILIO_ACCOUNT_SID={SID}\nexport TWILIO_AUTH_TOKEN='{TOKEN}'\n"
            'TWILIO_FROM = "+15550000000"\nTWILIO_TO=+15551111111,+15552222222  # both\n')
    assert parse(text, Path(".env")) == {
        "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_FROM": "+15550000000",
        "TWILIO_TO": "+15551111111,+15552222222"}


@pytest.mark.parametrize("parse", PARSERS)
def test_env_bad_line_error_names_line_not_value(parse: Callable[[str, Path], dict[str, str]]
                                                 ) -> None:
    """A malformed line is reported by number; its content (maybe a token) is not echoed."""
    with pytest.raises(ConfigError, match="line 2") as caught:
        parse(f"TWILIO_FROM=+1555\n{TOKEN}\n", Path(".env"))
    assert TOKEN not in str(caught.value)


def env_file(tmp_path: Path, mode: int = 0o600) -> Path:
    """A .env file with every Twilio setting, at ``mode``."""
    path = tmp_path / "twilio.env"
    path.write_text(f"TWILIO_ACCOUNT_SID={SID}\nTWILIO_AUTH_TOKEN={TOKEN}\n"
                    "TWILIO_FROM=+15550000000\nTWILIO_TO=+15551111111\n")
    path.chmod(mode)
    return path


def watcher_with_env_file(tmp_path: Path) -> Path:
    """A filled-in watcher.toml whose [twilio] names only the .env file."""
    write_watcher_init(tmp_path, chain="hive", account="alice")
    path = tmp_path / "watcher.toml"
    keys = [PrivateKey.generate().public_key() for _ in range(2)]
    path.write_text(fill(path.read_text(), keys) + '\n[twilio]\nenv_file = "twilio.env"\n')
    return path


def signer_with_env_file(tmp_path: Path) -> Path:
    """A filled-in signer.toml whose [notify] names only the .env file."""
    write_signer_init(tmp_path, chain="hive", account="alice", key_mode="signing")
    path = tmp_path / "signer.toml"
    keys = [PrivateKey.generate().public_key() for _ in range(2)]
    path.write_text(fill(path.read_text(), keys) + '\n[notify]\ntwilio_env_file = "twilio.env"\n')
    return path


def test_watcher_reads_twilio_settings_from_env_file(tmp_path: Path) -> None:
    """[twilio] env_file supplies SID, sender, recipients and the token; the process env wins."""
    env_file(tmp_path)
    config = WatcherConfig.load(watcher_with_env_file(tmp_path), environ={})
    assert config.twilio is not None
    assert (config.twilio.account_sid, config.twilio.from_number,
            config.twilio.to_numbers) == (SID, "+15550000000", ("+15551111111",))
    assert config.twilio_token().reveal() == TOKEN
    assert TOKEN not in repr(config)
    override = WatcherConfig.load(tmp_path / "watcher.toml",
                                  environ={"TWILIO_AUTH_TOKEN": "from-the-environment"})
    assert override.twilio_token().reveal() == "from-the-environment"


def test_signer_reads_twilio_settings_from_env_file(tmp_path: Path) -> None:
    """notify.twilio_env_file supplies the settings; the token is looked up, never stored."""
    env_file(tmp_path)
    config = SignerConfig.load(signer_with_env_file(tmp_path))
    assert config.twilio is not None
    assert (config.twilio.account_sid, config.twilio.from_number,
            config.twilio.to_numbers) == (SID, "+15550000000", ("+15551111111",))
    assert TOKEN not in repr(config)
    assert config.env_value(config.twilio.auth_token_env) == TOKEN
    assert config.env_value("WITNESS_UNRELATED_VARIABLE") is None


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_world_readable_env_file_is_refused(tmp_path: Path, mode: int) -> None:
    """A .env file with any group or other permission is refused by both services."""
    env_file(tmp_path, mode)
    with pytest.raises(ConfigError, match="mode 0600") as caught:
        WatcherConfig.load(watcher_with_env_file(tmp_path), environ={})
    assert TOKEN not in str(caught.value)
    with pytest.raises(ConfigError, match="group or others") as caught:
        SignerConfig.load(signer_with_env_file(tmp_path))
    assert TOKEN not in str(caught.value)


def test_symlinked_env_file_is_refused_by_watcher(tmp_path: Path) -> None:
    """The watcher opens the .env without following a symlink (it could point anywhere)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "twilio.env").symlink_to(env_file(elsewhere))
    with pytest.raises(ConfigError, match="cannot open"):
        WatcherConfig.load(watcher_with_env_file(tmp_path), environ={})


def test_signer_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """WITNESS_SIGNER_* replace host, port, nodes and state directory for containers."""
    path = signer_with_env_file(tmp_path)
    path.write_text(path.read_text().replace('\n[notify]\ntwilio_env_file = "twilio.env"\n', ""))
    monkeypatch.setenv("WITNESS_SIGNER_HOST", "0.0.0.0")  # noqa: S104 - a container's bind
    monkeypatch.setenv("WITNESS_SIGNER_PORT", "9000")
    monkeypatch.setenv("WITNESS_SIGNER_RPC_NODES", "http://devnet:8090/, http://devnet:8090/rpc/1")
    monkeypatch.setenv("WITNESS_SIGNER_STATE_DIR", "/var/lib/witness-signer")
    config = SignerConfig.load(path)
    assert (config.host, config.port) == ("0.0.0.0", 9000)  # noqa: S104
    assert config.rpc_nodes == ("http://devnet:8090/", "http://devnet:8090/rpc/1")
    assert config.state_dir == Path("/var/lib/witness-signer")


def test_watcher_state_dir_override(tmp_path: Path) -> None:
    """WITNESS_WATCHER_STATE_DIR replaces watcher.state_dir (relative to the config file)."""
    path = watcher_with_env_file(tmp_path)
    path.write_text(path.read_text().replace('\n[twilio]\nenv_file = "twilio.env"\n', ""))
    config = WatcherConfig.load(path, environ={"WITNESS_WATCHER_STATE_DIR": "/state"})
    assert config.state_dir == Path("/state")


@pytest.mark.parametrize(("main", "names"), [
    pytest.param(signer_cli.main, ["WITNESS_SIGNER_RPC_NODES", "WITNESS_SIGNER_STATE_DIR",
                                   "TWILIO_ACCOUNT_SID", "twilio_env_file"], id="signer"),
    pytest.param(watcher_cli.main, ["WITNESS_WATCHER_STATE_DIR", "TWILIO_TO", "env_file"],
                 id="watcher"),
])
def test_help_documents_environment(capsys: pytest.CaptureFixture[str],
                                    main: Callable[[list[str]], int], names: list[str]) -> None:
    """--help lists the environment overrides and the .env names."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in names:
        assert name in out
