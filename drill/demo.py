"""``witness-devnet demo``: a failover drill on a throwaway devnet, with a timeline.

Starts real processes from a fresh drill directory: the devnet, the signer and
the watcher. Stops ``primary`` after ``alice`` has produced, prints what
happened when, and exits 0 only when the chain shows what it should.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from devnet.client import DevnetClient
from devnet.config import DevnetConfig
from drill.files import write_drill_dir
from drill.procs import console_script, running_process, wait_http, wait_until
from drill.services import signer_audit
from shared.errors import ChainError

STARTUP_TIMEOUT_S = 30.0


class Timeline:
    """Prints events with the wall-clock offset and the chain head they happened at."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def event(self, status: dict[str, Any], text: str) -> None:
        """Print one line of the timeline."""
        elapsed = time.monotonic() - self.start
        print(f"[{elapsed:7.2f} s  block #{status['head_block_number']:<6}] {text}", flush=True)


def _wait(client: DevnetClient, predicate: Callable[[dict[str, Any]], bool], timeout_s: float,
          what: str) -> dict[str, Any]:
    """Poll devnet.status until ``predicate`` holds; return that status."""
    def check() -> dict[str, Any] | None:
        status = client.status()
        return status if predicate(status) else None

    return wait_until(check, timeout_s, what, not_ready=(ChainError,))


def run_demo(args: argparse.Namespace) -> int:
    """Run the drill; return the process exit code.

    Raises:
        DrillError: a process did not start in time.
    """
    with ExitStack() as stack:
        directory: Path = args.dir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="witness-devnet-demo-")))
        if not (directory / "devnet.toml").exists():
            write_drill_dir(directory, port_base=args.port_base, slot_seconds=args.slot_seconds,
                            chain=args.chain, key_mode=args.key_mode, fast_kdf=True)
        cfg = DevnetConfig.load(directory / "devnet.toml")
        print(f"drill directory: {directory}", flush=True)
        stack.enter_context(running_process(
            [console_script("witness-devnet"), "serve", "--config",
             str(directory / "devnet.toml")], directory / "devnet.log"))
        client = DevnetClient(f"http://{cfg.host}:{cfg.port}/", timeout_s=5)
        stack.callback(client.close)
        timeline = Timeline()
        status = _wait(client, bool, STARTUP_TIMEOUT_S, "the devnet to start")
        timeline.event(status, f"devnet up: chain {status['chain']}, slot "
                       f"{status['slot_seconds']} s, witness alice key = primary")
        if args.devnet_only:
            return _devnet_drill(client, timeline, cfg)
        signer_url = f"http://127.0.0.1:{cfg.port + 1}"
        stack.enter_context(running_process(
            [console_script("witness-signer"), "serve", "--config",
             str(directory / "signer.toml")], directory / "signer.log"))
        wait_http(f"{signer_url}/healthz", STARTUP_TIMEOUT_S, "the signer to start")
        timeline.event(client.status(), f"signer up on {signer_url} (holds the chain key)")
        stack.enter_context(running_process(
            [console_script("witness-watcher"), "run", "--config",
             str(directory / "watcher.toml")], directory / "watcher.log"))
        timeline.event(client.status(), "watcher up (holds no chain key)")
        return _failover_drill(client, timeline, cfg, directory)


def _failover_drill(client: DevnetClient, timeline: Timeline, cfg: DevnetConfig,
                    directory: Path) -> int:
    """Crash primary after alice produced; follow the failover to backup1's first block."""
    status = client.status()
    keys = {n["name"]: n["public_key"] for n in status["nodes"]}
    start_confirmed = status["witness"]["last_confirmed_block_num"]
    status = _wait(client, lambda s: s["witness"]["last_confirmed_block_num"] > start_confirmed,
                   _slot_budget(cfg, 2), "alice to produce a block")
    timeline.event(status, f"alice produced block #{status['witness']['last_confirmed_block_num']}"
                   " (node primary)")
    missed_before = status["witness"]["total_missed"]
    client.call("devnet.stop_node", {"name": "primary"})
    timeline.event(client.status(), "node primary STOPPED (simulated crash)")
    seen: set[str] = set()
    budget = time.monotonic() + _slot_budget(cfg, 6)
    included_in: int | None = None
    tx_id: str | None = None
    while time.monotonic() < budget:
        status = client.status()
        w = status["witness"]
        if "miss" not in seen and w["total_missed"] > missed_before:
            seen.add("miss")
            timeline.event(status, f"first miss visible on chain: total_missed "
                           f"{missed_before} -> {w['total_missed']}")
        for event in signer_audit(directory):
            name = str(event.get("event"))
            if name in {"request", "broadcast", "confirmed", "refused", "failed"} and (
                    name not in seen):
                seen.add(name)
                data = event.get("data") or {}
                extra = f" tx {data.get('tx_id')}" if isinstance(data, dict) and data.get(
                    "tx_id") else ""
                evidence = data.get("evidence") if isinstance(data, dict) else None
                if name == "request" and isinstance(evidence, dict):
                    extra = (f" (pre-emptive: the watcher saw {evidence.get('node')} "
                             f"{evidence.get('kind')}, before any miss)")
                timeline.event(status, f"signer: {name}{extra}")
                if name == "broadcast" and isinstance(data, dict) and data.get("tx_id"):
                    tx_id = str(data["tx_id"])
        if w["signing_key"] == keys["backup1"] and "key" not in seen:
            seen.add("key")
            if tx_id is not None:  # looked up once the key changed: it is in a block now
                try:
                    found = client.call("condenser_api.get_transaction", [tx_id])
                    included_in = int(found["block_num"])
                except ChainError:
                    included_in = None
            timeline.event(status, "alice's on-chain key is now backup1's")
        if "key" in seen:
            first = _first_block_by(client, keys["backup1"], status["head_block_number"])
            if first is not None:
                where = f"#{included_in}" if included_in is not None else "(see signer audit)"
                timeline.event(client.status(), f"switch included in block {where}; "
                               f"first block by backup1: #{first}")
                missed = client.status()["witness"]["total_missed"] - missed_before
                print(f"result: backup1 produced; alice missed {missed} block(s) in the "
                      "failover; double production "
                      f"{client.status()['double_production']}", flush=True)
                print("PASS", flush=True)
                return 0
        time.sleep(0.1)
    print("FAIL: backup1 did not produce in time; see the logs in the drill directory",
          flush=True)
    return 1


def _first_block_by(client: DevnetClient, key: str, head: int, depth: int = 200) -> int | None:
    """The number of the earliest recent alice block signed with ``key``."""
    found = None
    for n in range(head, max(head - depth, 0), -1):
        block = client.call("condenser_api.get_block", [n])
        if block and block["witness"] == "alice" and block["signing_key"] == key:
            found = n
    return found


def _slot_budget(cfg: DevnetConfig, rounds: int) -> float:
    """Wall seconds for ``rounds`` full schedule rounds, with margin."""
    return cfg.slot_seconds * cfg.witness_count * rounds + 10.0


def _devnet_drill(client: DevnetClient, timeline: Timeline, cfg: DevnetConfig) -> int:
    """Stop primary, watch alice miss her slots, bring primary back; check the counts."""
    first = client.status()
    start_confirmed = first["witness"]["last_confirmed_block_num"]
    status = _wait(client, lambda s: s["witness"]["last_confirmed_block_num"] > start_confirmed,
                   _slot_budget(cfg, 2), "alice to produce a block")
    timeline.event(status, f"alice produced block #{status['witness']['last_confirmed_block_num']}"
                   " (node primary)")
    missed_before = status["witness"]["total_missed"]
    empty_before = status["watched_slots"]["scheduled"] - status["watched_slots"]["produced"]
    client.call("devnet.stop_node", {"name": "primary"})
    timeline.event(client.status(), "node primary STOPPED (simulated crash)")
    target = 2
    status = _wait(client, lambda s: s["witness"]["total_missed"] >= missed_before + target,
                   _slot_budget(cfg, target + 1), f"{target} misses to become visible")
    timeline.event(status, f"alice total_missed {missed_before} -> "
                   f"{status['witness']['total_missed']} (visible on chain)")
    client.call("devnet.start_node", {"name": "primary"})
    status = client.status()
    timeline.event(status, "node primary started again")
    empty = status["watched_slots"]["scheduled"] - status["watched_slots"]["produced"]
    counted = status["witness"]["total_missed"] - missed_before
    # Every empty slot of alice's is counted once the next block applies; the
    # last one may still be waiting for that block.
    ok = counted in (empty - empty_before, empty - empty_before - 1)
    print(f"result: {counted} misses counted for {empty - empty_before} empty alice slots; "
          f"double production {status['double_production']}", flush=True)
    print("PASS" if ok and status["double_production"] == 0 else "FAIL", flush=True)
    return 0 if ok and status["double_production"] == 0 else 1
