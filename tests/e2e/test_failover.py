"""End to end: devnet, signer and watcher as real processes; a node dies, the backup produces."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drill.services import RunningDevnet, Service, running_devnet, running_signer, running_watcher

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SLOT_S = 0.5  # one block is 0.5 s: the watcher and signer get a realistic share of it
WITNESSES = 21


@dataclass
class System:
    """The three processes of one drill."""

    devnet: RunningDevnet
    signer: Service
    watcher: Service

    def key_of(self, node: str) -> str:
        """The public key of a producer node."""
        return str(next(n["public_key"] for n in self.devnet.status()["nodes"]
                        if n["name"] == node))


@pytest.fixture(params=["active", "signing"])
def system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[System]:
    """devnet + signer + watcher on a fresh drill directory, in each key mode."""
    with ExitStack() as stack:
        # Reactive failover (after the first miss): no health_url, no pre-emptive switch.
        devnet = stack.enter_context(running_devnet(tmp_path / "drill", slot_seconds=SLOT_S,
                                                    key_mode=request.param, health=False))
        signer = stack.enter_context(running_signer(devnet.dir))
        watcher = stack.enter_context(running_watcher(devnet.dir))
        yield System(devnet, signer, watcher)


def crash_and_follow(system: System, node: str, backup: str) -> dict[str, Any]:
    """Stop ``node`` right after alice produced; measure the failover to ``backup``."""
    dn = system.devnet
    first = dn.status()
    dn.wait_for(lambda s: s["witness"]["last_confirmed_block_num"]
                > first["witness"]["last_confirmed_block_num"], WITNESSES * SLOT_S * 3 + 10,
                "alice to produce")
    before = dn.status()
    dn.client.call("devnet.stop_node", {"name": node})
    missed0 = before["witness"]["total_missed"]
    seen = dn.wait_for(lambda s: s["witness"]["total_missed"] > missed0,
                       WITNESSES * SLOT_S * 3 + 10, "the first miss to become visible")
    visible_at = seen["head_block_number"]
    target = system.key_of(backup)
    switched = dn.wait_for(lambda s: s["witness"]["signing_key"] == target, 60,
                           f"the switch to {backup}")
    produced = dn.wait_for(
        lambda s: s["witness"]["last_confirmed_block_num"] > switched["head_block_number"],
        WITNESSES * SLOT_S * 3 + 10, f"{backup} to produce")
    block = dn.client.call("condenser_api.get_block",
                           [produced["witness"]["last_confirmed_block_num"]])
    return {"visible_at": visible_at, "switched_at": inclusion_block(dn, target,
                                                                     switched["head_block_number"]),
            "missed": produced["witness"]["total_missed"] - missed0,
            "producer_key": block["signing_key"], "status": produced}


def inclusion_block(dn: RunningDevnet, target: str, head: int) -> int:
    """The block whose transactions set alice's key to ``target`` (searching back from head)."""
    for n in range(head, max(head - 100, 0), -1):
        block = dn.client.call("condenser_api.get_block", [n])
        for tx in block["transactions"]:
            for name, op in tx["operations"]:
                key = op.get("block_signing_key") if name == "witness_update" else dict(
                    op.get("props", [])).get("new_signing_key")
                if key is not None and (key == target or name == "witness_set_properties"):
                    return n
    raise AssertionError("no key-change transaction found")


def test_primary_then_backup1_die(system: System) -> None:
    """primary dies → backup1 within 2 blocks of the first visible miss; backup1 dies → backup2."""
    first = crash_and_follow(system, "primary", "backup1")
    assert first["producer_key"] == system.key_of("backup1")
    assert first["missed"] <= 2
    assert first["switched_at"] - first["visible_at"] <= 2
    second = crash_and_follow(system, "backup1", "backup2")
    assert second["producer_key"] == system.key_of("backup2")
    assert second["missed"] <= 2
    assert second["switched_at"] - second["visible_at"] <= 2
    assert second["status"]["double_production"] == 0
