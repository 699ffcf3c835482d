"""The signer service: authenticate, parse, hand to the worker, answer; handed every collaborator.

No globals, no environment, no Flask: :mod:`signer.http` translates HTTP to these
calls and :mod:`signer.app` composes the collaborators, the executor and worker
included. The straight path of a failover request is: :meth:`SignerService.failover`
(parse) → :meth:`signer.worker.Worker.submit` → the worker records it through
:mod:`signer.lifecycle`, reads the chain once, decides once, builds, signs and
broadcasts → this thread, woken by events, answers. Request states belong to
:mod:`signer.lifecycle`; this module only reads them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from shared.chains import NULL_KEY
from shared.clock import Clock
from shared.errors import (
    ChainDataError,
    ChainError,
    ChainUnavailableError,
    PolicyError,
    RateLimitedError,
)
from shared.httpsig import Ed25519Signer, Headers, HttpMessage, HttpResponse, sign_response
from shared.notify import Notifier
from signer.auth import Authenticated, Authenticator, Client, RouteForbiddenError, Window
from signer.config import SignerConfig
from signer.executor import Executor, FreshAsk, Outcome, notify_safely
from signer.lifecycle import OPEN_STATES, Lifecycle, RequestNotFoundError, http_status, is_final
from signer.messages import (
    FailoverRequest,
    OperatorCommand,
    describe_request,
    dry_run_answer,
    parse_failover,
    parse_operator,
    parse_verdict,
    pending_summary,
)
from signer.policy import Refuse, decide
from signer.store import IdempotencyConflictError, RequestRecord
from signer.worker import Ticket, Worker

__all__ = ["Answer", "Authenticated", "Client", "RouteForbiddenError", "ServiceOptions",
           "SignerService"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """A JSON answer before it is serialised and signed."""

    status: int
    body: Mapping[str, object]


@dataclass(frozen=True)
class ServiceOptions:
    """Tuning with safe defaults (not in signer.toml yet)."""

    tick_s: float = 0.25
    answer_budget: timedelta = timedelta(seconds=2)
    decision_budget: timedelta = timedelta(seconds=30)  # for the worker to take a new ask
    max_attempts: int = 3
    auth_failures_alert_per_min: int = 10
    auth_alert_interval: timedelta = timedelta(minutes=10)
    failover_requests_per_min: int = 30


class SignerService:
    """What the signer does for an authenticated client; safe to call from many threads."""

    def __init__(self, config: SignerConfig, lifecycle: Lifecycle, executor: Executor,
                 worker: Worker, *, clients: Mapping[str, Client],
                 response_key: Ed25519Signer, notifier: Notifier, clock: Clock,
                 options: ServiceOptions | None = None,
                 closing: Sequence[Callable[[], object]] = ()) -> None:
        self.config = config
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.executor = executor
        self.options = options or ServiceOptions()
        self._worker = worker
        self._response_key = response_key
        self._notifier = notifier
        self._clock = clock
        self._closing = list(closing)
        self._lock = threading.Lock()
        self._asks: dict[str, Window] = {}
        self._auth = Authenticator(self.store, clients, max_skew=config.max_skew,
                                   notifier=notifier, clock=clock,
                                   alert_per_min=self.options.auth_failures_alert_per_min,
                                   alert_interval=self.options.auth_alert_interval)

    # ---- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Check the chain id, arm, reconcile (:meth:`reconcile`), then start the worker.

        An unreadable chain is not fatal: the worker retries and requests get 503.

        Raises:
            ChainDataError: a node is on another chain.
        """
        try:
            self.executor.startup()
        except ChainError as e:
            if isinstance(e, ChainDataError) and not self.executor.chain_verified:
                raise
            log.warning("chain not readable at start-up; will retry: %s", e)
        self._worker.start()

    def reconcile(self) -> None:
        """Settle requests a crash left in ``received`` or ``broadcast`` from the chain."""
        self.executor.reconcile()

    def stop(self) -> None:
        """Stop the worker thread after its current step."""
        self._worker.stop()

    def close(self) -> None:
        """Stop the worker, then release what the composition root handed over."""
        self.stop()
        closing, self._closing = self._closing, []  # idempotent: close each thing once
        for close in closing:
            try:
                close()
            except Exception:  # closing the rest still matters
                log.warning("error while closing the signer", exc_info=True)

    # ---- authentication and answers --------------------------------------------------

    def authenticate(self, msg: HttpMessage, route: str) -> Authenticated:
        """Verify ``msg`` and check the route's roles (:meth:`Authenticator.authenticate`).

        Raises:
            AuthError: not authenticated (401), including stale and replayed requests.
            RouteForbiddenError: authenticated, but the role may not use ``route`` (403).
        """
        return self._auth.authenticate(msg, route)

    @property
    def auth_failures(self) -> int:
        """Requests refused as not authentic since the start (for the metrics)."""
        return self._auth.failures_total

    def render(self, auth: Authenticated | None, answer: Answer) -> HttpResponse:
        """Serialise ``answer``; sign it bound to the request's signature when authenticated."""
        body = json.dumps(answer.body, sort_keys=True, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
        if auth is not None:
            unsigned = HttpResponse(answer.status, Headers(headers), body)
            headers.update(sign_response(unsigned, auth.request, self._response_key,
                                         self._clock.now()))
        return HttpResponse(answer.status, Headers(headers), body)

    def _failover_answer(self, record: RequestRecord, note: str = "") -> Answer:
        body = describe_request(self.store, record)
        if note:
            body["note"] = note
        return Answer(http_status(record.state, record.rule), body)

    # ---- POST /v1/failover -----------------------------------------------------------

    def failover(self, auth: Authenticated, body: bytes) -> Answer:
        """Answer a failover request: the worker refuses it, plans an approval, or switches.

        Raises:
            RequestInvalidError: the body does not match the schema (422).
            RateLimitedError: this client asks too often (429).
            IdempotencyConflictError: ``request_id`` reused with another body (409).
            ChainUnavailableError: the signer is not ready or the chain is unreadable (503).
        """
        ask = parse_failover(body)
        self._count_ask(auth.keyid)
        if not self.executor.ready:
            raise ChainUnavailableError("the signer has not checked the chain yet")
        if ask.ask.dry_run:
            return self._dry_run(auth, ask)
        key = ask.idempotency_key(auth.keyid, auth.request.nonce)
        known = self.store.find_by_idempotency_key(key)
        if known is not None:  # a retry: answered from the state, the worker is not needed
            if known.body_sha256 != ask.digest:
                raise IdempotencyConflictError("request_id reused with a different body")
            return self._failover_answer(known)
        outcome = self._decided(self._worker.submit(FreshAsk(
            client_keyid=auth.keyid, idempotency_key=key, digest=ask.digest, ask=ask.ask,
            nonce=auth.request.nonce)))
        record = outcome.record
        if outcome.new and record.state == "broadcast":
            # A short budget for the worker to confirm; the client follows up with GET.
            record = self.lifecycle.wait(record.id, is_final,
                                         self.options.answer_budget.total_seconds())
        return self._failover_answer(record, outcome.note)

    def _decided(self, ticket: Ticket) -> Outcome:
        """Wait for the worker's decision on ``ticket``; re-raise what the decision raised."""
        if not ticket.wait(self.options.decision_budget.total_seconds()):
            if ticket.cancel():
                raise ChainUnavailableError("the signer's worker did not take the request")
            ticket.wait(None)  # taken: the decision is bounded by the RPC timeouts
        if ticket.error is not None:
            raise ticket.error
        assert ticket.outcome is not None  # finish() gives one or the other
        return ticket.outcome

    def _count_ask(self, keyid: str) -> None:
        now = self._clock.now()
        with self._lock:
            window = self._asks.setdefault(keyid, Window(
                timedelta(minutes=1), self.options.failover_requests_per_min))
            count = window.add(now)
        if count > self.options.failover_requests_per_min:
            raise RateLimitedError(f"more than {self.options.failover_requests_per_min} "
                                   "failover requests a minute")

    def _dry_run(self, auth: Authenticated, ask: FailoverRequest) -> Answer:
        """What a real request would get now; nothing is stored but an audit line."""
        now = self._clock.now()
        reading, health = self.executor.read_with_health(preemptive=ask.ask.evidence is not None)
        decision = decide(ask.ask, reading.view, self.executor.history(now), self.config.policy,
                          now, quorum=self.config.quorum, health=health)
        status, body = dry_run_answer(decision, ask.ask, self.config.policy.approval)
        if isinstance(decision, Refuse) and decision.alert:
            notify_safely(self._notifier, "request_refused",
                          f"{self.config.policy.witness}: dry run refused: {decision.reason}")
        if health is not None:
            body["health"] = health.as_json()
        if ask.ask.evidence is not None:
            body["preemptive"] = True
        seen = {} if health is None else {"health": body["health"]}
        self.store.audit("dry_run", auth.keyid, None, decision=body["decision"],
                         target_key=body["target_key"], nonce=auth.request.nonce, **seen)
        return Answer(status, body)

    # ---- reads -----------------------------------------------------------------------

    def status(self, auth: Authenticated) -> Answer:
        """The witness as the signer sees it, its mode, and the open requests."""
        policy, armed = self.config.policy, self.store.get_armed()
        body: dict[str, object] = {
            "witness": policy.witness, "ready": self.executor.ready, "chain": None,
            "approval": policy.approval, "key_mode": policy.key_mode,
            "node_keys": list(policy.node_keys), "min_missed": policy.min_missed,
            "armed": None if armed is None else {
                "baseline_missed": armed.baseline_missed, "armed_key": armed.armed_key,
                "armed_at": armed.armed_at.isoformat(), "rounds": armed.rounds},
            # SECURITY: like get_request, a watcher sees only the requests it sent.
            "open_requests": [describe_request(self.store, r) for state in OPEN_STATES
                              for r in self.lifecycle.in_state(state)
                              if auth.role == "operator" or r.client_keyid == auth.keyid]}
        if auth.role == "operator":
            names = self.node_names()
            body["nodes"] = {k.name: k.public_key for k in self.config.node_keys}
            body["pending"] = [pending_summary(self.store, r, names, armed)
                               for r in self.lifecycle.in_state("pending")]
        try:
            view = self.executor.chain.read_view()
        except ChainError as e:
            log.warning("status: chain unavailable: %s", e)
            return Answer(200, body)
        body["chain"] = {"head_block_num": view.head_block_num, "signing_key": view.signing_key,
                         "total_missed": view.total_missed,
                         "nodes_agreeing": view.nodes_agreeing}
        if armed is not None:
            body["new_misses"] = view.total_missed - armed.baseline_missed
        if self.executor.prober is not None:
            body["preemptive"] = policy.preemptive
            body["health"] = self.executor.prober.snapshot(view.head_block_num).as_json()
        return Answer(200, body)

    def get_request(self, auth: Authenticated, request_id: str) -> Answer:
        """One request; a watcher sees only its own.

        Raises:
            RequestNotFoundError: unknown id, or another client's request for a watcher.
        """
        if auth.role == "operator":  # an operator may type a unique prefix
            request_id = self.lifecycle.resolve(request_id)
        record = self.store.get(request_id)
        # SECURITY: a watcher learns nothing about requests it did not send.
        if record is None or (auth.role != "operator" and record.client_keyid != auth.keyid):
            raise RequestNotFoundError(f"no request {request_id!r} for {auth.keyid}")
        return Answer(200, describe_request(self.store, record))

    # ---- operator verdicts -------------------------------------------------------------

    def approve(self, actor: str, request_id: str, body: bytes = b"") -> Answer:
        """Approve a pending request; the worker executes it after re-checking the chain.

        Raises:
            RequestNotFoundError, ForbiddenError, PolicyError, RequestInvalidError.
        """
        note = parse_verdict(body)
        record = self.lifecycle.verdict(self.lifecycle.resolve(request_id), actor,
                                        self._clock.now(), verdict="approve", note=note)
        self._worker.wake()
        return Answer(200, describe_request(self.store, record))

    def deny(self, actor: str, request_id: str, body: bytes = b"") -> Answer:
        """Deny a pending request; it is never executed.

        Raises:
            RequestNotFoundError, PolicyError, RequestInvalidError.
        """
        note = parse_verdict(body)
        record = self.lifecycle.verdict(self.lifecycle.resolve(request_id), actor,
                                        self._clock.now(), verdict="deny", note=note)
        return Answer(200, describe_request(self.store, record))

    # ---- operator commands: recorded approved, executed by the worker ------------------

    def node_names(self) -> dict[str, str]:
        """The configured node name of each node key."""
        return {k.public_key: k.name for k in self.config.node_keys}

    def operator(self, auth: Authenticated, kind: str, body: bytes) -> Answer:
        """Record an operator's ``arm``/``switch``/``disable``/``enable``; the worker executes it.

        Answers as soon as the request is final or after the answer budget (202/200;
        the client follows up with ``GET /v1/requests/<id>``).

        Raises:
            RequestInvalidError: unknown verb (404) or a bad body (422).
            PolicyError: an unknown node name, or another request is open (409).
            ChainUnavailableError: the signer is not ready or the chain is unreadable (503).
        """
        command = parse_operator(kind, body)
        target = operator_target(command, self.config)
        if not self.executor.ready:
            raise ChainUnavailableError("the signer has not checked the chain yet")
        key = f"op:{auth.keyid}:{auth.request.nonce}"
        busy = self.lifecycle.open_request()
        if busy is not None:
            raise PolicyError(f"[busy] request {busy.id} is {busy.state}; approve, deny or "
                              "wait for it first")
        view = self.executor.chain.read_view()
        record, _ = self.lifecycle.operator_request(
            kind=command.kind, actor=auth.keyid, idempotency_key=key, digest=command.digest,
            witness=self.config.policy.witness, seen_key=view.signing_key, target_key=target,
            force=command.force, now=self._clock.now(), note=command.note)
        self._worker.wake()
        record = self.lifecycle.wait(record.id, is_final,
                                     self.options.answer_budget.total_seconds())
        return self._failover_answer(record)


def operator_target(command: OperatorCommand, config: SignerConfig) -> str | None:
    """The node key ``command`` names (None for ``arm``; the null key for ``disable``).

    Raises:
        PolicyError: no configured node has that name (409; the message lists the names).
    """
    if command.kind == "disable":
        return NULL_KEY
    if command.to is None:
        return None
    key = next((k.public_key for k in config.node_keys if k.name == command.to), None)
    if key is None:
        names = ", ".join(k.name for k in config.node_keys)
        raise PolicyError(f"[unknown_node] no node named {command.to!r}; configured: {names}")
    return key
