"""The watcher loop: poll, decide, act, alert. Handed every collaborator; no globals.

One :meth:`Watcher.step` reads the nodes, follows an outstanding request, asks
:func:`watcher.core.decide` what to do, does it, saves the state and says how
long to sleep (:func:`watcher.schedule.plan_next_poll`). A failover request is
persisted *before* it is sent, so a restart resumes it with the same request id
and body (the signer answers a retried request id idempotently: never twice).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.clock import Clock
from shared.errors import ChainError, FailoverError
from shared.logtext import ChangeLog, KeyLabels
from shared.notify import Notifier
from watcher.core import (
    OUTSTANDING,
    Alert,
    AlertKind,
    Decision,
    FailOver,
    Hold,
    Observation,
    Policy,
    Rearm,
    after_decision,
    decide,
    quorum_key,
    quorum_missed,
    with_closed,
    with_confirmed,
    with_pending,
    with_request,
)
from watcher.health import HealthView, NodeHealth, changes
from watcher.metrics import Metrics, NodeGauge
from watcher.ports import ChainReader, HealthSource, SignerPort
from watcher.schedule import PollPlan, Schedule, SlotClock, Timing, plan_next_poll
from watcher.signer_client import SignerAnswer, SignerProtocolError
from watcher.state import StateStore, encode

log = logging.getLogger(__name__)

_REFUSED = frozenset({"refused", "denied", "expired"})
_FAILED = frozenset({"failed", "not_found"})


@dataclass(frozen=True)
class Settings:
    """The daemon's part of the config."""

    account: str
    policy: Policy
    timing: Timing
    dry_run: bool = False
    signer_retry_interval_s: float = 5.0
    follow_timeout_s: float = 30.0
    fail_point: str | None = None  # crash tests: SIGKILL at this step (watcher.config)


class Watcher:
    """The daemon; :meth:`run` loops over :meth:`step`."""

    def __init__(self, settings: Settings, reader: ChainReader, signer: SignerPort, *,
                 notifier: Notifier, clock: Clock, sleep: Callable[[float], object],
                 store: StateStore, metrics: Metrics | None = None,
                 key_labels: KeyLabels | None = None,
                 health: HealthSource | None = None) -> None:
        self.settings = settings
        self._labels = key_labels or KeyLabels({})
        self._reader = reader
        self._signer = signer
        self._notifier = notifier
        self._clock = clock
        self._sleep = sleep
        self._store = store
        self.metrics = metrics or Metrics()
        self.state = store.load()
        self._saved = encode(self.state)
        self.slot_clock = SlotClock(settings.timing.block_interval_s)
        self.schedule: Schedule | None = None
        self.last_observation: Observation | None = None
        self.last_plan: PollPlan | None = None
        self._changes = ChangeLog()
        self.health = health
        self.last_health: HealthView | None = None
        self.last_request: dict[str, object] | None = None  # the last request body created
        self._wake = threading.Event()

    # ---- the loop -------------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """Whether a one_shot watcher has fired."""
        return self.state.phase == "stopped"

    def run(self, *, once: bool = False, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Step until stopped (``should_stop``), once, or a one_shot watcher has fired."""
        if self.stopped:
            log.warning("one_shot watcher already switched once; remove %s to re-arm",
                        self._store.path)
            return
        while True:
            delay = self.step()
            if once or should_stop() or self.stopped:
                return
            if self.health is None:
                self._sleep(delay)
            else:
                self._wait(delay, should_stop)

    def wake(self) -> None:
        """Step now (the producer nodes' health changed); safe from any thread."""
        self._wake.set()

    def _wait(self, delay: float, should_stop: Callable[[], bool]) -> None:
        """Sleep ``delay`` seconds, less when woken or told to stop."""
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0 and not should_stop():
            if self._wake.wait(min(left, 0.25)):
                return

    def step(self) -> float:
        """One poll, decision and action; return the seconds to wait before the next."""
        self._wake.clear()
        now, phase = self._clock.now(), self.state.phase
        obs = self._reader.observe(now)
        self.last_observation = obs
        seen = self._clock.now()
        head = max(obs.fresh, key=lambda n: n.head_block_number, default=None)
        if head is not None:
            self.slot_clock = self.slot_clock.observe(head.current_aslot, seen)
            self._refresh_schedule(head.head_block_number)
        health = self._health_view(obs, seen)
        if self.state.phase in OUTSTANDING:
            self._pursue(seen)
        decision = decide(obs, self.state, self.settings.policy, seen, health)
        if isinstance(decision, FailOver):
            self._reached("decided")
        self._act(decision, seen)
        self._save()
        if self.state.phase != phase and self.state.phase in {"switched", "stopped"}:
            self._reached("state_saved")
        self._update_metrics(obs)
        plan = plan_next_poll(
            self._clock.now(), head_aslot=None if head is None else head.current_aslot,
            head_block_number=None if head is None else head.head_block_number,
            schedule=self.schedule, account=self.settings.account, clock=self.slot_clock,
            timing=self.settings.timing)
        at = plan.at
        if self.state.phase in OUTSTANDING:
            at = min(at, seen + timedelta(seconds=self.settings.signer_retry_interval_s))
        self.last_plan = plan
        log.debug("next poll %s: %s", at.isoformat(), plan.why)
        return max(0.0, (at - self._clock.now()).total_seconds())

    def _health_view(self, obs: Observation, now: datetime) -> HealthView | None:
        """The producer nodes' latest health; alerts on every settled change since the last."""
        if self.health is None:
            return None
        q = self.settings.policy.quorum
        heads = sorted((n.head_block_number for n in obs.fresh), reverse=True)
        self.health.set_chain_head(heads[q - 1] if len(heads) >= q else None)
        view = self.health.view()
        on_chain = quorum_key(obs.fresh, q) if len(obs.fresh) >= q else None
        on_chain = on_chain or self.state.armed_key
        if self.last_health is not None:
            for change in changes(self.last_health, view):
                self._node_alert(change.kind, change.node, on_chain)
        elif view.rounds:
            for node in view.nodes:
                if node.bad:
                    self._node_alert("node_down" if node.status == "down"
                                     else "node_unhealthy", node, on_chain)
        self.last_health = view
        return view

    def _node_alert(self, kind: AlertKind, node: NodeHealth, on_chain: str | None) -> None:
        account = self.settings.account
        if kind == "node_recovered":
            text = f"{account}: producer node {node.name} is healthy again ({node.detail})"
        elif node.public_key == on_chain:
            text = (f"{account}: producer node {node.name} {node.status} for "
                    f"{node.bad_probes} probes ({node.detail}); it holds the on-chain key")
        else:
            text = (f"{account}: {node.name} {node.status} ({node.detail}): a failover would "
                    f"skip it")
        log.warning("alert %s: %s", kind, text)
        # One rate-limited event per node: primary and backup1 failing together both tell.
        self._notify(f"{kind}:{node.name}", text, kind)

    def _refresh_schedule(self, head_block_number: int) -> None:
        if self.schedule is not None and head_block_number < self.schedule.next_shuffle_block_num:
            return
        try:
            self.schedule = self._reader.schedule()
        except ChainError as e:
            log.warning("witness schedule unavailable: %s", e)
            self.schedule = None

    def _save(self) -> None:
        doc = encode(self.state)
        if doc != self._saved:
            self._store.save(self.state)
            self._saved = doc

    # ---- acting ---------------------------------------------------------------------------

    def _act(self, decision: Decision, now: datetime) -> None:
        account = self.settings.account
        if isinstance(decision, FailOver):
            self._request(decision, now)
            return
        before = self.state.condition
        self.state = after_decision(self.state, decision, now)
        if isinstance(decision, Alert):
            log.warning("alert %s: %s", decision.kind, self._labels.annotate(decision.text))
            self._notify(decision.kind, f"{account}: {decision.text}")
        elif isinstance(decision, Rearm):
            log.info("re-armed: %s", self._labels.annotate(decision.reason))
            if not decision.expected:
                self._notify("key_changed", f"{account}: {decision.reason}; re-armed at "
                             f"total_missed {decision.baseline_missed}")
        elif isinstance(decision, Hold):
            log.debug("hold: %s", decision.reason)
        if before is not None and self.state.condition is None:
            self._notify("recovered", f"{account}: RPC nodes and chain are healthy again "
                         f"(was {before})")

    def _request(self, decision: FailOver, now: datetime) -> None:
        request_id = secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]
        body: dict[str, object] = {
            "witness": self.settings.account, "failing_key": decision.failing_key,
            "observed_total_missed": decision.observed, "reason": decision.reason,
            "request_id": request_id}
        if self.settings.dry_run:
            body["dry_run"] = True
        preemptive = decision.evidence is not None
        if decision.evidence is not None:
            body["evidence"] = decision.evidence.to_json()
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        self.last_request = body
        self.state = with_request(self.state, request_id, text, decision.observed, now,
                                  preemptive=preemptive)
        # T7: on disk before it is sent; a restart resends these very bytes.
        self._save()
        self._reached("request_saved")
        self.metrics.update(requests_sent=self.metrics.requests_sent + 1,
                            preemptive_requests_sent=self.metrics.preemptive_requests_sent
                            + preemptive)
        what = "pre-emptive failover" if preemptive else "failover"
        log.warning("requesting %s %s: %s", what, request_id,
                    self._labels.annotate(decision.reason),
                    extra={"request_id": request_id})
        if not self.settings.dry_run:
            self._notify("switch_requested", f"{self.settings.account}: {what} requested "
                         f"({decision.reason}); request {request_id}")
        self._pursue(now)

    def _pursue(self, now: datetime) -> None:
        """Send the outstanding request (phase requested) or ask how it is going (pending)."""
        state = self.state
        assert state.request_id is not None
        assert state.request_body is not None
        try:
            if state.phase == "requested":
                answer = self._signer.failover(state.request_body.encode())
                self._reached("request_sent")
            else:
                answer = self._signer.request_state(state.request_id)
            if answer.state == "broadcast":
                answer = self._signer.follow(answer, self.settings.follow_timeout_s,
                                             self.settings.timing.block_interval_s)
        except SignerProtocolError as e:
            if state.request_preemptive and e.status is not None and 400 <= e.status < 500:
                # An authentic 4xx without a request state (a signer that does not know
                # pre-emption answers 422): this request will never be taken; retrying it
                # would loop. Misses still count; the reactive path is unchanged.
                self._preempt_refused(f"the signer rejected the pre-emptive request "
                                      f"{state.request_id}: {e}", now)
                return
            log.warning("signer: %s", e)
            self._alert_once("signer_unreachable", f"{self.settings.account}: signer "
                             f"answered out of protocol ({e}); request "
                             f"{state.request_id} will be retried", now)
            return
        except FailoverError as e:
            level = logging.WARNING if self._changes.should_log(
                "signer_error", (type(e).__name__, str(e))) else logging.DEBUG
            log.log(level, "signer: %s", e, extra={"request_id": self._own_request_id()})
            self._alert_once("signer_unreachable", f"{self.settings.account}: signer "
                             f"unreachable or not authentic ({e}); request "
                             f"{state.request_id} will be retried", now)
            return
        self._handle(answer, now)
        self._reached("answered")

    def _reached(self, point: str) -> None:
        """Crash tests: die here, as abruptly as a power cut, when told to (never by default)."""
        if point == self.settings.fail_point:
            log.critical("fail point %s reached: SIGKILL", point)
            os.kill(os.getpid(), signal.SIGKILL)

    def _own_request_id(self) -> str | None:
        """The id this watcher gave the outstanding request (the signer logs and audits it)."""
        try:
            body = json.loads(self.state.request_body or "{}")
        except ValueError:
            return None
        own = body.get("request_id") if isinstance(body, dict) else None
        return own if isinstance(own, str) else None

    def _handle(self, answer: SignerAnswer, now: datetime) -> None:
        account, rid = self.settings.account, answer.request_id or self.state.request_id
        own = self._own_request_id()
        self._changes.forget("signer_error")  # the signer answered: a new error is news
        # A pending request is asked about every few seconds: log its line on change only,
        # with a reminder now and then (shared.logtext.ChangeLog).
        level = logging.INFO if self._changes.should_log(
            "signer_answer", (rid, answer.state, answer.detail)) else logging.DEBUG
        log.log(level, "signer: request %s (signer id %s) is %s %s", own or rid, rid,
                answer.state, answer.detail,
                extra={"request_id": own or rid, "signer_request_id": rid})
        if answer.state == "confirmed":
            self.state = with_confirmed(self.state, answer.target_key, answer.tx_id,
                                        self.settings.policy, now, block_num=answer.block_num)
            block = "" if answer.block_num is None else f" in block {answer.block_num}"
            self._notify("switch_confirmed", f"{account}: signing key switched to "
                         f"{answer.target_key}, tx {answer.tx_id}{block}; request {rid}")
        elif answer.state == "dry_run":
            self.state = with_closed(self.state, now, picture=self._picture())
            self._notify("dry_run", f"{account}: dry run: the signer would "
                         f"{answer.body.get('decision', '?')} ({answer.detail})")
        elif answer.state in _REFUSED and self.state.request_preemptive:
            if "health_disagrees" in answer.detail or (
                    answer.body.get("rule") == "health_disagrees"):
                self._preempt_refused(f"signer's probes disagree: the node on the on-chain "
                                      f"key looks healthy from the signer (request {rid}: "
                                      f"{answer.detail})", now)
            else:
                self._preempt_refused(f"pre-emptive request {rid} {answer.state}: "
                                      f"{answer.detail}", now)
        elif answer.state in _REFUSED:
            self.state = with_closed(self.state, now)
            self._notify("switch_refused", f"{account}: failover request {rid} "
                         f"{answer.state}: {answer.detail}")
        elif answer.state in _FAILED or answer.final:
            self.state = with_closed(self.state, now, picture=self._picture())
            self._notify("switch_failed", f"{account}: failover request {rid} "
                         f"{answer.state}: {answer.detail}")
        elif rid is not None:
            self.state = with_pending(self.state, rid)

    def _picture(self) -> str | None:
        return None if self.last_health is None else self.last_health.picture()

    def _preempt_refused(self, text: str, now: datetime) -> None:
        """A pre-emptive request ended without a switch: no new one until the health
        picture changes or a miss appears; tell a human once per picture."""
        log.warning("%s", text)
        self.state = with_closed(self.state, now, picture=self._picture() or "")
        self._alert_once("preempt_refused", f"{self.settings.account}: {text}; waiting for "
                         f"the nodes' health to change or a miss", now)

    def _alert_once(self, kind: AlertKind, text: str, now: datetime) -> None:
        last = self.state.alerted.get(kind)
        if last is None or now - last >= self.settings.policy.realert_interval:
            self.state = after_decision(self.state, Alert(kind, text), now)
            self._notify(kind, text)

    def _notify(self, kind: str, text: str, metric_kind: str | None = None) -> None:
        self.metrics.count_alert(metric_kind or kind)
        try:
            self._notifier.send(kind, text)
        except Exception:
            # A notifier failure never blocks or stops a failover.
            log.exception("notifier failed for [%s]", kind)

    def _update_metrics(self, obs: Observation) -> None:
        fresh = obs.fresh
        key = quorum_key(fresh, self.settings.policy.quorum) if fresh else None
        observed = None if key is None else quorum_missed(fresh, key,
                                                          self.settings.policy.quorum)
        misses = 0
        if observed is not None and key == self.state.armed_key:
            misses = max(0, observed - self.state.baseline_missed)
        self.metrics.update(
            polls=self.metrics.polls + 1, rpc_calls=self._reader.calls,
            signer_http_requests=self._signer.requests_sent, misses_since_armed=misses,
            fresh_nodes=len(fresh), phase=self.state.phase,
            head_block_number=max((n.head_block_number for n in fresh), default=0))
        if self.health is not None and self.last_health is not None:
            self._update_health_metrics(self.health.calls, self.last_health)

    def _update_health_metrics(self, probe_calls: int, view: HealthView) -> None:
        """The producer-node gauges: witness_node_up, witness_node_head_lag_blocks."""
        self.metrics.update(probe_calls=probe_calls, node_health=tuple(
            NodeGauge(n.name, n.up, n.lag) for n in view.nodes))
