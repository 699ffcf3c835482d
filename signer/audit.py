"""The audit trail's secret guard and its append-only JSONL mirror.

SQLite holds the authoritative audit rows (:class:`signer.store.Store`); this
module decides what may be written at all and keeps ``audit.jsonl`` in step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path

from signer.schema import StoreError, ts

__all__ = ["AuditMirror", "audit_payload", "json_default"]

log = logging.getLogger(__name__)

_SECRET_NAME = re.compile(r"wif|priv|secret|passphrase|password", re.IGNORECASE)
_WIF = re.compile(r"5[HJK][1-9A-HJ-NP-Za-km-z]{49}")
_TAIL_BYTES = 1 << 16


def json_default(value: object) -> str:
    """Serialise the one non-JSON type audit data may hold: an aware datetime."""
    if isinstance(value, datetime):
        return ts(value)
    raise TypeError(type(value).__name__)


def audit_payload(event: str, data: Mapping[str, object]) -> str:
    """The JSON text to store for ``data``, after checking it holds nothing secret.

    Raises:
        StoreError: ``data`` is not JSON-serialisable or looks like a secret.
    """
    try:
        payload = json.dumps(data, sort_keys=True, default=json_default)
    except (TypeError, ValueError) as e:
        raise StoreError(f"audit data for {event!r} is not JSON: {e}") from e
    # SECURITY: T8 — keys never reach the audit trail, even by a caller's mistake.
    if any(_SECRET_NAME.search(k) for k in data) or _WIF.search(payload):
        raise StoreError(f"audit data for {event!r} looks like a secret; not written")
    return payload


class AuditMirror:
    """``audit.jsonl``: one JSON line per audit row, appended and fsynced.

    Takes an fd opened with ``O_APPEND`` (the store checks the file's mode) and owns it.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self._path = path

    def append(self, record: Mapping[str, object]) -> None:
        """Append one line to the mirror and fsync; a failure is logged, SQLite keeps the row."""
        line = (json.dumps(record, sort_keys=True, default=json_default) + "\n").encode()
        try:
            while line:
                line = line[os.write(self._fd, line):]
            os.fsync(self._fd)
        except OSError:
            log.exception("audit mirror write failed; it is resynced from SQLite on restart")

    def resync(self, rows_after: Callable[[int], Iterable[Mapping[str, object]]]) -> None:
        """Append the rows a crash kept from reaching the mirror (T7).

        ``rows_after(id)`` yields the authoritative rows after ``id``. A row another
        process was about to mirror may appear twice; ids tell.

        Raises:
            StoreError: the mirror cannot be read.
        """
        last_id = 0
        try:
            size = os.fstat(self._fd).st_size
            tail = os.pread(self._fd, _TAIL_BYTES, max(0, size - _TAIL_BYTES))
            if tail and not tail.endswith(b"\n"):
                os.write(self._fd, b"\n")  # end a torn line so the next one parses
        except OSError as e:
            raise StoreError(f"cannot read {self._path}: {e.strerror}") from e
        for line in reversed(tail.splitlines()):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                last_id = int(json.loads(line)["id"])
                break
        for record in rows_after(last_id):
            self.append(record)

    def close(self) -> None:
        """Close the file; idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
