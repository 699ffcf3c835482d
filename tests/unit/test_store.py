"""The signer's durable state: nonces, requests, broadcasts, switches, armed, audit."""

from __future__ import annotations

import json
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.errors import ConfigError, FailoverError, PolicyError
from signer.policy import History
from signer.store import (
    SCHEMA_VERSION,
    AppendOnlyError,
    Armed,
    IdempotencyConflictError,
    IllegalTransitionError,
    RequestRecord,
    SqliteNonceStore,
    Store,
    StoreError,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
T0 = int(NOW.timestamp())
PRIMARY = "STM6PrimaryNodeKeyForTestsOnly111111111111111111111"
BACKUP1 = "STM7Backup1NodeKeyForTestsOnly111111111111111111111"
MIN = timedelta(minutes=1)
JOIN_S = 10
OPEN = ("pending", "approved", "broadcast")


def open_store(directory: Path) -> Store:
    """Open the store in ``directory`` with a fixed clock."""
    return Store(directory / "signer.sqlite3", clock=lambda: NOW)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store in a private temporary directory."""
    with open_store(tmp_path) as opened:
        yield opened


def new_request(store: Store, key: str = "watcher:n1", body: str = "b" * 64) -> RequestRecord:
    """Insert a request from the watcher asking to fail over PRIMARY."""
    record, created = store.create_request(
        client_keyid="watcher", idempotency_key=key, body_sha256=body, witness="alice",
        failing_key=PRIMARY, target_key=None, now=NOW)
    assert created
    return record


def broadcasting(store: Store) -> RequestRecord:
    """Insert a request and bring it to 'broadcast' with one logged attempt."""
    request = new_request(store)
    assert store.transition(request.id, {"received"}, "approved", "auto", NOW)
    assert store.begin_broadcast(request.id, tx_id="tx1", target_key=BACKUP1,
                                 expiration=NOW + MIN, now=NOW) == 1
    return request


def run_threads(count: int, work: Callable[[int], bool]) -> list[bool]:
    """Run ``work`` in ``count`` threads released together; return their results."""
    barrier = threading.Barrier(count)
    results: list[bool] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait(timeout=JOIN_S)
        outcome = work(i)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_S)
    assert len(results) == count
    return results


def test_nonce_replay_rejected(store: Store) -> None:
    """A nonce is accepted once per key id; the second use is a replay."""
    assert store.use_nonce("watcher", "n" * 16, T0, T0)
    assert not store.use_nonce("watcher", "n" * 16, T0, T0 + 1)
    assert store.use_nonce("operator", "n" * 16, T0, T0 + 1)


def test_nonce_replay_rejected_after_restart(tmp_path: Path) -> None:
    """A nonce used before a restart is still refused after it."""
    with open_store(tmp_path) as first:
        assert first.use_nonce("watcher", "n" * 16, T0, T0)
    with open_store(tmp_path) as second:
        assert not SqliteNonceStore(second).use("watcher", "n" * 16, T0, T0 + 5)


def test_nonce_concurrent_use_once(store: Store) -> None:
    """Eight threads racing on one nonce: exactly one wins."""
    results = run_threads(8, lambda _: store.use_nonce("watcher", "race" * 4, T0, T0))
    assert sorted(results) == [False] * 7 + [True]


def test_nonce_older_than_window_refused(store: Store) -> None:
    """A nonce too old to be remembered is refused rather than trusted."""
    assert not store.use_nonce("watcher", "n" * 16, T0 - store.nonce_window_s - 1, T0)


def test_nonce_pruned_after_window(store: Store) -> None:
    """Nonces older than the window are pruned on the next use."""
    assert store.use_nonce("watcher", "old" * 6, T0, T0)
    assert store.use_nonce("watcher", "new" * 6, T0 + 1000, T0 + 1000)
    with store._tx() as conn:
        rows = conn.execute("SELECT nonce FROM nonces").fetchall()
    assert [r["nonce"] for r in rows] == ["new" * 6]


def test_request_idempotent(store: Store) -> None:
    """The same idempotency key returns the stored request instead of a new one."""
    first = new_request(store)
    again, created = store.create_request(
        client_keyid="watcher", idempotency_key="watcher:n1", body_sha256="b" * 64,
        witness="alice", failing_key=PRIMARY, target_key=None, now=NOW + MIN)
    assert (again, created) == (first, False)
    assert store.find_by_idempotency_key("watcher:n1") == first


def test_request_id_reused_with_other_body(store: Store) -> None:
    """An idempotency key reused for a different body is a 409 conflict."""
    new_request(store)
    with pytest.raises(IdempotencyConflictError) as caught:
        store.create_request(client_keyid="watcher", idempotency_key="watcher:n1",
                             body_sha256="c" * 64, witness="alice", failing_key=PRIMARY,
                             target_key=None, now=NOW)
    assert isinstance(caught.value, PolicyError)
    assert caught.value.status == 409


def test_transition_legal(store: Store) -> None:
    """A legal transition moves the request and sets the given fields."""
    request = new_request(store)
    assert store.transition(request.id, {"received"}, "pending", "manual", NOW + MIN,
                            approve_by=NOW + 10 * MIN)
    assert store.list_pending() == [store.get(request.id)]
    assert store.transition(request.id, {"pending"}, "approved", "ok", NOW + 2 * MIN,
                            decided_by="operator")
    stored = store.get(request.id)
    assert stored is not None
    assert (stored.state, stored.decided_by, stored.approve_by) == (
        "approved", "operator", NOW + 10 * MIN)
    assert stored.updated_at == NOW + 2 * MIN


def test_transition_from_other_state_does_nothing(store: Store) -> None:
    """A transition whose from-state no longer holds returns False and changes nothing."""
    request = new_request(store)
    assert not store.transition(request.id, {"pending"}, "approved", "late", NOW)
    assert store.get(request.id) == request


@pytest.mark.parametrize(("start", "to"), [
    pytest.param("received", "confirmed", id="skip_broadcast"),
    pytest.param("pending", "broadcast", id="skip_approval"),
    pytest.param("confirmed", "broadcast", id="confirmed_is_final"),
    pytest.param("refused", "approved", id="refused_is_final"),
])
def test_illegal_transition_refused(store: Store, start: str, to: str) -> None:
    """An illegal transition raises IllegalTransitionError before touching the row."""
    request = new_request(store)
    with pytest.raises(IllegalTransitionError):
        store.transition(request.id, {start}, to, "nope", NOW)
    assert store.get(request.id) == request


def test_sql_trigger_keeps_confirmed_final(store: Store) -> None:
    """Even raw SQL cannot change a confirmed request; the error is translated."""
    request = broadcasting(store)
    armed = Armed(13, BACKUP1, NOW, 0)
    assert store.confirm_switch(request.id, from_key=PRIMARY, to_key=BACKUP1, tx_id="tx1",
                                block_num=1001, armed=armed, now=NOW)
    with pytest.raises(IllegalTransitionError), store._tx() as conn:
        conn.execute("UPDATE requests SET state = 'broadcast' WHERE id = ?", (request.id,))
    record = store.get(request.id)
    assert record is not None
    assert record.state == "confirmed"


def test_transition_atomic_under_race(store: Store) -> None:
    """Approve and deny racing on one pending request: exactly one wins."""
    request = new_request(store)
    assert store.transition(request.id, {"received"}, "pending", "manual", NOW)
    results = run_threads(8, lambda i: store.transition(
        request.id, {"pending"}, "approved" if i % 2 else "denied", f"t{i}", NOW))
    assert sorted(results) == [False] * 7 + [True]


def test_broadcast_intent_survives_restart(tmp_path: Path) -> None:
    """A broadcast logged before sending is found unresolved after a crash."""
    with open_store(tmp_path) as first:
        request = broadcasting(first)
    with open_store(tmp_path) as second:
        [unresolved] = second.unresolved_broadcasts()
        assert unresolved.request.id == request.id
        assert [(a.attempt, a.tx_id, a.target_key, a.result) for a in unresolved.attempts] == [
            (1, "tx1", BACKUP1, None)]


def test_broadcast_retry_then_confirm(store: Store) -> None:
    """A retry logs a second attempt; confirmation records the switch and re-arms once."""
    request = broadcasting(store)
    store.record_broadcast_result(request.id, 1, "expired")
    assert store.begin_broadcast(request.id, tx_id="tx2", target_key=BACKUP1,
                                 expiration=NOW + 2 * MIN, now=NOW + MIN) == 2
    armed = Armed(13, BACKUP1, NOW + MIN, 0)
    assert store.confirm_switch(request.id, from_key=PRIMARY, to_key=BACKUP1, tx_id="tx2",
                                block_num=1001, armed=armed, now=NOW + MIN)
    assert not store.confirm_switch(request.id, from_key=PRIMARY, to_key=BACKUP1, tx_id="tx2",
                                    block_num=1001, armed=armed, now=NOW + MIN)
    assert store.unresolved_broadcasts() == []
    assert [s.tx_id for s in store.switches()] == ["tx2"]
    assert store.get_armed() == armed
    assert store.begin_broadcast(request.id, tx_id="tx3", target_key=BACKUP1,
                                 expiration=NOW, now=NOW) is None


def test_broadcast_needs_approval(store: Store) -> None:
    """A request that was not approved cannot be broadcast and logs no attempt."""
    request = new_request(store)
    assert store.begin_broadcast(request.id, tx_id="tx1", target_key=BACKUP1,
                                 expiration=NOW, now=NOW) is None
    assert store.unresolved_broadcasts() == []


def test_history_from_armed_and_switches(store: Store) -> None:
    """history() gives the policy its baseline, round and recent switch times."""
    assert store.history(NOW - 60 * MIN) is None
    store.set_armed(Armed(10, PRIMARY, NOW - 90 * MIN, 0))
    request = broadcasting(store)
    store.confirm_switch(request.id, from_key=PRIMARY, to_key=BACKUP1, tx_id="tx1",
                         block_num=1001, armed=Armed(13, BACKUP1, NOW, 1), now=NOW)
    assert store.history(NOW - 60 * MIN) == History(13, BACKUP1, (NOW,), 1)
    assert store.history(NOW + MIN) == History(13, BACKUP1, (), 1)


def test_audit_mirrored_to_jsonl(store: Store, tmp_path: Path) -> None:
    """Each audit record is in SQLite and, identically, one line of audit.jsonl."""
    store.audit("failover.received", "watcher", "r1", failing_key=PRIMARY, at=NOW)
    store.audit("failover.refused", "signer", "r1", rule="cooldown")
    records = list(store.iter_audit())
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    assert records[0]["data"] == {"failing_key": PRIMARY, "at": NOW.isoformat(
        timespec="microseconds")}
    assert [r["event"] for r in records] == ["failover.received", "failover.refused"]


@pytest.mark.parametrize("sql", [
    pytest.param("UPDATE audit SET actor = 'nobody'", id="update"),
    pytest.param("DELETE FROM audit", id="delete"),
    pytest.param("DELETE FROM switches", id="delete_switches"),
])
def test_audit_append_only(store: Store, sql: str) -> None:
    """Audit rows and switches cannot be changed; the trigger error is a FailoverError."""
    store.audit("armed", "operator", None, baseline=10)
    request = broadcasting(store)
    store.confirm_switch(request.id, from_key=PRIMARY, to_key=BACKUP1, tx_id="tx1",
                         block_num=1001, armed=Armed(13, BACKUP1, NOW, 0), now=NOW)
    with pytest.raises(AppendOnlyError) as caught, store._tx() as conn:
        conn.execute(sql)
    assert isinstance(caught.value, FailoverError)
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert [r["actor"] for r in store.iter_audit()] == ["operator"]


def test_audit_append_only_for_raw_sqlite(store: Store, tmp_path: Path) -> None:
    """A separate sqlite3 connection (say, a shell) cannot rewrite the audit either."""
    store.audit("armed", "operator", None, baseline=10)
    raw = sqlite3.connect(tmp_path / "signer.sqlite3", timeout=JOIN_S)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("DELETE FROM audit")
    finally:
        raw.close()


@pytest.mark.parametrize("data", [
    pytest.param({"wif": "x"}, id="secret_name"),
    pytest.param({"note": "5" + "K" + "b" * 49}, id="wif_value"),
    pytest.param({"when": object()}, id="not_json"),
])
def test_audit_refuses_secrets_and_junk(store: Store, data: dict[str, object]) -> None:
    """Audit data that looks like a private key, or is not JSON, is refused unwritten."""
    with pytest.raises(StoreError):
        store.audit("oops", "signer", None, **data)
    assert list(store.iter_audit()) == []


def test_audit_mirror_resynced_after_crash(tmp_path: Path) -> None:
    """Rows that never reached audit.jsonl (crash, torn line) are appended on reopen."""
    with open_store(tmp_path) as first:
        for i in range(3):
            first.audit("event", "signer", None, i=i)
    mirror = tmp_path / "audit.jsonl"
    lines = mirror.read_bytes().splitlines(keepends=True)
    mirror.write_bytes(lines[0] + lines[1][:10])
    with open_store(tmp_path) as second:
        records = list(second.iter_audit())
    after = mirror.read_text().splitlines()
    assert json.loads(after[0]) == records[0]
    assert after[1] == lines[1][:10].decode()
    assert [json.loads(line) for line in after[2:]] == records[1:]


def test_file_modes_private(store: Store, tmp_path: Path) -> None:
    """The database, its WAL and audit.jsonl are created with mode 0600."""
    store.use_nonce("watcher", "n" * 16, T0, T0)
    for name in ("signer.sqlite3", "signer.sqlite3-wal", "audit.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_reopen_preserves_everything(tmp_path: Path) -> None:
    """Requests, attempts, switches, the armed row and the audit survive a restart."""
    with open_store(tmp_path) as first:
        first.set_armed(Armed(10, PRIMARY, NOW, 0))
        request = broadcasting(first)
        first.confirm_switch(request.id, from_key=PRIMARY, to_key=BACKUP1, tx_id="tx1",
                             block_num=1001, armed=Armed(13, BACKUP1, NOW, 0), now=NOW)
        first.audit("failover.confirmed", "signer", request.id, tx_id="tx1")
        before = (first.get(request.id), first.switches(), first.get_armed(),
                  list(first.iter_audit()))
    with open_store(tmp_path) as second:
        after = (second.get(request.id), second.switches(), second.get_armed(),
                 list(second.iter_audit()))
    assert after == before


def test_missing_directory_refused(tmp_path: Path) -> None:
    """A state directory that does not exist is a ConfigError, not created silently."""
    with pytest.raises(ConfigError):
        open_store(tmp_path / "absent")


def test_loose_mode_refused(tmp_path: Path) -> None:
    """An existing database readable by others is refused (T6)."""
    path = tmp_path / "signer.sqlite3"
    path.touch()
    path.chmod(0o644)
    with pytest.raises(StoreError, match="0600"):
        open_store(tmp_path)


def test_symlink_refused(tmp_path: Path) -> None:
    """A database path that is a symlink is refused rather than followed."""
    target = tmp_path / "elsewhere.sqlite3"
    target.touch(mode=0o600)
    (tmp_path / "signer.sqlite3").symlink_to(target)
    with pytest.raises(StoreError):
        open_store(tmp_path)


def test_newer_schema_refused(tmp_path: Path) -> None:
    """A database written by a newer schema version is not used."""
    open_store(tmp_path).close()
    raw = sqlite3.connect(tmp_path / "signer.sqlite3")
    with raw:
        raw.execute("UPDATE schema_version SET version = 99")
    raw.close()
    with pytest.raises(StoreError, match="schema 99"):
        open_store(tmp_path)


def test_naive_datetime_refused(store: Store) -> None:
    """Timestamps without a time zone are refused."""
    with pytest.raises(StoreError):
        store.set_armed(Armed(10, PRIMARY, datetime(2024, 6, 1), 0))


def test_version_1_database_is_migrated_with_its_rules(tmp_path: Path) -> None:
    """A schema-1 database opens as the current schema; old refusals get their rule back."""
    with open_store(tmp_path) as store:
        refused = new_request(store)
        assert store.transition(refused.id, {"received"}, "refused",
                                "[cooldown] cooling down", NOW)
        other = new_request(store, key="watcher:n2")
        assert store.transition(other.id, {"received"}, "refused", "no prefix here", NOW)
    raw = sqlite3.connect(tmp_path / "signer.sqlite3")
    with raw:  # what version 1 looked like: no rule column
        raw.execute("DROP TRIGGER requests_final")
        raw.execute("ALTER TABLE requests DROP COLUMN rule")
        raw.execute("ALTER TABLE requests DROP COLUMN kind")
        raw.execute("ALTER TABLE requests DROP COLUMN force")
        raw.execute("UPDATE schema_version SET version = 1")
    raw.close()
    with open_store(tmp_path) as store:
        assert {r.id: r.rule for r in store.requests_in_state("refused")} == {
            refused.id: "cooldown", other.id: None}
    raw = sqlite3.connect(tmp_path / "signer.sqlite3")
    assert raw.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    with pytest.raises(sqlite3.DatabaseError, match="final"):  # the trigger is back
        raw.execute("UPDATE requests SET rule = 'x' WHERE id = ?", (refused.id,))
    raw.close()


def test_queries_by_state(store: Store) -> None:
    """requests_in_state and open_request answer from the state, oldest first."""
    first = new_request(store)
    assert store.open_request(OPEN) is None
    assert store.transition(first.id, {"received"}, "approved", "auto", NOW)
    second = new_request(store, key="watcher:n2")
    assert {r.id for r in store.requests_in_state("received", "approved")} == {
        first.id, second.id}
    assert [r.id for r in store.requests_in_state("received")] == [second.id]
    open_one = store.open_request(OPEN)
    assert open_one is not None
    assert open_one.id == first.id


def test_unknown_state_query_refused(store: Store) -> None:
    """Asking for a state the machine does not have is a StoreError, not an empty answer."""
    with pytest.raises(StoreError):
        store.requests_in_state("done")
