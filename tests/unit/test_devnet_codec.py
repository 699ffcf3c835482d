"""The devnet's transaction codec against beem's offline serializer and hived's rules.

beem builds and signs the reference transactions here (offline, chain id always
explicit); the codec must pack, hash and recover exactly as hived would.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from beembase import operations
from beembase.signedtransactions import Signed_Transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devnet import codec
from devnet.errors import InvalidKeyError, InvalidSignatureError, TxRejectedError
from devnet.keys import PrivateKey, public_key_to_str, recover_public_key, sign_digest
from devnet.ops import pack_bytes, pack_string, varint
from shared.chains import HIVE, NULL_KEY, STEEM, ChainProfile

KEY = PrivateKey.from_seed("codec:signing")
NEW_KEY = PrivateKey.from_seed("codec:backup")
EXPIRATION = "2026-01-01T00:00:00"
PROFILES = [pytest.param(HIVE, id="hive"), pytest.param(STEEM, id="steem")]
FIXTURES_OK = [HealthCheck.function_scoped_fixture]  # conftest's autouse fixtures are inert here


def witness_update(profile: ChainProfile, **changes: Any) -> dict[str, Any]:
    """beem-style witness_update arguments for ``profile``."""
    sym = profile.core.symbol
    args: dict[str, Any] = {
        "owner": "alice", "url": "https://alice.example", "block_signing_key": NEW_KEY.public_key(),
        "props": {"account_creation_fee": f"3.000 {sym}", "maximum_block_size": 65536,
                  profile.interest_field: 0},
        "fee": f"0.000 {sym}", "prefix": "STM"}
    args.update(changes)
    return args


def set_properties(profile: ChainProfile, props: list[list[Any]] | None = None) -> dict[str, Any]:
    """beem-style witness_set_properties arguments switching to NEW_KEY."""
    return {"owner": "alice", "prefix": "STM", "props": props or [
        ["key", KEY.public_key()], ["new_signing_key", NEW_KEY.public_key()],
        ["url", "https://alice.example"], ["maximum_block_size", 131072],
        [profile.interest_field, 1500], ["account_creation_fee", f"3.000 {profile.core.symbol}"]]}


BUILDERS: dict[str, Callable[[ChainProfile], Any]] = {
    "witness_update": lambda p: operations.Witness_update(**witness_update(p)),
    "witness_set_properties": lambda p: operations.Witness_set_properties(**set_properties(p)),
    "transfer": lambda p: operations.Transfer(**{"from": "alice", "to": "bob", "memo": "hi",
                                                  "amount": f"1.500 {p.debt.symbol}",
                                                  "prefix": "STM"}),
    "account_witness_vote": lambda p: operations.Account_witness_vote(
        account="alice", witness="bob", approve=True),
}


def beem_tx(op: Any, chain_id: str, key: PrivateKey = KEY) -> tuple[Signed_Transaction, Any]:
    """A transaction signed by beem for ``chain_id``, and its JSON as beem would send it."""
    tx = Signed_Transaction(ref_block_num=1234, ref_block_prefix=0xDEADBEEF,
                            expiration=EXPIRATION, operations=[operations.Operation(op)])
    tx.sign([key.wif()], chain={"chain_id": chain_id, "prefix": "STM"})
    return tx, json.loads(json.dumps(tx.json()))


def unsigned_bytes(tx: Signed_Transaction) -> bytes:
    """beem's serialization of ``tx`` without its signatures field (what its ``id`` hashes)."""
    unsigned = copy.deepcopy(tx)
    unsigned.data.pop("signatures")
    return bytes(unsigned)


def tx_json(*ops: Any) -> dict[str, Any]:
    """An unsigned transaction JSON around raw operation JSON."""
    return {"ref_block_num": 1, "ref_block_prefix": 2, "expiration": EXPIRATION,
            "operations": list(ops), "extensions": [], "signatures": []}


def wu_json(profile: ChainProfile, **changes: Any) -> list[Any]:
    """A legacy witness_update operation JSON."""
    value = witness_update(profile, **changes)
    del value["prefix"]
    return ["witness_update", value]


# ---- byte-exact agreement with beem ------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_packs_hashes_and_recovers_like_beem(profile: ChainProfile, kind: str) -> None:
    """Packed bytes, digest, txid and recovered signer all equal beem's for each op."""
    tx, sent = beem_tx(BUILDERS[kind](profile), profile.chain_id)
    decoded = codec.decode_transaction(sent, profile)
    assert decoded.packed_signed == bytes(tx)
    assert decoded.packed == unsigned_bytes(tx)
    assert decoded.digest(profile.chain_id) == tx.digest
    assert decoded.txid == tx.id
    assert codec.transaction_hex(decoded) == bytes(tx).hex()
    assert codec.recover_signers(decoded, profile.chain_id) == {KEY.public_key()}


@pytest.mark.parametrize("profile", PROFILES)
def test_decoded_witness_props_are_typed(profile: ChainProfile) -> None:
    """witness_set_properties values come out decoded for the chain to apply."""
    _, sent = beem_tx(BUILDERS["witness_set_properties"](profile), profile.chain_id)
    op = codec.decode_transaction(sent, profile).operations[0]
    assert isinstance(op, codec.WitnessSetProperties)
    assert (op.owner, op.key, op.new_signing_key) == ("alice", KEY.public_key(),
                                                      NEW_KEY.public_key())
    assert (op.url, op.maximum_block_size, op.interest_rate, op.account_creation_fee) == (
        "https://alice.example", 131072, 1500, 3000)
    assert op.exchange_rate is None
    assert codec.required_authorities(op) == codec.RequiredAuthorities(
        keys=frozenset({KEY.public_key()}))


def test_witness_update_needs_the_owner_active_authority() -> None:
    """witness_update and transfer name the account whose active authority must sign."""
    _, sent = beem_tx(BUILDERS["witness_update"](HIVE), HIVE.chain_id)
    op = codec.decode_transaction(sent, HIVE).operations[0]
    assert isinstance(op, codec.WitnessUpdate)
    assert op.props == codec.ChainProperties(3000, 65536, 0)
    assert codec.required_authorities(op).active == {"alice"}
    _, sent = beem_tx(BUILDERS["transfer"](HIVE), HIVE.chain_id)
    assert codec.required_authorities(codec.decode_transaction(sent, HIVE).operations[0]) == (
        codec.RequiredAuthorities(active=frozenset({"alice"})))


@pytest.mark.parametrize("profile", PROFILES)
def test_signature_for_another_chain_recovers_another_key(profile: ChainProfile) -> None:
    """A transaction signed with the other chain's id recovers a key that is not the signer."""
    other = STEEM if profile is HIVE else HIVE
    _, sent = beem_tx(BUILDERS["witness_update"](profile), other.chain_id)
    signers = codec.recover_signers(codec.decode_transaction(sent, profile), profile.chain_id)
    assert len(signers) == 1
    assert KEY.public_key() not in signers


def test_foreign_interest_field_is_ignored_and_breaks_the_signature() -> None:
    """beem packs sbd_interest_rate on Hive; hived ignores the field, so the signer is lost."""
    args = witness_update(HIVE)
    args["props"] = {"account_creation_fee": "3.000 HIVE", "maximum_block_size": 65536,
                     "sbd_interest_rate": 0}
    tx, sent = beem_tx(operations.Witness_update(**args), HIVE.chain_id)
    decoded = codec.decode_transaction(sent, HIVE)
    op = decoded.operations[0]
    assert isinstance(op, codec.WitnessUpdate)
    assert op.props.interest_rate == 1000  # HIVE_DEFAULT_HBD_INTEREST_RATE
    assert decoded.packed != unsigned_bytes(tx)
    assert KEY.public_key() not in codec.recover_signers(decoded, HIVE.chain_id)


@pytest.mark.parametrize("profile", PROFILES)
def test_appbase_shape_packs_like_legacy(profile: ChainProfile) -> None:
    """The appbase rendering ({type, value}, NAI assets) decodes to the same bytes."""
    for build in BUILDERS.values():
        _, sent = beem_tx(build(profile), profile.chain_id)
        legacy = codec.decode_transaction(sent, profile)
        appbase_json = codec.transaction_json(legacy, profile, legacy=False)
        appbase = codec.decode_transaction(appbase_json, profile)
        assert (appbase.packed_signed, appbase.legacy) == (legacy.packed_signed, False)
        assert codec.transaction_json(appbase, profile, legacy=True) == sent
        with pytest.raises(TxRejectedError):
            codec.decode_transaction(appbase_json, profile, legacy=True)


def test_pre_hf24_symbols_parse_on_hive_only() -> None:
    """Hive still reads STEEM and SBD as HIVE and HBD; Steem does not know HIVE."""
    on_hive = codec.decode_transaction(tx_json(wu_json(
        HIVE, fee="0.000 STEEM", props={"account_creation_fee": "3.000 STEEM"})), HIVE)
    assert on_hive.packed == codec.decode_transaction(tx_json(wu_json(
        HIVE, props={"account_creation_fee": "3.000 HIVE"})), HIVE).packed
    with pytest.raises(TxRejectedError, match="symbol"):
        codec.decode_transaction(tx_json(wu_json(STEEM, fee="0.000 HIVE")), STEEM)


# ---- witness_set_properties order and names ------------------------------------------------


def test_unsorted_props_are_sorted_as_hived_does() -> None:
    """Props sent out of order are sorted like hived's flat_map, so beem's signature holds."""
    _, sent = beem_tx(BUILDERS["witness_set_properties"](HIVE), HIVE.chain_id)
    sent["operations"][0][1]["props"].reverse()
    decoded = codec.decode_transaction(sent, HIVE)
    assert codec.recover_signers(decoded, HIVE.chain_id) == {KEY.public_key()}


def test_props_signed_unsorted_are_refused() -> None:
    """A client that signs its props unsorted loses its signer: hived signs the sorted map."""
    props = [("url", pack_string("https://x")), ("key", KEY.public_key_bytes())]
    body = (varint(42) + pack_string("alice") + varint(len(props))
            + b"".join(pack_string(k) + pack_bytes(v) for k, v in props) + varint(0))
    expiration = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    packed = struct.pack("<HII", 1, 2, expiration) + varint(1) + body + varint(0)
    signature = sign_digest(KEY, hashlib.sha256(bytes.fromhex(HIVE.chain_id) + packed).digest())
    sent = tx_json(["witness_set_properties", {
        "owner": "alice", "props": [[k, v.hex()] for k, v in props], "extensions": []}])
    sent["signatures"] = [signature.hex()]
    decoded = codec.decode_transaction(sent, HIVE)
    assert decoded.packed != packed
    assert KEY.public_key() not in codec.recover_signers(decoded, HIVE.chain_id)


def test_duplicate_prop_keeps_the_first_value() -> None:
    """A prop named twice keeps its first value, as hived's flat_map insert does."""
    sent = tx_json(["witness_set_properties", {"owner": "alice", "props": [
        ["key", KEY.public_key_bytes().hex()], ["maximum_block_size", "00000200"],
        ["maximum_block_size", "00000300"]], "extensions": []}])
    op = codec.decode_transaction(sent, HIVE).operations[0]
    assert isinstance(op, codec.WitnessSetProperties)
    assert op.maximum_block_size == 0x20000
    assert [k for k, _ in op.props] == ["key", "maximum_block_size"]


def _props_tx(*extra: tuple[str, str]) -> dict[str, Any]:
    """A witness_set_properties transaction with the current key and ``extra`` props."""
    props = [["key", KEY.public_key_bytes().hex()], *[list(p) for p in extra]]
    return tx_json(["witness_set_properties", {"owner": "alice", "props": props,
                                               "extensions": []}])


def test_interest_names_follow_hived() -> None:
    """Hive reads sbd_ before hbd_ interest; Steem ignores hbd_ as an unknown prop."""
    both = _props_tx(("hbd_interest_rate", "0100"), ("sbd_interest_rate", "0200"))
    op = codec.decode_transaction(both, HIVE).operations[0]
    assert isinstance(op, codec.WitnessSetProperties)
    assert op.interest_rate == 2
    op = codec.decode_transaction(_props_tx(("hbd_interest_rate", "0100")),
                                  HIVE).operations[0]
    assert isinstance(op, codec.WitnessSetProperties)
    assert op.interest_rate == 1
    op = codec.decode_transaction(_props_tx(("hbd_interest_rate", "0100")),
                                  STEEM).operations[0]
    assert isinstance(op, codec.WitnessSetProperties)
    assert op.interest_rate is None
    assert ("hbd_interest_rate", b"\x01\x00") in op.props


def test_unknown_prop_is_kept_and_ignored() -> None:
    """An unknown prop is signed and packed but changes nothing, as in hived."""
    op = codec.decode_transaction(_props_tx(("colour", "ff")), HIVE).operations[0]
    assert isinstance(op, codec.WitnessSetProperties)
    assert ("colour", b"\xff") in op.props
    assert op.url is op.new_signing_key is None


def test_exchange_rate_and_subsidies_decode() -> None:
    """The price feed and account subsidy props decode to numbers."""
    base = struct.pack("<qB", 250, 3) + b"SBD".ljust(7, b"\0")
    quote = struct.pack("<qB", 1000, 3) + b"STEEM".ljust(7, b"\0")
    op = codec.decode_transaction(_props_tx(
        ("account_subsidy_budget", struct.pack("<i", 797).hex()),
        ("account_subsidy_decay", struct.pack("<I", 347321).hex()),
        ("hbd_exchange_rate", (base + quote).hex())), HIVE).operations[0]
    assert isinstance(op, codec.WitnessSetProperties)
    assert (op.exchange_rate, op.account_subsidy_budget, op.account_subsidy_decay) == (
        (250, 1000), 797, 347321)


@pytest.mark.parametrize(("name", "value"), [
    pytest.param("maximum_block_size", "0000", id="short-value"),
    pytest.param("maximum_block_size", "00000000", id="block-too-small"),
    pytest.param("new_signing_key", "02" * 10, id="short-key"),
    pytest.param("account_creation_fee", (struct.pack("<qB", 3000, 3) + b"SBD".ljust(7, b"\0"))
                 .hex(), id="fee-in-debt"),
    pytest.param("account_creation_fee", (struct.pack("<qB", 3000, 3) + b"HIVE".ljust(7, b"\0"))
                 .hex(), id="display-symbol-bytes"),
    pytest.param("sbd_interest_rate", "1127", id="interest-over-100pc"),
    pytest.param("url", "00", id="empty-url"),
    pytest.param("url", pack_string("x" * 2049).hex(), id="url-2049"),
    pytest.param("account_subsidy_decay", "01000000", id="decay-too-small"),
    pytest.param("maximum_block_size", "zz", id="not-hex"),
    pytest.param("maximum_block_size", "000", id="odd-hex"),
])
def test_bad_prop_value_is_refused(name: str, value: str) -> None:
    """A prop value that does not unpack or is out of hived's range is refused."""
    with pytest.raises(TxRejectedError):
        codec.decode_transaction(_props_tx((name, value)), HIVE)


def test_props_without_key_are_refused() -> None:
    """witness_set_properties must name the current signing key."""
    sent = tx_json(["witness_set_properties", {"owner": "alice", "props": [
        ["url", pack_string("https://x").hex()]]}])
    with pytest.raises(TxRejectedError, match="No signing key provided"):
        codec.decode_transaction(sent, HIVE)


# ---- witness_update validate() --------------------------------------------------------------


def test_url_length_limits() -> None:
    """url must be 1..2048 bytes: 2048 passes, empty and 2049 are refused."""
    codec.decode_transaction(tx_json(wu_json(HIVE, url="x" * 2048)), HIVE)
    for url in ("", "x" * 2049, "é" * 1025):
        with pytest.raises(TxRejectedError, match="URL"):
            codec.decode_transaction(tx_json(wu_json(HIVE, url=url)), HIVE)


@pytest.mark.parametrize(("changes", "match"), [
    pytest.param({"fee": "0.000 HBD"}, "fee must be in HIVE", id="fee-in-hbd"),
    pytest.param({"fee": "-1.000 HIVE"}, "Fee cannot be negative", id="negative-fee"),
    pytest.param({"fee": "0 HIVE"}, "decimal places", id="fee-without-decimals"),
    pytest.param({"fee": "0.000 hive"}, "symbol", id="lowercase-symbol"),
    pytest.param({"props": {"account_creation_fee": "3.000 HBD"}}, "account_creation_fee",
                 id="creation-fee-in-hbd"),
    pytest.param({"props": {"account_creation_fee": "0.000 HIVE"}}, "minimum", id="zero-fee"),
    pytest.param({"props": {"maximum_block_size": 65535}}, "block size", id="small-block"),
    pytest.param({"props": {"hbd_interest_rate": 10001}}, "100%", id="interest-over-100pc"),
    pytest.param({"props": {"hbd_interest_rate": 70000}}, "16-bit", id="interest-over-uint16"),
    pytest.param({"owner": "Alice"}, "Account name", id="bad-owner"),
    pytest.param({"owner": "ab"}, "Account name", id="short-owner"),
])
def test_invalid_witness_update_is_refused(changes: dict[str, Any], match: str) -> None:
    """witness_update fails hived's validate() on bad fee, props, url or owner."""
    with pytest.raises(TxRejectedError, match=match) as raised:
        codec.decode_transaction(tx_json(wu_json(HIVE, **changes)), HIVE)
    assert raised.value.code == -32003


def test_negative_nai_amount_is_refused() -> None:
    """An appbase asset with a negative amount is refused while parsing, as hived does."""
    sent = tx_json({"type": "witness_update_operation", "value": {
        "owner": "alice", "url": "u", "block_signing_key": KEY.public_key(),
        "props": {}, "fee": {"amount": "-1", "precision": 3, "nai": "@@000000021"}}},
    )
    with pytest.raises(TxRejectedError, match="negative"):
        codec.decode_transaction(sent, HIVE)


def test_bad_key_checksum_is_refused() -> None:
    """A block_signing_key with a broken base58 checksum is refused."""
    bad = KEY.public_key()[:-1] + ("2" if KEY.public_key()[-1] != "2" else "3")
    with pytest.raises(InvalidKeyError):
        codec.decode_transaction(tx_json(wu_json(HIVE, block_signing_key=bad)), HIVE)


def test_missing_fields_take_hived_defaults() -> None:
    """Like fc's from_variant, missing members default: no key means the null key."""
    value = {"owner": "alice", "url": "https://x"}
    op = codec.decode_transaction(tx_json(["witness_update", value]), HIVE).operations[0]
    assert isinstance(op, codec.WitnessUpdate)
    assert op.block_signing_key == NULL_KEY
    assert op.props == codec.ChainProperties(1, 131072, 1000)
    assert op.fee == codec.Amount(0, HIVE.core)
    with pytest.raises(TxRejectedError, match="Account name"):
        codec.decode_transaction(tx_json(["witness_update", {"url": "u"}]), HIVE)


@pytest.mark.parametrize("op", [
    pytest.param(["comment", {}], id="unsupported-op"),
    pytest.param(["witness_update_operation", {}], id="appbase-name-in-legacy"),
    pytest.param(["nonsense", {}], id="unknown-name"),
    pytest.param([9999, {}], id="unknown-id"),
])
def test_unknown_operation_is_refused(op: list[Any]) -> None:
    """An operation the devnet does not model is refused, never skipped."""
    with pytest.raises(TxRejectedError, match="not supported"):
        codec.decode_transaction(tx_json(op), HIVE)


@pytest.mark.parametrize(("field", "value"), [
    pytest.param("ref_block_num", "9" * 5000, id="huge-numeric-string"),
    pytest.param("ref_block_num", 70000, id="over-uint16"),
    pytest.param("ref_block_prefix", -1, id="negative"),
    pytest.param("expiration", "2026-01-01 00:00:00", id="no-T"),
    pytest.param("expiration", "2200-01-01T00:00:00", id="past-uint32"),
    pytest.param("signatures", ["00" * 64], id="short-signature"),
    pytest.param("extensions", [[0, {}]], id="extension"),
])
def test_bad_transaction_field_is_refused(field: str, value: object) -> None:
    """Out-of-range or malformed transaction fields are refused with TxRejectedError."""
    sent = tx_json(wu_json(HIVE))
    sent[field] = value
    with pytest.raises(TxRejectedError):
        codec.decode_transaction(sent, HIVE)


def test_numeric_strings_convert_like_fc() -> None:
    """fc converts a numeric string where a number is expected, so hived accepts it."""
    sent = tx_json(wu_json(HIVE))
    sent["ref_block_num"] = "1"
    assert codec.decode_transaction(sent, HIVE).ref_block_num == 1


def test_huge_fee_string_is_refused() -> None:
    """An asset amount with thousands of digits is refused, not a crash."""
    with pytest.raises(TxRejectedError):
        codec.decode_transaction(tx_json(wu_json(HIVE, fee="9" * 5000 + ".000 HIVE")), HIVE)


def test_transaction_needs_an_operation() -> None:
    """hived's transaction::validate refuses a transaction without operations."""
    with pytest.raises(TxRejectedError, match="at least one operation"):
        codec.decode_transaction(tx_json(), HIVE)


# ---- signatures -----------------------------------------------------------------------------


def test_duplicate_signature_is_refused() -> None:
    """Two signatures by one key are refused, as hived's get_signature_keys does."""
    _, sent = beem_tx(BUILDERS["witness_update"](HIVE), HIVE.chain_id)
    sent["signatures"] *= 2
    with pytest.raises(TxRejectedError, match="Duplicate signature"):
        codec.recover_signers(codec.decode_transaction(sent, HIVE), HIVE.chain_id)


def test_non_canonical_signature_is_refused() -> None:
    """A high-s twin of a valid signature fails recovery with a typed error."""
    _, sent = beem_tx(BUILDERS["witness_update"](HIVE), HIVE.chain_id)
    signature = bytes.fromhex(sent["signatures"][0])
    order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = (order - int.from_bytes(signature[33:], "big")).to_bytes(32, "big")
    sent["signatures"] = [(bytes([signature[0] ^ 1]) + signature[1:33] + high_s).hex()]
    with pytest.raises(InvalidSignatureError, match="canonical"):
        codec.recover_signers(codec.decode_transaction(sent, HIVE), HIVE.chain_id)


def test_txid_ignores_signatures() -> None:
    """The txid is over the unsigned transaction: adding a signature keeps it."""
    tx, sent = beem_tx(BUILDERS["witness_update"](HIVE), HIVE.chain_id)
    bare = dict(sent, signatures=[])
    assert codec.decode_transaction(bare, HIVE).txid == tx.id


# ---- blocks ---------------------------------------------------------------------------------


def test_block_one_of_mainnet_has_hived_id_and_signer() -> None:
    """Block 1 of the Hive/Steem mainnet (from hived's API docs) gets its real id and key."""
    header = codec.pack_block_header("00" * 20, datetime(2016, 3, 24, 16, 5, tzinfo=UTC),
                                     "initminer", "00" * 20)
    signature = bytes.fromhex(
        "204f8ad56a8f5cf722a02b035a61b500aa59b9519b2c33c77a80c0a714680a5a"
        "5a7a340d909d19996613c5e4ae92146b9add8a7a663eef37d837ef881477313043")
    assert codec.block_id(header, 1, signature) == "0000000109833ce528d5bbfb3f6225b39ee10086"
    signer = recover_public_key(hashlib.sha256(header).digest(), signature)
    assert public_key_to_str(signer) == "STM8GC13uCZbP44HzMLV6zPZGwVQ8Nt4Kji8PapsPiNq1BK153XTX"


def _reference_merkle(leaves: list[bytes]) -> str:
    """hived's calculate_merkle_root, written out independently for the test."""
    level = [hashlib.sha256(leaf).digest() for leaf in leaves]
    while len(level) > 1:
        nxt = [hashlib.sha256(level[i] + level[i + 1]).digest()
               for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return hashlib.new("ripemd160", level[0]).hexdigest()


def test_merkle_root_matches_hived_construction() -> None:
    """Zero transactions give zeros; 1..5 follow hived's pairwise tree with odd carry."""
    assert codec.transaction_merkle_root([]) == "0" * 40
    decoded = []
    for i in range(5):
        value = witness_update(HIVE, url=f"https://{i}.example")
        _, sent = beem_tx(operations.Witness_update(**value), HIVE.chain_id)
        decoded.append(codec.decode_transaction(sent, HIVE))
        assert codec.transaction_merkle_root(decoded) == _reference_merkle(
            [d.packed_signed for d in decoded])


# ---- robustness -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                               max_size=4),
    max_leaves=20)


@given(json_values)
@settings(max_examples=200, deadline=None)
def test_random_json_only_ever_raises_tx_rejected(value: object) -> None:
    """Any JSON value is either a transaction or a TxRejectedError, never another error."""
    for profile in (HIVE, STEEM):
        with contextlib.suppress(TxRejectedError):
            codec.decode_transaction(value, profile)


FIELD_PATHS = [
    ("ref_block_num",), ("expiration",), ("signatures",), ("extensions",), ("operations",),
    ("operations", 0), ("operations", 0, "name"), ("operations", 0, "body"),
    *[("operations", 0, "body", f) for f in ("owner", "url", "block_signing_key", "fee", "props")],
    *[("operations", 0, "body", "props", f) for f in (
        "account_creation_fee", "maximum_block_size", "hbd_interest_rate")],
]


def _step(step: Any, appbase: bool) -> Any:
    """Translate a path step: an operation's name/body are [0]/[1] or type/value."""
    if step in ("name", "body"):
        return ("type" if step == "name" else "value") if appbase else int(step == "body")
    return step


@given(st.sampled_from(FIELD_PATHS), json_values, st.booleans())
@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURES_OK)
def test_any_field_replaced_by_random_json_raises_only_tx_rejected(
        path: tuple[Any, ...], value: object, appbase: bool) -> None:
    """Swapping any field of a valid transaction for random JSON never escapes TxRejectedError."""
    base = codec.decode_transaction(tx_json(wu_json(HIVE)), HIVE)
    sent: Any = codec.transaction_json(base, HIVE, legacy=not appbase)
    target = sent
    for step in path[:-1]:
        target = target[_step(step, appbase)]
    target[_step(path[-1], appbase)] = value
    with contextlib.suppress(TxRejectedError):
        codec.decode_transaction(sent, HIVE)
