"""The one driver of execution: a thread that decides new asks, executes and confirms.

HTTP handlers never touch the chain for a request: they hand the worker a
:class:`Ticket` and wait on its event, then on the request's own changes
(:meth:`signer.lifecycle.Lifecycle.wait`). Each pass also picks up what other
processes wrote to the state (the CLI approving a request), and what time did
(approval windows, expirations).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from shared.errors import ChainDataError, ChainError, FailoverError
from signer.executor import Executor, FreshAsk, Outcome, notify_safely

log = logging.getLogger(__name__)

_STARTUP_RETRY = timedelta(seconds=5)
_T = TypeVar("_T")


class Ticket:
    """One fresh ask handed to the worker, and the event its HTTP handler waits on."""

    def __init__(self, fresh: FreshAsk) -> None:
        self.fresh = fresh
        self.outcome: Outcome | None = None
        self.error: FailoverError | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._state = "queued"  # -> "taken" -> done, or "cancelled"

    def take(self) -> bool:
        """The worker claims the ticket; False if its handler gave up first."""
        with self._lock:
            if self._state != "queued":
                return False
            self._state = "taken"
            return True

    def cancel(self) -> bool:
        """The handler gives up; False if the worker already took the ticket."""
        with self._lock:
            if self._state != "queued":
                return False
            self._state = "cancelled"
            return True

    def finish(self, outcome: Outcome | None, error: FailoverError | None = None) -> None:
        """The worker's answer (or the error the decision raised); wakes the handler."""
        self.outcome, self.error = outcome, error
        self._done.set()

    def wait(self, timeout_s: float | None) -> bool:
        """Wait for :meth:`finish`; True if it came."""
        return self._done.wait(timeout_s)


class Worker:
    """Runs the executor: new asks first, then a :meth:`step`, every ``tick_s`` or when woken."""

    def __init__(self, executor: Executor, tick_s: float = 0.25) -> None:
        self.executor = executor
        self._tick_s = tick_s
        self._inbox: deque[Ticket] = deque()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_startup: datetime | None = None

    # ---- the thread ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="signer-worker", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Run the next pass now rather than at the next tick."""
        self._wake.set()

    def submit(self, fresh: FreshAsk) -> Ticket:
        """Queue a fresh ask for its decision and wake the thread; wait on the ticket."""
        ticket = Ticket(fresh)
        self._inbox.append(ticket)
        self._wake.set()
        return ticket

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the current pass; wait up to ``timeout_s``."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.decide_queued()
                self.step()
            except Exception:  # the worker must outlive any one bad pass
                log.exception("signer worker step failed")
            if not self._inbox:
                self._wake.wait(self._tick_s)

    # ---- one pass -----------------------------------------------------------------------

    def decide_queued(self) -> None:
        """Decide every queued ask, oldest first; each handler gets its outcome or error."""
        while self._inbox:
            ticket = self._inbox.popleft()
            if not ticket.take():
                continue
            try:
                ticket.finish(self.executor.decide_new(ticket.fresh))
            except FailoverError as e:
                ticket.finish(None, e)
            except BaseException:
                ticket.finish(None, FailoverError("internal error while deciding"))
                raise

    def step(self) -> None:
        """Expire or release pending requests, execute approved ones, confirm sent ones."""
        ex = self.executor
        with ex.lock:
            if not ex.ready:
                self._try_startup()
                if not ex.ready:
                    return
            for swept in ex.lifecycle.sweep(ex.clock.now()):
                if swept.outcome == "expired":
                    ex.notify("request_expired",
                              f"failover request {swept.record.id} expired unapproved")
            for record in ex.lifecycle.in_state("approved"):
                self._guarded(ex.execute, record, record.id)
            for item in ex.lifecycle.broadcasts():
                self._guarded(ex.confirm, item, item.request.id)

    @staticmethod
    def _guarded(action: Callable[[_T], None], arg: _T, request_id: str) -> None:
        try:
            action(arg)
        except ChainError as e:  # we learned nothing: try again next tick
            log.warning("request %s: chain problem, will retry: %s", request_id, e)

    def _try_startup(self) -> None:
        ex = self.executor
        now = ex.clock.now()
        if self._next_startup is not None and now < self._next_startup:
            return
        self._next_startup = now + _STARTUP_RETRY
        try:
            ex.startup()
        except ChainError as e:
            if isinstance(e, ChainDataError) and not ex.chain_verified:
                log.critical("signer not ready: %s", e)
                notify_safely(ex.notifier, "signer_not_ready", f"signer refuses to act: {e}")
            else:
                log.warning("signer not ready yet: %s", e)
