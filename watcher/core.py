"""The watcher's decisions: pure values in, a :class:`Decision` out. No I/O, no clock.

``decide`` looks at one :class:`Observation` (what the RPC nodes said in one
poll), the persisted :class:`WatchState` and, when producer nodes are probed, the
latest :class:`watcher.health.HealthView`, and says whether to hold, alert, re-arm
or ask the signer for a failover (after misses; or pre-emptively, with
:class:`Evidence`, when the node on the on-chain key is down and a backup is healthy).
The transition functions at the end (:func:`after_decision`, :func:`with_request`,
...) return the next state; the daemon persists it. Nothing here can raise on chain
data: odd data is a Hold.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from watcher.health import HealthView, NodeHealth

Phase = Literal["unarmed", "armed", "requested", "pending", "switched", "stopped"]
AlertKind = Literal[
    "rpc_unhealthy", "chain_halted", "switch_requested", "switch_confirmed",
    "switch_refused", "switch_failed", "signer_unreachable", "key_changed", "recovered",
    "dry_run", "node_down", "node_unhealthy", "node_recovered", "preempt_refused",
]
OUTSTANDING: frozenset[Phase] = frozenset({"requested", "pending"})


@dataclass(frozen=True)
class NodeView:
    """One RPC node's answer in one poll; ``fresh`` is False when its head stopped moving."""

    url: str
    fresh: bool
    head_block_number: int
    head_time: datetime  # chain time: never compared with the local clock
    current_aslot: int
    signing_key: str
    total_missed: int
    last_confirmed_block_num: int


@dataclass(frozen=True)
class Observation:
    """What one poll learned: the nodes that answered and those that did not."""

    nodes: tuple[NodeView, ...]
    failed: tuple[str, ...] = ()

    @property
    def fresh(self) -> tuple[NodeView, ...]:
        """The answers of nodes whose head is advancing."""
        return tuple(n for n in self.nodes if n.fresh)


@dataclass(frozen=True)
class Policy:
    """The watcher's thresholds (from watcher.toml)."""

    miss_threshold: int
    quorum: int = 1
    one_shot: bool = False
    realert_interval: timedelta = timedelta(minutes=15)
    preemptive: bool = False  # act on producer-node health (needs a HealthView)
    preempt_cooldown: timedelta = timedelta(minutes=2)  # no pre-emption this soon after a switch
    health_max_age: timedelta = timedelta(seconds=30)  # older probe rounds are ignored


@dataclass(frozen=True)
class WatchState:
    """Everything that must survive a restart; see :mod:`watcher.state` for the file."""

    phase: Phase = "unarmed"
    armed_key: str | None = None
    baseline_missed: int = 0
    armed_at: datetime | None = None
    request_id: str | None = None  # the outstanding request (phase requested/pending)
    request_body: str | None = None  # its exact JSON body: a retry sends the same bytes
    requested_at: datetime | None = None
    request_observed: int | None = None  # total_missed the request was based on
    expected_key: str | None = None  # the key a confirmed switch moved to
    switch_block: int | None = None  # the block the signer saw that switch in
    last_switch_at: datetime | None = None
    last_tx_id: str | None = None
    switches: int = 0
    condition: str | None = None  # the alert condition in force (rpc_unhealthy, chain_halted)
    request_preemptive: bool = False  # the outstanding request carries health evidence
    # The health picture (HealthView.picture) when a pre-emptive request ended without a
    # switch: no new pre-emptive request until the picture changes (misses still count).
    preempt_blocked: str | None = None
    alerted: dict[str, datetime] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Hold:
    """Do nothing this time; ``condition`` names an alert condition still in force."""

    reason: str
    condition: str | None = None


@dataclass(frozen=True)
class Alert:
    """Do nothing but tell a human (a Hold that alerts)."""

    kind: AlertKind
    text: str


@dataclass(frozen=True)
class Rearm:
    """Take a new baseline: ``key`` is on chain with ``baseline_missed`` misses."""

    key: str
    baseline_missed: int
    reason: str
    expected: bool  # False: someone else changed the key (worth an alert)


@dataclass(frozen=True)
class Evidence:
    """Why a pre-emptive request is made: the failing node as the watcher's probes saw it."""

    kind: Literal["node_down", "node_unhealthy"]
    node: str
    node_key: str
    since: datetime
    probes: int
    detail: str

    def to_json(self) -> dict[str, object]:
        """The request body's ``evidence`` object (``since`` in unix seconds)."""
        return {"kind": self.kind, "node": self.node, "node_key": self.node_key,
                "since": int(self.since.timestamp()), "probes": self.probes,
                "detail": self.detail}


@dataclass(frozen=True)
class FailOver:
    """Ask the signer to switch away from ``failing_key`` (pre-emptively with ``evidence``)."""

    reason: str
    failing_key: str
    observed: int
    evidence: Evidence | None = None


Decision = Hold | Alert | Rearm | FailOver


def quorum_key(nodes: tuple[NodeView, ...], quorum: int) -> str | None:
    """The signing key at least ``quorum`` of ``nodes`` report, or None."""
    counts = Counter(n.signing_key for n in nodes)
    agreed = [key for key, count in counts.items() if count >= quorum]
    return agreed[0] if len(agreed) == 1 else None


def quorum_missed(nodes: tuple[NodeView, ...], key: str, quorum: int) -> int | None:
    """The largest ``total_missed`` that at least ``quorum`` nodes on ``key`` reach, or None.

    total_missed never decreases, so "at least q nodes say >= m" is agreement on m
    misses; one lying node cannot raise it while q > 1 (T4).
    """
    values = sorted((n.total_missed for n in nodes if n.signing_key == key), reverse=True)
    return values[quorum - 1] if len(values) >= quorum else None


def settled(obs: Observation, quorum: int) -> bool:
    """Whether reading more nodes cannot change this poll's answer much: q fresh, all agree."""
    fresh = obs.fresh
    return len(fresh) >= quorum and len({(n.signing_key, n.total_missed) for n in fresh}) == 1


def _halted(obs: Observation, quorum: int) -> int | None:
    """The head every answering node is stuck at, when the chain looks halted."""
    head, count = Counter(n.head_block_number for n in obs.nodes).most_common(1)[0]
    # One stuck node is indistinguishable from a halt; two or more must share the head.
    return head if count >= min(len(obs.nodes), max(quorum, 2)) else None


def _condition(kind: AlertKind, text: str, state: WatchState, policy: Policy,
               now: datetime) -> Decision:
    last = state.alerted.get(kind)
    if state.condition == kind and last is not None and now - last < policy.realert_interval:
        return Hold(text, condition=kind)
    return Alert(kind, text)


def decide(obs: Observation, state: WatchState, policy: Policy, now: datetime,
           health: HealthView | None = None) -> Decision:
    """Return what to do after one poll (and the latest probe round). Same inputs, same
    answer; no I/O."""
    if state.phase == "stopped":
        return Hold("one_shot: stopped after the first confirmed switch")
    if not obs.nodes:
        # SECURITY: T4 — no data is never a reason to act.
        return _condition("rpc_unhealthy", f"no RPC node answered ({len(obs.failed)} failed)",
                          state, policy, now)
    fresh = obs.fresh
    if not fresh:
        head = _halted(obs, policy.quorum)
        if head is not None:
            # A chain halted for everyone counts no misses (hived); it is not a miss.
            return _condition("chain_halted", f"chain halted: head stuck at #{head} on "
                              f"{len(obs.nodes)} node(s)", state, policy, now)
        return _condition("rpc_unhealthy", "every RPC node that answered is stale",
                          state, policy, now)
    if len(fresh) < policy.quorum:
        return _condition("rpc_unhealthy", f"{len(fresh)} fresh RPC node(s), "
                          f"quorum is {policy.quorum}", state, policy, now)
    key = quorum_key(fresh, policy.quorum)
    observed = None if key is None else quorum_missed(fresh, key, policy.quorum)
    if key is None or observed is None:
        return Hold("fresh RPC nodes disagree on the signing key")
    if state.armed_key is None or state.phase == "unarmed":
        return Rearm(key, observed, f"armed on {key} at total_missed {observed}", expected=True)
    if key != state.armed_key:
        expected = state.phase in OUTSTANDING or (
            state.phase == "switched" and key == state.expected_key)
        return Rearm(key, observed, f"signing key changed from {state.armed_key} to {key}",
                     expected=expected)
    if state.phase == "switched":
        return _after_switch(fresh, key, observed, state, policy)
    if state.phase in OUTSTANDING:
        return Hold(f"request {state.request_id} is outstanding")
    new_misses = observed - state.baseline_missed
    if new_misses < 0:
        # SECURITY: T4 — total_missed never decreases; fresh nodes saying so are wrong.
        return Hold(f"total_missed {observed} is below the armed baseline "
                    f"{state.baseline_missed}")
    if new_misses < policy.miss_threshold:
        held = Hold(f"{new_misses} new misses since armed < {policy.miss_threshold}")
        return _preempt(key, observed, state, policy, health=health, now=now) or held
    return FailOver(f"{new_misses} new misses since armed on {key} (total_missed {observed})",
                    failing_key=key, observed=observed)


def _preempt(key: str, observed: int, state: WatchState, policy: Policy, *,
             health: HealthView | None, now: datetime) -> Decision | None:
    """A pre-emptive FailOver when the node holding ``key`` is down and a backup is healthy.

    Called only on a live chain (a quorum of fresh nodes agree on ``key``) with no
    request open and no switch awaited. None: nothing to say about health.
    """
    if not policy.preemptive or health is None or health.at is None:
        return None
    if now - health.at > policy.health_max_age:
        return None  # the probes stopped: never act on an old picture
    holders = health.by_key(key)
    if not holders or not all(n.bad for n in holders):
        return None  # not a configured node, or its node is healthy
    # SECURITY: the evidence is the watcher's word only; the signer acts on it only when
    # its own probes agree (a stolen or partitioned watcher cannot move the key alone).
    node = holders[0]
    said = _said(node)
    if not any(n.up for n in health.nodes if n.public_key != key):
        return Hold(f"{said}; no healthy backup to switch to")
    if state.last_switch_at is not None and now - state.last_switch_at < policy.preempt_cooldown:
        return Hold(f"{said}; a switch was made at {state.last_switch_at.isoformat()}, "
                    f"cooling down")
    if state.preempt_blocked == health.picture() and observed <= state.baseline_missed:
        return Hold(f"{said}; the signer did not act on it and nothing changed since")
    evidence = Evidence("node_down" if node.status == "down" else "node_unhealthy",
                        node.name, key, node.since or now, node.bad_probes, node.detail)
    return FailOver(said, failing_key=key, observed=observed, evidence=evidence)


def _said(node: NodeHealth) -> str:
    return f"{node.name} {node.status} for {node.bad_probes} probes ({node.detail})"


def _after_switch(fresh: tuple[NodeView, ...], key: str, observed: int, state: WatchState,
                  policy: Policy) -> Decision:
    """The nodes still show the key a confirmed switch replaced: lagging nodes, or undone.

    Waiting for ``expected_key`` for ever is the silent trap: once a quorum of nodes
    has applied the switch block, or the old key is missing again, the switch was
    undone (switched back, or a fork dropped it). Re-arm on the old key, counting
    the misses since the request (those it was based on are handled), and alert.
    """
    handled = state.baseline_missed if state.request_observed is None else state.request_observed
    applied = state.switch_block is not None and sum(
        n.head_block_number >= state.switch_block for n in fresh
        if n.signing_key == key) >= policy.quorum
    if not applied and observed - handled < policy.miss_threshold:
        return Hold(f"switch confirmed; waiting for the nodes to show {state.expected_key}")
    where = "" if state.switch_block is None else f" in block #{state.switch_block}"
    return Rearm(key, min(observed, handled), f"signing key is {key} again after the switch "
                 f"to {state.expected_key}{where}", expected=False)


# ---- state transitions (pure) ----------------------------------------------------------


def after_decision(state: WatchState, decision: Decision, now: datetime) -> WatchState:
    """The state after ``decision`` was carried out (a FailOver: see :func:`with_request`)."""
    if isinstance(decision, Alert):
        alerted = {**state.alerted, decision.kind: now}
        condition = decision.kind if decision.kind in {"rpc_unhealthy", "chain_halted"} else (
            state.condition)
        return replace(state, alerted=alerted, condition=condition)
    if isinstance(decision, Hold):
        return replace(state, condition=decision.condition)
    if isinstance(decision, Rearm):
        return replace(state, phase="armed", armed_key=decision.key,
                       baseline_missed=decision.baseline_missed, armed_at=now, request_id=None,
                       request_body=None, requested_at=None, request_observed=None,
                       expected_key=None, condition=None, request_preemptive=False,
                       preempt_blocked=None)
    return replace(state, condition=None)


def with_request(state: WatchState, request_id: str, body: str, observed: int,
                 now: datetime, *, preemptive: bool = False) -> WatchState:
    """A failover request was created (persist before sending: a restart resumes it)."""
    return replace(state, phase="requested", request_id=request_id, request_body=body,
                   requested_at=now, request_observed=observed, condition=None,
                   request_preemptive=preemptive)


def with_pending(state: WatchState, request_id: str) -> WatchState:
    """The signer accepted the request but has not finished (approval, confirmation)."""
    return replace(state, phase="pending", request_id=request_id)


def with_confirmed(state: WatchState, target_key: str | None, tx_id: str | None,
                   policy: Policy, now: datetime, *, block_num: int | None = None) -> WatchState:
    """The signer confirmed the switch (in ``block_num``): wait for the new key, or stop."""
    phase: Phase = "stopped" if policy.one_shot else "switched"
    return replace(state, phase=phase, expected_key=target_key, switch_block=block_num,
                   last_switch_at=now, last_tx_id=tx_id, switches=state.switches + 1,
                   request_id=None, request_body=None, requested_at=None,
                   request_preemptive=False, preempt_blocked=None)


def with_closed(state: WatchState, now: datetime, *, picture: str | None = None) -> WatchState:
    """The request ended without a switch (refused, failed, dry run): misses it was
    based on are handled; only new ones count. A pre-emptive request ending so blocks
    pre-emption while the health ``picture`` stays the same."""
    baseline = max(state.baseline_missed, state.request_observed or state.baseline_missed)
    blocked = picture if state.request_preemptive else state.preempt_blocked
    return replace(state, phase="armed", baseline_missed=baseline, armed_at=now,
                   request_id=None, request_body=None, requested_at=None,
                   request_observed=None, request_preemptive=False, preempt_blocked=blocked)
