"""The watcher against a real devnet process, a real signer process and the local Twilio endpoint.

The watcher runs in-process (a thread) with its real reader, signer client and
notifier chain, so the tests can read its state and metrics; the devnet and the
signer are the real `witness-devnet serve` and `witness-signer serve`. Faults are
injected on the watcher's endpoints ("/", "/rpc/1", "/rpc/2") and controlled
through "/rpc/3", which the watcher does not use.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from support.twilio_fixture import FAKE_ACCOUNT_SID, FAKE_AUTH_TOKEN

from devnet.client import DevnetClient
from devnet.errors import InvalidKeyError
from devnet.keys import PrivateKey, b58decode
from drill.fake_twilio import FakeTwilio
from drill.procs import console_script
from drill.services import RunningDevnet, running_devnet
from shared.clock import SystemClock
from watcher.app import Running, build_watcher
from watcher.config import WatcherConfig

SLOT_S = 0.1
TOKEN_ENV = "WW_TEST_TWILIO_TOKEN"
WATCHED_ENDPOINTS = ("/", "/rpc/1", "/rpc/2")
HEALTHY: dict[str, Any] = {"latency_s": 0, "error_rate": 0, "timeout": False,
                           "freeze_head": False, "wrong_data": False}
pytestmark = pytest.mark.slow


@dataclass
class WatcherThread:
    """A watcher daemon running in a thread of the test process."""

    running: Running
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    @property
    def state(self) -> Any:
        """The daemon's current state."""
        return self.running.watcher.state

    @property
    def requests_sent(self) -> int:
        """Failover requests created so far."""
        return self.running.watcher.metrics.requests_sent

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait until ``predicate`` holds; fail the test on timeout or a daemon crash."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert not self.errors, self.errors
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; "
                                     f"state {self.state}")
            time.sleep(0.05)


def watcher_toml(devnet: RunningDevnet, twilio: FakeTwilio, name: str, *, quorum: int) -> Path:
    """A watcher.toml for this test next to the drill's (same keys, own state directory)."""
    base = f"http://127.0.0.1:{devnet.port_base}"
    path = devnet.dir / f"watcher-{name}.toml"
    path.write_text(f"""
[watcher]
account = "alice"
rpc_nodes = ["{base}/", "{base}/rpc/1", "{base}/rpc/2"]
quorum = {quorum}
rpc_timeout_s = 0.5
block_interval_s = 3
poll_interval_s = {SLOT_S}
miss_threshold = 1
state_dir = "watcher-state-{name}"

[signer]
url = "http://127.0.0.1:{devnet.port_base + 1}"
keyid = "watcher"
key = "keys/watcher.key"
signer_public_key = "keys/signer.pub"
attempts = 2
backoff_s = 0.1
retry_interval_s = 0.5
timeout_s = 5

[twilio]
account_sid = "{FAKE_ACCOUNT_SID}"
auth_token_env = "{TOKEN_ENV}"
from = "+15550000000"
to = ["+15551111111"]
api_base_url = "{twilio.base_url}"
""")
    return path


@contextmanager
def watching(devnet: RunningDevnet, twilio: FakeTwilio, name: str, *,
             quorum: int = 2) -> Iterator[WatcherThread]:
    """Run a watcher on ``devnet`` in a thread; stop it and close everything afterwards."""
    config = WatcherConfig.load(watcher_toml(devnet, twilio, name, quorum=quorum),
                                environ={TOKEN_ENV: FAKE_AUTH_TOKEN})
    stop = threading.Event()
    running = build_watcher(config, clock=SystemClock(), sleep=stop.wait, metrics_server=False)
    handle = WatcherThread(running, stop)

    def loop() -> None:
        try:
            running.watcher.run(should_stop=stop.is_set)
        except BaseException as e:  # noqa: BLE001 - reported by wait_for and at the end
            handle.errors.append(e)

    handle.thread = threading.Thread(target=loop, name=f"watcher-{name}", daemon=True)
    handle.thread.start()
    try:
        yield handle
    finally:
        stop.set()
        handle.thread.join(timeout=15)
        running.close()
    assert not handle.errors, handle.errors


@dataclass
class SignerProcess:
    """`witness-signer serve` on the drill directory."""

    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait for /healthz."""
        port = tomllib.loads((self.directory / "signer.toml").read_text())["signer"]["port"]
        with (self.directory / "signer.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [console_script("witness-signer"), "serve", "--config",
                 str(self.directory / "signer.toml")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, (self.directory / "signer.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "signer did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM its process group (the service and what it started); SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@contextmanager
def signer_process(directory: Path) -> Iterator[SignerProcess]:
    """A signer that is stopped at the end whatever happened."""
    signer = SignerProcess(directory)
    try:
        yield signer
    finally:
        signer.stop()


def control(devnet: RunningDevnet) -> DevnetClient:
    """A control client on /rpc/3, an endpoint the watcher does not read."""
    return DevnetClient(f"{devnet.url}rpc/3", timeout_s=5)


def set_faults(devnet: RunningDevnet, endpoint: str, **faults: Any) -> None:
    """Change one endpoint's faults through the control endpoint."""
    ctl = control(devnet)
    try:
        ctl.call("devnet.set_faults", {"endpoint": endpoint, **faults})
    finally:
        ctl.close()


def wait_blocks(devnet: RunningDevnet, count: int, timeout_s: float = 30) -> dict[str, Any]:
    """Wait ``count`` blocks, asking the control endpoint (the others may be faulty)."""
    ctl = control(devnet)
    try:
        start = ctl.status()["head_block_number"]
        deadline = time.monotonic() + timeout_s
        while (status := ctl.status())["head_block_number"] < start + count:
            assert time.monotonic() < deadline, f"timed out waiting for {count} blocks"
            time.sleep(0.05)
        return status
    finally:
        ctl.close()


def sms_events(twilio: FakeTwilio) -> list[str]:
    """The event names of the SMS sent so far (bodies start with "[event]")."""
    return [m.body.split("]", 1)[0].lstrip("[") for m in twilio.messages]


def wait_sms(twilio: FakeTwilio, event: str, timeout_s: float = 20) -> None:
    """Wait until an SMS for ``event`` was recorded."""
    deadline = time.monotonic() + timeout_s
    while event not in sms_events(twilio):
        assert time.monotonic() < deadline, f"no {event} SMS; got {sms_events(twilio)}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def shared_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevnet]:
    """One devnet for the tests that never change the witness key."""
    with running_devnet(tmp_path_factory.mktemp("watcher-devnet"), slot_seconds=SLOT_S) as d:
        yield d


@pytest.fixture
def devnet(shared_devnet: RunningDevnet) -> Iterator[RunningDevnet]:
    """The shared devnet with every endpoint healthy before and after the test."""
    for endpoint in WATCHED_ENDPOINTS:
        set_faults(shared_devnet, endpoint, **HEALTHY)
    yield shared_devnet
    ctl = control(shared_devnet)
    try:
        ctl.call("devnet.resume")
        for endpoint in WATCHED_ENDPOINTS:
            ctl.call("devnet.set_faults", {"endpoint": endpoint, **HEALTHY})
    finally:
        ctl.close()


FAULTS = [
    pytest.param({"error_rate": 1.0}, id="errors"),
    pytest.param({"timeout": True}, id="timeouts"),
    pytest.param({"freeze_head": True}, id="frozen-head"),
    pytest.param({"wrong_data": True}, id="wrong-data"),
]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("endpoint", ["/", "/rpc/2"])
def test_one_bad_endpoint_causes_no_failover(devnet: RunningDevnet, fake_twilio: FakeTwilio,
                                             fault: dict[str, Any], endpoint: str,
                                             request: pytest.FixtureRequest) -> None:
    """With quorum 2 of 3, one endpoint erring, hanging, frozen or lying triggers nothing."""
    before = wait_blocks(devnet, 0)["witness"]
    with watching(devnet, fake_twilio, request.node.name.replace("/", "_")) as w:
        w.wait_for(lambda: w.state.phase == "armed", 15, "the watcher to arm")
        set_faults(devnet, endpoint, **fault)
        wait_blocks(devnet, 3 * 21)  # three rounds: alice had three slots
        assert w.requests_sent == 0
        assert w.state.phase == "armed"
        assert w.state.baseline_missed == before["total_missed"]
    after = wait_blocks(devnet, 0)["witness"]
    assert (after["signing_key"], after["total_missed"]) == (
        before["signing_key"], before["total_missed"])
    assert [e for e in sms_events(fake_twilio) if e.startswith("switch")] == []


@pytest.mark.timeout(90)
def test_lying_endpoint_triggers_with_quorum_one(devnet: RunningDevnet,
                                                 fake_twilio: FakeTwilio) -> None:
    """Control: alone, the lying endpoint does trigger (so the quorum tests mean something)."""
    with watching(devnet, fake_twilio, "liar-q1", quorum=1) as w:
        w.wait_for(lambda: w.state.phase == "armed", 15, "the watcher to arm")
        set_faults(devnet, "/", wrong_data=True)
        w.wait_for(lambda: w.requests_sent >= 1, 20, "a (false) failover request")
    # No signer is running: the request could not do anything.
    assert wait_blocks(devnet, 0)["witness"]["signing_key"] == w.state.armed_key


@pytest.mark.timeout(90)
def test_all_endpoints_down_alerts_and_holds(devnet: RunningDevnet,
                                             fake_twilio: FakeTwilio) -> None:
    """Every endpoint failing: one "RPC nodes unhealthy" SMS, no request; recovery is reported."""
    with watching(devnet, fake_twilio, "all-down") as w:
        w.wait_for(lambda: w.state.phase == "armed", 15, "the watcher to arm")
        for endpoint in WATCHED_ENDPOINTS:
            set_faults(devnet, endpoint, error_rate=1.0)
        wait_sms(fake_twilio, "rpc_unhealthy")
        wait_blocks(devnet, 2 * 21)
        assert sms_events(fake_twilio).count("rpc_unhealthy") == 1  # not one per poll
        for endpoint in WATCHED_ENDPOINTS:
            set_faults(devnet, endpoint, error_rate=0.0)
        wait_sms(fake_twilio, "recovered")
        assert w.requests_sent == 0
        assert w.state.phase == "armed"


@pytest.mark.timeout(90)
def test_chain_halt_alerts_and_is_not_a_miss(devnet: RunningDevnet,
                                             fake_twilio: FakeTwilio) -> None:
    """A chain halted for everyone: "chain halted" SMS, no request; resumed: recovered, armed."""
    before = wait_blocks(devnet, 0)["witness"]
    with watching(devnet, fake_twilio, "halt") as w:
        w.wait_for(lambda: w.state.phase == "armed", 15, "the watcher to arm")
        ctl = control(devnet)
        try:
            ctl.call("devnet.halt")
            wait_sms(fake_twilio, "chain_halted")
            time.sleep(2.0)  # a long halt: far more than alice's round
            ctl.call("devnet.resume")
        finally:
            ctl.close()
        wait_sms(fake_twilio, "recovered")
        wait_blocks(devnet, 21)
        assert w.requests_sent == 0
        assert w.state.phase == "armed"
    assert "rpc_unhealthy" not in sms_events(fake_twilio)
    assert wait_blocks(devnet, 0)["witness"]["total_missed"] == before["total_missed"]


# ---- with the signer ---------------------------------------------------------------------


def _node_key(devnet: RunningDevnet, name: str) -> str:
    return next(n["public_key"] for n in devnet.status()["nodes"] if n["name"] == name)


@pytest.mark.timeout(120)
def test_primary_stopped_switch_confirmed_rearmed(tmp_path: Path,
                                                  fake_twilio: FakeTwilio) -> None:
    """Primary down: request, signer switches to backup1, SMS sent, watcher re-armed on it."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as devnet, \
            signer_process(devnet.dir) as signer:
        signer.start()
        backup1 = _node_key(devnet, "backup1")
        with watching(devnet, fake_twilio, "failover") as w:
            w.wait_for(lambda: w.state.phase == "armed", 15, "the watcher to arm")
            before = wait_blocks(devnet, 0)["witness"]["total_missed"]
            devnet.client.call("devnet.stop_node", {"name": "primary"})
            w.wait_for(lambda: w.state.armed_key == backup1 and w.state.phase == "armed", 30,
                       "the switch to backup1 and the re-arm")
            assert w.state.switches == 1
            status = wait_blocks(devnet, 2 * 21)
            assert w.requests_sent == 1
        assert status["witness"]["signing_key"] == backup1
        assert status["double_production"] == 0
        assert status["witness"]["total_missed"] - before <= 2
        wait_sms(fake_twilio, "switch_confirmed")
        assert sms_events(fake_twilio).count("switch_requested") == 1
        assert sms_events(fake_twilio).count("switch_confirmed") == 1
        _assert_no_chain_key(devnet.dir, "failover")


@pytest.mark.timeout(150)
def test_signer_down_at_threshold_switches_once_when_back(tmp_path: Path,
                                                          fake_twilio: FakeTwilio) -> None:
    """Signer down when the miss shows: retries, an SMS, then exactly one switch once it is back."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as devnet, \
            signer_process(devnet.dir) as signer:
        signer.start()  # arms the signer's own baseline before the outage
        signer.stop()
        backup1 = _node_key(devnet, "backup1")
        with watching(devnet, fake_twilio, "signer-down") as w:
            w.wait_for(lambda: w.state.phase == "armed", 15, "the watcher to arm")
            devnet.client.call("devnet.stop_node", {"name": "primary"})
            w.wait_for(lambda: w.state.phase == "requested", 20, "the failover request")
            wait_sms(fake_twilio, "signer_unreachable")
            request_id = w.state.request_id
            wait_blocks(devnet, 21)  # more misses while the signer is down
            assert (w.state.phase, w.state.request_id) == ("requested", request_id)
            signer.start()
            w.wait_for(lambda: w.state.armed_key == backup1, 40, "the switch to backup1")
            wait_blocks(devnet, 2 * 21)
            assert w.requests_sent == 1
            assert w.state.switches == 1
        status = wait_blocks(devnet, 0)
        assert status["witness"]["signing_key"] == backup1  # not backup2: switched once
        assert sms_events(fake_twilio).count("switch_confirmed") == 1
        assert sms_events(fake_twilio).count("signer_unreachable") == 1
        _assert_no_chain_key(devnet.dir, "signer-down")


def run_watcher_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`witness-watcher ARGS` as a real process."""
    return subprocess.run([console_script("witness-watcher"), *args], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.timeout(120)
def test_check_and_status_commands(tmp_path: Path) -> None:
    """check does a signed round trip, status names the active node; both notice a dead signer."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as devnet, \
            signer_process(devnet.dir) as signer:
        config = str(devnet.dir / "watcher.toml")
        signer.start()
        result = run_watcher_cli("check", "--config", config)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "signed round trip" in result.stdout
        assert "[FAIL]" not in result.stdout
        result = run_watcher_cli("status", "--config", config, "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["chain"]["active_node"] == "primary"
        assert doc["signer"]["reachable"] is True
        assert doc["signer"]["verified"] is True
        text = run_watcher_cli("status", "--config", config).stdout
        assert "(primary)" in text
        assert "next slot:" in text
        signer.stop()
        result = run_watcher_cli("check", "--config", config)
        assert result.returncode == 1
        assert "[FAIL] signer" in result.stdout
        assert run_watcher_cli("status", "--config", config).returncode == 1


# ---- the watcher holds no chain key ------------------------------------------------------

_BASE58_RUN = re.compile(r"[1-9A-HJ-NP-Za-km-z]+")
_HEX_RUN = re.compile(r"[0-9a-fA-F]{64,}")
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def find_private_keys(text: str) -> list[str]:
    """Every WIF (51 base58 characters from "5" that decode) and 64-hex secp256k1 scalar."""
    found = []
    for run in _BASE58_RUN.findall(text):
        for i in range(len(run) - 50):
            candidate = run[i:i + 51]
            if not candidate.startswith("5"):
                continue
            try:
                PrivateKey.from_wif(candidate)
            except InvalidKeyError:
                continue
            found.append(candidate)
    for run in _HEX_RUN.findall(text):
        found += [run[i:i + 64] for i in range(len(run) - 63)
                  if 0 < int(run[i:i + 64], 16) < SECP256K1_ORDER]
    return found


def _chain_secrets(directory: Path) -> list[str]:
    """The devnet's chain private keys, as WIF and as hex."""
    raw = tomllib.loads((directory / "devnet.toml").read_text())
    wifs = [raw["accounts"]["active_wif"], *(n["signing_wif"] for n in raw["nodes"])]
    return [*wifs, *(b58decode(w)[1:33].hex() for w in wifs)]


def watcher_files(directory: Path, name: str | None = None) -> list[Path]:
    """The watcher's config, state and key files in a drill directory."""
    state_dir = directory / ("watcher-state" if name is None else f"watcher-state-{name}")
    configs = [directory / "watcher.toml"]
    if name is not None:
        configs.append(directory / f"watcher-{name}.toml")
    return [*configs, directory / "keys" / "watcher.key", directory / "keys" / "watcher.pub",
            directory / "keys" / "signer.pub", *sorted(state_dir.iterdir())]


def _assert_no_chain_key(directory: Path, name: str | None = None) -> None:
    """Nothing in the watcher's config, state or key files is or decodes as a chain key."""
    files = watcher_files(directory, name)
    assert any(f.name == "watcher-state.json" for f in files), files
    secrets = _chain_secrets(directory)
    for path in files:
        text = path.read_text(errors="replace")
        assert find_private_keys(text) == [], path
        assert [s for s in secrets if s in text] == [], path


def test_key_scan_finds_the_devnet_keys(shared_devnet: RunningDevnet) -> None:
    """The scanner is not blind: it finds every chain key in devnet.toml, WIF and hex."""
    secrets = _chain_secrets(shared_devnet.dir)
    assert set(find_private_keys((shared_devnet.dir / "devnet.toml").read_text())) == set(
        secrets[:len(secrets) // 2])
    assert find_private_keys(f"key = {secrets[-1]}") == [secrets[-1]]


@pytest.mark.timeout(60)
def test_watcher_process_and_files_hold_no_chain_key(devnet: RunningDevnet) -> None:
    """`witness-watcher run --once` on the drill's own config leaves no chain key anywhere."""
    result = subprocess.run(
        [console_script("witness-watcher"), "run", "--once", "--config",
         str(devnet.dir / "watcher.toml")], capture_output=True, text=True, timeout=45,
        check=False)
    assert result.returncode == 0, result.stderr
    assert '"phase": "armed"' in result.stdout
    _assert_no_chain_key(devnet.dir)
    assert find_private_keys(result.stdout + result.stderr) == []
    # The watcher's code does not even load the modules that handle chain keys.
    probe = ("import sys, watcher.cli, watcher.app, watcher.daemon; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'signer', 'devnet', 'beem', 'beembase', 'coincurve'}))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=30, check=True)
    assert loaded.stdout.strip() == "[]"
