"""The devnet's chain objects: witnesses, accounts, blocks. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from shared.chains import ChainProfile

if TYPE_CHECKING:
    from devnet.codec import DecodedTransaction


@dataclass
class ChainProps:
    """A witness's voted chain properties (hived ``chain_properties``)."""

    account_creation_fee: int  # satoshis of the core asset
    maximum_block_size: int
    interest_rate: int  # the profile's hbd/sbd_interest_rate, in basis points


@dataclass
class ExchangeRate:
    """A witness's price feed, in satoshis of debt asset per core asset."""

    base: int = 0  # debt asset satoshis
    quote: int = 0  # core asset satoshis


@dataclass
class Authority:
    """An account authority: weighted keys and accounts against a threshold."""

    weight_threshold: int
    key_auths: list[tuple[str, int]]
    account_auths: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Account:
    """The parts of an account the devnet models."""

    id: int
    name: str
    owner: Authority
    active: Authority
    posting: Authority
    memo_key: str
    balance: int  # core satoshis
    debt_balance: int  # debt satoshis
    vesting_shares: int  # VESTS micro-units
    created: datetime
    witness_votes: list[str] = field(default_factory=list)


@dataclass
class Witness:
    """A witness object as hived keeps it (the fields the API shows)."""

    id: int
    owner: str
    url: str
    signing_key: str
    props: ChainProps
    created: datetime
    total_missed: int = 0
    last_confirmed_block_num: int = 0
    last_aslot: int = 0
    votes: int = 0
    running_version: str = "1.27.11"
    hardfork_version_vote: str = "1.27.0"
    hardfork_time_vote: datetime | None = None
    exchange_rate: ExchangeRate = field(default_factory=ExchangeRate)
    last_exchange_update: datetime | None = None
    account_subsidy_budget: int = 797
    account_subsidy_decay: int = 347321


@dataclass(frozen=True)
class AcceptedTransaction:
    """A transaction as included in a block: its decoded form and identity."""

    txid: str
    decoded: DecodedTransaction
    block_num: int
    trx_num: int


@dataclass(frozen=True)
class Block:
    """A produced block, with the id hived would compute for its header."""

    number: int
    block_id: str
    previous: str
    timestamp: datetime
    witness: str
    signing_key: str
    witness_signature: str
    transaction_merkle_root: str
    transactions: tuple[AcceptedTransaction, ...]
    aslot: int


@dataclass
class ChainState:
    """Everything transactions can change; copied to evaluate pending ones."""

    profile: ChainProfile
    accounts: dict[str, Account]
    witnesses: dict[str, Witness]
