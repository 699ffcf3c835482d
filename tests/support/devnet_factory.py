"""In-process devnet chains for unit tests: deterministic keys, a fixed genesis."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from devnet.access import ChainAccess
from devnet.chain import Chain
from devnet.config import DevnetConfig, NodeConfig
from devnet.genesis import build_chain
from devnet.keys import PrivateKey
from shared.chains import HIVE, ChainProfile

NOW = datetime(2024, 1, 2, 3, 4, 6, tzinfo=UTC)
WATCHED = "alice"
NODE_NAMES = ("primary", "backup1", "backup2")
SEED = "unit-test"


def active_key(seed: str = SEED) -> PrivateKey:
    """The watched account's active (and owner, posting, memo) key."""
    return PrivateKey.from_seed(f"{seed}:active")


def node_key(name: str, seed: str = SEED) -> PrivateKey:
    """The signing key held by node ``name``."""
    return PrivateKey.from_seed(f"{seed}:node:{name}")


def devnet_config(profile: ChainProfile = HIVE, *, witness_count: int = 21,
                  prefill_blocks: int = 5, seed: str = SEED) -> DevnetConfig:
    """A devnet.toml equivalent: ``alice`` produced by primary/backup1/backup2."""
    nodes = tuple(NodeConfig(n, node_key(n, seed), True) for n in NODE_NAMES)
    return DevnetConfig(
        path=Path("devnet.toml"), chain=profile, host="127.0.0.1", port=0, slot_seconds=0.05,
        witness_count=witness_count, watched=WATCHED, seed=seed, endpoints=1,
        sync_broadcast_timeout_s=1.0, active_key=active_key(seed), nodes=nodes,
        initial_node=NODE_NAMES[0], url=f"https://{WATCHED}.example/witness",
        account_creation_fee=3000, maximum_block_size=65536, interest_rate=1500,
        prefill_blocks=prefill_blocks,
    )


def make_chain(profile: ChainProfile = HIVE, *, prefill_blocks: int = 5,
               witness_count: int = 21) -> Chain:
    """A chain of ``witness_count`` witnesses whose head is block ``prefill_blocks``."""
    cfg = devnet_config(profile, witness_count=witness_count, prefill_blocks=prefill_blocks)
    return build_chain(cfg, now=NOW)


def make_access(profile: ChainProfile = HIVE, *, prefill_blocks: int = 5) -> ChainAccess:
    """Locked access to a fresh chain, as the server holds it."""
    return ChainAccess(make_chain(profile, prefill_blocks=prefill_blocks))


def produce(access: ChainAccess, blocks: int) -> None:
    """Tick until ``blocks`` more blocks exist (every node of alice stays as configured)."""
    with access.lock:
        target = access.chain.head_num + blocks
        while access.chain.head_num < target:
            access.notify_block(access.chain.tick())
