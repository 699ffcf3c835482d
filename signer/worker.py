"""Executing approved requests, confirming broadcasts, and the thread that drives both.

Every path that sends a transaction re-reads the chain, re-runs
:func:`signer.policy.decide` at that moment and builds the transaction then,
with fresh TaPoS: the chain may have changed while a request was pending, and
nothing is stored pre-signed. The intent to send is written before the send
(``Store.begin_broadcast``), so a crash leaves a ``broadcast`` row that
:meth:`Executor.reconcile` settles from the chain, never by switching again (T7).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from shared.chaindata import DynamicProps
from shared.chains import NULL_KEY
from shared.clock import Clock
from shared.errors import (
    BroadcastError,
    ChainDataError,
    ChainError,
    KeystoreError,
    PolicyError,
)
from shared.notify import Notifier
from signer.approvals import refusal_detail, sweep_pending
from signer.policy import (
    ChainView,
    Disable,
    FailoverAsk,
    History,
    PolicyConfig,
    Refuse,
    Switch,
    decide,
    rearm,
)
from signer.ports import Inclusion, SignerChain
from signer.store import Armed, RequestRecord, Store, Unresolved

log = logging.getLogger(__name__)

_STARTUP_RETRY = timedelta(seconds=5)
_T = TypeVar("_T")


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


def requests_in(store: Store, state: str) -> list[RequestRecord]:
    """Requests in ``state``, oldest first."""
    # Store exposes list_pending() and unresolved_broadcasts() only; the worker also
    # needs 'approved' (written by the CLI from another process) and 'received'.
    return store._requests("state = ?", state)


class Executor:
    """Turns approved requests into confirmed switches; every method holds :attr:`lock`."""

    def __init__(self, store: Store, chain: ExecutionChain, policy: PolicyConfig,
                 notifier: Notifier, clock: Clock, *, quorum: int, confirm_timeout: timedelta,
                 max_attempts: int = 3) -> None:
        self.store = store
        self.chain = chain
        self.policy = policy
        self.quorum = quorum
        self.lock = threading.RLock()
        self.chain_verified = False  # every reachable node proved the chain id
        self.ready = False  # ... and the signer is armed and reconciled
        self._notifier = notifier
        self._clock = clock
        self._confirm_timeout = confirm_timeout
        self._max_attempts = max_attempts
        self._warned: set[str] = set()
        self._next_startup: datetime | None = None

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
            if self.store.get_armed() is None:
                view = self.chain.read_view()
                now = self._clock.now()
                self.store.set_armed(Armed(view.total_missed, view.signing_key, now, 0))
                self.store.audit("armed", "signer", baseline_missed=view.total_missed,
                                 armed_key=view.signing_key, why="first start")
                log.info("armed on %s at total_missed %d", view.signing_key, view.total_missed)
            self.reconcile()
            self.ready = True

    def reconcile(self) -> None:
        """Settle what a crash left behind: ``received`` rows fail, ``broadcast`` rows are
        confirmed from the chain or retried once expired unincluded, never sent twice."""
        with self.lock:
            now = self._clock.now()
            for record in requests_in(self.store, "received"):
                if self.store.transition(record.id, {"received"}, "failed",
                                         "interrupted before a decision; ask again", now):
                    self.store.audit("failed", "signer", record.id, why="restart before decision")
            for item in self.store.unresolved_broadcasts():
                self.store.audit("reconcile", "signer", item.request.id,
                                 attempts=[a.tx_id for a in item.attempts])
                self.confirm(item)

    def _try_startup(self) -> None:
        now = self._clock.now()
        if self._next_startup is not None and now < self._next_startup:
            return
        self._next_startup = now + _STARTUP_RETRY
        try:
            self.startup()
        except ChainError as e:
            if isinstance(e, ChainDataError) and not self.chain_verified:
                log.critical("signer not ready: %s", e)
                notify_safely(self._notifier, "signer_not_ready", f"signer refuses to act: {e}")
            else:
                log.warning("signer not ready yet: %s", e)

    # ---- the worker's tick ---------------------------------------------------------------

    def step(self) -> None:
        """One pass: expire or release pending requests, execute approved, confirm sent."""
        with self.lock:
            if not self.ready:
                self._try_startup()
                if not self.ready:
                    return
            for swept in sweep_pending(self.store, self._clock.now()):
                if swept.outcome == "expired":
                    notify_safely(self._notifier, "request_expired",
                                  f"failover request {swept.record.id} expired unapproved")
            for record in requests_in(self.store, "approved"):
                self._guarded(self.execute, record, record.id)
            for item in self.store.unresolved_broadcasts():
                self._guarded(self.confirm, item, item.request.id)

    @staticmethod
    def _guarded(action: Callable[[_T], None], arg: _T, request_id: str) -> None:
        try:
            action(arg)
        except ChainError as e:  # we learned nothing: try again next tick
            log.warning("request %s: chain problem, will retry: %s", request_id, e)

    # ---- deciding again, then sending ----------------------------------------------------

    def history(self, now: datetime) -> History:
        """The policy's history, with every switch the rate limit and cooldown look at.

        Raises:
            PolicyError: the signer was never armed.
        """
        since = now - max(self.policy.window, self.policy.cooldown)
        history = self.store.history(since)
        if history is None:
            raise PolicyError("the signer is not armed")
        return history

    def decide_now(self, record: RequestRecord, view: ChainView, now: datetime
                   ) -> Switch | Disable | Refuse:
        """Re-run the policy for a stored request against ``view``."""
        target = record.target_key if record.target_key != NULL_KEY else None
        ask = FailoverAsk(witness=record.witness, failing_key=record.failing_key,
                          observed_total_missed=view.total_missed,
                          reason=f"request {record.id} re-checked at execution",
                          target_key=target)
        return decide(ask, view, self.history(now), self.policy, now, quorum=self.quorum)

    def execute(self, record: RequestRecord) -> None:
        """Execute an ``approved`` request: re-read, re-decide, build, log intent, send.

        Raises:
            ChainError: the chain could not be read; the request stays approved.
        """
        with self.lock:
            now = self._clock.now()
            try:
                view = self.chain.read_view()
            except ChainError:
                if now - record.updated_at > self._confirm_timeout:
                    self._fail(record, "the chain could not be read to execute it", now)
                    return
                raise
            decision = self.decide_now(record, view, now)
            if isinstance(decision, Refuse):
                self.refuse(record, decision, now, context="at execution")
                return
            target = decision.target_key if isinstance(decision, Switch) else NULL_KEY
            self._send(record, view, target, now)

    def _send(self, record: RequestRecord, view: ChainView, target: str, now: datetime) -> None:
        try:
            tx = self.chain.build(view, target)
        except (KeystoreError, PolicyError) as e:
            self._fail(record, f"cannot build the transaction: {e}", now)
            return
        attempt = self.store.begin_broadcast(record.id, tx_id=tx.tx_id, target_key=target,
                                             expiration=tx.expiration, now=now)
        if attempt is None:
            log.warning("request %s changed state before its broadcast; not sent", record.id)
            return
        self.store.audit("broadcast", "signer", record.id, attempt=attempt, tx_id=tx.tx_id,
                         target_key=target, operation=tx.operation,
                         expiration=tx.expiration)
        try:
            self.chain.broadcast(tx)
        except BroadcastError as e:
            # Not proof that it was not accepted (a timeout after sending): wait for expiry.
            self.store.record_broadcast_result(record.id, attempt, f"error: {e}"[:500])
            log.warning("request %s attempt %d: %s", record.id, attempt, e)
            return
        self.store.record_broadcast_result(record.id, attempt, "sent")
        log.info("request %s attempt %d: sent tx %s -> %s", record.id, attempt, tx.tx_id, target)

    # ---- confirming ---------------------------------------------------------------------

    def confirm(self, item: Unresolved) -> None:
        """Settle one ``broadcast`` request: confirmed, still waiting, retried or failed.

        Raises:
            ChainError: the chain could not be read; nothing changed.
        """
        with self.lock:
            record, attempts = item.request, item.attempts
            now = self._clock.now()
            target = record.target_key or NULL_KEY
            # The head is read BEFORE looking for the key: if the head was already past
            # the expiration and the key is still not there, the tx can never land.
            head = self.chain.head()
            last = attempts[-1] if attempts else None
            found = self.chain.find_inclusion(last.tx_id if last else "", target)
            if found is not None:
                self._confirmed(record, found, now)
                return
            if last is not None and head.time < last.expiration:
                if now - last.sent_at > self._confirm_timeout and record.id not in self._warned:
                    self._warned.add(record.id)
                    notify_safely(self._notifier, "switch_unconfirmed",
                                  f"request {record.id}: tx {last.tx_id} not included after "
                                  f"{self._confirm_timeout}; still waiting for it to expire")
                return
            if last is not None:
                self.store.record_broadcast_result(record.id, last.attempt, "expired unincluded")
                self.store.audit("tx_expired", "signer", record.id, attempt=last.attempt,
                                 tx_id=last.tx_id)
            if len(attempts) >= self._max_attempts:
                self._fail(record, f"{len(attempts)} transaction(s) expired unincluded", now)
                return
            view = self.chain.read_view()
            decision = self.decide_now(record, view, now)
            if isinstance(decision, Refuse):
                self.refuse(record, decision, now, context="at execution")
                return
            retarget = decision.target_key if isinstance(decision, Switch) else NULL_KEY
            self._send(record, view, retarget, now)

    def _confirmed(self, record: RequestRecord, found: Inclusion, now: datetime) -> None:
        target = found.signing_key
        view = self.chain.read_view()
        if view.signing_key != target:
            log.warning("request %s: inclusion seen but the view shows %s; retrying",
                        record.id, view.signing_key)
            return
        history = self.history(now)
        done: Switch | Disable
        if target == NULL_KEY:
            done = Disable("confirmed")
        else:
            keys = self.policy.node_keys
            wraps = (record.failing_key in keys and target in keys
                     and keys.index(target) <= keys.index(record.failing_key))
            done = Switch(target, history.rounds + (1 if wraps else 0), "confirmed")
        after = rearm(history, view, done, now)
        armed = Armed(after.baseline_missed, after.armed_key, now, after.rounds)
        if not self.store.confirm_switch(record.id, from_key=record.failing_key, to_key=target,
                                         tx_id=found.tx_id, block_num=found.block_num,
                                         armed=armed, now=now,
                                         detail=f"on chain by block {found.block_num}"):
            return
        self._warned.discard(record.id)
        self.store.audit("confirmed", "signer", record.id, from_key=record.failing_key,
                         to_key=target, tx_id=found.tx_id, block_num=found.block_num,
                         baseline_missed=armed.baseline_missed)
        log.info("request %s confirmed: %s -> %s in block %d", record.id, record.failing_key,
                 target, found.block_num)
        notify_safely(self._notifier, "switched",
                      f"{self.policy.witness}: signing key switched {record.failing_key} -> "
                      f"{target} (block {found.block_num}, request {record.id})")

    # ---- endings ------------------------------------------------------------------------

    def refuse(self, record: RequestRecord, refusal: Refuse, now: datetime, *,
               context: str = "") -> RequestRecord:
        """Record a refusal (``failed`` once broadcast); alert when the rule or a human asks.

        Returns the request as it is afterwards.
        """
        detail = refusal_detail(refusal, context)
        to_state = "failed" if record.state == "broadcast" else "refused"
        if self.store.transition(record.id, {record.state}, to_state, detail, now):
            self.store.audit(to_state, "policy", record.id, rule=refusal.rule,
                             detail=refusal.reason, context=context)
            log.info("request %s %s: %s", record.id, to_state, detail)
            if refusal.alert or context:
                notify_safely(self._notifier, "request_refused",
                              f"{self.policy.witness}: request {record.id} refused"
                              f"{' ' + context if context else ''}: {refusal.reason}")
        return self.store.get(record.id) or record

    def _fail(self, record: RequestRecord, why: str, now: datetime) -> None:
        current = self.store.get(record.id) or record
        if current.state not in {"received", "approved", "broadcast"}:
            return
        if self.store.transition(record.id, {current.state}, "failed", why, now):
            self.store.audit("failed", "signer", record.id, why=why)
            log.error("request %s failed: %s", record.id, why)
            notify_safely(self._notifier, "switch_failed",
                          f"{self.policy.witness}: failover request {record.id} FAILED: {why}")


class Worker:
    """Runs :meth:`Executor.step` every ``tick_s`` seconds (sooner when woken)."""

    def __init__(self, executor: Executor, tick_s: float = 0.25) -> None:
        self._executor = executor
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="signer-worker", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Run the next step now rather than at the next tick."""
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the current step; wait up to ``timeout_s``."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._executor.step()
            except Exception:  # the worker must outlive any one bad step
                log.exception("signer worker step failed")
            self._wake.wait(self._tick_s)
            self._wake.clear()
