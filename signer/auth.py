"""Who may call the signer: request verification, roles per route, and flood alerts.

The service's first step for every ``/v1/*`` request: the RFC 9421 profile
(:func:`shared.httpsig.verify_request`, nonces in SQLite), then the client's role
against the route. Repeated failures alert, bounded under a flood.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.clock import Clock
from shared.errors import AuthError, ForbiddenError
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

    def authenticate(self, msg: HttpMessage, route: str) -> Authenticated:
        """Verify ``msg`` (RFC 9421 profile, SQLite nonces) and check the route's roles.

        Raises:
            AuthError: not authenticated (401), including stale and replayed requests.
            RouteForbiddenError: authenticated, but the role may not use ``route`` (403).
        """
        now = self._clock.now()
        try:
            verified = verify_request(msg, self._keys, self._nonces, now, self._max_skew)
        except AuthError as e:
            self._failed(now, e)
            raise
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
        log.warning("authentication failed (%s): %s", type(error).__name__, error)
        if alert:
            notify_safely(self._notifier, "auth_failures",
                          f"more than {count - 1} failed authentications in the last minute "
                          "at the signer")
