"""Build a fresh devnet chain from its configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from devnet.chain import Chain, Node, witness_private_key
from devnet.config import DevnetConfig
from devnet.keys import PrivateKey
from devnet.state import Account, Authority, ChainProps, ChainState, ExchangeRate, Witness
from shared.chains import BLOCK_INTERVAL_S

GENESIS_BALANCE = 1_000_000_000  # core satoshis; the devnet needs no economy


def other_witness_names(count: int) -> list[str]:
    """Names of the always-producing witnesses besides the watched one."""
    return [f"witness-{i:02d}" for i in range(1, count)]


def _authority(key: str) -> Authority:
    return Authority(weight_threshold=1, key_auths=[(key, 1)])


def build_state(cfg: DevnetConfig, created: datetime) -> tuple[ChainState, dict[str, PrivateKey]]:
    """Accounts and witnesses at genesis, and the other witnesses' block keys."""
    accounts: dict[str, Account] = {}
    witnesses: dict[str, Witness] = {}
    keys: dict[str, PrivateKey] = {}
    node_keys = {n.name: n.signing_key for n in cfg.nodes}
    names = [cfg.watched, *other_witness_names(cfg.witness_count)]
    for i, name in enumerate(names):
        if name == cfg.watched:
            active = cfg.active_key.public_key()
            signing = node_keys[cfg.initial_node].public_key()
            url = cfg.url
        else:
            key = witness_private_key(cfg.seed, name)
            keys[name] = key
            active = PrivateKey.from_seed(f"{cfg.seed}:active:{name}").public_key()
            signing = key.public_key()
            url = f"https://{name}.example"
        accounts[name] = Account(
            id=i, name=name, owner=_authority(active), active=_authority(active),
            posting=_authority(active), memo_key=active, balance=GENESIS_BALANCE,
            debt_balance=GENESIS_BALANCE // 10, vesting_shares=GENESIS_BALANCE * 1000,
            created=created,
        )
        witnesses[name] = Witness(
            id=i, owner=name, url=url, signing_key=signing,
            props=ChainProps(cfg.account_creation_fee, cfg.maximum_block_size, cfg.interest_rate),
            created=created, votes=10**15 - i, hardfork_time_vote=created,
            exchange_rate=ExchangeRate(base=250, quote=1000), last_exchange_update=created,
        )
    return ChainState(cfg.chain, accounts, witnesses), keys


def build_chain(cfg: DevnetConfig, now: datetime | None = None) -> Chain:
    """A new chain whose head is ``prefill_blocks`` blocks old at ``now``.

    Prefilled blocks give TaPoS something to reference and every witness a
    produced block, so the first real misses are counted from a sane state.
    """
    now = now or datetime.now(UTC)
    now = now.replace(microsecond=0, tzinfo=UTC)
    now -= timedelta(seconds=now.second % BLOCK_INTERVAL_S)
    genesis = now - timedelta(seconds=BLOCK_INTERVAL_S * cfg.prefill_blocks)
    state, keys = build_state(cfg, genesis)
    nodes = [Node(n.name, n.signing_key, n.up) for n in cfg.nodes]
    # Prefill with every node up so the watched witness starts with a produced
    # block; the configured up/down flags apply once the chain is live.
    for node in nodes:
        node.up = node.name == cfg.initial_node
    chain = Chain(state, watched=cfg.watched, nodes=nodes, witness_keys=keys,
                  genesis_time=genesis, seed=int.from_bytes(cfg.seed.encode()[:8], "big"))
    while chain.head_num < cfg.prefill_blocks:
        chain.tick()
    for node, node_cfg in zip(nodes, cfg.nodes, strict=True):
        node.up = node_cfg.up
    return chain
