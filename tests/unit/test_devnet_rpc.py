"""The devnet's JSON-RPC dispatcher: hived's shapes, call styles, batches and errors."""

from __future__ import annotations

import copy
import json
import struct
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import beem
import pytest
import requests
from beem.account import Account
from beem.blockchain import Blockchain
from beem.transactionbuilder import TransactionBuilder
from beem.witness import Witness
from beemapi import graphenerpc
from beembase import operations
from beemgraphenebase.chains import known_chains
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.devnet_factory import active_key, make_access, make_chain, node_key, produce

from devnet import codec
from devnet.access import ChainAccess
from devnet.keys import PrivateKey, sign_digest
from devnet.render import format_time as hived_time
from devnet.rpc import Dispatcher, InvalidParamsError
from shared.chains import HIVE, STEEM, ChainProfile

# hived's documented example answers: vendored under tests/data, or beside DESIGN.md.
_REFERENCES = [Path(__file__).resolve().parents[1] / "data" / "hived-api-examples.json",
               Path(__file__).resolve().parents[3] / "shared" / "reference"
               / "hived-api-examples.json"]
_FOUND = next((p for p in _REFERENCES if p.is_file()), None)
EXAMPLES: dict[str, Any] = (
    json.loads(_FOUND.read_text(encoding="utf-8"))["methods"] if _FOUND else {})
needs_reference = pytest.mark.skipif(_FOUND is None, reason="hived-api-examples.json not found")
ALLOWED_CODES = {-32700, -32600, -32601, -32602, -32000, -32003}


# ---- helpers -----------------------------------------------------------------------


def request(method: str, params: object = None, rid: object = 1) -> dict[str, Any]:
    """A JSON-RPC 2.0 request object."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
    if params is not None:
        body["params"] = params
    return body


def send(dispatcher: Dispatcher, body: object) -> Any:
    """Send ``body`` (JSON-encoded unless bytes) and decode the answer."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = dispatcher.handle(raw)
    return None if answer is None else json.loads(answer)


def result(dispatcher: Dispatcher, method: str, params: object = None) -> Any:
    """The result of one call; fails the test on an error answer."""
    answer = send(dispatcher, request(method, params))
    assert "error" not in answer, answer
    return answer["result"]


def error(dispatcher: Dispatcher, method: str, params: object = None) -> dict[str, Any]:
    """The error object of one call; fails the test on a result."""
    answer = send(dispatcher, request(method, params))
    assert "result" not in answer, answer
    err: dict[str, Any] = answer["error"]
    return err


def json_type(value: object) -> str:
    """The JSON type name of a decoded value (bool is not a number)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def assert_same_shape(ours: object, example: object, path: str = "$") -> None:
    """Same field names and JSON types, recursively; arrays compare their items."""
    assert json_type(ours) == json_type(example), f"{path}: {ours!r} vs example {example!r}"
    if isinstance(ours, dict) and isinstance(example, dict):
        assert set(ours) == set(example), (
            f"{path}: missing {sorted(set(example) - set(ours))}, "
            f"extra {sorted(set(ours) - set(example))}")
        for key in example:
            assert_same_shape(ours[key], example[key], f"{path}.{key}")
    elif isinstance(ours, list) and isinstance(example, list) and ours and example:
        if len({json_type(e) for e in example}) > 1:  # a tuple such as [key, weight]
            assert len(ours) == len(example), f"{path}: {ours!r} vs example {example!r}"
            pairs = list(zip(ours, example, strict=True))
        else:
            pairs = [(item, example[0]) for item in ours]
        for i, (item, model) in enumerate(pairs):
            assert_same_shape(item, model, f"{path}[{i}]")


def assert_like_example(ours: object, method: str) -> None:
    """``ours`` has the shape of ``method``'s reference example (when it is available)."""
    if EXAMPLES:
        assert_same_shape(ours, EXAMPLES[method]["result_example"])


def signed_tx(access: ChainAccess, ops: list[Any], keys: list[PrivateKey], *,
              legacy: bool = True, expire_s: int = 60) -> dict[str, Any]:
    """A transaction with fresh TaPoS on the head block, signed for the chain's id."""
    chain = access.chain
    tx: dict[str, Any] = {
        "ref_block_num": chain.head_num & 0xFFFF,
        "ref_block_prefix": struct.unpack_from("<I", bytes.fromhex(chain.head_id), 4)[0],
        "expiration": hived_time(chain.head_time + timedelta(seconds=expire_s)),
        "operations": ops, "extensions": [], "signatures": []}
    digest = codec.decode_transaction(tx, chain.profile, legacy=legacy).digest(
        chain.profile.chain_id)
    tx["signatures"] = [sign_digest(k, digest).hex() for k in keys]
    return tx


def key_change(access: ChainAccess, new_key: str, *, legacy: bool = True) -> list[Any]:
    """A witness_update of alice that keeps her url and props and sets ``new_key``."""
    profile = access.chain.profile
    w = access.chain.state.witnesses["alice"]

    def amount(sats: int) -> Any:
        if legacy:
            return f"{sats // 1000}.{sats % 1000:03d} {profile.core.symbol}"
        return {"amount": str(sats), "precision": 3, "nai": profile.core.nai}

    body = {"owner": "alice", "url": w.url, "block_signing_key": new_key,
            "props": {"account_creation_fee": amount(w.props.account_creation_fee),
                      "maximum_block_size": w.props.maximum_block_size,
                      profile.interest_field: w.props.interest_rate},
            "fee": amount(0)}
    if legacy:
        return [["witness_update", body]]
    return [{"type": "witness_update_operation", "value": body}]


@pytest.fixture
def access() -> ChainAccess:
    """A fresh Hive devnet chain, head at block 5."""
    return make_access(HIVE)


@pytest.fixture
def dispatcher(access: ChainAccess) -> Dispatcher:
    """A dispatcher over ``access`` with a short synchronous-broadcast bound."""
    return Dispatcher(access, {}, sync_timeout_s=2.0)


class Producer:
    """Ticks the chain in a thread, as the server's producer loop does."""

    def __init__(self, access: ChainAccess, period_s: float = 0.01) -> None:
        self._access, self._period_s = access, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            with self._access.lock:
                self._access.notify_block(self._access.chain.tick())

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ---- response shapes -------------------------------------------------------------


READS: list[tuple[str, str, Any]] = [
    ("condenser_api.get_config", "condenser_api.get_config", []),
    ("condenser_api.get_version", "condenser_api.get_version", []),
    ("database_api.get_version", "database_api.get_version", {}),
    ("condenser_api.get_dynamic_global_properties",
     "condenser_api.get_dynamic_global_properties", []),
    ("database_api.get_dynamic_global_properties",
     "database_api.get_dynamic_global_properties", {}),
    ("condenser_api.get_chain_properties", "condenser_api.get_chain_properties", []),
    ("condenser_api.get_hardfork_version", "condenser_api.get_hardfork_version", []),
    ("database_api.get_hardfork_properties", "database_api.get_hardfork_properties", {}),
    ("condenser_api.get_witness_by_account", "condenser_api.get_witness_by_account",
     ["alice"]),
    ("database_api.find_witnesses", "database_api.find_witnesses", {"owners": ["alice"]}),
    ("database_api.list_witnesses", "database_api.list_witnesses",
     {"start": "", "limit": 3, "order": "by_name"}),
    ("database_api.list_witnesses", "database_api.list_witnesses",
     {"start": [2**62, ""], "limit": 3, "order": "by_vote_name"}),
    ("condenser_api.get_witness_schedule", "condenser_api.get_witness_schedule", []),
    ("database_api.get_witness_schedule", "database_api.get_witness_schedule", {}),
    ("condenser_api.get_active_witnesses", "condenser_api.get_active_witnesses", []),
    ("condenser_api.get_accounts", "condenser_api.get_accounts", [["alice"]]),
    ("database_api.find_accounts", "database_api.find_accounts", {"accounts": ["alice"]}),
    ("condenser_api.get_block", "condenser_api.get_block", [3]),
    ("condenser_api.get_block_header", "condenser_api.get_block_header", [3]),
    ("block_api.get_block", "block_api.get_block", {"block_num": 3}),
    ("block_api.get_block_header", "block_api.get_block_header", {"block_num": 3}),
    ("block_api.get_block_range", "block_api.get_block_range",
     {"starting_block_num": 1, "count": 3}),
]


@needs_reference
@pytest.mark.parametrize(("example", "method", "params"), READS,
                         ids=[f"{m}-{i}" for i, (_, m, _) in enumerate(READS)])
def test_read_answers_have_the_reference_shape(dispatcher: Dispatcher, example: str,
                                               method: str, params: Any) -> None:
    """Every read answers with the reference example's field names and JSON types."""
    assert_same_shape(result(dispatcher, method, params), EXAMPLES[example]["result_example"])


@needs_reference
def test_database_config_has_the_mainnet_keys_with_database_types(dispatcher: Dispatcher) -> None:
    """database_api.get_config has condenser's keys, NAI assets and {nai, decimals} symbols."""
    ours = result(dispatcher, "database_api.get_config", {})
    assert set(ours) == set(EXAMPLES["condenser_api.get_config"]["result_example"])
    example = EXAMPLES["database_api.get_config"]["result_example"]
    # The database_api example was taken on a testnet: a testnet-only key and a
    # non-zero initial supply (quoted as a 64-bit number) differ from mainnet.
    testnet_only = {"TESTNET_BLOCK_LIMIT", "HIVE_INIT_SUPPLY", "HIVE_HBD_INIT_SUPPLY"}
    for key in set(example) - testnet_only:
        assert_same_shape(ours[key], example[key], key)


def test_configs_identify_the_chain(dispatcher: Dispatcher) -> None:
    """get_config names the Hive chain id, the STM prefix and the profile's versions."""
    for method, params in (("condenser_api.get_config", []), ("database_api.get_config", {})):
        config = result(dispatcher, method, params)
        assert config["HIVE_CHAIN_ID"] == HIVE.chain_id
        assert config["HIVE_ADDRESS_PREFIX"] == "STM"
        assert config["IS_TEST_NET"] is False
    assert result(dispatcher, "condenser_api.get_config")["HBD_SYMBOL"] == "HBD"
    assert result(dispatcher, "database_api.get_config")["HIVE_SYMBOL"] == {
        "nai": "@@000000021", "decimals": 3}


@pytest.mark.parametrize(("profile", "chain_name", "symbols"), [
    pytest.param(HIVE, "HIVE2", ["HBD", "HIVE", "VESTS"], id="hive"),
    pytest.param(STEEM, "STEEM", ["SBD", "STEEM", "VESTS"], id="steem"),
])
def test_beem_detects_the_chain_from_database_config(profile: ChainProfile, chain_name: str,
                                                     symbols: list[str]) -> None:
    """beem's own get_network reads database_api.get_config as the profile's chain."""
    chains = known_chains
    config = result(Dispatcher(make_access(profile), {}), "database_api.get_config", {})
    rpc = SimpleNamespace(known_chains=chains, version_string_to_int=lambda v: (
        graphenerpc.GrapheneRPC.version_string_to_int(None, v)))
    network = graphenerpc.GrapheneRPC.get_network(rpc, props=copy.deepcopy(config))
    assert network is chains[chain_name]
    assert network["chain_id"] == profile.chain_id
    assert network["prefix"] == "STM"
    assert sorted(a["symbol"] for a in network["chain_assets"]) == symbols


def test_steem_profile_speaks_steemd_names() -> None:
    """The Steem profile answers with STEEM_* config keys and sbd_* field names."""
    dispatcher = Dispatcher(make_access(STEEM), {})
    config = result(dispatcher, "condenser_api.get_config")
    assert config["STEEM_CHAIN_ID"] == "0" * 64
    assert config["SBD_SYMBOL"] == "SBD"
    assert not [k for k in config if k.startswith("HIVE") or "HBD" in k]
    witness = result(dispatcher, "condenser_api.get_witness_by_account", ["alice"])
    assert witness["sbd_exchange_rate"]["base"].endswith(" SBD")
    assert "sbd_interest_rate" in witness["props"]
    assert "last_sbd_exchange_update" in witness
    assert witness["props"]["account_creation_fee"] == "3.000 STEEM"
    props = result(dispatcher, "database_api.get_dynamic_global_properties")
    assert "current_sbd_supply" in props
    assert "total_vesting_fund_steem" in props


def test_votes_are_a_string_in_condenser_and_a_number_in_database_api(
        dispatcher: Dispatcher) -> None:
    """Witness votes follow each API's example: string in condenser, number elsewhere."""
    condenser = result(dispatcher, "condenser_api.get_witness_by_account", ["alice"])
    database = result(dispatcher, "database_api.find_witnesses", {"owners": ["alice"]})
    assert condenser["votes"] == str(database["witnesses"][0]["votes"])


def test_dynamic_global_properties_follow_the_chain(access: ChainAccess,
                                                    dispatcher: Dispatcher) -> None:
    """Head, time, witness, irreversibility and participation are the chain's own."""
    for node in access.chain.nodes.values():
        node.up = False
    produce(access, 30)
    props = result(dispatcher, "condenser_api.get_dynamic_global_properties")
    chain = access.chain
    assert props["head_block_number"] == chain.head_num
    assert props["head_block_id"] == chain.head_id
    assert props["time"] == hived_time(chain.head_time)
    assert props["current_aslot"] == chain.current_aslot
    assert props["current_witness"] == chain.blocks[-1].witness
    assert props["last_irreversible_block_num"] == chain.last_irreversible_block_num
    assert props["participation_count"] < 128  # alice's slots went unfilled
    assert bin(int(props["recent_slots_filled"])).count("1") == props["participation_count"]


def test_witness_schedule_is_padded_to_21_like_hived() -> None:
    """A short schedule is padded with "" to hived's 21 slots; active witnesses are not."""
    small = Dispatcher(ChainAccess(make_chain(HIVE, witness_count=5)), {})
    schedule = result(small, "database_api.get_witness_schedule")
    assert len(schedule["current_shuffled_witnesses"]) == 21
    assert schedule["current_shuffled_witnesses"][5:] == [""] * 16
    assert schedule["num_scheduled_witnesses"] == 5
    assert len(result(small, "condenser_api.get_active_witnesses")) == 5


@pytest.mark.parametrize(("method", "params", "expected"), [
    pytest.param("condenser_api.get_witness_by_account", ["nobody"], None, id="witness-null"),
    pytest.param("database_api.find_witnesses", {"owners": ["nobody"]}, {"witnesses": []},
                 id="find-witnesses-empty"),
    pytest.param("condenser_api.get_accounts", [["nobody"]], [], id="accounts-empty"),
    pytest.param("condenser_api.lookup_account_names", [["nobody"]], [None],
                 id="lookup-null"),
    pytest.param("database_api.find_accounts", {"accounts": ["nobody"]}, {"accounts": []},
                 id="find-accounts-empty"),
    pytest.param("condenser_api.get_block", [10**6], None, id="block-null"),
    pytest.param("block_api.get_block", {"block_num": 10**6}, {}, id="block-api-empty"),
    pytest.param("block_api.get_block_header", {"block_num": 0}, {}, id="header-zero"),
])
def test_unknown_things_answer_like_hived(dispatcher: Dispatcher, method: str, params: Any,
                                          expected: Any) -> None:
    """Unknown accounts, witnesses and blocks are null or left out, not errors."""
    assert result(dispatcher, method, params) == expected


# ---- call styles and batches ---------------------------------------------------------


@pytest.mark.parametrize(("direct", "legacy_call"), [
    pytest.param(request("condenser_api.get_witness_by_account", ["alice"]),
                 request("call", ["condenser_api", "get_witness_by_account", ["alice"]]),
                 id="condenser"),
    pytest.param(request("database_api.find_witnesses", {"owners": ["alice"]}),
                 request("call", ["database_api", "find_witnesses", {"owners": ["alice"]}]),
                 id="database-dict-args"),
    pytest.param(request("condenser_api.get_dynamic_global_properties", []),
                 request("call", ["condenser_api", "get_dynamic_global_properties"]),
                 id="call-without-args"),
    pytest.param(request("database_api.get_config", {}),
                 request("call", ["database_api", "get_config", {}]), id="database-config"),
])
def test_both_call_styles_give_the_same_answer(dispatcher: Dispatcher, direct: Any,
                                               legacy_call: Any) -> None:
    """``api.method`` and ``call [api, method, args]`` reach the same method."""
    assert send(dispatcher, direct) == send(dispatcher, legacy_call)


def test_batch_answers_each_request_and_skips_notifications(dispatcher: Dispatcher) -> None:
    """A batch answers in order, with the ids echoed, and nothing for notifications."""
    notification = request("condenser_api.get_config")
    del notification["id"]
    answers = send(dispatcher, [request("condenser_api.get_hardfork_version", rid="a"),
                                notification, 7,
                                request("condenser_api.get_witness_count", rid=None)])
    assert [a["id"] for a in answers] == ["a", None, None]
    assert answers[0]["result"] == "1.27.0"
    assert answers[1]["error"]["code"] == -32600
    assert answers[2]["result"] == 21


def test_notification_only_bodies_get_no_answer(dispatcher: Dispatcher) -> None:
    """A lone notification or a batch of notifications answers None."""
    note = {"jsonrpc": "2.0", "method": "condenser_api.get_config"}
    assert dispatcher.handle(json.dumps(note).encode()) is None
    assert dispatcher.handle(json.dumps([note, note]).encode()) is None


# ---- protocol errors ---------------------------------------------------------------


@pytest.mark.parametrize(("body", "code"), [
    pytest.param(b"{", -32700, id="truncated"),
    pytest.param(b"\xff\xfe\x00", -32700, id="not-utf8"),
    pytest.param(b"NaN", -32700, id="nan"),
    pytest.param(b"[" * 100_000, -32700, id="deep-nesting"),
    pytest.param(b"[]", -32600, id="empty-batch"),
    pytest.param(b'"text"', -32600, id="not-an-object"),
    pytest.param(b'{"jsonrpc": "1.0", "id": 1, "method": "condenser_api.get_config"}', -32600,
                 id="wrong-version"),
    pytest.param(b'{"jsonrpc": "2.0", "id": 1}', -32600, id="no-method"),
    pytest.param(b'{"jsonrpc": "2.0", "id": [1], "method": "condenser_api.get_config"}',
                 -32600, id="array-id"),
    pytest.param(b'{"jsonrpc": "2.0", "id": true, "method": "condenser_api.get_config"}',
                 -32600, id="boolean-id"),
])
def test_malformed_bodies_get_the_json_rpc_error(dispatcher: Dispatcher, body: bytes,
                                                 code: int) -> None:
    """Unparseable or invalid requests answer -32700 / -32600 with a null or echoed id."""
    answer = send(dispatcher, body)
    assert answer["error"]["code"] == code
    assert answer["jsonrpc"] == "2.0"


@pytest.mark.parametrize(("method", "params", "text"), [
    pytest.param("condenser_api.get_nothing", [], "Could not find method get_nothing",
                 id="method"),
    pytest.param("nothing_api.get_config", [], "Could not find API nothing_api", id="api"),
    pytest.param("get_config", [], "Should be api.method", id="no-api"),
    pytest.param("call", ["condenser_api", "get_nothing", []],
                 "Could not find method get_nothing", id="call-style"),
])
def test_unknown_methods_answer_hived_messages(dispatcher: Dispatcher, method: str,
                                               params: Any, text: str) -> None:
    """Unknown methods answer -32601 with hived's assert text, which beem matches on."""
    err = error(dispatcher, method, params)
    assert err["code"] == -32601
    assert text in err["message"]
    assert err["message"].startswith("Assert Exception:")
    assert err["data"]["name"] == "assert_exception"


@pytest.mark.parametrize(("method", "params"), [
    pytest.param("condenser_api.get_block", ["3"], id="string-block-number"),
    pytest.param("condenser_api.get_block", [], id="missing-argument"),
    pytest.param("condenser_api.get_config", [1], id="extra-argument"),
    pytest.param("condenser_api.get_accounts", {"names": ["alice"]}, id="object-for-array"),
    pytest.param("database_api.find_witnesses", {}, id="missing-field"),
    pytest.param("database_api.find_witnesses", [["alice"]], id="array-for-object"),
    pytest.param("database_api.list_witnesses", {"start": "", "limit": 1001,
                                                 "order": "by_name"}, id="limit"),
    pytest.param("database_api.list_witnesses", {"start": "", "limit": 1,
                                                 "order": "by_nothing"}, id="order"),
    pytest.param("call", "condenser_api.get_config", id="call-not-array"),
    pytest.param("call", ["condenser_api"], id="call-too-short"),
    pytest.param("condenser_api.broadcast_transaction", ["tx"], id="tx-not-object"),
])
def test_bad_params_answer_invalid_params(dispatcher: Dispatcher, method: str,
                                          params: Any) -> None:
    """Params of the wrong shape or type answer -32602."""
    assert error(dispatcher, method, params)["code"] == -32602


def test_unexpected_failure_is_an_internal_error_without_details(access: ChainAccess) -> None:
    """A bug inside a method answers -32603 with no traceback or exception text."""
    def broken(params: object) -> object:
        raise KeyError("secret internals")
    dispatcher = Dispatcher(access, {"devnet.broken": broken})
    raw = dispatcher.handle(json.dumps(request("devnet.broken", {})).encode())
    assert raw is not None
    answer = json.loads(raw)
    assert answer["error"] == {"code": -32603, "message": "Internal error"}
    assert answer["id"] == 1
    assert b"secret" not in raw
    assert b"Traceback" not in raw


# ---- transactions ------------------------------------------------------------------


def test_broadcast_is_included_and_found_in_both_formats(access: ChainAccess,
                                                        dispatcher: Dispatcher) -> None:
    """condenser broadcast answers {} and the tx shows up in blocks in each API's format."""
    new_key = node_key("backup1").public_key()
    tx = signed_tx(access, key_change(access, new_key), [active_key()])
    assert result(dispatcher, "condenser_api.broadcast_transaction", [tx]) == {}
    produce(access, 1)
    number = access.chain.head_num
    condenser = result(dispatcher, "condenser_api.get_block", [number])
    assert condenser["transactions"][0]["operations"][0][0] == "witness_update"
    assert condenser["transactions"][0]["block_num"] == number
    txid = condenser["transaction_ids"][0]
    assert condenser["transactions"][0]["transaction_id"] == txid
    appbase = result(dispatcher, "block_api.get_block", {"block_num": number})["block"]
    op = appbase["transactions"][0]["operations"][0]
    assert op["type"] == "witness_update_operation"
    assert op["value"]["fee"] == {"amount": "0", "precision": 3, "nai": "@@000000021"}
    found = result(dispatcher, "condenser_api.get_transaction", [txid])
    assert (found["transaction_id"], found["block_num"], found["transaction_num"]) == (
        txid, number, 0)
    witness = result(dispatcher, "database_api.find_witnesses", {"owners": ["alice"]})
    assert witness["witnesses"][0]["signing_key"] == new_key


def test_network_broadcast_takes_an_appbase_transaction(access: ChainAccess,
                                                        dispatcher: Dispatcher) -> None:
    """network_broadcast_api.broadcast_transaction takes {"trx": appbase tx} and answers {}."""
    ops = key_change(access, node_key("backup2").public_key(), legacy=False)
    tx = signed_tx(access, ops, [active_key()], legacy=False)
    answer = result(dispatcher, "network_broadcast_api.broadcast_transaction",
                    {"trx": tx, "max_block_age": -1})
    assert_like_example(answer, "network_broadcast_api.broadcast_transaction")
    assert access.chain.pending_count == 1


def test_synchronous_broadcast_waits_for_inclusion(access: ChainAccess,
                                                   dispatcher: Dispatcher) -> None:
    """broadcast_transaction_synchronous answers once a block includes the tx."""
    tx = signed_tx(access, key_change(access, node_key("backup1").public_key()),
                   [active_key()])
    with Producer(access):
        answer = result(dispatcher, "condenser_api.broadcast_transaction_synchronous", [tx])
    assert_like_example(answer, "condenser_api.broadcast_transaction_synchronous")
    assert answer["expired"] is False
    block = access.chain.block(answer["block_num"])
    assert block is not None
    assert block.transactions[answer["trx_num"]].txid == answer["id"]


def test_synchronous_broadcast_waits_without_the_lock(access: ChainAccess) -> None:
    """While a synchronous broadcast waits, other requests still get the chain lock."""
    dispatcher = Dispatcher(access, {}, sync_timeout_s=0.5)
    tx = signed_tx(access, key_change(access, node_key("backup1").public_key()),
                   [active_key()])
    answers: list[Any] = []
    worker = threading.Thread(target=lambda: answers.append(send(dispatcher, request(
        "condenser_api.broadcast_transaction_synchronous", [tx]))))
    worker.start()
    while access.chain.pending_count == 0:  # wait until it was pushed
        threading.Event().wait(0.01)
    assert access.lock.acquire(timeout=0.3)
    access.lock.release()
    worker.join(timeout=5)
    assert answers[0]["error"]["code"] == -32003
    assert "not included" in answers[0]["error"]["message"]


@pytest.mark.parametrize(("method", "wrap"), [
    pytest.param("database_api.verify_authority", lambda tx: {"trx": tx}, id="database"),
    pytest.param("condenser_api.verify_authority", lambda tx: [tx], id="condenser"),
])
def test_verify_authority_accepts_a_properly_signed_tx(
        access: ChainAccess, dispatcher: Dispatcher, method: str,
        wrap: Callable[[Any], Any]) -> None:
    """verify_authority answers valid for the active key's signature."""
    tx = signed_tx(access, key_change(access, node_key("backup1").public_key()),
                   [active_key()])
    answer = result(dispatcher, method, wrap(tx))
    assert answer in ({"valid": True}, True)
    if method.startswith("database_api"):
        assert_like_example(answer, method)


def test_transaction_helpers_have_the_reference_shape(access: ChainAccess,
                                                      dispatcher: Dispatcher) -> None:
    """get_transaction_hex and get_required_signatures answer like the examples."""
    tx = signed_tx(access, key_change(access, node_key("backup1").public_key()),
                   [active_key()])
    db_hex = result(dispatcher, "database_api.get_transaction_hex", {"trx": tx})
    assert_like_example(db_hex, "database_api.get_transaction_hex")
    condenser_hex = result(dispatcher, "condenser_api.get_transaction_hex", [tx])
    assert condenser_hex == db_hex["hex"]
    keys = [active_key().public_key(), node_key("primary").public_key()]
    required = result(dispatcher, "condenser_api.get_required_signatures", [tx, keys])
    assert required == [active_key().public_key()]


@pytest.mark.parametrize(("make_tx", "expected"), [
    pytest.param(lambda a: signed_tx(a, key_change(a, node_key("backup1").public_key()),
                                     [node_key("primary")]),
                 (-32000, "tx_missing_active_auth",
                  "missing required active authority:Missing Active Authority alice"),
                 id="wrong-key"),
    pytest.param(lambda a: {**signed_tx(a, key_change(a, node_key("backup1").public_key()),
                                        [active_key()]), "ref_block_prefix": 1},
                 (-32000, "transaction_tapos_exception", "transaction tapos exception:"),
                 id="bad-tapos"),
    pytest.param(lambda a: {**signed_tx(a, key_change(a, node_key("backup1").public_key()),
                                        [active_key()]),
                            "operations": [["witness_update", {"owner": "alice", "url": ""}]]},
                 (-32003, "assert_exception", "Assert Exception:"), id="validate-assert"),
])
def test_rejected_transactions_answer_hived_errors(
        access: ChainAccess, dispatcher: Dispatcher, make_tx: Callable[[ChainAccess], Any],
        expected: tuple[int, str, str]) -> None:
    """A refused transaction answers hived's code, message and fc data, and stays out."""
    code, name, text = expected
    err = error(dispatcher, "condenser_api.broadcast_transaction", [make_tx(access)])
    assert err["code"] == code
    assert err["message"].startswith(text)
    assert err["data"]["name"] == name
    assert isinstance(err["data"]["code"], int)
    assert isinstance(err["data"]["message"], str)
    assert access.chain.pending_count == 0


def test_unknown_transaction_is_reported_like_hived(dispatcher: Dispatcher) -> None:
    """get_transaction of an unknown id answers "Unknown Transaction", which beem matches."""
    err = error(dispatcher, "condenser_api.get_transaction", ["00" * 20])
    assert "Unknown Transaction" in err["message"]


# ---- extra (control) methods ---------------------------------------------------------


def test_extra_methods_get_params_and_run_without_the_lock(access: ChainAccess) -> None:
    """devnet.* methods get the raw params and run while the chain lock is free."""
    seen: list[Any] = []

    def status(params: object) -> object:
        got: list[bool] = []

        def probe() -> None:
            got.append(access.lock.acquire(timeout=1))
            if got[-1]:
                access.lock.release()

        prober = threading.Thread(target=probe)
        prober.start()
        prober.join()
        seen.append((params, got[0]))
        return {"ok": True}

    dispatcher = Dispatcher(access, {"devnet.status": status})
    assert result(dispatcher, "devnet.status", {"name": "primary"}) == {"ok": True}
    assert send(dispatcher, request("call", ["devnet", "status", {}]))["result"] == {"ok": True}
    assert seen == [({"name": "primary"}, True), ({}, True)]
    assert "devnet.status" in result(dispatcher, "jsonrpc.get_methods", {})


def test_extra_method_param_errors_answer_invalid_params(access: ChainAccess) -> None:
    """An extra method raising InvalidParamsError answers -32602 with its message."""
    def stop_node(params: object) -> object:
        raise InvalidParamsError("unknown node 'x'")

    err = error(Dispatcher(access, {"devnet.stop_node": stop_node}), "devnet.stop_node",
                {"name": "x"})
    assert err["code"] == -32602
    assert "unknown node 'x'" in err["message"]


# ---- garbage never crashes -------------------------------------------------------------


def assert_error_response(answer: Any) -> None:
    """``answer`` is a JSON-RPC 2.0 error object (or a list of them) with allowed codes."""
    for item in answer if isinstance(answer, list) else [answer]:
        assert item["jsonrpc"] == "2.0"
        assert "result" not in item
        assert item["error"]["code"] in ALLOWED_CODES
        assert isinstance(item["error"]["message"], str)


@pytest.fixture(scope="module")
def shared_dispatcher() -> Dispatcher:
    """One dispatcher for the property tests (read-only or rejected calls only)."""
    return Dispatcher(make_access(HIVE), {}, sync_timeout_s=0.1)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_garbage_bodies_answer_a_json_rpc_error(shared_dispatcher: Dispatcher,
                                                body: bytes) -> None:
    """Random bytes never crash the dispatcher and never answer anything but an error."""
    raw = shared_dispatcher.handle(body)
    if raw is None:  # only a batch made entirely of notifications answers nothing
        return
    assert b"Traceback" not in raw
    assert_error_response(json.loads(raw))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
METHODS = sorted(Dispatcher(make_access(HIVE), {})._api.methods)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS) | st.text(max_size=30), params=JSON,
       rid=st.none() | st.integers() | st.text(max_size=5))
def test_random_params_to_every_method_never_fail_internally(
        shared_dispatcher: Dispatcher, method: str, params: Any, rid: Any) -> None:
    """Any params to any method answer a result or a non-internal error, with the id."""
    answer = send(shared_dispatcher, {"jsonrpc": "2.0", "method": method, "params": params,
                                      "id": rid})
    assert answer["id"] == rid
    assert ("result" in answer) != ("error" in answer)
    if "error" in answer:
        assert_error_response(answer)


# ---- beem 0.24.26 against the dispatcher, without sockets --------------------------------


class DispatcherAdapter(requests.adapters.BaseAdapter):
    """A requests transport that hands each POST body straight to ``Dispatcher.handle``."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        super().__init__()
        self._dispatcher = dispatcher
        self.methods: list[str] = []
        self.errors: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Answer ``request`` in-process and record what beem asked for."""
        body = request.body or b""
        raw = body if isinstance(body, bytes) else body.encode()
        for item in _as_list(json.loads(raw)):
            params = item.get("params")
            self.methods.append(item["method"] if item["method"] != "call"
                                else f"{params[0]}.{params[1]}")
        answer = self._dispatcher.handle(raw) or b""
        self.errors += [a["error"]["message"] for a in _as_list(json.loads(answer or b"[]"))
                        if "error" in a]
        response = requests.Response()
        response.status_code, response._content = 200, answer
        response.headers["Content-Type"] = "application/json"
        response.url, response.request = request.url or "", request
        return response

    def close(self) -> None:
        """Nothing to release."""


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.fixture
def beem_transport(monkeypatch: pytest.MonkeyPatch) -> Callable[[Dispatcher], DispatcherAdapter]:
    """Route beem's shared requests session to a dispatcher."""

    def install(dispatcher: Dispatcher) -> DispatcherAdapter:
        adapter = DispatcherAdapter(dispatcher)
        session = requests.Session()
        session.mount("http://", adapter)
        monkeypatch.setattr(graphenerpc.SessionInstance, "instance", session)
        return adapter

    return install


@pytest.mark.parametrize(("profile", "rpc_condenser", "chain_id"), [
    pytest.param(HIVE, False, HIVE.chain_id, id="hive-appbase"),
    pytest.param(STEEM, False, STEEM.chain_id, id="steem-appbase"),
    pytest.param(STEEM, True, STEEM.chain_id, id="steem-condenser"),
    # condenser_api.get_config names symbols as strings (as hived does), which beem's
    # chain detection cannot read: it falls back to its "HIVE" entry, chain id 000…0.
    pytest.param(HIVE, True, "0" * 64, id="hive-condenser-falls-back"),
])
def test_beem_connects_reads_and_sees_the_chain(
        beem_transport: Callable[[Dispatcher], DispatcherAdapter], profile: ChainProfile,
        rpc_condenser: bool, chain_id: str) -> None:
    """beem connects, reads alice's witness and account and the current block."""
    access = make_access(profile, prefill_blocks=30)
    adapter = beem_transport(Dispatcher(access, {}))
    chain = (beem.Hive if profile is HIVE else beem.Steem)(
        node=["http://devnet/"], keys=[active_key().wif()], num_retries=0, num_retries_call=1,
        use_condenser=rpc_condenser)
    assert chain.chain_params["chain_id"] == chain_id
    assert chain.prefix == "STM"
    witness = Witness("alice", blockchain_instance=chain)
    assert witness["signing_key"] == access.chain.state.witnesses["alice"].signing_key
    assert str(Account("alice", blockchain_instance=chain)["balance"]).endswith(
        profile.core.symbol)
    assert Blockchain(blockchain_instance=chain).get_current_block().block_num == (
        access.chain.last_irreversible_block_num)
    assert adapter.errors == []
    assert set(adapter.methods) <= set(result(Dispatcher(access, {}), "jsonrpc.get_methods"))


def test_beem_switches_the_key_with_both_broadcasts(
        beem_transport: Callable[[Dispatcher], DispatcherAdapter]) -> None:
    """beem's witness_update (async) and witness_set_properties (blocking) both land."""
    access = make_access(HIVE, prefill_blocks=30)
    adapter = beem_transport(Dispatcher(access, {}, sync_timeout_s=5.0))
    hive = beem.Hive(node=["http://devnet/"], keys=[active_key().wif()], num_retries=0,
                     num_retries_call=1)
    w = access.chain.state.witnesses["alice"]
    backup1, backup2 = node_key("backup1"), node_key("backup2")
    builder = TransactionBuilder(blockchain_instance=hive)
    builder.appendOps(operations.Witness_update(**{
        "owner": "alice", "url": w.url, "block_signing_key": backup1.public_key(),
        "props": {"account_creation_fee": "3.000 HIVE", "maximum_block_size": 65536,
                  "hbd_interest_rate": w.props.interest_rate},
        "fee": "0.000 HIVE", "prefix": "STM"}))
    builder.appendWif(active_key().wif())
    builder.sign()
    builder.broadcast()
    produce(access, 1)
    assert access.chain.state.witnesses["alice"].signing_key == backup1.public_key()
    hive.blocking = "head"
    with Producer(access):
        answer = hive.witness_set_properties(backup1.wif(), "alice",
                                             {"new_signing_key": backup2.public_key()})
    assert answer["expired"] is False
    assert access.chain.state.witnesses["alice"].signing_key == backup2.public_key()
    assert adapter.errors == []
    assert "condenser_api.broadcast_transaction_synchronous" in adapter.methods
