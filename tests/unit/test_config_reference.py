"""docs/configuration.md stays in sync with what the config loaders read.

The fields the code knows are observed, not guessed: a complete example of each
file (the drill's files plus every optional section) is loaded through the real
loader while :class:`shared.config.Fields` records each dotted name it is asked
for and each field list it is told to accept.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drill import service_files
from shared.config import Fields
from signer.config import SignerConfig
from watcher.config import WatcherConfig

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "configuration.md"
KEY = "STM" + "5" * 50
NODE_KEYS = [("primary", KEY), ("backup1", KEY.replace("5", "6")),
             ("backup2", KEY.replace("5", "7"))]

SIGNER_EXTRA = """
[notify]
twilio_account_sid = "AC0123456789abcdef0123456789abcdef"
twilio_auth_token_file = "keys/twilio.token"
twilio_auth_token_env = "TWILIO_AUTH_TOKEN"
twilio_from = "+15550000000"
to = ["+15551111111"]
twilio_api_base_url = "http://127.0.0.1:9"
apprise_urls_env = "WITNESS_APPRISE_URLS"

[metrics]
host = "127.0.0.1"
port = 9102
"""
WATCHER_EXTRA = """
[alerts]
min_interval_s = 300
max_per_hour = 20
apprise_urls_env = "WITNESS_APPRISE_URLS"

[twilio]
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token_env = "TWILIO_AUTH_TOKEN"
auth_token_file = "keys/twilio.token"
from = "+15550000000"
to = ["+15551111111"]
api_base_url = "http://127.0.0.1:9"
timeout_s = 5
"""


def _normalise(name: str) -> str:
    return re.sub(r"\[\d+\]", "[]", name)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every dotted field name a loader reads or declares while this fixture is active."""
    seen: set[str] = set()
    real_get, real_init = Fields.get, Fields.__init__

    def get(self: Fields, dotted: str, *args: object) -> object:
        seen.add(_normalise(self.prefix + dotted))
        return real_get(self, dotted, *args)

    def init(self: Fields, raw: dict[str, object], path: Path, prefix: str = "",
             known: object = None) -> None:
        if known is not None and prefix:
            seen.update(_normalise(prefix + k) for k in known)  # type: ignore[attr-defined]
        real_init(self, raw, path, prefix, known)  # type: ignore[arg-type]

    monkeypatch.setattr(Fields, "get", get)
    monkeypatch.setattr(Fields, "__init__", init)
    return seen


def _signer_example(tmp_path: Path) -> Path:
    text = service_files.signer_toml(port_base=18090, chain="hive", key_mode="active",
                                     node_keys=NODE_KEYS, config_path=tmp_path / "signer.toml")
    text = text.replace('max_skew_s = 30\n', 'max_skew_s = 30\nmax_body_bytes = 8192\n'
                        'tls_cert = "keys/tls.crt"\ntls_key = "keys/tls.key"\n')
    text = text.replace('passphrase_file = "keys/signer.passphrase"\n',
                        'passphrase_file = "keys/signer.passphrase"\n'
                        'passphrase_credential = "signer.passphrase"\n'
                        'passphrase_env = "WITNESS_SIGNER_PASSPHRASE"\nprompt = false\n')
    path = tmp_path / "signer.toml"
    path.write_text(text + SIGNER_EXTRA)
    return path


def _watcher_example(tmp_path: Path) -> Path:
    path = tmp_path / "watcher.toml"
    path.write_text(service_files.watcher_toml(port_base=18090, slot_seconds=3.0,
                                               node_keys=NODE_KEYS) + WATCHER_EXTRA)
    return path


def code_fields(loader: str, tmp_path: Path, recorded: set[str]) -> set[str]:
    """The fields of signer.toml or watcher.toml that the loader reads or accepts."""
    if loader == "signer.toml":
        SignerConfig.load(_signer_example(tmp_path))
    else:
        WatcherConfig.load(_watcher_example(tmp_path), environ={})
    # A table name alone ("clients", "witness.keys") is a section, not a field.
    sections = {n for n in recorded if any(o.startswith((n + ".", n + "[].")) for o in recorded)}
    return recorded - sections


def documented_fields(section: str) -> set[str]:
    """The `dotted.names` in the first column of the reference's tables under ``## section``."""
    text = REFERENCE.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    name = r"[a-z_]+(?:\[\])?(?:\.[a-z_]+(?:\[\])?)+"
    return {m.group(1) for m in re.finditer(rf"(?m)^\| `({name})` \|", body)}


@pytest.mark.parametrize("loader", ["signer.toml", "watcher.toml"])
def test_every_field_the_code_reads_is_documented(loader: str, tmp_path: Path,
                                                  recorded: set[str]) -> None:
    """No config field the loader reads is missing from docs/configuration.md."""
    missing = code_fields(loader, tmp_path, recorded) - documented_fields(loader)
    assert not missing, f"undocumented {loader} fields: {sorted(missing)}"


@pytest.mark.parametrize("loader", ["signer.toml", "watcher.toml"])
def test_every_documented_field_exists_in_the_code(loader: str, tmp_path: Path,
                                                   recorded: set[str]) -> None:
    """docs/configuration.md documents no field the loader does not read."""
    extra = documented_fields(loader) - code_fields(loader, tmp_path, recorded)
    assert not extra, f"documented but unknown {loader} fields: {sorted(extra)}"


def test_every_environment_variable_the_config_reads_is_documented() -> None:
    """Each environment variable named in the config modules appears in the reference."""
    text = REFERENCE.read_text(encoding="utf-8")
    names: set[str] = set()
    for module in ("signer/config.py", "watcher/config.py"):
        source = (REPO / module).read_text(encoding="utf-8")
        prefix = re.search(r'ENV_PREFIX\s*=\s*"(\w+)"', source)
        if prefix:
            names |= {prefix.group(1) + m for m in re.findall(r'ENV_PREFIX \+ "(\w+)"', source)}
        names |= set(re.findall(r'"((?:WITNESS|TWILIO)_[A-Z_]*[A-Z]|CREDENTIALS_DIRECTORY)"',
                                source))
    assert names, "no environment variables found: the extraction is broken"
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"undocumented environment variables: {missing}"


def test_reference_tables_give_type_default_and_meaning() -> None:
    """Each documented field row has four non-empty cells: name, type, default, meaning."""
    text = REFERENCE.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if re.match(r"^\| `[a-z_]+[.\[]", line)]
    assert len(rows) > 40
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert len(cells) == 4, row
        assert all(cells), row


def test_threat_model_names_real_tests() -> None:
    """Every `tests/…::test_name` cited in docs/threat-model.md is a test that exists."""
    text = (REPO / "docs" / "threat-model.md").read_text(encoding="utf-8")
    cited = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", text)
    assert len(cited) > 50
    for path, name in cited:
        source = REPO / path
        assert source.is_file(), path
        assert re.search(rf"(?m)^def {name}\(", source.read_text(encoding="utf-8")), (path, name)
    for threat in (f"T{i}" for i in range(1, 9)):
        section = text.split(f"\n## {threat} ", 1)[1].split("\n## ", 1)[0]
        assert "`tests/" in section, f"{threat} names no test"
