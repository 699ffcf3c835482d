"""Who may call the signer: request verification, roles per route, and flood alerts.

The service's first step for every ``/v1/*`` request: the RFC 9421 profile
(:func:`shared.httpsig.verify_request`, nonces in SQLite), then the client's role
against the route. Repeated failures alert, bounded under a flood.

A refused request gets a short, unsigned reason (:mod:`shared.authhint`) chosen by
:func:`diagnose` in an order that never depends on whether the claimed keyid is
configured; the log names the claimed keyid (public) and says exactly what failed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared import httpsig_base as base
from shared.authhint import Reason
from shared.clock import Clock
from shared.errors import AuthError, ForbiddenError, ReplayError, StaleRequestError
from shared.httpsig import Ed25519PublicKey, HttpMessage, VerifiedRequest, verify_request
from shared.notify import Notifier
from signer.config import Role
from signer.executor import notify_safely
from signer.store import SqliteNonceStore, Store

log = logging.getLogger(__name__)

# SECURITY: T1 — a watcher key can ask and read, never approve or deny.
ROUTES: Mapping[str, frozenset[Role]] = {
    "failover": frozenset({"watcher"}),
    "status": frozenset({"watcher", "operator"}),
    "request": frozenset({"watcher", "operator"}),
    "approve": frozenset({"operator"}),
    "deny": frozenset({"operator"}),
    "operator": frozenset({"operator"}),  # arm, switch, disable, enable
}


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


class RouteForbiddenError(ForbiddenError):
    """An authenticated client's role may not use this route (403, answer still signed)."""

    def __init__(self, message: str, auth: Authenticated) -> None:
        super().__init__(message)
        self.auth = auth


@dataclass(frozen=True)
class Rejection:
    """Why a request was refused: the public reason, and what stays in the signer's log."""

    reason: Reason
    keyid: str | None  # as the request claims it: public, safe to log
    known_keyid: bool  # SECURITY: log only, never in the answer (no keyid oracle)
    at: datetime  # the signer's clock when it refused (the answer's Date: a skew hint)

    def describe(self) -> str:
        """One log line's worth: the claimed keyid, whether it is configured, the reason."""
        who = "no keyid" if self.keyid is None else (
            f"keyid {self.keyid[:64]!r} ({'configured' if self.known_keyid else 'UNKNOWN'})")
        what = ("signature does not verify" if self.reason == "key_or_signature"
                and self.known_keyid else "no such client" if self.reason == "key_or_signature"
                else self.reason)
        return f"{who}: {what}"


class RejectedRequestError(AuthError):
    """A request failed authentication; carries the :class:`Rejection` (401, unsigned)."""

    def __init__(self, rejection: Rejection, error: AuthError) -> None:
        super().__init__(f"{rejection.describe()}: {error}")
        self.rejection = rejection


def diagnose(msg: HttpMessage, error: AuthError, known: Callable[[str], bool], now: datetime,
             max_skew: timedelta) -> Rejection:
    """Classify why :func:`verify_request` refused ``msg``; pure, a hint only.

    SECURITY: the checks run in an order that never depends on whether the claimed
    keyid is configured — malformed, stale, bad digest, then key-or-signature — so an
    unauthenticated caller cannot tell an unknown keyid from a wrong signature, nor
    probe keyids through the other reasons. ``replay`` is reached only with a valid
    signature, i.e. by someone who already holds a genuine request.
    """
    keyid: str | None = None

    def rejection(reason: Reason) -> Rejection:
        return Rejection(reason, keyid, keyid is not None and known(keyid), now)

    if isinstance(error, ReplayError):
        with contextlib.suppress(AuthError, ValueError, LookupError, TypeError):
            keyid = base.select_signature(msg.headers, known).keyid
        return rejection("replay")
    try:
        chosen = base.select_signature(msg.headers, lambda _keyid: True)
        keyid = chosen.keyid
        base.check_params(chosen.covered.params, int(now.timestamp()),
                          max_skew.total_seconds(), need_nonce=True)
    except StaleRequestError:
        return rejection("stale")
    except (AuthError, ValueError, LookupError, TypeError, ArithmeticError):
        return rejection("malformed")
    if not (chosen.covers("@method") and chosen.covers("content-digest")
            and (chosen.covers("@path") or chosen.covers("@target-uri"))):
        return rejection("malformed")
    try:
        base.check_content_digest(msg.headers.get("content-digest"), msg.body)
    except (AuthError, ValueError, LookupError, TypeError):
        return rejection("bad_digest")
    return rejection("key_or_signature")


_FAILURE_LINES_PER_S = 5  # authentication failures logged one by one per wall second


class Window:
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


class Authenticator:
    """Verifies requests against the configured clients; safe to call from many threads."""

    def __init__(self, store: Store, clients: Mapping[str, Client], *, max_skew: timedelta,
                 notifier: Notifier, clock: Clock, alert_per_min: int,
                 alert_interval: timedelta) -> None:
        self._clients = dict(clients)
        self._keys = {keyid: c.public_key for keyid, c in self._clients.items()}
        self._nonces = SqliteNonceStore(store)
        self._max_skew = max_skew
        self._notifier = notifier
        self._clock = clock
        self._alert_per_min = alert_per_min
        self._alert_interval = alert_interval
        self._lock = threading.Lock()
        self._failures = Window(timedelta(minutes=1), alert_per_min)
        self._last_alert: datetime | None = None
        self.failures_total = 0  # for the metrics
        self._log_second = 0  # the wall second whose failures are being logged
        self._logged = 0  # failure lines logged in that second
        self._unlogged = 0  # failures counted but not logged one by one since then

    def authenticate(self, msg: HttpMessage, route: str) -> Authenticated:
        """Verify ``msg`` (RFC 9421 profile, SQLite nonces) and check the route's roles.

        Raises:
            RejectedRequestError: not authenticated (401), stale and replayed requests
                included; its :class:`Rejection` says why, as far as may be said.
            RouteForbiddenError: authenticated, but the role may not use ``route`` (403).
        """
        now = self._clock.now()
        try:
            verified = verify_request(msg, self._keys, self._nonces, now, self._max_skew)
        except AuthError as e:
            rejected = RejectedRequestError(
                diagnose(msg, e, self._keys.__contains__, now, self._max_skew), e)
            self._failed(now, rejected)
            raise rejected from e
        auth = Authenticated(verified, self._clients[verified.keyid].role)
        if auth.role not in ROUTES.get(route, frozenset()):
            log.warning("client %s (%s) may not use %s", auth.keyid, auth.role, route)
            raise RouteForbiddenError(f"role {auth.role} may not use {route}", auth)
        return auth

    def _failed(self, now: datetime, error: AuthError) -> None:
        with self._lock:
            self.failures_total += 1
            count = self._failures.add(now)
            alert = count > self._alert_per_min and (
                self._last_alert is None or now - self._last_alert >= self._alert_interval)
            if alert:
                self._last_alert = now
            # SECURITY: T3 — under a flood of forged requests one log line each was a
            # quarter of the signer's CPU; log a burst per second, count the rest.
            second = int(now.timestamp())
            unlogged = 0
            if second != self._log_second:
                self._log_second, self._logged = second, 0
                unlogged, self._unlogged = self._unlogged, 0
            log_it = self._logged < _FAILURE_LINES_PER_S
            if log_it:
                self._logged += 1
            else:
                self._unlogged += 1
        if unlogged:
            log.warning("%d more authentication failures were counted but not logged one "
                        "by one", unlogged)
        if log_it:
            log.warning("authentication failed: %s", error)
        if alert:
            notify_safely(self._notifier, "auth_failures",
                          f"more than {count - 1} failed authentications in the last minute "
                          "at the signer")
