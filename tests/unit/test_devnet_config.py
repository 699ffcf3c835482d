"""devnet.toml's producer-node API ports: defaults after the chain's port, overrides, clashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devnet.config import NODE_API_PORT_OFFSET, DevnetConfig
from devnet.keys import PrivateKey
from shared.errors import ConfigError

NODE_NAMES = ("primary", "backup1", "backup2")


def raw_config(port: int, **node_ports: int) -> dict[str, Any]:
    """A minimal devnet.toml as parsed TOML, with optional ``api_port`` per node."""
    nodes: list[dict[str, Any]] = []
    for name in NODE_NAMES:
        node: dict[str, Any] = {"name": name,
                                "signing_wif": PrivateKey.from_seed(f"cfg:{name}").wif()}
        if name in node_ports:
            node["api_port"] = node_ports[name]
        nodes.append(node)
    return {"devnet": {"port": port},
            "accounts": {"active_wif": PrivateKey.from_seed("cfg:active").wif()},
            "nodes": nodes}


def load(raw: dict[str, Any]) -> DevnetConfig:
    """Build the config from parsed TOML."""
    return DevnetConfig.from_dict(raw, Path("devnet.toml"))


def test_default_ports_follow_the_chain_port() -> None:
    """Node i listens on P+10+i: clear of the signer (P+1) and the watcher's metrics (P+2)."""
    cfg = load(raw_config(18000))
    assert NODE_API_PORT_OFFSET == 10
    assert [n.api_port for n in cfg.nodes] == [18010, 18011, 18012]
    assert cfg.node_api_urls == {"primary": "http://127.0.0.1:18010/",
                                 "backup1": "http://127.0.0.1:18011/",
                                 "backup2": "http://127.0.0.1:18012/"}


def test_explicit_api_port_wins() -> None:
    """``[[nodes]] api_port`` overrides the default of that node only."""
    cfg = load(raw_config(18000, backup1=19001))
    assert [n.api_port for n in cfg.nodes] == [18010, 19001, 18012]
    assert [n.api_port_given for n in cfg.nodes] == [False, True, False]
    assert cfg.node_api_url("backup1") == "http://127.0.0.1:19001/"


def test_port_zero_means_any_free_port() -> None:
    """A chain on port 0 (tests) puts every node API on a free port too."""
    assert [n.api_port for n in load(raw_config(0)).nodes] == [0, 0, 0]


@pytest.mark.parametrize(("raw", "field"), [
    pytest.param(raw_config(18000, backup1=18010), "nodes[1].api_port", id="two-nodes-one-port"),
    pytest.param(raw_config(18000, primary=18000), "nodes[0].api_port", id="chain-port"),
    pytest.param(raw_config(18000, primary=70000), "nodes[0].api_port", id="out-of-range"),
    pytest.param(raw_config(65530), "nodes[0].api_port", id="default-past-65535"),
])
def test_bad_ports_are_config_errors(raw: dict[str, Any], field: str) -> None:
    """A clash or an impossible port names the node's field."""
    with pytest.raises(ConfigError) as e:
        load(raw)
    assert field in str(e.value)


def test_unknown_node_has_no_url() -> None:
    """Asking for a node that is not configured is a KeyError, not a made-up URL."""
    with pytest.raises(KeyError):
        load(raw_config(18000)).node_api_url("backup9")
