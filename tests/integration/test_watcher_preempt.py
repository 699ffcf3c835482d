"""Pre-emptive failover, watcher side, against the real devnet's producer-node APIs.

The watcher runs in-process (a thread) with its real reader, prober, signer client
and notifier; the devnet is the real `witness-devnet serve`, whose producer nodes
(`primary`, `backup1`, `backup2`) each answer on their own port; the signer is the
real `witness-signer serve` of the drill directory. What is asserted is the
watcher's behaviour: what its probes see, whether and when it sends a pre-emptive
request and with which evidence, and that it does not loop when the signer does not
act on one. Whether the signer then switches is the signer's side (another test):
a signer that knows ``evidence`` answers by its own probes (409 health_disagrees when
they disagree); one that does not refuses the field (422). Both end the request
without a switch here, and the watcher must back off either way.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devnet.client import DevnetClient
from drill.services import RunningDevnet, running_devnet, running_signer
from shared.clock import SystemClock
from watcher import cli
from watcher.app import Running, build_watcher
from watcher.config import WatcherConfig
from watcher.schedule import slots_until

SLOT_S = 0.25
PARTITIONED_SOURCE = "127.0.0.2"
pytestmark = pytest.mark.slow


def watcher_toml(devnet: RunningDevnet, name: str, *, slot_s: float,
                 source_address: str | None = None) -> Path:
    """A watcher.toml with every producer node's health_url, from devnet.status."""
    base = f"http://127.0.0.1:{devnet.port_base}"
    nodes = "".join(f'\n[[nodes]]\nname = "{n["name"]}"\npublic_key = "{n["public_key"]}"\n'
                    f'health_url = "{n["api_url"]}"\n' for n in devnet.status()["nodes"])
    source = "" if source_address is None else f'source_address = "{source_address}"\n'
    path = devnet.dir / f"watcher-{name}.toml"
    path.write_text(f"""
[watcher]
account = "alice"
rpc_nodes = ["{base}/", "{base}/rpc/1", "{base}/rpc/2"]
quorum = 2
rpc_timeout_s = 0.5
block_interval_s = 3
poll_interval_s = {slot_s}
miss_threshold = 1
state_dir = "watcher-state-{name}"
{nodes}
[health]
{source}
[signer]
url = "http://127.0.0.1:{devnet.port_base + 1}"
keyid = "watcher"
key = "keys/watcher.key"
signer_public_key = "keys/signer.pub"
attempts = 1
timeout_s = 2
retry_interval_s = 1
""")
    return path


@dataclass
class Alerts:
    """A notifier that records (the SMS path has its own tests)."""

    sent: list[tuple[str, str]]

    def send(self, event: str, text: str) -> None:
        """Record."""
        self.sent.append((event, text))

    def kinds(self) -> list[str]:
        """The events, in order."""
        return [e for e, _ in self.sent]


@contextmanager
def watching(devnet: RunningDevnet, name: str, *, slot_s: float = SLOT_S,
             source_address: str | None = None) -> Iterator[tuple[Running, Alerts]]:
    """Run a watcher in a thread; stop it and close everything afterwards."""
    config = WatcherConfig.load(watcher_toml(devnet, name, slot_s=slot_s,
                                             source_address=source_address), environ={})
    alerts = Alerts([])
    stop = threading.Event()
    running = build_watcher(config, clock=SystemClock(), sleep=stop.wait, notifier=alerts,
                            metrics_server=False)
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            running.watcher.run(should_stop=stop.is_set)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=loop, name=f"watcher-{name}", daemon=True)
    thread.start()
    try:
        yield running, alerts
    finally:
        stop.set()
        thread.join(timeout=15)
        running.close()
    assert not errors, errors


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 5 ms; fail the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.005)


def node_status(running: Running, name: str) -> str:
    """The watcher's settled view of one producer node."""
    view = running.watcher.last_health
    if view is None:
        return "unknown"
    return next(n.status for n in view.nodes if n.name == name)


def wait_far_from_slot(running: Running, slots: int) -> None:
    """Wait until alice's next slot is at least ``slots`` slots after the head."""
    def far() -> bool:
        w = running.watcher
        obs = w.last_observation
        if w.schedule is None or obs is None or not obs.fresh:
            return False
        head = max(obs.fresh, key=lambda n: n.head_block_number)
        left = slots_until(w.schedule, "alice", head.current_aslot, head.head_block_number)
        return left is None or left >= slots
    wait_until(far, 60, f"alice's slot to be {slots} slots away")


def total_missed(ctl: DevnetClient) -> int:
    """alice's total_missed on the chain."""
    return int(ctl.call("condenser_api.get_witness_by_account", ["alice"])["total_missed"])


def signing_key(ctl: DevnetClient) -> str:
    """alice's on-chain signing key."""
    return str(ctl.call("condenser_api.get_witness_by_account", ["alice"])["signing_key"])


def signer_saw(devnet: RunningDevnet, request_id: str) -> str:
    """How the real signer took the watcher's pre-emptive request: its audit line's event
    (a signer that knows ``evidence``), or "422" when it refused the field; "" if unseen."""
    audit = devnet.dir / "signer-state" / "audit.jsonl"
    for line in audit.read_text(encoding="utf-8").splitlines() if audit.exists() else []:
        record = json.loads(line)
        # The signer's audit names its own id and the watcher's (client_request_id).
        if request_id in {record.get("request_id"),
                          record.get("data", {}).get("client_request_id")}:
            return str(record.get("event"))
    log = (devnet.dir / "signer.log").read_text(encoding="utf-8", errors="replace")
    return "422" if "invalid (422): unknown field 'evidence'" in log else ""


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevnet]:
    """A devnet at 0.25 s slots and the drill's real signer beside it."""
    # The drill's signer without health_url: it refuses every pre-emptive request, so no
    # test of this module moves the key the next one starts from.
    with running_devnet(tmp_path_factory.mktemp("preempt"), slot_seconds=SLOT_S,
                        health=False) as d, \
            running_signer(d.dir):
        yield d


@pytest.fixture
def ctl(devnet: RunningDevnet) -> Iterator[DevnetClient]:
    """A control client on "/rpc/3"; the primary is up and unfaulted afterwards."""
    client = DevnetClient(f"{devnet.url}rpc/3", timeout_s=5)
    yield client
    client.call("devnet.set_node_faults", {"name": "primary", "stuck": False, "slow_s": 0,
                                           "partition": []})
    client.call("devnet.start_node", {"name": "primary"})
    client.close()


@pytest.mark.timeout(120)
def test_watcher_partitioned_from_a_healthy_primary_backs_off(devnet: RunningDevnet,
                                                             ctl: DevnetClient) -> None:
    """Probes from 127.0.0.2, cut off from the primary: the watcher sees it down, asks once,
    does not switch the key, and does not ask again while nothing changes."""
    key = signing_key(ctl)
    ctl.call("devnet.set_node_faults", {"name": "primary", "partition": [PARTITIONED_SOURCE]})
    with watching(devnet, "partition", source_address=PARTITIONED_SOURCE) as (running, alerts):
        w = running.watcher
        wait_until(lambda: node_status(running, "primary") == "down", 20, "primary down")
        primary = next(n for n in w.last_health.nodes if n.name == "primary")  # type: ignore[union-attr]
        assert primary.detail in {"connection reset", "connection closed without answer"}
        assert node_status(running, "backup1") == "healthy"
        assert 'witness_node_up{node="primary"} 0' in w.metrics.render()
        assert 'witness_node_up{node="backup1"} 1' in w.metrics.render()
        # The signer (its own probes see the primary) does not act on it: one request only.
        wait_until(lambda: w.metrics.preemptive_requests_sent >= 1, 20, "a pre-emptive request")
        wait_until(lambda: "preempt_refused" in alerts.kinds(), 20, "the refusal")
        time.sleep(40 * SLOT_S)
        assert w.metrics.preemptive_requests_sent == 1
        assert alerts.kinds().count("preempt_refused") == 1
        assert w.state.phase == "armed"
        assert signing_key(ctl) == key
        assert any(e == "node_down:primary" for e in alerts.kinds())
        assert w.last_request is not None
        assert signer_saw(devnet, str(w.last_request["request_id"])) != ""


@pytest.mark.timeout(120)
def test_stopped_primary_gets_a_preemptive_request_before_the_slot(devnet: RunningDevnet,
                                                                   ctl: DevnetClient) -> None:
    """The primary stopped well before alice's slot: the watcher asks the signer with
    node_down evidence for the primary's key before any block is missed."""
    with watching(devnet, "stopped") as (running, alerts):
        w = running.watcher
        wait_until(lambda: w.state.phase == "armed" and node_status(running, "primary")
                   == "healthy", 20, "the watcher to arm with a healthy primary")
        wait_far_from_slot(running, 10)
        before = total_missed(ctl)
        primary_key = w.state.armed_key
        ctl.call("devnet.stop_node", {"name": "primary"})
        wait_until(lambda: w.metrics.preemptive_requests_sent >= 1, 10 * SLOT_S * 4,
                   "a pre-emptive request")
        assert total_missed(ctl) == before  # nothing missed yet: it is pre-emptive
        body: dict[str, Any] = dict(w.last_request or {})
        evidence = body["evidence"]
        assert evidence["kind"] == "node_down"
        assert evidence["node"] == "primary"
        assert evidence["node_key"] == body["failing_key"] == primary_key
        assert evidence["probes"] >= 2
        assert evidence["detail"] == "connection refused"
        assert body["observed_total_missed"] == before
        assert "node_down:primary" in alerts.kinds()
        assert json.loads(json.dumps(body)) == body


@pytest.mark.timeout(120)
def test_stuck_primary_gets_node_unhealthy_evidence(devnet: RunningDevnet,
                                                    ctl: DevnetClient) -> None:
    """A stuck primary (answers, head frozen) is unhealthy once 3 blocks behind: the
    request says node_unhealthy, with the lag in its detail, before any miss."""
    with watching(devnet, "stuck") as (running, _alerts):
        w = running.watcher
        wait_until(lambda: w.state.phase == "armed" and node_status(running, "primary")
                   == "healthy", 20, "the watcher to arm with a healthy primary")
        wait_far_from_slot(running, 12)
        before = total_missed(ctl)
        ctl.call("devnet.set_node_faults", {"name": "primary", "stuck": True})
        wait_until(lambda: w.metrics.requests_sent >= 1, 40 * SLOT_S, "a request")
        body: dict[str, Any] = dict(w.last_request or {})
        assert body["evidence"]["kind"] == "node_unhealthy"
        assert body["evidence"]["node"] == "primary"
        assert "blocks behind" in body["evidence"]["detail"]
        assert body["observed_total_missed"] == before


@pytest.mark.timeout(240)
def test_detection_time_at_one_second_slots(tmp_path: Path) -> None:
    """stop_node to the pre-emptive request at 1 s slots, defaults: within 4 slots (measured)."""
    lags: list[float] = []
    with running_devnet(tmp_path / "one", slot_seconds=1.0) as devnet:
        ctl = DevnetClient(f"{devnet.url}rpc/3", timeout_s=5)
        try:
            for trial in range(3):
                with watching(devnet, f"t{trial}", slot_s=1.0) as (running, _alerts):
                    w = running.watcher
                    wait_until(lambda w=w: w.state.phase == "armed" and  # type: ignore[misc]
                               w.last_health is not None and w.last_health.rounds >= 2,
                               30, "armed and probed")
                    wait_far_from_slot(running, 6)
                    stopped = time.monotonic()
                    ctl.call("devnet.stop_node", {"name": "primary"})
                    wait_until(lambda w=w: w.metrics.preemptive_requests_sent >= 1,  # type: ignore[misc]
                               20, "a pre-emptive request")
                    lags.append(time.monotonic() - stopped)
                ctl.call("devnet.start_node", {"name": "primary"})
        finally:
            ctl.call("devnet.start_node", {"name": "primary"})
            ctl.close()
    print(f"stop_node -> pre-emptive request at 1 s slots: "
          f"{', '.join(f'{x:.2f}' for x in lags)} s (mean {statistics.mean(lags):.2f} s)")
    assert max(lags) <= 4.0


@pytest.mark.timeout(60)
def test_status_shows_every_producer_node(devnet: RunningDevnet, ctl: DevnetClient,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`witness-watcher status` and `check` probe each node: a stopped backup is DOWN."""
    path = watcher_toml(devnet, "status", slot_s=SLOT_S)
    nodes = devnet.status()["nodes"]
    active = next(n["name"] for n in nodes if n["public_key"] == signing_key(ctl))
    dead = next(n["name"] for n in nodes if n["name"] != active)
    ctl.call("devnet.stop_node", {"name": dead})
    try:
        assert cli.main(["status", "--config", str(path)]) == 0
        status_out = capsys.readouterr().out
        assert cli.main(["check", "--config", str(path)]) == 1
        check_out = capsys.readouterr().out
    finally:
        ctl.call("devnet.start_node", {"name": dead})
    assert f"[FAIL] node {dead}: down (connection refused): a failover would skip it" in check_out
    assert f"[ok  ] node {active}: head #" in check_out
    lines = {line.split()[1]: line for line in status_out.splitlines()
             if line.startswith("node ")}
    assert set(lines) == {n["name"] for n in nodes}
    assert f"{active:<9} up (head #" in lines[active]
    assert lines[active].endswith(": holds the on-chain key")
    assert lines[dead] == f"node {dead:<9} DOWN (connection refused): a failover would skip it"
    (other,) = set(lines) - {active, dead}
    assert lines[other].endswith(": a failover may use it")


@pytest.mark.timeout(120)
def test_rpc_calls_per_chain_hour_with_probes(devnet: RunningDevnet, ctl: DevnetClient) -> None:
    """Over 3 rounds, probes cost one call per node per block: 3,600 per chain hour for three
    nodes (1,200 blocks), next to the miss poller's own calls (measured and printed)."""
    blocks = 63
    with watching(devnet, "cost") as (running, _alerts):
        w = running.watcher
        wait_until(lambda: w.state.phase == "armed" and w.last_health is not None
                   and w.last_health.rounds >= 1, 20, "armed and probed")
        start_head = int(ctl.status()["head_block_number"])
        rpc0, probes0 = w.metrics.rpc_calls, running.watcher.health.calls  # type: ignore[union-attr]
        wait_until(lambda: int(ctl.status()["head_block_number"]) >= start_head + blocks,
                   blocks * SLOT_S * 3, f"{blocks} blocks")
        rpc = w.metrics.rpc_calls - rpc0
        probes = running.watcher.health.calls - probes0  # type: ignore[union-attr]
    per_hour = 1200 / blocks
    print(f"per chain hour (1,200 blocks): miss poller {rpc * per_hour:.0f} RPC calls, "
          f"probes {probes * per_hour:.0f} ({probes / blocks / 3:.2f} per node per block)")
    assert 0.8 <= probes / blocks / 3 <= 1.2
