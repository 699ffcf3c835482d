"""End to end, pre-emptive failover (issue 11): real devnet, signer and watcher processes.

Both services probe the producer nodes' own APIs (``health_url``, P+10+i, written by
``witness-devnet init``). A dead primary is switched away from before the witness's
slot (no block lost), a primary only the watcher cannot reach is not switched away
from (the signer's own probes disagree), and a dead backup is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from drill.procs import free_port_base, wait_until
from drill.services import (
    RunningDevnet,
    Service,
    init_dir,
    running_devnet,
    running_signer,
    running_watcher,
    signer_audit,
)
from watcher.schedule import parse_schedule, slots_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

WITNESSES = 21
WATCHER_SOURCE = "127.0.0.2"  # the watcher's probes come from here in the partition test


@dataclass
class System:
    """The three processes of one drill."""

    devnet: RunningDevnet
    signer: Service
    watcher: Service
    slot_s: float

    def key_of(self, node: str) -> str:
        """The public key of a producer node."""
        return str(next(n["public_key"] for n in self.devnet.status()["nodes"]
                        if n["name"] == node))

    def metrics(self) -> dict[str, float]:
        """The watcher's /metrics samples by series name."""
        text = requests.get(f"http://127.0.0.1:{self.devnet.port_base + 2}/metrics",
                            timeout=2).text
        return {name: float(value) for name, _, value in
                (line.rpartition(" ") for line in text.splitlines()
                 if line and not line.startswith("#"))}

    def rounds(self, n: float) -> float:
        """Wall seconds of ``n`` rounds of the schedule, for timeouts."""
        return n * WITNESSES * self.slot_s


@contextmanager
def drill_system(tmp_path: Path, slot_s: float, *,
                 watcher_source: str | None = None) -> Iterator[System]:
    """devnet + signer + watcher on a fresh drill directory; the watcher armed."""
    directory, port_base = tmp_path / "drill", free_port_base()
    init_dir(directory, port_base=port_base, slot_seconds=slot_s)
    if watcher_source is not None:
        path = directory / "watcher.toml"
        text = path.read_text(encoding="utf-8")
        lines = f'# [health]\n# source_address = "{WATCHER_SOURCE}"'
        assert lines in text, "watcher.toml no longer offers [health] source_address"
        path.write_text(text.replace(lines, f'[health]\nsource_address = "{watcher_source}"'),
                        encoding="utf-8")
    with ExitStack() as stack:
        devnet = stack.enter_context(running_devnet(directory, slot_seconds=slot_s,
                                                    port_base=port_base))
        signer = stack.enter_context(running_signer(directory))
        watcher = stack.enter_context(running_watcher(directory))
        system = System(devnet, signer, watcher, slot_s)
        wait_until(lambda: system.metrics().get('witness_watcher_state{phase="armed"}') == 1,
                   30, "the watcher to arm", procs=[devnet.process, watcher.proc])
        # Every node probed healthy at least once: the watcher knows its backups.
        wait_until(lambda: all(system.metrics().get(f'witness_node_up{{node="{n}"}}') == 1
                               for n in ("primary", "backup1", "backup2")),
                   10 * slot_s + 10, "the watcher to probe every node healthy",
                   procs=[watcher.proc])
        yield system


def alice_slots_ahead(dn: RunningDevnet) -> tuple[int, int]:
    """(a lower bound on the blocks until alice's next slot, the head's absolute slot)."""
    schedule = parse_schedule(dn.client.call("condenser_api.get_witness_schedule", []))
    dgpo = dn.client.call("condenser_api.get_dynamic_global_properties", [])
    head, aslot = int(dgpo["head_block_number"]), int(dgpo["current_aslot"])
    n = slots_until(schedule, "alice", aslot, head)
    # Not in what is left of this round: at least past the next shuffle.
    return (n if n is not None else schedule.next_shuffle_block_num - head + 1), aslot


def wait_for_room(system: System, ahead: int) -> int:
    """Wait until alice's next slot is at least ``ahead`` blocks away; return that aslot."""
    dn = system.devnet

    def room() -> int | None:
        n, aslot = alice_slots_ahead(dn)
        return aslot + n if n >= ahead else None

    return wait_until(room, system.rounds(3) + 10, f"alice's next slot {ahead} blocks ahead",
                      procs=[dn.process], interval_s=system.slot_s / 4)


def audit_of(system: System, event: str) -> list[dict[str, Any]]:
    """The signer's audit records of one kind."""
    return [e for e in signer_audit(system.devnet.dir) if e.get("event") == event]


def preemptive_request_ids(system: System) -> set[str]:
    """The ids of the requests that carried the watcher's health evidence."""
    return {str(e["request_id"]) for e in audit_of(system, "request")
            if (e.get("data") or {}).get("preemptive") is True
            and (e.get("data") or {}).get("evidence") is not None}


def test_primary_crash_well_before_the_slot_costs_no_block(tmp_path: Path) -> None:
    """primary dies ≥ 10 blocks before alice's slot: pre-emptive switch, 0 missed blocks."""
    with drill_system(tmp_path, slot_s=1.0) as system:
        dn = system.devnet
        target = wait_for_room(system, ahead=10)
        before = dn.status()
        assert before["witness"]["signing_key"] == system.key_of("primary")
        dn.client.call("devnet.stop_node", {"name": "primary"})
        backup1 = system.key_of("backup1")
        switched = dn.wait_for(lambda s: s["witness"]["signing_key"] == backup1,
                               system.rounds(2), "the switch to backup1")
        assert switched["current_aslot"] < target, "the switch landed after alice's slot"
        produced = dn.wait_for(
            lambda s: s["witness"]["last_confirmed_block_num"]
            > before["witness"]["last_confirmed_block_num"], system.rounds(3),
            "alice's next block")
        block = dn.client.call("condenser_api.get_block",
                               [produced["witness"]["last_confirmed_block_num"]])
        assert block["signing_key"] == backup1
        assert produced["witness"]["total_missed"] == before["witness"]["total_missed"]
        assert produced["double_production"] == 0
        broadcasts = audit_of(system, "broadcast")
        assert len(broadcasts) == 1
        assert str(broadcasts[0]["request_id"]) in preemptive_request_ids(system)


def test_watcher_side_partition_of_a_healthy_primary_is_refused(tmp_path: Path) -> None:
    """Only the watcher loses primary: the signer's probes disagree, no switch, audit says so."""
    with drill_system(tmp_path, slot_s=0.5, watcher_source=WATCHER_SOURCE) as system:
        dn = system.devnet
        primary = system.key_of("primary")
        before = dn.status()
        dn.client.call("devnet.set_node_faults", {"name": "primary", "partition": [WATCHER_SOURCE],
                                                  "partition_mode": "reset"})

        def refused() -> list[dict[str, Any]]:
            return [e for e in audit_of(system, "refused")
                    if (e.get("data") or {}).get("rule") == "health_disagrees"]

        refusals = wait_until(refused, system.rounds(1) + 10,
                              "the signer to refuse the watcher's evidence",
                              procs=[dn.process, system.signer.proc, system.watcher.proc])
        assert str(refusals[0]["request_id"]) in preemptive_request_ids(system)
        # Some blocks later: still primary's key, nothing missed, nothing broadcast.
        after = dn.wait_blocks(6, timeout_s=10 * system.slot_s + 10)
        assert after["witness"]["signing_key"] == primary
        assert after["witness"]["total_missed"] == before["witness"]["total_missed"]
        assert audit_of(system, "broadcast") == []
        assert system.metrics().get('witness_node_up{node="primary"}') == 0


def test_a_dead_backup_is_skipped(tmp_path: Path) -> None:
    """backup1's node is down when primary dies: the switch goes to backup2."""
    with drill_system(tmp_path, slot_s=0.5) as system:
        dn = system.devnet
        dn.client.call("devnet.stop_node", {"name": "backup1"})
        wait_until(lambda: system.metrics().get('witness_node_up{node="backup1"}') == 0,
                   10 * system.slot_s + 10, "the watcher to see backup1 down",
                   procs=[system.watcher.proc])
        dn.client.call("devnet.stop_node", {"name": "primary"})
        primary, backup2 = system.key_of("primary"), system.key_of("backup2")
        switched = dn.wait_for(lambda s: s["witness"]["signing_key"] != primary,
                               system.rounds(3), "a switch away from primary")
        assert switched["witness"]["signing_key"] == backup2
        broadcasts = audit_of(system, "broadcast")
        assert len(broadcasts) == 1
        assert switched["double_production"] == 0
