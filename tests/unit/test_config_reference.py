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

from devnet.config import DevnetConfig
from devnet.keys import PrivateKey
from drill import service_files
from drill.files import devnet_toml
from shared.config import Fields
from shared.errors import ConfigError
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

[health]
probe_timeout_s = 1.0
max_lag_blocks = 1
confirm_probes = 2
confirm_interval_s = 0.2
"""
WATCHER_EXTRA = """
[health]
probe_interval_s = 3
source_address = "127.0.0.1"

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
    for threat in (f"T{i}" for i in range(1, 10)):
        section = text.split(f"\n## {threat} ", 1)[1].split("\n## ", 1)[0]
        assert "`tests/" in section, f"{threat} names no test"


# ---- fail closed: a misspelt name is an error that names its nearest valid name ----------


def _devnet_example(tmp_path: Path) -> Path:
    path = tmp_path / "devnet.toml"
    path.write_text(devnet_toml(18090, 0.1, "hive", PrivateKey.generate(),
                                {"primary": PrivateKey.generate()}))
    return path


EXAMPLES = {"signer.toml": _signer_example, "watcher.toml": _watcher_example,
            "devnet.toml": _devnet_example}


def _load(loader: str, path: Path) -> object:
    if loader == "signer.toml":
        return SignerConfig.load(path)
    if loader == "watcher.toml":
        return WatcherConfig.load(path, environ={})
    return DevnetConfig.load(path)


def _with_line(text: str, header: str | None, line: str) -> str:
    """``text`` with ``line`` added as the first entry of the (first) table ``header``."""
    if header is None:
        return text + f"\n{line}\n"
    marker = f"\n{header}\n"
    assert marker in text, f"{header} is not in the example"
    return text.replace(marker, f"{marker}{line}\n", 1)


def _refused(loader: str, tmp_path: Path, header: str | None, line: str) -> ConfigError:
    path = EXAMPLES[loader](tmp_path)
    _load(loader, path)  # the example itself is valid
    path.write_text(_with_line(path.read_text(), header, line))
    with pytest.raises(ConfigError) as caught:
        _load(loader, path)
    assert str(path) in str(caught.value)
    return caught.value


@pytest.mark.parametrize(("loader", "header", "line", "field", "suggestion"), [
    pytest.param("signer.toml", "[policy]", 'aproval = "manual"', "policy.aproval",
                 "policy.approval", id="signer-aproval"),
    pytest.param("signer.toml", "[policy]", "cooldown = 600", "policy.cooldown",
                 "policy.cooldown_s", id="signer-cooldown-without-unit"),
    pytest.param("signer.toml", "[policy]", "max_round = 3", "policy.max_round",
                 "policy.max_rounds", id="signer-max-round"),
    pytest.param("signer.toml", "[signer]", "max_body_byte = 1024", "signer.max_body_byte",
                 "signer.max_body_bytes", id="signer-max-body-byte"),
    pytest.param("signer.toml", "[chain]", "qourum = 2", "chain.qourum", "chain.quorum",
                 id="signer-chain-qourum"),
    pytest.param("signer.toml", "[witness]", 'keymode = "signing"', "witness.keymode",
                 "witness.key_mode", id="signer-keymode"),
    pytest.param("signer.toml", "[keystore]", 'passphrase_fle = "x"',
                 "keystore.passphrase_fle", "keystore.passphrase_file", id="signer-keystore"),
    pytest.param("signer.toml", "[notify]", 'twilio_form = "+1555"', "notify.twilio_form",
                 "notify.twilio_from", id="signer-notify"),
    pytest.param("signer.toml", "[[clients]]", 'rol = "operator"', "clients[0].rol",
                 "clients[0].role", id="signer-client-rol"),
    pytest.param("signer.toml", "[[witness.keys]]", 'pubkey = "STM"', "witness.keys[0].pubkey",
                 "witness.keys[0].public_key", id="signer-node-key-pubkey"),
    pytest.param("signer.toml", None, "[polcy]\nx = 1", "polcy", "policy",
                 id="signer-section-polcy"),
    pytest.param("watcher.toml", "[watcher]", "miss_treshold = 1", "watcher.miss_treshold",
                 "watcher.miss_threshold", id="watcher-miss-treshold"),
    pytest.param("watcher.toml", "[signer]", "timeout = 5", "signer.timeout",
                 "signer.timeout_s", id="watcher-signer-timeout"),
    pytest.param("watcher.toml", "[[nodes]]", 'nmae = "x"', "nodes[0].nmae", "nodes[0].name",
                 id="watcher-node-nmae"),
    pytest.param("watcher.toml", "[alerts]", "max_per_hr = 5", "alerts.max_per_hr",
                 "alerts.max_per_hour", id="watcher-alerts"),
    pytest.param("watcher.toml", None, "[metric]\nport = 1", "metric", "metrics",
                 id="watcher-section-metric"),
    pytest.param("devnet.toml", "[devnet]", "slot_second = 0.5", "devnet.slot_second",
                 "devnet.slot_seconds", id="devnet-slot-second"),
    pytest.param("devnet.toml", "[witness]", 'signing_nod = "primary"', "witness.signing_nod",
                 "witness.signing_node", id="devnet-signing-nod"),
    pytest.param("devnet.toml", "[accounts]", 'active = "x"', "accounts.active",
                 "accounts.active_wif", id="devnet-accounts-active"),
    pytest.param("devnet.toml", "[[nodes]]", "upp = false", "nodes[0].upp", "nodes[0].up",
                 id="devnet-node-upp"),
    pytest.param("devnet.toml", None, "[acounts]\nx = 1", "acounts", "accounts",
                 id="devnet-section-acounts"),
])
def test_misspelt_name_is_refused_with_suggestion(  # noqa: PLR0917 (one table row each)
        loader: str, header: str | None, line: str, field: str, suggestion: str,
        tmp_path: Path) -> None:
    """A misspelt field or section is a ConfigError naming the file, it and the nearest name."""
    error = _refused(loader, tmp_path, header, line)
    assert error.field == field
    assert f"did you mean {suggestion!r}" in str(error)


def test_threads_per_source_above_threads_is_refused(tmp_path: Path) -> None:
    """A source may not be allowed more application threads than the signer has: refused."""
    error = _refused("signer.toml", tmp_path, "[signer]", "threads_per_source = 9")
    assert error.field == "signer.threads_per_source"
    assert "must not exceed signer.threads" in str(error)


def test_unknown_name_without_a_near_one_lists_the_valid_names(tmp_path: Path) -> None:
    """A name like nothing valid is still refused, and the message lists what is valid."""
    error = _refused("signer.toml", tmp_path, "[policy]", "zzz = 1")
    assert error.field == "policy.zzz"
    assert "valid here: approval, approval_timeout_s" in str(error)


@pytest.mark.parametrize("loader", ["signer.toml", "watcher.toml"])
def test_every_documented_field_misspelt_is_refused(loader: str, tmp_path: Path) -> None:
    """For each documented field, its name with the last letter doubled is refused and named."""
    fields = sorted(documented_fields(loader))
    assert len(fields) > 15
    for number, dotted in enumerate(fields):
        table, name = dotted.rsplit(".", 1)
        header = f"[[{table[:-2]}]]" if table.endswith("[]") else f"[{table}]"
        typo = name + name[-1]
        directory = tmp_path / str(number)
        directory.mkdir()
        error = _refused(loader, directory, header, f"{typo} = 1")
        shown = table.replace("[]", "[0]") + "."
        assert error.field == shown + typo, dotted
        assert f"did you mean {shown + name!r}" in str(error), (dotted, str(error))
