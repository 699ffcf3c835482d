"""Failover requests from arrival to verdict: the body schema, operator verdicts, time.

Shared by the HTTP service, the worker and the ``witness-signer`` CLI. The body
schema is applied only to bytes whose signature already verified. Operator
verdicts (:func:`approve_request`, :func:`deny_request`) and the
passage of time (:func:`sweep_pending`) act on the SQLite state only: no chain,
no key, no HTTP. The CLI calls them on the same state file the running signer
uses; the signer's worker then executes what was approved, after re-reading
the chain and re-running the policy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from shared.errors import FailoverError, PolicyError, RequestInvalidError
from signer.policy import (
    Approval,
    ApprovalMode,
    ApprovalStatus,
    Decision,
    FailoverAsk,
    PolicyConfig,
    Refuse,
    Switch,
    Verdict,
    approval_plan,
    resolve_pending,
)
from signer.store import RequestRecord, Store

log = logging.getLogger(__name__)

VETO_ACTOR = "veto-window"
_RULE = re.compile(r"\[([a-z_]+)\] ")
# HTTP status of a refusal, by the policy rule that refused it (signer.policy.decide).
_RULE_STATUS = {"witness": 403, "rate_limit": 429, "cooldown": 429}
_STATE_STATUS = {"confirmed": 200, "broadcast": 200, "pending": 202, "approved": 202,
                 "received": 202, "failed": 502, "expired": 409, "denied": 409}


class RequestNotFoundError(FailoverError):
    """No request with that id is visible to the caller (404)."""


# --- the request body -------------------------------------------------------------------

_FIELDS = frozenset({"witness", "failing_key", "observed_total_missed", "reason", "target_key",
                     "dry_run", "request_id"})
_REQUIRED = ("witness", "failing_key", "observed_total_missed", "reason")
_ACCOUNT = re.compile(r"[a-z][a-z0-9.-]{2,15}")
_PUBLIC_KEY = re.compile(r"STM[1-9A-HJ-NP-Za-km-z]{30,60}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# SECURITY: T8 — the audit store refuses WIF-like text; refuse it here, as bad input (422).
_WIF_LIKE = re.compile(r"5[HJK][1-9A-HJ-NP-Za-km-z]{49}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REASON_MAX = 200
_MAX_INT = 2**63 - 1


def _invalid(message: str) -> NoReturn:
    raise RequestInvalidError(message, status=422)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        # SECURITY: parsers disagree on which duplicate wins; refuse the ambiguity.
        _invalid("duplicate field")
    return doc


def _no_constant(name: str) -> NoReturn:
    _invalid(f"{name} is not JSON")


def parse_json_object(body: bytes) -> dict[str, object]:
    """Parse a verified body as one strict JSON object (UTF-8, no duplicates, no NaN).

    Raises:
        RequestInvalidError: not such an object (422).
    """
    try:
        doc = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RequestInvalidError("the body is not one valid JSON document", status=422) from e
    if not isinstance(doc, dict):
        _invalid("the body must be a JSON object")
    return doc


def _text(doc: dict[str, object], name: str, pattern: re.Pattern[str]) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        _invalid(f"{name} is missing or malformed")
    return value


@dataclass(frozen=True)
class FailoverRequest:
    """A schema-checked failover body: the policy's question plus the idempotency data."""

    ask: FailoverAsk
    request_id: str | None
    digest: str  # sha-256 of the canonical body: a retried request_id must match it

    def idempotency_key(self, keyid: str, nonce: str) -> str:
        """The client's ``request_id`` if given, else the (single-use) nonce, per keyid."""
        if self.request_id is not None:
            return f"rid:{keyid}:{self.request_id}"
        return f"nonce:{keyid}:{nonce}"


def parse_failover(body: bytes) -> FailoverRequest:
    """Check a verified ``POST /v1/failover`` body against the schema; unknown fields refused.

    Raises:
        RequestInvalidError: any schema violation (422).
    """
    doc = parse_json_object(body)
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        _invalid(f"unknown field {unknown[0][:40]!r}")
    missing = [name for name in _REQUIRED if name not in doc]
    if missing:
        _invalid(f"missing field {missing[0]!r}")
    witness = _text(doc, "witness", _ACCOUNT)
    failing_key = _text(doc, "failing_key", _PUBLIC_KEY)
    missed = doc["observed_total_missed"]
    if isinstance(missed, bool) or not isinstance(missed, int) or not 0 <= missed <= _MAX_INT:
        _invalid("observed_total_missed must be an integer >= 0")
    reason = doc["reason"]
    if not isinstance(reason, str) or len(reason) > _REASON_MAX or _CONTROL.search(reason):
        _invalid(f"reason must be a string of at most {_REASON_MAX} printable characters")
    if _WIF_LIKE.search(reason):
        _invalid("reason looks like it contains a private key")
    target = None if doc.get("target_key") is None else _text(doc, "target_key", _PUBLIC_KEY)
    dry_run = doc.get("dry_run", False)
    if not isinstance(dry_run, bool):
        _invalid("dry_run must be true or false")
    request_id = None if doc.get("request_id") is None else _text(doc, "request_id",
                                                                 _REQUEST_ID)
    ask = FailoverAsk(witness, failing_key, missed, reason, target, dry_run)
    canonical = json.dumps({**doc, "dry_run": dry_run, "target_key": target}, sort_keys=True)
    return FailoverRequest(ask, request_id, hashlib.sha256(canonical.encode()).hexdigest())


def parse_verdict(body: bytes) -> str:
    """The optional operator note of an approve/deny body: empty, or ``{"note": "..."}``.

    Raises:
        RequestInvalidError: anything else (422).
    """
    if not body.strip():
        return ""
    doc = parse_json_object(body)
    if set(doc) - {"note"}:
        _invalid("only a note may accompany a verdict")
    return _checked_note(doc.get("note", ""))


def _checked_note(note: object) -> str:
    if not isinstance(note, str) or len(note) > _REASON_MAX or _CONTROL.search(note) or (
            _WIF_LIKE.search(note)):
        _invalid(f"note must be a string of at most {_REASON_MAX} printable characters")
    return note


# --- refusals and verdicts -----------------------------------------------------------------


def refusal_detail(refusal: Refuse, context: str = "") -> str:
    """The stored ``detail`` of a refused request: ``[rule] reason``; the rule gives the status."""
    rule = refusal.rule or ("forbidden" if refusal.status == 403 else "refused")
    if refusal.status == 429 and rule not in _RULE_STATUS:
        rule = "rate_limit"
    prefix = f"{context}: " if context else ""
    return f"[{rule}] {prefix}{refusal.reason}"


def failover_status(record: RequestRecord) -> int:
    """The HTTP status ``POST /v1/failover`` answers with for a request in this state."""
    if record.state == "refused":
        found = _RULE.match(record.detail)
        return _RULE_STATUS.get(found.group(1), 409) if found else 409
    return _STATE_STATUS.get(record.state, 200)


def describe_request(store: Store, record: RequestRecord) -> dict[str, object]:
    """The JSON answer describing one request (ids, state, key, tx, deadlines, detail)."""
    body: dict[str, object] = {
        "request_id": record.id, "state": record.state, "target_key": record.target_key,
        "failing_key": record.failing_key, "tx_id": None, "block_num": None,
        "created_at": record.created_at.isoformat(), "updated_at": record.updated_at.isoformat(),
    }
    for name, value in (("approve_by", record.approve_by), ("execute_at", record.execute_at),
                        ("decided_by", record.decided_by), ("detail", record.detail)):
        if value:
            body[name] = value.isoformat() if isinstance(value, datetime) else value
    if record.state == "confirmed":
        for switch in store.switches(record.created_at):
            if switch.request_id == record.id:
                body.update(tx_id=switch.tx_id, block_num=switch.block_num)
    elif record.state == "broadcast":
        for item in store.unresolved_broadcasts():
            if item.request.id == record.id and item.attempts:
                body["tx_id"] = item.attempts[-1].tx_id
    return body


def approval_of(record: RequestRecord) -> Approval:
    """The approval state of a stored request (manual requests carry ``approve_by``)."""
    status: ApprovalStatus = "pending" if record.state == "pending" else (
        "approved" if record.state in {"approved", "broadcast", "confirmed"} else
        "denied" if record.state == "denied" else "expired")
    # A pending row with neither deadline cannot come from this code; treating it
    # as manual without a deadline makes it expire, the safe direction.
    mode: ApprovalMode = "veto" if record.execute_at is not None and (
        record.approve_by is None) else "manual"
    return Approval(mode, status, record.client_keyid, expires_at=record.approve_by,
                    execute_at=record.execute_at, decided_by=record.decided_by)


def _load(store: Store, request_id: str) -> RequestRecord:
    record = store.get(request_id)
    if record is None:
        raise RequestNotFoundError(f"no request {request_id!r}")
    return record


def _verdict(store: Store, request_id: str, actor: str, now: datetime, *,
             verdict: Verdict, note: str) -> RequestRecord:
    if not actor:
        raise PolicyError("a verdict needs the identity of who gives it")
    note = _checked_note(note)  # before any change: the audit line must not be refused after
    record = _load(store, request_id)
    if record.state != "pending":
        raise PolicyError(f"request {request_id} is {record.state}, no longer pending")
    # SECURITY: T1 — resolve_pending refuses a requester approving its own request.
    result = resolve_pending(approval_of(record), now, verdict, by=actor)
    if result.status == "expired":
        if store.transition(record.id, {"pending"}, "expired", "approval window passed", now):
            store.audit("expired", actor, record.id, at_verdict=verdict)
        raise PolicyError(f"request {request_id} expired before the {verdict}")
    to_state = "denied" if result.status == "denied" else "approved"
    detail = f"{to_state} by {actor}" + (f": {note}" if note else "")
    if not store.transition(record.id, {"pending"}, to_state, detail, now, decided_by=actor):
        current = _load(store, request_id)
        raise PolicyError(f"request {request_id} is {current.state}, no longer pending")
    store.audit(to_state, actor, record.id, note=note)
    log.info("request %s %s by %s", record.id, to_state, actor)
    return _load(store, request_id)


def approve_request(store: Store, request_id: str, actor: str, now: datetime,
                    note: str = "") -> RequestRecord:
    """Approve a pending request (manual, or a veto request early); the signer executes it.

    Raises:
        RequestNotFoundError: no such request.
        ForbiddenError: ``actor`` is the client that asked for the switch.
        PolicyError: the request is no longer pending, or its approval window passed.
        RequestInvalidError: the note is too long or looks like a secret.
    """
    return _verdict(store, request_id, actor, now, verdict="approve", note=note)


def deny_request(store: Store, request_id: str, actor: str, now: datetime,
                 note: str = "") -> RequestRecord:
    """Deny a pending request: it will never be executed.

    Raises:
        RequestNotFoundError: no such request.
        PolicyError: the request is no longer pending.
        RequestInvalidError: the note is too long or looks like a secret.
    """
    return _verdict(store, request_id, actor, now, verdict="deny", note=note)


def start_approval(store: Store, policy: PolicyConfig, record: RequestRecord, *,
                   target: str | None, what: str, now: datetime) -> Approval:
    """Move a request the policy accepted to ``approved`` (auto) or ``pending``; return the plan.

    ``target`` is the decided key (None for a disable); ``what`` describes the change.
    """
    plan = approval_plan(policy, now, requested_by=record.client_keyid)
    if plan.mode == "auto":
        store.transition(record.id, {"received"}, "approved", f"auto: {what}", now,
                         target_key=target)
        store.audit("approved", "policy", record.id, target_key=target)
    else:
        store.transition(record.id, {"received"}, "pending", f"{plan.mode} approval: {what}",
                         now, target_key=target, approve_by=plan.expires_at,
                         execute_at=plan.execute_at)
        store.audit("pending", "policy", record.id, mode=plan.mode, target_key=target)
    return plan


def pending_notice(witness: str, request_id: str, what: str, plan: Approval) -> str:
    """The text telling an operator that a request waits for a verdict, and until when."""
    when = (f"approve before {plan.expires_at:%H:%M:%S}Z" if plan.mode == "manual"
            else f"executes at {plan.execute_at:%H:%M:%S}Z unless denied")
    return (f"{witness}: failover {what} needs an operator: request {request_id}, {when} "
            "(witness-signer approve/deny)")


def dry_run_answer(decision: Decision, ask: FailoverAsk, approval: str
                   ) -> tuple[int, dict[str, object]]:
    """The (status, body) of a dry run: what a real request would get, nothing stored.

    A refusal keeps its status (409/429/403); a would-be switch or disable is 200.
    """
    body: dict[str, object] = {"request_id": None, "state": "dry_run", "dry_run": True,
                               "approval": approval, "failing_key": ask.failing_key,
                               "target_key": None}
    if isinstance(decision, Refuse):
        body.update(decision="refuse", detail=refusal_detail(decision))
        return decision.status, body
    if isinstance(decision, Switch):
        body.update(decision="switch", target_key=decision.target_key, detail=decision.reason)
    else:
        body.update(decision="disable", detail=decision.reason)
    return 200, body


@dataclass(frozen=True)
class Swept:
    """What the passage of time did to one pending request."""

    record: RequestRecord
    outcome: str  # "expired" (manual, too late) or "approved" (veto window over)


def sweep_pending(store: Store, now: datetime) -> list[Swept]:
    """Expire manual requests past ``approve_by``; approve veto requests past ``execute_at``."""
    swept: list[Swept] = []
    for record in store.list_pending():
        result = resolve_pending(approval_of(record), now)
        if result.status == "expired":
            if store.transition(record.id, {"pending"}, "expired", "approval window passed",
                                now):
                store.audit("expired", "signer", record.id)
                swept.append(Swept(record, "expired"))
        elif result.status == "due" and store.transition(
                record.id, {"pending"}, "approved", "veto window passed without a denial",
                now, decided_by=VETO_ACTOR):
            store.audit("approved", VETO_ACTOR, record.id)
            swept.append(Swept(record, "approved"))
    return swept
