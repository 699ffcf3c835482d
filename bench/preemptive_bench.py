"""Pre-emptive failover benchmark (issue 11): producer-node faults at random points of the round.

Each trial writes a fresh drill directory (``witness-devnet init --fast-kdf``:
both services name every node's own API as ``health_url``), starts the devnet,
the signer and the watcher as real processes, waits until the watcher is armed
and has probed every node healthy, then injects one ``--scenario`` at a time
uniform over the round (a delay in [0, 21 slots) after a block by ``alice``):

* ``crash``: ``primary`` stopped; followed until the new node produced alice's
  next block. Targets: missed blocks p50 = 0, mean <= 0.2, p95 <= 1.
* ``stuck``: ``primary`` stuck (``devnet.set_node_faults stuck=true``: answers,
  head frozen, not producing). Target: switched away from with 0 missed.
* ``double``: as crash; 0-3 slots after the switch to ``backup1`` lands, backup1
  is stopped too; followed until ``backup2`` produced. Target: <= 1 block in all.
* ``partition``: only the watcher loses ``primary`` (the watcher probes from
  127.0.0.2, ``[health] source_address``; ``partition: ["127.0.0.2"]``) for one
  round, then it heals. Target: 0 switches (the signer's probes disagree).
* ``halt``: ``devnet.halt`` for two rounds of wall time, then 8 slots more.
  Target: 0 switches.

Per trial: missed blocks (``total_missed`` delta), wall seconds and blocks from
the fault to the first ``devnet.status`` showing the new key (polled every
``--poll-s`` over a fresh connection), whether each switch was pre-emptive (the
signer's audit: the request behind the broadcast carried ``evidence``,
``preemptive: true``), the signer's refusals by rule, and the watcher's RPC
calls per chain hour (1,200 blocks) over the healthy part of the trial: chain
reads (``witness_watcher_rpc_calls_total``) plus node probes
(``witness_watcher_probe_calls_total``). The signer's own probes run only when it
is asked to switch and are not counted. The signer's ``cooldown_s = 5`` (1.7
slots of 3 s) is scaled to the devnet's slot, as in ``bench/headtohead.py``.

Prints one JSON object; percentiles are nearest-rank. Run:

    .venv/bin/python bench/preemptive_bench.py --scenario crash --trials 20 --slot-seconds 1
    .venv/bin/python bench/preemptive_bench.py --scenario crash --trials 3 --slot-seconds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
from failover_bench import (
    REAL_BLOCKS_PER_HOUR,
    STARTUP_TIMEOUT_S,
    Services,
    TrialError,
    distribution,
    quick_status,
    scrape,
)

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

SCENARIOS = ("crash", "stuck", "double", "partition", "halt")
WATCHER_SOURCE = "127.0.0.2"
NODES = ("primary", "backup1", "backup2")
RPC_CALLS = "witness_watcher_rpc_calls_total"
PROBE_CALLS = "witness_watcher_probe_calls_total"
HALT_ROUNDS = 2
AFTER_HALT_SLOTS = 8


@dataclass
class Trial:
    """What one trial measured."""

    scenario: str
    delay_slots: float  # fault this many slots after alice's block
    alice_slots_ahead: int | None  # slots from the fault's head to alice's next slot
    missed_blocks: int
    switches: int
    switch_targets: list[str]
    preemptive_switches: int
    crash_to_switch_s: float | None  # first fault to the first switch seen on chain
    crash_to_switch_blocks: int | None
    refusals: dict[str, int]  # the signer's refusals by rule
    double_production: int
    healthy_blocks: int
    healthy_rpc_calls: int
    healthy_probe_calls: int
    trial_wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


# ---- the processes --------------------------------------------------------------------------


def tune(directory: Path, slot_s: float, scenario: str) -> None:
    """The drill's files as the benchmark runs them: scaled cooldown, partition source."""
    path = directory / "signer.toml"
    text = path.read_text(encoding="utf-8")
    line = "cooldown_s = 5\n"
    if line not in text:
        raise TrialError("signer.toml no longer has the drill's cooldown_s = 5")
    path.write_text(text.replace(line, f"cooldown_s = {5 * slot_s / 3:.3f}\n"), encoding="utf-8")
    if scenario == "partition":
        path = directory / "watcher.toml"
        text = path.read_text(encoding="utf-8")
        lines = f'# [health]\n# source_address = "{WATCHER_SOURCE}"'
        if lines not in text:
            raise TrialError("watcher.toml no longer offers [health] source_address")
        path.write_text(text.replace(lines, f'[health]\nsource_address = "{WATCHER_SOURCE}"'),
                        encoding="utf-8")


def nodes_up(metrics_url: str) -> bool:
    """Whether the watcher's last probes saw every node healthy."""
    m = scrape(metrics_url)
    return all(m.get(f'witness_node_up{{node="{n}"}}') == 1 for n in NODES)


@contextmanager
def services(directory: Path, port_base: int, slot_s: float, scenario: str
             ) -> Iterator[Services]:
    """Devnet, signer and watcher on a fresh drill directory; the watcher armed, nodes probed."""
    write_drill_dir(directory, port_base=port_base, slot_seconds=slot_s, chain="hive",
                    key_mode="active", fast_kdf=True)
    tune(directory, slot_s, scenario)
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
        wait_http(f"http://127.0.0.1:{port_base + 1}/healthz", STARTUP_TIMEOUT_S, "the signer",
                  procs=[devnet, signer])
        watcher = stack.enter_context(running_process(
            [console_script("witness-watcher"), "run", "--config", str(directory / "watcher.toml")],
            directory / "watcher.log"))
        procs = [devnet, signer, watcher]
        metrics_url = f"http://127.0.0.1:{port_base + 2}/metrics"
        wait_until(lambda: scrape(metrics_url).get('witness_watcher_state{phase="armed"}') == 1,
                   STARTUP_TIMEOUT_S, "the watcher to arm", procs=procs)
        wait_until(lambda: nodes_up(metrics_url), STARTUP_TIMEOUT_S + 10 * slot_s,
                   "the watcher to probe every node healthy", procs=procs)
        yield Services(directory, client, metrics_url, watcher, procs, cfg.slot_seconds,
                       cfg.witness_count, port_base)


# ---- reading the chain ----------------------------------------------------------------------


def alice_slots_ahead(before: dict[str, Any], end: dict[str, Any]) -> int | None:
    """Slots from the head at the fault to alice's next slot, produced or missed (from
    ``end``'s record of her slots); None if she had no slot by ``end``."""
    aslot = int(before["current_aslot"])
    slots = [a for a in end["watched_slots"]["recent_missed_aslots"] if a > aslot]
    if int(end["witness"]["last_aslot"]) > aslot:
        slots.append(int(end["witness"]["last_aslot"]))
    return min(slots) - aslot if slots else None


def fault_after_alice(svc: Services, rng: random.Random, poll_s: float,
                      inject: Callable[[], None]) -> tuple[float, float, dict[str, Any]]:
    """Call ``inject`` a uniform [0, round) delay after a block by alice.

    Alice's last block is placed in wall time from the first sighting of a new head
    (``current_aslot`` - ``witness.last_aslot`` slots before it); when that block plus
    the delay is already past, the next block by alice is waited for.

    Returns:
        (the delay in slots, the monotonic time of the fault, the status just before it).
    """
    slot_s, round_s = svc.slot_s, svc.slot_s * svc.witness_count
    delay = rng.uniform(0, svc.witness_count)

    def first_sighting(path: tuple[str, ...], after: int) -> tuple[dict[str, Any], float] | None:
        status = quick_status(svc.port)
        value: Any = status
        for name in path:
            value = value[name]
        return (status, time.monotonic()) if int(value) > after else None

    head = int(quick_status(svc.port)["head_block_number"])
    status, t_head = wait_until(lambda: first_sighting(("head_block_number",), head),
                                5 * slot_s + 5, "a new head", procs=svc.procs, interval_s=poll_s)
    t_alice = t_head - (status["current_aslot"] - status["witness"]["last_aslot"]) * slot_s
    if t_alice + delay * slot_s < time.monotonic():
        anchor = int(status["witness"]["last_confirmed_block_num"])
        _, t_alice = wait_until(
            lambda: first_sighting(("witness", "last_confirmed_block_num"), anchor),
            3 * round_s + 5, "alice to produce", procs=svc.procs, interval_s=poll_s)
    time.sleep(max(0.0, t_alice + delay * slot_s - time.monotonic()))
    before = quick_status(svc.port)
    inject()
    return delay, time.monotonic(), before


def preemptive_of(directory: Path) -> dict[str, bool]:
    """For every broadcast switch (by request id): whether its request carried evidence."""
    events = signer_audit(directory)
    preemptive = {str(e["request_id"]): bool((e.get("data") or {}).get("preemptive"))
                  for e in events if e.get("event") == "request"}
    return {str(e["request_id"]): preemptive.get(str(e["request_id"]), False)
            for e in events if e.get("event") == "broadcast"}


def refusals_of(directory: Path) -> dict[str, int]:
    """The signer's refusals so far, by policy rule."""
    return dict(Counter(str((e.get("data") or {}).get("rule")) for e in signer_audit(directory)
                        if e.get("event") == "refused"))


@dataclass
class Follow:
    """What the status poll saw after the first fault."""

    switches: list[tuple[float, int, str]] = field(default_factory=list)  # (t, head, new key)
    last: dict[str, Any] = field(default_factory=dict)


def follow(svc: Services, follow_state: Follow, poll_s: float, deadline: float,
           done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll ``devnet.status`` until ``done`` holds, recording every key change.

    Raises:
        TrialError: ``deadline`` passed or a process exited.
    """
    while True:
        status, now = quick_status(svc.port), time.monotonic()
        key = status["witness"]["signing_key"]
        previous = follow_state.last["witness"]["signing_key"] if follow_state.last else key
        if key != previous:
            follow_state.switches.append((now, int(status["head_block_number"]), key))
        follow_state.last = status
        if done(status):
            return status
        if now > deadline or any(p.poll() is not None for p in svc.procs):
            raise TrialError(f"timed out (or a process exited); last status witness "
                             f"{status['witness']}")
        time.sleep(poll_s)


def produced_with(svc: Services, key: str, after_block: int) -> Callable[[dict[str, Any]], bool]:
    """A ``done`` test: alice produced a block after ``after_block`` with ``key``."""
    def done(status: dict[str, Any]) -> bool:
        w = status["witness"]
        if w["signing_key"] != key or w["last_confirmed_block_num"] <= after_block:
            return False
        block = svc.client.call("condenser_api.get_block", [w["last_confirmed_block_num"]])
        return bool(block["signing_key"] == key)
    return done


def measure_healthy(svc: Services, seconds: float) -> dict[str, Any]:
    """The watcher's chain reads and node probes over ``seconds`` of healthy running."""
    m0, s0 = scrape(svc.metrics_url), quick_status(svc.port)
    time.sleep(seconds)
    m1, s1 = scrape(svc.metrics_url), quick_status(svc.port)
    if any(p.poll() is not None for p in svc.procs):
        raise TrialError("a process exited during the healthy phase")
    blocks = int(s1["head_block_number"]) - int(s0["head_block_number"])
    if blocks <= 0 or s1["witness"]["total_missed"] != s0["witness"]["total_missed"]:
        raise TrialError("the chain was not healthy during the healthy phase")

    def per_hour(name: str) -> int:
        return round((m1.get(name, 0.0) - m0.get(name, 0.0)) / blocks * REAL_BLOCKS_PER_HOUR)

    reads, probes = per_hour(RPC_CALLS), per_hour(PROBE_CALLS)
    return {"seconds": seconds, "blocks": blocks, "chain_reads_per_chain_hour": reads,
            "probes_per_chain_hour": probes, "total_per_chain_hour": reads + probes,
            "polls_per_chain_hour": per_hour("witness_watcher_polls_total")}


# ---- the scenarios --------------------------------------------------------------------------


def run_trial(svc: Services, scenario: str, rng: random.Random, poll_s: float) -> Trial:
    """Play one scenario on a running set and measure it."""
    start = time.monotonic()
    client, slot_s = svc.client, svc.slot_s
    round_s = slot_s * svc.witness_count
    keys = {n["name"]: n["public_key"] for n in quick_status(svc.port)["nodes"]}
    m0, s0 = scrape(svc.metrics_url), quick_status(svc.port)

    def inject() -> None:
        if scenario in ("crash", "double"):
            client.call("devnet.stop_node", {"name": "primary"})
        elif scenario == "stuck":
            client.call("devnet.set_node_faults", {"name": "primary", "stuck": True})
        elif scenario == "partition":
            client.call("devnet.set_node_faults", {"name": "primary",
                                                   "partition": [WATCHER_SOURCE],
                                                   "partition_mode": "reset"})
        else:
            client.call("devnet.halt", {})

    delay, t_fault, before = fault_after_alice(svc, rng, poll_s, inject)
    m1 = scrape(svc.metrics_url)
    base_missed = int(before["witness"]["total_missed"])
    seen = Follow(last=before)
    extra: dict[str, Any] = {}
    if scenario in ("crash", "stuck", "double"):
        deadline = t_fault + 4 * round_s + 20
        end = follow(svc, seen, poll_s, deadline,
                     lambda s: s["witness"]["signing_key"] != keys["primary"])
        first_key = end["witness"]["signing_key"]
        if scenario == "double":
            if first_key != keys["backup1"]:
                raise TrialError(f"the first switch went to {first_key}, not backup1")
            kill_after = rng.uniform(0, 3)
            time.sleep(kill_after * slot_s)
            client.call("devnet.stop_node", {"name": "backup1"})
            extra.update(backup1_killed_after_slots=round(kill_after, 2),
                         backup1_killed_at_s=round(time.monotonic() - t_fault, 3))
            end = follow(svc, seen, poll_s, time.monotonic() + 4 * round_s + 20,
                         lambda s: s["witness"]["signing_key"] == keys["backup2"])
            first_key = keys["backup2"]
        end = follow(svc, seen, poll_s, time.monotonic() + 3 * round_s + 20,
                     produced_with(svc, first_key, int(before["witness"]
                                                       ["last_confirmed_block_num"])))
    elif scenario == "partition":
        _observe(svc, seen, poll_s, t_fault + round_s)
        client.call("devnet.set_node_faults", {"name": "primary", "partition": []})
        end = _observe(svc, seen, poll_s, time.monotonic() + 5 * slot_s)
        extra["partition_s"] = round(round_s, 2)
    else:
        _observe(svc, seen, poll_s, t_fault + HALT_ROUNDS * round_s)
        client.call("devnet.resume", {})
        end = _observe(svc, seen, poll_s, time.monotonic() + AFTER_HALT_SLOTS * slot_s)
        extra["halt_s"] = round(HALT_ROUNDS * round_s, 2)
    by_request = preemptive_of(svc.directory)
    names = {v: k for k, v in keys.items()}
    first_switch = seen.switches[0] if seen.switches else None
    calls = m1.get(RPC_CALLS, 0.0) - m0.get(RPC_CALLS, 0.0)
    probes = m1.get(PROBE_CALLS, 0.0) - m0.get(PROBE_CALLS, 0.0)
    return Trial(
        scenario=scenario,
        delay_slots=round(delay, 2),
        alice_slots_ahead=alice_slots_ahead(before, end),
        missed_blocks=int(end["witness"]["total_missed"]) - base_missed,
        switches=len(seen.switches),
        switch_targets=[names.get(k, k) for _, _, k in seen.switches],
        preemptive_switches=sum(by_request.values()),
        crash_to_switch_s=None if first_switch is None else round(first_switch[0] - t_fault, 3),
        crash_to_switch_blocks=None if first_switch is None
        else first_switch[1] - int(before["head_block_number"]),
        refusals=refusals_of(svc.directory),
        double_production=int(end["double_production"]),
        healthy_blocks=int(before["head_block_number"]) - int(s0["head_block_number"]),
        healthy_rpc_calls=int(calls),
        healthy_probe_calls=int(probes),
        trial_wall_s=round(time.monotonic() - start, 2),
        extra=extra,
    )


def _observe(svc: Services, seen: Follow, poll_s: float, until: float) -> dict[str, Any]:
    """Poll until ``until`` (monotonic), recording key changes; the last status."""
    while True:
        status = follow(svc, seen, poll_s, until + 30, lambda s: True)
        if time.monotonic() >= until:
            return status
        time.sleep(poll_s)


# ---- summary --------------------------------------------------------------------------------


def targets(scenario: str, missed: dict[str, float], switches: int, trials: int
            ) -> dict[str, bool]:
    """The issue's targets for this scenario, met or not."""
    if not trials:
        return {}
    if scenario == "crash":
        return {"missed_p50_eq_0": missed["p50"] == 0, "missed_mean_le_0.2": missed["mean"] <= 0.2,
                "missed_p95_le_1": missed["p95"] <= 1}
    if scenario == "stuck":
        return {"missed_max_eq_0": missed["max"] == 0, "switched_every_trial": switches >= trials}
    if scenario == "double":
        return {"missed_max_le_1": missed["max"] <= 1}
    return {"no_switch": switches == 0}


def summarise(trials: list[Trial], failures: list[str], args: argparse.Namespace,
              elapsed_s: float, healthy: dict[str, Any] | None = None) -> dict[str, Any]:
    """The benchmark's JSON document."""
    def dist(name: str) -> dict[str, float]:
        return distribution([v for t in trials if (v := getattr(t, name)) is not None])

    missed = dist("missed_blocks")
    switches = sum(t.switches for t in trials)
    blocks = sum(t.healthy_blocks for t in trials)
    calls = sum(t.healthy_rpc_calls for t in trials)
    probes = sum(t.healthy_probe_calls for t in trials)
    refusals: Counter[str] = Counter()
    for t in trials:
        refusals.update(t.refusals)
    return {
        "benchmark": "preemptive",
        "scenario": args.scenario,
        "trials_requested": args.trials,
        "trials_ok": len(trials),
        "trials_failed": len(failures),
        "failures": failures,
        "slot_seconds": args.slot_seconds,
        "seed": args.seed,
        "missed_blocks": missed,
        "trials_with_a_miss": sum(1 for t in trials if t.missed_blocks > 0),
        "crash_to_switch_s": dist("crash_to_switch_s"),
        "crash_to_switch_blocks": dist("crash_to_switch_blocks"),
        "switches": switches,
        "preemptive_switches": sum(t.preemptive_switches for t in trials),
        "preemptive_share": None if not switches
        else round(sum(t.preemptive_switches for t in trials) / switches, 3),
        "refusals_by_rule": dict(sorted(refusals.items())),
        "double_production_total": sum(t.double_production for t in trials),
        "rpc_per_chain_hour": {
            "healthy_blocks": blocks,
            "chain_reads": round(calls / blocks * REAL_BLOCKS_PER_HOUR) if blocks else None,
            "probes": round(probes / blocks * REAL_BLOCKS_PER_HOUR) if blocks else None,
            "total": round((calls + probes) / blocks * REAL_BLOCKS_PER_HOUR) if blocks else None,
        },
        "healthy": healthy,
        "crash_delay_slots": dist("delay_slots"),
        "targets": targets(args.scenario, missed, switches, len(trials)),
        "per_trial": [asdict(t) for t in trials],
        "command": " ".join([".venv/bin/python", "bench/preemptive_bench.py", "--scenario",
                             args.scenario, "--trials", str(args.trials), "--slot-seconds",
                             str(args.slot_seconds), "--seed", str(args.seed)]),
        "total_wall_s": round(elapsed_s, 1),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the trials; print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default="crash")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--slot-seconds", type=float, default=1.0)
    parser.add_argument("--poll-s", type=float, default=0.02,
                        help="devnet.status poll interval while following a trial")
    parser.add_argument("--healthy-seconds", type=float, default=0.0,
                        help="measure the watcher's calls over this long a healthy run in "
                        "the first trial, before its fault (0: skip)")
    parser.add_argument("--seed", type=int, default=None)
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
            prefix = f"preemptive-bench-{args.scenario}-{index}-"
            if args.keep:
                directory = Path(tempfile.mkdtemp(prefix=prefix))
            else:
                directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
            try:
                svc = stack.enter_context(services(directory / "drill",
                                                   free_port_base(below_ephemeral=True),
                                                   args.slot_seconds, args.scenario))
                if index == 0 and args.healthy_seconds > 0:
                    healthy = measure_healthy(svc, args.healthy_seconds)
                trial = run_trial(svc, args.scenario, rng, args.poll_s)
            except (DrillError, ChainError, requests.RequestException, OSError, KeyError,
                    subprocess.SubprocessError) as e:
                failures.append(f"trial {index}: {type(e).__name__}: {e}")
                print(f"trial {index}: FAILED {e}", file=sys.stderr, flush=True)
                continue
            trials.append(trial)
            print(f"trial {index}: {args.scenario} delay {trial.delay_slots} slots, alice "
                  f"{trial.alice_slots_ahead} ahead, missed {trial.missed_blocks}, switches "
                  f"{trial.switch_targets} (pre-emptive {trial.preemptive_switches}), "
                  f"crash->switch {trial.crash_to_switch_s} s, refusals {trial.refusals}, "
                  f"{trial.trial_wall_s:.0f} s", file=sys.stderr, flush=True)
    print(json.dumps(summarise(trials, failures, args, time.monotonic() - started, healthy),
                     indent=2))
    return 0 if trials and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
