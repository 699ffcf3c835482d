"""The signer's own policy: whether to change the witness's key, and to which key.

Pure: values in, a :class:`Decision` out. No I/O, no clock (``now`` is a
parameter), no logging. The watcher's request is a question; the answer rests
on what the signer read from its own node(s) and on its own history.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from shared.chains import NULL_KEY
from shared.errors import (
    ChainDataError,
    ConfigError,
    ForbiddenError,
    PolicyError,
    RateLimitedError,
)
from signer.health import HealthSnapshot, NodeHealth

KeyMode = Literal["active", "signing"]
OnExhausted = Literal["disable", "hold"]
ApprovalMode = Literal["auto", "manual", "veto"]
ApprovalStatus = Literal["pending", "approved", "denied", "expired", "due"]
Verdict = Literal["approve", "deny"]
EvidenceKind = Literal["node_down", "node_unhealthy"]

_ACCOUNT = re.compile(r"[a-z][a-z0-9.-]{2,15}")
_REASON_MAX = 200


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class PolicyConfig:
    """The signer's failover policy for one witness, checked when built.

    Raises:
        ConfigError: a field is missing its constraint; ``field`` names it.
    """

    witness: str
    key_mode: KeyMode
    node_keys: tuple[str, ...]
    min_missed: int
    max_switches: int
    window: timedelta
    cooldown: timedelta
    max_rounds: int
    on_exhausted: OnExhausted
    approval: ApprovalMode
    approval_timeout: timedelta
    veto_window: timedelta
    # Pre-emptive failover (issue 11): act on a watcher's node-health evidence when
    # the signer's own probes agree; ``node_names`` name ``node_keys`` in order.
    preemptive: bool = False
    node_names: tuple[str, ...] = ()
    # How long an operator's denial holds: no new request for the same failing key.
    deny_hold: timedelta = timedelta(seconds=600)

    def __post_init__(self) -> None:
        object.__setattr__(self, "node_keys", tuple(self.node_keys))
        object.__setattr__(self, "node_names", tuple(self.node_names))
        zero = timedelta(0)
        checks: list[tuple[bool, str, str]] = [
            (isinstance(self.witness, str) and bool(_ACCOUNT.fullmatch(self.witness)),
             "witness", "must be a chain account name"),
            (self.key_mode in ("active", "signing"), "key_mode", "must be 'active' or 'signing'"),
            (len(self.node_keys) > 0, "node_keys", "must list at least one key"),
            (all(isinstance(k, str) and k.startswith("STM") and len(k) > 3
                 for k in self.node_keys), "node_keys", "every key must be an STM public key"),
            # SECURITY: the null key is not a node key; listing it would let a
            # watcher-named target disable the witness, bypassing on_exhausted.
            (NULL_KEY not in self.node_keys, "node_keys", "must not contain the null key"),
            (len(set(self.node_keys)) == len(self.node_keys), "node_keys", "keys must be unique"),
            (_is_int(self.min_missed, 1), "min_missed", "must be an integer >= 1"),
            (_is_int(self.max_switches, 1), "max_switches", "must be an integer >= 1"),
            (self.window > zero, "window", "must be positive"),
            (self.cooldown >= zero, "cooldown", "must not be negative"),
            (_is_int(self.max_rounds, 0), "max_rounds", "must be an integer >= 0"),
            (self.on_exhausted in ("disable", "hold"), "on_exhausted",
             "must be 'disable' or 'hold'"),
            # witness_set_properties cannot be trusted to disable and never re-enables;
            # the null key is set with witness_update, which needs the active key.
            (self.on_exhausted != "disable" or self.key_mode == "active", "on_exhausted",
             "'disable' requires key_mode = 'active'"),
            (self.approval in ("auto", "manual", "veto"), "approval",
             "must be 'auto', 'manual' or 'veto'"),
            (self.approval_timeout > zero, "approval_timeout", "must be positive"),
            (self.veto_window > zero, "veto_window", "must be positive"),
            (isinstance(self.preemptive, bool), "preemptive", "must be true or false"),
            (not self.node_names or len(self.node_names) == len(self.node_keys), "node_names",
             "must name every node key"),
            (self.deny_hold >= zero, "deny_hold", "must not be negative"),
        ]
        for ok, name, message in checks:
            if not ok:
                raise ConfigError(message, field=name)


@dataclass(frozen=True)
class Evidence:
    """A watcher's claim that a producer node is down or out of sync (issue 11).

    Untrusted: the signer acts on it only when its own probes agree.
    """

    kind: EvidenceKind
    node: str
    node_key: str
    since: int  # unix seconds of the watcher's first bad probe (its clock)
    probes: int
    detail: str

    def as_json(self) -> dict[str, object]:
        """The JSON form, as the request carried it."""
        return {"kind": self.kind, "node": self.node, "node_key": self.node_key,
                "since": self.since, "probes": self.probes, "detail": self.detail}


@dataclass(frozen=True)
class FailoverAsk:
    """What the authenticated request asked for; untrusted beyond its origin.

    With ``evidence`` the request is *pre-emptive*: it asks for a switch before
    misses show, on the grounds that the node holding the key is down.
    """

    witness: str
    failing_key: str
    observed_total_missed: int
    reason: str
    target_key: str | None = None
    dry_run: bool = False
    evidence: Evidence | None = None


@dataclass(frozen=True)
class ChainView:
    """The witness as the signer itself read it from its own node(s)."""

    head_block_num: int
    signing_key: str
    total_missed: int
    url: str
    props: Mapping[str, object] = field(hash=False)
    nodes_agreeing: int = 1


@dataclass(frozen=True)
class History:
    """The signer's memory: the armed baseline, past switches, rotation rounds.

    ``rounds`` counts wrap-arounds (last key back to an earlier one) since the
    operator last armed the signer; ``switch_times`` are all switches the
    caller still cares about (at least those inside the rate-limit window).
    """

    baseline_missed: int
    armed_key: str
    switch_times: tuple[datetime, ...] = ()
    rounds: int = 0
    # When the operator (or a confirmed switch) last armed: a denial before it is history.
    armed_at: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Switch:
    """Change the signing key to ``target_key``; the rotation is then at ``new_rounds``."""

    target_key: str
    new_rounds: int
    reason: str
    preemptive: bool = False  # accepted on the signer's health probes, not on misses


@dataclass(frozen=True)
class Disable:
    """Set the null key (active mode only): rotation is exhausted."""

    reason: str


_ERRORS: dict[int, type[PolicyError]] = {403: ForbiddenError, 429: RateLimitedError}


@dataclass(frozen=True)
class Refuse:
    """Do nothing: ``status`` for HTTP, ``alert`` to call a human, ``rule`` names the rule."""

    reason: str
    status: int = 409
    alert: bool = False
    rule: str = ""

    def as_error(self) -> PolicyError:
        """Return the error the HTTP layer maps to ``status``."""
        return _ERRORS.get(self.status, PolicyError)(self.reason)


Decision = Switch | Disable | Refuse


def decide(ask: FailoverAsk, chain: ChainView, history: History, policy: PolicyConfig,
           now: datetime, *, quorum: int = 1, health: HealthSnapshot | None = None
           ) -> Decision:
    """Return what the signer does about ``ask``. Same inputs, same answer; no I/O.

    ``health`` is the signer's own probe of the producer nodes, taken with the
    chain reading (None: no node has a ``health_url``). A pre-emptive ask (with
    evidence) that lacks ``min_missed`` new misses needs ``health`` to agree
    (:func:`health_agrees`); on every switch, dead nodes are skipped (:func:`_rotate`).
    ``ask.dry_run`` does not change the answer: the caller simply does not execute it.
    """
    # SECURITY: T1 — a watcher key is only good for the witness this signer serves.
    if ask.witness != policy.witness:
        return Refuse(f"this signer serves {policy.witness!r}, not {ask.witness!r}",
                      403, alert=True, rule="witness")
    # SECURITY: T4 — fewer agreeing nodes than required is no evidence at all.
    if chain.nodes_agreeing < quorum:
        return Refuse(f"only {chain.nodes_agreeing} node(s) agree, {quorum} required",
                      409, rule="quorum")
    # A disabled witness needs an operator (and the active key) to come back.
    if chain.signing_key == NULL_KEY:
        return Refuse("the witness is disabled (null key); nothing to do", 409, rule="disabled")
    # SECURITY: a key outside our list means someone else changed it: never overwrite it.
    if chain.signing_key not in policy.node_keys:
        return Refuse(f"on-chain key {chain.signing_key} is not a configured node key; "
                      "someone else changed it", 409, alert=True, rule="foreign_key")
    # The key already changed (an earlier switch, an operator) or the watcher is wrong.
    if ask.failing_key != chain.signing_key:
        return Refuse(f"the failing key {ask.failing_key} is not the on-chain key "
                      f"{chain.signing_key}", 409, rule="stale_ask")
    # SECURITY: a baseline armed on another key counts misses of that key; re-arm first.
    if chain.signing_key != history.armed_key:
        return Refuse(f"armed on {history.armed_key} but the chain shows {chain.signing_key}; "
                      "re-arm", 409, alert=True, rule="not_armed")
    # SECURITY: T1 — evidence is the signer's own reading; the watcher's count is ignored.
    mismatch = ("" if ask.observed_total_missed == chain.total_missed else
                f" (the watcher reported total_missed={ask.observed_total_missed}, "
                f"the signer reads {chain.total_missed})")
    new_misses = chain.total_missed - history.baseline_missed
    if new_misses < 0:
        # SECURITY: T4 — total_missed never decreases; a node that says so is lying or stale.
        return Refuse(f"total_missed {chain.total_missed} is below the armed baseline "
                      f"{history.baseline_missed}{mismatch}", 409, alert=True,
                      rule="chain_regressed")
    # Misses on chain are evidence enough, with or without the watcher's health claim;
    # only an ask short of them rests on the signer's own probes (T9).
    preemptive = ask.evidence is not None and new_misses < policy.min_missed
    if preemptive:
        refusal = health_agrees(ask, chain, policy, health)
        if refusal is not None:
            return refusal
    elif new_misses < policy.min_missed:
        return Refuse(f"no evidence: {new_misses} new misses since armed < "
                      f"{policy.min_missed}{mismatch}", 409, rule="no_evidence")
    # SECURITY: T1 — the rate limit holds however often a watcher asks.
    recent = sum(1 for t in history.switch_times if t > now - policy.window)
    if recent >= policy.max_switches:
        return Refuse(f"{recent} switches in the last {policy.window}; at most "
                      f"{policy.max_switches}", 429, rule="rate_limit")
    # A switch in the future (clock moved back) also counts as recent: conservative.
    if history.switch_times and now - max(history.switch_times) < policy.cooldown:
        return Refuse(f"cooling down: last switch at {max(history.switch_times).isoformat()}",
                      429, rule="cooldown")
    if preemptive:
        assert health is not None  # health_agrees refused otherwise
        assert ask.evidence is not None
        failing = health.of_key(chain.signing_key)
        why = (f"pre-emptive: {ask.evidence.node} {failing.state if failing else '?'} from the "
               f"signer's side too ({failing.detail if failing else ''}); "
               f"{new_misses} new misses{mismatch}; watcher: {ask.reason[:_REASON_MAX]!r}")
    else:
        why = (f"{new_misses} new misses since armed on {chain.signing_key}{mismatch}; "
               f"watcher: {ask.reason[:_REASON_MAX]!r}")
    return _rotate(ask, chain, history, policy, why=why, health=health, preemptive=preemptive)


def health_agrees(ask: FailoverAsk, chain: ChainView, policy: PolicyConfig,
                  health: HealthSnapshot | None) -> Refuse | None:
    """None when the signer's own probes confirm a pre-emptive ask's claim, else the refusal.

    The node holding the on-chain key must be down or lagging from the signer's side
    too; the target is checked healthy when it is chosen (:func:`_rotate`).
    """
    evidence = ask.evidence
    assert evidence is not None
    if not policy.preemptive:
        return Refuse(f"pre-emptive switches are off ([policy] preemptive = false) and the "
                      f"watcher's evidence ({evidence.kind} {evidence.node}) is no miss",
                      409, rule="preemptive_off")
    if policy.node_names:
        owner = policy.node_names[policy.node_keys.index(chain.signing_key)]
        if evidence.node != owner:
            # SECURITY: T9 — the claim must be about the node that holds the key.
            return Refuse(f"the evidence names node {evidence.node!r} but the on-chain key "
                          f"belongs to {owner!r}", 409, alert=True, rule="health_disagrees")
    failing = None if health is None else health.of_key(chain.signing_key)
    if failing is None or failing.state == "unknown":
        return Refuse(f"the watcher says {evidence.node} is {evidence.kind.removeprefix('node_')}"
                      " but the signer cannot probe it (no health_url): it acts on misses only",
                      409, alert=True, rule="health_disagrees")
    # SECURITY: T9 — a stolen watcher claiming a healthy node is down is refused here.
    if not failing.dead:
        return Refuse(f"the watcher says {evidence.node} is "
                      f"{evidence.kind.removeprefix('node_')} ({evidence.detail!r}, "
                      f"{evidence.probes} probes) but the signer sees it healthy at head "
                      f"{failing.head} (chain head {health.chain_head if health else '?'})",
                      409, alert=True, rule="health_disagrees")
    return None


def _eligible(node: NodeHealth | None, preemptive: bool) -> bool:
    """Whether a switch may go to this node: never a dead one; pre-emptive: healthy only."""
    if node is None or node.state == "unknown":
        return not preemptive
    return node.state == "healthy"


def _rotate(ask: FailoverAsk, chain: ChainView, history: History, policy: PolicyConfig,
            *, why: str, health: HealthSnapshot | None, preemptive: bool) -> Decision:
    """Pick the target key, skipping nodes the signer sees dead; wrap-arounds past
    ``max_rounds`` exhaust the rotation."""
    keys = policy.node_keys
    current = keys.index(chain.signing_key)

    def node_of(key: str) -> NodeHealth | None:
        return None if health is None else health.of_key(key)

    if ask.target_key is not None:
        # SECURITY: T1 — the watcher may choose among our keys, never add one.
        if ask.target_key not in keys:
            return Refuse(f"target {ask.target_key} is not a configured node key", 409,
                          alert=True, rule="bad_target")
        if ask.target_key == chain.signing_key:
            return Refuse("the target is the current key", 409, rule="bad_target")
        node = node_of(ask.target_key)
        # SECURITY: T9 — not even a named target moves the witness onto a dead node.
        if not _eligible(node, preemptive):
            seen = "has no health_url" if node is None or node.state == "unknown" else (
                f"is {node.state} ({node.detail})")
            return Refuse(f"target {ask.target_key} ({node.name if node else '?'}) {seen} from "
                          "the signer's side", 409, alert=True, rule="target_unhealthy")
        target = keys.index(ask.target_key)
    else:
        order = [(current + step) % len(keys) for step in range(1, len(keys))]
        chosen = [i for i in order if _eligible(node_of(keys[i]), preemptive)]
        exhausted = bool(order) and order[0] < current and history.rounds >= policy.max_rounds
        if order and not chosen and not exhausted:
            # SECURITY: T9 — holding beats a switch onto a node the signer sees dead.
            assert health is not None  # without health every candidate is eligible
            return Refuse(f"no healthy node to switch to: {health.summary()}; holding: {why}",
                          409, alert=True, rule="no_healthy_target")
        # An exhausted rotation ends as configured (hold or disable) whatever the health.
        target = chosen[0] if chosen else order[0] if exhausted else current
        before = order[:order.index(target)] if target in order else []
        passed = [n.name for n in map(node_of, (keys[i] for i in before))
                  if n is not None and n.dead]
        if passed:
            why = f"{why}; skipped dead {', '.join(passed)}"
    wraps = target <= current
    new_rounds = history.rounds + 1 if wraps else history.rounds
    if target == current or new_rounds > policy.max_rounds:
        spent = f"rotation exhausted after {history.rounds} round(s) of {len(keys)} key(s)"
        if policy.on_exhausted == "disable":
            return Disable(f"{spent}; {why}")
        return Refuse(f"{spent}; holding: {why}", 409, alert=True, rule="exhausted")
    return Switch(keys[target], new_rounds, why, preemptive=preemptive)


def arm(chain: ChainView, previous: History | None = None) -> History:
    """Return the history after an operator (re-)arms on ``chain``: rounds restart at 0.

    Past switch times are kept: re-arming does not reset the rate limit.
    """
    times = previous.switch_times if previous else ()
    return History(chain.total_missed, chain.signing_key, times, 0)


def rearm(history: History, chain: ChainView, done: Switch | Disable, at: datetime) -> History:
    """Return the history after ``done`` was confirmed on ``chain`` at ``at``.

    The baseline becomes the chain's ``total_missed`` at confirmation and the
    armed key the new key.

    Raises:
        ChainDataError: the chain does not show the key ``done`` set.
    """
    expected = done.target_key if isinstance(done, Switch) else NULL_KEY
    if chain.signing_key != expected:
        raise ChainDataError(f"expected {expected} on chain after the switch, "
                             f"read {chain.signing_key}")
    rounds = done.new_rounds if isinstance(done, Switch) else history.rounds
    return History(chain.total_missed, expected, (*history.switch_times, at), rounds)


@dataclass(frozen=True)
class Approval:
    """Where a decided switch stands in the approval flow."""

    mode: ApprovalMode
    status: ApprovalStatus
    requested_by: str = ""
    expires_at: datetime | None = None
    execute_at: datetime | None = None
    decided_by: str | None = None

    @property
    def should_execute(self) -> bool:
        """True when the switch may be built and sent now."""
        return self.status in ("approved", "due")


def approval_plan(policy: PolicyConfig, now: datetime, requested_by: str = "") -> Approval:
    """Return the approval state a new switch starts in under ``policy``."""
    if policy.approval == "auto":
        return Approval("auto", "approved", requested_by, execute_at=now)
    if policy.approval == "manual":
        return Approval("manual", "pending", requested_by,
                        expires_at=now + policy.approval_timeout)
    return Approval("veto", "pending", requested_by, execute_at=now + policy.veto_window)


def resolve_pending(state: Approval, now: datetime, verdict: Verdict | None = None,
                    by: str | None = None) -> Approval:
    """Return ``state`` after time passed to ``now`` and, optionally, an operator's verdict.

    A denial always wins (it is the safe direction); a manual approval after
    ``expires_at`` is too late, the evidence is stale.

    Raises:
        PolicyError: a verdict on a request that is no longer pending (409).
        ForbiddenError: the requester tries to approve its own request (403).
    """
    if state.status != "pending":
        if verdict is not None:
            raise PolicyError(f"the request is {state.status}, no longer pending")
        return state
    if verdict is not None and not by:
        raise ForbiddenError("a verdict needs the identity of who gives it")
    if verdict == "deny":
        return replace(state, status="denied", decided_by=by)
    # SECURITY: T1 — whoever asked for the switch cannot also approve it.
    if verdict == "approve" and state.requested_by and by == state.requested_by:
        raise ForbiddenError("a client cannot approve its own request")
    if state.mode == "manual":
        if state.expires_at is None or now >= state.expires_at:
            return replace(state, status="expired")
        return replace(state, status="approved", decided_by=by) if verdict else state
    if verdict == "approve":
        return replace(state, status="approved", decided_by=by)
    if state.execute_at is None or now >= state.execute_at:
        return replace(state, status="due")
    return state
