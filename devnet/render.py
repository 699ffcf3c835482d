"""Chain objects rendered as hived's APIs show them. Pure: values in, JSON values out.

Two flavours: ``legacy=True`` is condenser_api (asset strings such as
``"3.000 HIVE"``, legacy operations), ``legacy=False`` is database_api/block_api
(NAI asset objects, appbase operations). Field names and JSON types follow
shared/reference/hived-api-examples.json; the Steem profile renames ``hbd``/``hive``
in field names to ``sbd``/``steem`` as steemd names them.
"""

from __future__ import annotations

import calendar
import statistics
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from devnet import codec
from devnet.state import AcceptedTransaction, Account, Authority, Block, ChainProps, Witness
from shared.chains import Asset, ChainProfile

if TYPE_CHECKING:
    from devnet.chain import Chain

EPOCH_TEXT = "1970-01-01T00:00:00"
MAX_WITNESSES = 21  # HIVE_MAX_WITNESSES: the schedule array is always this long
UINT128_MAX = 2**128 - 1
VESTS_PER_CORE = 2000  # a plausible HIVE/VESTS ratio for the devnet's supply figures
ZERO_WORK = "0" * 64


class Versions(NamedTuple):
    """What a node of one chain reports as its software and hardfork versions."""

    blockchain: str
    hardfork: str
    last_hardfork: int


_VERSIONS = {"hive": Versions("1.27.11", "1.27.0", 27), "steem": Versions("0.23.1", "0.23.0", 23)}


def versions(profile: ChainProfile) -> Versions:
    """The versions a node of ``profile``'s chain reports."""
    return _VERSIONS.get(profile.name, _VERSIONS["hive"])


def format_time(value: datetime | None) -> str:
    """hived's time format, UTC without zone; the epoch for "never"."""
    return value.strftime("%Y-%m-%dT%H:%M:%S") if value is not None else EPOCH_TEXT


def asset(amount: int, kind: Asset, *, legacy: bool) -> Any:
    """An amount of satoshis: ``"1.000 HIVE"`` (legacy) or a NAI object."""
    if not legacy:
        return {"amount": str(amount), "nai": kind.nai, "precision": kind.precision}
    whole, frac = divmod(abs(amount), 10**kind.precision)
    sign = "-" if amount < 0 else ""
    return f"{sign}{whole}.{frac:0{kind.precision}d} {kind.symbol}"


def price(base: int, quote: int, profile: ChainProfile, *, legacy: bool) -> dict[str, Any]:
    """A debt-per-core price (exchange rate, feed) as hived renders ``price``."""
    return {"base": asset(base, profile.debt, legacy=legacy),
            "quote": asset(quote, profile.core, legacy=legacy)}


def renamed(profile: ChainProfile, obj: dict[str, Any]) -> dict[str, Any]:
    """Rename ``hbd``/``hive`` in every object key to the profile's symbols."""
    debt, core = profile.debt.symbol.lower(), profile.core.symbol.lower()
    if (debt, core) == ("hbd", "hive"):
        return obj

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k.replace("hbd", debt).replace("hive", core): walk(v)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return {k.replace("hbd", debt).replace("hive", core): walk(v) for k, v in obj.items()}


def _unix(value: datetime) -> int:
    return calendar.timegm(value.utctimetuple())


# ---- chain-wide aggregates ----------------------------------------------------


def genesis_time(chain: Chain) -> datetime:
    """When the devnet began: the oldest account's creation time."""
    created = [a.created for a in chain.state.accounts.values()]
    return min(created) if created else chain.head_time


def median_props(chain: Chain) -> ChainProps:
    """The median of the scheduled witnesses' votes (hived update_median_witness_props)."""
    voters = _scheduled(chain) or list(chain.state.witnesses.values())
    if not voters:
        return ChainProps(0, 65536, 0)
    return ChainProps(
        int(statistics.median_low(w.props.account_creation_fee for w in voters)),
        int(statistics.median_low(w.props.maximum_block_size for w in voters)),
        int(statistics.median_low(w.props.interest_rate for w in voters)),
    )


def median_price(chain: Chain) -> tuple[int, int]:
    """The median published feed as (debt satoshis, core satoshis)."""
    feeds = [w.exchange_rate for w in _scheduled(chain) if w.exchange_rate.quote > 0]
    if not feeds:
        return 250, 1000  # a plausible 0.250 debt per core before any feed is published
    feeds.sort(key=lambda r: r.base / r.quote)
    mid = feeds[(len(feeds) - 1) // 2]
    return mid.base, mid.quote


def _scheduled(chain: Chain) -> list[Witness]:
    return [chain.state.witnesses[n] for n in chain.schedule if n in chain.state.witnesses]


def recent_slots(chain: Chain) -> tuple[int, int]:
    """hived's ``recent_slots_filled`` bit field and its popcount up to the head.

    Slots before the devnet's history count as filled, as hived starts from all ones.
    """
    bits = UINT128_MAX
    seen = [r for r in chain.slot_log if r.aslot <= chain.current_aslot][-128:]
    for record in seen:
        bits = ((bits << 1) | int(record.produced)) & UINT128_MAX
    return bits, bin(bits).count("1")


def _chain_props(props: ChainProps, witness: Witness | None, profile: ChainProfile,
                 *, legacy: bool) -> dict[str, Any]:
    return {
        "account_creation_fee": asset(props.account_creation_fee, profile.core, legacy=legacy),
        "account_subsidy_budget": witness.account_subsidy_budget if witness else 797,
        "account_subsidy_decay": witness.account_subsidy_decay if witness else 347321,
        profile.interest_field: props.interest_rate,
        "maximum_block_size": props.maximum_block_size,
    }


def chain_properties(chain: Chain, *, legacy: bool) -> dict[str, Any]:
    """The median chain properties (condenser ``get_chain_properties``)."""
    return _chain_props(median_props(chain), None, chain.profile, legacy=legacy)


# ---- objects -------------------------------------------------------------------


def witness(w: Witness, profile: ChainProfile, *, legacy: bool) -> dict[str, Any]:
    """A witness object; ``votes`` is a string in condenser_api, a number elsewhere."""
    rate = price(w.exchange_rate.base, w.exchange_rate.quote, profile, legacy=legacy)
    return renamed(profile, {
        "available_witness_account_subsidies": 0,
        "created": format_time(w.created),
        "hardfork_time_vote": format_time(w.hardfork_time_vote or w.created),
        "hardfork_version_vote": w.hardfork_version_vote,
        "hbd_exchange_rate": rate,
        "id": w.id,
        "last_aslot": w.last_aslot,
        "last_confirmed_block_num": w.last_confirmed_block_num,
        "last_hbd_exchange_update": format_time(w.last_exchange_update),
        "last_work": ZERO_WORK,
        "owner": w.owner,
        "pow_worker": 0,
        "props": _chain_props(w.props, w, profile, legacy=legacy),
        "running_version": w.running_version,
        "signing_key": w.signing_key,
        "total_missed": w.total_missed,
        "url": w.url,
        "virtual_last_update": "0",
        "virtual_position": "0",
        "virtual_scheduled_time": str(UINT128_MAX),
        "votes": str(w.votes) if legacy else w.votes,
    })


def _authority(auth: Authority) -> dict[str, Any]:
    return {"account_auths": [[n, w] for n, w in auth.account_auths],
            "key_auths": [[k, w] for k, w in auth.key_auths],
            "weight_threshold": auth.weight_threshold}


def account(a: Account, profile: ChainProfile, now: datetime, *, legacy: bool) -> dict[str, Any]:
    """An account (condenser ``extended_account`` or database_api ``api_account_object``)."""
    core, debt, vests = profile.core, profile.debt, profile.vests

    def amt(value: int, kind: Asset) -> Any:
        return asset(value, kind, legacy=legacy)

    created = format_time(a.created)
    mana = {"current_mana": a.vesting_shares, "last_update_time": _unix(now)}
    out: dict[str, Any] = {
        "active": _authority(a.active), "balance": amt(a.balance, core), "can_vote": True,
        "comment_count": 0, "created": created, "curation_rewards": 0, "delayed_votes": [],
        "delegated_vesting_shares": amt(0, vests),
        "downvote_manabar": {**mana, "current_mana": a.vesting_shares // 4},
        "governance_vote_expiration_ts": format_time(now + timedelta(days=365)),
        "hbd_balance": amt(a.debt_balance, debt), "hbd_last_interest_payment": EPOCH_TEXT,
        "hbd_seconds": "0", "hbd_seconds_last_update": EPOCH_TEXT, "id": a.id,
        "json_metadata": "", "last_account_recovery": EPOCH_TEXT,
        "last_account_update": created, "last_owner_update": EPOCH_TEXT,
        "last_post": EPOCH_TEXT, "last_root_post": EPOCH_TEXT, "last_vote_time": EPOCH_TEXT,
        "lifetime_vote_count": 0, "memo_key": a.memo_key, "mined": False, "name": a.name,
        "next_vesting_withdrawal": "1969-12-31T23:59:59", "open_recurrent_transfers": 0,
        "owner": _authority(a.owner), "pending_claimed_accounts": 0, "pending_transfers": 0,
        "post_bandwidth": 0, "post_count": 0, "post_voting_power": amt(a.vesting_shares, vests),
        "posting": _authority(a.posting), "posting_json_metadata": "", "posting_rewards": 0,
        "previous_owner_update": EPOCH_TEXT, "proxied_vsf_votes": [0, 0, 0, 0], "proxy": "",
        "received_vesting_shares": amt(0, vests), "recovery_account": "",
        "reset_account": "null", "reward_hbd_balance": amt(0, debt),
        "reward_hive_balance": amt(0, core), "reward_vesting_balance": amt(0, vests),
        "reward_vesting_hive": amt(0, core), "savings_balance": amt(0, core),
        "savings_hbd_balance": amt(0, debt), "savings_hbd_last_interest_payment": EPOCH_TEXT,
        "savings_hbd_seconds": "0", "savings_hbd_seconds_last_update": EPOCH_TEXT,
        "savings_withdraw_requests": 0, "to_withdraw": 0, "vesting_shares": amt(a.vesting_shares,
                                                                              vests),
        "vesting_withdraw_rate": amt(0, vests), "voting_manabar": mana, "withdraw_routes": 0,
        "withdrawn": 0, "witnesses_voted_for": len(a.witness_votes),
    }
    if legacy:
        out.update({
            "guest_bloggers": [], "market_history": [], "other_history": [], "post_history": [],
            "reputation": 0, "tags_usage": [], "transfer_history": [],
            "vesting_balance": amt(0, core), "vote_history": [], "voting_power": 0,
            "witness_votes": sorted(a.witness_votes),
        })
    else:
        out.update({"is_smt": False, "last_post_edit": EPOCH_TEXT})
    return renamed(profile, dict(sorted(out.items())))


def dynamic_global_properties(chain: Chain, *, legacy: bool) -> dict[str, Any]:
    """``get_dynamic_global_properties``: head, slot accounting and plausible economics."""
    profile = chain.profile
    core, debt, vests = profile.core, profile.debt, profile.vests
    accounts = chain.state.accounts.values()
    total_vests = sum(a.vesting_shares for a in accounts)
    vesting_fund = total_vests // VESTS_PER_CORE
    supply = sum(a.balance for a in accounts) + vesting_fund
    debt_supply = sum(a.debt_balance for a in accounts)
    feed_base, feed_quote = median_price(chain)
    virtual = supply + (debt_supply * feed_quote // feed_base if feed_base else 0)
    head = chain.blocks[-1] if chain.blocks else None
    filled, participation = recent_slots(chain)
    props = median_props(chain)
    hour = chain.head_time.replace(minute=0, second=0, microsecond=0)

    def amt(value: int, kind: Asset) -> Any:
        return asset(value, kind, legacy=legacy)

    out: dict[str, Any] = {
        "available_account_subsidies": 13499922, "content_reward_percent": 6500,
        "current_aslot": chain.current_aslot, "current_hbd_supply": amt(debt_supply, debt),
        "current_remove_threshold": 200, "current_supply": amt(supply, core),
        "current_witness": head.witness if head else "", "delegation_return_period": 432000,
        "dhf_interval_ledger": amt(0, debt), "downvote_pool_percent": 2500,
        "early_voting_seconds": 86400, "hbd_interest_rate": props.interest_rate,
        "hbd_print_rate": 10000, "hbd_start_percent": 2000, "hbd_stop_percent": 2000,
        "head_block_id": chain.head_id, "head_block_number": chain.head_num,
        "init_hbd_supply": amt(0, debt), "last_budget_time": format_time(hour),
        "last_irreversible_block_num": chain.last_irreversible_block_num,
        "max_consecutive_recurrent_transfer_failures": 10, "max_open_recurrent_transfers": 255,
        "max_recurrent_transfer_end_date": 730, "maximum_block_size": props.maximum_block_size,
        "mid_voting_seconds": 172800, "min_recurrent_transfers_recurrence": 24,
        "next_daily_maintenance_time": format_time(hour + timedelta(days=1)),
        "next_maintenance_time": format_time(hour + timedelta(hours=1)), "num_pow_witnesses": 172,
        "participation_count": participation, "pending_rewarded_vesting_hive": amt(0, core),
        "pending_rewarded_vesting_shares": amt(0, vests), "proposal_fund_percent": 1000,
        "recent_slots_filled": str(filled), "reverse_auction_seconds": 0,
        "time": format_time(chain.head_time), "total_pow": 514415,
        "total_reward_fund_hive": amt(0, core), "total_reward_shares2": "0",
        "total_vesting_fund_hive": amt(vesting_fund, core),
        "total_vesting_shares": amt(total_vests, vests), "vesting_reward_percent": 1500,
        "virtual_supply": amt(virtual, core), "vote_power_reserve_rate": 10,
    }
    if not legacy:
        out["id"] = 0
    return renamed(profile, dict(sorted(out.items())))


def witness_schedule(chain: Chain, *, legacy: bool) -> dict[str, Any]:
    """``get_witness_schedule``; the shuffled list is padded with "" to 21 like hived's array."""
    shuffled = list(chain.schedule) + [""] * (MAX_WITNESSES - len(chain.schedule))
    majority = versions(chain.profile).blockchain

    def rd(budget: int, decay: int, pool: int, min_decay: int) -> dict[str, Any]:
        return {"budget_per_time_unit": budget,
                "decay_params": {"decay_per_time_unit": decay,
                                 "decay_per_time_unit_denom_shift": 36},
                "max_pool_size": pool, "min_decay": min_decay, "pool_eq": pool,
                "resource_unit": 10000}

    return renamed(chain.profile, {
        "account_subsidy_rd": rd(797, 347321, 157691079, 0),
        "account_subsidy_witness_rd": rd(996, 7293741, 9384019, 133),
        "current_shuffled_witnesses": shuffled,
        "current_virtual_time": "0",
        "elected_weight": 1,
        "hardfork_required_witnesses": 17,
        "id": 0,
        "majority_version": majority,
        "max_miner_witnesses": 0,
        "max_runner_witnesses": 1,
        "max_voted_witnesses": 20,
        "median_props": _chain_props(median_props(chain), None, chain.profile, legacy=legacy),
        "min_witness_account_subsidy_decay": 0,
        "miner_weight": 1,
        "next_shuffle_block_num": chain.next_shuffle_block_num,
        "num_scheduled_witnesses": max(len(chain.schedule), 1),
        "timeshare_weight": 5,
        "witness_pay_normalization_factor": 25,
    })


def feed_history(chain: Chain, *, legacy: bool) -> dict[str, Any]:
    """``get_feed_history``: every history price is the current median."""
    median = price(*median_price(chain), chain.profile, legacy=legacy)
    return {"current_max_history": median, "current_median_history": median,
            "current_min_history": median, "id": 0, "market_median_history": median,
            "price_history": [median]}


def hardfork_properties(chain: Chain) -> dict[str, Any]:
    """``database_api.get_hardfork_properties``: every hardfork applied at genesis."""
    version = versions(chain.profile)
    genesis = format_time(genesis_time(chain))
    return {"current_hardfork_version": version.hardfork, "id": 0,
            "last_hardfork": version.last_hardfork, "next_hardfork": version.hardfork,
            "next_hardfork_time": genesis,
            "processed_hardforks": [genesis] * (version.last_hardfork + 1)}


def version(profile: ChainProfile, *, node_name: str | None = None) -> dict[str, Any]:
    """``get_version`` of a devnet node; a producer node's own API adds ``node_name``.

    hived's answer has no node identity (its build hashes are the same on every
    node of a release), so the devnet adds one string field a client may ignore.
    """
    revision = "0" * 40
    out = renamed(profile, {
        "blockchain_version": versions(profile).blockchain, "chain_id": profile.chain_id,
        "fc_revision": revision, "haf_revision": revision, "hive_revision": revision,
        "node_type": "mainnet"})
    if node_name is not None:
        out["node_name"] = node_name
    return out


# ---- blocks and transactions -----------------------------------------------------


def transaction(tx: AcceptedTransaction, profile: ChainProfile, *, legacy: bool,
                located: bool) -> dict[str, Any]:
    """An included transaction; ``located`` adds its id, block and index (condenser)."""
    decoded = tx.decoded
    assert isinstance(decoded, codec.DecodedTransaction)  # state.py keeps it opaque
    out = codec.transaction_json(decoded, profile, legacy=legacy)
    if located:
        out.update({"transaction_id": tx.txid, "block_num": tx.block_num,
                    "transaction_num": tx.trx_num})
    return out


def block_header(b: Block) -> dict[str, Any]:
    """A block header in hived's field order."""
    return {"previous": b.previous, "timestamp": format_time(b.timestamp), "witness": b.witness,
            "transaction_merkle_root": b.transaction_merkle_root, "extensions": []}


def block(b: Block, profile: ChainProfile, *, legacy: bool) -> dict[str, Any]:
    """A signed block with ids; condenser transactions also carry their location."""
    return {**block_header(b), "witness_signature": b.witness_signature,
            "transactions": [transaction(t, profile, legacy=legacy, located=legacy)
                             for t in b.transactions],
            "block_id": b.block_id, "signing_key": b.signing_key,
            "transaction_ids": [t.txid for t in b.transactions]}


def sorted_names(names: Iterable[str], lower_bound: str, limit: int) -> list[str]:
    """Names from ``lower_bound`` on, sorted, at most ``limit`` (hived lookup_* order)."""
    return sorted(n for n in names if n >= lower_bound)[:limit]
