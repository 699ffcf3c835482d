"""Deciding, executing and confirming requests: what the worker does, one step at a time.

Each decision reads the chain once (:meth:`SignerChain.read_witness`) and is made
once on that reading (and on one probe snapshot of the producer nodes, taken
meanwhile: :meth:`Executor.read_with_health`); the transaction is built from the
same reading, so its url, props and TaPoS are the ones the decision saw. A request
that waited (manual or veto approval) is decided again when it is executed, on a
fresh reading and fresh probes: a new decision, made once. Nothing is stored
pre-signed. The intent to send is written before the send
(:meth:`Lifecycle.begin_broadcast`), so a crash leaves a ``broadcast`` row that
:meth:`Executor.reconcile` settles from the chain, never by switching again (T7).
Request states change only through :mod:`signer.lifecycle`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from shared.chaindata import DynamicProps
from shared.chains import NULL_KEY
from shared.clock import Clock
from shared.errors import (
    BroadcastError,
    ChainError,
    KeystoreError,
    PolicyError,
)
from shared.notify import Notifier
from signer.confirmation import Confirmer
from signer.failpoints import Failpoints
from signer.health import HealthSnapshot
from signer.lifecycle import OPEN_STATES, Lifecycle
from signer.messages import pending_notice, request_evidence
from signer.operator_policy import (
    OPERATOR_KINDS,
    Arm,
    OperatorAsk,
    decide_operator,
    deny_hold_refusal,
)
from signer.policy import (
    ChainView,
    Disable,
    Evidence,
    FailoverAsk,
    History,
    PolicyConfig,
    Refuse,
    Switch,
    decide,
)
from signer.ports import SignerChain, WitnessReading
from signer.probes import NodeProber
from signer.records import Armed, Unresolved
from signer.store import IdempotencyConflictError, RequestRecord

log = logging.getLogger(__name__)


class ExecutionChain(SignerChain, Protocol):
    """A :class:`SignerChain` that also reports its head, whose CHAIN time tells expiry."""

    def head(self) -> DynamicProps:
        """The head block of a fresh node.

        Raises:
            ChainUnavailableError: no fresh node answered.
        """
        ...


def notify_safely(notifier: Notifier, event: str, text: str) -> None:
    """Send a notification; a failure is logged and never reaches the failover path."""
    try:
        notifier.send(event, text)
    except Exception:  # a notifier (or its bug) must never stop a failover
        log.warning("notification [%s] failed", event, exc_info=True)


@dataclass(frozen=True)
class FreshAsk:
    """An authenticated, schema-checked failover request that has not been decided yet."""

    client_keyid: str
    idempotency_key: str
    digest: str
    ask: FailoverAsk
    nonce: str


@dataclass(frozen=True)
class Outcome:
    """Where a fresh ask stands after its decision, and a note for the answer."""

    record: RequestRecord
    note: str = ""
    new: bool = False  # recorded by this ask (its handler may wait for the confirmation)


class Executor:
    """Decides, executes and confirms; every method holds :attr:`lock` (one at a time)."""

    def __init__(self, lifecycle: Lifecycle, chain: ExecutionChain, policy: PolicyConfig,
                 notifier: Notifier, clock: Clock, *, quorum: int, confirm_timeout: timedelta,
                 max_attempts: int = 3, failpoints: Failpoints | None = None,
                 prober: NodeProber | None = None,
                 key_label: Callable[[str | None], str] = str) -> None:
        self.lifecycle = lifecycle
        self.prober = prober  # None: no node key has a health_url
        self.label = key_label  # a key with its node name, for log lines
        self.failpoints = failpoints or Failpoints()
        self.chain = chain
        self.policy = policy
        self.quorum = quorum
        self.lock = threading.RLock()
        self.chain_verified = False  # every reachable node proved the chain id
        self.ready = False  # ... and the signer is armed and reconciled
        self.notifier = notifier
        self.clock = clock
        self._confirm_timeout = confirm_timeout
        self._confirmer = Confirmer(self, confirm_timeout=confirm_timeout,
                                    max_attempts=max_attempts)

    # ---- start-up ----------------------------------------------------------------------

    def startup(self) -> None:
        """Check the chain id, arm on first start, reconcile; then accept work.

        Raises:
            ChainDataError: a node is on another chain (fatal while ``chain_verified`` is
                False; afterwards a transient disagreement between nodes).
            ChainUnavailableError: the chain could not be read; try again later.
        """
        with self.lock:
            if not self.chain_verified:
                # SECURITY: T6 — nothing is signed before the nodes proved their chain id.
                self.chain.check_chain_id()
                self.chain_verified = True
            store = self.lifecycle.store
            if store.get_armed() is None:
                view = self.chain.read_view()
                now = self.clock.now()
                store.set_armed(Armed(view.total_missed, view.signing_key, now, 0))
                store.audit("armed", "signer", baseline_missed=view.total_missed,
                            armed_key=view.signing_key, why="first start")
                log.info("armed on %s at total_missed %d", self.label(view.signing_key),
                         view.total_missed)
            self.reconcile()
            self.ready = True

    def reconcile(self) -> None:
        """Settle what a crash left behind: ``received`` rows fail, ``broadcast`` rows are
        confirmed from the chain or retried once expired unincluded, never sent twice."""
        with self.lock:
            now = self.clock.now()
            for record in self.lifecycle.in_state("received"):
                self.lifecycle.fail(record.id, "interrupted before a decision; ask again", now,
                                    audit_why="restart before decision")
            for item in self.lifecycle.broadcasts():
                self.lifecycle.store.audit("reconcile", "signer", item.request.id,
                                           attempts=[a.tx_id for a in item.attempts])
                self.confirm(item)

    # ---- the policy, on one reading ----------------------------------------------------

    def history(self, now: datetime) -> History:
        """The policy's history, with every switch the rate limit and cooldown look at.

        Raises:
            PolicyError: the signer was never armed.
        """
        since = now - max(self.policy.window, self.policy.cooldown)
        history = self.lifecycle.store.history(since)
        if history is None:
            raise PolicyError("the signer is not armed")
        return history

    def redecide(self, record: RequestRecord, view: ChainView, now: datetime,
                 health: HealthSnapshot | None = None) -> Switch | Disable | Arm | Refuse:
        """The policy for a stored request against ``view`` and ``health`` (at execution,
        or a retry); a pre-emptive request keeps its evidence; an operator's command is
        decided by :func:`decide_operator`."""
        if record.kind != "failover":
            return self.decide_operator(record, view, now)
        target = record.target_key if record.target_key != NULL_KEY else None
        ask = FailoverAsk(witness=record.witness, failing_key=record.failing_key,
                          observed_total_missed=view.total_missed,
                          reason=f"request {record.id} re-checked at execution",
                          target_key=target, evidence=self.evidence_of(record))
        return decide(ask, view, self.history(now), self.policy, now, quorum=self.quorum,
                      health=health)

    # ---- producer-node health: probed with the chain read -------------------------------

    def evidence_of(self, record: RequestRecord) -> Evidence | None:
        """The watcher's evidence a stored request carried (None: a reactive request)."""
        return request_evidence(self.lifecycle.store, record)

    def read_with_health(self, *, preemptive: bool) -> tuple[WitnessReading,
                                                             HealthSnapshot | None]:
        """One chain reading and one probe snapshot, taken together (probes run meanwhile).

        For a ``preemptive`` ask a node holding the key that looks dead is probed again
        (``[health] confirm_probes``) before it counts as dead.

        Raises:
            ChainError: the chain could not be read.
        """
        probing = self.prober.start() if self.prober is not None else None
        reading = self.chain.read_witness()
        if probing is None or self.prober is None:
            return reading, None
        snapshot = probing.snapshot(reading.view.head_block_num)
        if preemptive and self.policy.preemptive:
            snapshot = self.prober.confirm_dead(snapshot, reading.view.signing_key)
        return reading, snapshot

    def _health_audit(self, record: RequestRecord, health: HealthSnapshot | None,
                      decision: Switch | Disable | Arm | Refuse, stage: str) -> None:
        """An audit line with the signer's health view, when it has one or was asked to."""
        evidence = self.evidence_of(record)
        if health is None and evidence is None:
            return
        self.lifecycle.store.audit(
            "health", "signer", record.id, stage=stage, preemptive=evidence is not None,
            accepted_on_health=isinstance(decision, Switch) and decision.preemptive,
            decision=type(decision).__name__.lower(), why=decision.reason[:500],
            health=None if health is None else health.as_json())

    # ---- a new request: record, decide once, and (auto) send ----------------------------

    def decide_new(self, fresh: FreshAsk) -> Outcome:
        """Decide a fresh ask on one reading of the chain; in auto mode, send from it.

        Raises:
            IdempotencyConflictError: ``request_id`` reused with another body (409).
            ChainError: the chain could not be read; nothing was stored.
            PolicyError: the signer was never armed.
        """
        with self.lock:
            known = self.lifecycle.store.find_by_idempotency_key(fresh.idempotency_key)
            if known is not None:
                if known.body_sha256 != fresh.digest:
                    raise IdempotencyConflictError("request_id reused with a different body")
                # Same request (request_id retried): same answer, never a second switch.
                return Outcome(known)
            in_flight = self.lifecycle.open_request()
            if in_flight is not None:
                # SECURITY: T7 — one switch in flight at a time; a second ask joins it.
                return Outcome(in_flight, "a failover request is already open")
            now = self.clock.now()
            evidence = fresh.ask.evidence
            # ChainError: nothing stored, ask again
            reading, health = self.read_with_health(preemptive=evidence is not None)
            view = reading.view
            history = self.history(now)
            decision = decide(fresh.ask, view, history, self.policy, now,
                              quorum=self.quorum, health=health)
            decision = self.held_by_denial(decision, fresh.ask.failing_key, history, now)
            extra: dict[str, object] = {}
            if evidence is not None:
                extra.update(preemptive=True, evidence=evidence.as_json())
            if health is not None:
                extra["health"] = health.as_json()
            record, created = self.lifecycle.receive(
                client_keyid=fresh.client_keyid, idempotency_key=fresh.idempotency_key,
                digest=fresh.digest, ask=fresh.ask, now=now,
                chain_total_missed=view.total_missed, chain_key=view.signing_key,
                nonce=fresh.nonce, **extra)
            if not created:
                return Outcome(record)
            self.failpoints.hit("request_stored")
            self._health_audit(record, health, decision, "decision")
            if isinstance(decision, Refuse):
                self.refuse(record, decision, now)
                self.failpoints.hit("decided")
                return Outcome(self.lifecycle.get(record.id), new=True)
            target = decision.target_key if isinstance(decision, Switch) else None
            what = f"{view.signing_key} -> {target or 'the null key (disable)'}"
            plan = self.lifecycle.start_approval(record, self.policy, target=target, what=what,
                                                 now=now)
            self.failpoints.hit("decided")
            if plan.mode != "auto":
                notify_safely(self.notifier, "approval_needed",
                              pending_notice(self.policy.witness, record.id, what, plan,
                                             evidence=evidence, health=health))
            else:
                try:
                    self.send(self.lifecycle.get(record.id), reading, target or NULL_KEY, now)
                except ChainError as e:  # the next tick decides again on a fresh reading
                    log.warning("request %s stays approved: %s", record.id, e)
            return Outcome(self.lifecycle.get(record.id), new=True)

    # ---- an approved request: decide again on a fresh reading, then send -----------------

    def execute(self, record: RequestRecord) -> None:
        """Execute an ``approved`` request: read once, decide once, build from it, send.

        Raises:
            ChainError: the chain could not be read; the request stays approved.
        """
        with self.lock:
            now = self.clock.now()
            try:
                reading, health = self.read_with_health(
                    preemptive=self.evidence_of(record) is not None)
            except ChainError:
                if now - record.updated_at > self._confirm_timeout:
                    self.fail(record, "the chain could not be read to execute it", now)
                    return
                raise
            self._decide_and_send(record, reading, health, now)

    def decide_and_send(self, record: RequestRecord, reading: WitnessReading,
                        now: datetime) -> None:
        """Re-decide ``record`` on ``reading`` and fresh probes; refuse, or build and send."""
        health = None
        if self.prober is not None:
            preemptive = self.evidence_of(record) is not None and self.policy.preemptive
            health = self.prober.snapshot(reading.view.head_block_num)
            if preemptive:
                health = self.prober.confirm_dead(health, reading.view.signing_key)
        self._decide_and_send(record, reading, health, now)

    def _decide_and_send(self, record: RequestRecord, reading: WitnessReading,
                         health: HealthSnapshot | None, now: datetime) -> None:
        decision = self.redecide(record, reading.view, now, health)
        self._health_audit(record, health, decision, "execution")
        if isinstance(decision, Refuse):
            self.refuse(record, decision, now, context="at execution")
            return
        if isinstance(decision, Arm):
            self.arm(record, reading.view, now)
            return
        target = decision.target_key if isinstance(decision, Switch) else NULL_KEY
        self.send(record, reading, target, now)

    def send(self, record: RequestRecord, reading: WitnessReading, target: str,
             now: datetime) -> None:
        """Build from ``reading``, log the intent, then broadcast (at most once per attempt).

        Raises:
            ChainDataError: the reading cannot be sent back unchanged (nothing written).
        """
        self.failpoints.hit("approved")
        try:
            tx = self.chain.build(reading, target)
        except (KeystoreError, PolicyError) as e:
            self.fail(record, f"cannot build the transaction: {e}", now)
            return
        self.failpoints.hit("signed")
        attempt = self.lifecycle.begin_broadcast(record, tx_id=tx.tx_id, target_key=target,
                                                 expiration=tx.expiration,
                                                 operation=tx.operation, now=now)
        if attempt is None:
            log.warning("request %s changed state before its broadcast; not sent", record.id)
            return
        self.failpoints.hit("intent_logged")
        try:
            self.chain.broadcast(tx)
        except BroadcastError as e:
            # Not proof that it was not accepted (a timeout after sending): wait for expiry.
            self.lifecycle.broadcast_result(record, attempt, f"error: {e}"[:500])
            log.warning("request %s attempt %d: %s", record.id, attempt, e)
            return
        self.failpoints.hit("broadcast_sent")
        self.lifecycle.broadcast_result(record, attempt, "sent")
        self.failpoints.hit("broadcast_recorded")
        log.info("request %s attempt %d: sent tx %s -> %s", record.id, attempt, tx.tx_id,
                 self.label(target))

    # ---- operator commands: the same path, the operator is the evidence -------------------

    def held_by_denial(self, decision: Switch | Disable | Refuse, failing_key: str,
                       history: History, now: datetime) -> Switch | Disable | Refuse:
        """``decision``, or a ``denied_recently`` refusal while an operator's denial holds."""
        denial = self.lifecycle.store.last_denial(failing_key, now - self.policy.deny_hold)
        held = deny_hold_refusal(decision, denial.updated_at if denial else None, history,
                                 self.policy, now)
        assert not isinstance(held, Arm)
        return held

    def decide_operator(self, record: RequestRecord, view: ChainView, now: datetime
                        ) -> Switch | Disable | Arm | Refuse:
        """The policy for an operator's stored command against ``view``."""
        since = now - max(self.policy.window, self.policy.cooldown)
        busy = next((r.id for r in self.lifecycle.in_state(*OPEN_STATES) if r.id != record.id),
                    None)
        kind = next(k for k in OPERATOR_KINDS if k == record.kind)
        ask = OperatorAsk(kind, record.failing_key, record.target_key, bool(record.force),
                          record.created_at if record.state == "approved" else None)
        return decide_operator(ask, view, self.lifecycle.store.history(since), self.policy,
                               now, quorum=self.quorum, busy_with=busy)

    def arm(self, record: RequestRecord, view: ChainView, now: datetime) -> None:
        """Take ``view``'s key and ``total_missed`` as the baseline (an operator's ``arm``)."""
        armed = Armed(view.total_missed, view.signing_key, now, 0)
        if self.lifecycle.operator_armed(record, armed, now):
            log.info("request %s: armed on %s at total_missed %d by %s", record.id,
                     view.signing_key, view.total_missed, record.decided_by)
            notify_safely(self.notifier, "armed",
                          f"{self.policy.witness}: armed on {view.signing_key} at total_missed "
                          f"{view.total_missed} (request {record.id}, by {record.decided_by})")

    # ---- a broadcast request: confirm ------------------------------------------------------

    def confirm(self, item: Unresolved) -> None:
        """Settle one ``broadcast`` request: confirmed, still waiting, retried or failed.

        Raises:
            ChainError: the chain could not be read; nothing changed.
        """
        with self.lock:
            self._confirmer.confirm(item, self.clock.now())

    # ---- endings ------------------------------------------------------------------------

    def refuse(self, record: RequestRecord, refusal: Refuse, now: datetime, *,
               context: str = "") -> None:
        """Record a refusal (``failed`` once broadcast); alert when the rule or a human asks."""
        done = self.lifecycle.refuse(record, refusal, now, context=context)
        if done is None:
            return
        log.info("request %s %s: %s", record.id, done.state, done.detail)
        if refusal.alert or context:
            notify_safely(self.notifier, "request_refused",
                          f"{self.policy.witness}: request {record.id} refused"
                          f"{' ' + context if context else ''}: {refusal.reason}")

    def fail(self, record: RequestRecord, why: str, now: datetime) -> None:
        """Fail a request that cannot go on, and alert."""
        if self.lifecycle.fail(record.id, why, now):
            log.error("request %s failed: %s", record.id, why)
            notify_safely(self.notifier, "switch_failed",
                          f"{self.policy.witness}: failover request {record.id} FAILED: {why}")

    def notify(self, event: str, text: str) -> None:
        """Send a notification safely (for the confirmer)."""
        notify_safely(self.notifier, event, text)

