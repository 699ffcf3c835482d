"""Both dry runs against a devnet process: the transaction is signed and verified, never sent.

Neither dry run shows a broadcastable transaction (no signature leaves the signer),
and the watcher's dry run writes no state.

`witness-signer dry-run` and `witness-watcher run --dry-run` run as real
processes on a `witness-devnet init` drill directory; the chain must look
exactly as before afterwards (same signing key, nothing pending, blocks later).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from beembase.signedtransactions import Signed_Transaction

from devnet.keys import PrivateKey
from drill.procs import console_script
from drill.service_files import WATCHER_STATE
from drill.services import RunningDevnet, running_devnet, running_signer
from shared.clock import SystemClock
from shared.errors import ChainDataError
from watcher.app import build_signer_client
from watcher.config import WatcherConfig
from watcher.state import STATE_FILE

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


def independent_digest(unsigned_tx: dict[str, Any], chain_id: str) -> str:
    """sha256(chain id || packed tx) of ``unsigned_tx``, packed independently with beem."""
    tx = Signed_Transaction(**json.loads(json.dumps(unsigned_tx)))
    packed = bytes(tx)  # with an empty signature list; the digest excludes it
    body = packed[:-1]  # drop the varint 0 that counts the (absent) signatures
    return hashlib.sha256(bytes.fromhex(chain_id) + body).hexdigest()


def assert_no_signed_tx(text: str) -> None:
    """``text`` holds no signature: neither the field nor a 65-byte hex signature."""
    assert '"signatures": [\n' not in text
    assert '"signatures": []' in text or '"signatures"' not in text
    for word in text.replace('"', " ").split():
        assert not (len(word) == 130 and all(c in "0123456789abcdef" for c in word)), word


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
        assert report["signature_verified"] is True
        assert "tx" not in report
        assert report["unsigned_tx"]["signatures"] == []
        assert report["operation_json"][0] == operation
        assert report["digest"] == independent_digest(report["unsigned_tx"],
                                                      devnet.status()["chain_id"])
        with pytest.raises(ChainDataError, match=r"(?i)sign|authority"):
            devnet.client.call("condenser_api.broadcast_transaction", [report["unsigned_tx"]])
        assert_no_signed_tx(done.stdout)
        assert_chain_untouched(devnet, primary, report["tx_id"])
        assert not (devnet.dir / "signer-state" / "signer.sqlite3").exists()


def test_signer_dry_run_text_prints_operation_digest_never_signatures(tmp_path: Path) -> None:
    """Text: the operation JSON, digest, signer key and "signature verified"; no signature."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as devnet:
        done = run("witness-signer", "dry-run", "--config", str(devnet.dir / "signer.toml"))
        assert done.returncode == 0, done.stderr
        op_text, _, summary = done.stdout.partition("\nDRY RUN for alice")
        assert json.loads(op_text)[0] == "witness_update"
        assert "signatures" not in op_text
        assert_no_signed_tx(done.stdout)
        active = PrivateKey.from_wif(devnet.active_wif).public_key()
        assert f"signature verified against chain id {devnet.status()['chain_id']}, " \
            f"signed by {active}" in summary
        assert "  digest:     " in summary
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
    """run --dry-run detects the misses, the signer answers dry_run, key and state never move."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as devnet, \
            running_signer(devnet.dir):
        primary = node_key(devnet, "primary")
        config = ("--config", str(devnet.dir / "watcher.toml"))
        state_file = devnet.dir / WATCHER_STATE / STATE_FILE
        armed = run("witness-watcher", "run", *config, "--once")  # a real run arms
        assert armed.returncode == 0, armed.stderr
        baseline = json.loads(armed.stdout)["baseline_missed"]
        saved = state_file.read_bytes()
        devnet.client.call("devnet.stop_node", {"name": "primary"})
        devnet.wait_for(lambda s: s["witness"]["total_missed"] > baseline, 30, "a miss")
        asked = run("witness-watcher", "run", *config, "--once", "--dry-run")
        assert asked.returncode == 0, asked.stderr
        assert json.loads(asked.stdout)["phase"] == "armed"
        assert "dry run: the signer would switch" in asked.stderr
        assert state_file.read_bytes() == saved  # the dry run's request was never saved
        audit = run("witness-signer", "audit", "--config", str(devnet.dir / "signer.toml"))
        events = [json.loads(line) for line in audit.stdout.splitlines()]
        dry = [e for e in events if e["event"] == "dry_run"]
        assert len(dry) == 1
        assert "switch" in json.dumps(dry[0])
        assert "signatures" not in json.dumps(dry[0])
        assert not [e for e in events if e["event"] in ("request", "broadcast")]
        assert_chain_untouched(devnet, primary)


def test_watcher_dry_run_on_a_healthy_chain_writes_no_state(tmp_path: Path) -> None:
    """run --once --dry-run on a fresh, healthy drill arms in memory only: no state is written."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as devnet, \
            running_signer(devnet.dir):
        state_dir = devnet.dir / WATCHER_STATE
        before = sorted(p.name for p in state_dir.iterdir()) if state_dir.exists() else None
        assert before is None or STATE_FILE not in before
        done = run("witness-watcher", "run", "--config", str(devnet.dir / "watcher.toml"),
                   "--once", "--dry-run")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["phase"] == "armed"
        after = sorted(p.name for p in state_dir.iterdir()) if state_dir.exists() else None
        assert after == before


def test_http_dry_run_answer_carries_no_transaction(tmp_path: Path) -> None:
    """POST /v1/failover with dry_run=true says "switch" and the target, never a signed tx."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as devnet, \
            running_signer(devnet.dir):
        primary = node_key(devnet, "primary")
        baseline = devnet.status()["witness"]["total_missed"]
        devnet.client.call("devnet.stop_node", {"name": "primary"})
        devnet.wait_for(lambda s: s["witness"]["total_missed"] >= baseline + 3, 30, "misses")
        config = WatcherConfig.load(devnet.dir / "watcher.toml")
        client = build_signer_client(config, SystemClock(), lambda _s: None)
        missed = devnet.status()["witness"]["total_missed"]
        body = json.dumps({"witness": "alice", "failing_key": primary, "dry_run": True,
                           "observed_total_missed": missed, "reason": "test"}).encode()
        try:
            answer = client.failover(body)
        finally:
            client.close()
        assert (answer.state, answer.body["decision"]) == ("dry_run", "switch")
        assert answer.target_key == node_key(devnet, "backup1")
        assert answer.tx_id is None
        assert not {"tx", "signatures", "transaction", "unsigned_tx"} & set(answer.body)
        assert "signatures" not in json.dumps(answer.body)
        assert_chain_untouched(devnet, primary)
