"""Producer-node health as the signer sees it: probe results classified into values.

Pure: no sockets, no clock, no logging. :mod:`signer.probes` does the I/O and
hands its raw :class:`ProbeResult` values here; :func:`signer.policy.decide`
takes the resulting :class:`HealthSnapshot` as a value.

A node is ``healthy`` when its own API answered with a head within
``max_lag_blocks`` of the chain's head (the signer's own quorum reading),
``lagging`` when it answered with an older head (out of sync: hived's witness
plugin does not produce then), ``down`` when it did not answer usefully
(refused, reset, timed out, garbage), and ``unknown`` when it has no
``health_url``. ``down`` and ``lagging`` are *dead*: a switch never goes there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from shared.errors import ConfigError

HealthState = Literal["healthy", "lagging", "down", "unknown"]
DEAD_STATES: frozenset[str] = frozenset({"down", "lagging"})
_DETAIL_MAX = 200


@dataclass(frozen=True)
class HealthConfig:
    """How the signer probes producer nodes (``[health]`` in signer.toml).

    Raises:
        ConfigError: a field out of range; ``field`` names it.
    """

    probe_timeout_s: float = 1.0
    max_lag_blocks: int = 1
    confirm_probes: int = 2
    confirm_interval_s: float = 0.2

    def __post_init__(self) -> None:
        checks = [
            (0.05 <= self.probe_timeout_s <= 30, "probe_timeout_s", "must be 0.05..30 s"),
            (isinstance(self.max_lag_blocks, int) and 0 <= self.max_lag_blocks <= 1000,
             "max_lag_blocks", "must be an integer 0..1000"),
            (isinstance(self.confirm_probes, int) and 1 <= self.confirm_probes <= 10,
             "confirm_probes", "must be an integer 1..10"),
            (0 <= self.confirm_interval_s <= 10, "confirm_interval_s", "must be 0..10 s"),
        ]
        for ok, name, message in checks:
            if not ok:
                raise ConfigError(message, field=name)


@dataclass(frozen=True)
class ProbeResult:
    """What one probe of a node's API saw: its head, or why there was none."""

    head: int | None
    detail: str = ""
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class NodeHealth:
    """One producer node's health from the signer's side."""

    name: str
    key: str
    state: HealthState
    head: int | None = None
    detail: str = ""

    @property
    def dead(self) -> bool:
        """Down or lagging: a switch must not go to this node."""
        return self.state in DEAD_STATES

    def as_json(self) -> dict[str, object]:
        """The JSON form for answers and the audit."""
        return {"key": self.key, "state": self.state, "head": self.head,
                "detail": self.detail}


@dataclass(frozen=True)
class HealthSnapshot:
    """Every configured node's health, probed at one moment against one chain head."""

    nodes: tuple[NodeHealth, ...]
    chain_head: int | None = None

    def of_key(self, key: str) -> NodeHealth | None:
        """The node holding ``key``, if it is configured."""
        return next((n for n in self.nodes if n.key == key), None)

    def replace_node(self, node: NodeHealth) -> HealthSnapshot:
        """This snapshot with ``node`` (same key) replaced."""
        return HealthSnapshot(tuple(node if n.key == node.key else n for n in self.nodes),
                              self.chain_head)

    def as_json(self) -> dict[str, object]:
        """The JSON form for answers and the audit: the chain head and each node by name."""
        return {"chain_head": self.chain_head,
                "nodes": {n.name: n.as_json() for n in self.nodes}}

    def summary(self) -> str:
        """One line for people: ``primary down (connection refused), backup1 healthy …``."""
        return ", ".join(f"{n.name} {n.state}" + (f" ({n.detail})" if n.detail else "")
                         for n in self.nodes)


def _clip(text: str) -> str:
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    return cleaned[:_DETAIL_MAX]


def classify(name: str, key: str, probe: ProbeResult | None, chain_head: int,
             max_lag_blocks: int) -> NodeHealth:
    """The health of one node from its probe and the chain's head; ``None``: no health_url."""
    if probe is None:
        return NodeHealth(name, key, "unknown", detail="no health_url")
    if probe.head is None:
        return NodeHealth(name, key, "down", detail=_clip(probe.detail or "no answer"))
    lag = chain_head - probe.head
    if lag > max_lag_blocks:
        return NodeHealth(name, key, "lagging", probe.head,
                          _clip(f"head {probe.head} is {lag} blocks behind the chain's "
                                f"{chain_head}"))
    return NodeHealth(name, key, "healthy", probe.head)


def confirmed(probes: Sequence[NodeHealth]) -> NodeHealth:
    """One node's health over consecutive probes: dead only if every probe was.

    A single healthy answer is proof the node is up; the latest one is returned.
    Of all-dead probes the last is returned, its detail noting how many failed.

    Raises:
        ValueError: no probes.
    """
    if not probes:
        raise ValueError("no probes")
    healthy = [p for p in probes if not p.dead]
    if healthy:
        return healthy[-1]
    last = probes[-1]
    if len(probes) == 1:
        return last
    return NodeHealth(last.name, last.key, last.state, last.head,
                      _clip(f"{len(probes)} consecutive probes failed; last: {last.detail}"))
