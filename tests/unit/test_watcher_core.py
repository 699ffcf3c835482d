"""The watcher's pure decision logic: every rule of decide() and the state transitions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.core import (
    Alert,
    AlertKind,
    Decision,
    FailOver,
    Hold,
    NodeView,
    Observation,
    Policy,
    Rearm,
    WatchState,
    after_decision,
    decide,
    quorum_missed,
    settled,
    with_closed,
    with_confirmed,
    with_pending,
    with_request,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PRIMARY = "STM" + "P" * 50
BACKUP = "STM" + "B" * 50
ARMED = WatchState(phase="armed", armed_key=PRIMARY, baseline_missed=10, armed_at=NOW)
POLICY = Policy(miss_threshold=2, quorum=1)
POLICY_Q2 = Policy(miss_threshold=2, quorum=2)


def node(n: int = 0, *, missed: int = 10, key: str = PRIMARY, fresh: bool = True,
         head: int = 100) -> NodeView:
    """One node's answer."""
    return NodeView(url=f"http://127.0.0.1:1/rpc/{n}", fresh=fresh, head_block_number=head,
                    head_time=NOW, current_aslot=head + 5, signing_key=key, total_missed=missed,
                    last_confirmed_block_num=head - 1)


def obs(*nodes: NodeView, failed: int = 0) -> Observation:
    """An observation of ``nodes`` with ``failed`` nodes that did not answer."""
    return Observation(nodes, tuple(f"http://127.0.0.1:1/dead/{i}" for i in range(failed)))


REQUESTED = replace(ARMED, phase="requested", request_id="r" * 32, request_body="{}",
                    request_observed=12)
# Switched in block 101 on a request based on total_missed 12; the nodes below are at #100.
SWITCHED = replace(ARMED, phase="switched", expected_key=BACKUP, switches=1, request_observed=12,
                   switch_block=101)


@pytest.mark.parametrize(("observation", "state", "policy", "expected"), [
    pytest.param(obs(failed=3), ARMED, POLICY, Alert, id="no-node-answered-alerts"),
    pytest.param(obs(node(0, missed=99, fresh=False, head=100),
                     node(1, missed=99, fresh=False, head=100)), ARMED, POLICY, Alert,
                 id="all-stale-same-head-is-a-halt"),
    pytest.param(obs(node(0, missed=99, fresh=False, head=90),
                     node(1, missed=99, fresh=False, head=100)), ARMED, POLICY, Alert,
                 id="all-stale-different-heads-is-unhealthy"),
    pytest.param(obs(node(0, missed=99), node(1, missed=99, fresh=False)), ARMED, POLICY_Q2,
                 Alert, id="fewer-fresh-than-quorum"),
    pytest.param(obs(node(0, missed=12)), WatchState(), POLICY, Rearm, id="first-arm"),
    pytest.param(obs(node(0, missed=30, key=BACKUP)), ARMED, POLICY, Rearm,
                 id="key-changed-rearms-never-fails-over"),
    pytest.param(obs(node(0, missed=11)), ARMED, POLICY, Hold, id="below-threshold"),
    pytest.param(obs(node(0, missed=12)), ARMED, POLICY, FailOver, id="threshold-met"),
    pytest.param(obs(node(0, missed=112), node(1, missed=10)), ARMED, POLICY_Q2, Hold,
                 id="one-liar-cannot-trigger-with-quorum-2"),
    pytest.param(obs(node(0, missed=13), node(1, missed=12)), ARMED, POLICY_Q2, FailOver,
                 id="two-nodes-agree-on-misses"),
    pytest.param(obs(node(0, missed=99, fresh=False), node(1, missed=10), node(2, missed=10)),
                 ARMED, POLICY_Q2, Hold, id="stale-node-misses-ignored"),
    pytest.param(obs(node(0, missed=12, key=BACKUP), node(1, missed=12)), ARMED, POLICY_Q2, Hold,
                 id="nodes-disagree-on-key"),
    pytest.param(obs(node(0, missed=20)), REQUESTED, POLICY, Hold, id="one-outstanding-request"),
    pytest.param(obs(node(0, missed=13)), SWITCHED, POLICY, Hold,
                 id="switched-waits-for-new-key"),
    pytest.param(obs(node(0, missed=20)), replace(ARMED, phase="stopped"), POLICY, Hold,
                 id="one-shot-stopped"),
    pytest.param(obs(node(0, missed=5)), ARMED, POLICY, Hold, id="below-baseline"),
])
def test_decide_rules(observation: Observation, state: WatchState, policy: Policy,
                      expected: type[Decision]) -> None:
    """Each rule of decide() gives its kind of decision."""
    assert type(decide(observation, state, policy, NOW)) is expected


def test_failover_names_key_and_quorum_count() -> None:
    """A FailOver carries the failing key and the count the quorum agrees on."""
    decision = decide(obs(node(0, missed=15), node(1, missed=13)), ARMED, POLICY_Q2, NOW)
    assert isinstance(decision, FailOver)
    assert decision.failing_key == PRIMARY
    assert decision.observed == 13
    assert "3 new misses" in decision.reason


@pytest.mark.parametrize(("observation", "kind"), [
    pytest.param(obs(failed=2), "rpc_unhealthy", id="down"),
    pytest.param(obs(node(0, fresh=False), node(1, fresh=False)), "chain_halted", id="halted"),
])
def test_condition_alerts_once_then_holds(observation: Observation, kind: str) -> None:
    """A condition alerts when it starts, holds silently, and alerts again after the interval."""
    first = decide(observation, ARMED, POLICY, NOW)
    assert isinstance(first, Alert)
    assert first.kind == kind
    state = after_decision(ARMED, first, NOW)
    assert state.condition == kind
    again = decide(observation, state, POLICY, NOW + timedelta(minutes=1))
    assert isinstance(again, Hold)
    assert again.condition == kind
    later = decide(observation, state, POLICY, NOW + POLICY.realert_interval)
    assert isinstance(later, Alert)


def test_rearm_after_own_switch_is_expected() -> None:
    """The key moving to the key a confirmed switch named is an expected re-arm."""
    decision = decide(obs(node(0, missed=11, key=BACKUP)), SWITCHED, POLICY, NOW)
    assert isinstance(decision, Rearm)
    assert decision.expected
    state = after_decision(SWITCHED, decision, NOW)
    assert (state.phase, state.armed_key, state.baseline_missed) == ("armed", BACKUP, 11)


def test_rearm_by_someone_else_is_unexpected() -> None:
    """A key change nobody asked for re-arms and is flagged for an alert."""
    decision = decide(obs(node(0, missed=11, key=BACKUP)), ARMED, POLICY, NOW)
    assert isinstance(decision, Rearm)
    assert not decision.expected


def test_request_lifecycle_confirmed() -> None:
    """Requested, pending, confirmed: the switch is counted and the watcher waits for the key."""
    state = with_request(ARMED, "r" * 32, '{"x":1}', 12, NOW)
    assert (state.phase, state.request_observed) == ("requested", 12)
    state = with_pending(state, "signer-id-" + "0" * 22)
    assert state.phase == "pending"
    state = with_confirmed(state, BACKUP, "ab" * 20, POLICY, NOW)
    assert (state.phase, state.expected_key, state.switches) == ("switched", BACKUP, 1)
    assert state.request_id is None


def test_one_shot_stops_after_confirmation() -> None:
    """With one_shot the first confirmed switch stops the watcher for good."""
    policy = replace(POLICY, one_shot=True)
    state = with_confirmed(with_request(ARMED, "r" * 32, "{}", 12, NOW), BACKUP, None, policy, NOW)
    assert state.phase == "stopped"
    assert isinstance(decide(obs(node(0, missed=50, key=BACKUP)), state, policy, NOW), Hold)


def test_closed_request_moves_baseline_to_handled_misses() -> None:
    """A refused or failed request re-arms at the misses it was based on: no re-trigger."""
    state = with_closed(with_request(ARMED, "r" * 32, "{}", 12, NOW), NOW)
    assert (state.phase, state.baseline_missed) == ("armed", 12)
    assert isinstance(decide(obs(node(0, missed=12)), state, POLICY, NOW), Hold)
    assert isinstance(decide(obs(node(0, missed=14)), state, POLICY, NOW), FailOver)


def test_settled_needs_quorum_and_agreement() -> None:
    """A poll is settled only with quorum fresh answers that agree."""
    assert settled(obs(node(0), node(1)), 2)
    assert not settled(obs(node(0), node(1, missed=11)), 2)
    assert not settled(obs(node(0)), 2)
    assert quorum_missed((node(0, missed=5), node(1, missed=9), node(2, missed=7)), PRIMARY,
                         2) == 7


# ---- properties --------------------------------------------------------------------------

KEYS = st.sampled_from([PRIMARY, BACKUP])
NODES = st.builds(node, st.integers(0, 4), missed=st.integers(0, 40), key=KEYS,
                  fresh=st.booleans(), head=st.integers(90, 110))
STATES = st.builds(WatchState, phase=st.sampled_from(["unarmed", "armed", "requested",
                                                      "pending", "switched", "stopped"]),
                   armed_key=st.one_of(st.none(), KEYS), baseline_missed=st.integers(0, 40),
                   request_id=st.just("r" * 32), request_body=st.just("{}"))
POLICIES = st.builds(Policy, miss_threshold=st.integers(1, 5), quorum=st.integers(1, 3))


@settings(max_examples=400, deadline=None)
@given(st.lists(NODES, max_size=5), st.integers(0, 3), STATES, POLICIES)
def test_never_fail_over_without_fresh_quorum(nodes: list[NodeView], failed: int,
                                              state: WatchState, policy: Policy) -> None:
    """A FailOver always rests on a quorum of fresh nodes showing enough new misses."""
    decision = decide(obs(*nodes, failed=failed), state, policy, NOW)
    if isinstance(decision, FailOver):
        agreeing = [n for n in nodes if n.fresh and n.signing_key == decision.failing_key
                    and n.total_missed >= decision.observed]
        assert len(agreeing) >= policy.quorum
        assert decision.observed - state.baseline_missed >= policy.miss_threshold
        assert state.phase == "armed"
        assert decision.failing_key == state.armed_key


@settings(max_examples=400, deadline=None)
@given(st.lists(NODES, max_size=5), STATES, POLICIES)
def test_never_fail_over_below_threshold(nodes: list[NodeView], state: WatchState,
                                         policy: Policy) -> None:
    """While no fresh node shows threshold-many misses since the baseline, nothing is asked."""
    limit = state.baseline_missed + policy.miss_threshold
    capped = [replace(n, total_missed=min(n.total_missed, limit - 1)) if n.fresh else n
              for n in nodes]
    assert not isinstance(decide(obs(*capped), state, policy, NOW), FailOver)


# ---- rules around the decisions (issue 10: surviving mutants, the switched trap) --------

FOREIGN = "STM" + "F" * 50


def test_first_arm_is_not_a_key_change() -> None:
    """Arming for the first time is expected: it must not raise a key_changed alert."""
    decision = decide(obs(node(0, missed=12)), WatchState(), POLICY, NOW)
    assert decision == Rearm(PRIMARY, 12, f"armed on {PRIMARY} at total_missed 12",
                             expected=True)


def test_foreign_key_after_a_switch_is_unexpected() -> None:
    """After our switch to BACKUP, a third key on chain is someone else's doing: alert."""
    decision = decide(obs(node(0, missed=12, key=FOREIGN)), SWITCHED, POLICY, NOW)
    assert isinstance(decision, Rearm)
    assert (decision.key, decision.expected) == (FOREIGN, False)


def test_key_change_while_a_request_is_outstanding_is_expected() -> None:
    """The key moving while our request is out is the signer's switch landing first."""
    decision = decide(obs(node(0, missed=12, key=BACKUP)), REQUESTED, POLICY, NOW)
    assert isinstance(decision, Rearm)
    assert decision.expected


@pytest.mark.parametrize(("kind", "before", "after"), [
    pytest.param("rpc_unhealthy", None, "rpc_unhealthy", id="rpc-condition-starts"),
    pytest.param("chain_halted", "rpc_unhealthy", "chain_halted", id="halt-condition-starts"),
    pytest.param("signer_unreachable", "chain_halted", "chain_halted",
                 id="signer-alert-keeps-the-condition"),
    pytest.param("switch_failed", None, None, id="event-alert-is-no-condition"),
])
def test_alert_sets_only_condition_kinds(kind: AlertKind, before: str | None,
                                         after: str | None) -> None:
    """Only RPC and halt alerts are conditions (ended by a "recovered"); others leave it be."""
    state = after_decision(replace(ARMED, condition=before), Alert(kind, "text"), NOW)
    assert state.condition == after
    assert state.alerted == {kind: NOW}


def test_hold_carries_or_clears_the_condition() -> None:
    """A Hold keeps the condition it names and clears it when it names none (recovery)."""
    halted = replace(ARMED, condition="chain_halted")
    assert after_decision(halted, Hold("still", condition="chain_halted"),
                          NOW).condition == "chain_halted"
    assert after_decision(halted, Hold("fine"), NOW).condition is None


def test_pending_keeps_the_signers_request_id() -> None:
    """A pending answer records the signer's request id, which later GETs ask about."""
    state = with_pending(REQUESTED, "signer-id-" + "7" * 22)
    assert (state.phase, state.request_id) == ("pending", "signer-id-" + "7" * 22)
    assert state.request_body == REQUESTED.request_body


def test_confirmed_records_the_switch_block() -> None:
    """A confirmed switch remembers its block: nodes past it must show the new key."""
    state = with_confirmed(REQUESTED, BACKUP, "ab" * 20, POLICY, NOW, block_num=321)
    assert (state.phase, state.switch_block, state.last_tx_id) == ("switched", 321, "ab" * 20)


@pytest.mark.parametrize(("nodes", "state", "policy"), [
    pytest.param((node(0, missed=12, head=101),), SWITCHED, POLICY, id="node-past-switch-block"),
    pytest.param((node(0, missed=14, head=100),), replace(SWITCHED, switch_block=None), POLICY,
                 id="no-block-known-old-key-missing-again"),
    pytest.param((node(0, missed=14, head=100),), SWITCHED, POLICY,
                 id="old-key-missing-again-before-the-block"),
    pytest.param((node(0, missed=12, head=101), node(1, missed=12, head=102)), SWITCHED,
                 POLICY_Q2, id="quorum-past-switch-block"),
])
def test_switched_back_before_seen_alerts_and_rearms(nodes: tuple[NodeView, ...],
                                                     state: WatchState, policy: Policy) -> None:
    """The old key back after our switch is not waited on for ever: re-arm on it and alert."""
    decision = decide(obs(*nodes), state, policy, NOW)
    assert isinstance(decision, Rearm)
    assert (decision.key, decision.expected) == (PRIMARY, False)
    assert decision.baseline_missed == 12  # the misses the request was based on are handled
    rearmed = after_decision(state, decision, NOW)
    more = decide(obs(*(replace(n, total_missed=14) for n in nodes)), rearmed, policy, NOW)
    assert isinstance(more, FailOver)  # two new misses on the old key: ask again


@pytest.mark.parametrize(("nodes", "policy"), [
    pytest.param((node(0, missed=13, head=100),), POLICY, id="node-before-switch-block"),
    pytest.param((node(0, missed=12, head=101), node(1, missed=12, head=100)), POLICY_Q2,
                 id="only-one-of-quorum-two-past-the-block"),
])
def test_switched_waits_while_nodes_lag(nodes: tuple[NodeView, ...], policy: Policy) -> None:
    """Nodes that have not applied the switch block yet are waited for, silently."""
    assert isinstance(decide(obs(*nodes), SWITCHED, policy, NOW), Hold)


LATER = NOW + timedelta(minutes=5)
PENDING = replace(REQUESTED, phase="pending", requested_at=NOW, condition="rpc_unhealthy")


# Callables: a transition must run inside the test, not when the module is collected.
@pytest.mark.parametrize(("transition", "expected"), [
    pytest.param(lambda: after_decision(PENDING, Rearm(BACKUP, 14, "moved", expected=True),
                                        LATER),
                 WatchState(phase="armed", armed_key=BACKUP, baseline_missed=14, armed_at=LATER),
                 id="rearm-forgets-the-request"),
    pytest.param(lambda: after_decision(SWITCHED, Rearm(BACKUP, 12, "moved", expected=True),
                                        LATER),
                 replace(SWITCHED, phase="armed", armed_key=BACKUP, baseline_missed=12,
                         armed_at=LATER, request_observed=None, expected_key=None),
                 id="rearm-after-switch-forgets-the-expected-key"),
    pytest.param(lambda: after_decision(replace(SWITCHED, condition="chain_halted"),
                                        FailOver("x", PRIMARY, 12), LATER),
                 SWITCHED, id="failover-only-clears-the-condition"),
    pytest.param(lambda: with_request(replace(ARMED, condition="rpc_unhealthy"), "r" * 32, "{}",
                                      12, LATER),
                 replace(ARMED, phase="requested", request_id="r" * 32, request_body="{}",
                         requested_at=LATER, request_observed=12), id="request"),
    pytest.param(lambda: with_confirmed(PENDING, BACKUP, "ab" * 20, POLICY, LATER, block_num=7),
                 replace(PENDING, phase="switched", expected_key=BACKUP, switch_block=7,
                         last_switch_at=LATER, last_tx_id="ab" * 20, switches=1, request_id=None,
                         request_body=None, requested_at=None), id="confirmed"),
    pytest.param(lambda: with_closed(PENDING, LATER),
                 replace(ARMED, baseline_missed=12, armed_at=LATER, condition="rpc_unhealthy"),
                 id="closed"),
])
def test_transitions_set_every_field(transition: Callable[[], WatchState],
                                     expected: WatchState) -> None:
    """Each transition leaves exactly the fields it should: no stale request, times set."""
    assert transition() == expected


@pytest.mark.parametrize(("observation", "policy", "kind"), [
    pytest.param(obs(node(0, fresh=False, head=90), node(1, fresh=False, head=100)), POLICY,
                 "rpc_unhealthy", id="stale-on-different-heads-is-no-halt"),
    pytest.param(obs(node(0, fresh=False, head=100), node(1, fresh=False, head=100),
                     node(2, fresh=False, head=90)), POLICY, "chain_halted",
                 id="two-of-three-stuck-together-is-a-halt"),
    pytest.param(obs(node(0, missed=99), node(1, fresh=False)), POLICY_Q2, "rpc_unhealthy",
                 id="fewer-fresh-than-quorum"),
])
def test_condition_kind_and_repeat(observation: Observation, policy: Policy, kind: str) -> None:
    """Each unhealthy view names its condition, and repeating it within the interval holds."""
    first = decide(observation, ARMED, policy, NOW)
    assert isinstance(first, Alert)
    assert first.kind == kind
    again = decide(observation, after_decision(ARMED, first, NOW), policy, LATER)
    assert again == Hold(first.text, condition=kind)


def test_quorum_missed_needs_quorum_values() -> None:
    """Fewer nodes on the key than the quorum agree on nothing."""
    assert quorum_missed((node(0, missed=15),), PRIMARY, 2) is None


# ---- issue 10, second mutation run: the rules the first round of tests left open --------


@pytest.mark.parametrize("state", [
    pytest.param(replace(ARMED, phase="unarmed", baseline_missed=0), id="unarmed-holding-a-key"),
    pytest.param(replace(ARMED, armed_key=None), id="armed-without-a-key"),
])
def test_unarmed_or_keyless_state_takes_a_fresh_baseline(state: WatchState) -> None:
    """A state file that says "unarmed" or names no armed key (an operator's edit, an old
    file) re-arms on the key on chain: no miss counted against a stale baseline, no
    key_changed alert."""
    decision = decide(obs(node(0, missed=12)), state, POLICY, NOW)
    assert decision == Rearm(PRIMARY, 12, f"armed on {PRIMARY} at total_missed 12",
                             expected=True)


@pytest.mark.parametrize(("observation", "policy", "text"), [
    pytest.param(obs(failed=3), POLICY, "no RPC node answered (3 failed)", id="no-answer"),
    pytest.param(obs(node(0, fresh=False, head=100), node(1, fresh=False, head=100)), POLICY,
                 "chain halted: head stuck at #100 on 2 node(s)", id="halted"),
    pytest.param(obs(node(0, fresh=False, head=90), node(1, fresh=False, head=100)), POLICY,
                 "every RPC node that answered is stale", id="stale"),
    pytest.param(obs(node(0, missed=99), node(1, fresh=False)), POLICY_Q2,
                 "1 fresh RPC node(s), quorum is 2", id="below-quorum"),
])
def test_condition_alert_text_says_what_is_wrong(observation: Observation, policy: Policy,
                                                 text: str) -> None:
    """The alert a human receives names the condition's facts (the daemon annotates and
    sends this text; a missing text would break it)."""
    decision = decide(observation, ARMED, policy, NOW)
    assert isinstance(decision, Alert)
    assert decision.text == text


def test_key_change_reason_names_both_keys() -> None:
    """The key_changed alert is built from the re-arm reason: it names the old and new key."""
    decision = decide(obs(node(0, missed=11, key=BACKUP)), ARMED, POLICY, NOW)
    assert isinstance(decision, Rearm)
    assert decision.reason == f"signing key changed from {PRIMARY} to {BACKUP}"


@pytest.mark.parametrize(("state", "where"), [
    pytest.param(SWITCHED, " in block #101", id="block-known"),
    pytest.param(replace(SWITCHED, switch_block=None), "", id="block-unknown"),
])
def test_switched_back_reason_names_the_switch(state: WatchState, where: str) -> None:
    """The alert for a switch that was undone names the key back on chain, the key switched
    to and, when known, the block the switch was seen in (never "#None")."""
    decision = decide(obs(node(0, missed=14, head=101)), state, POLICY, NOW)
    assert isinstance(decision, Rearm)
    assert decision.reason == (f"signing key is {PRIMARY} again after the switch to "
                               f"{BACKUP}{where}")


BLOCKED = replace(PENDING, request_preemptive=True, preempt_blocked="primary=down")


@pytest.mark.parametrize(("transition", "expected"), [
    pytest.param(lambda: after_decision(BLOCKED, Rearm(BACKUP, 14, "moved", expected=True),
                                        LATER),
                 WatchState(phase="armed", armed_key=BACKUP, baseline_missed=14, armed_at=LATER),
                 id="rearm-forgets-the-preemptive-request-and-its-block"),
    pytest.param(lambda: with_closed(replace(PENDING, preempt_blocked="old"), LATER,
                                     picture="new"),
                 replace(ARMED, baseline_missed=12, armed_at=LATER, condition="rpc_unhealthy",
                         preempt_blocked="old"),
                 id="closed-reactive-request-leaves-the-block"),
    pytest.param(lambda: with_closed(BLOCKED, LATER, picture="new"),
                 replace(ARMED, baseline_missed=12, armed_at=LATER, condition="rpc_unhealthy",
                         preempt_blocked="new"),
                 id="closed-preemptive-request-blocks-its-picture"),
])
def test_transitions_clear_the_preemption_fields(transition: Callable[[], WatchState],
                                                 expected: WatchState) -> None:
    """A re-arm or a closed request leaves no pre-emptive flag behind; only a pre-emptive
    request's end blocks the health picture it was refused on."""
    assert transition() == expected


def test_switched_without_request_count_counts_from_the_baseline() -> None:
    """A switched state that lacks the request's count (an older state file) counts the
    old key's misses from the armed baseline instead."""
    state = replace(SWITCHED, request_observed=None)
    assert isinstance(decide(obs(node(0, missed=11, head=100)), state, POLICY, NOW), Hold)
    decision = decide(obs(node(0, missed=12, head=100)), state, POLICY, NOW)
    assert isinstance(decision, Rearm)
    assert (decision.key, decision.baseline_missed, decision.expected) == (PRIMARY, 10, False)
