"""hived's API methods over the devnet chain: reads, transactions and broadcasts.

Arguments as hived's plugins take them: condenser_api positional (``CHECK_ARG_SIZE``),
the appbase APIs named objects (unknown fields ignored), lists capped at 1000
(``DATABASE_API_SINGLE_QUERY_LIMIT``); unknown accounts are left out or null.
Error shapes and the argument checks are in :mod:`devnet.api_base` (re-exported here).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devnet import codec, evaluator, hived_config, render
from devnet.api_base import (
    ERROR_DURING_CALL,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    QUERY_LIMIT,
    SERVER_ERROR,
    UINT32_MAX,
    Handler,
    InvalidParamsError,
    Method,
    RpcError,
    fc_error,
    field,
    integer,
    named,
    positional,
    text,
    texts,
    transaction_arg,
)

if TYPE_CHECKING:
    from devnet.access import ChainAccess
    from devnet.chain import Chain
    from devnet.state import Witness

__all__ = [
    "ERROR_DURING_CALL",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "QUERY_LIMIT",
    "SERVER_ERROR",
    "UINT32_MAX",
    "ChainApi",
    "Handler",
    "InvalidParamsError",
    "Method",
    "RpcError",
    "fc_error",
    "field",
    "integer",
    "named",
    "positional",
    "text",
    "texts",
    "transaction_arg",
]


class ChainApi:
    """The condenser, database, block and broadcast APIs of one devnet node."""

    def __init__(self, access: ChainAccess, *, sync_timeout_s: float,
                 node_name: str | None = None) -> None:
        self._access = access
        self._sync_timeout_s = sync_timeout_s
        self.methods: dict[str, Method] = {}
        legacy_reads: dict[str, Callable[[Chain], object]] = {
            "get_config": lambda c: hived_config.get_config(c.profile, legacy=True),
            "get_version": lambda c: render.version(c.profile, node_name=node_name),
            "get_dynamic_global_properties":
                lambda c: render.dynamic_global_properties(c, legacy=True),
            "get_chain_properties": lambda c: render.chain_properties(c, legacy=True),
            "get_hardfork_version": lambda c: render.versions(c.profile).hardfork,
            "get_witness_schedule": lambda c: render.witness_schedule(c, legacy=True),
            "get_active_witnesses": lambda c: [n for n in c.schedule if n],
            "get_feed_history": lambda c: render.feed_history(c, legacy=True),
            "get_current_median_history_price": lambda c: render.price(
                *render.median_price(c), c.profile, legacy=True),
            "get_witness_count": lambda c: len(c.state.witnesses),
            "get_account_count": lambda c: len(c.state.accounts),
        }
        for name, read in legacy_reads.items():
            self.methods[f"condenser_api.{name}"] = Method(self._no_args(read))
        appbase_reads: dict[str, Callable[[Chain], object]] = {
            "get_config": lambda c: hived_config.get_config(c.profile, legacy=False),
            "get_version": lambda c: render.version(c.profile, node_name=node_name),
            "get_dynamic_global_properties":
                lambda c: render.dynamic_global_properties(c, legacy=False),
            "get_witness_schedule": lambda c: render.witness_schedule(c, legacy=False),
            "get_hardfork_properties": render.hardfork_properties,
            "get_active_witnesses": lambda c: {"witnesses": [n for n in c.schedule if n]},
            "get_feed_history": lambda c: render.feed_history(c, legacy=False),
            "get_current_price_feed": lambda c: render.price(
                *render.median_price(c), c.profile, legacy=False),
        }
        for name, read in appbase_reads.items():
            self.methods[f"database_api.{name}"] = Method(self._object_args(read))
        handlers: dict[str, Handler] = {
            "condenser_api.get_witness_by_account": self._witness_by_account,
            "condenser_api.get_witnesses": self._witnesses_by_id,
            "condenser_api.get_accounts":
                lambda p: self._accounts(positional(p, 1, 2)[0], legacy=True),
            "condenser_api.lookup_account_names":
                lambda p: self._accounts(positional(p, 1, 2)[0], legacy=True, nulls=True),
            "condenser_api.lookup_accounts": self._lookup_accounts,
            "condenser_api.get_block":
                lambda p: self._block_json(positional(p, 1)[0], legacy=True),
            "condenser_api.get_block_header":
                lambda p: self._block_json(positional(p, 1)[0], header=True),
            "condenser_api.get_transaction": self._get_transaction,
            "condenser_api.get_transaction_hex":
                lambda p: self._hex(positional(p, 1)[0], legacy=True),
            "condenser_api.get_required_signatures": self._condenser_required_signatures,
            "condenser_api.verify_authority":
                lambda p: self._verify(positional(p, 1)[0], legacy=True),
            "condenser_api.broadcast_transaction":
                lambda p: self._broadcast(positional(p, 1)[0]),
            "database_api.find_witnesses": self._find_witnesses,
            "database_api.list_witnesses": self._list_witnesses,
            "database_api.find_accounts": lambda p: {"accounts": self._accounts(
                field(named(p), "accounts"), legacy=False)},
            "database_api.get_transaction_hex":
                lambda p: {"hex": self._hex(field(named(p), "trx"))},
            "database_api.verify_authority":
                lambda p: {"valid": self._verify(field(named(p), "trx"))},
            "database_api.get_required_signatures": self._database_required_signatures,
            "block_api.get_block": lambda p: _member("block", self._block_json(
                field(named(p), "block_num"), legacy=False)),
            "block_api.get_block_header": lambda p: _member("header", self._block_json(
                field(named(p), "block_num"), header=True)),
            "block_api.get_block_range": self._block_range,
            "network_broadcast_api.broadcast_transaction":
                lambda p: self._broadcast(field(named(p), "trx")),
        }
        for name, handler in handlers.items():
            self.methods[name] = Method(handler)
        self.methods["condenser_api.broadcast_transaction_synchronous"] = Method(
            self._broadcast_synchronous, locked=False)

    def call(self, method: Method, params: object) -> object:
        """Run ``method``; under the chain lock unless it manages the lock itself."""
        if not method.locked:
            return method.fn(params)
        with self._access.lock:
            return method.fn(params)

    @property
    def _chain(self) -> Chain:
        return self._access.chain

    def _no_args(self, read: Callable[[Chain], object]) -> Handler:
        def handler(params: object) -> object:
            positional(params, 0)
            return read(self._chain)
        return handler

    def _object_args(self, read: Callable[[Chain], object]) -> Handler:
        def handler(params: object) -> object:
            named(params)  # hived ignores the fields of a void argument object
            return read(self._chain)
        return handler

    # ---- witnesses and accounts ----------------------------------------------------

    def _witness_json(self, w: Witness, *, legacy: bool) -> dict[str, Any]:
        return render.witness(w, self._chain.profile, legacy=legacy)

    def _witness_by_account(self, params: object) -> object:
        name = text(positional(params, 1)[0], "account")
        w = self._chain.state.witnesses.get(name)
        return self._witness_json(w, legacy=True) if w is not None else None

    def _witnesses_by_id(self, params: object) -> object:
        ids = positional(params, 1)[0]
        if not isinstance(ids, list) or len(ids) > QUERY_LIMIT:
            raise InvalidParamsError("witness ids must be an array of integers")
        by_id = {w.id: w for w in self._chain.state.witnesses.values()}
        found = [by_id.get(integer(i, "witness id", 2**63 - 1)) for i in ids]
        return [self._witness_json(w, legacy=True) if w else None for w in found]

    def _find_witnesses(self, params: object) -> object:
        owners = texts(field(named(params), "owners"), "owners")
        witnesses = self._chain.state.witnesses
        return {"witnesses": [self._witness_json(witnesses[o], legacy=False)
                              for o in owners if o in witnesses]}

    def _list_witnesses(self, params: object) -> object:
        args = named(params)
        limit = integer(field(args, "limit"), "limit", QUERY_LIMIT)
        order, start = field(args, "order"), field(args, "start")
        everyone = list(self._chain.state.witnesses.values())
        if order == "by_name":
            lower = text(start, "start")
            chosen = sorted((w for w in everyone if w.owner >= lower), key=lambda w: w.owner)
        elif order == "by_vote_name":
            if not (isinstance(start, list) and len(start) == 2):
                raise InvalidParamsError("start must be [votes, name] for by_vote_name")
            bound = (-integer(start[0], "votes", 2**63 - 1), text(start[1], "name"))
            chosen = sorted((w for w in everyone if (-w.votes, w.owner) >= bound),
                            key=lambda w: (-w.votes, w.owner))
        else:
            raise InvalidParamsError(f"unsupported order {order!r}; use by_name or by_vote_name")
        return {"witnesses": [self._witness_json(w, legacy=False) for w in chosen[:limit]]}

    def _account_json(self, name: str, *, legacy: bool) -> dict[str, Any] | None:
        chain = self._chain
        a = chain.state.accounts.get(name)
        return render.account(a, chain.profile, chain.head_time, legacy=legacy) if a else None

    def _accounts(self, names: object, *, legacy: bool, nulls: bool = False) -> list[Any]:
        """Accounts by name; unknown ones are left out, or null when ``nulls``."""
        found = [self._account_json(n, legacy=legacy) for n in texts(names, "account names")]
        return found if nulls else [a for a in found if a is not None]

    def _lookup_accounts(self, params: object) -> object:
        lower, limit = positional(params, 2)
        return render.sorted_names(self._chain.state.accounts, text(lower, "lower bound"),
                                   integer(limit, "limit", QUERY_LIMIT))

    # ---- blocks ----------------------------------------------------------------------

    def _block_json(self, number: object, *, legacy: bool = False,
                    header: bool = False) -> dict[str, Any] | None:
        """Block ``number`` (or its header) as rendered, None when it is not kept."""
        b = self._chain.block(integer(number, "block_num"))
        if b is None:
            return None
        return render.block_header(b) if header else render.block(b, self._chain.profile,
                                                                  legacy=legacy)

    def _block_range(self, params: object) -> object:
        args = named(params)
        start = integer(field(args, "starting_block_num"), "starting_block_num")
        count = integer(field(args, "count"), "count", QUERY_LIMIT)
        blocks = (self._chain.block(n) for n in range(start, start + count))
        return {"blocks": [render.block(b, self._chain.profile, legacy=False)
                           for b in blocks if b is not None]}

    # ---- transactions ----------------------------------------------------------------

    def _get_transaction(self, params: object) -> object:
        txid = text(positional(params, 1)[0], "transaction id")
        found = self._chain.find_transaction(txid)
        if found is None:
            raise fc_error(ERROR_DURING_CALL, "Assert Exception",
                           f"false: Unknown Transaction {txid}", method="get_transaction")
        return render.transaction(found, self._chain.profile, legacy=True, located=True)

    def _decode(self, tx_json: object, legacy: bool | None) -> codec.DecodedTransaction:
        """condenser_api reads legacy JSON only; database_api takes either shape."""
        return codec.decode_transaction(transaction_arg(tx_json), self._chain.profile,
                                        legacy=legacy)

    def _hex(self, tx_json: object, *, legacy: bool | None = None) -> str:
        return codec.transaction_hex(self._decode(tx_json, legacy))

    def _verify(self, tx_json: object, *, legacy: bool | None = None) -> bool:
        chain = self._chain
        evaluator.check_authority(chain.state, self._decode(tx_json, legacy), chain.profile)
        return True

    def _required_signatures(self, tx_json: object, available: object,
                             legacy: bool | None) -> list[str]:
        keys = set(texts(available, "available_keys"))
        state = self._chain.state
        needed: set[str] = set()
        for op in self._decode(tx_json, legacy).operations:
            required = codec.required_authorities(op)
            for name in required.active:
                account = state.accounts.get(name)
                if account is not None:
                    needed.update(k for k, _ in account.active.key_auths if k in keys)
            needed.update(k for k in required.keys if k in keys)
        return sorted(needed)

    def _condenser_required_signatures(self, params: object) -> object:
        tx_json, available = positional(params, 2)
        return self._required_signatures(tx_json, available, True)

    def _database_required_signatures(self, params: object) -> object:
        args = named(params)
        return {"keys": self._required_signatures(field(args, "trx"),
                                                  field(args, "available_keys"), None)}

    def _push(self, tx_json: object) -> codec.DecodedTransaction:
        return self._chain.push_transaction(transaction_arg(tx_json))

    def _broadcast(self, tx_json: object) -> dict[str, Any]:
        self._push(tx_json)
        return {}

    def _broadcast_synchronous(self, params: object) -> object:
        """Push, then wait unlocked until a block includes the tx or it expires."""
        tx_json = positional(params, 1)[0]
        with self._access.lock:
            decoded = self._push(tx_json)
            seen = self._chain.head_num
        deadline = time.monotonic() + self._sync_timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._access.wait_for_block(seen, remaining):
                break
            with self._access.lock:
                chain = self._chain
                for number in range(seen + 1, chain.head_num + 1):
                    b = chain.block(number)
                    for tx in b.transactions if b else ():
                        if tx.txid == decoded.txid:
                            return {"id": tx.txid, "block_num": number,
                                    "trx_num": tx.trx_num, "expired": False}
                seen = chain.head_num
                if chain.head_time >= decoded.expiration:
                    # hived's condenser_api answers an expired wait this way.
                    return {"id": decoded.txid, "block_num": seen, "trx_num": -1,
                            "expired": True}
        raise RpcError(ERROR_DURING_CALL,
                       f"transaction {decoded.txid} was not included within "
                       f"{self._sync_timeout_s:g} s; it stays pending until it expires")


def _member(key: str, value: object) -> dict[str, object]:
    """hived's optional result member: ``{key: value}``, or ``{}`` when there is none."""
    return {} if value is None else {key: value}
