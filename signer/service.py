"""The signer service: authenticate, check, decide, answer; handed every collaborator.

No globals, no environment, no Flask: :mod:`signer.http` translates HTTP to
these calls and :mod:`signer.app` composes the real collaborators. Execution
and confirmation live in :mod:`signer.worker`; the request schema and operator
verdicts in :mod:`signer.approvals`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.clock import Clock
from shared.errors import (
    AuthError,
    ChainDataError,
    ChainError,
    ChainUnavailableError,
    ForbiddenError,
    RateLimitedError,
)
from shared.httpsig import (
    Ed25519PublicKey,
    Ed25519Signer,
    Headers,
    HttpMessage,
    HttpResponse,
    VerifiedRequest,
    sign_response,
    verify_request,
)
from shared.notify import Notifier
from signer.approvals import (
    FailoverRequest,
    RequestNotFoundError,
    approve_request,
    deny_request,
    describe_request,
    dry_run_answer,
    failover_status,
    parse_failover,
    parse_verdict,
    pending_notice,
    start_approval,
)
from signer.config import Role, SignerConfig
from signer.policy import Refuse, Switch, decide
from signer.store import (
    FINAL_STATES,
    IdempotencyConflictError,
    RequestRecord,
    SqliteNonceStore,
    Store,
)
from signer.worker import ExecutionChain, Executor, Worker, notify_safely, requests_in

log = logging.getLogger(__name__)

# SECURITY: T1 — a watcher key can ask and read, never approve or deny.
ROUTES: Mapping[str, frozenset[Role]] = {
    "failover": frozenset({"watcher"}),
    "status": frozenset({"watcher", "operator"}),
    "request": frozenset({"watcher", "operator"}),
    "approve": frozenset({"operator"}),
    "deny": frozenset({"operator"}),
}
_OPEN_STATES = ("pending", "approved", "broadcast")


@dataclass(frozen=True)
class Client:
    """A configured API client: its Ed25519 public key and its role."""

    keyid: str
    role: Role
    public_key: Ed25519PublicKey


@dataclass(frozen=True)
class Authenticated:
    """A verified request from a client whose role may use the route."""

    request: VerifiedRequest
    role: Role

    @property
    def keyid(self) -> str:
        """The client's keyid."""
        return self.request.keyid


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
    max_attempts: int = 3
    auth_failures_alert_per_min: int = 10
    auth_alert_interval: timedelta = timedelta(minutes=10)
    failover_requests_per_min: int = 30


class RouteForbiddenError(ForbiddenError):
    """An authenticated client's role may not use this route (403, answer still signed)."""

    def __init__(self, message: str, auth: Authenticated) -> None:
        super().__init__(message)
        self.auth = auth


class _Window:
    """Counts events inside a sliding window, up to ``limit + 1`` (bounded under a flood)."""

    def __init__(self, span: timedelta, limit: int) -> None:
        self._span = span
        self._times: deque[datetime] = deque(maxlen=limit + 1)

    def add(self, now: datetime) -> int:
        """Record an event; return how many are in the window (at most ``limit + 1``)."""
        while self._times and now - self._times[0] >= self._span:
            self._times.popleft()
        self._times.append(now)
        return len(self._times)


class SignerService:
    """What the signer does for an authenticated client; safe to call from many threads."""

    def __init__(self, config: SignerConfig, store: Store, chain: ExecutionChain, *,
                 clients: Mapping[str, Client], response_key: Ed25519Signer,
                 notifier: Notifier, clock: Clock, options: ServiceOptions | None = None,
                 closing: Sequence[Callable[[], object]] = ()) -> None:
        self.config = config
        self.store = store
        self.options = options or ServiceOptions()
        self._chain = chain
        self._clients = dict(clients)
        self._keys = {keyid: c.public_key for keyid, c in self._clients.items()}
        self._nonces = SqliteNonceStore(store)
        self._response_key = response_key
        self._notifier = notifier
        self._clock = clock
        self._closing = list(closing)
        self._lock = threading.Lock()
        self._auth_failures = _Window(timedelta(minutes=1),
                                      self.options.auth_failures_alert_per_min)
        self._last_auth_alert: datetime | None = None
        self._asks: dict[str, _Window] = {}
        self.executor = Executor(store, chain, config.policy, notifier, clock,
                                 quorum=config.quorum, confirm_timeout=config.confirm_timeout,
                                 max_attempts=self.options.max_attempts)
        self._worker = Worker(self.executor, self.options.tick_s)

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

    # ---- authentication --------------------------------------------------------------

    def authenticate(self, msg: HttpMessage, route: str) -> Authenticated:
        """Verify ``msg`` (RFC 9421 profile, SQLite nonces) and check the route's roles.

        Raises:
            AuthError: not authenticated (401), including stale and replayed requests.
            RouteForbiddenError: authenticated, but the role may not use ``route`` (403).
        """
        now = self._clock.now()
        try:
            verified = verify_request(msg, self._keys, self._nonces, now, self.config.max_skew)
        except AuthError as e:
            self._auth_failed(now, e)
            raise
        auth = Authenticated(verified, self._clients[verified.keyid].role)
        if auth.role not in ROUTES.get(route, frozenset()):
            log.warning("client %s (%s) may not use %s", auth.keyid, auth.role, route)
            raise RouteForbiddenError(f"role {auth.role} may not use {route}", auth)
        return auth

    def _auth_failed(self, now: datetime, error: AuthError) -> None:
        with self._lock:
            count = self._auth_failures.add(now)
            alert = count > self.options.auth_failures_alert_per_min and (
                self._last_auth_alert is None
                or now - self._last_auth_alert >= self.options.auth_alert_interval)
            if alert:
                self._last_auth_alert = now
        log.warning("authentication failed (%s): %s", type(error).__name__, error)
        if alert:
            notify_safely(self._notifier, "auth_failures",
                          f"more than {count - 1} failed authentications in the last minute "
                          "at the signer")

    # ---- answers ---------------------------------------------------------------------

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
        return Answer(failover_status(record), body)

    # ---- POST /v1/failover -----------------------------------------------------------

    def failover(self, auth: Authenticated, body: bytes) -> Answer:
        """Answer a failover request: refuse, plan a pending approval, or switch now.

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
        with self.executor.lock:
            key = ask.idempotency_key(auth.keyid, auth.request.nonce)
            known = self.store.find_by_idempotency_key(key)
            if known is not None:
                if known.body_sha256 != ask.digest:
                    raise IdempotencyConflictError("request_id reused with a different body")
                # Same request (request_id retried): same answer, never a second switch.
                return self._failover_answer(known)
            open_request = self._open_request()
            if open_request is not None:
                # SECURITY: T7 — one switch in flight at a time; a second ask joins it.
                return self._failover_answer(open_request, "a failover request is already open")
            record = self._decide_new(auth, ask, key)
        if record.state == "broadcast":
            record = self._await(record)
        return self._failover_answer(record)

    def _open_request(self) -> RequestRecord | None:
        for state in _OPEN_STATES:
            records = requests_in(self.store, state)
            if records:
                return records[0]
        return None

    def _count_ask(self, keyid: str) -> None:
        now = self._clock.now()
        with self._lock:
            window = self._asks.setdefault(keyid, _Window(
                timedelta(minutes=1), self.options.failover_requests_per_min))
            count = window.add(now)
        if count > self.options.failover_requests_per_min:
            raise RateLimitedError(f"more than {self.options.failover_requests_per_min} "
                                   "failover requests a minute")

    def _decide_new(self, auth: Authenticated, ask: FailoverRequest, key: str) -> RequestRecord:
        now = self._clock.now()
        view = self._chain.read_view()  # ChainError: nothing stored, the client may retry
        decision = decide(ask.ask, view, self.executor.history(now), self.config.policy, now,
                          quorum=self.config.quorum)
        record, created = self.store.create_request(
            client_keyid=auth.keyid, idempotency_key=key, body_sha256=ask.digest,
            witness=ask.ask.witness, failing_key=ask.ask.failing_key,
            target_key=ask.ask.target_key, now=now)
        if not created:
            return record
        self.store.audit("request", auth.keyid, record.id, witness=ask.ask.witness,
                         failing_key=ask.ask.failing_key, target_key=ask.ask.target_key,
                         observed_total_missed=ask.ask.observed_total_missed,
                         reason=ask.ask.reason, chain_total_missed=view.total_missed,
                         chain_key=view.signing_key, nonce=auth.request.nonce)
        if isinstance(decision, Refuse):
            return self.executor.refuse(record, decision, now)
        target = decision.target_key if isinstance(decision, Switch) else None
        what = f"{view.signing_key} -> {target or 'the null key (disable)'}"
        plan = start_approval(self.store, self.config.policy, record, target=target, what=what,
                              now=now)
        if plan.mode != "auto":
            notify_safely(self._notifier, "approval_needed",
                          pending_notice(self.config.policy.witness, record.id, what, plan))
        else:
            try:  # the same path the worker takes: re-read, re-decide, build, send
                self.executor.execute(self._current(record.id))
            except ChainError as e:
                log.warning("request %s stays approved: %s", record.id, e)
                self._worker.wake()
        return self._current(record.id)

    def _current(self, request_id: str) -> RequestRecord:
        record = self.store.get(request_id)
        assert record is not None  # rows are never deleted (append-only history)
        return record

    def _await(self, record: RequestRecord) -> RequestRecord:
        """Wait a short budget for the worker to confirm; the client follows up with GET."""
        self._worker.wake()
        deadline = time.monotonic() + self.options.answer_budget.total_seconds()
        while record.state not in FINAL_STATES and time.monotonic() < deadline:
            time.sleep(0.05)
            record = self.store.get(record.id) or record
        return record

    def _dry_run(self, auth: Authenticated, ask: FailoverRequest) -> Answer:
        """What a real request would get now; nothing is stored but an audit line."""
        now = self._clock.now()
        view = self._chain.read_view()
        decision = decide(ask.ask, view, self.executor.history(now), self.config.policy, now,
                          quorum=self.config.quorum)
        status, body = dry_run_answer(decision, ask.ask, self.config.policy.approval)
        if isinstance(decision, Refuse) and decision.alert:
            notify_safely(self._notifier, "request_refused",
                          f"{self.config.policy.witness}: dry run refused: {decision.reason}")
        self.store.audit("dry_run", auth.keyid, None, decision=body["decision"],
                         target_key=body["target_key"], nonce=auth.request.nonce)
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
            "open_requests": [describe_request(self.store, r) for state in _OPEN_STATES
                              for r in requests_in(self.store, state)
                              if auth.role == "operator" or r.client_keyid == auth.keyid]}
        try:
            view = self._chain.read_view()
        except ChainError as e:
            log.warning("status: chain unavailable: %s", e)
            return Answer(200, body)
        body["chain"] = {"head_block_num": view.head_block_num, "signing_key": view.signing_key,
                         "total_missed": view.total_missed,
                         "nodes_agreeing": view.nodes_agreeing}
        if armed is not None:
            body["new_misses"] = view.total_missed - armed.baseline_missed
        return Answer(200, body)

    def get_request(self, auth: Authenticated, request_id: str) -> Answer:
        """One request; a watcher sees only its own.

        Raises:
            RequestNotFoundError: unknown id, or another client's request for a watcher.
        """
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
        record = approve_request(self.store, request_id, actor, self._clock.now(),
                                 parse_verdict(body))
        self._worker.wake()
        return Answer(200, describe_request(self.store, record))

    def deny(self, actor: str, request_id: str, body: bytes = b"") -> Answer:
        """Deny a pending request; it is never executed.

        Raises:
            RequestNotFoundError, PolicyError, RequestInvalidError.
        """
        record = deny_request(self.store, request_id, actor, self._clock.now(),
                              parse_verdict(body))
        return Answer(200, describe_request(self.store, record))
