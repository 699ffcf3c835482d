"""The state database's schema: its tables, the request state machine and its triggers.

The triggers repeat the store's rules in SQL; :func:`translate` turns the messages
they raise into the store's exceptions, which live here beside them. Timestamps
are stored as ISO 8601 text in UTC (:func:`ts`).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from shared.errors import FailoverError

__all__ = [
    "FINAL_STATES",
    "KINDS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STATES",
    "TRANSITIONS",
    "AppendOnlyError",
    "IllegalTransitionError",
    "StoreError",
    "migrate",
    "translate",
    "ts",
]

# Version 2 added ``requests.rule``: the policy rule that refused a request, typed,
# so the HTTP status never has to be parsed back out of ``detail``. Version 3 added
# ``requests.kind`` (``failover`` or an operator command: ``arm``, ``switch``,
# ``disable``, ``enable``) and ``requests.force`` (an operator's cooldown override).
SCHEMA_VERSION = 3
KINDS = frozenset({"failover", "arm", "switch", "disable", "enable"})
STATES = frozenset({"received", "pending", "approved", "broadcast", "confirmed", "failed",
                    "refused", "expired", "denied"})
FINAL_STATES = frozenset({"confirmed", "failed", "refused", "expired", "denied"})
TRANSITIONS = frozenset({
    ("received", "pending"), ("received", "approved"), ("received", "refused"),
    ("received", "failed"), ("pending", "approved"), ("pending", "denied"),
    ("pending", "expired"), ("approved", "broadcast"), ("approved", "refused"),
    ("approved", "failed"), ("broadcast", "broadcast"), ("broadcast", "confirmed"),
    ("broadcast", "failed"),
    # Only an operator's ``arm`` takes this step (nothing is broadcast); the lifecycle holds it.
    ("approved", "confirmed"),
})

_STATE_LIST = ", ".join(f"'{s}'" for s in sorted(STATES))
_FINAL_LIST = ", ".join(f"'{s}'" for s in sorted(FINAL_STATES))
_TRANSITION_ROWS = ", ".join(f"('{a}', '{b}')" for a, b in sorted(TRANSITIONS))
_APPEND_ONLY = "".join(
    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, 'append-only: {table}'); END;\n"
    for table in ("audit", "switches", "requests") for verb in ("UPDATE", "DELETE")
    if (table, verb) != ("requests", "UPDATE"))
_FINAL_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS requests_final BEFORE UPDATE ON requests "
    f"WHEN OLD.state IN ({_FINAL_LIST}) "
    "BEGIN SELECT RAISE(ABORT, 'illegal: request is final'); END;")
# The triggers repeat the rules in SQL so that the CLI, a bug or a hand-run
# sqlite3 shell cannot rewrite history either.
SCHEMA = f"""
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
  approve_by TEXT, execute_at TEXT, decided_by TEXT, rule TEXT,
  kind TEXT NOT NULL DEFAULT 'failover', force INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS requests_state ON requests (state);
{_FINAL_TRIGGER}
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


class StoreError(FailoverError):
    """The state database or the audit file cannot be opened, read or written."""


class IllegalTransitionError(StoreError):
    """The request state machine does not allow this change."""


class AppendOnlyError(StoreError):
    """Something tried to change or delete an append-only record."""


def ts(when: datetime) -> str:
    """The stored form of an aware ``when``: microsecond ISO 8601 in UTC.

    Raises:
        StoreError: ``when`` is naive.
    """
    if when.tzinfo is None:
        raise StoreError("naive datetime: the store keeps UTC timestamps only")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def migrate(conn: sqlite3.Connection, version: int) -> int:
    """Bring a database of an older ``version`` up to :data:`SCHEMA_VERSION`; return the new one.

    Runs inside the caller's transaction. Unknown (newer) versions are left alone:
    the store refuses them.
    """
    if version == 1:
        # The final-state trigger forbids any UPDATE of a refused row: lift it for the
        # one-time backfill of the rule from the old "[rule] reason" detail, then restore.
        conn.execute("DROP TRIGGER IF EXISTS requests_final")
        conn.execute("ALTER TABLE requests ADD COLUMN rule TEXT")
        conn.execute("UPDATE requests SET rule = substr(detail, 2, instr(detail, ']') - 2) "
                     "WHERE state = 'refused' AND detail LIKE '[%] %'")
        conn.execute(_FINAL_TRIGGER)
        conn.execute("UPDATE schema_version SET version = 2")
        version = 2
    if version == 2:
        # ADD COLUMN writes no row: the final-state trigger is not involved.
        have = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
        for column, ddl in (("kind", "kind TEXT NOT NULL DEFAULT 'failover'"),
                            ("force", "force INTEGER NOT NULL DEFAULT 0")):
            if column not in have:
                conn.execute(f"ALTER TABLE requests ADD COLUMN {ddl}")
        conn.execute("UPDATE schema_version SET version = 3")
        version = 3
    return version


def translate(e: sqlite3.Error) -> StoreError:
    """The store exception for a sqlite3 error, by the message a trigger raised."""
    message = str(e)
    if message.startswith("append-only"):
        return AppendOnlyError(message)
    if message.startswith("illegal"):
        return IllegalTransitionError(message)
    return StoreError(f"state database: {message}")
