"""Operator commands: the pure decision, the deny hold, their bodies, ids by prefix, the store."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.chains import NULL_KEY
from shared.errors import RequestInvalidError
from signer.lifecycle import AmbiguousIdError, Lifecycle, RequestNotFoundError, http_status
from signer.messages import node_label, parse_operator, pending_line, pending_summary
from signer.operator_policy import (
    Arm,
    OperatorAsk,
    decide_operator,
    deny_hold_refusal,
)
from signer.policy import (
    ChainView,
    Disable,
    FailoverAsk,
    History,
    PolicyConfig,
    Refuse,
    Switch,
)
from signer.records import Armed
from signer.schema import SCHEMA_VERSION
from signer.store import IllegalTransitionError, Store

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PRIMARY = "STM6PrimaryNodeKeyForTestsOnly111111111111111111111"
BACKUP1 = "STM7Backup1NodeKeyForTestsOnly111111111111111111111"
FOREIGN = "STM4SomeoneElsesKeyNotInTheList11111111111111111111"
MIN = timedelta(minutes=1)
NAMES = {PRIMARY: "primary", BACKUP1: "backup1"}


def make_policy(**changes: Any) -> PolicyConfig:
    """Two keys, active mode, 2 switches an hour, 5 min cooldown, 10 min deny hold."""
    fields: dict[str, Any] = {
        "witness": "alice", "key_mode": "active", "node_keys": (PRIMARY, BACKUP1),
        "min_missed": 2, "max_switches": 2, "window": 60 * MIN, "cooldown": 5 * MIN,
        "max_rounds": 1, "on_exhausted": "hold", "approval": "auto",
        "approval_timeout": 10 * MIN, "veto_window": 2 * MIN, "deny_hold": 10 * MIN}
    fields.update(changes)
    return PolicyConfig(**fields)


def view(key: str = BACKUP1, missed: int = 20, nodes: int = 1) -> ChainView:
    """The chain as the signer read it."""
    return ChainView(1000, key, missed, "https://alice.example", {}, nodes)


def history(*switches: datetime, armed_key: str = BACKUP1) -> History:
    """Armed on ``armed_key`` at 10 misses an hour ago, with ``switches``."""
    return History(10, armed_key, tuple(switches), 1, NOW - 60 * MIN)


def decide(kind: str, target: str | None = None, *, chain: ChainView | None = None,
           hist: History | None = None, seen: str | None = None, force: bool = False,
           busy: str | None = None, **policy: Any) -> Switch | Disable | Arm | Refuse:
    """decide_operator with the defaults of this module."""
    chain = chain or view()
    ask = OperatorAsk(kind, seen or chain.signing_key, target, force)  # type: ignore[arg-type]
    return decide_operator(ask, chain, hist or history(), make_policy(**policy), NOW,
                           busy_with=busy)


# ---- the decision ----------------------------------------------------------------------


def test_switch_back_to_repaired_primary_needs_no_evidence() -> None:
    """An operator's switch goes to the named node with rounds reset, whatever the misses."""
    decision = decide("switch", PRIMARY, chain=view(missed=10))
    assert isinstance(decision, Switch)
    assert (decision.target_key, decision.new_rounds) == (PRIMARY, 0)


@pytest.mark.parametrize(("kind", "target", "chain", "rule"), [
    ("switch", BACKUP1, view(), "already_current"),
    ("switch", FOREIGN, view(), "bad_target"),
    ("switch", PRIMARY, view(FOREIGN), "foreign_key"),
    ("switch", PRIMARY, view(NULL_KEY), "disabled"),
    ("arm", None, view(NULL_KEY), "disabled"),
    ("arm", None, view(FOREIGN), "foreign_key"),
    ("enable", PRIMARY, view(), "not_disabled"),
    ("disable", None, view(NULL_KEY), "disabled"),
    ("switch", PRIMARY, view(nodes=0), "quorum"),
])
def test_operator_refusals_name_their_rule(kind: str, target: str | None, chain: ChainView,
                                          rule: str) -> None:
    """Each refusal of an operator command carries its typed rule."""
    decision = decide(kind, target, chain=chain)
    assert isinstance(decision, Refuse), decision
    assert decision.rule == rule


def test_command_refused_when_the_chain_moved_since_it_was_given() -> None:
    """The key the operator saw must still be on chain at execution (stale_ask)."""
    decision = decide("switch", PRIMARY, seen=PRIMARY)
    assert isinstance(decision, Refuse)
    assert decision.rule == "stale_ask"


def test_old_command_is_not_executed() -> None:
    """A command older than approval_timeout (e.g. recorded while the signer was down) is stale."""
    chain = view()
    old = OperatorAsk("switch", BACKUP1, PRIMARY, asked_at=NOW - 11 * MIN)
    decision = decide_operator(old, chain, history(), make_policy(), NOW)
    assert isinstance(decision, Refuse)
    assert decision.rule == "stale_ask"
    fresh = OperatorAsk("switch", BACKUP1, PRIMARY, asked_at=NOW - 9 * MIN)
    assert isinstance(decide_operator(fresh, chain, history(), make_policy(), NOW), Switch)


def test_another_open_request_blocks_the_command() -> None:
    """One change in flight at a time: an operator command waits for an open request."""
    decision = decide("arm", busy="abc123")
    assert isinstance(decision, Refuse)
    assert (decision.rule, "abc123" in decision.reason) == ("busy", True)


def test_null_key_commands_need_active_mode() -> None:
    """disable and enable are refused in signing mode, with a reason that says why."""
    for kind, target, chain in (("disable", None, view()), ("enable", PRIMARY, view(NULL_KEY))):
        decision = decide(kind, target, chain=chain, key_mode="signing", on_exhausted="hold")
        assert isinstance(decision, Refuse)
        assert decision.rule == "key_mode"
        assert "signing mode" in decision.reason


def test_disable_and_enable_in_active_mode() -> None:
    """disable sets the null key; enable goes from it to a named node."""
    assert isinstance(decide("disable"), Disable)
    enabled = decide("enable", PRIMARY, chain=view(NULL_KEY), hist=history(armed_key=NULL_KEY))
    assert isinstance(enabled, Switch)
    assert enabled.target_key == PRIMARY


def test_arm_takes_the_configured_on_chain_key() -> None:
    """arm is allowed on a configured key even when the signer was armed on another."""
    assert isinstance(decide("arm", hist=history(armed_key=PRIMARY)), Arm)


def test_force_skips_the_cooldown_but_never_the_rate_limit() -> None:
    """--force overrides the cooldown only; the rate limit is not overridable."""
    recent = history(NOW - MIN)
    cooling = decide("switch", PRIMARY, hist=recent)
    assert isinstance(cooling, Refuse)
    assert cooling.rule == "cooldown"
    assert http_status("refused", cooling.rule) == 429
    assert isinstance(decide("switch", PRIMARY, hist=recent, force=True), Switch)
    limited = decide("switch", PRIMARY, hist=history(NOW - 2 * MIN, NOW - MIN), force=True)
    assert isinstance(limited, Refuse)
    assert limited.rule == "rate_limit"


# ---- the deny hold -----------------------------------------------------------------------


def test_denial_holds_for_deny_hold_then_lapses() -> None:
    """A switch is held as denied_recently (409) within deny_hold of a denial, not after."""
    policy, switch = make_policy(), Switch(BACKUP1, 0, "2 misses")
    held = deny_hold_refusal(switch, NOW - 9 * MIN, history(), policy, NOW)
    assert isinstance(held, Refuse)
    assert (held.rule, http_status("refused", held.rule)) == ("denied_recently", 409)
    assert deny_hold_refusal(switch, NOW - 11 * MIN, history(), policy, NOW) == switch


def test_denial_before_the_last_arm_does_not_hold() -> None:
    """A denial from before the signer was (re-)armed was about another outage."""
    armed_after = History(10, PRIMARY, (), 0, NOW - MIN)
    switch = Switch(BACKUP1, 0, "x")
    assert deny_hold_refusal(switch, NOW - 2 * MIN, armed_after, make_policy(), NOW) == switch


def test_denial_does_not_replace_another_refusal() -> None:
    """A refusal keeps its own rule under the hold."""
    refusal = Refuse("no evidence", rule="no_evidence")
    assert deny_hold_refusal(refusal, NOW, history(), make_policy(), NOW) == refusal


# ---- bodies and lines --------------------------------------------------------------------


def test_operator_bodies_are_checked() -> None:
    """switch needs a node name, arm takes none, unknown verbs are 404, extras 422."""
    assert parse_operator("switch", b'{"to": "primary"}').to == "primary"
    assert parse_operator("arm", b"").kind == "arm"
    assert parse_operator("disable", b'{"force": true}').force
    for kind, body, status in (("switch", b"{}", 422), ("arm", b'{"to": "primary"}', 422),
                               ("reboot", b"", 404), ("switch", b'{"to": "p", "x": 1}', 422),
                               ("switch", b'{"to": "p", "force": "yes"}', 422)):
        with pytest.raises(RequestInvalidError) as caught:
            parse_operator(kind, body)
        assert caught.value.status == status


def test_node_labels_never_print_a_full_unknown_key() -> None:
    """Known keys print as node names; an unknown key is abbreviated."""
    assert node_label(NAMES, PRIMARY) == "primary"
    assert node_label(NAMES, NULL_KEY).startswith("null key")
    label = node_label(NAMES, FOREIGN)
    assert FOREIGN not in label
    assert label.startswith(FOREIGN[:9])


# ---- the lifecycle and the store ---------------------------------------------------------


@pytest.fixture
def lifecycle(tmp_path: Path) -> Iterator[Lifecycle]:
    """A lifecycle over a fresh store."""
    with Store(tmp_path / "signer.sqlite3", clock=lambda: NOW) as store:
        yield Lifecycle(store)


def operator_request(lifecycle: Lifecycle, kind: str = "switch", n: int = 1) -> str:
    """Record an operator command; return its id."""
    record, created = lifecycle.operator_request(
        kind=kind, actor="root@host", idempotency_key=f"op:root@host:{n}", digest="d" * 64,
        witness="alice", seen_key=BACKUP1, target_key=PRIMARY if kind == "switch" else None,
        force=False, now=NOW)
    assert created
    return record.id


def test_operator_request_is_recorded_approved_by_the_operator(lifecycle: Lifecycle) -> None:
    """The command is a request of its kind, approved by its actor, with audit lines."""
    record = lifecycle.get(operator_request(lifecycle))
    assert (record.state, record.kind, record.decided_by) == ("approved", "switch", "root@host")
    events = [(a["event"], a["actor"]) for a in lifecycle.store.iter_audit()]
    assert events == [("operator_request", "root@host"), ("approved", "root@host")]


def test_arm_confirms_and_rearms_atomically(lifecycle: Lifecycle) -> None:
    """operator_armed writes the baseline and confirms only an approved arm."""
    switch = lifecycle.get(operator_request(lifecycle, "switch", 1))
    armed = Armed(20, BACKUP1, NOW, 0)
    assert not lifecycle.operator_armed(switch, armed, NOW)
    arm_id = operator_request(lifecycle, "arm", 2)
    assert lifecycle.operator_armed(lifecycle.get(arm_id), armed, NOW)
    assert lifecycle.get(arm_id).state == "confirmed"
    assert lifecycle.store.get_armed() == armed
    assert not lifecycle.operator_armed(lifecycle.get(arm_id), armed, NOW)


def test_ids_resolve_from_unique_prefixes(lifecycle: Lifecycle) -> None:
    """A 6+ character unique prefix names a request; short or unknown ones do not."""
    rid = operator_request(lifecycle)
    assert lifecycle.resolve(rid) == rid
    assert lifecycle.resolve(rid[:6]) == rid
    assert lifecycle.resolve(rid[:8].upper()) == rid
    with pytest.raises(RequestNotFoundError, match="at least 6"):
        lifecycle.resolve(rid[:5])
    with pytest.raises(RequestNotFoundError):
        lifecycle.resolve("ffffff" if not rid.startswith("ffffff") else "000000")


def test_ambiguous_prefix_lists_the_candidates(lifecycle: Lifecycle,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefix shared by several requests is refused (409) with every candidate named."""
    made = iter([uuid.UUID("abcdef01" + "0" * 24), uuid.UUID("abcdef02" + "0" * 24)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(made))  # two ids that share 6 characters
    first, second = operator_request(lifecycle, n=1), operator_request(lifecycle, n=2)
    with pytest.raises(AmbiguousIdError) as caught:
        lifecycle.resolve("abcdef")
    assert first in str(caught.value)
    assert second in str(caught.value)
    assert caught.value.status == 409
    assert lifecycle.resolve("abcdef02") == second


def test_operator_requests_keep_the_state_machine(lifecycle: Lifecycle) -> None:
    """An approved operator request cannot go back to pending: the state machine holds."""
    rid = operator_request(lifecycle)
    with pytest.raises(IllegalTransitionError):
        lifecycle.store.transition(rid, {"approved"}, "pending", "x", NOW)


def test_pending_line_is_one_readable_line(lifecycle: Lifecycle) -> None:
    """pending shows node names, misses since armed, evidence and deadline on one line."""
    store = lifecycle.store
    record, _ = lifecycle.receive(client_keyid="watcher", idempotency_key="rid:w:1",
                                  digest="e" * 64, now=NOW, chain_total_missed=14,
                                  ask=FailoverAsk("alice", PRIMARY, 14, "2 misses since armed"))
    lifecycle.start_approval(record, make_policy(approval="manual"), target=BACKUP1,
                             what="x", now=NOW)
    doc = pending_summary(store, lifecycle.get(record.id), NAMES, Armed(12, PRIMARY, NOW, 0))
    line = pending_line(doc)
    assert "\n" not in line
    assert len(line) < 140
    assert PRIMARY not in line
    assert BACKUP1 not in line
    assert "primary -> backup1" in line
    assert "2 miss(es) since armed" in line
    assert "approve by 12:10:00Z" in line
    assert "2 misses since armed" in line
    assert json.loads(json.dumps(doc))["misses_since_armed"] == 2


def test_schema_2_database_migrates_to_kinds(tmp_path: Path) -> None:
    """A schema-2 database (no kind/force) opens as the current schema; old rows are failovers."""
    with Store(tmp_path / "signer.sqlite3", clock=lambda: NOW) as store:
        Lifecycle(store).receive(client_keyid="watcher", idempotency_key="rid:w:1",
                                 digest="e" * 64, now=NOW,
                                 ask=FailoverAsk("alice", PRIMARY, 1, "x"))
    raw = sqlite3.connect(tmp_path / "signer.sqlite3")
    with raw:
        raw.execute("ALTER TABLE requests DROP COLUMN kind")
        raw.execute("ALTER TABLE requests DROP COLUMN force")
        raw.execute("UPDATE schema_version SET version = 2")
    raw.close()
    with Store(tmp_path / "signer.sqlite3", clock=lambda: NOW) as store:
        (record,) = store.requests_in_state("received")
        assert (record.kind, record.force) == ("failover", 0)
    raw = sqlite3.connect(tmp_path / "signer.sqlite3")
    assert raw.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION == 3
    raw.close()
