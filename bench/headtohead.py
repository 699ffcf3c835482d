"""Head-to-head: this design against the seed script's, on one devnet and the same outages.

Starts one devnet (``witness-devnet init --fast-kdf`` + ``serve``) and runs, for
each of eight scenarios and ``--trials`` randomized trials, the same outage once
with our signer + watcher and once with the seed script's behaviour
(``bench/baseline.py``), alternating which goes first. Both tools get a fresh
start per trial; between trials the chain is reset with a ``witness_update``
signed with the throwaway active key. A sampler reads ``devnet.status`` every
20 ms; every figure is computed from what the chain did, not from what the
tools say they did (except their SMS and RPC call counters).

Prints one JSON document (per scenario and tool: missed blocks p50/p95/max,
seconds from the first visible miss to the switch included, false switches,
switches that clobbered props, unrecovered failures, SMS, RPC calls per chain
hour, and the ratios ours/baseline) and writes ``docs/headtohead.md`` and
``docs/headtohead.png``. Needs the ``drill`` and ``bench`` extras:

    .venv/bin/pip install -e '.[drill,bench]'
    .venv/bin/python bench/headtohead.py            # --trials 5: about 16 min on 2 cores
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import baseline as seed
import requests
from headtohead_report import MAINNET_SLOT_S, ratios, summarize, write_docs

from devnet.client import DevnetClient
from drill.fake_twilio import FakeTwilio
from drill.procs import (
    DrillError,
    console_script,
    free_port_base,
    start_process,
    stop_process,
    wait_until,
)
from drill.services import signer_audit
from shared.errors import ChainError
from watcher.schedule import parse_schedule, slots_until

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = ("crash", "flap", "rpc_fault", "halt", "second_failure", "config_drift", "stuck",
             "partition")
WITNESSES = 21
CHAIN_HOUR_SLOTS = 3600 / MAINNET_SLOT_S
SAMPLE_S = 0.02
WATCHED = "alice"
TWILIO_SID = "AC" + "5f" * 16
TWILIO_TOKEN = "tok-" + "9c" * 14  # known only to the local fake Twilio
ORIGINAL = {"url": f"https://{WATCHED}.example/witness", "account_creation_fee": "3.000 HIVE",
            "maximum_block_size": 65536, "hbd_interest_rate": 1500}
PROP_FIELDS = ("account_creation_fee", "maximum_block_size", "hbd_interest_rate")
RPC_FAULTS: dict[str, dict[str, object]] = {
              "stale": {"freeze_head": True}, "errors": {"error_rate": 1.0},
              "flaky": {"error_rate": 0.5}, "timeout": {"timeout": True}}
CLEAR_FAULTS = {"latency_s": 0.0, "error_rate": 0.0, "timeout": False, "freeze_head": False,
                "wrong_data": False}
CLEAR_NODE_FAULTS = {"stuck": False, "slow_s": 0.0, "partition": []}
# Our watcher probes the producer nodes from here ([health] source_address), so the
# partition scenario can cut the watcher alone off the primary.
WATCHER_SOURCE = "127.0.0.2"


def _until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Whether ``predicate`` came true within ``timeout_s`` (its exceptions propagate)."""
    try:
        wait_until(predicate, timeout_s, "a condition", interval_s=interval_s, not_ready=())
    except DrillError:
        return False
    return True


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group (gunicorn has a worker), SIGKILL after 20 s."""
    if proc is not None:
        stop_process(proc)


# ---- what the chain did ----------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One ``devnet.status`` reading, at monotonic time ``t``."""

    t: float
    head: int
    aslot: int
    missed: int
    key: str
    confirmed: int
    halted: bool
    up: dict[str, bool]
    double: int


@dataclass(frozen=True)
class KeyChange:
    """The witness's signing key changed between ``before`` and ``after``; url/props after."""

    before: Sample
    after: Sample
    url: str
    props: dict[str, Any]


class Sampler:
    """Reads ``devnet.status`` every ``SAMPLE_S`` in a thread; records key changes."""

    def __init__(self, url: str) -> None:
        self._client = DevnetClient(url, timeout_s=5)
        self.samples: list[Sample] = []
        self.changes: list[KeyChange] = []
        self._first_seen: dict[int, float] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                st = self._client.status()
                w = st["witness"]
                s = Sample(time.monotonic(), st["head_block_number"], st["current_aslot"],
                           w["total_missed"], w["signing_key"], w["last_confirmed_block_num"],
                           st["halted"],
                           # A stuck node is out of sync: up, but it produces nothing.
                           {n["name"]: n["up"] and not n["faults"].get("stuck", False)
                            for n in st["nodes"]},
                           st["double_production"])
                prev = self.samples[-1] if self.samples else None
                change = None
                if prev is not None and prev.key != s.key:
                    doc = self._client.call("condenser_api.get_witness_by_account", [WATCHED])
                    change = KeyChange(prev, s, doc["url"], doc["props"])
            except ChainError:
                self._stop.wait(SAMPLE_S)
                continue
            with self._cond:
                self.samples.append(s)
                self._first_seen.setdefault(s.aslot, s.t)
                if change is not None:
                    self.changes.append(change)
                self._cond.notify_all()
            self._stop.wait(SAMPLE_S)

    def latest(self) -> Sample:
        """The newest sample (waits for the first)."""
        got = self.wait(lambda s: True, 30)
        assert got is not None, "no devnet.status sample"
        return got

    def wait(self, predicate: Callable[[Sample], bool], timeout_s: float) -> Sample | None:
        """The first new-or-latest sample satisfying ``predicate``; None on timeout."""
        with self._cond:
            ok = self._cond.wait_for(lambda: bool(self.samples) and predicate(self.samples[-1]),
                                     timeout_s)
            return self.samples[-1] if ok else None

    def first_seen(self, aslot: int) -> float | None:
        """When a head in ``aslot`` was first sampled."""
        with self._cond:
            return self._first_seen.get(aslot)

    def window(self, t0: float, t1: float) -> list[Sample]:
        """The samples taken in [t0, t1]."""
        with self._cond:
            return [s for s in self.samples if t0 <= s.t <= t1]

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._client.close()


class Drill:
    """One devnet process, its drill directory, and the chain resets between trials."""

    def __init__(self, directory: Path, port_base: int, slot_s: float, twilio_url: str) -> None:
        self.dir, self.port, self.slot_s = directory, port_base, slot_s
        subprocess.run([console_script("witness-devnet"), "init", str(directory), "--port-base",
                        str(port_base), "--slot-seconds", str(slot_s), "--chain", "hive",
                        "--key-mode", "active", "--fast-kdf"], check=True, capture_output=True,
                       timeout=120)
        self._scale_signer_cooldown()
        self._add_watcher_sms(twilio_url)
        self._probe_from(WATCHER_SOURCE)
        cfg = tomllib.loads((directory / "devnet.toml").read_text(encoding="utf-8"))
        self.active_wif = str(cfg["accounts"]["active_wif"])
        base = f"http://127.0.0.1:{port_base}/"
        self.nodes = [base, f"{base}rpc/1", f"{base}rpc/2"]  # both tools' RPC nodes
        # The harness's own endpoint, never faulted and read by neither tool.
        self.url = f"{base}rpc/3"
        self.proc = start_process([console_script("witness-devnet"), "serve", "--config",
                            str(directory / "devnet.toml")], directory / "devnet.log")
        self.client = DevnetClient(self.url, timeout_s=5)
        if not _until(self._answers, 30):
            _terminate(self.proc)
            raise RuntimeError(f"the devnet did not start; see {directory}/devnet.log")
        status = self.client.status()
        self.chain_id = status["chain_id"]
        self.keys = {n["name"]: n["public_key"] for n in status["nodes"]}
        self.node_of = {v: k for k, v in self.keys.items()}
        self.truth = dict(ORIGINAL)
        self.sampler = Sampler(self.url)

    def _answers(self) -> bool:
        try:
            self.client.status()
        except ChainError:
            return False
        return True

    def _scale_signer_cooldown(self) -> None:
        """cooldown_s = 5 wall seconds is ~1.7 mainnet slots: keep it ~1.7 devnet slots."""
        path = self.dir / "signer.toml"
        text = path.read_text(encoding="utf-8")
        line = "cooldown_s = 5\n"
        assert line in text, "signer.toml no longer has the drill's cooldown_s = 5"
        scaled = 5 * self.slot_s / MAINNET_SLOT_S
        path.write_text(text.replace(line, f"cooldown_s = {scaled:.3f}\n"), encoding="utf-8")

    def _probe_from(self, source: str) -> None:
        """The watcher's probes of the nodes' APIs leave from ``source`` (a loopback address)."""
        path = self.dir / "watcher.toml"
        text = path.read_text(encoding="utf-8")
        lines = f'# [health]\n# source_address = "{source}"'
        assert lines in text, "watcher.toml no longer offers [health] source_address"
        path.write_text(text.replace(lines, f'[health]\nsource_address = "{source}"'),
                        encoding="utf-8")

    def _add_watcher_sms(self, twilio_url: str) -> None:
        token = self.dir / "keys" / "twilio.token"
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(TWILIO_TOKEN + "\n")
        with (self.dir / "watcher.toml").open("a", encoding="utf-8") as fh:
            fh.write(f'\n[twilio]\naccount_sid = "{TWILIO_SID}"\n'
                     'auth_token_file = "keys/twilio.token"\nfrom = "+15550000000"\n'
                     f'to = ["+15551111111"]\napi_base_url = "{twilio_url}"\n')

    def call(self, method: str, params: Any = None) -> Any:
        """One JSON-RPC call on the harness's own endpoint ``/rpc/3``."""
        return self.client.call(method, params)

    def slots(self, n: float) -> None:
        """Sleep ``n`` slots of wall time."""
        time.sleep(max(0.0, n * self.slot_s))

    def witness(self) -> dict[str, Any]:
        """``get_witness_by_account`` for the watched witness."""
        return dict(self.call("condenser_api.get_witness_by_account", [WATCHED]))

    def matches_truth(self, url: str, props: dict[str, Any]) -> bool:
        """Whether url and props are what the owner last voted on chain."""
        return url == self.truth["url"] and all(props.get(f) == self.truth[f]
                                                for f in PROP_FIELDS)

    def set_witness(self, key: str, values: dict[str, Any]) -> None:
        """witness_update with the active key; wait until the chain shows it.

        Raises:
            RuntimeError: the chain does not show it after three attempts.
        """
        for _ in range(3):
            tx = seed.signed_witness_update(
                owner=WATCHED, url=values["url"], signing_key=key,
                props={f: values[f] for f in PROP_FIELDS}, core_symbol="HIVE",
                head=self.call("condenser_api.get_dynamic_global_properties", []),
                wif=self.active_wif, chain_id=self.chain_id)
            tx.pop("transaction_id")
            self.call("condenser_api.broadcast_transaction", [tx])

            def shown() -> bool:
                w = self.witness()
                return w["signing_key"] == key and w["url"] == values["url"] and all(
                    w["props"].get(f) == values[f] for f in PROP_FIELDS)

            if _until(shown, 10 * self.slot_s + 1):
                return
        raise RuntimeError("the reset witness_update was not included")

    def reset(self) -> None:
        """Faults cleared, chain running, every node up, primary's key, original props."""
        for endpoint in ("/", *(f"/rpc/{i}" for i in (1, 2, 3))):
            self.call("devnet.set_faults", {"endpoint": endpoint, **CLEAR_FAULTS})
        for name in self.keys:
            self.call("devnet.set_node_faults", {"name": name, **CLEAR_NODE_FAULTS})
        if self.client.status()["halted"]:
            self.call("devnet.resume", {})
        for name in self.keys:
            self.call("devnet.start_node", {"name": name})
        self.truth = dict(ORIGINAL)
        self.set_witness(self.keys["primary"], self.truth)
        self.slots(1)

    def close(self) -> None:
        """Stop sampling and the devnet."""
        self.sampler.close()
        _terminate(self.proc)
        self.client.close()


# ---- the two tools ---------------------------------------------------------------------


@dataclass(frozen=True)
class Counters:
    """What a tool reports about itself over one trial."""

    sms: int
    rpc_calls: int  # ours: chain reads plus the probes of the producer nodes' APIs
    running_s: float
    sms_kinds: dict[str, int]
    preemptive: int = 0  # switches made on health evidence, before a miss (signer's audit)
    refusals: dict[str, int] = field(default_factory=dict)  # the signer's, by rule


def _calls(metrics: dict[str, float]) -> float:
    """The watcher's RPC calls so far: chain reads plus probes of the nodes' own APIs."""
    return (metrics["witness_watcher_rpc_calls_total"]
            + metrics.get("witness_watcher_probe_calls_total", 0.0))


class Ours:
    """witness-signer + witness-watcher from the drill directory, fresh state per trial."""

    name = "ours"

    def __init__(self, drill: Drill, twilio: FakeTwilio) -> None:
        self.drill, self.twilio = drill, twilio
        self.signer: subprocess.Popen[bytes] | None = None
        self.watcher: subprocess.Popen[bytes] | None = None
        self._start: tuple[float, float, int] = (0.0, 0.0, 0)

    def _metrics(self) -> dict[str, float]:
        text = requests.get(f"http://127.0.0.1:{self.drill.port + 2}/metrics", timeout=2).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def _phase(self) -> str | None:
        try:
            m = self._metrics()
        except requests.RequestException:
            return None
        return next((k.split('"')[1] for k, v in m.items()
                     if k.startswith("witness_watcher_state{") and v == 1), None)

    def start(self) -> None:
        """Wipe both state directories; start the signer, then the watcher; wait until armed."""
        d = self.drill.dir
        for state in ("signer-state", "watcher-state"):
            for path in (d / state).iterdir():
                path.unlink()
        self.signer = start_process([console_script("witness-signer"), "serve", "--config",
                              str(d / "signer.toml")], d / "signer.log")

        def healthy() -> bool:
            try:
                url = f"http://127.0.0.1:{self.drill.port + 1}/healthz"
                return requests.get(url, timeout=1).status_code == 200
            except requests.RequestException:
                return False

        if not _until(healthy, 30):
            raise RuntimeError("the signer did not start; see signer.log")
        self.watcher = start_process([console_script("witness-watcher"), "run", "--config",
                               str(d / "watcher.toml")], d / "watcher.log")
        if not _until(lambda: self._phase() == "armed", 30):
            raise RuntimeError("the watcher did not arm; see watcher.log")
        m = self._metrics()
        self._start = (time.monotonic(), _calls(m),
                       len(self.twilio.messages))

    def settle(self, timeout_s: float) -> None:
        """Let an outstanding request finish (confirmed, re-armed) before stopping."""
        _until(lambda: self._phase() in ("armed", "stopped"), timeout_s)

    def stop(self) -> Counters:
        """Stop both; the watcher drains its SMS queue on SIGTERM."""
        t0, calls0, sms0 = self._start
        try:
            calls = _calls(self._metrics()) - calls0
        except (requests.RequestException, KeyError):
            calls = 0.0  # the watcher is not up: the trial fails anyway
        running = time.monotonic() - t0
        _terminate(self.watcher)
        _terminate(self.signer)
        sent = self.twilio.messages[sms0:]
        kinds = Counter(m.body.split("]", 1)[0].lstrip("[") for m in sent)
        # The signer's audit of this trial (start() wiped the state directory).
        audit = signer_audit(self.drill.dir)
        evidence = {e["request_id"] for e in audit if e.get("event") == "request"
                    and (e.get("data") or {}).get("preemptive")}
        preemptive = sum(1 for e in audit if e.get("event") == "broadcast"
                         and e["request_id"] in evidence)
        refusals = Counter(str((e.get("data") or {}).get("rule")) for e in audit
                           if e.get("event") == "refused")
        return Counters(len(sent), int(calls), running, dict(kinds), preemptive,
                        dict(refusals))


class Seed:
    """bench/baseline.py as a process, with the threshold an operator would set by hand."""

    name = "baseline"

    def __init__(self, drill: Drill) -> None:
        self.drill = drill
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = drill.dir / "baseline.toml"
        self.result = drill.dir / "baseline-result.json"

    def start(self) -> None:
        """Write the config (threshold = total_missed + 1 now), start, wait for its first poll."""
        threshold = int(self.drill.witness()["total_missed"]) + 1
        props = ", ".join(f"{f} = {json.dumps(ORIGINAL[f])}" for f in PROP_FIELDS)
        text = (f'[baseline]\naccount = "{WATCHED}"\nnodes = {json.dumps(self.drill.nodes)}\n'
                f"poll_slots = 10\nslot_seconds = {self.drill.slot_s}\n"
                f"threshold = {threshold}\ntimeout_s = 2\n"
                f'chain_id = "{self.drill.chain_id}"\ncore_symbol = "HIVE"\n'
                f'active_wif = "{self.drill.active_wif}"\n'
                f'new_signing_key = "{self.drill.keys["backup1"]}"\n\n'
                f'[witness]\nurl = "{ORIGINAL["url"]}"\nprops = {{{props}}}\n')
        self.config.unlink(missing_ok=True)
        fd = os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        self.result.unlink(missing_ok=True)
        self.proc = start_process([sys.executable, str(REPO / "bench" / "baseline.py"), "--config",
                            str(self.config), "--result", str(self.result)],
                           self.drill.dir / "baseline.log")
        if not _until(self.result.exists, 30, 0.01):
            raise RuntimeError("the baseline did not start; see baseline.log")

    def settle(self, timeout_s: float) -> None:
        """Nothing outstanding: the seed script never waits for anything."""

    def stop(self) -> Counters:
        """SIGTERM if it is still polling; read its counters."""
        _terminate(self.proc)
        if not self.result.exists():
            return Counters(0, 0, 0.0, {})
        r = json.loads(self.result.read_text(encoding="utf-8"))
        return Counters(int(r["sms"]), int(r["rpc_calls"]),
                        float(r["ended_at"]) - float(r["started_at"]),
                        {"switched": int(r["sms"])} if r["sms"] else {})


Tool = Ours | Seed


# ---- the scenarios ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """A failure injected at ``t``; ``node`` is stopped for good (it needs a switch)."""

    t: float
    node: str | None = None


@dataclass
class Played:
    """What a scenario did: its faults, when its window ended, and scenario facts."""

    faults: list[Fault]
    t_end: float
    extra: dict[str, Any] = field(default_factory=dict)


def params_for(scenario: str, rng: random.Random) -> dict[str, Any]:
    """Random parameters of one trial, shared by both tools."""
    p: dict[str, Any] = {"after_slots": rng.randint(0, WITNESSES - 1), "frac": rng.random()}
    if scenario == "flap":
        p["down_fraction"] = rng.uniform(0.6, 0.9)
    elif scenario == "rpc_fault":
        p["kind"] = rng.choice(sorted(RPC_FAULTS))
    elif scenario == "halt":
        p["rounds"] = rng.randint(2, 3)
    elif scenario == "second_failure":
        p["kill_after_slots"] = rng.randint(0, 3)
    elif scenario == "config_drift":
        p["drift"] = {"url": f"https://{WATCHED}.example/v{rng.randint(2, 99)}",
                      "account_creation_fee": rng.choice(["0.001 HIVE", "5.000 HIVE"]),
                      "maximum_block_size": rng.choice([131072, 262144]),
                      "hbd_interest_rate": rng.choice([0, 1000, 2000])}
    return p


def _crash(drill: Drill, p: dict[str, Any], node: str = "primary", *,
           stuck: bool = False) -> Fault:
    """Stop ``node`` (or make it ``stuck``) a random number of slots (and a fraction)
    after alice produced."""
    confirmed = drill.sampler.latest().confirmed
    drill.sampler.wait(lambda s: s.confirmed > confirmed, 3 * WITNESSES * drill.slot_s)
    drill.slots(p["after_slots"] + p["frac"])
    if stuck:
        drill.call("devnet.set_node_faults", {"name": node, "stuck": True})
    else:
        drill.call("devnet.stop_node", {"name": node})
    return Fault(time.monotonic(), node)


def _switched_from(drill: Drill, key: str, timeout_slots: float) -> Sample | None:
    return drill.sampler.wait(lambda s: s.key != key, timeout_slots * drill.slot_s)


def play_crash(drill: Drill, p: dict[str, Any]) -> Played:
    """Primary crashes at a random point of the round; up to 4 rounds to switch."""
    fault = _crash(drill, p)
    _switched_from(drill, drill.keys["primary"], 4 * WITNESSES)
    drill.slots(3)  # a miss right before the switch shows one block later
    return Played([fault], time.monotonic())


def _alice_slot_ahead(drill: Drill) -> int:
    """The absolute slot of alice's next turn, at least two slots ahead."""
    while True:
        schedule = parse_schedule(drill.call("condenser_api.get_witness_schedule", []))
        dgpo = drill.call("condenser_api.get_dynamic_global_properties", [])
        head, aslot = dgpo["head_block_number"], dgpo["current_aslot"]
        n = slots_until(schedule, WATCHED, aslot, head)
        if head < schedule.next_shuffle_block_num and n is not None and n >= 2:
            return int(aslot + n)
        drill.slots(1)


def _reached(aslot: int, sample: Sample) -> bool:
    """Whether ``sample`` is at absolute slot ``aslot`` or later."""
    return sample.aslot >= aslot


def play_flap(drill: Drill, p: dict[str, Any]) -> Played:
    """Primary down for ``down_fraction`` of a slot from half a slot before alice's tick."""
    s = drill.slot_s
    for _ in range(5):
        target = _alice_slot_ahead(drill)
        # The sampler sees a new head up to ~50 ms late; the slot before alice's is
        # caught by a short tight poll instead, so the flap is placed to a few ms.
        drill.sampler.wait(functools.partial(_reached, target - 2), 2 * WITNESSES * s)
        if drill.call("condenser_api.get_dynamic_global_properties", [])[
                "current_aslot"] >= target - 1:
            continue
        while drill.call("condenser_api.get_dynamic_global_properties", [])[
                "current_aslot"] < target - 1:
            time.sleep(0.002)
        # Down from mid-slot, so alice's tick falls early in the window even when the
        # head before it was seen 20-40 ms late (HTTP latency on two busy cores).
        start = time.monotonic() + s / 2
        if time.monotonic() >= start:
            continue
        time.sleep(start - time.monotonic())
        drill.call("devnet.stop_node", {"name": "primary"})
        t_down = time.monotonic()
        time.sleep(max(0.0, t_down + p["down_fraction"] * s - time.monotonic()))
        drill.call("devnet.start_node", {"name": "primary"})
        up_after = time.monotonic() - t_down
        drill.sampler.wait(functools.partial(_reached, target + 16), 3 * WITNESSES * s)
        drill.slots(2)
        missed = drill.client.status()["watched_slots"]["recent_missed_aslots"]
        return Played([Fault(t_down)], time.monotonic(),
                      {"flap_hit_alice_slot": target in missed, "down_slots": up_after / s})
    raise RuntimeError("could not place the flap on alice's slot")


def play_rpc_fault(drill: Drill, p: dict[str, Any]) -> Played:
    """The first node of both tools' lists goes stale / errs / hangs for two rounds."""
    drill.slots(p["frac"] * 10)
    drill.call("devnet.set_faults", {"endpoint": "/", **RPC_FAULTS[p["kind"]]})
    drill.slots(2 * WITNESSES)
    drill.call("devnet.set_faults", {"endpoint": "/", **CLEAR_FAULTS})
    return Played([], time.monotonic(), {"kind": p["kind"]})


def play_halt(drill: Drill, p: dict[str, Any]) -> Played:
    """The whole chain halts for 2-3 rounds of wall time, resumes; 15 slots to react."""
    drill.slots((p["after_slots"] + p["frac"]) / 2)
    drill.call("devnet.halt", {})
    drill.slots(p["rounds"] * WITNESSES)
    drill.call("devnet.resume", {})
    drill.slots(15)  # more than one of the seed's 10-slot polls
    return Played([], time.monotonic(), {"rounds": p["rounds"]})


def play_second_failure(drill: Drill, p: dict[str, Any]) -> Played:
    """Primary crashes; after the switch, backup1 dies too; 3 rounds for a second switch."""
    faults = [_crash(drill, p)]
    if _switched_from(drill, drill.keys["primary"], 4 * WITNESSES) is not None:
        drill.slots(p["kill_after_slots"])
        drill.call("devnet.stop_node", {"name": "backup1"})
        faults.append(Fault(time.monotonic(), "backup1"))
        drill.sampler.wait(lambda s: s.key not in (drill.keys["primary"], drill.keys["backup1"]),
                           3 * WITNESSES * drill.slot_s)
        drill.slots(3)
    return Played(faults, time.monotonic())


def play_config_drift(drill: Drill, p: dict[str, Any]) -> Played:
    """Props on chain were changed (set before the tool started); then primary crashes."""
    return play_crash(drill, p)


def play_stuck(drill: Drill, p: dict[str, Any]) -> Played:
    """Primary gets stuck (answers, head frozen, produces nothing) at a random point."""
    fault = _crash(drill, p, stuck=True)
    _switched_from(drill, drill.keys["primary"], 4 * WITNESSES)
    drill.slots(3)
    return Played([fault], time.monotonic())


def play_partition(drill: Drill, p: dict[str, Any]) -> Played:
    """Only our watcher's probes lose the healthy primary, for two rounds: no switch is right."""
    drill.slots(p["after_slots"] + p["frac"])
    drill.call("devnet.set_node_faults", {"name": "primary", "partition": [WATCHER_SOURCE],
                                          "partition_mode": "reset"})
    drill.slots(2 * WITNESSES)
    drill.call("devnet.set_node_faults", {"name": "primary", "partition": []})
    drill.slots(3)
    return Played([], time.monotonic())


PLAY: dict[str, Callable[[Drill, dict[str, Any]], Played]] = {
    "crash": play_crash, "flap": play_flap, "rpc_fault": play_rpc_fault, "halt": play_halt,
    "second_failure": play_second_failure, "config_drift": play_config_drift,
    "stuck": play_stuck, "partition": play_partition}


# ---- one trial, and the figures ----------------------------------------------------------


def run_trial(drill: Drill, tool: Tool, scenario: str, p: dict[str, Any]) -> dict[str, Any]:
    """Reset the chain, start ``tool``, play ``scenario``, and measure from the samples."""
    drill.reset()
    if scenario == "config_drift":
        drill.set_witness(drill.keys["primary"], p["drift"])
        drill.truth = dict(p["drift"])
    try:
        tool.start()
        t_start = time.monotonic()
        played = PLAY[scenario](drill, p)
        tool.settle(WITNESSES * drill.slot_s)
    finally:
        counters = tool.stop()  # never leave a signer or watcher running
    return measure(drill, t_start, played, counters)


def measure(drill: Drill, t_start: float, played: Played, c: Counters) -> dict[str, Any]:
    """The trial's figures, from the chain's samples between tool start and window end."""
    samples = drill.sampler.window(t_start, played.t_end)
    first, last = samples[0], samples[-1]
    switches = [k for k in drill.sampler.changes if t_start <= k.after.t <= played.t_end]
    latencies_s, latencies_blocks, fault_to_switch = [], [], []
    for k in switches:
        fault = max((f for f in played.faults if f.t <= k.after.t), key=lambda f: f.t,
                    default=None)
        if fault is None:
            continue
        fault_to_switch.append(k.after.t - fault.t)
        before = [s for s in samples if s.t <= fault.t] or [first]
        visible = next((s for s in samples if fault.t < s.t <= k.after.t
                        and s.missed > before[-1].missed), None)
        if visible is not None:
            latencies_s.append(k.after.t - visible.t)
            latencies_blocks.append(k.after.head - visible.head)
    unrecovered = sum(1 for f in played.faults if f.node is not None and not any(
        k.after.t > f.t and k.before.key == drill.keys[f.node] for k in switches))
    return {
        "missed_blocks": last.missed - first.missed,
        "detect_to_switch_s": latencies_s,
        "detect_to_switch_blocks": latencies_blocks,
        # Pre-emptive switches have no visible miss: this one is from the fault itself.
        "fault_to_switch_s": fault_to_switch,
        "preemptive_switches": c.preemptive,
        "refusals_by_rule": c.refusals,
        "switches": len(switches),
        # Unneeded: the node holding the replaced key was up when the switch landed.
        "false_switches": sum(1 for k in switches
                              if k.before.up.get(drill.node_of.get(k.before.key, ""), False)),
        "clobbering_switches": sum(1 for k in switches
                                   if not drill.matches_truth(k.url, k.props)),
        "unrecovered": unrecovered,
        "sms": c.sms,
        "sms_kinds": c.sms_kinds,
        "rpc_calls_per_hour": c.rpc_calls / c.running_s * CHAIN_HOUR_SLOTS * drill.slot_s
        if c.running_s > 0 else 0.0,
        "double_production": last.double - first.double,
        **played.extra,
    }


def machine() -> dict[str, Any]:
    """nproc, Python and platform of this run."""
    cpu = ""
    with ExitStack() as stack:
        try:
            fh = stack.enter_context(Path("/proc/cpuinfo").open(encoding="utf-8"))
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh
                        if ln.startswith("model name")), "")
        except OSError:
            pass
    return {"nproc": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "platform": platform.platform(), "cpu": cpu}


@contextmanager
def drill_running(args: argparse.Namespace) -> Iterator[tuple[Drill, FakeTwilio]]:
    """A fake Twilio and a devnet in a fresh directory; both stopped afterwards.

    The directory (with every process's log) is kept with --keep-dir or after a failure.
    """
    directory = Path(tempfile.mkdtemp(prefix="headtohead-")) / "drill"
    with FakeTwilio(TWILIO_SID, TWILIO_TOKEN) as twilio:
        # Below the ephemeral range: the signer and the watcher's metrics rebind P+1
        # and P+2 every trial, and an outgoing connection must not take them meanwhile.
        drill = Drill(directory, args.port_base or free_port_base(below_ephemeral=True),
                      args.slot_seconds,
                      twilio.base_url)
        try:
            yield drill, twilio
        except BaseException:
            print(f"failed; logs kept in {directory}", file=sys.stderr, flush=True)
            raise
        finally:
            drill.close()
    if not args.keep_dir:
        shutil.rmtree(directory.parent, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All trials, alternating the tools; the JSON document."""
    rng = random.Random(args.seed)
    began = time.monotonic()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        s: {"ours": [], "baseline": []} for s in args.scenarios}
    with drill_running(args) as (drill, twilio):
        print(f"devnet in {drill.dir}, slot {drill.slot_s} s", file=sys.stderr, flush=True)
        tools: dict[str, Tool] = {"ours": Ours(drill, twilio), "baseline": Seed(drill)}
        for r in range(args.trials):
            for i, scenario in enumerate(args.scenarios):
                p = params_for(scenario, rng)
                order = ("ours", "baseline") if (r + i) % 2 == 0 else ("baseline", "ours")
                for name in order:
                    trial = run_trial(drill, tools[name], scenario, p)
                    results[scenario][name].append(trial)
                    print(f"[{time.monotonic() - began:6.0f} s] trial {r + 1} {scenario:15}"
                          f"{name:9} missed {trial['missed_blocks']} switches "
                          f"{trial['switches']} sms {trial['sms']} detect→switch "
                          f"{[round(x, 2) for x in trial['detect_to_switch_s']]}",
                          file=sys.stderr, flush=True)
    doc: dict[str, Any] = {"scenarios": {}}
    for scenario, by_tool in results.items():
        ours, base = summarize(by_tool["ours"]), summarize(by_tool["baseline"])
        doc["scenarios"][scenario] = {"ours": ours, "baseline": base,
                                      "ratio_ours_to_baseline": ratios(ours, base),
                                      "per_trial": by_tool}
    doc["run"] = {"trials_per_scenario": args.trials, "slot_seconds": args.slot_seconds,
                  "seed": args.seed, "elapsed_s": round(time.monotonic() - began),
                  "command": command(args), "machine": machine()}
    return doc


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run."""
    parts = [".venv/bin/python", "bench/headtohead.py", "--trials", str(args.trials),
             "--slot-seconds", str(args.slot_seconds), "--seed", str(args.seed)]
    if tuple(args.scenarios) != SCENARIOS:
        parts += ["--scenarios", *args.scenarios]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run, print the JSON, write the Markdown report and the chart."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5,
                   help="trials per scenario and tool (default 5: about 16 min on 2 cores)")
    p.add_argument("--slot-seconds", type=float, default=0.2,
                   help="devnet wall seconds per 3-second chain slot (default 0.2)")
    p.add_argument("--seed", type=int, default=1, help="seed of the trial parameters")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--port-base", type=int, default=0, help="devnet port P (default: free)")
    p.add_argument("--keep-dir", action="store_true", help="keep the drill directory and logs")
    p.add_argument("--docs", type=Path, default=REPO / "docs",
                   help="where headtohead.md and headtohead.png go")
    p.add_argument("--no-docs", action="store_true", help="print the JSON only")
    p.add_argument("--real-interval-json", type=Path, metavar="FILE",
                   help="add the JSON of a run at --slot-seconds 3 to the docs, in its own "
                   "section")
    p.add_argument("--from-json", type=Path, metavar="FILE",
                   help="no run: rewrite the docs from the JSON a previous run printed")
    args = p.parse_args(argv)
    if args.from_json is not None:
        doc = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        doc = run(args)
        print(json.dumps(doc, indent=1))
    if not args.no_docs:
        real = None if args.real_interval_json is None else json.loads(
            args.real_interval_json.read_text(encoding="utf-8"))
        write_docs(doc, args.docs, real)
    return 0


if __name__ == "__main__":
    sys.exit(main())
