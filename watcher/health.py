"""Producer-node health: pure classification of probe results. No I/O, no clock.

The watcher probes each configured producer node's own API
(:mod:`watcher.probe`); every probe round becomes one :class:`ProbeResult` per
node, and :func:`classify_round` turns the previous :class:`HealthView` and the
round into the next. A node is *down* when it refuses or times out, *unhealthy*
when its head lags the chain's head by more than ``max_lag_blocks``, each only
after ``bad_probes`` consecutive bad probes; one good probe makes it healthy again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, Literal

# unknown: not probed yet; suspect: bad, but fewer than bad_probes in a row.
NodeStatus = Literal["unknown", "healthy", "suspect", "down", "unhealthy"]
BAD: Final[frozenset[NodeStatus]] = frozenset({"down", "unhealthy"})
MAX_DETAIL: Final = 200


@dataclass(frozen=True)
class HealthSettings:
    """How nodes are judged (from watcher.toml ``[health]``)."""

    max_lag_blocks: int = 2
    bad_probes: int = 2


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one node: its head, or why there was none."""

    name: str
    at: datetime
    head: int | None = None  # None: no usable answer
    error: str | None = None  # "connection refused", "timeout", ...


@dataclass(frozen=True)
class NodeHealth:
    """What the watcher knows about one producer node's health."""

    name: str
    public_key: str
    status: NodeStatus = "unknown"
    bad_probes: int = 0  # consecutive bad probes, the last one included
    bad_kind: Literal["down", "unhealthy"] | None = None  # the last bad probe's kind
    since: datetime | None = None  # the first of those bad probes
    detail: str = ""
    head: int | None = None
    lag: int | None = None  # blocks behind the reference head (None: unknown)
    probed_at: datetime | None = None

    @property
    def bad(self) -> bool:
        """Whether the node is settled down or unhealthy."""
        return self.status in BAD

    @property
    def up(self) -> bool:
        """Whether the node's last probe was good (healthy and in sync)."""
        return self.status == "healthy"


@dataclass(frozen=True)
class HealthView:
    """Every configured producer node's health after ``rounds`` probe rounds."""

    nodes: tuple[NodeHealth, ...]
    rounds: int = 0
    at: datetime | None = None  # time of the last round (None: no round yet)

    def by_key(self, public_key: str) -> tuple[NodeHealth, ...]:
        """The nodes holding ``public_key`` (one, normally)."""
        return tuple(n for n in self.nodes if n.public_key == public_key)

    def picture(self) -> str:
        """A fingerprint of every node's settled status: what "the health changed" compares."""
        return ",".join(f"{n.name}={n.status if n.status in BAD or n.up else 'unknown'}"
                        for n in self.nodes)


def initial_view(nodes: tuple[tuple[str, str], ...]) -> HealthView:
    """The view before any probe, from (name, public_key) pairs."""
    return HealthView(tuple(NodeHealth(name, key) for name, key in nodes))


def reference_head(chain_head: int | None, heads: list[int]) -> int | None:
    """The chain's head to measure lag against: the RPC quorum head, or better.

    The RPC head may be several blocks old (the miss poller sleeps far from the
    witness's slot), so the second-highest head the producer nodes report in the
    same round raises it: one node alone (a liar, or a node ahead of a stale RPC
    view) never sets the reference.
    """
    # SECURITY: one lying node with a high head could make every other node look lagging.
    ranked = sorted(heads, reverse=True)
    peer = ranked[1] if len(ranked) >= 2 else None
    candidates = [h for h in (chain_head, peer) if h is not None]
    return max(candidates) if candidates else None


def clean_detail(text: str) -> str:
    """``text`` without control characters, at most :data:`MAX_DETAIL` characters."""
    return "".join(c if c.isprintable() else " " for c in text)[:MAX_DETAIL]


def classify(node: NodeHealth, probe: ProbeResult, reference: int | None,
             settings: HealthSettings) -> NodeHealth:
    """The node's health after one more probe."""
    kind: Literal["down", "unhealthy"] | None = None
    lag = None if probe.head is None or reference is None else max(0, reference - probe.head)
    if probe.head is None:
        kind, detail = "down", clean_detail(probe.error or "no answer")
    elif lag is not None and lag > settings.max_lag_blocks:
        kind, detail = "unhealthy", f"head #{probe.head} is {lag} blocks behind #{reference}"
    else:
        detail = f"head #{probe.head}" + ("" if lag is None else f", {lag} behind")
    if kind is None:
        return replace(node, status="healthy", bad_probes=0, bad_kind=None, since=None,
                       detail=detail, head=probe.head, lag=lag, probed_at=probe.at)
    count = node.bad_probes + 1
    status: NodeStatus = kind if count >= settings.bad_probes else "suspect"
    return replace(node, status=status, bad_probes=count, bad_kind=kind,
                   since=node.since if node.bad_probes else probe.at, detail=detail,
                   head=probe.head, lag=lag, probed_at=probe.at)


def classify_round(view: HealthView, probes: list[ProbeResult], chain_head: int | None,
                   settings: HealthSettings) -> HealthView:
    """The view after one probe round (``probes``: one result per node, by name)."""
    by_name = {p.name: p for p in probes}
    reference = reference_head(chain_head, [p.head for p in probes if p.head is not None])
    nodes = tuple(classify(n, by_name[n.name], reference, settings) if n.name in by_name else n
                  for n in view.nodes)
    at = max((p.at for p in probes), default=view.at)
    return HealthView(nodes, view.rounds + 1, at)


@dataclass(frozen=True)
class Change:
    """A node's settled health changed between two views: worth an alert."""

    name: str
    kind: Literal["node_down", "node_unhealthy", "node_recovered"]
    node: NodeHealth


def changes(before: HealthView, after: HealthView) -> list[Change]:
    """Nodes that became down/unhealthy, or healthy again after being so."""
    old = {n.name: n for n in before.nodes}
    out: list[Change] = []
    for node in after.nodes:
        prev = old.get(node.name)
        was = prev.status if prev is not None else "unknown"
        if node.status in BAD and node.status != was:
            out.append(Change(node.name, "node_down" if node.status == "down"
                              else "node_unhealthy", node))
        elif node.up and was in BAD:
            out.append(Change(node.name, "node_recovered", node))
    return out
