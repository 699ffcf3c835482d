"""Producer-node health: classification, and how decide() uses it (issue 11, threat T9)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.errors import ConfigError
from signer.health import (
    HealthConfig,
    HealthSnapshot,
    NodeHealth,
    ProbeResult,
    classify,
    confirmed,
)
from signer.policy import (
    ChainView,
    Decision,
    Disable,
    Evidence,
    FailoverAsk,
    History,
    PolicyConfig,
    Refuse,
    Switch,
    decide,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
PRIMARY = "STM6PrimaryNodeKeyForTestsOnly111111111111111111111"
BACKUP1 = "STM7Backup1NodeKeyForTestsOnly111111111111111111111"
BACKUP2 = "STM8Backup2NodeKeyForTestsOnly111111111111111111111"
NAMES = ("primary", "backup1", "backup2")
KEYS = (PRIMARY, BACKUP1, BACKUP2)
CHAIN_HEAD = 1000


def make_policy(**changes: Any) -> PolicyConfig:
    """Three keys, 2 misses, 2 switches an hour, 5 min cooldown (as test_policy's)."""
    fields: dict[str, Any] = {
        "witness": "alice", "key_mode": "active", "node_keys": KEYS, "min_missed": 2,
        "max_switches": 2, "window": 60 * MIN, "cooldown": 5 * MIN, "max_rounds": 1,
        "on_exhausted": "hold", "approval": "auto", "approval_timeout": 10 * MIN,
        "veto_window": 2 * MIN}
    fields.update(changes)
    return PolicyConfig(**fields)


def make_chain(key: str = PRIMARY, total_missed: int = 12) -> ChainView:
    """What the signer read: by default 2 misses above the baseline of 10."""
    return ChainView(head_block_num=CHAIN_HEAD, signing_key=key, total_missed=total_missed,
                     url="https://alice.example", props={})


def make_ask(**changes: Any) -> FailoverAsk:
    """The watcher's request for a failover of PRIMARY."""
    fields: dict[str, Any] = {"witness": "alice", "failing_key": PRIMARY,
                              "observed_total_missed": 12, "reason": "primary down"}
    fields.update(changes)
    return FailoverAsk(**fields)


def make_history(**changes: Any) -> History:
    """Armed on PRIMARY at total_missed 10, no switches."""
    fields: dict[str, Any] = {"baseline_missed": 10, "armed_key": PRIMARY}
    fields.update(changes)
    return History(**fields)


# ---- classification: pure ----------------------------------------------------------------


@pytest.mark.parametrize(("probe", "state"), [
    pytest.param(ProbeResult(1000), "healthy", id="at_head"),
    pytest.param(ProbeResult(999), "healthy", id="one_behind"),
    pytest.param(ProbeResult(1003), "healthy", id="ahead_of_signer_rpc"),
    pytest.param(ProbeResult(998), "lagging", id="two_behind_stuck"),
    pytest.param(ProbeResult(None, "connection refused"), "down", id="refused"),
    pytest.param(ProbeResult(None, "timeout"), "down", id="timeout"),
    pytest.param(None, "unknown", id="no_health_url"),
])
def test_classify(probe: ProbeResult | None, state: str) -> None:
    """A node is healthy within max_lag_blocks of the chain head, lagging beyond, down
    without an answer, unknown without a health_url."""
    node = classify("primary", PRIMARY, probe, CHAIN_HEAD, max_lag_blocks=1)
    assert node.state == state
    assert node.dead == (state in {"down", "lagging"})


def test_classify_keeps_the_reason_short_and_printable() -> None:
    """A probe's detail reaches answers and the audit clipped and without control characters."""
    node = classify("primary", PRIMARY, ProbeResult(None, "bad\n" + "x" * 500), CHAIN_HEAD, 1)
    assert len(node.detail) == 200
    assert "\n" not in node.detail


def test_confirmed_is_dead_only_if_every_probe_was() -> None:
    """One healthy answer among consecutive probes proves the node up; all bad: dead."""
    down = NodeHealth("primary", PRIMARY, "down", detail="connection refused")
    up = NodeHealth("primary", PRIMARY, "healthy", 1000)
    assert confirmed([down, up]) == up
    assert confirmed([down]) == down
    twice = confirmed([down, down])
    assert twice.state == "down"
    assert "2 consecutive probes failed" in twice.detail
    with pytest.raises(ValueError, match="no probes"):
        confirmed([])


@pytest.mark.parametrize(("field", "value"), [
    ("probe_timeout_s", 0.0), ("max_lag_blocks", -1), ("confirm_probes", 0),
    ("confirm_interval_s", 11.0)])
def test_health_config_rejects_out_of_range(field: str, value: object) -> None:
    """Each [health] field out of range is a ConfigError naming it."""
    with pytest.raises(ConfigError) as e:
        HealthConfig(**{field: value})  # type: ignore[arg-type]
    assert e.value.field == field


# ---- the policy with a health snapshot ----------------------------------------------------


def snapshot(*states: str) -> HealthSnapshot:
    """Nodes primary, backup1, backup2 in ``states`` (heads to match)."""
    heads = {"healthy": CHAIN_HEAD, "lagging": CHAIN_HEAD - 5}
    return HealthSnapshot(tuple(
        NodeHealth(name, key, state, heads.get(state), "" if state == "healthy" else state)
        for name, key, state in zip(NAMES, KEYS, states, strict=True)), CHAIN_HEAD)


EVIDENCE = Evidence("node_down", "primary", PRIMARY, 1764644000, 3, "connection refused")


def preemptive_policy(**changes: Any) -> Any:
    """The test policy with pre-emptive switching on and the node names set."""
    return make_policy(preemptive=True, node_names=NAMES, **changes)


def run(health: HealthSnapshot | None, *, evidence: Evidence | None = EVIDENCE,
        total_missed: int = 10, policy: Any = None, **ask: Any) -> Decision:
    """decide() for PRIMARY failing, armed at 10 misses, with ``total_missed`` read."""
    return decide(make_ask(evidence=evidence, observed_total_missed=total_missed, **ask),
                  make_chain(total_missed=total_missed), make_history(),
                  policy or preemptive_policy(), NOW, health=health)


def test_preemptive_accepted_when_the_signer_sees_the_node_down_too() -> None:
    """A pre-emptive ask without misses switches when the signer's probes agree."""
    decision = run(snapshot("down", "healthy", "healthy"))
    assert isinstance(decision, Switch)
    assert decision.target_key == BACKUP1
    assert decision.preemptive
    assert "pre-emptive" in decision.reason


def test_preemptive_accepted_for_a_lagging_node() -> None:
    """A node out of sync (stuck) from the signer's side counts as unhealthy too."""
    ev = Evidence("node_unhealthy", "primary", PRIMARY, 1764644000, 3, "head frozen")
    decision = run(snapshot("lagging", "healthy", "healthy"), evidence=ev)
    assert isinstance(decision, Switch)
    assert decision.preemptive


PREEMPTIVE_REFUSALS = [
    pytest.param(snapshot("healthy", "healthy", "healthy"), {}, "health_disagrees",
                 id="watcher_claims_healthy_node_down"),
    pytest.param(None, {}, "health_disagrees", id="signer_has_no_probes"),
    pytest.param(snapshot("unknown", "healthy", "healthy"), {}, "health_disagrees",
                 id="failing_node_without_health_url"),
    pytest.param(snapshot("down", "down", "lagging"), {}, "no_healthy_target",
                 id="all_backups_dead"),
    pytest.param(snapshot("down", "unknown", "unknown"), {}, "no_healthy_target",
                 id="preemptive_needs_a_target_seen_healthy"),
    pytest.param(snapshot("down", "down", "healthy"), {"target_key": BACKUP1},
                 "target_unhealthy", id="named_target_dead"),
    pytest.param(snapshot("down", "unknown", "healthy"), {"target_key": BACKUP1},
                 "target_unhealthy", id="named_target_unprobed"),
]


@pytest.mark.parametrize(("health", "ask", "rule"), PREEMPTIVE_REFUSALS)
def test_preemptive_refused(health: HealthSnapshot | None, ask: dict[str, Any],
                            rule: str) -> None:
    """A pre-emptive ask the signer's own probes do not back is refused with an alert."""
    decision = run(health, **ask)
    assert isinstance(decision, Refuse)
    assert (decision.rule, decision.status, decision.alert) == (rule, 409, True)


def test_unprobed_failing_node_is_refused_as_unprobed_not_as_healthy() -> None:
    """A failing node without health_url is refused as unprobed: the signer never saw it healthy."""
    decision = run(snapshot("unknown", "healthy", "healthy"))
    assert isinstance(decision, Refuse)
    assert "cannot probe it (no health_url)" in decision.reason
    assert "healthy at head" not in decision.reason


def test_preemptive_off_refuses_evidence_without_misses() -> None:
    """With [policy] preemptive = false, evidence alone is not enough."""
    decision = run(snapshot("down", "healthy", "healthy"), policy=make_policy())
    assert isinstance(decision, Refuse)
    assert (decision.rule, decision.status, decision.alert) == ("preemptive_off", 409, False)


def test_evidence_must_name_the_node_holding_the_key() -> None:
    """Evidence about another node than the key's owner is refused."""
    ev = Evidence("node_down", "backup1", PRIMARY, 1764644000, 3, "connection refused")
    decision = run(snapshot("down", "healthy", "healthy"), evidence=ev)
    assert isinstance(decision, Refuse)
    assert (decision.rule, decision.status, decision.alert) == ("health_disagrees", 409, True)


def test_misses_on_chain_carry_an_ask_whatever_the_health_says() -> None:
    """With min_missed new misses the ask is reactive: health only steers the target."""
    decision = run(snapshot("healthy", "down", "healthy"), total_missed=12)
    assert isinstance(decision, Switch)
    assert decision.target_key == BACKUP2
    assert not decision.preemptive


def test_rate_limit_and_cooldown_still_apply_to_preemptive_asks() -> None:
    """The health rule replaces min_missed only: the cooldown holds."""
    decision = decide(make_ask(evidence=EVIDENCE, observed_total_missed=10),
                      make_chain(total_missed=10),
                      make_history(switch_times=(NOW.replace(minute=58),)),
                      preemptive_policy(), NOW, health=snapshot("down", "healthy", "healthy"))
    assert isinstance(decision, Refuse)
    assert decision.rule == "cooldown"


REACTIVE = [
    pytest.param(None, BACKUP1, id="no_health_info_rotates_as_today"),
    pytest.param(snapshot("down", "healthy", "healthy"), BACKUP1, id="backup1_healthy"),
    pytest.param(snapshot("down", "down", "healthy"), BACKUP2, id="dead_backup1_skipped"),
    pytest.param(snapshot("down", "lagging", "healthy"), BACKUP2, id="lagging_backup1_skipped"),
    pytest.param(snapshot("down", "unknown", "healthy"), BACKUP1,
                 id="unprobed_backup_is_eligible"),
    pytest.param(snapshot("down", "down", "unknown"), BACKUP2,
                 id="unprobed_beats_holding"),
]


@pytest.mark.parametrize(("health", "target"), REACTIVE)
def test_reactive_switch_skips_dead_backups(health: HealthSnapshot | None, target: str) -> None:
    """After misses the first key in rotation order the signer does not see dead is chosen."""
    decision = run(health, evidence=None, total_missed=12, policy=make_policy(node_names=NAMES))
    assert isinstance(decision, Switch)
    assert decision.target_key == target
    if health is not None and target == BACKUP2 and health.nodes[1].dead:
        assert "skipped dead backup1" in decision.reason


def test_reactive_all_dead_holds_and_alerts() -> None:
    """After misses, when every other node is dead from the signer's side, it holds."""
    decision = run(snapshot("down", "down", "lagging"), evidence=None, total_missed=12)
    assert isinstance(decision, Refuse)
    assert (decision.rule, decision.alert) == ("no_healthy_target", True)
    assert "backup1 down" in decision.reason


def test_exhausted_rotation_ends_as_configured_whatever_the_health() -> None:
    """A rotation with no round left disables (when configured) even with dead backups."""
    policy = make_policy(max_rounds=0, on_exhausted="disable", node_names=NAMES)
    decision = decide(make_ask(failing_key=BACKUP2), make_chain(key=BACKUP2),
                      make_history(armed_key=BACKUP2), policy, NOW,
                      health=snapshot("down", "down", "down"))
    assert isinstance(decision, Disable)


def test_wrap_around_to_a_healthy_primary_counts_a_round() -> None:
    """Skipping a dead backup2 wraps to the primary, which counts as a new round."""
    decision = decide(make_ask(failing_key=BACKUP1), make_chain(key=BACKUP1),
                      make_history(armed_key=BACKUP1), make_policy(node_names=NAMES), NOW,
                      health=snapshot("healthy", "down", "down"))
    assert isinstance(decision, Switch)
    assert (decision.target_key, decision.new_rounds) == (PRIMARY, 1)


def test_reactive_named_target_seen_dead_is_refused() -> None:
    """After misses, a watcher-named target the signer sees dead is refused, not switched to."""
    decision = run(snapshot("down", "down", "healthy"), evidence=None, total_missed=12,
                   policy=make_policy(node_names=NAMES), target_key=BACKUP1)
    assert isinstance(decision, Refuse)
    assert (decision.rule, decision.status, decision.alert) == ("target_unhealthy", 409, True)
    assert "backup1" in decision.reason


def test_reactive_named_target_without_health_url_is_allowed() -> None:
    """After misses, a named target the signer cannot probe is eligible, as without health."""
    decision = run(snapshot("down", "unknown", "healthy"), evidence=None, total_missed=12,
                   policy=make_policy(node_names=NAMES), target_key=BACKUP1)
    assert isinstance(decision, Switch)
    assert decision.target_key == BACKUP1


def without(name: str, health: HealthSnapshot) -> HealthSnapshot:
    """``health`` with the node ``name`` left out (a snapshot not covering every key)."""
    return HealthSnapshot(tuple(n for n in health.nodes if n.name != name), health.chain_head)


def test_preemptive_named_target_missing_from_the_snapshot_is_refused() -> None:
    """A pre-emptive ask naming a key the snapshot has no node for is refused, not a crash."""
    decision = run(without("backup1", snapshot("down", "healthy", "healthy")),
                   target_key=BACKUP1)
    assert isinstance(decision, Refuse)
    assert (decision.rule, decision.alert) == ("target_unhealthy", True)
    assert "(?) has no health_url" in decision.reason


def test_preemptive_rotation_passes_a_key_missing_from_the_snapshot() -> None:
    """A pre-emptive rotation skips a key without a node in the snapshot and names no dead node."""
    decision = run(without("backup1", snapshot("down", "healthy", "healthy")))
    assert isinstance(decision, Switch)
    assert decision.target_key == BACKUP2
    assert "skipped dead" not in decision.reason


def test_exhausted_two_key_rotation_with_the_other_node_dead_disables() -> None:
    """Two keys, on the last with no round left and the other node dead: the rotation ends."""
    keys, names = (PRIMARY, BACKUP1), ("primary", "backup1")
    policy = make_policy(node_keys=keys, node_names=names, max_rounds=0,
                         on_exhausted="disable")
    health = HealthSnapshot((NodeHealth("primary", PRIMARY, "down", None, "refused"),
                             NodeHealth("backup1", BACKUP1, "down", None, "refused")),
                            CHAIN_HEAD)
    decision = decide(make_ask(failing_key=BACKUP1), make_chain(key=BACKUP1),
                      make_history(armed_key=BACKUP1), policy, NOW, health=health)
    assert isinstance(decision, Disable)
