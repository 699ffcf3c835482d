"""Crash at every step: a signer SIGKILLed at a fail point recovers on restart, never twice."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from drill.services import RunningDevnet, running_devnet, running_signer
from shared.httpsig import load_private_key, signed_headers_for
from signer.failpoints import ENV_NAME

WAIT_S = 90.0
KEY_CHANGE_OPS = ("witness_update_operation", "witness_set_properties_operation")


def _query(directory: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Read the signer's state database (read-only)."""
    path = directory / "signer-state" / "signer.sqlite3"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        return db.execute(sql, params).fetchall()


def _ask(url: str, directory: Path, devnet: RunningDevnet, missed: int) -> None:
    """POST a signed failover request; the signer may die under it, so no answer is checked."""
    body = json.dumps({"witness": "alice", "failing_key": _node_key(devnet, "primary"),
                       "observed_total_missed": missed, "reason": "crash test"}).encode()
    target = f"{url}/v1/failover"
    headers = signed_headers_for("POST", target, body, "application/json",
                                 load_private_key(directory / "keys" / "watcher.key"),
                                 "watcher", datetime.now(UTC))
    with contextlib.suppress(requests.RequestException):
        requests.post(target, data=body, headers=headers, timeout=WAIT_S)


def _key_changes_on_chain(devnet: RunningDevnet) -> int:
    """How many key-change operations the kept blocks hold."""
    head = devnet.status()["head_block_number"]
    count = 0
    for start in range(1, head + 1, 1000):
        blocks = devnet.client.call("block_api.get_block_range",
                                    {"starting_block_num": start, "count": 1000})["blocks"]
        count += sum(op["type"] in KEY_CHANGE_OPS for block in blocks
                     for tx in block["transactions"] for op in tx["operations"])
    return count


def _wait(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` until it holds, or fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _node_key(devnet: RunningDevnet, name: str) -> str:
    """The public key of devnet node ``name``."""
    return str(next(n["public_key"] for n in devnet.status()["nodes"] if n["name"] == name))


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(("point", "settles_as"), [
    pytest.param("request_stored", "failed", id="request_stored"),
    pytest.param("decided", "confirmed", id="decided"),
    pytest.param("approved", "confirmed", id="approved_not_built"),
    pytest.param("signed", "confirmed", id="signed_not_logged"),
    pytest.param("intent_logged", "confirmed", id="intent_logged_not_sent"),
    pytest.param("broadcast_sent", "confirmed", id="sent_not_recorded"),
    pytest.param("broadcast_recorded", "confirmed", id="recorded"),
    pytest.param("confirmation_seen", "confirmed", id="confirmation_seen"),
])
def test_crash_at_a_fail_point_then_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            point: str, settles_as: str) -> None:
    """Killed at ``point``, the restarted signer settles the request with at most one switch."""
    with running_devnet(tmp_path / "drill", key_mode="active") as devnet:
        directory = devnet.dir
        primary, backup1 = _node_key(devnet, "primary"), _node_key(devnet, "backup1")
        monkeypatch.setenv(ENV_NAME, point)
        with running_signer(directory, "crashing") as signer:
            before = devnet.status()["witness"]["total_missed"]
            devnet.client.call("devnet.stop_node", {"name": "primary"})
            status = devnet.wait_for(lambda s: s["witness"]["total_missed"] > before, WAIT_S,
                                     "a miss after primary stopped")
            asker = threading.Thread(target=_ask, daemon=True, args=(
                signer.url, directory, devnet, status["witness"]["total_missed"]))
            asker.start()
            signer.proc.wait(timeout=WAIT_S)
            asker.join(timeout=30)
        monkeypatch.delenv(ENV_NAME)
        ((request_id, _),) = _query(directory, "SELECT id, state FROM requests")

        with running_signer(directory, "restarted"):
            _wait(lambda: _query(directory, "SELECT state FROM requests WHERE id = ?",
                                 request_id) == [(settles_as,)], settles_as)
            devnet.wait_blocks(20)  # nothing else may follow
        expected = backup1 if settles_as == "confirmed" else primary
        assert devnet.status()["witness"]["signing_key"] == expected
        assert _key_changes_on_chain(devnet) == (1 if settles_as == "confirmed" else 0)
        assert _query(directory, "SELECT count(*) FROM switches") == [
            (1 if settles_as == "confirmed" else 0,)]
