"""The devnet refuses bad transactions the way hived does, and the chain stays unchanged."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from support.txbuild import public_key, sign, tapos, witness_set_properties, witness_update

from drill.services import RunningDevnet, running_devnet
from shared.chains import HIVE, STEEM
from shared.errors import ChainDataError

pytestmark = pytest.mark.timeout(90)

Build = Callable[[RunningDevnet, dict[str, Any]], dict[str, Any]]


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevnet]:
    """One hive devnet for every rejection case (none of them may change it)."""
    with running_devnet(tmp_path_factory.mktemp("rejections") / "drill",
                        slot_seconds=0.1) as dn:
        yield dn


def current(devnet: RunningDevnet) -> dict[str, Any]:
    """alice's witness object as the condenser API shows it."""
    return dict(devnet.client.call("condenser_api.get_witness_by_account", ["alice"]))


def update_to(devnet: RunningDevnet, status: dict[str, Any], *, wif: str | None = None,
              chain_id: str = HIVE.chain_id, url: str | None = None,
              props: dict[str, Any] | None = None, expiration: timedelta = timedelta(seconds=60),
              ref: tuple[int, int] | None = None) -> dict[str, Any]:
    """A witness_update of alice to backup1's key, with one thing possibly wrong."""
    w = current(devnet)
    op = witness_update("alice", w["url"] if url is None else url,
                        public_key(devnet.node_wif("backup1")),
                        props if props is not None else dict(w["props"]), "HIVE")
    return sign(op, status, [wif or devnet.active_wif], chain_id, expiration=expiration, ref=ref)


def wrong_key(dn: RunningDevnet, st: dict[str, Any]) -> dict[str, Any]:
    """Signed by a node's signing key instead of the active key."""
    return update_to(dn, st, wif=dn.node_wif("backup1"))


def wrong_chain_id(dn: RunningDevnet, st: dict[str, Any]) -> dict[str, Any]:
    """Signed for chain id 000…0, beem's offline default."""
    return update_to(dn, st, chain_id=STEEM.chain_id)


def expired(dn: RunningDevnet, st: dict[str, Any]) -> dict[str, Any]:
    """Expiration before the head block time."""
    return update_to(dn, st, expiration=timedelta(seconds=-3))


def too_far_ahead(dn: RunningDevnet, st: dict[str, Any]) -> dict[str, Any]:
    """Expiration more than an hour after the head block time."""
    return update_to(dn, st, expiration=timedelta(seconds=3600 + 60))


def unknown_tapos(dn: RunningDevnet, st: dict[str, Any]) -> dict[str, Any]:
    """ref_block_prefix that matches no recent block."""
    num, prefix = tapos(st)
    return update_to(dn, st, ref=(num, prefix ^ 0x5A5A5A5A))


def foreign_interest_field(dn: RunningDevnet, st: dict[str, Any]) -> dict[str, Any]:
    """sbd_interest_rate sent to Hive: hived drops the field, so the signed bytes differ."""
    props = dict(current(dn)["props"])
    props["sbd_interest_rate"] = props.pop("hbd_interest_rate") + 1
    return update_to(dn, st, props=props)


def empty_url(dn: RunningDevnet, st: dict[str, Any]) -> dict[str, Any]:
    """A witness url of zero bytes."""
    return update_to(dn, st, url="")


def oversized_url(dn: RunningDevnet, st: dict[str, Any]) -> dict[str, Any]:
    """A witness url of 2,049 bytes."""
    return update_to(dn, st, url="https://x.example/" + "a" * (2049 - 18))


def stale_set_properties_key(dn: RunningDevnet, st: dict[str, Any]) -> dict[str, Any]:
    """witness_set_properties naming (and signed by) a key that is not the current one."""
    backup1 = dn.node_wif("backup1")
    op = witness_set_properties("alice", public_key(backup1), public_key(dn.node_wif("backup2")))
    return sign(op, st, [backup1], HIVE.chain_id)


CASES: list[tuple[Build, str]] = [
    (wrong_key, "missing required active authority"),
    (wrong_chain_id, "missing required active authority"),
    (expired, "transaction expiration exception"),
    (too_far_ahead, "transaction expiration exception"),
    (unknown_tapos, "transaction tapos exception"),
    (foreign_interest_field, "missing required active authority"),
    (empty_url, "url"),
    (oversized_url, "url"),
    (stale_set_properties_key, "does not match witness signing key"),
]


@pytest.mark.parametrize(("build", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_rejected_transaction_changes_nothing(devnet: RunningDevnet, build: Build,
                                              message: str) -> None:
    """A transaction hived would refuse is refused with hived's reason; alice is unchanged."""
    before = current(devnet)
    tx = build(devnet, devnet.status())
    with pytest.raises(ChainDataError) as info:
        devnet.client.call("condenser_api.broadcast_transaction", [tx])
    assert message in str(info.value).lower() or message in str(info.value)
    devnet.wait_blocks(2)
    after = current(devnet)
    for field in ("signing_key", "url", "props"):
        assert after[field] == before[field]
    assert devnet.status()["pending_transactions"] == 0


def test_duplicate_transaction_refused(devnet: RunningDevnet) -> None:
    """The same signed transaction twice: the second is a duplicate and changes nothing."""
    w = current(devnet)
    op = witness_update("alice", w["url"], w["signing_key"], dict(w["props"]), "HIVE")
    tx = sign(op, devnet.status(), [devnet.active_wif], HIVE.chain_id)
    devnet.client.call("condenser_api.broadcast_transaction", [tx])
    with pytest.raises(ChainDataError, match="Duplicate transaction"):
        devnet.client.call("condenser_api.broadcast_transaction", [tx])
    devnet.wait_blocks(2)
    with pytest.raises(ChainDataError, match="Duplicate transaction"):
        devnet.client.call("condenser_api.broadcast_transaction", [tx])
    assert current(devnet)["signing_key"] == w["signing_key"]


def test_unknown_method_is_a_jsonrpc_error(devnet: RunningDevnet) -> None:
    """An unknown method gets a JSON-RPC error object, and the devnet keeps serving."""
    with pytest.raises(ChainDataError, match="Could not find"):
        devnet.client.call("condenser_api.no_such_method", [])
    assert devnet.status()["head_block_number"] > 0
