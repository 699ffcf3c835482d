"""The devnet as a process: CLI, control methods, faults per endpoint, misses on a stopped node."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devnet.client import DevnetClient
from drill.procs import console_script, free_port_base
from drill.services import RunningDevnet, running_devnet
from shared.errors import ChainDataError, ChainUnavailableError

pytestmark = pytest.mark.timeout(120)

STATUS_FIELDS = {"chain", "chain_id", "head_block_number", "head_block_time", "slot_seconds",
                 "witness", "nodes", "double_production"}


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[RunningDevnet]:
    """A fresh hive devnet."""
    with running_devnet(tmp_path / "drill", slot_seconds=0.1) as dn:
        yield dn


def endpoint(devnet: RunningDevnet, path: str, timeout_s: float = 2.0) -> DevnetClient:
    """A client of one virtual endpoint."""
    return DevnetClient(devnet.url.rstrip("/") + path, timeout_s=timeout_s)


def test_status_has_the_contract_fields(devnet: RunningDevnet) -> None:
    """devnet.status carries every field DESIGN.md lists, with the init names."""
    status = devnet.status()
    assert set(status) >= STATUS_FIELDS
    assert {"owner", "signing_key", "total_missed", "last_confirmed_block_num"} <= set(
        status["witness"])
    assert [n["name"] for n in status["nodes"]] == ["primary", "backup1", "backup2"]
    assert status["witness"]["owner"] == "alice"
    assert status["slot_seconds"] == 0.1


def test_cli_status_and_node_commands(devnet: RunningDevnet) -> None:
    """`witness-devnet status --json` and `node stop/start` drive the running devnet."""
    config = str(devnet.dir / "devnet.toml")
    out = subprocess.run([console_script("witness-devnet"), "status", "--config", config,
                          "--json"], check=True, capture_output=True, text=True, timeout=30)
    assert json.loads(out.stdout)["witness"]["owner"] == "alice"
    subprocess.run([console_script("witness-devnet"), "node", "stop", "backup2", "--config",
                    config], check=True, capture_output=True, timeout=30)
    assert not next(n for n in devnet.status()["nodes"] if n["name"] == "backup2")["up"]
    subprocess.run([console_script("witness-devnet"), "node", "start", "backup2", "--config",
                    config], check=True, capture_output=True, timeout=30)
    assert next(n for n in devnet.status()["nodes"] if n["name"] == "backup2")["up"]


def test_node_apis_listen_at_port_base_plus_ten(tmp_path: Path) -> None:
    """Node i's own API is on P+10+i (from devnet.toml) and names the node; stop refuses."""
    base = free_port_base()
    with running_devnet(tmp_path / "drill", port_base=base) as devnet:
        check_node_apis(devnet)


def check_node_apis(devnet: RunningDevnet) -> None:
    """Each node's API is at P+10+i, answers as that node, and refuses once stopped."""
    nodes = devnet.status()["nodes"]
    assert [n["api_url"] for n in nodes] == [
        f"http://127.0.0.1:{devnet.port_base + 10 + i}/" for i in range(3)]
    for n in nodes:
        client = DevnetClient(n["api_url"], timeout_s=5)
        assert client.call("condenser_api.get_version", [])["node_name"] == n["name"]
        assert client.call("database_api.get_dynamic_global_properties", {})[
            "head_block_number"] >= n["head_block_number"]
    devnet.client.call("devnet.stop_node", {"name": "backup2"})
    with pytest.raises(ChainUnavailableError):
        DevnetClient(nodes[2]["api_url"], timeout_s=5).call("database_api.get_version", {})


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `witness-devnet ARGS`, capturing its output (exit status not checked)."""
    return subprocess.run([console_script("witness-devnet"), *args], capture_output=True,
                          text=True, timeout=30, check=False)


def test_cli_node_fault(devnet: RunningDevnet) -> None:
    """`node fault` sets, changes and clears a node's faults; a bare or misplaced one is refused."""
    config = str(devnet.dir / "devnet.toml")

    def faults() -> dict[str, object]:
        entry = next(n for n in devnet.status()["nodes"] if n["name"] == "primary")
        return dict(entry["faults"])

    out = run_cli("node", "fault", "primary", "--slow", "0.3", "--partition", "127.0.0.3",
                  "--config", config)
    assert out.returncode == 0, out.stderr
    assert "slow 0.3 s" in out.stdout
    assert "partitioned from 127.0.0.3/32" in out.stdout
    assert run_cli("node", "fault", "primary", "--stuck", "--config", config).returncode == 0
    assert faults() == {"stuck": True, "slow_s": 0.3, "partition": ["127.0.0.3/32"],
                        "partition_mode": "reset"}
    assert run_cli("node", "fault", "primary", "--no-partition", "--no-stuck",
                   "--config", config).returncode == 0
    assert faults() == {"stuck": False, "slow_s": 0.3, "partition": [],
                        "partition_mode": "reset"}
    assert run_cli("node", "fault", "primary", "--clear", "--config", config).returncode == 0
    assert faults() == {"stuck": False, "slow_s": 0.0, "partition": [],
                        "partition_mode": "reset"}
    for bad in (["node", "fault", "primary"], ["node", "stop", "primary", "--stuck"],
                ["node", "fault", "primary", "--slow", "-1"],
                ["node", "fault", "nobody", "--stuck"]):
        refused = run_cli(*bad, "--config", config)
        assert refused.returncode == 2, (bad, refused.stderr)
    assert next(n for n in devnet.status()["nodes"] if n["name"] == "primary")["up"]


def test_cli_reports_unreachable_devnet(tmp_path: Path) -> None:
    """`witness-devnet status` against a devnet that is not running fails clearly, exit 3."""
    from drill.services import init_dir  # noqa: PLC0415 - local helper

    init_dir(tmp_path / "d", port_base=free_port_base(), slot_seconds=0.1)
    out = subprocess.run([console_script("witness-devnet"), "status", "--config",
                          str(tmp_path / "d" / "devnet.toml")], capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 3
    assert "cannot reach the devnet" in out.stderr


def test_stopped_node_misses_are_counted(devnet: RunningDevnet) -> None:
    """Stopping primary makes alice miss her slots; total_missed tracks them; restart heals."""
    start = devnet.status()
    devnet.client.call("devnet.stop_node", {"name": "primary"})
    status = devnet.wait_for(
        lambda s: s["witness"]["total_missed"] >= start["witness"]["total_missed"] + 2, 30,
        "two misses")
    assert status["witness"]["last_confirmed_block_num"] <= status["head_block_number"]
    devnet.client.call("devnet.start_node", {"name": "primary"})
    produced = devnet.wait_for(
        lambda s: s["witness"]["last_confirmed_block_num"] > status["head_block_number"], 30,
        "alice to produce again")
    assert produced["double_production"] == 0


def test_halt_and_resume(devnet: RunningDevnet) -> None:
    """devnet.halt stops the head and counts nothing; devnet.resume continues."""
    devnet.client.call("devnet.stop_node", {"name": "primary"})
    halted = devnet.client.call("devnet.halt", {})
    time.sleep(1.0)
    still = devnet.status()
    assert still["head_block_number"] == halted["head_block_number"]
    assert still["witness"]["total_missed"] == halted["witness"]["total_missed"]
    devnet.client.call("devnet.resume", {})
    devnet.wait_blocks(3)


def test_faults_on_one_endpoint_leave_the_others_healthy(devnet: RunningDevnet) -> None:
    """Errors, timeouts, a frozen head and wrong data on /rpc/1 leave / and /rpc/2 intact."""
    bad, good, root = endpoint(devnet, "/rpc/1", 0.5), endpoint(devnet, "/rpc/2"), devnet.client
    devnet.client.call("devnet.set_faults", {"endpoint": "/rpc/1", "error_rate": 1.0})
    with pytest.raises(ChainUnavailableError):
        bad.call("condenser_api.get_dynamic_global_properties", [])
    devnet.client.call("devnet.set_faults", {"endpoint": "/rpc/1", "error_rate": 0,
                                             "timeout": True})
    with pytest.raises(ChainUnavailableError):
        bad.call("condenser_api.get_dynamic_global_properties", [])
    devnet.client.call("devnet.set_faults", {"endpoint": "/rpc/1", "timeout": False,
                                             "freeze_head": True})
    frozen = bad.call("condenser_api.get_dynamic_global_properties", [])["head_block_number"]
    devnet.wait_blocks(3)
    assert bad.call("condenser_api.get_dynamic_global_properties", [])[
        "head_block_number"] == frozen
    assert good.call("condenser_api.get_dynamic_global_properties", [])[
        "head_block_number"] > frozen
    devnet.client.call("devnet.set_faults", {"endpoint": "/rpc/1", "freeze_head": False,
                                             "wrong_data": True})
    lied = bad.call("condenser_api.get_witness_by_account", ["alice"])["total_missed"]
    truth = good.call("condenser_api.get_witness_by_account", ["alice"])["total_missed"]
    assert lied >= truth + 100
    assert root.call("condenser_api.get_witness_by_account", ["alice"])["total_missed"] == truth
    devnet.client.call("devnet.set_faults", {"endpoint": "/rpc/1", "wrong_data": False})
    assert bad.call("condenser_api.get_witness_by_account", ["alice"])["total_missed"] < lied


def test_latency_fault_delays_only_its_endpoint(devnet: RunningDevnet) -> None:
    """latency_s on /rpc/2 slows that endpoint and not /."""
    devnet.client.call("devnet.set_faults", {"endpoint": "/rpc/2", "latency_s": 0.6})
    t0 = time.monotonic()
    endpoint(devnet, "/rpc/2").call("condenser_api.get_dynamic_global_properties", [])
    slow = time.monotonic() - t0
    t0 = time.monotonic()
    devnet.client.call("condenser_api.get_dynamic_global_properties", [])
    fast = time.monotonic() - t0
    assert slow >= 0.6
    assert fast < 0.5


@pytest.mark.parametrize("params", [
    pytest.param({"endpoint": "/rpc/99", "error_rate": 1}, id="unknown-endpoint"),
    pytest.param({"endpoint": "/rpc/1", "error_rate": 2}, id="rate-above-one"),
    pytest.param({"endpoint": "/rpc/1", "timeout": "yes"}, id="not-a-bool"),
    pytest.param({"endpoint": "/rpc/1", "explode": True}, id="unknown-field"),
])
def test_bad_control_params_are_invalid_params(devnet: RunningDevnet,
                                                params: dict[str, object]) -> None:
    """Bad devnet.set_faults params get a JSON-RPC error and change nothing."""
    with pytest.raises(ChainDataError):
        devnet.client.call("devnet.set_faults", params)
    assert all(not any(f.values()) for f in devnet.status()["endpoints"].values())


def test_garbage_http_bodies_get_errors(devnet: RunningDevnet) -> None:
    """Non-JSON and oversized bodies are answered with errors, never a crash."""
    r = requests.post(devnet.url, data=b"\xff\x00garbage", timeout=5)
    assert r.json()["error"]["code"] == -32700
    r = requests.post(devnet.url, data=b"x" * (2 << 20), timeout=10)
    assert r.status_code == 413
    assert devnet.status()["head_block_number"] > 0
