"""Authority checks and operation evaluation, as hived's evaluators do them.

hived sources followed: libraries/chain/witness_evaluator.cpp (witness_update,
witness_set_properties), libraries/protocol/transaction_util.hpp
(verify_authority: missing authority, unnecessary signatures).
"""

from __future__ import annotations

from datetime import UTC, datetime

from devnet import codec
from devnet.errors import TxRejectedError
from devnet.state import Account, ChainProps, ChainState, ExchangeRate, Witness
from shared.chains import ChainProfile

MAX_AUTHORITY_DEPTH = 2  # HIVE_MAX_SIG_CHECK_DEPTH
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _satisfies(state: ChainState, account: Account, signers: set[str], used: set[str],
               depth: int) -> bool:
    """Whether ``signers`` meet ``account``'s active authority (hived sign_state)."""
    auth = account.active
    total = 0
    for key, weight in auth.key_auths:
        if key in signers:
            used.add(key)
            total += weight
            if total >= auth.weight_threshold:
                return True
    if depth >= MAX_AUTHORITY_DEPTH:
        return total >= auth.weight_threshold
    for name, weight in auth.account_auths:
        other = state.accounts.get(name)
        if other is not None and _satisfies(state, other, signers, used, depth + 1):
            total += weight
            if total >= auth.weight_threshold:
                return True
    return total >= auth.weight_threshold


def check_authority(state: ChainState, decoded: codec.DecodedTransaction,
                    profile: ChainProfile) -> set[str]:
    """Recover the signers and check every required authority; return the signers.

    Raises:
        TxRejectedError: a required authority is missing or a signature is unused.
    """
    signers = codec.recover_signers(decoded, profile.chain_id)
    used: set[str] = set()
    for op in decoded.operations:
        required = codec.required_authorities(op)
        for account_name in required.active:
            account = state.accounts.get(account_name)
            if account is None:
                raise TxRejectedError(f"unknown account {account_name!r}")
            if not _satisfies(state, account, signers, used, 0):
                raise TxRejectedError(
                    f"missing required active authority: Missing Active Authority {account_name}")
        for key in required.keys:
            if key not in signers:
                raise TxRejectedError(f"missing required authority: Missing Authority {key}")
            used.add(key)
    if signers - used:
        raise TxRejectedError("irrelevant signature included: Unnecessary signature(s) detected")
    return signers


def apply_transaction(state: ChainState, decoded: codec.DecodedTransaction,
                      profile: ChainProfile) -> None:
    """Apply every operation to ``state`` in place (callers pass a copy).

    Raises:
        TxRejectedError: an evaluator assertion failed.
    """
    for op in decoded.operations:
        if isinstance(op, codec.WitnessUpdate):
            _witness_update(state, op)
        elif isinstance(op, codec.WitnessSetProperties):
            _witness_set_properties(state, op)
        elif isinstance(op, codec.Transfer):
            _transfer(state, op, profile)
        elif isinstance(op, codec.AccountWitnessVote):
            _vote(state, op)
        else:
            raise TxRejectedError(f"operation {type(op).__name__} is not supported by the devnet")


def _witness_update(state: ChainState, op: codec.WitnessUpdate) -> None:
    if op.owner not in state.accounts:
        raise TxRejectedError(f"unknown account {op.owner!r}")
    props = ChainProps(op.props.account_creation_fee, op.props.maximum_block_size,
                       op.props.interest_rate)
    witness = state.witnesses.get(op.owner)
    if witness is None:
        head = next(iter(state.witnesses.values()), None)
        state.witnesses[op.owner] = Witness(
            id=len(state.witnesses), owner=op.owner, url=op.url,
            signing_key=op.block_signing_key, props=props,
            created=head.created if head else EPOCH,
        )
        return
    # witness_update overwrites url, key and every chain property.
    witness.url = op.url
    witness.signing_key = op.block_signing_key
    witness.props = props


def _witness_set_properties(state: ChainState, op: codec.WitnessSetProperties) -> None:
    witness = state.witnesses.get(op.owner)
    if witness is None:
        raise TxRejectedError(f"unknown witness {op.owner!r}")
    if op.key != witness.signing_key:
        raise TxRejectedError("'key' does not match witness signing key.")
    p = witness.props
    witness.props = ChainProps(
        op.account_creation_fee if op.account_creation_fee is not None else p.account_creation_fee,
        op.maximum_block_size if op.maximum_block_size is not None else p.maximum_block_size,
        op.interest_rate if op.interest_rate is not None else p.interest_rate,
    )
    if op.new_signing_key is not None:
        witness.signing_key = op.new_signing_key
    if op.url is not None:
        witness.url = op.url
    if op.exchange_rate is not None:
        witness.exchange_rate = ExchangeRate(*op.exchange_rate)
    if op.account_subsidy_budget is not None:
        witness.account_subsidy_budget = op.account_subsidy_budget
    if op.account_subsidy_decay is not None:
        witness.account_subsidy_decay = op.account_subsidy_decay


def _transfer(state: ChainState, op: codec.Transfer, profile: ChainProfile) -> None:
    sender = state.accounts.get(op.from_)
    receiver = state.accounts.get(op.to)
    if sender is None or receiver is None:
        raise TxRejectedError("unknown account in transfer")
    if op.symbol == profile.core.symbol:
        if sender.balance < op.amount:
            raise TxRejectedError("Account does not have sufficient funds for transfer.")
        sender.balance -= op.amount
        receiver.balance += op.amount
    else:
        if sender.debt_balance < op.amount:
            raise TxRejectedError("Account does not have sufficient funds for transfer.")
        sender.debt_balance -= op.amount
        receiver.debt_balance += op.amount


def _vote(state: ChainState, op: codec.AccountWitnessVote) -> None:
    account = state.accounts.get(op.account)
    if account is None or op.witness not in state.witnesses:
        raise TxRejectedError("unknown account or witness in account_witness_vote")
    if op.approve == (op.witness in account.witness_votes):
        raise TxRejectedError("vote does not change anything")
    if op.approve:
        account.witness_votes.append(op.witness)
    else:
        account.witness_votes.remove(op.witness)

