"""Both dry runs against a devnet process: the transaction is signed and verified, never sent.

`witness-signer dry-run` and `witness-watcher run --dry-run` run as real
processes on a `witness-devnet init` drill directory; the chain must look
exactly as before afterwards (same signing key, nothing pending, blocks later).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from beembase.signedtransactions import Signed_Transaction
from beemgraphenebase.account import PublicKey

from devnet.keys import PrivateKey
from drill.procs import console_script
from drill.services import RunningDevnet, running_devnet, running_signer
from shared.errors import ChainDataError

pytestmark = pytest.mark.slow
SLOT_S = 0.1


def run(tool: str, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one of our console scripts to completion, never on a terminal."""
    return subprocess.run([console_script(tool), *args], input="", capture_output=True,
                          text=True, timeout=timeout_s, check=False)


def node_key(devnet: RunningDevnet, name: str) -> str:
    """The public signing key of devnet node ``name``."""
    return PrivateKey.from_wif(devnet.node_wif(name)).public_key()


def assert_chain_untouched(devnet: RunningDevnet, key: str, tx_id: str | None = None) -> None:
    """The witness still has ``key``, nothing is pending, and it stays so for a few blocks."""
    for _ in range(2):
        status = devnet.status()
        assert status["witness"]["signing_key"] == key
        assert status["pending_transactions"] == 0
        devnet.wait_blocks(5)
    if tx_id is not None:
        with pytest.raises(ChainDataError):  # the devnet never saw the transaction
            devnet.client.call("condenser_api.get_transaction", [tx_id])


def recovered_signer(tx_json: dict[str, Any], chain_id: str) -> str:
    """The key that signed ``tx_json`` for ``chain_id``, recovered independently with beem."""
    tx = Signed_Transaction(**json.loads(json.dumps(tx_json)))
    found = tx.verify([], chain={"chain_id": chain_id, "prefix": "STM"},
                      recover_parameter=True)
    assert len(found) == 1
    return str(PublicKey(found[0], prefix="STM"))


@pytest.mark.parametrize(("key_mode", "operation"), [
    pytest.param("active", "witness_update", id="active"),
    pytest.param("signing", "witness_set_properties", id="signing"),
])
def test_signer_dry_run_signs_verifies_and_sends_nothing(tmp_path: Path, key_mode: str,
                                                         operation: str) -> None:
    """dry-run builds the next switch's transaction signed by the right key and leaves the chain."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S, key_mode=key_mode) as devnet:
        primary, backup1 = node_key(devnet, "primary"), node_key(devnet, "backup1")
        done = run("witness-signer", "dry-run", "--config", str(devnet.dir / "signer.toml"),
                   "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["decision"], report["broadcast"]) == ("switch", False)
        assert (report["operation"], report["target_key"]) == (operation, backup1)
        assert report["chain_view"]["signing_key"] == primary
        assert "NOT applied" in report["notes"][0]
        expected_signer = (PrivateKey.from_wif(devnet.active_wif).public_key()
                           if key_mode == "active" else primary)
        assert report["recovered_signing_keys"] == [expected_signer]
        assert recovered_signer(report["tx"], devnet.status()["chain_id"]) == expected_signer
        assert_chain_untouched(devnet, primary, report["tx_id"])
        assert not (devnet.dir / "signer-state" / "signer.sqlite3").exists()


def test_signer_dry_run_text_prints_tx_and_summary(tmp_path: Path) -> None:
    """Without --json the transaction's JSON comes first, then a summary saying nothing was sent."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as devnet:
        done = run("witness-signer", "dry-run", "--config", str(devnet.dir / "signer.toml"))
        assert done.returncode == 0, done.stderr
        tx_text, _, summary = done.stdout.partition("\nDRY RUN for alice")
        assert json.loads(tx_text)["signatures"]
        assert "nothing was broadcast" in summary
        assert "authority:  active key" in summary
        assert "evidence rule is NOT applied" in summary
        assert_chain_untouched(devnet, node_key(devnet, "primary"))


def test_signer_dry_run_refuses_another_chain(tmp_path: Path) -> None:
    """A signer configured for steem signs nothing against a hive node and exits 3."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as devnet:
        config = devnet.dir / "signer.toml"
        config.write_text(config.read_text().replace('name = "hive"', 'name = "steem"'))
        done = run("witness-signer", "dry-run", "--config", str(config))
        assert done.returncode == 3
        assert "not steem" in done.stderr
        assert '"signatures"' not in done.stdout
        assert_chain_untouched(devnet, node_key(devnet, "primary"))


def test_watcher_dry_run_asks_signer_and_changes_nothing(tmp_path: Path) -> None:
    """run --dry-run detects the misses, the signer answers dry_run, and the key never moves."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as devnet, \
            running_signer(devnet.dir):
        primary = node_key(devnet, "primary")
        watcher = ("witness-watcher", "run", "--config", str(devnet.dir / "watcher.toml"),
                   "--once", "--dry-run")
        armed = run(*watcher)
        assert armed.returncode == 0, armed.stderr
        baseline = json.loads(armed.stdout)["baseline_missed"]
        devnet.client.call("devnet.stop_node", {"name": "primary"})
        devnet.wait_for(lambda s: s["witness"]["total_missed"] > baseline, 30, "a miss")
        asked = run(*watcher)
        assert asked.returncode == 0, asked.stderr
        assert json.loads(asked.stdout)["phase"] == "armed"
        assert "dry run: the signer would switch" in asked.stderr
        audit = run("witness-signer", "audit", "--config", str(devnet.dir / "signer.toml"))
        events = [json.loads(line) for line in audit.stdout.splitlines()]
        dry = [e for e in events if e["event"] == "dry_run"]
        assert len(dry) == 1
        assert "switch" in json.dumps(dry[0])
        assert not [e for e in events if e["event"] in ("request", "broadcast")]
        assert_chain_untouched(devnet, primary)
