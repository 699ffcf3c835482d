"""beem, over HTTP, against a real devnet process: connect, read, switch keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.txbuild import public_key

from devnet.client import DevnetClient
from drill.services import RunningDevnet, running_devnet

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["hive", "steem"])
def devnet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningDevnet]:
    """A fresh devnet of each chain profile."""
    with running_devnet(tmp_path / "drill", slot_seconds=0.1, chain=request.param) as dn:
        yield dn


def beem_instance(devnet: RunningDevnet, wifs: list[str]) -> Any:
    """A beem Hive or Steem instance pointed at the devnet over HTTP (not offline)."""
    if devnet.config["devnet"]["chain"] == "hive":
        from beem import Hive  # noqa: PLC0415 - beem reads $HOME on import; fixtures set it

        return Hive(node=[devnet.url], keys=wifs, num_retries=2, timeout=10)
    from beem.steem import Steem  # noqa: PLC0415 - as above

    return Steem(node=[devnet.url], keys=wifs, num_retries=2, timeout=10)


def first_alice_block_after(client: DevnetClient, block_num: int, timeout_blocks: int = 60,
                            devnet: RunningDevnet | None = None) -> dict[str, Any]:
    """The first block by alice after ``block_num`` (waits for it)."""
    n = block_num + 1
    for _ in range(timeout_blocks * 4):
        block = client.call("condenser_api.get_block", [n])
        if block is None:
            assert devnet is not None
            devnet.wait_blocks(1)
            continue
        if block["witness"] == "alice":
            return dict(block)
        n += 1
    raise AssertionError("alice produced no block")


def block_with_signature(client: DevnetClient, signature: str, depth: int = 200) -> int:
    """The number of the recent block holding a transaction with ``signature``."""
    head = client.call("condenser_api.get_dynamic_global_properties", [])["head_block_number"]
    for n in range(head, max(head - depth, 0), -1):
        block = client.call("condenser_api.get_block", [n])
        if any(signature in tx["signatures"] for tx in block["transactions"]):
            return n
    raise AssertionError("transaction not found in recent blocks")


def test_beem_connects_and_detects_the_chain(devnet: RunningDevnet) -> None:
    """beem detects the devnet's chain id, prefix and symbols from get_config."""
    chain = beem_instance(devnet, [])
    params = chain.chain_params
    assert params["chain_id"] == devnet.status()["chain_id"]
    assert params["prefix"] == "STM"
    symbols = {a["symbol"] for a in params["chain_assets"]}
    expected = {"HIVE", "HBD", "VESTS"} if devnet.status()["chain"] == "hive" else {
        "STEEM", "SBD", "VESTS"}
    assert symbols == expected


def test_beem_reads_alice(devnet: RunningDevnet) -> None:
    """beem's Witness and Account read alice as the devnet status reports her."""
    from beem.account import Account  # noqa: PLC0415 - see beem_instance
    from beem.witness import Witness  # noqa: PLC0415

    chain = beem_instance(devnet, [])
    witness = Witness("alice", blockchain_instance=chain)
    status = devnet.status()
    assert witness["signing_key"] == status["witness"]["signing_key"]
    assert witness["total_missed"] == status["witness"]["total_missed"]
    account = Account("alice", blockchain_instance=chain)
    assert account["active"]["key_auths"][0][0] == public_key(devnet.active_wif)


def test_witness_update_with_active_key(devnet: RunningDevnet) -> None:
    """A beem witness_update signed with the active key lands; backup1 signs alice's next block."""
    from beem.witness import Witness  # noqa: PLC0415 - see beem_instance

    chain = beem_instance(devnet, [devnet.active_wif])
    witness = Witness("alice", blockchain_instance=chain)
    before = devnet.client.call("condenser_api.get_witness_by_account", ["alice"])
    backup1 = public_key(devnet.node_wif("backup1"))
    # beem mutates the props it is given; hand it a copy
    result = witness.update(backup1, witness["url"], dict(before["props"]), account="alice")
    txid = result["trx_id"]
    devnet.wait_for(lambda s: s["witness"]["signing_key"] == backup1, 20, "the key change")
    included = devnet.client.call("condenser_api.get_transaction", [txid])
    after = devnet.client.call("condenser_api.get_witness_by_account", ["alice"])
    assert after["url"] == before["url"]
    assert after["props"] == before["props"]
    block = first_alice_block_after(devnet.client, included["block_num"], devnet=devnet)
    assert block["signing_key"] == backup1


def test_witness_set_properties_with_signing_key(devnet: RunningDevnet) -> None:
    """A beem witness_set_properties signed with the current signing key switches the key."""
    from beem.transactionbuilder import TransactionBuilder  # noqa: PLC0415 - see beem_instance
    from beembase import operations  # noqa: PLC0415

    primary_wif = devnet.node_wif("primary")
    chain = beem_instance(devnet, [primary_wif])
    backup2 = public_key(devnet.node_wif("backup2"))
    op = operations.Witness_set_properties(**{
        "owner": "alice",
        "props": [["key", public_key(primary_wif)], ["new_signing_key", backup2]],
        "prefix": "STM",
    })
    tb = TransactionBuilder(blockchain_instance=chain)
    tb.appendOps([op])
    tb.appendWif(primary_wif)
    tb.sign()
    result = tb.broadcast()
    devnet.wait_for(lambda s: s["witness"]["signing_key"] == backup2, 20, "the key change")
    block_num = block_with_signature(devnet.client, result["signatures"][0])
    block = first_alice_block_after(devnet.client, block_num, devnet=devnet)
    assert block["signing_key"] == backup2
