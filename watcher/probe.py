"""Probes the producer nodes' own APIs on a thread of their own (the I/O of :mod:`watcher.health`).

Every ``interval_s`` one round asks every configured node, concurrently, for
``database_api.get_dynamic_global_properties``; each probe is bounded by
``timeout_s`` (connect and read), so a dead or silent node costs one timeout and
never delays the miss poller, which runs on the daemon's thread. The round's
results go through :func:`watcher.health.classify_round`; when a node's settled
health changes, ``on_change`` wakes the daemon so it decides at once. With
``source_address`` every probe leaves from that local address (hosts with several
interfaces, WireGuard; the tests use it to partition the watcher from one node).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from shared.clock import Clock
from watcher.health import (
    HealthSettings,
    HealthView,
    ProbeResult,
    classify_round,
    initial_view,
)

log = logging.getLogger(__name__)

METHOD = "database_api.get_dynamic_global_properties"


@dataclass(frozen=True)
class ProbedNode:
    """A producer node to probe: its name, public signing key and API URL."""

    name: str
    public_key: str
    url: str


class SourceAddressAdapter(HTTPAdapter):
    """An HTTP adapter whose connections leave from ``source`` (any port)."""

    def __init__(self, source: str, **kwargs: Any) -> None:
        self._source = source
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        """The pool manager, with ``source_address`` for every connection it opens."""
        pool_kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


def probe_session(source_address: str | None) -> requests.Session:
    """A session for probes: no proxies from the environment (private addresses), and
    ``source_address`` bound when given."""
    session = requests.Session()
    session.trust_env = False
    if source_address is not None:
        adapter = SourceAddressAdapter(source_address)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


def _describe(e: requests.RequestException) -> str:
    """A short, stable reason for a failed probe."""
    if isinstance(e, requests.Timeout):
        return "timeout"
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == (
                errno.ECONNREFUSED):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        text = str(cause)
        if "Connection refused" in text:
            return "connection refused"
        if "Connection reset" in text or "ConnectionResetError" in text:
            return "connection reset"
        if "RemoteDisconnected" in text or "closed connection without response" in text:
            return "connection closed without answer"
        cause = cause.__cause__ or cause.__context__
    return type(e).__name__


class Prober:
    """Probes single nodes; one session per thread (requests sessions are not thread-safe)."""

    def __init__(self, *, timeout_s: float, source_address: str | None = None) -> None:
        self.timeout_s = timeout_s
        self.source_address = source_address
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self.calls = 0  # probes sent, for metrics and the RPC cost figures

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = probe_session(self.source_address)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def head(self, url: str) -> tuple[int | None, str | None]:
        """The node's head block number, or None and why not."""
        with self._lock:
            self.calls += 1
        body = {"jsonrpc": "2.0", "id": 1, "method": METHOD, "params": {}}
        try:
            response = self._session().post(url, json=body, timeout=self.timeout_s)
            doc = response.json() if response.status_code == 200 else None
        except requests.RequestException as e:
            return None, _describe(e)
        except ValueError:
            return None, "answer is not JSON"
        if doc is None:
            return None, f"HTTP {response.status_code}"
        result = doc.get("result") if isinstance(doc, dict) else None
        head = result.get("head_block_number") if isinstance(result, dict) else None
        if not isinstance(head, int) or isinstance(head, bool) or head < 0:
            return None, "answer has no head_block_number"
        return head, None

    def close(self) -> None:
        """Close every thread's session."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


class HealthMonitor:
    """Probe rounds on a daemon thread; :meth:`view` is the latest :class:`HealthView`."""

    def __init__(self, nodes: tuple[ProbedNode, ...], prober: Prober, settings: HealthSettings,
                 *, interval_s: float, clock: Clock,
                 on_change: Callable[[], None] | None = None) -> None:
        self.nodes = nodes
        self.prober = prober
        self.settings = settings
        self.interval_s = interval_s
        self.on_change = on_change
        self._clock = clock
        self._view = initial_view(tuple((n.name, n.public_key) for n in nodes))
        self._chain_head: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(nodes)),
                                        thread_name_prefix="probe")
        self._thread: threading.Thread | None = None

    @property
    def calls(self) -> int:
        """Probes sent so far."""
        return self.prober.calls

    def view(self) -> HealthView:
        """The latest view (an immutable value)."""
        with self._lock:
            return self._view

    def set_chain_head(self, head: int | None) -> None:
        """The chain's quorum head as the miss poller last saw it (lag is measured to it)."""
        if head is not None:
            with self._lock:
                self._chain_head = max(head, self._chain_head or 0)

    def _probe(self, node: ProbedNode) -> ProbeResult:
        head, error = self.prober.head(node.url)
        return ProbeResult(node.name, self._clock.now(), head, error)

    def probe_round(self) -> HealthView:
        """Probe every node once, concurrently; classify; return the new view."""
        results = list(self._pool.map(self._probe, self.nodes))
        with self._lock:
            before = self._view
            self._view = after = classify_round(before, results, self._chain_head,
                                                self.settings)
        if after.picture() != before.picture():
            log.info("producer-node health: %s", after.picture())
            if self.on_change is not None:
                self.on_change()
        return after

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.probe_round()
            except Exception:  # a bug here must not end the probes silently
                log.exception("probe round failed")
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def start(self) -> HealthMonitor:
        """Start probing on a daemon thread; return self."""
        self._thread = threading.Thread(target=self._loop, name="health-probes", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop probing and release the sessions."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.prober.timeout_s + 5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.prober.close()
