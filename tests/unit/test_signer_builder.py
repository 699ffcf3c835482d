"""The signer's pure transaction builder: operations, TaPoS, ids, and bytes hived would read."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from beemgraphenebase.account import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from devnet import codec, ops
from shared.chaindata import DynamicProps, WitnessInfo
from shared.chains import HIVE, NULL_KEY, STEEM, ChainProfile
from shared.errors import ChainDataError, PolicyError
from signer.ports import BuiltTransaction
from signer.txbuild import (
    Tapos,
    build_switch_operation,
    build_unsigned_transaction,
    is_expired,
    tapos,
)


def _pubkey(seed: str) -> str:
    return str(PrivateKey(hashlib.sha256(seed.encode()).hexdigest(), prefix="STM").pubkey)


PRIMARY = _pubkey("primary")
BACKUP = _pubkey("backup1")
URL = "https://witness.example/alice"
CHAIN_TIME = datetime(2025, 5, 6, 13, 23, 24, tzinfo=UTC)
HEAD_ID = "05b38dd884fe0fd7fc4a35ad7c17c36a532d4228"
BEEM_MANGLED = "".join(chr(c) for c in [*range(9), 11, 12, *range(14, 32)])
PROFILES = [pytest.param(HIVE, id="hive"), pytest.param(STEEM, id="steem")]


def chain_props(profile: ChainProfile, **changes: Any) -> dict[str, Any]:
    """The props get_witness_by_account shows on ``profile``'s chain (condenser shape)."""
    props: dict[str, Any] = {"account_creation_fee": f"3.000 {profile.core.symbol}",
                             "account_subsidy_budget": 797, "account_subsidy_decay": 347321,
                             "maximum_block_size": 131072, profile.interest_field: 1500}
    props.update(changes)
    return {k: v for k, v in props.items() if v is not None}


def witness(profile: ChainProfile, *, url: str = URL, key: str = PRIMARY,
            props: dict[str, Any] | None = None) -> WitnessInfo:
    """A witness as parse_witness returns it."""
    p = chain_props(profile) if props is None else props
    return WitnessInfo(owner="alice", signing_key=key, total_missed=7,
                       last_confirmed_block_num=100, last_aslot=120, url=url, props=p,
                       raw={"owner": "alice", "url": url, "props": p})


def head(number: int = 95653336, block_id: str = HEAD_ID, time: datetime = CHAIN_TIME
         ) -> DynamicProps:
    """Dynamic global properties at one head block."""
    return DynamicProps(head_block_number=number, head_block_id=block_id, time=time,
                        current_aslot=number + 10, last_irreversible_block_num=number - 20,
                        current_witness="bob")


def unsigned_json(op_name: str, op_dict: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """beem's unsigned transaction and its condenser JSON for one operation."""
    tx = build_unsigned_transaction(op_name, op_dict, tapos(head(), timedelta(seconds=60)))
    return tx, tx.json()


# ---- witness_update (active mode) ------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_active_sends_chain_url_and_props_back(profile: ChainProfile) -> None:
    """witness_update carries the chain's url and legacy props, the target key and a zero fee."""
    name, op = build_switch_operation("active", witness(profile), BACKUP, profile)
    assert name == "witness_update"
    assert op == {
        "owner": "alice", "url": URL, "block_signing_key": BACKUP,
        "props": {"account_creation_fee": f"3.000 {profile.core.symbol}",
                  "maximum_block_size": 131072, profile.interest_field: 1500},
        "fee": f"0.000 {profile.core.symbol}",
    }


@pytest.mark.parametrize("profile", PROFILES)
def test_active_never_sends_the_other_chains_interest_field(profile: ChainProfile) -> None:
    """Only the profile's interest field is sent, never the other chain's name."""
    _, op = build_switch_operation("active", witness(profile), BACKUP, profile)
    assert profile.interest_field in op["props"]
    assert profile.foreign_interest_field not in op["props"]


@pytest.mark.parametrize("profile", PROFILES)
def test_foreign_interest_name_is_mapped_to_the_profiles(profile: ChainProfile) -> None:
    """A node naming the rate with the other chain's field has it sent under ours."""
    props = chain_props(profile, **{profile.interest_field: None,
                                    profile.foreign_interest_field: 700})
    _, op = build_switch_operation("active", witness(profile, props=props), BACKUP, profile)
    assert op["props"][profile.interest_field] == 700
    assert profile.foreign_interest_field not in op["props"]


@pytest.mark.parametrize("props", [
    pytest.param({HIVE.foreign_interest_field: 1}, id="both_names_disagree"),
    pytest.param({HIVE.interest_field: None}, id="no_interest_rate"),
    pytest.param({HIVE.interest_field: 10001}, id="interest_over_100_percent"),
    pytest.param({HIVE.interest_field: True}, id="interest_not_an_int"),
    pytest.param({"maximum_block_size": None}, id="no_block_size"),
    pytest.param({"maximum_block_size": 2**32}, id="block_size_over_uint32"),
    pytest.param({"maximum_block_size": 1024}, id="block_size_under_minimum"),
    pytest.param({"account_creation_fee": "3.000 HBD"}, id="fee_in_debt_asset"),
    pytest.param({"account_creation_fee": "3.000 SBD"}, id="fee_in_legacy_debt_asset"),
    pytest.param({"account_creation_fee": "3.0 HIVE"}, id="fee_with_wrong_precision"),
    pytest.param({"account_creation_fee": 3000}, id="fee_not_an_asset"),
    pytest.param({"account_creation_fee": None}, id="no_fee"),
])
def test_unsendable_chain_props_are_refused(props: dict[str, Any]) -> None:
    """Props that cannot be sent back unchanged refuse the build instead of clobbering."""
    w = witness(HIVE, props=chain_props(HIVE, **props))
    with pytest.raises(ChainDataError):
        build_switch_operation("active", w, BACKUP, HIVE)


def test_fee_of_the_other_chain_is_refused() -> None:
    """A Steem witness whose fee is in HIVE is refused: that is another chain's asset."""
    w = witness(STEEM, props=chain_props(STEEM, account_creation_fee="3.000 HIVE"))
    with pytest.raises(ChainDataError):
        build_switch_operation("active", w, BACKUP, STEEM)


@pytest.mark.parametrize("fee", [
    pytest.param("3.000 STEEM", id="hive_legacy_name"),
    pytest.param({"amount": "3000", "precision": 3, "nai": "@@000000021"}, id="nai_object"),
])
def test_core_fee_spellings_are_normalised(fee: object) -> None:
    """Hive's legacy core name and the NAI object both become "3.000 HIVE"."""
    w = witness(HIVE, props=chain_props(HIVE, account_creation_fee=fee))
    _, op = build_switch_operation("active", w, BACKUP, HIVE)
    assert op["props"]["account_creation_fee"] == "3.000 HIVE"


def test_active_null_target_disables() -> None:
    """In active mode the null key is a valid target: it disables the witness."""
    _, op = build_switch_operation("active", witness(HIVE), NULL_KEY, HIVE)
    assert op["block_signing_key"] == NULL_KEY


@pytest.mark.parametrize("url", [
    pytest.param("", id="empty"),
    pytest.param("x" * 2049, id="2049_bytes"),
    pytest.param("é" * 1025, id="1025_two_byte_chars"),
    pytest.param("https://x\x1f", id="control_char_beem_mangles"),
    pytest.param("https://x\x08", id="backspace_beem_mangles"),
])
def test_bad_url_is_refused(url: str) -> None:
    """A url hived would reject, or beem would pack unlike its JSON, refuses the build."""
    with pytest.raises(ChainDataError):
        build_switch_operation("active", witness(HIVE, url=url), BACKUP, HIVE)


def test_url_of_2048_bytes_is_kept() -> None:
    """A url of exactly 2048 bytes is the limit and is sent back as is."""
    url = "é" * 1024
    _, op = build_switch_operation("active", witness(HIVE, url=url), BACKUP, HIVE)
    assert op["url"] == url


# ---- witness_set_properties (signing mode) ---------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_signing_mode_changes_only_the_key(profile: ChainProfile) -> None:
    """witness_set_properties carries key = current on-chain key, new_signing_key, nothing else."""
    name, op = build_switch_operation("signing", witness(profile), BACKUP, profile)
    assert name == "witness_set_properties"
    assert op == {"owner": "alice", "props": [["key", PRIMARY], ["new_signing_key", BACKUP]]}


@pytest.mark.parametrize(("target", "current"), [
    pytest.param(NULL_KEY, PRIMARY, id="null_target"),
    pytest.param(BACKUP, NULL_KEY, id="disabled_witness"),
])
def test_signing_mode_refuses_the_null_key(target: str, current: str) -> None:
    """Signing mode neither disables nor re-enables a witness."""
    with pytest.raises(PolicyError):
        build_switch_operation("signing", witness(HIVE, key=current), target, HIVE)


@pytest.mark.parametrize("mode", ["active", "signing"])
@pytest.mark.parametrize("target", [
    pytest.param(PRIMARY[:-1] + ("x" if PRIMARY[-1] != "x" else "y"), id="bad_checksum"),
    pytest.param("TST" + PRIMARY[3:], id="wrong_prefix"),
    pytest.param("STM", id="prefix_only"),
])
def test_invalid_target_key_is_refused(mode: Any, target: str) -> None:
    """A target that is not a valid STM public key is refused in both modes."""
    with pytest.raises(PolicyError):
        build_switch_operation(mode, witness(HIVE), target, HIVE)


def test_unknown_mode_is_refused() -> None:
    """A key mode other than active/signing is refused."""
    with pytest.raises(PolicyError):
        build_switch_operation("owner", witness(HIVE), BACKUP, HIVE)  # type: ignore[arg-type]


# ---- TaPoS, expiration, ids -----------------------------------------------------------


def test_tapos_uses_the_head_block() -> None:
    """ref_block_num is head & 0xFFFF, the prefix is LE bytes 4..8 of the id, expiry chain time."""
    fields = tapos(head(number=0x12345678), timedelta(seconds=60))
    assert fields.ref_block_num == 0x5678
    assert fields.ref_block_prefix == int.from_bytes(bytes.fromhex(HEAD_ID)[4:8], "little")
    assert fields.ref_block_prefix == 0xD70FFE84
    assert fields.expiration == CHAIN_TIME + timedelta(seconds=60)


@pytest.mark.parametrize("seconds", [0, 3601])
def test_tapos_refuses_lifetimes_outside_an_hour(seconds: int) -> None:
    """Expiration must lie 1..3600 s after the head block time."""
    with pytest.raises(ChainDataError):
        tapos(head(), timedelta(seconds=seconds))


def test_tx_id_is_hash_of_packed_unsigned_tx() -> None:
    """The id is sha256 of the packed unsigned transaction (no signature array), 20 bytes."""
    tx, _ = unsigned_json(*build_switch_operation("active", witness(HIVE), BACKUP, HIVE))
    packed_with_empty_sigs = bytes(tx)
    assert packed_with_empty_sigs.endswith(b"\x00")
    assert tx.id == hashlib.sha256(packed_with_empty_sigs[:-1]).digest()[:20].hex()


def test_transaction_json_is_condenser_shape() -> None:
    """The JSON is legacy condenser form: [name, {...}] ops, string time, explicit TaPoS."""
    _, tx_json = unsigned_json(*build_switch_operation("active", witness(HIVE), BACKUP, HIVE))
    fields = tapos(head(), timedelta(seconds=60))
    assert tx_json["ref_block_num"] == fields.ref_block_num
    assert tx_json["ref_block_prefix"] == fields.ref_block_prefix
    assert tx_json["expiration"] == "2025-05-06T13:24:24"
    assert tx_json["operations"][0][0] == "witness_update"
    assert tx_json["extensions"] == []


def test_unsupported_operation_is_refused() -> None:
    """Only the two key-change operations are built."""
    with pytest.raises(ChainDataError):
        build_unsigned_transaction("transfer", {}, tapos(head(), timedelta(seconds=60)))


@pytest.mark.parametrize(("head_time", "expired"), [
    pytest.param(CHAIN_TIME - timedelta(seconds=3), False, id="before"),
    pytest.param(CHAIN_TIME, True, id="equal"),
    pytest.param(CHAIN_TIME + timedelta(seconds=3), True, id="after"),
])
def test_is_expired_compares_chain_time(head_time: datetime, expired: bool) -> None:
    """A tx is expired once head block time reaches its expiration (hived: now < expiration)."""
    tx = BuiltTransaction(tx_id="00" * 20, target_key=BACKUP, expiration=CHAIN_TIME,
                          operation="witness_update", tx_json={})
    assert is_expired(tx, head(time=head_time)) is expired


# ---- the bytes hived would read: beem's packing against the devnet's codec -------------


def _decoded(profile: ChainProfile, op_name: str, op_dict: dict[str, Any]
             ) -> tuple[Any, codec.DecodedTransaction]:
    tx, tx_json = unsigned_json(op_name, op_dict)
    decoded = codec.decode_transaction(tx_json, profile)
    assert decoded.packed == bytes(tx)[:-1]  # beem's bytes == the JSON as hived packs it
    assert decoded.txid == tx.id
    beem_op = tx.data["operations"].data[0]
    assert ops.pack_operation(decoded.operations[0], profile) == bytes(beem_op)
    return tx, decoded


@pytest.mark.parametrize("profile", PROFILES)
def test_witness_update_bytes_decode_with_devnet_codec(profile: ChainProfile) -> None:
    """The devnet's independent codec reads our witness_update JSON to beem's exact bytes."""
    _, decoded = _decoded(profile, *build_switch_operation("active", witness(profile),
                                                           BACKUP, profile))
    op = decoded.operations[0]
    assert isinstance(op, codec.WitnessUpdate)
    assert (op.owner, op.url, op.block_signing_key) == ("alice", URL, BACKUP)
    assert op.props == codec.ChainProperties(3000, 131072, 1500)
    assert (op.fee.amount, op.fee.asset) == (0, profile.core)


@pytest.mark.parametrize("profile", PROFILES)
def test_witness_set_properties_bytes_decode_with_devnet_codec(profile: ChainProfile) -> None:
    """The devnet's codec reads our witness_set_properties as key + new_signing_key only."""
    _, decoded = _decoded(profile, *build_switch_operation("signing", witness(profile),
                                                           BACKUP, profile))
    op = decoded.operations[0]
    assert isinstance(op, codec.WitnessSetProperties)
    assert (op.key, op.new_signing_key) == (PRIMARY, BACKUP)
    assert [name for name, _ in op.props] == ["key", "new_signing_key"]
    assert (op.account_creation_fee, op.maximum_block_size, op.interest_rate, op.url) == (
        None, None, None, None)


@settings(max_examples=60, deadline=None)
@given(profile=st.sampled_from([HIVE, STEEM]),
       url=st.text(st.characters(exclude_categories=["Cs"], exclude_characters=BEEM_MANGLED),
                   min_size=1, max_size=300).filter(lambda u: len(u.encode()) <= 2048),
       fee=st.integers(1, 1_000_000_000),
       size=st.integers(65536, 2**32 - 1),
       rate=st.integers(0, 10000))
def test_any_chain_props_round_trip_through_devnet_codec(
        profile: ChainProfile, url: str, fee: int, size: int, rate: int) -> None:
    """Whatever url and props the chain holds, hived would read back exactly those values."""
    props = chain_props(profile, account_creation_fee=f"{fee // 1000}.{fee % 1000:03d} "
                        f"{profile.core.symbol}", maximum_block_size=size,
                        **{profile.interest_field: rate})
    op_name, op_dict = build_switch_operation("active", witness(profile, url=url, props=props),
                                              BACKUP, profile)
    _, decoded = _decoded(profile, op_name, op_dict)
    op = decoded.operations[0]
    assert isinstance(op, codec.WitnessUpdate)
    assert op.url == url
    assert op.props == codec.ChainProperties(fee, size, rate)


def test_tapos_round_trips_through_devnet_codec() -> None:
    """The devnet decodes the TaPoS fields and expiration we set."""
    fields = Tapos(ref_block_num=0xFFFF, ref_block_prefix=2**32 - 1,
                   expiration=CHAIN_TIME + timedelta(hours=1))
    tx = build_unsigned_transaction(
        *build_switch_operation("signing", witness(HIVE), BACKUP, HIVE), fields)
    decoded = codec.decode_transaction(tx.json(), HIVE)
    assert (decoded.ref_block_num, decoded.ref_block_prefix, decoded.expiration) == (
        fields.ref_block_num, fields.ref_block_prefix, fields.expiration)
