"""Producer-node health: classification, the pre-emptive decision, config, metrics, the daemon."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.watcher_fakes import SETTINGS, FakeReader, FakeSigner, Recorder, answer, make

from shared.errors import ConfigError
from watcher.config import WatcherConfig
from watcher.core import (
    FailOver,
    Hold,
    NodeView,
    Observation,
    Policy,
    WatchState,
    decide,
    with_closed,
    with_confirmed,
    with_request,
)
from watcher.daemon import Watcher
from watcher.health import (
    HealthSettings,
    HealthView,
    ProbeResult,
    changes,
    classify_round,
    initial_view,
    reference_head,
)
from watcher.metrics import Metrics, NodeGauge
from watcher.signer_client import SignerProtocolError

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PRIMARY = "STM" + "P" * 50
BACKUP = "STM" + "B" * 50
BACKUP2 = "STM" + "C" * 50
NODES = (("primary", PRIMARY), ("backup1", BACKUP), ("backup2", BACKUP2))
JUDGE = HealthSettings(max_lag_blocks=2, bad_probes=2)
POLICY = Policy(miss_threshold=1, quorum=1, preemptive=True,
                preempt_cooldown=timedelta(seconds=60), health_max_age=timedelta(seconds=10))


def rounds(*heads: dict[str, int | None], chain: int | None = 100,
           start: HealthView | None = None) -> HealthView:
    """The view after one probe round per dict (name -> head, None: refused)."""
    view = start or initial_view(NODES)
    for i, by_name in enumerate(heads):
        at = T0 + timedelta(seconds=i)
        probes = [ProbeResult(n, at, h, None if h is not None else "connection refused")
                  for n, h in by_name.items()]
        view = classify_round(view, probes, chain, JUDGE)
    return view


ALL_UP = {"primary": 100, "backup1": 100, "backup2": 100}
PRIMARY_DOWN = {"primary": None, "backup1": 100, "backup2": 100}


def obs(key: str = PRIMARY, missed: int = 10, head: int = 100, *, fresh: bool = True
        ) -> Observation:
    """One RPC node's answer."""
    return Observation((NodeView("http://127.0.0.1:1/", fresh, head, T0, head + 5, key, missed,
                                 head - 1),))


ARMED = WatchState(phase="armed", armed_key=PRIMARY, baseline_missed=10, armed_at=T0)
NOW = T0 + timedelta(seconds=2)


# ---- classification ------------------------------------------------------------------------


def test_one_refused_probe_is_suspect_two_are_down() -> None:
    """A node is down only after bad_probes consecutive refusals; since is the first one."""
    one = rounds(PRIMARY_DOWN)
    assert one.nodes[0].status == "suspect"
    two = rounds(PRIMARY_DOWN, PRIMARY_DOWN)
    primary = two.nodes[0]
    assert (primary.status, primary.bad_probes, primary.since) == ("down", 2, T0)
    assert primary.detail == "connection refused"
    assert [n.status for n in two.nodes[1:]] == ["healthy", "healthy"]


def test_one_good_probe_makes_a_node_healthy_again() -> None:
    """The streak restarts after a good probe."""
    view = rounds(PRIMARY_DOWN, PRIMARY_DOWN, ALL_UP, PRIMARY_DOWN)
    assert view.nodes[0].status == "suspect"
    assert view.nodes[0].bad_probes == 1


def test_a_lagging_node_is_unhealthy() -> None:
    """A head more than max_lag_blocks behind the chain's is unhealthy; 2 behind is not."""
    stuck = {"primary": 97, "backup1": 100, "backup2": 98}
    view = rounds(stuck, stuck)
    assert view.nodes[0].status == "unhealthy"
    assert view.nodes[0].lag == 3
    assert "3 blocks behind" in view.nodes[0].detail
    assert view.nodes[2].status == "healthy"


def test_reference_head_is_never_set_by_one_node_alone() -> None:
    """A single high head (a liar) does not raise the reference; two producer nodes do."""
    assert reference_head(100, [500]) == 100
    assert reference_head(100, [500, 104, 90]) == 104
    assert reference_head(None, [7]) is None


def test_changes_report_down_and_recovered_once() -> None:
    """Only settled changes are reported: down once, recovered once."""
    up = rounds(ALL_UP)
    down = rounds(PRIMARY_DOWN, PRIMARY_DOWN, start=up)
    assert [(c.name, c.kind) for c in changes(up, down)] == [("primary", "node_down")]
    again = rounds(PRIMARY_DOWN, start=down)
    assert changes(down, again) == []
    back = rounds(ALL_UP, start=again)
    assert [(c.name, c.kind) for c in changes(again, back)] == [("primary", "node_recovered")]


def test_detail_has_no_control_characters_and_is_short() -> None:
    """The evidence detail is cleaned for the signer's schema (≤ 200 chars, printable)."""
    view = initial_view(NODES)
    probe = ProbeResult("primary", T0, None, "bad\nthing\x00" + "x" * 500)
    detail = classify_round(view, [probe], 100, JUDGE).nodes[0].detail
    assert len(detail) == 200
    assert detail.isprintable()


# ---- the decision --------------------------------------------------------------------------


def test_primary_down_and_backup_healthy_is_a_preemptive_request() -> None:
    """The on-chain node down for 2 probes on a live chain: a FailOver with evidence."""
    health = rounds(PRIMARY_DOWN, PRIMARY_DOWN)
    d = decide(obs(), ARMED, POLICY, NOW, health)
    assert isinstance(d, FailOver)
    assert d.failing_key == PRIMARY
    assert d.observed == 10
    assert d.evidence is not None
    assert d.evidence.to_json() == {"kind": "node_down", "node": "primary", "node_key": PRIMARY,
                                    "since": int(T0.timestamp()), "probes": 2,
                                    "detail": "connection refused"}
    assert d.reason == "primary down for 2 probes (connection refused)"


def test_stuck_primary_is_node_unhealthy_evidence() -> None:
    """A lagging on-chain node gives node_unhealthy evidence."""
    stuck = {"primary": 90, "backup1": 100, "backup2": 100}
    d = decide(obs(), ARMED, POLICY, NOW, rounds(stuck, stuck))
    assert isinstance(d, FailOver)
    assert d.evidence is not None
    assert d.evidence.kind == "node_unhealthy"


@pytest.mark.parametrize(("why", "observation", "state", "policy", "heads"), [
    ("halted chain", obs(fresh=False), ARMED, POLICY, [PRIMARY_DOWN, PRIMARY_DOWN]),
    ("every backup down", obs(), ARMED, POLICY,
     [{"primary": None, "backup1": None, "backup2": None}] * 2),
    ("on-chain key not a configured node", obs(key="STM" + "Z" * 50),
     replace(ARMED, armed_key="STM" + "Z" * 50), POLICY, [PRIMARY_DOWN] * 2),
    ("request open", obs(), replace(ARMED, phase="requested", request_id="r" * 32,
                                    request_body="{}"), POLICY, [PRIMARY_DOWN] * 2),
    ("right after a switch", obs(), replace(ARMED, last_switch_at=NOW - timedelta(seconds=5)),
     POLICY, [PRIMARY_DOWN] * 2),
    ("pre-emption off", obs(), ARMED, replace(POLICY, preemptive=False), [PRIMARY_DOWN] * 2),
    ("primary healthy", obs(), ARMED, POLICY, [ALL_UP] * 2),
    ("only one bad probe", obs(), ARMED, POLICY, [ALL_UP, PRIMARY_DOWN]),
])
def test_no_preemptive_request(why: str, observation: Observation, state: WatchState,
                               policy: Policy, heads: list[dict[str, int | None]]) -> None:
    """Each of the 'never pre-empt' rules holds."""
    d = decide(observation, state, policy, NOW, rounds(*heads))
    assert not (isinstance(d, FailOver) and d.evidence is not None), why


def test_an_old_health_picture_is_ignored() -> None:
    """When the probes stopped (the last round is older than health_max_age), no pre-emption."""
    health = rounds(PRIMARY_DOWN, PRIMARY_DOWN)
    d = decide(obs(), ARMED, POLICY, NOW + timedelta(seconds=30), health)
    assert isinstance(d, Hold)


@pytest.mark.parametrize("health", [
    pytest.param(None, id="no-monitor-yet"),
    pytest.param(initial_view(NODES), id="no-probe-round-yet"),
])
def test_preemptive_policy_without_a_probe_round_holds(health: HealthView | None) -> None:
    """Pre-emption on but no probe round to judge by (none yet): a plain Hold, no error."""
    assert decide(obs(), ARMED, POLICY, NOW, health) == Hold(
        "0 new misses since armed < 1")


def test_a_picture_exactly_health_max_age_old_still_counts() -> None:
    """Only a round *older* than health_max_age is ignored: at the limit it still acts."""
    health = rounds(PRIMARY_DOWN, PRIMARY_DOWN)
    assert health.at is not None
    d = decide(obs(), ARMED, POLICY, health.at + POLICY.health_max_age, health)
    assert isinstance(d, FailOver)
    assert d.evidence is not None


def test_preemption_resumes_exactly_when_the_cooldown_ends() -> None:
    """The cooldown after a switch lasts preempt_cooldown, not a moment longer."""
    health = rounds(PRIMARY_DOWN, PRIMARY_DOWN)
    state = replace(ARMED, last_switch_at=NOW - POLICY.preempt_cooldown)
    d = decide(obs(), state, POLICY, NOW, health)
    assert isinstance(d, FailOver)
    assert d.evidence is not None
    cooling = replace(ARMED, last_switch_at=NOW - POLICY.preempt_cooldown + timedelta(seconds=1))
    assert isinstance(decide(obs(), cooling, POLICY, NOW, health), Hold)


def test_misses_still_fail_over_reactively_without_evidence() -> None:
    """At the miss threshold the request is reactive, whatever the health says."""
    d = decide(obs(missed=11), ARMED, POLICY, NOW, rounds(ALL_UP))
    assert isinstance(d, FailOver)
    assert d.evidence is None


def test_refused_preemption_waits_for_a_new_picture_or_a_miss() -> None:
    """After a pre-emptive request ended without a switch, the same picture gives a Hold;
    a changed picture or a new miss lifts the block."""
    health = rounds(PRIMARY_DOWN, PRIMARY_DOWN)
    state = with_request(ARMED, "r" * 32, "{}", 10, NOW, preemptive=True)
    state = with_closed(state, NOW, picture=health.picture())
    assert isinstance(decide(obs(), state, POLICY, NOW, health), Hold)
    worse = rounds({"primary": None, "backup1": None, "backup2": 100}, start=health)
    worse = rounds({"primary": None, "backup1": None, "backup2": 100}, start=worse)
    assert isinstance(decide(obs(), state, POLICY, NOW, worse), FailOver)
    lenient = replace(POLICY, miss_threshold=5)
    d = decide(obs(missed=11), state, lenient, NOW, health)
    assert isinstance(d, FailOver)
    assert d.evidence is not None


def test_a_confirmed_switch_clears_the_block() -> None:
    """A switch forgets the refused picture; the cooldown then applies."""
    state = replace(ARMED, preempt_blocked="x", request_preemptive=True)
    after = with_confirmed(state, BACKUP, "ab" * 20, POLICY, NOW)
    assert after.preempt_blocked is None
    assert after.request_preemptive is False
    assert after.last_switch_at == NOW


# ---- config --------------------------------------------------------------------------------


def _config(tmp_path: Path, nodes: str, health: str = "") -> WatcherConfig:
    path = tmp_path / "watcher.toml"
    path.write_text(f"""
[watcher]
account = "alice"
rpc_nodes = ["http://127.0.0.1:1/"]
miss_threshold = 1
poll_interval_s = 1
{nodes}
{health}
[signer]
url = "http://127.0.0.1:2"
key = "watcher.key"
signer_public_key = "signer.pub"
""")
    return WatcherConfig.load(path, environ={})


NODE_TOML = f"""
[[nodes]]
name = "primary"
public_key = "{PRIMARY}"
health_url = "http://10.0.0.1:8091/"
[[nodes]]
name = "backup1"
public_key = "{BACKUP}"
"""


def test_config_defaults_follow_the_poll_interval(tmp_path: Path) -> None:
    """One probe per block, a timeout of half of it, 2 blocks of lag, 2 bad probes, on."""
    config = _config(tmp_path, NODE_TOML)
    assert config.node_keys[0].health_url == "http://10.0.0.1:8091/"
    assert config.node_keys[1].health_url is None
    h = config.health
    assert h is not None
    assert (h.probe_interval_s, h.timeout_s, h.max_lag_blocks, h.bad_probes, h.preemptive,
            h.cooldown_s, h.source_address) == (1.0, 0.5, 2, 2, True, 20.0, None)
    assert config.policy.preemptive
    assert config.policy.health_max_age == timedelta(seconds=3.5)


def test_config_without_health_urls_is_todays(tmp_path: Path) -> None:
    """No health_url: no health config, no pre-emption."""
    config = _config(tmp_path, NODE_TOML.replace('health_url = "http://10.0.0.1:8091/"\n', ""))
    assert config.health is None
    assert not config.policy.preemptive


@pytest.mark.parametrize(("health", "field"), [
    ("[health]\nsource_address = \"eth0\"\n", "health.source_address"),
    ("[health]\nbad_probes = 0\n", "health.bad_probes"),
    ("[health]\ntimeout_s = 61\n", "health.timeout_s"),
    ("[health]\nprobes = 2\n", "health.probes"),
])
def test_bad_health_config_is_refused(tmp_path: Path, health: str, field: str) -> None:
    """Bad [health] values and unknown names are configuration errors naming the field."""
    with pytest.raises(ConfigError) as e:
        _config(tmp_path, NODE_TOML, health)
    assert e.value.field == field


def test_health_url_must_be_http(tmp_path: Path) -> None:
    """A health_url with credentials or another scheme is refused."""
    with pytest.raises(ConfigError) as e:
        _config(tmp_path, NODE_TOML.replace("http://10.0.0.1", "ftp://10.0.0.1"))
    assert e.value.field == "nodes[0].health_url"


# ---- metrics -------------------------------------------------------------------------------


def test_node_health_metrics() -> None:
    """witness_node_up and witness_node_head_lag_blocks per node; nothing without probes."""
    m = Metrics()
    assert "witness_node_up" not in m.render()
    m.update(probe_calls=6, node_health=(NodeGauge("primary", False, None),
                                         NodeGauge("backup1", True, 0)))
    text = m.render()
    assert 'witness_node_up{node="primary"} 0' in text
    assert 'witness_node_up{node="backup1"} 1' in text
    assert 'witness_node_head_lag_blocks{node="backup1"} 0' in text
    assert 'witness_node_head_lag_blocks{node="primary"}' not in text
    assert "witness_watcher_probe_calls_total 6" in text


# ---- the daemon ----------------------------------------------------------------------------


class FixedHealth:
    """A health source showing a set view (the real prober is in the devnet tests)."""

    def __init__(self, view: HealthView) -> None:
        self.current = view
        self.calls = 0
        self.heads: list[int | None] = []

    def view(self) -> HealthView:
        """The set view, dated now-ish."""
        return self.current

    def set_chain_head(self, head: int | None) -> None:
        """Record what the daemon publishes."""
        self.heads.append(head)


def _daemon(tmp_path: Path, signer: FakeSigner, view: HealthView
            ) -> tuple[Watcher, FixedHealth, Recorder, FakeReader]:
    settings = replace(SETTINGS, policy=replace(POLICY, miss_threshold=2,
                                                health_max_age=timedelta(days=1)))
    w, reader, notes = make(tmp_path, signer, settings=settings)
    health = FixedHealth(view)
    w.health = health
    return w, health, notes, reader


def test_daemon_sends_evidence_and_alerts_on_dead_nodes(tmp_path: Path) -> None:
    """The request body carries the evidence; the dead backup is announced as skipped."""
    signer = FakeSigner(answer("confirmed"))
    dead = rounds({"primary": None, "backup1": None, "backup2": 100},
                  {"primary": None, "backup1": None, "backup2": 100})
    w, health, notes, _ = _daemon(tmp_path, signer, dead)
    w.step()  # arms
    w.step()  # pre-empts
    body = json.loads(signer.bodies[0])
    assert body["evidence"]["node"] == "primary"
    assert body["evidence"]["node_key"] == body["failing_key"] == PRIMARY
    assert body["reason"].startswith("primary down for 2 probes")
    assert w.metrics.preemptive_requests_sent == 1
    texts = dict(notes.sent)
    assert "a failover would skip it" in texts["node_down:backup1"]
    assert "holds the on-chain key" in texts["node_down:primary"]
    assert health.heads == [101, 102]


def test_daemon_backs_off_after_health_disagrees(tmp_path: Path) -> None:
    """A 409 health_disagrees alerts once and is not retried while the picture stays."""
    refusal = answer("refused", 409, detail="[health_disagrees] primary is healthy here")
    signer = FakeSigner(refusal)
    w, _health, notes, _ = _daemon(tmp_path, signer, rounds(PRIMARY_DOWN, PRIMARY_DOWN))
    for _ in range(5):
        w.step()
    assert len(signer.bodies) == 1
    assert notes.events.count("preempt_refused") == 1
    assert "signer's probes disagree" in dict(notes.sent)["preempt_refused"]
    assert w.state.phase == "armed"


def test_daemon_closes_a_preemptive_request_the_signer_cannot_parse(tmp_path: Path) -> None:
    """A signer without pre-emption (422 for `evidence`) ends it at once; misses still work."""
    signer = FakeSigner(SignerProtocolError("HTTP 422 answer without a request state",
                                            status=422))
    w, _health, notes, reader = _daemon(tmp_path, signer, rounds(PRIMARY_DOWN, PRIMARY_DOWN))
    w.step()
    w.step()
    w.step()
    assert len(signer.bodies) == 1
    assert w.state.phase == "armed"
    assert notes.events.count("preempt_refused") == 1
    signer.answers = [answer("confirmed")]
    reader.missed += 2  # two misses: the reactive path
    w.step()
    assert "evidence" not in json.loads(signer.bodies[-1])
    assert w.state.phase == "switched"


def test_daemon_alerts_once_per_change_and_on_recovery(tmp_path: Path) -> None:
    """A dead backup is announced once while it stays dead, and again when it recovers."""
    signer = FakeSigner(answer("confirmed"))
    dead = rounds({"primary": 100, "backup1": None, "backup2": 100},
                  {"primary": 100, "backup1": None, "backup2": 100})
    w, health, notes, _ = _daemon(tmp_path, signer, dead)
    for _ in range(3):
        w.step()
    assert notes.events == ["node_down:backup1"]
    health.current = rounds(ALL_UP, start=dead)
    w.step()
    w.step()
    assert notes.events == ["node_down:backup1", "node_recovered:backup1"]
    assert signer.bodies == []
    assert w.metrics.alerts["node_down"] == 1
