"""The seed script's failover, re-implemented as a measuring instrument (not a product feature).

It does what the original single-process script did, as its README and code
describe it, and nothing more:

- poll ``condenser_api.get_witness_by_account`` every 30 s, expressed here in
  chain slots (``poll_slots = 10``) so that it runs at the devnet's speed;
- trigger when ``total_missed >= threshold``; the operator wrote ``threshold``
  into the config by hand, as the current ``total_missed + 1``;
- broadcast ONE ``witness_update`` signed with the active key, whose url and
  props come from this config file, not from the chain; TaPoS from the head;
- send one SMS (here: a counter, no network); exit.

No stale-head check, no quorum, no confirmation, no retry of the broadcast, no
second switch. On a node error it moves to the next node of its list, as beem's
node rotation does. Its counters (polls, JSON-RPC calls, SMS) go to ``--result``
as JSON after every poll and at exit, for ``bench/headtohead.py``.

The active WIF sits in the config file in the clear, as it did in the seed
script: devnet throwaway keys only.

    .venv/bin/python bench/baseline.py --config baseline.toml --result baseline.json
"""

from __future__ import annotations

import argparse
import json
import signal
import struct
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import requests

# beem is allowed only in three signer modules (the import-linter contracts in
# pyproject.toml); bench/ is outside those contracts because this instrument plays
# the seed script, which built and signed its own transaction.
from beembase import operations
from beembase.objects import Operation
from beembase.signedtransactions import Signed_Transaction

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
PREFIX = "STM"


@dataclass(frozen=True)
class BaselineConfig:
    """The seed script's config file: nodes, threshold, keys, and the props it sends."""

    account: str
    nodes: tuple[str, ...]
    poll_slots: int
    slot_seconds: float
    threshold: int
    timeout_s: float
    chain_id: str
    active_wif: str
    new_signing_key: str
    url: str
    props: dict[str, Any]
    core_symbol: str
    lifetime_s: int

    @classmethod
    def load(cls, path: Path) -> BaselineConfig:
        """Read ``path`` (TOML).

        Raises:
            KeyError, TypeError, ValueError: a missing or mistyped field.
        """
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        b, w = raw["baseline"], raw["witness"]
        return cls(
            account=str(b["account"]), nodes=tuple(str(n) for n in b["nodes"]),
            poll_slots=int(b.get("poll_slots", 10)), slot_seconds=float(b["slot_seconds"]),
            threshold=int(b["threshold"]), timeout_s=float(b.get("timeout_s", 2.0)),
            chain_id=str(b["chain_id"]), active_wif=str(b["active_wif"]),
            new_signing_key=str(b["new_signing_key"]), url=str(w["url"]),
            props=dict(w["props"]), core_symbol=str(b.get("core_symbol", "HIVE")),
            lifetime_s=int(b.get("lifetime_s", 60)))

    def __repr__(self) -> str:
        return f"BaselineConfig(account={self.account!r}, threshold={self.threshold})"


def triggered(total_missed: int, threshold: int) -> bool:
    """The seed script's whole decision: an absolute count against a hand-set threshold."""
    return total_missed >= threshold


def signed_witness_update(*, owner: str, url: str, signing_key: str, props: dict[str, Any],
                          core_symbol: str, head: dict[str, Any], wif: str, chain_id: str,
                          lifetime_s: int = 60) -> dict[str, Any]:
    """A condenser-JSON ``witness_update`` signed with ``wif``; TaPoS on ``head`` (dgpo).

    The chain id is explicit: beem's default is all zeros (DESIGN.md pitfall).
    """
    op = operations.Witness_update(**{
        "owner": owner, "url": url, "block_signing_key": signing_key, "props": dict(props),
        "fee": f"0.000 {core_symbol}", "prefix": PREFIX})
    expiration = datetime.strptime(head["time"], TIME_FORMAT) + timedelta(seconds=lifetime_s)
    tx = Signed_Transaction(
        ref_block_num=int(head["head_block_number"]) & 0xFFFF,
        ref_block_prefix=struct.unpack_from("<I", bytes.fromhex(head["head_block_id"]), 4)[0],
        expiration=expiration.strftime(TIME_FORMAT),
        operations=[Operation(op, prefix=PREFIX)], prefix=PREFIX)
    tx.sign([wif], chain={"chain_id": chain_id, "prefix": PREFIX})
    doc = dict(tx.json())
    doc["transaction_id"] = tx.id
    return doc


class RpcError(Exception):
    """No node of the list answered the call."""


class Rpc:
    """JSON-RPC over an ordered node list; on failure the next node becomes current."""

    def __init__(self, nodes: tuple[str, ...], timeout_s: float) -> None:
        self._nodes = nodes
        self._timeout_s = timeout_s
        self._current = 0
        self._session = requests.Session()
        self._session.trust_env = False  # loopback devnet; never through a proxy
        self.calls = 0

    def call(self, method: str, params: list[Any]) -> Any:
        """Call ``method`` on the current node, then on the others in turn.

        Raises:
            RpcError: every node failed.
        """
        errors = []
        for _ in self._nodes:
            url = self._nodes[self._current]
            self.calls += 1
            try:
                return self._post(url, method, params)
            except (requests.RequestException, ValueError, KeyError, RpcError) as e:
                errors.append(f"{url}: {type(e).__name__}")
                self._current = (self._current + 1) % len(self._nodes)
        raise RpcError("; ".join(errors))

    def _post(self, url: str, method: str, params: list[Any]) -> Any:
        response = self._session.post(url, json={
            "jsonrpc": "2.0", "id": self.calls, "method": method, "params": params},
            timeout=self._timeout_s)
        response.raise_for_status()
        doc = response.json()
        if "error" in doc:
            raise RpcError(str(doc["error"])[:200])
        return doc["result"]


class CountingSms:
    """The seed's one SMS, counted instead of sent (no network in a benchmark)."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, text: str) -> None:
        """Count one SMS and log its text."""
        self.sent += 1
        print(f"SMS: {text}", file=sys.stderr, flush=True)


class Baseline:
    """The seed script's loop; :meth:`run` returns when it switched once or was stopped."""

    def __init__(self, cfg: BaselineConfig, result_path: Path | None) -> None:
        self.cfg = cfg
        self.rpc = Rpc(cfg.nodes, cfg.timeout_s)
        self.sms = CountingSms()
        self.stop = threading.Event()
        self.result_path = result_path
        self.result: dict[str, Any] = {
            "started_at": time.time(), "ended_at": None, "polls": 0, "rpc_calls": 0, "sms": 0,
            "switched": False, "tx_id": None, "error": None, "last_total_missed": None,
            "threshold": cfg.threshold}

    def run(self) -> dict[str, Any]:
        """Poll every ``poll_slots`` slots until the threshold is met (switch once) or stopped."""
        interval_s = self.cfg.poll_slots * self.cfg.slot_seconds
        while not self.stop.is_set():
            self.result["polls"] += 1
            try:
                witness = self.rpc.call("condenser_api.get_witness_by_account",
                                        [self.cfg.account])
                missed = int(witness["total_missed"])
                self.result["last_total_missed"] = missed
            except (RpcError, TypeError, KeyError, ValueError) as e:
                self.result["error"] = f"poll: {e}"
                missed = None
            if missed is not None and triggered(missed, self.cfg.threshold):
                self._switch(missed)
                break
            self._save()
            self.stop.wait(interval_s)
        return self._save(final=True)

    def _switch(self, missed: int) -> None:
        try:
            head = self.rpc.call("condenser_api.get_dynamic_global_properties", [])
            tx = signed_witness_update(
                owner=self.cfg.account, url=self.cfg.url, signing_key=self.cfg.new_signing_key,
                props=self.cfg.props, core_symbol=self.cfg.core_symbol, head=head,
                wif=self.cfg.active_wif, chain_id=self.cfg.chain_id,
                lifetime_s=self.cfg.lifetime_s)
            tx_id = tx.pop("transaction_id")
            self.rpc.call("condenser_api.broadcast_transaction", [tx])
        except (RpcError, KeyError, TypeError, ValueError) as e:
            # The seed script had no retry: a failed broadcast ended it.
            self.result["error"] = f"broadcast: {e}"
            return
        self.result.update(switched=True, tx_id=tx_id)
        self.sms.send(f"{self.cfg.account}: total_missed {missed} >= {self.cfg.threshold}; "
                      f"signing key set to {self.cfg.new_signing_key}, tx {tx_id}")

    def _save(self, *, final: bool = False) -> dict[str, Any]:
        self.result.update(rpc_calls=self.rpc.calls, sms=self.sms.sent)
        if final:
            self.result["ended_at"] = time.time()
        if self.result_path is not None:
            tmp = self.result_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.result), encoding="utf-8")
            tmp.replace(self.result_path)
        return self.result


def main(argv: list[str] | None = None) -> int:
    """Run the baseline until it switched once or got SIGTERM/SIGINT; print its counters."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="baseline TOML file")
    p.add_argument("--result", type=Path, help="JSON counters, rewritten after every poll")
    args = p.parse_args(argv)
    if args.config.stat().st_mode & 0o077:
        print(f"{args.config}: holds the active key; must be mode 0600", file=sys.stderr)
        return 2
    baseline = Baseline(BaselineConfig.load(args.config), args.result)

    def _stop(signum: int, frame: FrameType | None) -> None:
        baseline.stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    print(json.dumps(baseline.run()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
