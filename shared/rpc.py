"""A JSON-RPC reader over several Hive/Steem API nodes: timeouts, failover, stale heads.

"Network is down" (:class:`ChainUnavailableError`) is kept apart from "the node
says something wrong" (:class:`ChainDataError`): the first teaches us nothing and
must never lead to action.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests

from shared.chaindata import DynamicProps, WitnessInfo, parse_dgpo, parse_witness
from shared.errors import ChainDataError, ChainUnavailableError

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 4 << 20


class RpcRejectedError(ChainDataError):
    """The node answered with a JSON-RPC error object (e.g. a rejected transaction)."""

    def __init__(self, url: str, method: str, code: int | None, message: str) -> None:
        self.url = url
        self.method = method
        self.code = code
        self.rpc_message = message
        super().__init__(f"{url}: {method}: {message}")


@dataclass
class _HeadSeen:
    number: int
    since: datetime


class HeadTracker:
    """Marks a node stale when its head block number stops advancing. No I/O.

    A node is stale once its head has not advanced for ``stale_after`` (a few
    block intervals); chain time is never compared with the local clock.
    """

    def __init__(self, stale_after: timedelta) -> None:
        self.stale_after = stale_after
        self._seen: dict[str, _HeadSeen] = {}
        self._lock = threading.Lock()

    def observe(self, url: str, head: int, now: datetime) -> bool:
        """Record ``head`` for ``url``; return True when the node is fresh."""
        with self._lock:
            seen = self._seen.get(url)
            if seen is None or head > seen.number:
                self._seen[url] = _HeadSeen(head, now)
                return True
            if head < seen.number:
                # Went backwards: a different (lagging) backend behind the URL.
                return False
            return now - seen.since < self.stale_after

    def is_stale(self, url: str, now: datetime) -> bool:
        """Whether ``url``'s head has been still for ``stale_after`` or longer."""
        with self._lock:
            seen = self._seen.get(url)
            return seen is not None and now - seen.since >= self.stale_after


@dataclass(frozen=True)
class NodeReading:
    """One node's answer to a witness read: its head and the witness."""

    url: str
    props: DynamicProps
    witness: WitnessInfo


class JsonRpcClient:
    """Calls JSON-RPC methods on a list of nodes, failing over on network errors."""

    def __init__(self, urls: Sequence[str], *, timeout_s: float,
                 session_factory: Callable[[], requests.Session] = requests.Session) -> None:
        if not urls:
            raise ValueError("at least one RPC node is required")
        self.urls = tuple(urls)
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._session_factory = session_factory
        self._ids = itertools.count(1)
        self.calls = 0  # every HTTP request sent, for metrics and benchmarks

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._session_factory()
            self._local.session = session
        return session

    def call_node(self, url: str, method: str, params: Any) -> Any:
        """Call ``method`` on one node.

        Raises:
            ChainUnavailableError: no usable answer (connection, timeout, HTTP error).
            RpcRejectedError: the node answered with a JSON-RPC error.
            ChainDataError: the answer is not a JSON-RPC response.
        """
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        self.calls += 1
        try:
            response = self._session().post(url, json=body, timeout=self.timeout_s)
            content = response.content
        except requests.RequestException as e:
            raise ChainUnavailableError(f"{url}: {type(e).__name__}") from e
        if response.status_code != 200:
            raise ChainUnavailableError(f"{url}: HTTP {response.status_code}")
        if len(content) > MAX_ANSWER_BYTES:
            raise ChainDataError(f"{url}: answer larger than {MAX_ANSWER_BYTES} bytes")
        try:
            doc = response.json()
        except ValueError as e:
            raise ChainDataError(f"{url}: answer is not JSON") from e
        if not isinstance(doc, dict) or ("result" not in doc and "error" not in doc):
            raise ChainDataError(f"{url}: not a JSON-RPC response")
        if doc.get("error") is not None:
            err = doc["error"]
            code = err.get("code") if isinstance(err, dict) else None
            message = str(err.get("message", err)) if isinstance(err, dict) else str(err)
            raise RpcRejectedError(url, method, code if isinstance(code, int) else None,
                                   message[:500])
        return doc["result"]

    def call(self, method: str, params: Any) -> Any:
        """Call ``method`` on the first node that answers.

        Raises:
            ChainUnavailableError: no node answered.
            ChainDataError: a node answered with an error or garbage (not retried
                elsewhere: an answer is information, a rejection must not be
                re-sent blindly).
        """
        failures: list[str] = []
        for url in self.urls:
            try:
                return self.call_node(url, method, params)
            except ChainUnavailableError as e:
                failures.append(str(e))
                log.warning("RPC node unavailable: %s", e)
        raise ChainUnavailableError("no RPC node answered: " + "; ".join(failures))

    def read_node(self, url: str, account: str) -> NodeReading:
        """Read head properties and ``account``'s witness from one node.

        Raises:
            ChainUnavailableError, ChainDataError: as :meth:`call_node`.
        """
        props = parse_dgpo(self.call_node(url, "condenser_api.get_dynamic_global_properties", []))
        witness = parse_witness(self.call_node(url, "condenser_api.get_witness_by_account",
                                               [account]), account)
        return NodeReading(url, props, witness)

    def chain_id(self, url: str) -> str:
        """The chain id a node reports in get_config (HIVE_ or STEEM_ key).

        Raises:
            ChainDataError: no chain id in the answer.
        """
        config = self.call_node(url, "database_api.get_config", {})
        if isinstance(config, dict):
            for key in ("HIVE_CHAIN_ID", "STEEM_CHAIN_ID"):
                value = config.get(key)
                if isinstance(value, str) and len(value) == 64:
                    return value
        raise ChainDataError(f"{url}: get_config has no chain id")
