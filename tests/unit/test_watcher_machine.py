"""A stateful property test of the watcher's state machine: it never goes silent.

Hypothesis drives :func:`watcher.core.decide` and the state transitions the daemon
applies (:func:`after_decision`, :func:`with_request`, :func:`with_pending`,
:func:`with_confirmed`, :func:`with_closed`) through arbitrary sequences of chain
events (blocks with and without misses, halts, key changes by our signer, by
someone else, switches back), producer-node health (each node up, down or stuck,
seen through probe rounds) and signer answers (accepted, pending, confirmed,
refused, health_disagrees, failed, errors). The invariants: once the misses since
the watcher armed reach the threshold on a live chain, it asks for a failover or
alerts within a bounded number of polls; and a watcher whose probes see the node on
the on-chain key healthy never sends a pre-emptive request.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from watcher.core import (
    OUTSTANDING,
    Alert,
    FailOver,
    NodeView,
    Observation,
    Policy,
    Rearm,
    WatchState,
    after_decision,
    decide,
    with_closed,
    with_confirmed,
    with_pending,
    with_request,
)
from watcher.health import HealthSettings, ProbeResult, classify_round, initial_view

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PRIMARY = "STM" + "P" * 50
BACKUP = "STM" + "B" * 50
FOREIGN = "STM" + "F" * 50
POLICY = Policy(miss_threshold=2, quorum=2, preemptive=True,
                preempt_cooldown=timedelta(seconds=30), health_max_age=timedelta(seconds=10))
NODES = (("primary", PRIMARY), ("backup1", BACKUP))
JUDGE = HealthSettings(max_lag_blocks=2, bad_probes=2)
MAX_SILENT_POLLS = 2  # a re-arm on the old key, then the request


class WatcherMachine(RuleBasedStateMachine):
    """The chain, the signer and the watcher's pure state, stepped by Hypothesis."""

    def __init__(self) -> None:
        super().__init__()
        self.key, self.missed, self.head, self.halted = PRIMARY, 10, 100, False
        self.state = WatchState()
        self.now = T0
        self.silent = 0  # consecutive live polls owing an action that got none
        self.requests = 0
        self.preempted_healthy = False  # a pre-emptive request while the on-chain node was up
        self.node_state = {"primary": "up", "backup1": "up"}  # up | down | stuck
        self.stuck_at = {"primary": 0, "backup1": 0}
        self.health = initial_view(NODES)

    # ---- the producer nodes ------------------------------------------------------------

    @rule(node=st.sampled_from(["primary", "backup1"]),
          how=st.sampled_from(["up", "down", "stuck"]))
    def node_changes(self, node: str, how: str) -> None:
        """A producer node crashes, gets stuck (head frozen) or comes back."""
        self.node_state[node] = how
        self.stuck_at[node] = self.head

    @rule()
    def probe_round(self) -> None:
        """The prober asks every node once; the pure classification updates the view."""
        heads = {"up": lambda n: self.head, "down": lambda n: None,
                 "stuck": lambda n: self.stuck_at[n]}
        probes = [ProbeResult(n, self.now, heads[self.node_state[n]](n),
                              "connection refused" if self.node_state[n] == "down" else None)
                  for n, _key in NODES]
        self.health = classify_round(self.health, probes, self.head, JUDGE)

    # ---- the chain ---------------------------------------------------------------------

    @rule(blocks=st.integers(1, 3), misses=st.integers(0, 2))
    def blocks(self, blocks: int, misses: int) -> None:
        """Blocks are produced; the watched witness misses some of its slots."""
        if not self.halted:
            self.head += blocks
            self.missed += misses

    @rule(halted=st.booleans())
    def halt_or_resume(self, halted: bool) -> None:
        """The whole chain halts (no block, no miss counted) or resumes."""
        self.halted = halted

    @precondition(lambda self: not self.halted)
    @rule(key=st.sampled_from([PRIMARY, BACKUP, FOREIGN]))
    def key_change(self, key: str) -> None:
        """Anyone (our signer, the operator, an intruder) sets the key, in the next block."""
        self.key, self.head = key, self.head + 1

    # ---- the signer's answers ----------------------------------------------------------

    @precondition(lambda self: self.state.phase in OUTSTANDING)
    @rule(answer=st.sampled_from(["accepted", "pending", "refused", "health_disagrees",
                                  "failed", "error"]))
    def signer_answers(self, answer: str) -> None:
        """The signer answers the outstanding request without switching (or is unreachable)."""
        if answer in {"accepted", "pending"}:
            self.state = with_pending(self.state, "sig-" + "1" * 28)
        elif answer in {"refused", "failed", "health_disagrees"}:
            self.state = with_closed(self.state, self.now, picture=self.health.picture())
        # "error": the daemon alerts signer_unreachable and retries; the state is unchanged.

    @precondition(lambda self: self.state.phase in OUTSTANDING and not self.halted)
    @rule()
    def signer_confirms(self) -> None:
        """The signer switches to the backup key in the next block and says so."""
        self.key, self.head = BACKUP, self.head + 1
        self.state = with_confirmed(self.state, BACKUP, "ab" * 20, POLICY, self.now,
                                    block_num=self.head)

    # ---- the watcher -------------------------------------------------------------------

    def _owed(self) -> bool:
        """Misses since armed reached the threshold on a live chain, and nothing is pending."""
        s = self.state
        return (not self.halted and s.phase in {"armed", "switched"}
                and s.armed_key == self.key
                and self.missed - s.baseline_missed >= POLICY.miss_threshold)

    @rule()
    def poll(self) -> None:
        """One poll through two agreeing nodes; the decision is carried out like the daemon."""
        owed = self._owed()
        self.now += timedelta(seconds=3)
        nodes = tuple(NodeView(f"http://127.0.0.1:1/rpc/{i}", not self.halted, self.head, T0,
                               self.head + 7, self.key, self.missed, self.head)
                      for i in range(2))
        health = replace(self.health, at=self.now)  # the prober runs beside the poller
        decision = decide(Observation(nodes), self.state, POLICY, self.now, health)
        acted = isinstance(decision, FailOver | Alert) or (
            isinstance(decision, Rearm) and not decision.expected)
        if isinstance(decision, FailOver):
            assert decision.failing_key == self.key
            if decision.evidence is not None:
                self.preempted_healthy |= any(
                    n.up for n in health.by_key(self.key))
                assert not self.halted
                assert decision.evidence.node_key == self.key
            self.requests += 1
            self.state = with_request(self.state, f"r{self.requests:031d}", "{}",
                                      decision.observed, self.now,
                                      preemptive=decision.evidence is not None)
        else:
            self.state = after_decision(self.state, decision, self.now)
        self.silent = self.silent + 1 if owed and not acted else 0

    @invariant()
    def never_silent(self) -> None:
        """Owed an action, the watcher acts within MAX_SILENT_POLLS polls."""
        assert self.silent <= MAX_SILENT_POLLS, (self.state, self.key, self.missed, self.head)

    @invariant()
    def never_preempts_a_healthy_node(self) -> None:
        """No pre-emptive request while the probes see the on-chain key's node healthy."""
        assert not self.preempted_healthy, self.health


WatcherMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                            deadline=None)
TestWatcherMachine = WatcherMachine.TestCase
