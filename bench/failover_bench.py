"""Failover benchmark: primary crashes at a random point of the round, N times.

Each trial writes a fresh drill directory (``witness-devnet init`` with a fast
KDF), starts the devnet, the signer and the watcher as real processes, waits
until the watcher is armed and ``alice`` has produced, waits a random number of
slots, stops ``primary`` and follows the failover until ``backup1`` produces.
A fresh set per trial is the correct reset: after a switch the on-chain key,
the signer's armed baseline, rate limit and cooldown, and the watcher's state
all differ from the starting point.

Prints one JSON object:

* ``missed_blocks``: alice's ``total_missed`` delta from the crash until
  backup1's first block;
* ``visible_to_included_s`` / ``_blocks``: from the first miss becoming visible
  on chain (``total_missed`` increments in ``devnet.status``, polled every
  ``--poll-s``) to the block holding the signer's transaction (its ``tx_id``
  from ``signer-state/audit.jsonl`` looked up with
  ``condenser_api.get_transaction``; the wall time is when ``devnet.status``
  first shows the new signing key, i.e. that block applied);
* the fast path, per trial and summarised (ms; wall clock of one machine):
  ``visible_to_sent_ms`` (the miss visible to the poller → the watcher's
  "requesting failover" log line, just before its HTTP request),
  ``sent_to_signer_broadcast_ms`` (→ the signer's "broadcast tx <id> to" log line,
  just after a node took the transaction: the signer's share, HTTP and authentication
  included), ``visible_to_broadcast_ms`` (and ``_slots``: divided by the slot length),
  ``broadcast_to_included_ms`` (→ the poller first sees the new key). Log times have
  millisecond resolution, the poller's ``--poll-s``;
* ``load_average``: ``os.getloadavg()`` at the end of the run (the machine may be shared);
* ``healthy``: the watcher's RPC calls (``witness_watcher_rpc_calls_total`` on
  ``/metrics``) over ``--healthy-seconds`` of healthy running in the first
  trial, per hour of devnet wall clock and per block x 1200 (3-s blocks);
* ``healthy.watcher_rss_kib`` / ``_hwm_kib`` and ``watcher_rss_kib_after_failover``:
  the watcher's VmRSS / VmHWM from ``/proc/<pid>/status``.

Percentiles are nearest-rank. Run:

    .venv/bin/python bench/failover_bench.py [--trials 20] [--slot-seconds 0.25]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from devnet.client import DevnetClient
from devnet.config import DevnetConfig
from drill.files import write_drill_dir
from drill.procs import (
    DrillError,
    console_script,
    free_port_base,
    running_process,
    wait_http,
    wait_until,
)
from drill.services import signer_audit
from shared.errors import ChainError

STARTUP_TIMEOUT_S = 30.0
CHAIN_BLOCK_S = 3  # chain seconds per slot (hived's interval)
REAL_BLOCKS_PER_HOUR = 3600 // CHAIN_BLOCK_S


class TrialError(DrillError):
    """A trial did not reach its end (timeout, a process died)."""


@dataclass
class Trial:
    """What one crash-and-failover trial measured."""

    delay_slots: float
    missed_blocks: int
    visible_to_included_s: float
    visible_to_included_blocks: int
    visible_block: int
    included_block: int
    first_backup1_block: int
    crash_to_visible_s: float
    visible_to_request_s: float | None
    request_to_broadcast_s: float | None
    visible_to_sent_ms: float | None
    sent_to_signer_broadcast_ms: float | None
    visible_to_broadcast_ms: float | None
    visible_to_broadcast_slots: float | None
    broadcast_to_included_ms: float | None
    double_production: int
    watcher_rss_kib: int
    trial_wall_s: float


# ---- reading the processes ------------------------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    """The samples of a Prometheus text exposition, by series name (labels included)."""
    response = requests.get(url, timeout=2)
    response.raise_for_status()
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def proc_status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            out[key] = int(value.split()[0])
    return out


def quick_status(port: int) -> dict[str, Any]:
    """``devnet.status`` over a fresh connection.

    A keep-alive request to the devnet stalls about 44 ms (Nagle against the
    delayed ACK, see "## Signer"); a new connection answers in a few ms, which
    is what makes the poll fine-grained.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/", b'{"jsonrpc":"2.0","id":0,"method":"devnet.status","params":{}}',
                     {"Content-Type": "application/json"})
        doc = json.loads(conn.getresponse().read())
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise TrialError(f"devnet.status failed: {type(e).__name__}") from e
    finally:
        conn.close()
    result = doc.get("result") if isinstance(doc, dict) else None
    if not isinstance(result, dict):
        raise TrialError("devnet.status: no result")
    return result


def log_wall(path: Path, needle: str) -> float | None:
    """Epoch seconds of the first line of a process log containing ``needle``.

    The processes log with ``%(asctime)s`` (local time, milliseconds).
    """
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if needle in line:
            try:
                return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
    return None


def ms(later: float | None, earlier: float | None) -> float | None:
    """``later - earlier`` in ms, or None when either is unknown."""
    return None if later is None or earlier is None else round((later - earlier) * 1000, 1)


def audit_wall(event: dict[str, Any]) -> float:
    """The epoch seconds of an audit record's ``at``."""
    return datetime.fromisoformat(str(event["at"])).timestamp()


def block_time(client: DevnetClient, num: int) -> float:
    """A block's chain timestamp in epoch seconds."""
    block = client.call("condenser_api.get_block", [num])
    return datetime.fromisoformat(str(block["timestamp"]) + "+00:00").timestamp()


def first_block_after_gap(client: DevnetClient, start: int, end: int) -> int | None:
    """The first block in (start, end] that follows an empty slot.

    Only alice's nodes are ever down, so the block after a gap is the one whose
    application counted alice's missed slot: the miss became visible with it.
    """
    previous = block_time(client, start)
    for num in range(start + 1, end + 1):
        current = block_time(client, num)
        if current - previous > CHAIN_BLOCK_S:
            return num
        previous = current
    return None


# ---- one trial ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Services:
    """The running set of one trial."""

    directory: Path
    client: DevnetClient
    metrics_url: str
    watcher: subprocess.Popen[bytes]
    procs: list[subprocess.Popen[bytes]]
    slot_s: float
    witness_count: int
    port: int


@contextmanager
def services(directory: Path, port_base: int, slot_s: float) -> Iterator[Services]:
    """Devnet, signer and watcher from a fresh drill directory; all stopped on exit."""
    # The reactive path (switch after the first visible miss): no health_url, no pre-emption.
    write_drill_dir(directory, port_base=port_base, slot_seconds=slot_s, chain="hive",
                    key_mode="active", fast_kdf=True, health=False)
    cfg = DevnetConfig.load(directory / "devnet.toml")
    with ExitStack() as stack:
        devnet = stack.enter_context(running_process(
            [console_script("witness-devnet"), "serve", "--config", str(directory / "devnet.toml")],
            directory / "devnet.log"))
        client = DevnetClient(f"http://127.0.0.1:{port_base}/", timeout_s=5)
        stack.callback(client.close)
        wait_until(client.status, STARTUP_TIMEOUT_S, "the devnet", procs=[devnet])
        signer = stack.enter_context(running_process(
            [console_script("witness-signer"), "serve", "--config", str(directory / "signer.toml")],
            directory / "signer.log"))
        signer_url = f"http://127.0.0.1:{port_base + 1}/healthz"
        wait_http(signer_url, STARTUP_TIMEOUT_S, "the signer", procs=[devnet, signer])
        watcher = stack.enter_context(running_process(
            [console_script("witness-watcher"), "run", "--config", str(directory / "watcher.toml")],
            directory / "watcher.log"))
        procs = [devnet, signer, watcher]
        metrics_url = f"http://127.0.0.1:{port_base + 2}/metrics"
        wait_until(lambda: scrape(metrics_url).get('witness_watcher_state{phase="armed"}') == 1,
                   STARTUP_TIMEOUT_S, "the watcher to arm", procs=procs)
        yield Services(directory, client, metrics_url, watcher, procs, cfg.slot_seconds,
                       cfg.witness_count, port_base)


def measure_healthy(svc: Services, seconds: float) -> dict[str, Any]:
    """The watcher's RPC call rate and memory over ``seconds`` of healthy running."""
    m0, s0, t0 = scrape(svc.metrics_url), svc.client.status(), time.monotonic()
    deadline = t0 + seconds
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if any(p.poll() is not None for p in svc.procs):
            raise TrialError("a process exited during the healthy phase")
    m1, s1, t1 = scrape(svc.metrics_url), svc.client.status(), time.monotonic()
    calls = m1["witness_watcher_rpc_calls_total"] - m0["witness_watcher_rpc_calls_total"]
    polls = m1["witness_watcher_polls_total"] - m0["witness_watcher_polls_total"]
    signer_http = (m1["witness_watcher_signer_http_requests_total"]
                   - m0["witness_watcher_signer_http_requests_total"])
    blocks = s1["head_block_number"] - s0["head_block_number"]
    elapsed = t1 - t0
    if s1["witness"]["total_missed"] != s0["witness"]["total_missed"] or blocks <= 0:
        raise TrialError("the chain was not healthy during the healthy phase")
    mem = proc_status_kib(svc.watcher.pid)
    return {
        "seconds": round(elapsed, 2),
        "blocks": blocks,
        "rpc_calls": int(calls),
        "polls": int(polls),
        "signer_http_requests": int(signer_http),
        "rpc_calls_per_block": round(calls / blocks, 3),
        "rpc_calls_per_hour_devnet_wall": round(calls / elapsed * 3600),
        "rpc_calls_per_hour_at_3s_blocks": round(calls / blocks * REAL_BLOCKS_PER_HOUR),
        "polls_per_hour_at_3s_blocks": round(polls / blocks * REAL_BLOCKS_PER_HOUR),
        "watcher_rss_kib": mem["VmRSS"],
        "watcher_hwm_kib": mem["VmHWM"],
    }


def run_trial(svc: Services, rng: random.Random, poll_s: float) -> Trial:
    """Crash primary a random number of slots after alice's last block; follow the failover."""
    start = time.monotonic()
    client, slot_s = svc.client, svc.slot_s
    status = quick_status(svc.port)
    keys = {n["name"]: n["public_key"] for n in status["nodes"]}
    round_s = slot_s * svc.witness_count
    anchor = status["witness"]["last_confirmed_block_num"]
    wait_until(lambda: quick_status(svc.port)["witness"]["last_confirmed_block_num"] > anchor,
               3 * round_s + 5, "alice to produce", procs=svc.procs, interval_s=poll_s)
    delay_slots = rng.uniform(0, svc.witness_count)
    time.sleep(delay_slots * slot_s)
    client.call("devnet.stop_node", {"name": "primary"})
    crash_t = time.monotonic()
    crashed = quick_status(svc.port)
    base_missed = crashed["witness"]["total_missed"]
    crash_head = crashed["head_block_number"]

    visible_t = visible_wall = switched_t = switched_wall = None
    switched_head = None
    deadline = crash_t + 6 * round_s + 20
    while True:
        status, now, wall = quick_status(svc.port), time.monotonic(), time.time()
        w = status["witness"]
        if visible_t is None and w["total_missed"] > base_missed:
            visible_t, visible_wall = now, wall
        if switched_t is None and w["signing_key"] != keys["primary"]:
            if w["signing_key"] != keys["backup1"]:
                raise TrialError(f"switched to an unexpected key {w['signing_key']}")
            switched_t, switched_head = now, status["head_block_number"]
            switched_wall = wall
        if (switched_head is not None and w["last_confirmed_block_num"] > crash_head
                and w["signing_key"] == keys["backup1"]):
            produced = client.call("condenser_api.get_block", [w["last_confirmed_block_num"]])
            if produced["signing_key"] == keys["backup1"]:
                break
        if now > deadline or any(p.poll() is not None for p in svc.procs):
            raise TrialError("backup1 did not produce in time (or a process exited)")
        time.sleep(poll_s)
    assert visible_t is not None
    assert visible_wall is not None
    assert switched_t is not None
    first_backup1 = int(w["last_confirmed_block_num"])
    missed = int(w["total_missed"]) - base_missed
    rss = proc_status_kib(svc.watcher.pid)["VmRSS"]

    events = signer_audit(svc.directory)
    included = None
    for event in events:
        tx_id = (event.get("data") or {}).get("tx_id")
        if event.get("event") == "broadcast" and tx_id:
            try:
                included = int(client.call("condenser_api.get_transaction", [tx_id])["block_num"])
            except ChainError:
                continue
    if included is None:
        included = int(switched_head)  # first head seen with the new key (upper bound)
    visible_block = first_block_after_gap(client, crash_head, included) or included
    request = next((e for e in events if e.get("event") == "request"), None)
    broadcast = next((e for e in events if e.get("event") == "broadcast"), None)
    # The watcher's "requesting failover" line is logged just before the HTTP request;
    # the signer's "broadcast tx <id> to" line just after the node took the transaction.
    sent_wall = log_wall(svc.directory / "watcher.log", "requesting failover")
    tx_id = (broadcast.get("data") or {}).get("tx_id") if broadcast else None
    signer_sent = log_wall(svc.directory / "signer.log", f"broadcast tx {tx_id} to") \
        if tx_id else None
    to_broadcast = ms(signer_sent, visible_wall)
    return Trial(
        delay_slots=round(delay_slots, 2),
        missed_blocks=missed,
        visible_to_included_s=round(switched_t - visible_t, 3),
        visible_to_included_blocks=included - visible_block,
        visible_block=visible_block,
        included_block=included,
        first_backup1_block=first_backup1,
        crash_to_visible_s=round(visible_t - crash_t, 3),
        visible_to_request_s=None if request is None
        else round(audit_wall(request) - visible_wall, 3),
        request_to_broadcast_s=None if request is None or broadcast is None
        else round(audit_wall(broadcast) - audit_wall(request), 3),
        visible_to_sent_ms=ms(sent_wall, visible_wall),
        sent_to_signer_broadcast_ms=ms(signer_sent, sent_wall),
        visible_to_broadcast_ms=to_broadcast,
        visible_to_broadcast_slots=None if to_broadcast is None
        else round(to_broadcast / 1000 / slot_s, 2),
        broadcast_to_included_ms=ms(switched_wall, signer_sent),
        double_production=int(status["double_production"]),
        watcher_rss_kib=rss,
        trial_wall_s=round(time.monotonic() - start, 2),
    )


# ---- summary --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (an observed value)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def distribution(values: list[float]) -> dict[str, float]:
    """p50, p95, max (and min, mean) of ``values``."""
    if not values:
        return {}
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values),
            "min": min(values), "mean": round(sum(values) / len(values), 3)}


def summarise(trials: list[Trial], failures: list[str], healthy: dict[str, Any] | None,
              args: argparse.Namespace, elapsed_s: float) -> dict[str, Any]:
    """The benchmark's JSON document."""
    def field(name: str) -> dict[str, float]:
        return distribution([v for t in trials if (v := getattr(t, name)) is not None])

    return {
        "benchmark": "failover",
        "trials_requested": args.trials,
        "trials_ok": len(trials),
        "trials_failed": len(failures),
        "failures": failures,
        "slot_seconds": args.slot_seconds,
        "seed": args.seed,
        "missed_blocks": field("missed_blocks"),
        "visible_to_included_s": field("visible_to_included_s"),
        "visible_to_included_blocks": field("visible_to_included_blocks"),
        "crash_to_visible_s": field("crash_to_visible_s"),
        "visible_to_request_s": field("visible_to_request_s"),
        "request_to_broadcast_s": field("request_to_broadcast_s"),
        "visible_to_sent_ms": field("visible_to_sent_ms"),
        "sent_to_signer_broadcast_ms": field("sent_to_signer_broadcast_ms"),
        "visible_to_broadcast_ms": field("visible_to_broadcast_ms"),
        "visible_to_broadcast_slots": field("visible_to_broadcast_slots"),
        "broadcast_to_included_ms": field("broadcast_to_included_ms"),
        "load_average": list(os.getloadavg()),
        "crash_delay_slots": field("delay_slots"),
        "double_production_total": sum(t.double_production for t in trials),
        "healthy": healthy,
        "watcher_rss_kib_after_failover": field("watcher_rss_kib"),
        "per_trial": [asdict(t) for t in trials] if args.per_trial else None,
        "total_wall_s": round(elapsed_s, 1),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the trials; print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--slot-seconds", type=float, default=0.25)
    parser.add_argument("--healthy-seconds", type=float, default=60.0,
                        help="healthy running measured in the first trial (0: skip)")
    parser.add_argument("--poll-s", type=float, default=0.02,
                        help="devnet.status poll interval while following a failover")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--per-trial", action="store_true", help="include every trial")
    parser.add_argument("--keep", action="store_true", help="keep the drill directories")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(args.seed)
    # SIGTERM unwinds like Ctrl-C, so every child process is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started = time.monotonic()
    trials: list[Trial] = []
    failures: list[str] = []
    healthy: dict[str, Any] | None = None
    for index in range(args.trials):
        with ExitStack() as stack:
            if args.keep:
                directory = Path(tempfile.mkdtemp(prefix=f"failover-bench-{index}-"))
            else:
                directory = Path(stack.enter_context(
                    tempfile.TemporaryDirectory(prefix=f"failover-bench-{index}-")))
            try:
                svc = stack.enter_context(
                    services(directory / "drill", free_port_base(), args.slot_seconds))
                if index == 0 and args.healthy_seconds > 0:
                    healthy = measure_healthy(svc, args.healthy_seconds)
                trial = run_trial(svc, rng, args.poll_s)
            except (DrillError, ChainError, requests.RequestException, OSError, KeyError) as e:
                failures.append(f"trial {index}: {type(e).__name__}: {e}")
                print(f"trial {index}: FAILED {e}", file=sys.stderr, flush=True)
                continue
            trials.append(trial)
            print(f"trial {index}: missed {trial.missed_blocks}, visible->sent "
                  f"{trial.visible_to_sent_ms} ms, sent->broadcast "
                  f"{trial.sent_to_signer_broadcast_ms} ms, visible->broadcast "
                  f"{trial.visible_to_broadcast_ms} ms, visible->included "
                  f"{trial.visible_to_included_s:.3f} s / {trial.visible_to_included_blocks} "
                  f"block(s), {trial.trial_wall_s:.1f} s", file=sys.stderr, flush=True)
    print(json.dumps(summarise(trials, failures, healthy, args, time.monotonic() - started),
                     indent=2))
    return 0 if trials and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
