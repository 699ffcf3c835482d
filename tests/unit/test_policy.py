"""The signer's policy: every rule of decide(), the config checks, rearm and approval."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.chains import NULL_KEY
from shared.errors import (
    ChainDataError,
    ConfigError,
    ForbiddenError,
    PolicyError,
    RateLimitedError,
)
from signer.policy import (
    Approval,
    ChainView,
    Disable,
    FailoverAsk,
    History,
    PolicyConfig,
    Refuse,
    Switch,
    approval_plan,
    arm,
    decide,
    rearm,
    resolve_pending,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PRIMARY = "STM6PrimaryNodeKeyForTestsOnly111111111111111111111"
BACKUP1 = "STM7Backup1NodeKeyForTestsOnly111111111111111111111"
BACKUP2 = "STM8Backup2NodeKeyForTestsOnly111111111111111111111"
BACKUP3 = "STM5Backup3NodeKeyForTestsOnly111111111111111111111"
FOREIGN = "STM4SomeoneElsesKeyNotInTheList11111111111111111111"
KEYS = (PRIMARY, BACKUP1, BACKUP2)
MIN = timedelta(minutes=1)


def make_policy(**changes: Any) -> PolicyConfig:
    """Build the test policy: three keys, 2 misses, 2 switches an hour, 5 min cooldown."""
    fields: dict[str, Any] = {
        "witness": "alice", "key_mode": "active", "node_keys": KEYS, "min_missed": 2,
        "max_switches": 2, "window": 60 * MIN, "cooldown": 5 * MIN, "max_rounds": 1,
        "on_exhausted": "hold", "approval": "auto", "approval_timeout": 10 * MIN,
        "veto_window": 2 * MIN,
    }
    fields.update(changes)
    return PolicyConfig(**fields)


def make_chain(key: str = PRIMARY, total_missed: int = 12, nodes: int = 1) -> ChainView:
    """Build what the signer read: by default 2 misses above the baseline of 10."""
    return ChainView(head_block_num=1000, signing_key=key, total_missed=total_missed,
                     url="https://alice.example", props={"account_creation_fee": "3.000 HIVE"},
                     nodes_agreeing=nodes)


def make_ask(**changes: Any) -> FailoverAsk:
    """Build the watcher's request for a failover of PRIMARY."""
    fields: dict[str, Any] = {"witness": "alice", "failing_key": PRIMARY,
                              "observed_total_missed": 12, "reason": "2 misses since armed"}
    fields.update(changes)
    return FailoverAsk(**fields)


def make_history(**changes: Any) -> History:
    """Build a history armed on PRIMARY at total_missed 10 with no switches."""
    fields: dict[str, Any] = {"baseline_missed": 10, "armed_key": PRIMARY}
    fields.update(changes)
    return History(**fields)


REFUSALS = [
    pytest.param({"witness": "bob"}, {}, {}, {}, 1, 403, "witness", True, id="wrong_witness"),
    pytest.param({}, {"nodes": 1}, {}, {}, 2, 409, "quorum", False, id="quorum"),
    pytest.param({"failing_key": NULL_KEY}, {"key": NULL_KEY}, {"armed_key": NULL_KEY}, {}, 1,
                 409, "disabled", False, id="disabled"),
    pytest.param({"failing_key": FOREIGN}, {"key": FOREIGN}, {}, {}, 1, 409, "foreign_key",
                 True, id="foreign_key"),
    pytest.param({"failing_key": BACKUP1}, {}, {}, {}, 1, 409, "stale_ask", False,
                 id="key_already_changed"),
    pytest.param({"failing_key": BACKUP1}, {"key": BACKUP1}, {}, {}, 1, 409, "not_armed", True,
                 id="baseline_armed_on_other_key"),
    pytest.param({}, {"total_missed": 5}, {}, {}, 1, 409, "chain_regressed", True,
                 id="total_missed_went_down"),
    pytest.param({}, {"total_missed": 11}, {}, {}, 1, 409, "no_evidence", False,
                 id="no_evidence"),
    pytest.param({"observed_total_missed": 99}, {"total_missed": 10}, {}, {}, 1, 409,
                 "no_evidence", False, id="watcher_claims_misses_chain_shows_none"),
    pytest.param({}, {}, {"switch_times": (NOW - 50 * MIN, NOW - 30 * MIN)}, {}, 1, 429,
                 "rate_limit", False, id="rate_limit"),
    pytest.param({}, {}, {"switch_times": (NOW - 4 * MIN,)}, {}, 1, 429, "cooldown", False,
                 id="cooldown"),
    pytest.param({}, {}, {"switch_times": (NOW + MIN,)}, {}, 1, 429, "cooldown", False,
                 id="cooldown_switch_in_future"),
    pytest.param({"target_key": FOREIGN}, {}, {}, {}, 1, 409, "bad_target", True,
                 id="target_outside_list"),
    pytest.param({"target_key": NULL_KEY}, {}, {}, {}, 1, 409, "bad_target", True,
                 id="target_null_key"),
    pytest.param({"target_key": PRIMARY}, {}, {}, {}, 1, 409, "bad_target", False,
                 id="target_is_current"),
    pytest.param({"failing_key": BACKUP2}, {"key": BACKUP2}, {"armed_key": BACKUP2, "rounds": 1},
                 {}, 1, 409, "exhausted", True, id="exhausted_hold"),
    pytest.param({"failing_key": BACKUP2}, {"key": BACKUP2}, {"armed_key": BACKUP2},
                 {"max_rounds": 0}, 1, 409, "exhausted", True, id="no_wrap_allowed"),
    pytest.param({}, {}, {}, {"node_keys": (PRIMARY,)}, 1, 409, "exhausted", True,
                 id="single_key_hold"),
]


@pytest.mark.parametrize(("ask", "chain", "history", "policy", "quorum", "status", "rule",
                          "alert"), REFUSALS)
def test_refusal(*, ask: dict[str, Any], chain: dict[str, Any], history: dict[str, Any],
                 policy: dict[str, Any], quorum: int, status: int, rule: str,
                 alert: bool) -> None:
    """Each rule refuses with its own status, rule name, alert flag and error class."""
    decision = decide(make_ask(**ask), make_chain(**chain), make_history(**history),
                      make_policy(**policy), NOW, quorum=quorum)
    assert isinstance(decision, Refuse)
    assert (decision.status, decision.rule, decision.alert) == (status, rule, alert)
    error = decision.as_error()
    expected = {403: ForbiddenError, 409: PolicyError, 429: RateLimitedError}[status]
    assert type(error) is expected
    assert error.status == status


SWITCHES = [
    pytest.param({}, {}, {}, {}, BACKUP1, 0, id="next_key"),
    pytest.param({"target_key": BACKUP2}, {}, {}, {}, BACKUP2, 0, id="named_target"),
    pytest.param({"failing_key": BACKUP2}, {"key": BACKUP2}, {"armed_key": BACKUP2}, {},
                 PRIMARY, 1, id="wrap_counts_a_round"),
    pytest.param({"failing_key": BACKUP1, "target_key": PRIMARY}, {"key": BACKUP1},
                 {"armed_key": BACKUP1}, {}, PRIMARY, 1, id="named_earlier_key_counts_a_round"),
    pytest.param({}, {}, {"switch_times": (NOW - 5 * MIN,)}, {}, BACKUP1, 0,
                 id="cooldown_elapsed"),
    pytest.param({}, {}, {"switch_times": (NOW - 60 * MIN, NOW - 10 * MIN)}, {}, BACKUP1, 0,
                 id="window_slid_past_old_switch"),
    pytest.param({}, {"nodes": 3}, {}, {}, BACKUP1, 0, id="quorum_met"),
    pytest.param({"dry_run": True}, {}, {}, {}, BACKUP1, 0, id="dry_run_same_answer"),
]


@pytest.mark.parametrize(("ask", "chain", "history", "policy", "target", "rounds"), SWITCHES)
def test_switch(*, ask: dict[str, Any], chain: dict[str, Any], history: dict[str, Any],
                policy: dict[str, Any], target: str, rounds: int) -> None:
    """With evidence and within limits the signer picks the expected key and round."""
    decision = decide(make_ask(**ask), make_chain(**chain), make_history(**history),
                      make_policy(**policy), NOW, quorum=chain.get("nodes", 1))
    assert isinstance(decision, Switch)
    assert (decision.target_key, decision.new_rounds) == (target, rounds)


@pytest.mark.parametrize("node_keys", [pytest.param(KEYS, id="rotation_exhausted"),
                                       pytest.param((BACKUP2,), id="single_key")])
def test_exhausted_disable(node_keys: tuple[str, ...]) -> None:
    """An exhausted rotation disables the witness when on_exhausted is 'disable'."""
    decision = decide(make_ask(failing_key=BACKUP2), make_chain(key=BACKUP2),
                      make_history(armed_key=BACKUP2, rounds=1),
                      make_policy(node_keys=node_keys, on_exhausted="disable"), NOW)
    assert isinstance(decision, Disable)


def test_watcher_count_mismatch_is_reported_not_used() -> None:
    """The watcher's total_missed never decides, but a mismatch is named in the reason."""
    decision = decide(make_ask(observed_total_missed=0), make_chain(), make_history(),
                      make_policy(), NOW)
    assert isinstance(decision, Switch)
    assert "watcher reported total_missed=0" in decision.reason


def test_watcher_reason_is_quoted_and_truncated() -> None:
    """The watcher's free text lands in the reason quoted and cut, so it cannot forge lines."""
    decision = decide(make_ask(reason="x\nFAKE LOG LINE" + "y" * 500), make_chain(),
                      make_history(), make_policy(), NOW)
    assert isinstance(decision, Switch)
    assert "\n" not in decision.reason
    assert len(decision.reason) < 400


CONFIG_ERRORS = [
    pytest.param({"witness": "Alice!"}, "witness", id="bad_witness"),
    pytest.param({"key_mode": "owner"}, "key_mode", id="bad_key_mode"),
    pytest.param({"node_keys": ()}, "node_keys", id="no_keys"),
    pytest.param({"node_keys": (PRIMARY, PRIMARY)}, "node_keys", id="duplicate_key"),
    pytest.param({"node_keys": (PRIMARY, NULL_KEY)}, "node_keys", id="null_key_listed"),
    pytest.param({"node_keys": ("TST6abc",)}, "node_keys", id="wrong_prefix"),
    pytest.param({"min_missed": 0}, "min_missed", id="min_missed_zero"),
    pytest.param({"min_missed": True}, "min_missed", id="min_missed_bool"),
    pytest.param({"max_switches": 0}, "max_switches", id="max_switches_zero"),
    pytest.param({"window": timedelta(0)}, "window", id="empty_window"),
    pytest.param({"cooldown": -MIN}, "cooldown", id="negative_cooldown"),
    pytest.param({"max_rounds": -1}, "max_rounds", id="negative_rounds"),
    pytest.param({"on_exhausted": "panic"}, "on_exhausted", id="bad_on_exhausted"),
    pytest.param({"on_exhausted": "disable", "key_mode": "signing"}, "on_exhausted",
                 id="disable_needs_active"),
    pytest.param({"approval": "never"}, "approval", id="bad_approval"),
    pytest.param({"approval_timeout": timedelta(0)}, "approval_timeout", id="no_timeout"),
    pytest.param({"veto_window": timedelta(0)}, "veto_window", id="no_veto_window"),
    pytest.param({"preemptive": "yes"}, "preemptive", id="preemptive_not_bool"),
    pytest.param({"node_names": ("primary", "backup1")}, "node_names", id="node_names_short"),
    pytest.param({"deny_hold": -MIN}, "deny_hold", id="negative_deny_hold"),
]


@pytest.mark.parametrize(("changes", "field"), CONFIG_ERRORS)
def test_config_error(changes: dict[str, Any], field: str) -> None:
    """An invalid policy is refused at construction with a ConfigError naming the field."""
    with pytest.raises(ConfigError) as caught:
        make_policy(**changes)
    assert caught.value.field == field


def test_rearm_after_switch() -> None:
    """A confirmed switch moves the baseline and armed key and records the switch."""
    switch = Switch(BACKUP1, 0, "test")
    history = rearm(make_history(rounds=0), make_chain(key=BACKUP1, total_missed=13), switch, NOW)
    assert history == History(13, BACKUP1, (NOW,), 0)


def test_rearm_after_disable() -> None:
    """A confirmed disable arms on the null key and keeps the round count."""
    history = rearm(make_history(rounds=1), make_chain(key=NULL_KEY), Disable("test"), NOW)
    assert (history.armed_key, history.rounds, history.switch_times) == (NULL_KEY, 1, (NOW,))


def test_rearm_refuses_unconfirmed_key() -> None:
    """Re-arming on a chain that does not show the new key is a ChainDataError."""
    with pytest.raises(ChainDataError):
        rearm(make_history(), make_chain(key=PRIMARY), Switch(BACKUP1, 0, "test"), NOW)


def test_arm_resets_rounds_keeps_switches() -> None:
    """An operator re-arm restarts the rotation but not the rate limit."""
    previous = make_history(switch_times=(NOW,), rounds=1)
    history = arm(make_chain(key=BACKUP1, total_missed=20), previous)
    assert history == History(20, BACKUP1, (NOW,), 0)


@pytest.mark.parametrize(("mode", "expected"), [
    pytest.param("auto", Approval("auto", "approved", "watcher", execute_at=NOW), id="auto"),
    pytest.param("manual", Approval("manual", "pending", "watcher", expires_at=NOW + 10 * MIN),
                 id="manual"),
    pytest.param("veto", Approval("veto", "pending", "watcher", execute_at=NOW + 2 * MIN),
                 id="veto"),
])
def test_approval_plan(mode: str, expected: Approval) -> None:
    """Each approval mode starts in its own state with its own deadline."""
    assert approval_plan(make_policy(approval=mode), NOW, "watcher") == expected


MANUAL = Approval("manual", "pending", "watcher", expires_at=NOW + 10 * MIN)
VETO = Approval("veto", "pending", "watcher", execute_at=NOW + 2 * MIN)


@pytest.mark.parametrize(("state", "later", "verdict", "status"), [
    pytest.param(MANUAL, MIN, "approve", "approved", id="manual_approved_in_time"),
    pytest.param(MANUAL, 10 * MIN, "approve", "expired", id="manual_approved_too_late"),
    pytest.param(MANUAL, 11 * MIN, None, "expired", id="manual_expired"),
    pytest.param(MANUAL, MIN, None, "pending", id="manual_still_pending"),
    pytest.param(MANUAL, 11 * MIN, "deny", "denied", id="manual_deny_wins"),
    pytest.param(VETO, MIN, None, "pending", id="veto_window_open"),
    pytest.param(VETO, 2 * MIN, None, "due", id="veto_due"),
    pytest.param(VETO, MIN, "deny", "denied", id="veto_denied"),
    pytest.param(VETO, 3 * MIN, "deny", "denied", id="veto_deny_before_execution"),
    pytest.param(VETO, MIN, "approve", "approved", id="veto_approved_early"),
    pytest.param(replace(VETO, status="approved"), MIN, None, "approved", id="final_unchanged"),
])
def test_resolve_pending(state: Approval, later: timedelta, verdict: Any, status: str) -> None:
    """Time and an operator's verdict move a pending approval as documented."""
    resolved = resolve_pending(state, NOW + later, verdict, "operator" if verdict else None)
    assert resolved.status == status
    assert resolved.should_execute == (status in ("approved", "due"))


def test_requester_cannot_approve_itself() -> None:
    """The client that asked for a switch cannot approve it (T1)."""
    with pytest.raises(ForbiddenError):
        resolve_pending(MANUAL, NOW, "approve", "watcher")


def test_verdict_needs_identity() -> None:
    """An anonymous verdict is refused."""
    with pytest.raises(ForbiddenError):
        resolve_pending(MANUAL, NOW, "approve", None)


def test_verdict_on_final_state_conflicts() -> None:
    """Approving a request that is no longer pending is a 409 PolicyError."""
    with pytest.raises(PolicyError) as caught:
        resolve_pending(replace(MANUAL, status="denied"), NOW, "approve", "operator")
    assert type(caught.value) is PolicyError
    assert caught.value.status == 409


# --- properties ------------------------------------------------------------

POOL = (PRIMARY, BACKUP1, BACKUP2, BACKUP3)
ANY_KEY = st.sampled_from((*POOL, NULL_KEY, FOREIGN))


@st.composite
def policies(draw: st.DrawFn) -> PolicyConfig:
    """Draw any valid policy over the key pool."""
    mode, exhausted = draw(st.sampled_from([("active", "disable"), ("active", "hold"),
                                            ("signing", "hold")]))
    return make_policy(
        key_mode=mode, on_exhausted=exhausted,
        node_keys=tuple(draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=4,
                                      unique=True))),
        min_missed=draw(st.integers(1, 5)), max_switches=draw(st.integers(1, 4)),
        window=draw(st.integers(1, 180)) * MIN, cooldown=draw(st.integers(0, 60)) * MIN,
        max_rounds=draw(st.integers(0, 3)))


@st.composite
def cases(draw: st.DrawFn) -> tuple[PolicyConfig, FailoverAsk, ChainView, History]:
    """Draw a policy, an ask, a chain reading and a history, often consistent with each other."""
    policy = draw(policies())
    key = draw(st.sampled_from(policy.node_keys) | ANY_KEY)
    chain = make_chain(key=key, total_missed=draw(st.integers(0, 30)))
    some_key = st.just(key) | ANY_KEY
    ask = make_ask(failing_key=draw(some_key), observed_total_missed=draw(st.integers(0, 30)),
                   target_key=draw(st.none() | st.sampled_from(policy.node_keys) | ANY_KEY))
    times = draw(st.lists(st.integers(-10, 300).map(lambda m: NOW - m * MIN), max_size=3))
    history = History(chain.total_missed - draw(st.integers(-3, 8)), draw(some_key),
                      tuple(times), draw(st.integers(0, 4)))
    return policy, ask, chain, history


@given(case=cases())
def test_target_always_configured(
        case: tuple[PolicyConfig, FailoverAsk, ChainView, History]) -> None:
    """A switch only ever targets a configured key; the null key only via Disable in active mode."""
    policy, ask, chain, history = case
    decision = decide(ask, chain, history, policy, NOW)
    if isinstance(decision, Switch):
        assert decision.target_key in policy.node_keys
        assert decision.target_key != chain.signing_key
        assert decision.new_rounds <= policy.max_rounds
    if isinstance(decision, Disable):
        assert (policy.key_mode, policy.on_exhausted) == ("active", "disable")
        assert chain.signing_key in policy.node_keys


@given(case=cases())
def test_never_acts_without_evidence(
        case: tuple[PolicyConfig, FailoverAsk, ChainView, History]) -> None:
    """Fewer new misses on the signer's own reading than min_missed never changes the key."""
    policy, ask, chain, history = case
    decision = decide(ask, chain, history, policy, NOW)
    if chain.total_missed - history.baseline_missed < policy.min_missed:
        assert isinstance(decision, Refuse)


@given(policy=policies(), steps=st.lists(st.integers(0, 90), min_size=1, max_size=60),
       target=st.none() | st.sampled_from(POOL))
def test_rate_limit_holds_over_any_timeline(policy: PolicyConfig, steps: list[int],
                                            target: str | None) -> None:
    """Replaying decide() over a timeline never yields more than max_switches per window."""
    now = NOW
    chain = make_chain(key=policy.node_keys[0], total_missed=0)
    history = arm(chain)
    for minutes in steps:
        now += minutes * MIN
        chain = replace(chain, total_missed=chain.total_missed + policy.min_missed)
        ask = make_ask(failing_key=chain.signing_key, target_key=target)
        decision = decide(ask, chain, history, policy, now)
        if isinstance(decision, Disable):
            break
        if isinstance(decision, Switch):
            chain = replace(chain, signing_key=decision.target_key)
            history = rearm(history, chain, decision, now)
    times = history.switch_times
    for t in times:
        assert sum(1 for u in times if t - policy.window < u <= t) <= policy.max_switches
    assert all(b - a >= policy.cooldown for a, b in itertools.pairwise(times))


# ---- rotation over several confirmed switches: rounds, max_rounds, on_exhausted ------------


def _run_rotation(policy: PolicyConfig, steps: int) -> tuple[list[Any], History]:
    """Ask, decide and confirm ``steps`` times in a row, each after fresh misses and an hour.

    Returns every decision and the history after the last confirmed one; stops at the
    first decision that is not a Switch.
    """
    history = make_history(baseline_missed=10, armed_key=PRIMARY)
    key, missed, now = PRIMARY, 10, NOW
    decisions: list[Any] = []
    for _ in range(steps):
        missed += policy.min_missed
        now += 61 * MIN  # past the cooldown and the rate-limit window
        chain = make_chain(key=key, total_missed=missed)
        decision = decide(make_ask(failing_key=key, observed_total_missed=missed), chain,
                          history, policy, now)
        decisions.append(decision)
        if not isinstance(decision, Switch):
            break
        key = decision.target_key
        history = rearm(history, make_chain(key=key, total_missed=missed), decision, now)
    return decisions, history


def test_wrap_around_advances_rounds_when_confirmed() -> None:
    """Primary → backup1 → backup2 → primary: the confirmed wrap-around makes rounds 1."""
    decisions, history = _run_rotation(make_policy(max_rounds=1), 3)
    assert [(d.target_key, d.new_rounds) for d in decisions] == [
        (BACKUP1, 0), (BACKUP2, 0), (PRIMARY, 1)]
    assert (history.armed_key, history.rounds) == (PRIMARY, 1)
    assert len(history.switch_times) == 3


@pytest.mark.parametrize(("max_rounds", "switches"), [(0, 2), (1, 5), (2, 8)])
def test_max_rounds_then_hold_after_real_wrap_arounds(max_rounds: int, switches: int) -> None:
    """After max_rounds confirmed wrap-arounds the next wrap is refused (hold) with an alert."""
    decisions, history = _run_rotation(make_policy(max_rounds=max_rounds), 20)
    assert all(isinstance(d, Switch) for d in decisions[:-1])
    assert len(decisions) - 1 == switches
    assert history.rounds == max_rounds
    last = decisions[-1]
    assert isinstance(last, Refuse)
    assert (last.rule, last.alert, last.status) == ("exhausted", True, 409)
    assert f"after {max_rounds} round(s) of 3 key(s)" in last.reason


def test_max_rounds_then_disable_after_real_wrap_arounds() -> None:
    """With on_exhausted = 'disable', the wrap past max_rounds sets the null key."""
    decisions, history = _run_rotation(make_policy(max_rounds=1, on_exhausted="disable"), 20)
    assert len(decisions) == 6
    assert isinstance(decisions[-1], Disable)
    assert history.rounds == 1
    assert history.armed_key == BACKUP2


def test_operator_arm_restarts_an_exhausted_rotation() -> None:
    """After exhaustion, an operator's arm sets rounds to 0 and the rotation works again."""
    decisions, history = _run_rotation(make_policy(max_rounds=0), 20)
    assert isinstance(decisions[-1], Refuse)
    chain = make_chain(key=BACKUP2, total_missed=30)
    rearmed = arm(chain, history)
    later = NOW + 24 * 60 * MIN
    decision = decide(make_ask(failing_key=BACKUP2, observed_total_missed=32),
                      make_chain(key=BACKUP2, total_missed=32), rearmed,
                      make_policy(max_rounds=1), later)
    assert decision == Switch(PRIMARY, 1, decision.reason)  # type: ignore[union-attr]


@pytest.mark.parametrize(("state", "later", "verdict", "by", "decided_by"), [
    pytest.param(MANUAL, MIN, "approve", "operator", "operator", id="manual_approved"),
    pytest.param(MANUAL, MIN, "deny", "operator2", "operator2", id="manual_denied"),
    pytest.param(MANUAL, 11 * MIN, "deny", "operator", "operator", id="deny_after_expiry"),
    pytest.param(VETO, MIN, "approve", "operator", "operator", id="veto_approved_early"),
    pytest.param(VETO, MIN, "deny", "operator", "operator", id="veto_denied"),
    pytest.param(MANUAL, 11 * MIN, "approve", "operator", None, id="approval_too_late"),
    pytest.param(MANUAL, 11 * MIN, None, None, None, id="expired_by_time"),
    pytest.param(MANUAL, MIN, None, None, None, id="still_pending"),
    pytest.param(VETO, 2 * MIN, None, None, None, id="veto_due_by_time"),
    pytest.param(replace(MANUAL, status="approved", decided_by="op"), MIN, None, None, "op",
                 id="final_keeps_decider"),
])
def test_verdict_records_who_decided(state: Approval, later: timedelta, verdict: Any,
                                     by: str | None, decided_by: str | None) -> None:
    """An operator's verdict records who gave it; time alone never names a decider."""
    assert resolve_pending(state, NOW + later, verdict, by).decided_by == decided_by


def test_approval_plan_records_the_requester() -> None:
    """Every approval plan keeps who asked, so that requester cannot approve it later."""
    for mode in ("auto", "manual", "veto"):
        plan = approval_plan(make_policy(approval=mode), NOW, "watcher")
        assert (plan.requested_by, plan.decided_by) == ("watcher", None)


def test_node_keys_are_kept_as_a_tuple() -> None:
    """Keys given as a list are stored as an (immutable, hashable) tuple."""
    policy = make_policy(node_keys=list(KEYS))
    assert policy.node_keys == KEYS
    assert isinstance(policy.node_keys, tuple)


def test_node_names_are_kept_as_a_tuple() -> None:
    """Node names given as a list are stored as a tuple, so the policy stays hashable."""
    names = ("primary", "backup1", "backup2")
    policy = make_policy(node_names=list(names))
    assert policy.node_names == names
    assert hash(policy) == hash(make_policy(node_names=names))


def test_zero_deny_hold_is_allowed() -> None:
    """A deny_hold of zero (a denial holds nothing back) is a valid policy."""
    assert make_policy(deny_hold=timedelta(0)).deny_hold == timedelta(0)


@pytest.mark.parametrize(("key", "ok"), [("STM", False), ("STMa", True), ("stm" + "5" * 50, False)])
def test_node_key_prefix_check(key: str, ok: bool) -> None:
    """A node key is at least the STM prefix plus one character (the chain checks the rest)."""
    if ok:
        assert make_policy(node_keys=(key,)).node_keys == (key,)
    else:
        with pytest.raises(ConfigError) as caught:
            make_policy(node_keys=(key,))
        assert caught.value.field == "node_keys"


def test_approval_plan_without_requester_names_nobody() -> None:
    """A plan made without a requester records none, so no client is barred from approving."""
    plan = approval_plan(make_policy(approval="manual"), NOW)
    assert plan.requested_by == ""
    assert resolve_pending(plan, NOW + MIN, "approve", "operator").status == "approved"
