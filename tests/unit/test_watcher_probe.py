"""The probe I/O over real local sockets: refused, silent (timeout), and the monitor's wake-up.

Answers from a real node API are in tests/integration/test_watcher_preempt.py (the devnet).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from shared.clock import SystemClock
from watcher.health import HealthSettings
from watcher.probe import HealthMonitor, ProbedNode, Prober

KEY = "STM" + "P" * 50


@pytest.fixture
def closed_port() -> int:
    """A local port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts connections (backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def test_refused_probe_says_connection_refused(closed_port: int) -> None:
    """A port that refuses is down at once, with a stable reason."""
    prober = Prober(timeout_s=1.0)
    started = time.monotonic()
    assert prober.head(f"http://127.0.0.1:{closed_port}/") == (None, "connection refused")
    assert time.monotonic() - started < 0.5
    assert prober.calls == 1
    prober.close()


def test_silent_node_costs_one_timeout(silent_port: int) -> None:
    """A node that never answers is down after timeout_s, not later."""
    prober = Prober(timeout_s=0.2)
    started = time.monotonic()
    assert prober.head(f"http://127.0.0.1:{silent_port}/") == (None, "timeout")
    assert 0.15 <= time.monotonic() - started < 1.0
    prober.close()


def test_monitor_rounds_are_concurrent_and_wake_on_change(closed_port: int,
                                                          silent_port: int) -> None:
    """Two silent nodes cost one timeout per round, not two; a settled change wakes."""
    nodes = (ProbedNode("primary", KEY, f"http://127.0.0.1:{silent_port}/"),
             ProbedNode("backup1", KEY.replace("P", "B"), f"http://127.0.0.1:{silent_port}/"),
             ProbedNode("backup2", KEY.replace("P", "C"), f"http://127.0.0.1:{closed_port}/"))
    woken = threading.Event()
    monitor = HealthMonitor(nodes, Prober(timeout_s=0.3), HealthSettings(bad_probes=2),
                            interval_s=0.05, clock=SystemClock(), on_change=woken.set)
    try:
        started = time.monotonic()
        first = monitor.probe_round()
        assert time.monotonic() - started < 0.55
        assert [n.status for n in first.nodes] == ["suspect"] * 3
        assert not woken.is_set()
        second = monitor.probe_round()
        assert [(n.status, n.detail) for n in second.nodes] == [
            ("down", "timeout"), ("down", "timeout"), ("down", "connection refused")]
        assert woken.is_set()
        assert monitor.calls == 6
    finally:
        monitor.close()


def test_monitor_thread_probes_until_closed(closed_port: int) -> None:
    """start() probes about every interval_s; close() stops it."""
    node = ProbedNode("primary", KEY, f"http://127.0.0.1:{closed_port}/")
    monitor = HealthMonitor((node,), Prober(timeout_s=0.2), HealthSettings(),
                            interval_s=0.05, clock=SystemClock()).start()
    time.sleep(0.5)
    monitor.close()
    rounds = monitor.view().rounds
    assert 2 <= rounds <= 11
    time.sleep(0.2)
    assert monitor.view().rounds == rounds
