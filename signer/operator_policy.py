"""The signer's policy for an operator's commands and an operator's denial.

Pure, like :func:`signer.policy.decide`: values in, a decision out. The operator is
the evidence (no ``min_missed``); the key list, the quorum, the rate limit and (unless
``force``) the cooldown still hold. A denial holds the same outage for
``policy.deny_hold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.chains import NULL_KEY
from signer.policy import (
    ChainView,
    Decision,
    Disable,
    History,
    PolicyConfig,
    Refuse,
    Switch,
)

# ---- a denial holds --------------------------------------------------------------------


def deny_hold_refusal(decision: Decision, denied_at: datetime | None, history: History,
                      policy: PolicyConfig, now: datetime) -> Decision:
    """``decision``, unless an operator denied this outage within ``policy.deny_hold``.

    ``denied_at`` is when the last request for the same failing key was denied (None:
    never). A denial before the signer was last armed was about another outage. A
    refusal keeps its own rule; only a would-be switch or disable is held.
    """
    if isinstance(decision, Refuse) or denied_at is None or (
            history.armed_at is not None and denied_at < history.armed_at):
        return decision
    until = denied_at + policy.deny_hold
    if now < until:
        return Refuse(f"an operator denied a switch for this outage at "
                      f"{denied_at:%H:%M:%S}Z; held until {until:%H:%M:%S}Z", 409,
                      rule="denied_recently")
    return decision


# ---- operator commands ---------------------------------------------------------------

OperatorKind = Literal["arm", "switch", "disable", "enable"]
OPERATOR_KINDS: tuple[OperatorKind, ...] = ("arm", "switch", "disable", "enable")


@dataclass(frozen=True)
class OperatorAsk:
    """An operator's command: the key it saw on chain, and the node key it names (if any).

    The operator is the evidence (no ``min_missed``); the key list, the rate limit
    and (unless ``force``) the cooldown still hold.
    """

    kind: OperatorKind
    seen_key: str
    target_key: str | None = None
    force: bool = False
    asked_at: datetime | None = None  # None once broadcast: a retry is not a new command


@dataclass(frozen=True)
class Arm:
    """Take the on-chain key and ``total_missed`` as the new baseline; rounds restart."""

    reason: str


def decide_operator(ask: OperatorAsk, chain: ChainView, history: History | None,
                    policy: PolicyConfig, now: datetime, *, quorum: int = 1,
                    busy_with: str | None = None) -> Switch | Disable | Arm | Refuse:
    """Return what the signer does about an operator's command. Pure, like :func:`decide`.

    ``busy_with`` names another open request (one change in flight at a time).
    """
    if busy_with is not None:
        return Refuse(f"request {busy_with} is still open; approve, deny or wait for it",
                      409, rule="busy")
    # SECURITY: T4 — an operator's command is executed on evidence of the chain's state too.
    if chain.nodes_agreeing < quorum:
        return Refuse(f"only {chain.nodes_agreeing} node(s) agree, {quorum} required",
                      409, rule="quorum")
    if ask.asked_at is not None and now - ask.asked_at > policy.approval_timeout:
        # e.g. recorded while the signer was down: a command is not executed hours later.
        return Refuse(f"the command was given at {ask.asked_at:%H:%M:%S}Z, more than "
                      f"{policy.approval_timeout} ago; give it again", 409, rule="stale_ask")
    key = chain.signing_key
    if key != ask.seen_key:
        return Refuse(f"the on-chain key changed to {key} since the command was given "
                      f"(it saw {ask.seen_key}); check and give it again", 409,
                      rule="stale_ask")
    keys = policy.node_keys
    if ask.kind in ("disable", "enable") and policy.key_mode != "active":
        return Refuse(f"{ask.kind} needs key_mode = 'active' (the null key is set with "
                      "witness_update); this signer is in signing mode", 409, rule="key_mode")
    if ask.kind == "enable":
        if key != NULL_KEY:
            return Refuse("the witness is not disabled; use switch", 409, rule="not_disabled")
    elif key == NULL_KEY:
        return Refuse("the witness is disabled (null key); use enable --to NODE", 409,
                      rule="disabled")
    # SECURITY: a key outside our list means someone else changed it: never overwrite it.
    elif key not in keys:
        return Refuse(f"on-chain key {key} is not a configured node key; someone else "
                      "changed it", 409, alert=True, rule="foreign_key")
    if ask.kind == "arm":
        return Arm(f"operator armed on {key} at total_missed {chain.total_missed}")
    if ask.kind in ("switch", "enable"):
        # SECURITY: T1 — the operator chooses among our keys, never adds one; no --force.
        if ask.target_key not in keys:
            return Refuse(f"target {ask.target_key} is not a configured node key", 409,
                          rule="bad_target")
        if ask.target_key == key:
            return Refuse("the target is already the on-chain key", 409,
                          rule="already_current")
    limited = _rate_limited(history, policy, now, force=ask.force)
    if limited is not None:
        return limited
    if ask.kind == "disable":
        return Disable(f"operator disabled the witness (was {key})")
    assert ask.target_key is not None  # checked against the key list above
    return Switch(ask.target_key, 0, f"operator {ask.kind} {key} -> {ask.target_key}")


def _rate_limited(history: History | None, policy: PolicyConfig, now: datetime, *,
                  force: bool) -> Refuse | None:
    """The rate limit (always) and the cooldown (unless ``force``) for an operator's change."""
    times = history.switch_times if history else ()
    recent = sum(1 for t in times if t > now - policy.window)
    if recent >= policy.max_switches:
        return Refuse(f"{recent} switches in the last {policy.window}; at most "
                      f"{policy.max_switches} (not overridable)", 429, rule="rate_limit")
    if not force and times and now - max(times) < policy.cooldown:
        return Refuse(f"cooling down: last switch at {max(times).isoformat()} "
                      "(--force overrides the cooldown)", 429, rule="cooldown")
    return None
