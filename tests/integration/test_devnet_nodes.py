"""Producer nodes' own APIs on real sockets: their view, stop/start, stuck, slow, partition."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from support.devnet_factory import devnet_config

from devnet.config import DevnetConfig
from devnet.genesis import build_chain
from devnet.rpc import InvalidParamsError
from devnet.server import Devnet, serve
from drill.procs import free_port_base
from shared.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).parent.parent / "data" / "hived-api-examples.json"
WATCHER_SIDE, SIGNER_SIDE = "127.0.0.3", "127.0.0.2"
SLOT_S = 0.05


@pytest.fixture
def devnet() -> Iterator[Devnet]:
    """An in-process devnet of 3 witnesses (alice every third slot) on free ports."""
    cfg = replace(devnet_config(witness_count=3), slot_seconds=SLOT_S)
    dn, httpd = serve(cfg, build_chain(cfg))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield dn
    finally:
        dn.stop()
        httpd.shutdown()
        httpd.server_close()


def node(dn: Devnet, name: str) -> dict[str, Any]:
    """The node's entry in devnet.status."""
    entry: dict[str, Any] = next(n for n in dn.status()["nodes"] if n["name"] == name)
    return entry


def rpc(url: str, method: str, params: object = None, *, source: str | None = None,
        timeout_s: float = 5.0) -> Any:
    """One JSON-RPC call on a fresh connection, optionally from a given source address."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s,
                                      source_address=(source, 0) if source else None)
    try:
        body = {"jsonrpc": "2.0", "id": 1, "method": method,
                "params": {} if params is None else params}
        conn.request("POST", "/", json.dumps(body), {"Content-Type": "application/json"})
        doc = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert "result" in doc, doc
    return doc["result"]


def head(url: str, **kw: Any) -> int:
    """The head block number a node's API reports (appbase style)."""
    return int(rpc(url, "database_api.get_dynamic_global_properties", **kw)["head_block_number"])


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_each_node_answers_on_its_own_port_with_the_chain_head(devnet: Devnet) -> None:
    """Every node has its own URL; while up and in sync its head is the chain's head."""
    devnet.halt()
    status = devnet.status()
    urls = [n["api_url"] for n in status["nodes"]]
    assert len(set(urls)) == 3
    for entry in status["nodes"]:
        url = entry["api_url"]
        assert head(url) == status["head_block_number"] == entry["head_block_number"]
        legacy = rpc(url, "call", ["condenser_api", "get_dynamic_global_properties", []])
        assert legacy["head_block_number"] == status["head_block_number"]
        assert rpc(url, "condenser_api.get_config")["HIVE_CHAIN_ID"] == status["chain_id"]


@pytest.mark.parametrize("method", ["database_api.get_version", "condenser_api.get_version"])
def test_get_version_names_the_node_and_keeps_hiveds_shape(devnet: Devnet, method: str) -> None:
    """get_version has hived's fields with hived's types, plus the node's name."""
    example = json.loads(EXAMPLES.read_text())["methods"][method]["result_example"]
    for name in ("primary", "backup1", "backup2"):
        version = rpc(node(devnet, name)["api_url"], method)
        assert {k: type(v) for k, v in version.items() if k in example} == {
            k: type(v) for k, v in example.items()}
        assert version["node_name"] == name
    chain_endpoint = devnet.dispatcher.handle(json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method}).encode())
    assert chain_endpoint is not None
    assert "node_name" not in json.loads(chain_endpoint)["result"]


def test_node_api_has_no_control_methods(devnet: Devnet) -> None:
    """A node's API is hived's, not the devnet's: devnet.* methods are unknown there."""
    url = node(devnet, "primary")["api_url"]
    r = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "devnet.stop_node",
                                 "params": {"name": "primary"}}, timeout=5)
    assert r.json()["error"]["code"] == -32601
    assert node(devnet, "primary")["up"]


def test_stopped_node_refuses_connections_and_restarts_on_the_same_port(
        devnet: Devnet) -> None:
    """Stop closes the port (refused at once, kept-alive connections cut); start re-opens it."""
    url = node(devnet, "backup1")["api_url"]
    session = requests.Session()
    dgp = {"jsonrpc": "2.0", "id": 1, "method": "database_api.get_dynamic_global_properties"}
    assert session.post(url, json=dgp, timeout=5).status_code == 200
    devnet.stop_node({"name": "backup1"})
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        rpc(url, "database_api.get_version")
    assert time.monotonic() - t0 < 1.0  # refused by the kernel, not a 5 s timeout
    with pytest.raises(requests.ConnectionError):
        session.post(url, json=dgp, timeout=5)
    assert head(node(devnet, "primary")["api_url"]) > 0  # the others still answer
    status = devnet.start_node({"name": "backup1"})
    assert next(n for n in status["nodes"] if n["name"] == "backup1")["api_url"] == url
    assert rpc(url, "database_api.get_version")["node_name"] == "backup1"


def test_stuck_node_freezes_its_head_and_stops_producing(devnet: Devnet) -> None:
    """A stuck primary's head stays put while the chain moves on, and alice misses slots."""
    url = node(devnet, "primary")["api_url"]
    before = devnet.status()
    devnet.set_node_faults({"name": "primary", "stuck": True})
    frozen = head(url)
    wait_until(lambda: devnet.status()["witness"]["total_missed"]
               >= before["witness"]["total_missed"] + 2, 20, "two misses of alice")
    status = devnet.status()
    assert status["head_block_number"] > frozen + 2
    assert head(url) == frozen == node(devnet, "primary")["head_block_number"]
    assert rpc(url, "condenser_api.get_dynamic_global_properties")[
        "head_block_number"] == frozen
    assert head(node(devnet, "backup1")["api_url"]) >= status["head_block_number"]
    devnet.set_node_faults({"name": "primary", "stuck": False})
    assert head(url) >= status["head_block_number"]
    produced = status["witness"]["last_confirmed_block_num"]
    wait_until(lambda: devnet.status()["witness"]["last_confirmed_block_num"] > produced, 20,
               "alice to produce again")
    assert devnet.status()["double_production"] == 0


def test_slow_node_answers_after_the_delay(devnet: Devnet) -> None:
    """slow_s delays every answer of that node by about that long, and no other node."""
    devnet.set_node_faults({"name": "backup2", "slow_s": 0.6})
    t0 = time.monotonic()
    head(node(devnet, "backup2")["api_url"])
    slow = time.monotonic() - t0
    t0 = time.monotonic()
    head(node(devnet, "backup1")["api_url"])
    fast = time.monotonic() - t0
    assert 0.6 <= slow < 2.5
    assert fast < 0.5
    devnet.set_node_faults({"name": "backup2", "slow_s": 0})
    t0 = time.monotonic()
    head(node(devnet, "backup2")["api_url"])
    assert time.monotonic() - t0 < 0.5


def test_partition_resets_one_source_and_serves_another(devnet: Devnet) -> None:
    """A partitioned source address is reset; another source, and other nodes, still answer."""
    url = node(devnet, "primary")["api_url"]
    devnet.set_node_faults({"name": "primary", "partition": [WATCHER_SIDE]})
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        rpc(url, "database_api.get_version", source=WATCHER_SIDE)
    assert rpc(url, "database_api.get_version", source=SIGNER_SIDE)["node_name"] == "primary"
    assert head(node(devnet, "backup1")["api_url"], source=WATCHER_SIDE) > 0
    assert node(devnet, "primary")["faults"]["partition"] == [f"{WATCHER_SIDE}/32"]
    devnet.set_node_faults({"name": "primary", "partition": []})
    assert rpc(url, "database_api.get_version", source=WATCHER_SIDE)["node_name"] == "primary"


def test_partition_cuts_a_connection_opened_before_it(devnet: Devnet) -> None:
    """A kept-alive connection from the cut-off side gets no answer once the partition is set."""
    url = node(devnet, "primary")["api_url"]
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5,
                                      source_address=(WATCHER_SIDE, 0))
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "database_api.get_version"})
    conn.request("POST", "/", body, {"Content-Type": "application/json"})
    assert conn.getresponse().read()
    devnet.set_node_faults({"name": "primary", "partition": ["127.0.0.0/30"]})
    conn.request("POST", "/", body, {"Content-Type": "application/json"})
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        conn.getresponse()
    conn.close()


def test_drop_partition_leaves_the_client_waiting(devnet: Devnet) -> None:
    """In drop mode the cut-off side hears nothing until its own timeout."""
    url = node(devnet, "primary")["api_url"]
    devnet.set_node_faults({"name": "primary", "partition": [WATCHER_SIDE],
                            "partition_mode": "drop"})
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        rpc(url, "database_api.get_version", source=WATCHER_SIDE, timeout_s=0.5)
    assert time.monotonic() - t0 >= 0.45
    assert rpc(url, "database_api.get_version", source=SIGNER_SIDE)["node_name"] == "primary"


def test_faults_change_only_named_fields_and_survive_a_restart(devnet: Devnet) -> None:
    """Omitted fields stay; faults outlive stop/start; all zero/false clears them."""
    devnet.set_node_faults({"name": "backup1", "slow_s": 0.1, "partition": [WATCHER_SIDE]})
    devnet.set_node_faults({"name": "backup1", "stuck": True})
    devnet.stop_node({"name": "backup1"})
    devnet.start_node({"name": "backup1"})
    assert node(devnet, "backup1")["faults"] == {
        "stuck": True, "slow_s": 0.1, "partition": [f"{WATCHER_SIDE}/32"],
        "partition_mode": "reset"}
    devnet.set_node_faults({"name": "backup1", "stuck": False, "slow_s": 0, "partition": []})
    assert node(devnet, "backup1")["faults"] == {
        "stuck": False, "slow_s": 0.0, "partition": [], "partition_mode": "reset"}


@pytest.mark.parametrize("params", [
    pytest.param({"name": "nobody", "stuck": True}, id="unknown-node"),
    pytest.param({"stuck": True}, id="no-name"),
    pytest.param({"name": "primary", "stuck": "yes"}, id="stuck-not-bool"),
    pytest.param({"name": "primary", "slow_s": -1}, id="negative-delay"),
    pytest.param({"name": "primary", "slow_s": True}, id="delay-bool"),
    pytest.param({"name": "primary", "partition": "127.0.0.3"}, id="partition-not-list"),
    pytest.param({"name": "primary", "partition": ["not-an-ip"]}, id="partition-not-ip"),
    pytest.param({"name": "primary", "partition_mode": "silently"}, id="unknown-mode"),
    pytest.param({"name": "primary", "crash": True}, id="unknown-field"),
])
def test_bad_node_fault_params_change_nothing(devnet: Devnet, params: dict[str, Any]) -> None:
    """Bad devnet.set_node_faults params are refused as invalid params; no fault is set."""
    with pytest.raises(InvalidParamsError):
        devnet.set_node_faults(params)
    assert all(n["faults"] == {"stuck": False, "slow_s": 0.0, "partition": [],
                               "partition_mode": "reset"} for n in devnet.status()["nodes"])


def ported_config(base: int, *, given: bool) -> DevnetConfig:
    """The chain on ``base``, node i's API on base+10+i, named in the file or derived."""
    cfg = devnet_config()
    nodes = tuple(replace(n, api_port=base + 10 + i, api_port_given=given)
                  for i, n in enumerate(cfg.nodes))
    return replace(cfg, port=base, nodes=nodes)


def test_busy_default_port_falls_back_to_a_free_one() -> None:
    """A derived node port already in use is replaced by a free port, shown in the status."""
    base = free_port_base()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 10))
        squatter.listen()
        cfg = ported_config(base, given=False)
        dn, httpd = serve(cfg, build_chain(cfg))
        try:
            urls = [n["api_url"] for n in dn.status()["nodes"]]
            assert urls[0] != f"http://127.0.0.1:{base + 10}/"
            assert urls[1:] == [f"http://127.0.0.1:{base + 11}/", f"http://127.0.0.1:{base + 12}/"]
            assert rpc(urls[0], "database_api.get_version")["node_name"] == "primary"
        finally:
            dn.stop()
            httpd.server_close()


def test_busy_named_port_stops_the_start_and_leaves_nothing_open() -> None:
    """A node port named in devnet.toml and in use is a ConfigError; no listener stays."""
    base = free_port_base()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 11))
        squatter.listen()
        cfg = ported_config(base, given=True)
        with pytest.raises(ConfigError, match="backup1"):
            serve(cfg, build_chain(cfg))
    for port in (base, base + 10):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
