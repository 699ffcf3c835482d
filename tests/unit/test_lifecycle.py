"""The request lifecycle: its transitions, its refusals' typed rule and the HTTP status table."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.errors import ForbiddenError, PolicyError
from signer.lifecycle import (
    IllegalTransitionError,
    Lifecycle,
    RequestNotFoundError,
    http_status,
    is_final,
    refusal_rule,
)
from signer.policy import FailoverAsk, PolicyConfig, Refuse
from signer.records import Armed, RequestRecord
from signer.store import Store

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PRIMARY = "STM6PrimaryNodeKeyForTestsOnly111111111111111111111"
BACKUP1 = "STM7Backup1NodeKeyForTestsOnly111111111111111111111"
MIN = timedelta(minutes=1)


def make_policy(**changes: Any) -> PolicyConfig:
    """A policy over two keys; auto approval unless changed."""
    fields: dict[str, Any] = {
        "witness": "alice", "key_mode": "active", "node_keys": (PRIMARY, BACKUP1),
        "min_missed": 2, "max_switches": 2, "window": 60 * MIN, "cooldown": 5 * MIN,
        "max_rounds": 1, "on_exhausted": "hold", "approval": "auto",
        "approval_timeout": 10 * MIN, "veto_window": 2 * MIN}
    fields.update(changes)
    return PolicyConfig(**fields)


@pytest.fixture
def lifecycle(tmp_path: Path) -> Iterator[Lifecycle]:
    """A lifecycle over a fresh store in a private directory."""
    with Store(tmp_path / "signer.sqlite3", clock=lambda: NOW) as store:
        yield Lifecycle(store)


def received(lifecycle: Lifecycle, key: str = "rid:watcher:1") -> RequestRecord:
    """A new request from the watcher asking to fail over PRIMARY."""
    ask = FailoverAsk("alice", PRIMARY, 12, "2 misses")
    record, created = lifecycle.receive(client_keyid="watcher", idempotency_key=key,
                                        digest="d" * 64, ask=ask, now=NOW)
    assert created
    return record


def approved(lifecycle: Lifecycle) -> RequestRecord:
    """A request the auto policy approved for BACKUP1."""
    record = received(lifecycle)
    lifecycle.start_approval(record, make_policy(), target=BACKUP1, what="switch", now=NOW)
    return lifecycle.get(record.id)


def broadcast(lifecycle: Lifecycle) -> RequestRecord:
    """An approved request whose first transaction was logged as sent."""
    record = approved(lifecycle)
    assert lifecycle.begin_broadcast(record, tx_id="ab" * 20, target_key=BACKUP1,
                                     expiration=NOW + MIN, operation="witness_update",
                                     now=NOW) == 1
    return lifecycle.get(record.id)


def confirmed(lifecycle: Lifecycle) -> RequestRecord:
    """A broadcast request whose switch the chain showed."""
    record = broadcast(lifecycle)
    assert lifecycle.confirm(record, to_key=BACKUP1, tx_id="ab" * 20, block_num=7,
                             armed=Armed(12, BACKUP1, NOW, 0), now=NOW)
    return lifecycle.get(record.id)


def pending(lifecycle: Lifecycle) -> RequestRecord:
    """A request waiting for an operator (manual approval)."""
    record = received(lifecycle)
    lifecycle.start_approval(record, make_policy(approval="manual"), target=BACKUP1,
                             what="switch", now=NOW)
    return lifecycle.get(record.id)


REFUSAL = Refuse("cooling down", 429, rule="cooldown")


def test_straight_path_reaches_confirmed(lifecycle: Lifecycle) -> None:
    """received -> approved -> broadcast -> confirmed, each step visible and final at the end."""
    record = confirmed(lifecycle)
    assert record.state == "confirmed"
    assert is_final(record)
    events = [e["event"] for e in lifecycle.store.iter_audit()]
    assert events == ["request", "approved", "broadcast", "confirmed"]


@pytest.mark.parametrize("stage", [
    pytest.param(confirmed, id="confirmed_is_final"),
    pytest.param(pending, id="pending_needs_a_verdict"),
])
def test_refusing_out_of_order_raises_illegal_transition(lifecycle: Lifecycle,
                                                         stage: Any) -> None:
    """A refusal from a state the machine does not allow raises IllegalTransitionError."""
    record = stage(lifecycle)
    with pytest.raises(IllegalTransitionError):
        lifecycle.refuse(record, REFUSAL, NOW)
    assert lifecycle.get(record.id).state == record.state


def test_refusing_a_broadcast_request_fails_it(lifecycle: Lifecycle) -> None:
    """A refusal at a retry, after a transaction was sent, ends the request as failed."""
    record = broadcast(lifecycle)
    done = lifecycle.refuse(record, REFUSAL, NOW, context="at execution")
    assert done is not None
    assert (done.state, done.rule) == ("failed", "cooldown")
    assert http_status(done.state, done.rule) == 502


def test_refusal_keeps_its_rule_in_a_column(lifecycle: Lifecycle) -> None:
    """The refusal's rule is stored typed; the status comes from it, not from the detail."""
    done = lifecycle.refuse(received(lifecycle), REFUSAL, NOW)
    assert done is not None
    assert (done.state, done.rule) == ("refused", "cooldown")
    assert done.detail == "[cooldown] cooling down"
    assert http_status(done.state, done.rule) == 429


def test_begin_broadcast_refused_unless_approved(lifecycle: Lifecycle) -> None:
    """No intent is logged (so nothing may be sent) for a request that is not approved."""
    record = pending(lifecycle)
    assert lifecycle.begin_broadcast(record, tx_id="ab" * 20, target_key=BACKUP1,
                                     expiration=NOW + MIN, operation="witness_update",
                                     now=NOW) is None
    assert lifecycle.broadcasts() == []


def test_confirm_refused_unless_broadcast(lifecycle: Lifecycle) -> None:
    """Only a request in 'broadcast' can be confirmed; nothing is written otherwise."""
    record = approved(lifecycle)
    assert not lifecycle.confirm(record, to_key=BACKUP1, tx_id="ab" * 20, block_num=7,
                                 armed=Armed(12, BACKUP1, NOW, 0), now=NOW)
    assert lifecycle.store.switches() == []


def test_requester_cannot_approve_its_own_request(lifecycle: Lifecycle) -> None:
    """The client that asked for the switch cannot be the one who approves it (T1)."""
    record = pending(lifecycle)
    with pytest.raises(ForbiddenError):
        lifecycle.verdict(record.id, "watcher", NOW, verdict="approve", note="")
    assert lifecycle.get(record.id).state == "pending"


def test_verdict_on_a_request_no_longer_pending_refused(lifecycle: Lifecycle) -> None:
    """A verdict on an approved request is a PolicyError and changes nothing."""
    record = approved(lifecycle)
    with pytest.raises(PolicyError):
        lifecycle.verdict(record.id, "operator", NOW, verdict="deny", note="")
    assert lifecycle.get(record.id).state == "approved"


def test_unknown_request_not_found(lifecycle: Lifecycle) -> None:
    """Asking for a request that does not exist raises RequestNotFoundError."""
    with pytest.raises(RequestNotFoundError):
        lifecycle.get("nope")


@pytest.mark.parametrize(("approval", "later", "outcome"), [
    pytest.param("manual", 11 * MIN, "expired", id="manual_past_deadline_expires"),
    pytest.param("veto", 3 * MIN, "approved", id="veto_window_over_approves"),
])
def test_sweep_lets_time_decide(lifecycle: Lifecycle, approval: str, later: timedelta,
                                outcome: str) -> None:
    """Time expires a manual request or releases a veto request, once."""
    record = received(lifecycle)
    lifecycle.start_approval(record, make_policy(approval=approval), target=BACKUP1,
                             what="switch", now=NOW)
    assert [s.outcome for s in lifecycle.sweep(NOW + later)] == [outcome]
    assert lifecycle.get(record.id).state == outcome
    assert lifecycle.sweep(NOW + 2 * later) == []


def test_wait_wakes_on_a_transition(lifecycle: Lifecycle) -> None:
    """A waiter is woken by the transition itself, well before its timeout."""
    record = broadcast(lifecycle)

    def settle() -> None:
        lifecycle.confirm(record, to_key=BACKUP1, tx_id="ab" * 20, block_num=7,
                          armed=Armed(12, BACKUP1, NOW, 0), now=NOW)

    timer = threading.Timer(0.05, settle)
    timer.start()
    try:
        done = lifecycle.wait(record.id, is_final, timeout_s=10)
    finally:
        timer.join()
    assert done.state == "confirmed"


def test_wait_returns_at_the_timeout(lifecycle: Lifecycle) -> None:
    """Without a change the waiter gets the request as it is once the budget is spent."""
    record = broadcast(lifecycle)
    assert lifecycle.wait(record.id, is_final, timeout_s=0.05).state == "broadcast"


@pytest.mark.parametrize(("state", "rule", "status"), [
    pytest.param("received", None, 202, id="received"),
    pytest.param("pending", None, 202, id="pending"),
    pytest.param("approved", None, 202, id="approved"),
    pytest.param("broadcast", None, 200, id="broadcast"),
    pytest.param("confirmed", None, 200, id="confirmed"),
    pytest.param("failed", "cooldown", 502, id="failed_whatever_the_rule"),
    pytest.param("expired", None, 409, id="expired"),
    pytest.param("denied", None, 409, id="denied"),
    pytest.param("refused", "witness", 403, id="refused_other_witness"),
    pytest.param("refused", "forbidden", 403, id="refused_forbidden"),
    pytest.param("refused", "rate_limit", 429, id="refused_rate_limit"),
    pytest.param("refused", "cooldown", 429, id="refused_cooldown"),
    pytest.param("refused", "no_evidence", 409, id="refused_no_evidence"),
    pytest.param("refused", "stale_ask", 409, id="refused_stale_ask"),
    pytest.param("refused", None, 409, id="refused_before_schema_v2"),
])
def test_http_status_table(state: str, rule: str | None, status: int) -> None:
    """The one place a request's state and rule become the answer's status."""
    assert http_status(state, rule) == status


@pytest.mark.parametrize(("refusal", "rule"), [
    pytest.param(Refuse("x", 409, rule="quorum"), "quorum", id="named"),
    pytest.param(Refuse("x", 403), "forbidden", id="unnamed_403"),
    pytest.param(Refuse("x", 429), "rate_limit", id="unnamed_429"),
    pytest.param(Refuse("x"), "refused", id="unnamed_409"),
])
def test_refusal_rule_names_every_refusal(refusal: Refuse, rule: str) -> None:
    """A refusal the policy left unnamed still gets a rule whose status is its own."""
    assert refusal_rule(refusal) == rule
    assert http_status("refused", refusal_rule(refusal)) == refusal.status
