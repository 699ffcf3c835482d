"""Reads the chain for the watcher: one :class:`Observation` per poll, from several nodes.

Reads ``quorum`` nodes in parallel, the healthiest first, and the others only
when the first answers do not settle the question (too few fresh answers, or
they disagree). When no node's head advanced for ``stale_after``
(:class:`HeadTracker`) every answer is stale (a halt, or every node stuck); a
node lagging more than ``stale_after`` worth of blocks behind the best head is
stale on its own. A stale answer never counts (T4).
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from shared.errors import ChainDataError, ChainError, ChainUnavailableError
from shared.rpc import HeadTracker, JsonRpcClient, NodeReading
from watcher.core import NodeView, Observation, quorum_missed, settled
from watcher.schedule import Schedule, parse_schedule

log = logging.getLogger(__name__)

_OK, _OUTVOTED, _FAILED = 0, 1, 2  # read order: healthy nodes first


class RpcChainReader:
    """The watcher's view of the chain over a :class:`JsonRpcClient`."""

    def __init__(self, rpc: JsonRpcClient, account: str, *, quorum: int,
                 tracker: HeadTracker, block_interval_s: float) -> None:
        self.rpc = rpc
        self.account = account
        self.quorum = quorum
        self.tracker = tracker
        stale_s = tracker.stale_after.total_seconds()
        self.max_lag_blocks = max(2, math.ceil(stale_s / block_interval_s))
        self._health = dict.fromkeys(rpc.urls, _OK)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=len(rpc.urls),
                                        thread_name_prefix="rpc-read")

    @property
    def calls(self) -> int:
        """JSON-RPC calls sent so far."""
        return self.rpc.calls

    def _read(self, url: str) -> NodeReading | None:
        try:
            return self.rpc.read_node(url, self.account)
        except ChainUnavailableError as e:
            log.info("RPC node unavailable: %s", e)
        except ChainDataError as e:
            log.warning("RPC node answered badly: %s", e)
        return None

    def _read_all(self, urls: list[str]) -> list[tuple[str, NodeReading | None]]:
        return list(zip(urls, self._pool.map(self._read, urls), strict=True))

    def observe(self, now: datetime) -> Observation:
        """Poll the nodes; never raises on node failures (they are in ``failed``)."""
        with self._lock:
            order = sorted(self.rpc.urls, key=lambda u: self._health[u])
        first, rest = order[: self.quorum], order[self.quorum:]
        results = self._read_all(first)
        obs = self._observation(results, now)
        if rest and not settled(obs, self.quorum):
            results += self._read_all(rest)
            obs = self._observation(results, now)
        self._update_health(obs)
        return obs

    def _observation(self, results: list[tuple[str, NodeReading | None]],
                     now: datetime) -> Observation:
        readings = [r for _, r in results if r is not None]
        failed = tuple(url for url, r in results if r is None)
        best = max((r.props.head_block_number for r in readings), default=0)
        # The chain moves if some node's head advanced within stale_after. A node is
        # fresh while the chain moves and it keeps up with the best head: a node stuck
        # on its own falls behind and drops out; a halt makes every node stale at once.
        advancing = [self.tracker.observe(r.url, r.props.head_block_number, now)
                     for r in readings]
        moving = any(advancing)
        views = [
            NodeView(url=r.url,
                     fresh=moving and best - r.props.head_block_number <= self.max_lag_blocks,
                     head_block_number=r.props.head_block_number, head_time=r.props.time,
                     current_aslot=r.props.current_aslot, signing_key=r.witness.signing_key,
                     total_missed=r.witness.total_missed,
                     last_confirmed_block_num=r.witness.last_confirmed_block_num)
            for r in readings]
        return Observation(tuple(views), failed)

    def _update_health(self, obs: Observation) -> None:
        fresh = obs.fresh
        keys = {n.signing_key for n in fresh}
        agreed = {k: quorum_missed(fresh, k, min(self.quorum, len(fresh))) for k in keys}
        with self._lock:
            for url in obs.failed:
                self._health[url] = _FAILED
            for n in obs.nodes:
                # A stale node, or one that claims more misses than the others agree
                # on, is read last next time (a liar costs calls only when needed).
                ok = n.fresh and n.total_missed == agreed.get(n.signing_key)
                self._health[n.url] = _OK if ok else _OUTVOTED

    def schedule(self) -> Schedule:
        """The witness schedule from the first node that answers.

        Raises:
            ChainUnavailableError: no node answered.
            ChainDataError: the answer is not a schedule.
        """
        with self._lock:
            order = sorted(self.rpc.urls, key=lambda u: self._health[u])
        errors: list[str] = []
        for url in order:
            try:
                return parse_schedule(self.rpc.call_node(
                    url, "condenser_api.get_witness_schedule", []))
            except ChainError as e:
                errors.append(str(e))
        raise ChainUnavailableError("no node gave the witness schedule: " + "; ".join(errors))

    def close(self) -> None:
        """Stop the reader threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
