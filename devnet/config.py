"""devnet.toml: loaded once, validated field by field, frozen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devnet.keys import PrivateKey
from shared.chains import ChainProfile, profile
from shared.config import Fields, load_toml
from shared.errors import ConfigError

ACCOUNT_NAME_MAX = 16
# A node's own API listens on devnet.port + NODE_API_PORT_OFFSET + its index unless
# the node names ``api_port``: P+1 is the signer, P+2 the watcher's metrics, P+3..P+9
# stay free for other drill services.
NODE_API_PORT_OFFSET = 10

# Every name devnet.toml may hold, per table: anything else is a ConfigError naming the
# nearest valid name.
_TABLES: dict[str, tuple[str, ...]] = {
    "devnet": ("chain", "host", "port", "slot_seconds", "witness_count", "watched", "seed",
               "endpoints", "sync_broadcast_timeout_s", "prefill_blocks"),
    "accounts": ("active_wif",),
    "witness": ("url", "signing_node", "account_creation_fee", "maximum_block_size",
                "interest_rate"),
}
_NODE_FIELDS = ("name", "signing_wif", "up", "api_port")


@dataclass(frozen=True)
class NodeConfig:
    """One producer node of the watched witness."""

    name: str
    signing_key: PrivateKey
    up: bool
    api_port: int = 0  # the node's own JSON-RPC port; 0 = any free port
    api_port_given: bool = False  # named in devnet.toml (else derived from devnet.port)


@dataclass(frozen=True)
class DevnetConfig:
    """The whole devnet: chain, listener, accounts and nodes."""

    path: Path
    chain: ChainProfile
    host: str
    port: int
    slot_seconds: float
    witness_count: int
    watched: str
    seed: str
    endpoints: int
    sync_broadcast_timeout_s: float
    active_key: PrivateKey
    nodes: tuple[NodeConfig, ...]
    initial_node: str
    url: str
    account_creation_fee: int
    maximum_block_size: int
    interest_rate: int
    prefill_blocks: int

    def node_api_url(self, name: str) -> str:
        """The configured URL of node ``name``'s own API (port 0 until it is bound).

        Raises:
            KeyError: no node is called ``name``.
        """
        node = next((n for n in self.nodes if n.name == name), None)
        if node is None:
            raise KeyError(name)
        return f"http://{self.host}:{node.api_port}/"

    @property
    def node_api_urls(self) -> dict[str, str]:
        """Every node's API URL by node name, in configuration order."""
        return {n.name: self.node_api_url(n.name) for n in self.nodes}

    @classmethod
    def load(cls, path: Path) -> DevnetConfig:
        """Read and check ``path``.

        Raises:
            ConfigError: unreadable file or any invalid field (named).
        """
        raw = load_toml(path)
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: Path) -> DevnetConfig:
        """Build from parsed TOML.

        Raises:
            ConfigError: any invalid field (named).
        """
        f = Fields(raw, path, known={*_TABLES, "nodes"})
        for table, names in _TABLES.items():
            f.section(table, names)
        chain_name = f.str("devnet.chain", default="hive")
        try:
            chain = profile(chain_name)
        except ConfigError as e:
            raise ConfigError(str(e), path=str(path), field="devnet.chain") from e
        port = f.int("devnet.port", lo=0, hi=65535)
        nodes_raw = raw.get("nodes")
        if not isinstance(nodes_raw, list) or not nodes_raw:
            raise ConfigError("at least one [[nodes]] table is required", path=str(path),
                              field="nodes")
        nodes: list[NodeConfig] = []
        for i, item in enumerate(nodes_raw):
            if not isinstance(item, dict):
                raise ConfigError("must be a table", path=str(path), field=f"nodes[{i}]")
            nf = Fields(item, path, prefix=f"nodes[{i}].", known=_NODE_FIELDS)
            name = nf.str("name")
            if any(n.name == name for n in nodes):
                raise ConfigError(f"duplicate node name {name!r}", path=str(path),
                                  field=f"nodes[{i}].name")
            default_port = port + NODE_API_PORT_OFFSET + i if port else 0
            api_port = nf.int("api_port", default=default_port, lo=0, hi=65535)
            if api_port and (api_port == port or any(n.api_port == api_port for n in nodes)):
                raise ConfigError(f"port {api_port} is already taken", path=str(path),
                                  field=f"nodes[{i}].api_port")
            nodes.append(NodeConfig(name, _wif(nf, "signing_wif"), nf.bool("up", default=True),
                                    api_port, "api_port" in item))
        initial = f.str("witness.signing_node", default=nodes[0].name)
        if initial not in {n.name for n in nodes}:
            raise ConfigError(f"names no configured node: {initial!r}", path=str(path),
                              field="witness.signing_node")
        watched = f.str("devnet.watched", default="alice")
        _check_account_name(watched, path, "devnet.watched")
        return cls(
            path=path,
            chain=chain,
            host=f.str("devnet.host", default="127.0.0.1"),
            port=port,
            slot_seconds=f.float("devnet.slot_seconds", default=3.0, lo=0.02, hi=60.0),
            witness_count=f.int("devnet.witness_count", default=21, lo=1, hi=101),
            watched=watched,
            seed=f.str("devnet.seed", default="devnet"),
            endpoints=f.int("devnet.endpoints", default=3, lo=0, hi=64),
            sync_broadcast_timeout_s=f.float("devnet.sync_broadcast_timeout_s", default=30.0,
                                             lo=0.1, hi=600.0),
            active_key=_wif(f, "accounts.active_wif"),
            nodes=tuple(nodes),
            initial_node=initial,
            url=f.str("witness.url", default=f"https://{watched}.example/witness"),
            account_creation_fee=f.int("witness.account_creation_fee", default=3000, lo=1,
                                       hi=10**12),
            maximum_block_size=f.int("witness.maximum_block_size", default=65536, lo=65536,
                                     hi=2**31),
            interest_rate=f.int("witness.interest_rate", default=1500, lo=0, hi=10000),
            prefill_blocks=f.int("devnet.prefill_blocks", default=42, lo=1, hi=100000),
        )


def _check_account_name(name: str, path: Path, field: str) -> None:
    """Raise unless ``name`` is a plausible Hive account name."""
    ok = 3 <= len(name) <= ACCOUNT_NAME_MAX and all(
        len(part) >= 3 and part[0].isalpha() and part[-1].isalnum()
        and all(c.islower() or c.isdigit() or c == "-" for c in part)
        for part in name.split(".")
    )
    if not ok:
        raise ConfigError(f"not a valid account name: {name!r}", path=str(path), field=field)


def _wif(f: Fields, dotted: str) -> PrivateKey:
    """A devnet private key given as WIF."""
    value = f.str(dotted)
    try:
        return PrivateKey.from_wif(value)
    except Exception:  # noqa: BLE001 - any decode failure is a config error
        # SECURITY: never echo the value, nor chain an error that might.
        raise f.fail(dotted, "is not a valid WIF private key") from None
