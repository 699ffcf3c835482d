"""The failover request's life, in one place: its states, its transitions, its HTTP status.

Read top to bottom, this is the state machine (the SQL triggers in
:mod:`signer.schema` repeat it so nothing else can rewrite history)::

    received ──refuse────────────────────────────────▶ refused
        │  ├──hold──▶ pending ──deny───────────────▶ denied
        │  │             ├──expire─────────────────▶ expired
        │  │             └──verdict / veto window──┐
        │  └──approve (auto) ──────────────────────┴▶ approved
        │                                               │  └──refuse (re-decided)──▶ refused
        │                                               ▼
        │                                           broadcast ◀─┐ retry after expiry
        │                                               ├───────┘
        │                                               ├──refuse at retry / fail──▶ failed
        │                                               ▼
        │                                           confirmed
        └──fail (crash before a decision; approved and broadcast can fail too)──▶ failed

An operator's command (``kind`` ``arm``, ``switch``, ``disable``, ``enable``;
a watcher's ask is ``failover``) is recorded ``received`` and at once
``approved`` by that operator (:meth:`Lifecycle.operator_request`); the worker
then decides and sends it like an approved failover. An ``arm`` broadcasts
nothing: it goes ``approved ──arm──▶ confirmed`` with the new baseline
(:meth:`Lifecycle.operator_armed`), the one use of that step.

Every write of a request's state goes through :class:`Lifecycle`; the worker,
the service and the ``witness-signer`` CLI ask it, none of them calls
:meth:`Store.transition`. Each transition writes its audit line in the same
step and wakes whoever waits on the request (:meth:`Lifecycle.wait`). A
refusal keeps its policy rule in a column; :func:`http_status` turns a state
and a rule into the status code, the one place that choice is made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from shared.errors import FailoverError, PolicyError
from signer.policy import (
    Approval,
    ApprovalMode,
    ApprovalStatus,
    FailoverAsk,
    PolicyConfig,
    Refuse,
    Verdict,
    approval_plan,
    resolve_pending,
)
from signer.records import Armed, Unresolved
from signer.schema import FINAL_STATES, IllegalTransitionError
from signer.store import RequestRecord, Store, client_request_id

__all__ = [
    "MIN_PREFIX",
    "OPEN_STATES",
    "RULE_STATUS",
    "STATE_STATUS",
    "VETO_ACTOR",
    "AmbiguousIdError",
    "IllegalTransitionError",
    "Lifecycle",
    "RequestNotFoundError",
    "Swept",
    "approval_of",
    "http_status",
    "is_final",
    "refusal_detail",
    "refusal_rule",
]

log = logging.getLogger(__name__)

VETO_ACTOR = "veto-window"
OPEN_STATES = ("pending", "approved", "broadcast")
# The status of POST /v1/failover by state, and of a refusal by its policy rule
# (signer.policy.decide names them); a rule not listed is 409.
STATE_STATUS: Mapping[str, int] = {
    "received": 202, "pending": 202, "approved": 202, "broadcast": 200, "confirmed": 200,
    "failed": 502, "expired": 409, "denied": 409, "refused": 409}
RULE_STATUS: Mapping[str, int] = {"witness": 403, "forbidden": 403, "rate_limit": 429,
                                  "cooldown": 429}
MIN_PREFIX = 6  # the shortest request id prefix an operator may type


class RequestNotFoundError(FailoverError):
    """No request with that id is visible to the caller (404)."""


class AmbiguousIdError(PolicyError):
    """A request id prefix matches more than one request (409); the message lists them."""


# --- statuses and rules: pure ------------------------------------------------------------


def refusal_rule(refusal: Refuse) -> str:
    """The typed rule stored with a refusal; one the policy left unnamed gets its status' name."""
    if refusal.rule:
        return refusal.rule
    return {403: "forbidden", 429: "rate_limit"}.get(refusal.status, "refused")


def http_status(state: str, rule: str | None = None) -> int:
    """The HTTP status for a request in ``state`` (refused: by its ``rule``)."""
    if state == "refused":
        return RULE_STATUS.get(rule or "", 409)
    return STATE_STATUS.get(state, 200)


def refusal_detail(refusal: Refuse, context: str = "") -> str:
    """The human-readable ``detail`` of a refusal: ``[rule] context: reason``."""
    prefix = f"{context}: " if context else ""
    return f"[{refusal_rule(refusal)}] {prefix}{refusal.reason}"


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


@dataclass(frozen=True)
class Swept:
    """What the passage of time did to one pending request."""

    record: RequestRecord
    outcome: str  # "expired" (manual, too late) or "approved" (veto window over)


class Lifecycle:
    """The only writer of request states; safe to share between threads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._changed = threading.Condition()

    # ---- queries ------------------------------------------------------------------------

    def get(self, request_id: str) -> RequestRecord:
        """The request ``request_id``.

        Raises:
            RequestNotFoundError: no such request.
        """
        record = self.store.get(request_id)
        if record is None:
            raise RequestNotFoundError(f"no request {request_id!r}")
        return record

    def resolve(self, id_or_prefix: str) -> str:
        """The full id of the request ``id_or_prefix`` names (a unique prefix of 6+ characters).

        Raises:
            RequestNotFoundError: no such request, or a prefix under 6 characters.
            AmbiguousIdError: the prefix matches several requests (the message lists them).
        """
        if self.store.get(id_or_prefix) is not None:
            return id_or_prefix
        text = id_or_prefix.lower()
        if len(text) < MIN_PREFIX:
            raise RequestNotFoundError(f"no request {id_or_prefix!r} (a prefix needs at least "
                                       f"{MIN_PREFIX} characters)")
        found = self.store.ids_with_prefix(text)
        if not found:
            raise RequestNotFoundError(f"no request {id_or_prefix!r}")
        if len(found) > 1:
            raise AmbiguousIdError(f"{id_or_prefix!r} matches several requests: "
                                   f"{', '.join(found)}; type more of the id")
        return found[0]

    def open_request(self) -> RequestRecord | None:
        """The request in flight (pending, approved or broadcast), if any."""
        return self.store.open_request(OPEN_STATES)

    def in_state(self, *states: str) -> list[RequestRecord]:
        """Requests in any of ``states``, oldest first."""
        return self.store.requests_in_state(*states)

    def broadcasts(self) -> list[Unresolved]:
        """Requests in ``broadcast`` with every transaction sent for them."""
        return self.store.unresolved_broadcasts()

    def wait(self, request_id: str, done: Callable[[RequestRecord], bool],
             timeout_s: float) -> RequestRecord:
        """Block until ``done(request)`` or ``timeout_s`` passed; return the request then.

        Woken by every transition this process makes; a change made by another
        process (the CLI) is seen at the next one or at the timeout.
        """
        with self._changed:
            self._changed.wait_for(lambda: done(self.get(request_id)), timeout_s)
        return self.get(request_id)

    def _moved(self, request_id: str, from_states: set[str], to_state: str, detail: str,
               now: datetime, *, decided_by: str | None = None, target_key: str | None = None,
               approve_by: datetime | None = None, execute_at: datetime | None = None,
               rule: str | None = None) -> bool:
        moved = self.store.transition(request_id, from_states, to_state, detail, now,
                                      decided_by=decided_by, target_key=target_key,
                                      approve_by=approve_by, execute_at=execute_at, rule=rule)
        if moved:
            self._wake()
        return moved

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # ---- received: a new request --------------------------------------------------------

    def receive(self, *, client_keyid: str, idempotency_key: str, digest: str,
                ask: FailoverAsk, now: datetime, **audit: object) -> tuple[RequestRecord, bool]:
        """Record a new request as ``received``; or the one under that key and False.

        Raises:
            IdempotencyConflictError: the key is known with a different body.
        """
        record, created = self.store.create_request(
            client_keyid=client_keyid, idempotency_key=idempotency_key, body_sha256=digest,
            witness=ask.witness, failing_key=ask.failing_key, target_key=ask.target_key,
            now=now)
        if created:
            self.store.audit("request", client_keyid, record.id, witness=ask.witness,
                             failing_key=ask.failing_key, target_key=ask.target_key,
                             observed_total_missed=ask.observed_total_missed,
                             reason=ask.reason, **audit)
            client_id = client_request_id(idempotency_key)
            log.info("request %s received from %s (its request_id %s): %s", record.id,
                     client_keyid, client_id or "-", ask.reason,
                     extra={"request_id": record.id, "client_request_id": client_id})
            self._wake()
        return record, created

    # ---- received -> refused | pending | approved ---------------------------------------

    def refuse(self, record: RequestRecord, refusal: Refuse, now: datetime, *,
               context: str = "") -> RequestRecord | None:
        """Refuse the request (``failed`` once broadcast); None if it had moved on meanwhile."""
        to_state = "failed" if record.state == "broadcast" else "refused"
        rule = refusal_rule(refusal)
        if not self._moved(record.id, {record.state}, to_state,
                           refusal_detail(refusal, context), now, rule=rule):
            return None
        self.store.audit(to_state, "policy", record.id, rule=refusal.rule,
                         detail=refusal.reason, context=context)
        return self.get(record.id)

    def start_approval(self, record: RequestRecord, policy: PolicyConfig, *,
                       target: str | None, what: str, now: datetime) -> Approval:
        """Move an accepted request to ``approved`` (auto) or ``pending``; return the plan.

        ``target`` is the decided key (None for a disable); ``what`` describes the change.
        """
        plan = approval_plan(policy, now, requested_by=record.client_keyid)
        if plan.mode == "auto":
            self._moved(record.id, {"received"}, "approved", f"auto: {what}", now,
                        target_key=target)
            self.store.audit("approved", "policy", record.id, target_key=target)
        else:
            self._moved(record.id, {"received"}, "pending", f"{plan.mode} approval: {what}",
                        now, target_key=target, approve_by=plan.expires_at,
                        execute_at=plan.execute_at)
            self.store.audit("pending", "policy", record.id, mode=plan.mode, target_key=target)
        return plan

    # ---- an operator's command: received -> approved, by the operator -------------------

    def operator_request(self, *, kind: str, actor: str, idempotency_key: str, digest: str,
                         witness: str, seen_key: str, target_key: str | None, force: bool,
                         now: datetime, note: str = "") -> tuple[RequestRecord, bool]:
        """Record an operator's command, approved by that operator; the worker executes it.

        ``seen_key`` is the on-chain key when the command was given (stored as the
        failing key: the worker refuses if the chain shows another one). Returns the
        request (the one under ``idempotency_key`` and False if it is known).

        Raises:
            IdempotencyConflictError: the key is known with a different body.
            PolicyError: no actor.
        """
        if not actor:
            raise PolicyError("an operator command needs the identity of who gives it")
        record, created = self.store.create_request(
            client_keyid=actor, idempotency_key=idempotency_key, body_sha256=digest,
            witness=witness, failing_key=seen_key, target_key=target_key, now=now, kind=kind,
            force=force)
        if not created:
            return record, False
        self.store.audit("operator_request", actor, record.id, kind=kind, seen_key=seen_key,
                         target_key=target_key, force=force, note=note)
        what = f"{kind}" + (f" -> {target_key}" if target_key else "")
        self._moved(record.id, {"received"}, "approved", f"operator {actor}: {what}", now,
                    decided_by=actor)
        self.store.audit("approved", actor, record.id, kind=kind)
        log.info("operator request %s (%s) by %s", record.id, what, actor)
        return self.get(record.id), True

    def operator_armed(self, record: RequestRecord, armed: Armed, now: datetime) -> bool:
        """Settle an approved ``arm``: the new baseline and ``confirmed``, atomically."""
        if record.kind != "arm" or not self.store.arm_by_operator(
                record.id, armed=armed, now=now,
                detail=f"armed on {armed.armed_key} at total_missed {armed.baseline_missed}"):
            return False
        self.store.audit("armed", record.decided_by or "operator", record.id,
                         baseline_missed=armed.baseline_missed, armed_key=armed.armed_key,
                         why="operator arm")
        self._wake()
        return True

    # ---- pending -> approved | denied | expired -----------------------------------------

    def verdict(self, request_id: str, actor: str, now: datetime, *, verdict: Verdict,
                note: str) -> RequestRecord:
        """An operator's approve or deny of a pending request.

        Raises:
            RequestNotFoundError: no such request.
            ForbiddenError: ``actor`` is the client that asked for the switch.
            PolicyError: no actor, the request is no longer pending, or it expired.
        """
        if not actor:
            raise PolicyError("a verdict needs the identity of who gives it")
        record = self.get(request_id)
        if record.state != "pending":
            raise PolicyError(f"request {request_id} is {record.state}, no longer pending")
        # SECURITY: T1 — resolve_pending refuses a requester approving its own request.
        result = resolve_pending(approval_of(record), now, verdict, by=actor)
        if result.status == "expired":
            if self._moved(record.id, {"pending"}, "expired", "approval window passed", now):
                self.store.audit("expired", actor, record.id, at_verdict=verdict)
            raise PolicyError(f"request {request_id} expired before the {verdict}")
        to_state = "denied" if result.status == "denied" else "approved"
        detail = f"{to_state} by {actor}" + (f": {note}" if note else "")
        if not self._moved(record.id, {"pending"}, to_state, detail, now, decided_by=actor):
            raise PolicyError(f"request {request_id} is {self.get(request_id).state}, "
                              "no longer pending")
        self.store.audit(to_state, actor, record.id, note=note)
        log.info("request %s %s by %s", record.id, to_state, actor)
        return self.get(request_id)

    def sweep(self, now: datetime) -> list[Swept]:
        """Expire manual requests past ``approve_by``; approve veto requests past ``execute_at``."""
        swept: list[Swept] = []
        for record in self.store.list_pending():
            result = resolve_pending(approval_of(record), now)
            if result.status == "expired":
                if self._moved(record.id, {"pending"}, "expired", "approval window passed",
                               now):
                    self.store.audit("expired", "signer", record.id)
                    swept.append(Swept(record, "expired"))
            elif result.status == "due" and self._moved(
                    record.id, {"pending"}, "approved", "veto window passed without a denial",
                    now, decided_by=VETO_ACTOR):
                self.store.audit("approved", VETO_ACTOR, record.id)
                swept.append(Swept(record, "approved"))
        return swept

    # ---- approved -> broadcast -> confirmed ---------------------------------------------

    def begin_broadcast(self, record: RequestRecord, *, tx_id: str, target_key: str,
                        expiration: datetime, operation: str, now: datetime) -> int | None:
        """Log the intent to send ``tx_id`` (state ``broadcast``) BEFORE it is sent.

        Returns the attempt number, or None when the request is neither approved
        nor already broadcast (nothing written, nothing may be sent).
        """
        attempt = self.store.begin_broadcast(record.id, tx_id=tx_id, target_key=target_key,
                                             expiration=expiration, now=now)
        if attempt is not None:
            self.store.audit("broadcast", "signer", record.id, attempt=attempt, tx_id=tx_id,
                             target_key=target_key, operation=operation, expiration=expiration)
            self._wake()
        return attempt

    def broadcast_result(self, record: RequestRecord, attempt: int, result: str) -> None:
        """Note what the node answered for one attempt (the state stays ``broadcast``)."""
        self.store.record_broadcast_result(record.id, attempt, result)

    def expired_unincluded(self, record: RequestRecord, attempt: int, tx_id: str) -> None:
        """Note that an attempt expired without being included."""
        self.store.record_broadcast_result(record.id, attempt, "expired unincluded")
        self.store.audit("tx_expired", "signer", record.id, attempt=attempt, tx_id=tx_id)

    def confirm(self, record: RequestRecord, *, to_key: str, tx_id: str, block_num: int,
                armed: Armed, now: datetime) -> bool:
        """Mark the switch confirmed, log it and re-arm, atomically; False if not broadcast."""
        if not self.store.confirm_switch(record.id, from_key=record.failing_key, to_key=to_key,
                                         tx_id=tx_id, block_num=block_num, armed=armed,
                                         now=now, detail=f"on chain by block {block_num}"):
            return False
        self.store.audit("confirmed", "signer", record.id, from_key=record.failing_key,
                         to_key=to_key, tx_id=tx_id, block_num=block_num,
                         baseline_missed=armed.baseline_missed)
        self._wake()
        return True

    # ---- any open state -> failed -------------------------------------------------------

    def fail(self, request_id: str, why: str, now: datetime, *,
             audit_why: str | None = None) -> bool:
        """Fail a request still received, approved or broadcast; True if it moved."""
        current = self.get(request_id)
        if current.state not in {"received", "approved", "broadcast"}:
            return False
        if not self._moved(request_id, {current.state}, "failed", why, now):
            return False
        self.store.audit("failed", "signer", request_id, why=audit_why or why)
        return True


def is_final(record: RequestRecord) -> bool:
    """Whether the request will never change again."""
    return record.state in FINAL_STATES
