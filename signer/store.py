"""The signer's durable state: one SQLite file (WAL) and an append-only audit mirror.

Nothing secret is ever written here: only account names, public keys, client
key ids, nonces, body hashes, transaction ids and block numbers. :meth:`Store.audit`
refuses data that looks like a private key or names a secret.

One connection serialised by a lock serves all threads (gunicorn runs one
process with threads); every write is one ``BEGIN IMMEDIATE`` transaction, so
the signer CLI can work on the same file from another process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from shared.errors import ConfigError, FailoverError, PolicyError
from signer.policy import History

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATES = frozenset({"received", "pending", "approved", "broadcast", "confirmed", "failed",
                    "refused", "expired", "denied"})
FINAL_STATES = frozenset({"confirmed", "failed", "refused", "expired", "denied"})
TRANSITIONS = frozenset({
    ("received", "pending"), ("received", "approved"), ("received", "refused"),
    ("received", "failed"), ("pending", "approved"), ("pending", "denied"),
    ("pending", "expired"), ("approved", "broadcast"), ("approved", "refused"),
    ("approved", "failed"), ("broadcast", "broadcast"), ("broadcast", "confirmed"),
    ("broadcast", "failed"),
})

_STATE_LIST = ", ".join(f"'{s}'" for s in sorted(STATES))
_FINAL_LIST = ", ".join(f"'{s}'" for s in sorted(FINAL_STATES))
_TRANSITION_ROWS = ", ".join(f"('{a}', '{b}')" for a, b in sorted(TRANSITIONS))
_APPEND_ONLY = "".join(
    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, 'append-only: {table}'); END;\n"
    for table in ("audit", "switches", "requests") for verb in ("UPDATE", "DELETE")
    if (table, verb) != ("requests", "UPDATE"))
# The triggers repeat the rules in SQL so that the CLI, a bug or a hand-run
# sqlite3 shell cannot rewrite history either.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT 1 FROM schema_version);
CREATE TABLE IF NOT EXISTS nonces (keyid TEXT NOT NULL, nonce TEXT NOT NULL,
  created INTEGER NOT NULL, seen_at INTEGER NOT NULL, PRIMARY KEY (keyid, nonce)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_created ON nonces (created);
CREATE TABLE IF NOT EXISTS transitions (from_state TEXT NOT NULL, to_state TEXT NOT NULL,
  PRIMARY KEY (from_state, to_state)) WITHOUT ROWID;
INSERT OR IGNORE INTO transitions VALUES {_TRANSITION_ROWS};
CREATE TABLE IF NOT EXISTS requests (id TEXT PRIMARY KEY, client_keyid TEXT NOT NULL,
  idempotency_key TEXT NOT NULL UNIQUE, body_sha256 TEXT NOT NULL, witness TEXT NOT NULL,
  failing_key TEXT NOT NULL, target_key TEXT, state TEXT NOT NULL CHECK (state IN ({_STATE_LIST})),
  detail TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
  approve_by TEXT, execute_at TEXT, decided_by TEXT);
CREATE INDEX IF NOT EXISTS requests_state ON requests (state);
CREATE TRIGGER IF NOT EXISTS requests_final BEFORE UPDATE ON requests
  WHEN OLD.state IN ({_FINAL_LIST}) BEGIN SELECT RAISE(ABORT, 'illegal: request is final'); END;
CREATE TRIGGER IF NOT EXISTS requests_transition BEFORE UPDATE OF state ON requests
  WHEN NOT EXISTS (SELECT 1 FROM transitions WHERE from_state = OLD.state AND to_state = NEW.state)
  BEGIN SELECT RAISE(ABORT, 'illegal: state transition'); END;
CREATE TABLE IF NOT EXISTS broadcasts (request_id TEXT NOT NULL REFERENCES requests (id),
  attempt INTEGER NOT NULL, tx_id TEXT NOT NULL, target_key TEXT NOT NULL,
  expiration TEXT NOT NULL, sent_at TEXT NOT NULL, result TEXT,
  PRIMARY KEY (request_id, attempt));
CREATE TABLE IF NOT EXISTS switches (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
  from_key TEXT NOT NULL, to_key TEXT NOT NULL, request_id TEXT REFERENCES requests (id),
  tx_id TEXT, block_num INTEGER);
CREATE INDEX IF NOT EXISTS switches_at ON switches (at);
CREATE TABLE IF NOT EXISTS armed (id INTEGER PRIMARY KEY CHECK (id = 1),
  baseline_missed INTEGER NOT NULL, armed_key TEXT NOT NULL, armed_at TEXT NOT NULL,
  rounds INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
  actor TEXT NOT NULL, event TEXT NOT NULL, request_id TEXT, data TEXT NOT NULL);
{_APPEND_ONLY}"""  # noqa: S608 -- only module constants are interpolated
_SECRET_NAME = re.compile(r"wif|priv|secret|passphrase|password", re.IGNORECASE)
_WIF = re.compile(r"5[HJK][1-9A-HJ-NP-Za-km-z]{49}")
_TAIL_BYTES = 1 << 16
_T = TypeVar("_T")


class StoreError(FailoverError):
    """The state database or the audit file cannot be opened, read or written."""


class IllegalTransitionError(StoreError):
    """The request state machine does not allow this change."""


class AppendOnlyError(StoreError):
    """Something tried to change or delete an append-only record."""


class IdempotencyConflictError(PolicyError):
    """The same idempotency key came back with a different body (409)."""


@dataclass(frozen=True)
class RequestRecord:
    """One failover request as stored; ``state`` is one of :data:`STATES`."""

    id: str
    client_keyid: str
    idempotency_key: str
    body_sha256: str
    witness: str
    failing_key: str
    target_key: str | None
    state: str
    detail: str
    created_at: datetime
    updated_at: datetime
    approve_by: datetime | None
    execute_at: datetime | None
    decided_by: str | None


@dataclass(frozen=True)
class BroadcastAttempt:
    """One transaction the signer meant to send; written before it was sent."""

    request_id: str
    attempt: int
    tx_id: str
    target_key: str
    expiration: datetime
    sent_at: datetime
    result: str | None


@dataclass(frozen=True)
class Unresolved:
    """A request left in ``broadcast``: reconcile it from the chain, never by switching again."""

    request: RequestRecord
    attempts: tuple[BroadcastAttempt, ...]


@dataclass(frozen=True)
class SwitchRecord:
    """A key change the signer confirmed on chain."""

    at: datetime
    from_key: str
    to_key: str
    request_id: str | None
    tx_id: str | None
    block_num: int | None


@dataclass(frozen=True)
class Armed:
    """The baseline the policy counts new misses from, and the rotation round."""

    baseline_missed: int
    armed_key: str
    armed_at: datetime
    rounds: int


def _ts(when: datetime) -> str:
    if when.tzinfo is None:
        raise StoreError("naive datetime: the store keeps UTC timestamps only")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


_TIME_COLUMNS = frozenset({"created_at", "updated_at", "approve_by", "execute_at", "expiration",
                           "sent_at", "at", "armed_at"})


def _record(cls: type[_T], row: sqlite3.Row) -> _T:
    """Build dataclass ``cls`` from the row's columns of the same names."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = dict(zip(row.keys(), row, strict=True))
    return cls(**{k: datetime.fromisoformat(v) if k in _TIME_COLUMNS and v else v
                  for k, v in values.items() if k in names})


def _translate(e: sqlite3.Error) -> StoreError:
    message = str(e)
    if message.startswith("append-only"):
        return AppendOnlyError(message)
    if message.startswith("illegal"):
        return IllegalTransitionError(message)
    return StoreError(f"state database: {message}")


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return _ts(value)
    raise TypeError(type(value).__name__)


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
        self._audit_fd = -1
        try:
            self._prepare(db_path)
            self._audit_path = audit_path or directory / "audit.jsonl"
            self._audit_fd = _open_private(self._audit_path, os.O_RDWR | os.O_APPEND)
            self._resync_audit_mirror()
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
            self._conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
            version = self._conn.execute("SELECT version FROM schema_version").fetchone()[0]
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the state database {db_path}: {e}") from e
        if mode != "wal" or version != SCHEMA_VERSION:
            raise StoreError(f"{db_path}: journal {mode}, schema {version}; "
                             f"expected wal, schema {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database and the audit file."""
        with self._lock:
            self._conn.close()
            if self._audit_fd >= 0:
                os.close(self._audit_fd)
                self._audit_fd = -1

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
                raise _translate(e) from e

    def _rows(self, sql: str, params: Iterable[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as e:
                raise _translate(e) from e

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
                       now: datetime) -> tuple[RequestRecord, bool]:
        """Insert a request in state ``received``; or return the one with that key and False.

        Raises:
            IdempotencyConflictError: the key is known with a different body.
        """
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM requests WHERE idempotency_key = ?",
                               (idempotency_key,)).fetchone()
            if row is not None:
                if row["body_sha256"] != body_sha256:
                    raise IdempotencyConflictError("request id reused with a different body")
                return _record(RequestRecord, row), False
            request_id = uuid.uuid4().hex
            conn.execute("INSERT INTO requests (id, client_keyid, idempotency_key, body_sha256, "
                         "witness, failing_key, target_key, state, created_at, updated_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, 'received', ?, ?)",
                         (request_id, client_keyid, idempotency_key, body_sha256, witness,
                          failing_key, target_key, _ts(now), _ts(now)))
        record = self.get(request_id)
        assert record is not None
        return record, True

    def get(self, request_id: str) -> RequestRecord | None:
        """Return the request ``request_id``, or None."""
        return next(iter(self._requests("id = ?", request_id)), None)

    def find_by_idempotency_key(self, idempotency_key: str) -> RequestRecord | None:
        """Return the request stored under ``idempotency_key``, or None."""
        return next(iter(self._requests("idempotency_key = ?", idempotency_key)), None)

    def list_pending(self) -> list[RequestRecord]:
        """Return the requests waiting for approval, oldest first."""
        return self._requests("state = 'pending'")

    def _requests(self, where: str, *params: object) -> list[RequestRecord]:
        rows = self._rows(f"SELECT * FROM requests WHERE {where} "  # noqa: S608 -- callers pass constants
                          "ORDER BY created_at, id", params)
        return [_record(RequestRecord, r) for r in rows]

    def transition(self, request_id: str, from_states: Iterable[str], to_state: str,
                   detail: str, now: datetime, *, decided_by: str | None = None,
                   target_key: str | None = None, approve_by: datetime | None = None,
                   execute_at: datetime | None = None) -> bool:
        """Move the request to ``to_state`` if it is in ``from_states``; True if it moved.

        Fields given as None keep their stored value.

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
                "approve_by = COALESCE(?, approve_by), execute_at = COALESCE(?, execute_at) "
                "WHERE id = ? AND state IN (SELECT value FROM json_each(?))",
                (to_state, detail, _ts(now), decided_by, target_key,
                 approve_by and _ts(approve_by), execute_at and _ts(execute_at),
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
                (target_key, _ts(now), request_id))
            if cursor.rowcount != 1:
                return None
            attempt: int = conn.execute("SELECT COALESCE(MAX(attempt), 0) + 1 FROM broadcasts "
                                        "WHERE request_id = ?", (request_id,)).fetchone()[0]
            conn.execute("INSERT INTO broadcasts VALUES (?, ?, ?, ?, ?, ?, NULL)",
                         (request_id, attempt, tx_id, target_key, _ts(expiration), _ts(now)))
            return attempt

    def record_broadcast_result(self, request_id: str, attempt: int, result: str) -> None:
        """Note what the node answered (or that the attempt expired) for one attempt."""
        with self._tx() as conn:
            conn.execute("UPDATE broadcasts SET result = ? WHERE request_id = ? AND attempt = ?",
                         (result, request_id, attempt))

    def unresolved_broadcasts(self) -> list[Unresolved]:
        """Return requests left in ``broadcast`` with every transaction sent for them."""
        return [Unresolved(request, tuple(_record(BroadcastAttempt, a) for a in self._rows(
                    "SELECT * FROM broadcasts WHERE request_id = ? ORDER BY attempt",
                    (request.id,))))
                for request in self._requests("state = 'broadcast'")]

    def confirm_switch(self, request_id: str, *, from_key: str, to_key: str, tx_id: str,
                       block_num: int, armed: Armed, now: datetime, detail: str = "") -> bool:
        """Atomically mark the request confirmed, log the switch and re-arm.

        Returns False (and writes nothing) if the request was not in ``broadcast``.
        """
        with self._tx() as conn:
            cursor = conn.execute("UPDATE requests SET state = 'confirmed', detail = ?, "
                                  "updated_at = ? WHERE id = ? AND state = 'broadcast'",
                                  (detail, _ts(now), request_id))
            if cursor.rowcount != 1:
                return False
            conn.execute("INSERT INTO switches (at, from_key, to_key, request_id, tx_id, "
                         "block_num) VALUES (?, ?, ?, ?, ?, ?)",
                         (_ts(now), from_key, to_key, request_id, tx_id, block_num))
            self._write_armed(conn, armed)
            return True

    def switches(self, since: datetime | None = None) -> list[SwitchRecord]:
        """Return confirmed switches at or after ``since`` (all if None), oldest first."""
        rows = self._rows("SELECT * FROM switches WHERE at >= ? ORDER BY at, id",
                          (_ts(since) if since else "",))
        return [_record(SwitchRecord, r) for r in rows]

    def get_armed(self) -> Armed | None:
        """Return the armed baseline, or None if the signer was never armed."""
        rows = self._rows("SELECT * FROM armed WHERE id = 1")
        return _record(Armed, rows[0]) if rows else None

    def set_armed(self, armed: Armed) -> None:
        """Replace the armed baseline (an operator's arm, or a confirmed switch)."""
        with self._tx() as conn:
            self._write_armed(conn, armed)

    @staticmethod
    def _write_armed(conn: sqlite3.Connection, armed: Armed) -> None:
        conn.execute("INSERT OR REPLACE INTO armed VALUES (1, ?, ?, ?, ?)",
                     (armed.baseline_missed, armed.armed_key, _ts(armed.armed_at),
                      armed.rounds))

    def history(self, since: datetime) -> History | None:
        """Return the policy's :class:`History` with switches since ``since``; None if unarmed."""
        armed = self.get_armed()
        if armed is None:
            return None
        times = tuple(s.at for s in self.switches(since))
        return History(armed.baseline_missed, armed.armed_key, times, armed.rounds)

    def audit(self, event: str, actor: str, request_id: str | None = None,
              **data: object) -> int:
        """Append an audit record to SQLite and to ``audit.jsonl``; return its id.

        Raises:
            StoreError: ``data`` is not JSON-serialisable or looks like a secret.
        """
        try:
            payload = json.dumps(data, sort_keys=True, default=_json_default)
        except (TypeError, ValueError) as e:
            raise StoreError(f"audit data for {event!r} is not JSON: {e}") from e
        # SECURITY: T8 — keys never reach the audit trail, even by a caller's mistake.
        if any(_SECRET_NAME.search(k) for k in data) or _WIF.search(payload):
            raise StoreError(f"audit data for {event!r} looks like a secret; not written")
        with self._lock:
            at = _ts(self._clock())
            with self._tx() as conn:
                cursor = conn.execute("INSERT INTO audit (at, actor, event, request_id, data) "
                                      "VALUES (?, ?, ?, ?, ?)",
                                      (at, actor, event, request_id, payload))
                row_id = cursor.lastrowid
            assert row_id is not None
            self._mirror({"id": row_id, "at": at, "actor": actor, "event": event,
                          "request_id": request_id, "data": data})
            return row_id

    def iter_audit(self, after_id: int = 0) -> Iterator[dict[str, Any]]:
        """Yield audit records (from SQLite, the authoritative copy) in order."""
        for r in self._rows("SELECT * FROM audit WHERE id > ? ORDER BY id", (after_id,)):
            yield {**dict(r), "data": json.loads(r["data"])}

    def _mirror(self, record: Mapping[str, object]) -> None:
        """Append one line to the mirror and fsync; a failure is logged, SQLite keeps the row."""
        line = (json.dumps(record, sort_keys=True, default=_json_default) + "\n").encode()
        try:
            while line:
                line = line[os.write(self._audit_fd, line):]
            os.fsync(self._audit_fd)
        except OSError:
            log.exception("audit mirror write failed; it is resynced from SQLite on restart")

    def _resync_audit_mirror(self) -> None:
        """Append to ``audit.jsonl`` the rows a crash kept from reaching it (T7).

        A row another process was about to mirror may appear twice; ids tell.
        """
        last_id = 0
        try:
            size = os.fstat(self._audit_fd).st_size
            tail = os.pread(self._audit_fd, _TAIL_BYTES, max(0, size - _TAIL_BYTES))
            if tail and not tail.endswith(b"\n"):
                os.write(self._audit_fd, b"\n")  # end a torn line so the next one parses
        except OSError as e:
            raise StoreError(f"cannot read {self._audit_path}: {e.strerror}") from e
        for line in reversed(tail.splitlines()):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                last_id = int(json.loads(line)["id"])
                break
        for record in self.iter_audit(after_id=last_id):
            self._mirror(record)


class SqliteNonceStore:
    """The request verifier's ``NonceStore``, backed by :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def use(self, keyid: str, nonce: str, created: int, now: int) -> bool:
        """Record a nonce; False if ``keyid`` already used it inside the window."""
        return self._store.use_nonce(keyid, nonce, created, now)
