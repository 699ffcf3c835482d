"""Confirming a broadcast switch from the chain, and retrying one that expired unincluded.

The executor's last stage, apart because it is its own small state machine over
the attempts of one ``broadcast`` request: included (confirm and re-arm), still
in flight (wait, alert once if slow), expired (note it; decide again on a fresh
reading and send a new transaction, up to ``max_attempts``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.chains import NULL_KEY
from signer.policy import Disable, Switch, rearm
from signer.ports import Inclusion
from signer.records import Armed, RequestRecord, Unresolved

if TYPE_CHECKING:
    from signer.executor import Executor

log = logging.getLogger(__name__)


class Confirmer:
    """Settles ``broadcast`` requests for its :class:`Executor` (which holds the lock)."""

    def __init__(self, executor: Executor, *, confirm_timeout: timedelta,
                 max_attempts: int) -> None:
        self._executor = executor
        self._confirm_timeout = confirm_timeout
        self._max_attempts = max_attempts
        self._warned: set[str] = set()

    def confirm(self, item: Unresolved, now: datetime) -> None:
        """Settle one ``broadcast`` request: confirmed, still waiting, retried or failed.

        Raises:
            ChainError: the chain could not be read; nothing changed.
        """
        ex, lifecycle = self._executor, self._executor.lifecycle
        record, attempts = item.request, item.attempts
        target = record.target_key or NULL_KEY
        # The head is read BEFORE looking for the key: if the head was already past
        # the expiration and the key is still not there, the tx can never land.
        head = ex.chain.head()
        last = attempts[-1] if attempts else None
        found = ex.chain.find_inclusion(last.tx_id if last else "", target)
        if found is not None:
            ex.failpoints.hit("confirmation_seen")
            self._confirmed(record, found, now)
            return
        if last is not None and head.time < last.expiration:
            if now - last.sent_at > self._confirm_timeout and record.id not in self._warned:
                self._warned.add(record.id)
                ex.notify("switch_unconfirmed",
                          f"request {record.id}: tx {last.tx_id} not included after "
                          f"{self._confirm_timeout}; still waiting for it to expire")
            return
        if last is not None:
            lifecycle.expired_unincluded(record, last.attempt, last.tx_id)
        if len(attempts) >= self._max_attempts:
            ex.fail(record, f"{len(attempts)} transaction(s) expired unincluded", now)
            return
        # A new decision, made once, on one fresh reading; the retry is built from it.
        ex.decide_and_send(record, ex.chain.read_witness(), now)

    def _confirmed(self, record: RequestRecord, found: Inclusion, now: datetime) -> None:
        ex = self._executor
        target = found.signing_key
        view = ex.chain.read_view()
        if view.signing_key != target:
            log.warning("request %s: inclusion seen but the view shows %s; retrying",
                        record.id, view.signing_key)
            return
        history = ex.history(now)
        done: Switch | Disable
        if target == NULL_KEY:
            done = Disable("confirmed")
        else:
            keys = ex.policy.node_keys
            wraps = (record.failing_key in keys and target in keys
                     and keys.index(target) <= keys.index(record.failing_key))
            # An operator's switch or enable re-arms: the rotation starts over.
            rounds = 0 if record.kind != "failover" else history.rounds + (1 if wraps else 0)
            done = Switch(target, rounds, "confirmed")
        after = rearm(history, view, done, now)
        armed = Armed(after.baseline_missed, after.armed_key, now, after.rounds)
        if not ex.lifecycle.confirm(record, to_key=target, tx_id=found.tx_id,
                                    block_num=found.block_num, armed=armed, now=now):
            return
        self._warned.discard(record.id)
        log.info("request %s confirmed: %s -> %s in block %d", record.id,
                 ex.label(record.failing_key), ex.label(target), found.block_num)
        ex.notify("switched", f"{ex.policy.witness}: signing key switched {record.failing_key} "
                  f"-> {target} (block {found.block_num}, request {record.id})")
