"""The watcher's pure decision logic: every rule of decide() and the state transitions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.core import (
    Alert,
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
