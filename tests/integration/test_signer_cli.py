"""`witness-signer` as a real process: start-up refusals, keystore commands, approval, crashes."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from devnet.keys import PrivateKey
from drill.procs import free_port_base
from drill.services import RunningDevnet, init_dir, running_devnet, running_signer
from shared.httpsig import (
    Headers,
    HttpResponse,
    load_private_key,
    load_public_key,
    signed_headers_for,
    verify_response,
)
from signer.failpoints import ENV_NAME as FAILPOINT_ENV

SIGNER = str(Path(sys.executable).with_name("witness-signer"))
KEY_CHANGE_OPS = ("witness_update_operation", "witness_set_properties_operation")


def run_cli(*args: str, stdin: str | None = None, timeout_s: float = 60
            ) -> subprocess.CompletedProcess[str]:
    """Run `witness-signer ARGS` to completion, stdin from ``stdin`` (never a TTY here)."""
    return subprocess.run([SIGNER, *args], input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def _set_approval(directory: Path, mode: str) -> None:
    path = directory / "signer.toml"
    text = path.read_text()
    assert 'approval = "auto"' in text
    path.write_text(text.replace('approval = "auto"', f'approval = "{mode}"'))


def _node_key(devnet: RunningDevnet, name: str) -> str:
    return PrivateKey.from_wif(devnet.node_wif(name)).public_key()


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def _primary_fails(devnet: RunningDevnet) -> dict[str, Any]:
    """Stop node primary and wait until the chain counts a new miss; return the status."""
    before = devnet.status()["witness"]["total_missed"]
    devnet.client.call("devnet.stop_node", {"name": "primary"})
    return devnet.wait_for(lambda s: s["witness"]["total_missed"] > before, 30,
                           "a miss after primary stopped")


def post_failover(signer_url: str, directory: Path, body: dict[str, Any], timeout_s: float = 30
                  ) -> requests.Response:
    """POST /v1/failover signed with the watcher's key; check the signer's signed answer."""
    raw = json.dumps(body).encode()
    target = f"{signer_url}/v1/failover"
    headers = signed_headers_for("POST", target, raw, "application/json",
                                 load_private_key(directory / "keys" / "watcher.key"),
                                 "watcher", datetime.now(UTC))
    response = requests.post(target, data=raw, headers=headers, timeout=timeout_s)
    verify_response(HttpResponse(response.status_code, Headers(response.headers.items()),
                                 response.content), headers,
                    load_public_key(directory / "keys" / "signer.pub"), datetime.now(UTC))
    return response


def _failover_body(devnet: RunningDevnet, status: dict[str, Any]) -> dict[str, Any]:
    return {"witness": "alice", "failing_key": _node_key(devnet, "primary"),
            "observed_total_missed": status["witness"]["total_missed"],
            "reason": "primary stopped in a test"}


def _state_db(directory: Path) -> sqlite3.Connection:
    path = directory / "signer-state" / "signer.sqlite3"
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def _query(directory: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with closing(_state_db(directory)) as db:  # sqlite3's own context manager only commits
        return db.execute(sql, params).fetchall()


def _request_state(directory: Path, request_id: str) -> str | None:
    rows = _query(directory, "SELECT state FROM requests WHERE id = ?", request_id)
    return str(rows[0][0]) if rows else None


def _key_changes_on_chain(devnet: RunningDevnet) -> list[dict[str, Any]]:
    """Every witness_update / witness_set_properties operation in the kept blocks."""
    head = devnet.status()["head_block_number"]
    found: list[dict[str, Any]] = []
    for start in range(1, head + 1, 1000):
        blocks = devnet.client.call("block_api.get_block_range",
                                    {"starting_block_num": start, "count": 1000})["blocks"]
        found += [op for block in blocks for tx in block["transactions"]
                  for op in tx["operations"] if op["type"] in KEY_CHANGE_OPS]
    return found


def _audit(directory: Path) -> list[dict[str, Any]]:
    result = run_cli("audit", "--config", str(directory / "signer.toml"))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


# ---- start-up refusals (no chain needed: the keystore is opened first) ------------------------


@pytest.fixture
def drill(tmp_path: Path) -> Path:
    """A fresh drill directory (hive, active mode, fast KDF) with no devnet running."""
    directory = tmp_path / "drill"
    init_dir(directory, port_base=free_port_base(), slot_seconds=0.1)
    return directory


def test_wrong_passphrase_refuses_to_start(drill: Path) -> None:
    """A wrong keystore passphrase stops `serve` with a clear message and no traceback."""
    (drill / "keys" / "signer.passphrase").write_text("not-the-passphrase\n")
    result = run_cli("serve", "--config", str(drill / "signer.toml"))
    assert result.returncode == 2
    assert "wrong passphrase" in result.stderr
    assert "Traceback" not in result.stderr
    assert "not-the-passphrase" not in result.stderr + result.stdout


def test_keystore_readable_by_others_refuses_to_start(drill: Path) -> None:
    """A keystore of mode 0644 is refused at start-up."""
    (drill / "keys" / "chain.keystore").chmod(0o644)
    result = run_cli("serve", "--config", str(drill / "signer.toml"))
    assert result.returncode == 2
    assert "mode 0644" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("mode", ["active", "signing"])
def test_keystore_list_shows_public_keys_only(tmp_path: Path, mode: str) -> None:
    """`keystore list` prints the mode's public keys and roles, never a private key."""
    directory = tmp_path / "drill"
    init_dir(directory, port_base=free_port_base(), slot_seconds=0.1, key_mode=mode)
    raw = tomllib.loads((directory / "devnet.toml").read_text())
    wifs = {n["name"]: n["signing_wif"] for n in raw["nodes"]}
    active = raw["accounts"]["active_wif"]
    result = run_cli("keystore", "list", "--config", str(directory / "signer.toml"))
    assert result.returncode == 0, result.stderr
    for secret in (active, *wifs.values()):
        assert secret not in result.stdout + result.stderr
    if mode == "active":
        assert f"{PrivateKey.from_wif(active).public_key()}  active" in result.stdout
    else:
        for name, wif in wifs.items():
            assert f"{PrivateKey.from_wif(wif).public_key()}  signing  node {name}" in (
                result.stdout)


def test_keygen_writes_a_pair_and_never_overwrites(tmp_path: Path) -> None:
    """`keygen --out` writes PATH (0600) and PATH.pub (0644) and refuses to overwrite them."""
    out = tmp_path / "operator2.key"
    result = run_cli("keygen", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.with_name("operator2.key.pub").stat().st_mode & 0o777 == 0o644
    assert load_private_key(out).public_key == load_public_key(out.with_name("operator2.key.pub"))
    before = out.read_bytes()
    again = run_cli("keygen", "--out", str(out))
    assert again.returncode == 2
    assert "refusing to overwrite" in again.stderr
    assert out.read_bytes() == before


# ---- with a devnet ------------------------------------------------------------------------------


def test_chain_id_mismatch_refuses_to_start(tmp_path: Path) -> None:
    """A signer configured for steem refuses a hive devnet with exit 3 and no traceback."""
    with running_devnet(tmp_path / "drill", chain="hive") as devnet:
        path = devnet.dir / "signer.toml"
        path.write_text(path.read_text().replace('name = "hive"', 'name = "steem"'))
        result = run_cli("serve", "--config", str(path))
        assert result.returncode == 3
        assert "refusing to start" in result.stderr
        assert "not steem" in result.stderr
        assert "Traceback" not in result.stderr
        assert _key_changes_on_chain(devnet) == []


def test_status_reads_the_chain_without_any_key(tmp_path: Path) -> None:
    """`status` reports each node's view of the witness with no keystore on the host."""
    with running_devnet(tmp_path / "drill") as devnet:
        (devnet.dir / "keys" / "chain.keystore").unlink()
        (devnet.dir / "keys" / "signer.passphrase").unlink()
        result = run_cli("status", "--config", str(devnet.dir / "signer.toml"), "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["witness"] == "alice"
        assert [n["chain_id_ok"] for n in doc["nodes"]] == [True, True]
        assert {n["signing_key"] for n in doc["nodes"]} == {_node_key(devnet, "primary")}
        assert {n["key_name"] for n in doc["nodes"]} == {"primary"}


def test_create_then_import_the_active_key(tmp_path: Path) -> None:
    """`keystore create` then `keystore import` of the real active key stores it, unechoed."""
    with running_devnet(tmp_path / "drill", key_mode="active") as devnet:
        path = devnet.dir / "signer.toml"
        path.write_text(path.read_text().replace('"keys/chain.keystore"', '"keys/new.keystore"'))
        created = run_cli("keystore", "create", "--config", str(path))
        assert created.returncode == 0, created.stderr
        assert (devnet.dir / "keys" / "new.keystore").stat().st_mode & 0o777 == 0o600
        again = run_cli("keystore", "create", "--config", str(path))
        assert again.returncode == 2
        assert "already exists" in again.stderr

        imported = run_cli("keystore", "import", "--config", str(path),
                           stdin=devnet.active_wif + "\n")
        assert imported.returncode == 0, imported.stderr
        assert devnet.active_wif not in imported.stdout + imported.stderr
        listed = run_cli("keystore", "list", "--config", str(path))
        active_key = PrivateKey.from_wif(devnet.active_wif).public_key()
        assert f"{active_key}  active" in listed.stdout
        assert devnet.active_wif not in listed.stdout


@pytest.mark.parametrize("mode", ["active", "signing"])
def test_import_of_key_without_authority_is_refused(tmp_path: Path, mode: str) -> None:
    """`keystore import` of a key with no authority fails, never echoes it, saves nothing."""
    with running_devnet(tmp_path / "drill", key_mode=mode) as devnet:
        config = str(devnet.dir / "signer.toml")
        before = run_cli("keystore", "list", "--config", config).stdout
        stranger = PrivateKey.generate().wif()
        result = run_cli("keystore", "import", "--config", config, stdin=stranger + "\n")
        assert result.returncode == 2
        assert "authority" in result.stderr or "not one of the configured" in result.stderr
        assert stranger not in result.stdout + result.stderr
        assert run_cli("keystore", "list", "--config", config).stdout == before


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_manual_approval_from_the_cli_switches_to_backup1(tmp_path: Path) -> None:
    """A pending request approved with `witness-signer approve` puts backup1's key on chain."""
    with running_devnet(tmp_path / "drill", key_mode="active") as devnet:
        directory = devnet.dir
        config = str(directory / "signer.toml")
        _set_approval(directory, "manual")
        # No deny hold here: this test approves a new request right after a denial
        # (the hold itself is tested in test_operator_api.py).
        signer_toml = directory / "signer.toml"
        signer_toml.write_text(signer_toml.read_text().replace(
            "[policy]\n", "[policy]\ndeny_hold_s = 0\n", 1))
        with running_signer(directory) as signer:
            assert "listening on http://127.0.0.1:" in signer.log.read_text()
            status = _primary_fails(devnet)
            denied_id = post_failover(signer.url, directory,
                                      _failover_body(devnet, status)).json()["request_id"]
            denied = run_cli("deny", denied_id, "--config", config, "--as", "op-test")
            assert denied.returncode == 0, denied.stderr
            assert _request_state(directory, denied_id) == "denied"

            response = post_failover(signer.url, directory, _failover_body(devnet, status))
            assert response.status_code == 202, response.text
            answer = response.json()
            assert answer["state"] == "pending"
            request_id = answer["request_id"]
            assert devnet.status()["witness"]["signing_key"] == _node_key(devnet, "primary")

            pending = run_cli("pending", "--config", config)
            assert pending.returncode == 0, pending.stderr
            # One readable line: an id prefix and node names, never raw keys.
            assert request_id[:12] in pending.stdout
            assert "primary -> backup1" in pending.stdout
            assert _node_key(devnet, "backup1") not in pending.stdout

            approved = run_cli("approve", request_id[:8], "--config", config, "--as", "op-test")
            assert approved.returncode == 0, approved.stderr
            backup1 = _node_key(devnet, "backup1")
            devnet.wait_for(lambda s: s["witness"]["signing_key"] == backup1, 60,
                            "backup1's key on chain")
            _wait(lambda: _request_state(directory, request_id) == "confirmed", 60,
                  "the request to be confirmed")
            assert signer.stop() == 0  # SIGTERM is a graceful stop
        events = _audit(directory)
        mine = [e for e in events if e["request_id"] == request_id]
        assert any(e["event"] == "approved" and e["actor"] == "op-test" for e in mine)
        assert [e["event"] for e in mine][-1] == "confirmed"
        assert any(e["event"] == "denied" and e["request_id"] == denied_id for e in events)
        assert len(_key_changes_on_chain(devnet)) == 1
        later = run_cli("audit", "--config", config, "--since", "2999-01-01T00:00:00")
        assert later.returncode == 0
        assert later.stdout == ""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_after_broadcast_then_restart_switches_exactly_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signer killed right after recording its broadcast reconciles on restart: one switch."""
    with running_devnet(tmp_path / "drill", key_mode="active") as devnet:
        directory = devnet.dir
        # The fail point kills the signer exactly there (a SIGKILL sent from here raced
        # the signer, which now confirms within a block of the broadcast).
        monkeypatch.setenv(FAILPOINT_ENV, "broadcast_recorded")
        with running_signer(directory, "first") as signer:
            status = _primary_fails(devnet)
            outcome: dict[str, Any] = {}

            def ask() -> None:
                try:
                    outcome["response"] = post_failover(signer.url, directory,
                                                        _failover_body(devnet, status))
                except requests.RequestException as e:
                    outcome["error"] = e

            asker = threading.Thread(target=ask)
            asker.start()
            # SIGKILL once the broadcast is sent and recorded, before its confirmation:
            # the crash window between "sent" and "confirmed" (T7).
            assert signer.proc.wait(timeout=60) == -signal.SIGKILL
            asker.join(timeout=30)
        monkeypatch.delenv(FAILPOINT_ENV)
        ((request_id, state),) = _query(directory, "SELECT id, state FROM requests")
        assert state == "broadcast"

        with running_signer(directory, "second"):
            _wait(lambda: _request_state(directory, request_id) == "confirmed", 90,
                  "the request to be reconciled to confirmed")
            backup1 = _node_key(devnet, "backup1")
            assert devnet.status()["witness"]["signing_key"] == backup1
            devnet.wait_blocks(30)  # nothing else may follow
            assert devnet.status()["witness"]["signing_key"] == backup1
        assert len(_key_changes_on_chain(devnet)) == 1
        assert _query(directory, "SELECT count(*) FROM switches") == [(1,)]
        events = [e["event"] for e in _audit(directory) if e["request_id"] == request_id]
        assert "reconcile" in events
        assert events[-1] == "confirmed"
