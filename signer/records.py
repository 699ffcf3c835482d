"""The store's rows as frozen values: requests, broadcast attempts, switches, the armed row."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TypeVar

__all__ = [
    "Armed",
    "BroadcastAttempt",
    "RequestRecord",
    "SwitchRecord",
    "Unresolved",
    "from_row",
]

_T = TypeVar("_T")


@dataclass(frozen=True)
class RequestRecord:
    """One failover request as stored; ``state`` is one of :data:`signer.schema.STATES`."""

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
    rule: str | None = None  # the policy rule of a refusal (signer.policy.Refuse.rule)
    kind: str = "failover"  # or an operator command (signer.schema.KINDS)
    force: int = 0  # 1: the operator overrides the cooldown (never the key list)


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


_TIME_COLUMNS = frozenset({"created_at", "updated_at", "approve_by", "execute_at", "expiration",
                           "sent_at", "at", "armed_at"})


def from_row(cls: type[_T], row: sqlite3.Row) -> _T:
    """Build dataclass ``cls`` from the row's columns of the same names."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = dict(zip(row.keys(), row, strict=True))
    return cls(**{k: datetime.fromisoformat(v) if k in _TIME_COLUMNS and v else v
                  for k, v in values.items() if k in names})
