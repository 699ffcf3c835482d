"""The signer's durable state: one SQLite file (WAL) and an append-only audit mirror.

Nothing secret is ever written here: only account names, public keys, client
key ids, nonces, body hashes, transaction ids and block numbers. :meth:`Store.audit`
refuses data that looks like a private key or names a secret (:mod:`signer.audit`).
The tables, the state machine and the store's errors are in :mod:`signer.schema`.

One connection serialised by a lock serves all threads (the signer is one
process with threads); every write is one ``BEGIN IMMEDIATE`` transaction, so
the signer CLI can work on the same file from another process.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from shared.errors import ConfigError, PolicyError
from signer.audit import AuditMirror, audit_payload
from signer.policy import History
from signer.records import (
    Armed,
    BroadcastAttempt,
    RequestRecord,
    SwitchRecord,
    Unresolved,
    from_row,
)
from signer.schema import (
    FINAL_STATES,
    KINDS,
    SCHEMA,
    SCHEMA_VERSION,
    STATES,
    TRANSITIONS,
    AppendOnlyError,
    IllegalTransitionError,
    StoreError,
    migrate,
    translate,
    ts,
)

__all__ = [
    "FINAL_STATES",
    "SCHEMA_VERSION",
    "STATES",
    "TRANSITIONS",
    "AppendOnlyError",
    "Armed",
    "BroadcastAttempt",
    "IdempotencyConflictError",
    "IllegalTransitionError",
    "RequestRecord",
    "SqliteNonceStore",
    "Store",
    "StoreError",
    "SwitchRecord",
    "Unresolved",
]


class IdempotencyConflictError(PolicyError):
    """The same idempotency key came back with a different body (409)."""


def _open_private(path: Path, flags: int) -> int:
    """Open ``path`` (created 0600), refusing symlinks, non-files and loose modes."""
    # SECURITY: T6 — O_NOFOLLOW so a planted symlink cannot redirect our writes.
    flags |= os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
        st = os.fstat(fd)
    except OSError as e:
        raise StoreError(f"cannot open {path}: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
        os.close(fd)
        raise StoreError(f"{path} must be a regular file of mode 0600, "
                         f"is {stat.filemode(st.st_mode)}")
    return fd


class Store:
    """All durable signer state; safe to share between threads.

    Raises:
        ConfigError: the state directory is missing or writable by others.
        StoreError: the files cannot be opened or have unsafe modes.
    """

    def __init__(self, db_path: Path, *, audit_path: Path | None = None,
                 nonce_window_s: int = 600,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        directory = db_path.parent
        if not directory.is_dir():
            raise ConfigError("state directory does not exist", path=str(directory))
        if directory.stat().st_mode & 0o002:
            raise ConfigError("state directory is writable by others", path=str(directory))
        self.nonce_window_s = nonce_window_s
        self._clock = clock
        self._lock = threading.RLock()
        os.close(_open_private(db_path, os.O_RDWR))
        try:
            self._conn = sqlite3.connect(db_path, timeout=5.0, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the state database {db_path}: {e}") from e
        self._audit: AuditMirror | None = None
        try:
            self._prepare(db_path)
            audit_path = audit_path or directory / "audit.jsonl"
            self._audit = AuditMirror(_open_private(audit_path, os.O_RDWR | os.O_APPEND),
                                      audit_path)
            self._audit.resync(self.iter_audit)
        except BaseException:
            self.close()
            raise

    def _prepare(self, db_path: Path) -> None:
        """Set the pragmas, create the schema and check its version."""
        try:
            self._conn.row_factory = sqlite3.Row
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(f"BEGIN IMMEDIATE;{SCHEMA}")
            try:
                found = self._conn.execute("SELECT version FROM schema_version").fetchone()[0]
                version = migrate(self._conn, found)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the state database {db_path}: {e}") from e
        if mode != "wal" or version != SCHEMA_VERSION:
            raise StoreError(f"{db_path}: journal {mode}, schema {version}; "
                             f"expected wal, schema {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database and the audit file."""
        with self._lock:
            self._conn.close()
            if self._audit is not None:
                self._audit.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction under the lock; sqlite3 errors become StoreError."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise translate(e) from e

    def _rows(self, sql: str, params: Iterable[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as e:
                raise translate(e) from e

    def use_nonce(self, keyid: str, nonce: str, created: int, now: int) -> bool:
        """Record ``nonce`` for ``keyid``; False if already used or too old to remember."""
        horizon = now - self.nonce_window_s
        # SECURITY: T2 — a nonce older than what we keep could be a replay of a pruned one.
        if created < horizon:
            return False
        with self._tx() as conn:
            conn.execute("DELETE FROM nonces WHERE created < ? AND seen_at < ?",
                         (horizon, horizon))
            cursor = conn.execute("INSERT OR IGNORE INTO nonces VALUES (?, ?, ?, ?)",
                                  (keyid, nonce, created, now))
            return cursor.rowcount == 1

    def create_request(self, *, client_keyid: str, idempotency_key: str, body_sha256: str,
                       witness: str, failing_key: str, target_key: str | None,
                       now: datetime, kind: str = "failover",
                       force: bool = False) -> tuple[RequestRecord, bool]:
        """Insert a request in state ``received``; or return the one with that key and False.

        ``kind`` is ``failover`` (a watcher's ask) or an operator command
        (:data:`signer.schema.KINDS`); ``force`` lets an operator's switch skip the cooldown.

        Raises:
            IdempotencyConflictError: the key is known with a different body.
        """
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM requests WHERE idempotency_key = ?",
                               (idempotency_key,)).fetchone()
            if row is not None:
                if row["body_sha256"] != body_sha256:
                    raise IdempotencyConflictError("request id reused with a different body")
                return from_row(RequestRecord, row), False
            if kind not in KINDS:
                raise StoreError(f"not a request kind: {kind!r}")
            request_id = uuid.uuid4().hex
            conn.execute("INSERT INTO requests (id, client_keyid, idempotency_key, body_sha256, "
                         "witness, failing_key, target_key, state, created_at, updated_at, "
                         "kind, force) VALUES (?, ?, ?, ?, ?, ?, ?, 'received', ?, ?, ?, ?)",
                         (request_id, client_keyid, idempotency_key, body_sha256, witness,
                          failing_key, target_key, ts(now), ts(now), kind, int(force)))
        record = self.get(request_id)
        assert record is not None
        return record, True

    def get(self, request_id: str) -> RequestRecord | None:
        """Return the request ``request_id``, or None."""
        return next(iter(self._requests("id = ?", request_id)), None)

    def ids_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        """Return up to ``limit`` request ids starting with ``prefix`` (hex), oldest first."""
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            return []
        rows = self._rows("SELECT id FROM requests WHERE substr(id, 1, ?) = ? "
                          "ORDER BY created_at, id LIMIT ?", (len(prefix), prefix, limit))
        return [str(r["id"]) for r in rows]

    def last_denial(self, failing_key: str, since: datetime) -> RequestRecord | None:
        """Return the latest failover request for ``failing_key`` denied at or after ``since``."""
        rows = self._requests("kind = 'failover' AND state = 'denied' AND failing_key = ? "
                              "AND updated_at >= ?", failing_key, ts(since))
        return max(rows, key=lambda r: r.updated_at, default=None)

    def find_by_idempotency_key(self, idempotency_key: str) -> RequestRecord | None:
        """Return the request stored under ``idempotency_key``, or None."""
        return next(iter(self._requests("idempotency_key = ?", idempotency_key)), None)

    def list_pending(self) -> list[RequestRecord]:
        """Return the requests waiting for approval, oldest first."""
        return self.requests_in_state("pending")

    def requests_in_state(self, *states: str) -> list[RequestRecord]:
        """Return the requests in any of ``states``, oldest first.

        Raises:
            StoreError: a name is not a request state.
        """
        unknown = set(states) - STATES
        if unknown:
            raise StoreError(f"not request states: {sorted(unknown)}")
        return self._requests("state IN (SELECT value FROM json_each(?))",
                              json.dumps(sorted(states)))

    def open_request(self, states: Iterable[str]) -> RequestRecord | None:
        """Return the oldest request in one of ``states`` (the lifecycle's open ones), or None."""
        return next(iter(self.requests_in_state(*states)), None)

    def _requests(self, where: str, *params: object) -> list[RequestRecord]:
        rows = self._rows(f"SELECT * FROM requests WHERE {where} "  # noqa: S608 -- callers pass constants
                          "ORDER BY created_at, id", params)
        return [from_row(RequestRecord, r) for r in rows]

    def transition(self, request_id: str, from_states: Iterable[str], to_state: str,
                   detail: str, now: datetime, *, decided_by: str | None = None,
                   target_key: str | None = None, approve_by: datetime | None = None,
                   execute_at: datetime | None = None, rule: str | None = None) -> bool:
        """Move the request to ``to_state`` if it is in ``from_states``; True if it moved.

        Fields given as None keep their stored value. Only :mod:`signer.lifecycle`
        calls this (tests may, to stage a crash).

        Raises:
            IllegalTransitionError: some ``from_states`` -> ``to_state`` is not allowed.
        """
        sources = sorted(set(from_states))
        illegal = [s for s in sources if (s, to_state) not in TRANSITIONS]
        if not sources or illegal:
            raise IllegalTransitionError(f"{illegal or 'nothing'} -> {to_state} is not allowed")
        with self._tx() as conn:
            cursor = conn.execute(
                "UPDATE requests SET state = ?, detail = ?, updated_at = ?, "
                "decided_by = COALESCE(?, decided_by), target_key = COALESCE(?, target_key), "
                "approve_by = COALESCE(?, approve_by), execute_at = COALESCE(?, execute_at), "
                "rule = COALESCE(?, rule) "
                "WHERE id = ? AND state IN (SELECT value FROM json_each(?))",
                (to_state, detail, ts(now), decided_by, target_key,
                 approve_by and ts(approve_by), execute_at and ts(execute_at), rule,
                 request_id, json.dumps(sources)))
            return cursor.rowcount == 1

    def begin_broadcast(self, request_id: str, *, tx_id: str, target_key: str,
                        expiration: datetime, now: datetime) -> int | None:
        """Move the request to ``broadcast`` and log the intent to send ``tx_id``.

        Call it before sending; returns the attempt number, or None (and writes
        nothing) when the request is neither approved nor already broadcast.
        """
        with self._tx() as conn:
            cursor = conn.execute(
                "UPDATE requests SET state = 'broadcast', target_key = ?, updated_at = ? "
                "WHERE id = ? AND state IN ('approved', 'broadcast')",
                (target_key, ts(now), request_id))
            if cursor.rowcount != 1:
                return None
            attempt: int = conn.execute("SELECT COALESCE(MAX(attempt), 0) + 1 FROM broadcasts "
                                        "WHERE request_id = ?", (request_id,)).fetchone()[0]
            conn.execute("INSERT INTO broadcasts VALUES (?, ?, ?, ?, ?, ?, NULL)",
                         (request_id, attempt, tx_id, target_key, ts(expiration), ts(now)))
            return attempt

    def record_broadcast_result(self, request_id: str, attempt: int, result: str) -> None:
        """Note what the node answered (or that the attempt expired) for one attempt."""
        with self._tx() as conn:
            conn.execute("UPDATE broadcasts SET result = ? WHERE request_id = ? AND attempt = ?",
                         (result, request_id, attempt))

    def unresolved_broadcasts(self) -> list[Unresolved]:
        """Return requests left in ``broadcast`` with every transaction sent for them."""
        return [Unresolved(request, tuple(from_row(BroadcastAttempt, a) for a in self._rows(
                    "SELECT * FROM broadcasts WHERE request_id = ? ORDER BY attempt",
                    (request.id,))))
                for request in self.requests_in_state("broadcast")]

    def confirm_switch(self, request_id: str, *, from_key: str, to_key: str, tx_id: str,
                       block_num: int, armed: Armed, now: datetime, detail: str = "") -> bool:
        """Atomically mark the request confirmed, log the switch and re-arm.

        Returns False (and writes nothing) if the request was not in ``broadcast``.
        """
        with self._tx() as conn:
            cursor = conn.execute("UPDATE requests SET state = 'confirmed', detail = ?, "
                                  "updated_at = ? WHERE id = ? AND state = 'broadcast'",
                                  (detail, ts(now), request_id))
            if cursor.rowcount != 1:
                return False
            conn.execute("INSERT INTO switches (at, from_key, to_key, request_id, tx_id, "
                         "block_num) VALUES (?, ?, ?, ?, ?, ?)",
                         (ts(now), from_key, to_key, request_id, tx_id, block_num))
            self._write_armed(conn, armed)
            return True

    def arm_by_operator(self, request_id: str, *, armed: Armed, now: datetime,
                        detail: str) -> bool:
        """Atomically mark an approved ``arm`` request confirmed and write the new baseline.

        Returns False (and writes nothing) if the request was not an approved ``arm``.
        """
        with self._tx() as conn:
            cursor = conn.execute("UPDATE requests SET state = 'confirmed', detail = ?, "
                                  "updated_at = ? WHERE id = ? AND state = 'approved' "
                                  "AND kind = 'arm'", (detail, ts(now), request_id))
            if cursor.rowcount != 1:
                return False
            self._write_armed(conn, armed)
            return True

    def switches(self, since: datetime | None = None) -> list[SwitchRecord]:
        """Return confirmed switches at or after ``since`` (all if None), oldest first."""
        rows = self._rows("SELECT * FROM switches WHERE at >= ? ORDER BY at, id",
                          (ts(since) if since else "",))
        return [from_row(SwitchRecord, r) for r in rows]

    def get_armed(self) -> Armed | None:
        """Return the armed baseline, or None if the signer was never armed."""
        rows = self._rows("SELECT * FROM armed WHERE id = 1")
        return from_row(Armed, rows[0]) if rows else None

    def set_armed(self, armed: Armed) -> None:
        """Replace the armed baseline (an operator's arm, or a confirmed switch)."""
        with self._tx() as conn:
            self._write_armed(conn, armed)

    @staticmethod
    def _write_armed(conn: sqlite3.Connection, armed: Armed) -> None:
        conn.execute("INSERT OR REPLACE INTO armed VALUES (1, ?, ?, ?, ?)",
                     (armed.baseline_missed, armed.armed_key, ts(armed.armed_at),
                      armed.rounds))

    def history(self, since: datetime) -> History | None:
        """Return the policy's :class:`History` with switches since ``since``; None if unarmed."""
        armed = self.get_armed()
        if armed is None:
            return None
        times = tuple(s.at for s in self.switches(since))
        return History(armed.baseline_missed, armed.armed_key, times, armed.rounds,
                       armed.armed_at)

    def audit(self, event: str, actor: str, request_id: str | None = None,
              **data: object) -> int:
        """Append an audit record to SQLite and to ``audit.jsonl``; return its id.

        Raises:
            StoreError: ``data`` is not JSON-serialisable or looks like a secret.
        """
        if request_id is not None and "client_request_id" not in data:
            # One failover, one id end to end: every audit line of a request carries the
            # id its client (the watcher) gave it, next to the signer's own.
            record = self.get(request_id)
            client_id = None if record is None else client_request_id(record.idempotency_key)
            if client_id is not None:
                data = {**data, "client_request_id": client_id}
        payload = audit_payload(event, data)
        with self._lock:
            at = ts(self._clock())
            with self._tx() as conn:
                cursor = conn.execute("INSERT INTO audit (at, actor, event, request_id, data) "
                                      "VALUES (?, ?, ?, ?, ?)",
                                      (at, actor, event, request_id, payload))
                row_id = cursor.lastrowid
            assert row_id is not None
            assert self._audit is not None
            self._audit.append({"id": row_id, "at": at, "actor": actor, "event": event,
                                "request_id": request_id, "data": data})
            return row_id

    def request_audit(self, request_id: str, event: str) -> list[dict[str, Any]]:
        """The audit records of one request with ``event``, oldest first."""
        rows = self._rows("SELECT * FROM audit WHERE request_id = ? AND event = ? ORDER BY id",
                          (request_id, event))
        return [{**dict(r), "data": json.loads(r["data"])} for r in rows]

    def iter_audit(self, after_id: int = 0) -> Iterator[dict[str, Any]]:
        """Yield audit records (from SQLite, the authoritative copy) in order."""
        for r in self._rows("SELECT * FROM audit WHERE id > ? ORDER BY id", (after_id,)):
            yield {**dict(r), "data": json.loads(r["data"])}


def client_request_id(idempotency_key: str) -> str | None:
    """The client's own ``request_id`` inside an idempotency key (``rid:<keyid>:<id>``)."""
    kind, _, rest = idempotency_key.partition(":")
    return rest.partition(":")[2] or None if kind == "rid" else None


class SqliteNonceStore:
    """The request verifier's ``NonceStore``, backed by :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def use(self, keyid: str, nonce: str, created: int, now: int) -> bool:
        """Record a nonce; False if ``keyid`` already used it inside the window."""
        return self._store.use_nonce(keyid, nonce, created, now)
