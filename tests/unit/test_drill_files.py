"""`witness-devnet init` writes the signer and watcher files of DESIGN.md, safely."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from devnet.config import DevnetConfig
from devnet.errors import InvalidKeyError
from devnet.keys import PrivateKey
from shared.httpsig import load_private_key, load_public_key
from signer.config import SignerConfig
from signer.keystore import Keystore, PassphraseSource, read_passphrase
from watcher.config import WatcherConfig

PORT_BASE = 23400
PRIVATE_FILES = ("keys/chain.keystore", "keys/signer.passphrase", "keys/watcher.key",
                 "keys/operator.key", "keys/signer.key")
PUBLIC_FILES = ("keys/watcher.pub", "keys/operator.pub", "keys/signer.pub")
_BASE58_TOKEN = re.compile(r"[1-9A-HJ-NP-Za-km-z]+")
WIF_LENGTH = 51


def _init(directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("witness-devnet")
    return subprocess.run(
        [str(script), "init", str(directory), "--port-base", str(PORT_BASE),
         "--slot-seconds", "0.1", "--fast-kdf", *extra],
        capture_output=True, text=True, timeout=60, check=True,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _devnet_keys(directory: Path) -> tuple[str, dict[str, str]]:
    """The active WIF and the node WIFs from devnet.toml (the devnet's own record)."""
    raw = tomllib.loads((directory / "devnet.toml").read_text())
    return raw["accounts"]["active_wif"], {n["name"]: n["signing_wif"] for n in raw["nodes"]}


def _decodable_wifs(text: str) -> list[str]:
    """Every 51-character base58 run starting with 5 that decodes as a WIF."""
    found = []
    for token in _BASE58_TOKEN.findall(text):
        for start in range(len(token) - WIF_LENGTH + 1):
            candidate = token[start:start + WIF_LENGTH]
            if not candidate.startswith("5"):
                continue
            try:
                PrivateKey.from_wif(candidate)
            except InvalidKeyError:
                continue
            found.append(candidate)
    return found


def _public(wif: str) -> str:
    return PrivateKey.from_wif(wif).public_key()


@pytest.fixture(scope="module", params=[
    pytest.param(("hive", "active"), id="hive-active"),
    pytest.param(("steem", "signing"), id="steem-signing"),
])
def drill(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, str, str]:
    """A drill directory written by the real console script."""
    chain, mode = request.param
    directory = tmp_path_factory.mktemp(f"drill-{chain}-{mode}") / "drill"
    _init(directory, "--chain", chain, "--key-mode", mode)
    return directory, chain, mode


def test_every_file_is_written_with_safe_modes(drill: tuple[Path, str, str]) -> None:
    """Every key file is 0600, public keys 0644, keys/ 0700."""
    directory, _, _ = drill
    assert _mode(directory / "keys") == 0o700
    for name in PRIVATE_FILES:
        assert _mode(directory / name) == 0o600, name
    for name in PUBLIC_FILES:
        assert _mode(directory / name) == 0o644, name
    for name in ("devnet.toml", "signer.toml", "watcher.toml"):
        assert (directory / name).is_file(), name


def test_ed25519_identities_load_as_pairs(drill: tuple[Path, str, str]) -> None:
    """Each .key file is the private half of the .pub file next to it."""
    directory, _, _ = drill
    for who in ("signer", "watcher", "operator"):
        private = load_private_key(directory / "keys" / f"{who}.key")
        assert private.public_key == load_public_key(directory / "keys" / f"{who}.pub")


def test_signer_toml_loads_with_the_drill_settings(drill: tuple[Path, str, str]) -> None:
    """signer.toml loads with SignerConfig.load and names the devnet, keys and clients."""
    directory, chain, mode = drill
    config = SignerConfig.load(directory / "signer.toml")
    _, nodes = _devnet_keys(directory)
    assert config.port == PORT_BASE + 1
    assert config.chain.name == chain
    assert config.rpc_nodes == (f"http://127.0.0.1:{PORT_BASE}/",
                                f"http://127.0.0.1:{PORT_BASE}/rpc/1")
    assert config.policy.witness == "alice"
    assert config.policy.key_mode == mode
    assert config.policy.approval == "auto"
    assert config.policy.min_missed == 1
    assert [(k.name, k.public_key) for k in config.node_keys] == [
        (n, _public(nodes[n])) for n in ("primary", "backup1", "backup2")]
    assert config.keystore_path == directory / "keys" / "chain.keystore"
    assert config.passphrase_file == directory / "keys" / "signer.passphrase"
    assert config.state_dir == directory / "signer-state"
    assert config.signer_key_path == directory / "keys" / "signer.key"
    assert {(c.keyid, c.role, c.public_key_path.name) for c in config.clients} == {
        ("watcher", "watcher", "watcher.pub"), ("operator", "operator", "operator.pub")}
    assert config.twilio is None


def test_keystore_holds_the_keys_of_the_mode(drill: tuple[Path, str, str]) -> None:
    """The keystore opens with the passphrase file and holds only the mode's keys."""
    directory, _, mode = drill
    active, nodes = _devnet_keys(directory)
    passphrase = read_passphrase(PassphraseSource.file(directory / "keys/signer.passphrase"))
    with Keystore.open(directory / "keys" / "chain.keystore", passphrase) as store:
        if mode == "active":
            assert store.public_keys() == [_public(active)]
            assert store.public_keys("signing") == []
        else:
            assert sorted(store.public_keys("signing")) == sorted(_public(w)
                                                                   for w in nodes.values())
            assert store.public_keys("active") == []


def test_watcher_toml_has_the_watcher_settings(drill: tuple[Path, str, str]) -> None:
    """watcher.toml points at the devnet endpoints, the signer and the metrics port."""
    directory, _, _ = drill
    raw = tomllib.loads((directory / "watcher.toml").read_text())
    base = f"http://127.0.0.1:{PORT_BASE}"
    assert raw["watcher"]["account"] == "alice"
    assert raw["watcher"]["rpc_nodes"] == [f"{base}/", f"{base}/rpc/1", f"{base}/rpc/2"]
    assert raw["watcher"]["block_interval_s"] == 3
    assert raw["watcher"]["miss_threshold"] == 1
    assert raw["watcher"]["one_shot"] is False
    assert raw["signer"] == {"url": f"http://127.0.0.1:{PORT_BASE + 1}", "keyid": "watcher",
                             "key": "keys/watcher.key",
                             "signer_public_key": "keys/signer.pub"}
    assert raw["metrics"]["port"] == PORT_BASE + 2


def test_watcher_files_hold_no_chain_key(drill: tuple[Path, str, str]) -> None:
    """Nothing the watcher reads decodes as a WIF, and no chain key is named in it."""
    directory, _, _ = drill
    active, nodes = _devnet_keys(directory)
    watcher_files = [directory / "watcher.toml", directory / "keys" / "watcher.key",
                     directory / "keys" / "watcher.pub", directory / "keys" / "signer.pub"]
    # The detector itself finds the devnet's (deliberately plain) keys.
    assert set(_decodable_wifs((directory / "devnet.toml").read_text())) == {
        active, *nodes.values()}
    for path in watcher_files:
        text = path.read_text()
        assert _decodable_wifs(text) == [], path
        for secret in (active, *nodes.values()):
            assert secret not in text, path


def test_signer_toml_holds_no_private_key(drill: tuple[Path, str, str]) -> None:
    """signer.toml names public keys and paths only; the chain keys stay in the keystore."""
    directory, _, _ = drill
    active, nodes = _devnet_keys(directory)
    text = (directory / "signer.toml").read_text()
    for secret in (active, *nodes.values()):
        assert secret not in text


def test_init_refuses_an_existing_drill(tmp_path: Path) -> None:
    """A second init into the same directory fails and leaves the first set untouched."""
    directory = tmp_path / "drill"
    _init(directory)
    before = (directory / "signer.toml").read_text()
    script = Path(sys.executable).with_name("witness-devnet")
    result = subprocess.run(
        [str(script), "init", str(directory), "--port-base", str(PORT_BASE),
         "--slot-seconds", "0.1", "--fast-kdf"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode != 0
    assert (directory / "signer.toml").read_text() == before


def test_each_node_api_is_named_where_the_devnet_serves_it(drill: tuple[Path, str, str]
                                                           ) -> None:
    """devnet.toml gives node i api_port P+10+i; signer.toml and watcher.toml name that URL."""
    directory, _, _ = drill
    devnet = DevnetConfig.load(directory / "devnet.toml")
    expected = {name: f"http://127.0.0.1:{PORT_BASE + 10 + i}/"
                for i, name in enumerate(("primary", "backup1", "backup2"))}
    assert devnet.node_api_urls == expected
    assert all(n.api_port_given for n in devnet.nodes)
    signer = tomllib.loads((directory / "signer.toml").read_text())
    watcher = tomllib.loads((directory / "watcher.toml").read_text())
    assert {k["name"]: k["health_url"] for k in signer["witness"]["keys"]} == expected
    assert {n["name"]: n["health_url"] for n in watcher["nodes"]} == expected


def test_health_urls_reach_both_loaders(drill: tuple[Path, str, str]) -> None:
    """The signer and the watcher load the health URLs, and pre-emption is on in both."""
    directory, _, _ = drill
    urls = DevnetConfig.load(directory / "devnet.toml").node_api_urls
    signer = SignerConfig.load(directory / "signer.toml")
    assert {k.name: k.health_url for k in signer.node_keys} == urls
    assert signer.policy.preemptive is True
    watcher = WatcherConfig.load(directory / "watcher.toml", environ={})
    assert {n.name: n.health_url for n in watcher.node_keys} == urls
    assert watcher.health is not None
    assert watcher.health.preemptive is True
    assert watcher.health.source_address is None


@pytest.mark.parametrize(("port_base", "ok"), [(65523, True), (65524, False), (0, False)])
def test_port_base_leaves_room_for_the_node_apis(tmp_path: Path, port_base: int,
                                                 ok: bool) -> None:
    """--port-base P is accepted only while P+12 (backup2's API) is still a port."""
    script = Path(sys.executable).with_name("witness-devnet")
    result = subprocess.run(
        [str(script), "init", str(tmp_path / "drill"), "--port-base", str(port_base),
         "--slot-seconds", "0.1", "--fast-kdf"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert (result.returncode == 0) is ok, result.stderr
    assert (tmp_path / "drill" / "devnet.toml").exists() is ok
    if not ok:
        assert "--port-base" in result.stderr


def test_no_health_writes_the_reactive_files(tmp_path: Path) -> None:
    """--no-health: no health_url and no [health] in either file; both services act on misses."""
    directory = tmp_path / "drill"
    _init(directory, "--no-health")
    for name in ("signer.toml", "watcher.toml"):
        text = (directory / name).read_text()
        assert "health_url" not in text, name
        assert "[health]" not in text, name
    assert SignerConfig.load(directory / "signer.toml").policy.preemptive is False
    assert WatcherConfig.load(directory / "watcher.toml", environ={}).health is None
    # The devnet still serves every node's API on P+10+i.
    assert DevnetConfig.load(directory / "devnet.toml").node_api_urls["backup2"] == (
        f"http://127.0.0.1:{PORT_BASE + 12}/")
