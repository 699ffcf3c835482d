"""Head-to-head: this design against the seed script's, on one devnet and the same outages.

Starts one devnet (``witness-devnet init --fast-kdf`` + ``serve``) and runs, for
each of six scenarios and ``--trials`` randomized trials, the same outage once
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
    .venv/bin/python bench/headtohead.py            # --trials 5: about 13 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
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
from shared.errors import ChainError
from watcher.schedule import parse_schedule, slots_until

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = ("crash", "flap", "rpc_fault", "halt", "second_failure", "config_drift")
WITNESSES = 21
MAINNET_SLOT_S = 3.0
CHAIN_HOUR_SLOTS = 3600 / MAINNET_SLOT_S
SAMPLE_S = 0.02
WATCHED = "alice"
TWILIO_SID = "AC" + "5f" * 16
TWILIO_TOKEN = "tok-" + "9c" * 14  # known only to the local fake Twilio
ORIGINAL = {"url": f"https://{WATCHED}.example/witness", "account_creation_fee": "3.000 HIVE",
            "maximum_block_size": 65536, "hbd_interest_rate": 1500}
PROP_FIELDS = ("account_creation_fee", "maximum_block_size", "hbd_interest_rate")
RPC_FAULTS = {"stale": {"freeze_head": True}, "errors": {"error_rate": 1.0},
              "flaky": {"error_rate": 0.5}, "timeout": {"timeout": True}}
CLEAR_FAULTS = {"latency_s": 0.0, "error_rate": 0.0, "timeout": False, "freeze_head": False,
                "wrong_data": False}


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
                           st["halted"], {n["name"]: n["up"] for n in st["nodes"]},
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
    rpc_calls: int
    running_s: float
    sms_kinds: dict[str, int]


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
        self._start = (time.monotonic(), m["witness_watcher_rpc_calls_total"],
                       len(self.twilio.messages))

    def settle(self, timeout_s: float) -> None:
        """Let an outstanding request finish (confirmed, re-armed) before stopping."""
        _until(lambda: self._phase() in ("armed", "stopped"), timeout_s)

    def stop(self) -> Counters:
        """Stop both; the watcher drains its SMS queue on SIGTERM."""
        t0, calls0, sms0 = self._start
        try:
            calls = self._metrics()["witness_watcher_rpc_calls_total"] - calls0
        except (requests.RequestException, KeyError):
            calls = 0.0  # the watcher is not up: the trial fails anyway
        running = time.monotonic() - t0
        _terminate(self.watcher)
        _terminate(self.signer)
        sent = self.twilio.messages[sms0:]
        kinds = Counter(m.body.split("]", 1)[0].lstrip("[") for m in sent)
        return Counters(len(sent), int(calls), running, dict(kinds))


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


def _crash(drill: Drill, p: dict[str, Any], node: str = "primary") -> Fault:
    """Stop ``node`` a random number of slots (and a fraction) after alice produced."""
    confirmed = drill.sampler.latest().confirmed
    drill.sampler.wait(lambda s: s.confirmed > confirmed, 3 * WITNESSES * drill.slot_s)
    drill.slots(p["after_slots"] + p["frac"])
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


def play_flap(drill: Drill, p: dict[str, Any]) -> Played:
    """Primary down for ``down_fraction`` of a slot from half a slot before alice's tick."""
    s = drill.slot_s
    for _ in range(5):
        target = _alice_slot_ahead(drill)
        # The sampler sees a new head up to ~50 ms late; the slot before alice's is
        # caught by a short tight poll instead, so the flap is placed to a few ms.
        drill.sampler.wait(lambda x, t=target: x.aslot >= t - 2, 2 * WITNESSES * s)
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
        drill.sampler.wait(lambda x, t=target: x.aslot >= t + 16, 3 * WITNESSES * s)
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


PLAY: dict[str, Callable[[Drill, dict[str, Any]], Played]] = {
    "crash": play_crash, "flap": play_flap, "rpc_fault": play_rpc_fault, "halt": play_halt,
    "second_failure": play_second_failure, "config_drift": play_config_drift}


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
    latencies_s, latencies_blocks = [], []
    for k in switches:
        fault = max((f for f in played.faults if f.t <= k.after.t), key=lambda f: f.t,
                    default=None)
        if fault is None:
            continue
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


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)])


def summarize(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Per scenario and tool: percentiles of the distributions, totals of the counts."""
    missed = [t["missed_blocks"] for t in trials]
    lat_s = [x for t in trials for x in t["detect_to_switch_s"]]
    lat_b = [x for t in trials for x in t["detect_to_switch_blocks"]]

    def dist(values: list[float], digits: int) -> dict[str, Any]:
        return {k: None if v is None else round(v, digits) for k, v in
                (("p50", pct(values, 50)), ("p95", pct(values, 95)),
                 ("max", pct(values, 100)))} | {"n": len(values)}

    out: dict[str, Any] = {
        "trials": len(trials), "missed_blocks": dist(missed, 1),
        "detect_to_switch_s": dist(lat_s, 2), "detect_to_switch_blocks": dist(lat_b, 1)}
    for name in ("switches", "false_switches", "clobbering_switches", "unrecovered", "sms",
                 "double_production"):
        out[name] = sum(t[name] for t in trials)
    out["rpc_calls_per_hour"] = round(sum(t["rpc_calls_per_hour"] for t in trials)
                                      / max(1, len(trials)))
    kinds: Counter[str] = Counter()
    for t in trials:
        kinds.update(t["sms_kinds"])
    out["sms_by_kind"] = dict(sorted(kinds.items()))
    if any("flap_hit_alice_slot" in t for t in trials):
        out["flaps_that_hit_alice_slot"] = sum(t["flap_hit_alice_slot"] for t in trials)
    if any("kind" in t for t in trials):
        out["fault_kinds"] = sorted(t["kind"] for t in trials)
    return out


RATIO_KEYS = (("missed_blocks", "p50"), ("missed_blocks", "p95"), ("missed_blocks", "max"),
              ("detect_to_switch_s", "p50"), ("detect_to_switch_s", "p95"),
              ("detect_to_switch_s", "max"), ("false_switches", None),
              ("clobbering_switches", None), ("unrecovered", None), ("sms", None),
              ("rpc_calls_per_hour", None))


def ratios(ours: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    """ours / baseline per figure; None where the baseline's figure is 0 or missing."""
    out: dict[str, float | None] = {}
    for key, sub in RATIO_KEYS:
        a = ours[key] if sub is None else ours[key][sub]
        b = base[key] if sub is None else base[key][sub]
        out[key if sub is None else f"{key}_{sub}"] = (
            None if a is None or not b else round(a / b, 2))
    return out


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


# ---- the report -------------------------------------------------------------------------

LOWER_IS_BETTER = ("missed_blocks", "detect_to_switch_s", "false_switches",
                   "clobbering_switches", "unrecovered", "sms", "rpc_calls_per_hour")
WHY_WORSE = {
    "missed_blocks": "Both tools act on the first visible miss; how many blocks that costs "
                     "is set by where the witness's next slot falls after the switch lands "
                     "(the schedule is reshuffled every round). A one-block difference in a "
                     "few trials is the shuffle, not the tool, unless the detect-to-switch "
                     "times differ by a slot or more.",
    "detect_to_switch_s": "Our path from a visible miss to an included switch is fixed "
                          "wall-clock work: the watcher's poll shortly after the block, a "
                          "signed HTTP request, the signer's own reads of the chain (it does "
                          "not trust the watcher), its SQLite bookkeeping, beem building and "
                          "signing (together about 0.4 s from request to signed transaction "
                          "on this 2-core machine), the broadcast, then the next block: "
                          "0.5-0.9 s in all here. "
                          "The seed's delay is wherever its 10-slot poll happens to fall "
                          "after the miss, anywhere from ~0 to 10 slots; when it falls right "
                          "after the miss the seed is faster. On this devnet a slot lasts "
                          "{slot} s instead of 3 s: our fixed cost weighs 3/{slot} = "
                          "{scale:.0f} times more blocks here than on a real chain (where it "
                          "is well under one block), while the seed's interval is scaled "
                          "with the slot (30 s on a real chain).",
    "false_switches": "With miss_threshold = 1 (the drill's setting, the same as the seed's "
                      "threshold of total_missed + 1) a flap that costs one block is a miss "
                      "like any other, and both switch to a healthy backup. Raising "
                      "watcher.miss_threshold and policy.min_missed rides out single-block "
                      "flaps at the price of one more missed block in a real crash.",
    "clobbering_switches": "Unexpected: the signer sends back the url and props it reads from "
                           "the chain. See the signer's audit log of the run (--keep-dir).",
    "unrecovered": "A failure left without a switch inside the window; see the watcher and "
                   "signer logs of the run (--keep-dir).",
    "sms": "We send two SMS per switch (switch_requested when the watcher asks, "
           "switch_confirmed when the chain shows it), and we alert on what the seed cannot "
           "see: a chain halt (chain_halted, then recovered) and too few fresh RPC nodes "
           "(rpc_unhealthy, then recovered). The seed sends one SMS per switch and nothing "
           "else. In rpc_fault, rpc_unhealthy comes from the `timeout` variant: a poll waits "
           "rpc_timeout_s = 2 s for the hanging node, which on {slot} s slots is "
           "{timeout_slots:.0f} blocks, so the node read after it is that many blocks ahead "
           "of the one read before it and the reader takes the earlier one as stale (lagging "
           "more than stale_after_s worth of blocks); with one fresh node left, quorum 2 "
           "fails. On a 3 s chain a 2 s timeout is under one block and this does not "
           "happen; the drill's 2 s timeout is not scaled to the devnet's slot.",
    "rpc_calls_per_hour": "The watcher reads two nodes per poll (quorum = 2, two calls "
                          "each: head and witness), polls right after each of the witness's "
                          "slots and at least every 10 slots, reads the schedule every round, "
                          "and reads the third node whenever the first two disagree or one is "
                          "stale or failing. In a halt every node is stale, so each poll "
                          "reads all three, every half slot until stale_after_s (5 slots), "
                          "then every 10 slots. The seed reads one node every 10 slots. Both "
                          "are negligible load for an API node. The signer's own reads (only "
                          "when asked to switch) are not counted.",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _dist(d: dict[str, Any]) -> str:
    return " / ".join(_fmt(d[k]) for k in ("p50", "p95", "max"))


def _worse(doc: dict[str, Any]) -> list[str]:
    """One bullet per figure on which ours is worse somewhere, with the reason."""
    slot = doc["run"]["slot_seconds"]
    lines = []
    for key in LOWER_IS_BETTER:
        hits = []
        for scenario, res in doc["scenarios"].items():
            ours, base = res["ours"][key], res["baseline"][key]
            pairs = ([(f"{sub} ", ours[sub], base[sub]) for sub in ("p50", "p95", "max")]
                     if isinstance(ours, dict) else [("", ours, base)])
            worse = [f"{sub}{_fmt(a)} vs {_fmt(b)}" for sub, a, b in pairs
                     if a is not None and b is not None and a > b]
            if worse:
                hits.append(f"{scenario} ({', '.join(worse)})")
        if hits:
            why = WHY_WORSE[key].format(slot=slot, scale=MAINNET_SLOT_S / slot,
                                        timeout_slots=2 / slot)
            lines.append(f"- **{key}**, ours vs baseline: {'; '.join(hits)}. {why}")
    return lines or ["- Nowhere in this run."]


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _scenario_notes(doc: dict[str, Any]) -> list[str]:
    """What each tool did per scenario, in words, from the figures of this run."""
    sc, lines = doc["scenarios"], []

    def pair(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return sc[name]["ours"], sc[name]["baseline"]

    if "flap" in sc:
        o, b = pair("flap")
        lines.append(
            f"- **flap**: the flap cost the witness its block in "
            f"{o.get('flaps_that_hit_alice_slot')} of {o['trials']} trials for ours and "
            f"{b.get('flaps_that_hit_alice_slot')} of {b['trials']} for the baseline; ours "
            f"switched {o['switches']} times, the baseline {b['switches']} times. Both act on "
            "the first miss (threshold 1), so both move to a healthy backup after a flap that "
            "cost a block; these count as false switches (the primary was back up when the "
            "switch landed), harmless but unneeded. A flap between the witness's slots is "
            "invisible to both.")
    if "rpc_fault" in sc:
        o, b = pair("rpc_fault")
        lines.append(
            f"- **rpc_fault** ({', '.join(o.get('fault_kinds', []))}): switches ours "
            f"{o['switches']}, baseline {b['switches']}; SMS ours {_kinds(o['sms_by_kind'])}, "
            f"baseline {_kinds(b['sms_by_kind'])}. Not measured here because the witness "
            "stayed healthy: with a stale first node the seed reads a frozen total_missed and "
            "would not see a crash; ours drops a stale or failing node and needs two fresh "
            "nodes that agree.")
    if "halt" in sc:
        o, b = pair("halt")
        lines.append(
            f"- **halt**: switches ours {o['switches']}, baseline {b['switches']} (a halted "
            f"chain counts no misses); SMS ours {_kinds(o['sms_by_kind'])}, baseline "
            f"{_kinds(b['sms_by_kind'])}.")
    if "second_failure" in sc:
        o, b = pair("second_failure")
        lines.append(
            f"- **second_failure**: backup1's death went unhandled in {b['unrecovered']} of "
            f"{b['trials']} baseline trials (it exits after its one switch; its missed blocks "
            "are cut off by the 3-round window and keep growing on a real chain until a human "
            f"acts); ours moved on to backup2 in {o['trials'] - o['unrecovered']} of "
            f"{o['trials']}.")
    if "config_drift" in sc:
        o, b = pair("config_drift")
        lines.append(
            f"- **config_drift**: the baseline overwrote the owner's on-chain url and props "
            f"with its config file's in {b['clobbering_switches']} of {b['switches']} "
            f"switches; ours in {o['clobbering_switches']} of {o['switches']} (the signer "
            "sends back what it reads on chain).")
    return lines


METHOD = """\
- **Same chain, same outages, alternating.** One devnet process for the whole run. For
  every trial the scenario's random parameters are drawn once and played for both tools,
  one after the other; which tool goes first alternates. Before each trial the chain is
  reset (all faults cleared, every node up, the primary's key and the original url and
  props set by a `witness_update` signed with the devnet's throwaway active key), and the
  tool starts fresh: the signer and watcher with empty state directories, the seed script
  with its threshold written by hand as the current `total_missed + 1`.
- **Time.** The devnet runs a 3-second chain slot in {slot} s of wall time. The seed's
  30 s poll is 10 slots. Our watcher's timings are in slots already (`poll_interval_s` =
  the slot). The signer's `cooldown_s = 5` (about 1.7 mainnet slots) is scaled to
  {cooldown:.3f} s (the same 1.7 slots); every other setting is the drill's default
  (`witness-devnet init --key-mode active`: quorum 2 of 3 nodes, miss_threshold 1,
  signer min_missed 1, approval auto). Both tools' RPC timeout is the drill's 2 s,
  not scaled: {timeout_slots:.0f} slots here.
- **Missed blocks** are the witness's `total_missed` at the end of the trial window minus
  at its start, read from `devnet.status` every 20 ms. **Seconds from the first visible
  miss to the switch included**: the sample where `total_missed` first grew after the
  fault, to the sample where the on-chain signing key changed (devnet wall seconds; the
  blocks column counts the blocks in between). **False switch**: the node holding the
  replaced key was up when the switch landed. **Clobbering switch**: after the switch the
  witness's url or props differ from what the owner last set on chain. **Unrecovered**:
  a node stopped for good with no switch away from its key inside the window.
  **SMS**: ours are the messages the watcher delivered to a local fake Twilio (the
  signer's optional SMS are not configured); the seed's are its counter. **RPC calls per
  hour** are per chain hour (1,200 slots): ours from the watcher's
  `witness_watcher_rpc_calls_total` (its `/metrics`), the seed's from its own counter,
  each over the time the tool ran.
- **Scenarios.** *crash*: primary stopped 0-20 slots (and a fraction) after the witness
  produced; window until the key changed (at most 4 rounds) plus 3 slots. *flap*: primary
  down for 0.6-0.9 of a slot, from half a slot before the witness's slot, so that the
  flap costs a block (a flap between its slots is invisible to both); window 16 slots
  past that slot.
  *rpc_fault*: the first node of both tools' lists (`/`) goes stale (`freeze_head`),
  errs (`error_rate` 1.0 or 0.5) or hangs (`timeout`) for two rounds while the witness
  is healthy. *halt*: `devnet.halt` for 2-3 rounds of wall time, then `devnet.resume`
  and 15 more slots. *second_failure*: as crash; after the first switch backup1 is
  stopped 0-3 slots later; window until a second switch or 3 rounds. The seed script has
  exited by then, so its count is cut off by the window: on a real chain it keeps
  missing until a human notices. *config_drift*: before the trial the owner changes
  url and props on chain (`witness_update` with the active key); the seed's config file
  still has the old ones; then as crash.
- **Small samples.** With n trials a percentile is the nearest rank: with 5 trials p95
  is the maximum. A difference of one block or a few tenths of a second between the
  tools in one scenario is within what the schedule shuffle and the seed's poll phase
  produce by chance; look at the rows together.
- **RPC calls per hour over short runs.** The seed script runs only until it switches
  (a few seconds here), so its rate includes its first poll and the two calls of the
  switch: its steady rate (120 per chain hour) shows in the rpc_fault and halt rows,
  where it never switches. Ours is measured from the moment the watcher armed.
- **Not measured.** A lying node (`wrong_data`) is not among the issue's scenarios: the
  seed trusts one node and would switch on it, our quorum would not. The signer's own
  RPC reads are not in our calls per hour. The devnet is one process, so node latency
  is near zero; on a public node both tools' reads take longer.
"""


def write_docs(doc: dict[str, Any], docs: Path) -> None:
    """docs/headtohead.md (tables, command, machine, notes) and docs/headtohead.png."""
    run_info, m = doc["run"], doc["run"]["machine"]
    slot = run_info["slot_seconds"]
    rows = ["| scenario | tool | missed blocks p50 / p95 / max | first visible miss → switch "
            "included, s p50 / p95 / max | … in blocks | switches | false switches | "
            "clobbering switches | unrecovered | SMS | RPC calls / chain hour |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    ratio_rows = ["| scenario | " + " | ".join(
        k if s is None else f"{k} {s}" for k, s in RATIO_KEYS) + " |",
        "|---|" + "---|" * len(RATIO_KEYS)]
    for scenario, res in doc["scenarios"].items():
        for tool in ("ours", "baseline"):
            r = res[tool]
            rows.append(f"| {scenario} | {tool} | {_dist(r['missed_blocks'])} | "
                        f"{_dist(r['detect_to_switch_s'])} | "
                        f"{_dist(r['detect_to_switch_blocks'])} | {r['switches']} | "
                        f"{r['false_switches']} | {r['clobbering_switches']} | "
                        f"{r['unrecovered']} | {r['sms']} | {r['rpc_calls_per_hour']} |")
        ratio = res["ratio_ours_to_baseline"]
        ratio_rows.append(f"| {scenario} | " + " | ".join(_fmt(v) for v in ratio.values())
                          + " |")
    extras = [f"double production (two nodes signing with one key), all scenarios: ours "
              f"{sum(r['ours']['double_production'] for r in doc['scenarios'].values())}, "
              f"baseline "
              f"{sum(r['baseline']['double_production'] for r in doc['scenarios'].values())}"]
    for scenario, res in doc["scenarios"].items():
        for tool in ("ours", "baseline"):
            for key in ("sms_by_kind", "flaps_that_hit_alice_slot", "fault_kinds"):
                if key in res[tool]:
                    value = res[tool][key]
                    shown = _kinds(value) if isinstance(value, dict) else value
                    extras.append(f"{scenario} / {tool}: {key}: {shown}")
    text = "\n".join([
        "# Head-to-head: witness-failover against the seed script",
        "",
        "Generated by `bench/headtohead.py`; rerun the command below to regenerate this page "
        "and the chart. Do not edit by hand.",
        "",
        "The **baseline** is the seed script's behaviour as `bench/baseline.py` implements "
        "it: poll `get_witness_by_account` every 10 slots (its 30 s), trigger on "
        "`total_missed >= threshold` set by hand to the current count + 1, broadcast one "
        "`witness_update` signed with the active key with url and props from its own config "
        "file, send one SMS, exit. **Ours** is `witness-signer` + `witness-watcher` as "
        "`witness-devnet init --key-mode active` configures them.",
        "",
        "## Reproduce",
        "",
        "```sh",
        ".venv/bin/pip install -e '.[drill,bench]'",
        run_info["command"],
        "```",
        "",
        f"Machine: nproc {m['nproc']}, Python {m['python']}, {m['platform']}"
        + (f", {m['cpu']}" if m["cpu"] else "") + f". The run took {run_info['elapsed_s']} s "
        f"with {run_info['trials_per_scenario']} trials per scenario and tool, "
        f"{slot} s per slot.",
        "",
        "## Results",
        "",
        *rows,
        "",
        "Ratios ours / baseline (n/a where the baseline's figure is 0 or absent; lower is "
        "better for every figure):",
        "",
        *ratio_rows,
        "",
        *(f"- {e}" for e in extras),
        "",
        "![missed blocks per scenario](headtohead.png)",
        "",
        "## Per scenario",
        "",
        *_scenario_notes(doc),
        "",
        "## Where ours does worse, and why",
        "",
        *_worse(doc),
        "",
        "## Method and limits",
        "",
        METHOD.format(slot=slot, cooldown=5 * slot / MAINNET_SLOT_S, timeout_slots=2 / slot),
    ])
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "headtohead.md").write_text(text, encoding="utf-8")
    _chart(doc, docs / "headtohead.png")


def _chart(doc: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - the bench extra; only needed for the chart

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the backend

    names = list(doc["scenarios"])
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for offset, tool, color in ((-0.2, "ours", "#1f77b4"), (0.2, "baseline", "#d62728")):
        stats = [doc["scenarios"][n][tool]["missed_blocks"] for n in names]
        xs = [i + offset for i in range(len(names))]
        ax.bar(xs, [s["p50"] or 0 for s in stats], width=0.38, color=color, alpha=0.75,
               label=f"{tool} (bar: p50, line: p95, dot: max)")
        ax.scatter(xs, [s["max"] or 0 for s in stats], color=color, zorder=3, s=18)
        ax.hlines([s["p95"] or 0 for s in stats], [x - 0.17 for x in xs],
                  [x + 0.17 for x in xs], colors="black", linewidth=1.5)
    if "second_failure" in names:
        i = names.index("second_failure")
        top = doc["scenarios"]["second_failure"]["baseline"]["missed_blocks"]["max"] or 0
        ax.annotate("baseline: cut off\nby the 3-round window", (i + 0.2, top),
                    xytext=(i + 0.45, top * 0.8 + 0.2), fontsize=8,
                    arrowprops={"arrowstyle": "->", "lw": 0.8})
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("missed blocks per trial")
    run_info = doc["run"]
    ax.set_title(f"Missed blocks per scenario: {run_info['trials_per_scenario']} trials each, "
                 f"devnet slot {run_info['slot_seconds']} s")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
                   help="trials per scenario and tool (default 5: about 13 min on 2 cores)")
    p.add_argument("--slot-seconds", type=float, default=0.2,
                   help="devnet wall seconds per 3-second chain slot (default 0.2)")
    p.add_argument("--seed", type=int, default=1, help="seed of the trial parameters")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--port-base", type=int, default=0, help="devnet port P (default: free)")
    p.add_argument("--keep-dir", action="store_true", help="keep the drill directory and logs")
    p.add_argument("--docs", type=Path, default=REPO / "docs",
                   help="where headtohead.md and headtohead.png go")
    p.add_argument("--no-docs", action="store_true", help="print the JSON only")
    p.add_argument("--from-json", type=Path, metavar="FILE",
                   help="no run: rewrite the docs from the JSON a previous run printed")
    args = p.parse_args(argv)
    if args.from_json is not None:
        doc = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        doc = run(args)
        print(json.dumps(doc, indent=1))
    if not args.no_docs:
        write_docs(doc, args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
