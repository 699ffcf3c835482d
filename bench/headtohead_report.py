"""The head-to-head's figures and report: summaries, ratios, docs/headtohead.md and its chart.

Values in, text out: ``bench/headtohead.py`` runs the trials and hands the JSON
document here (or ``--from-json`` a saved one).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

MAINNET_SLOT_S = 3.0


# ---- the figures ------------------------------------------------------------------------


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
    # Absent from runs before pre-emptive failover (--from-json of an old document).
    fault_s = [x for t in trials for x in t.get("fault_to_switch_s", [])]

    def dist(values: list[float], digits: int) -> dict[str, Any]:
        return {k: None if v is None else round(v, digits) for k, v in
                (("p50", pct(values, 50)), ("p95", pct(values, 95)),
                 ("max", pct(values, 100)))} | {"n": len(values)}

    out: dict[str, Any] = {
        "trials": len(trials), "missed_blocks": dist(missed, 1),
        "detect_to_switch_s": dist(lat_s, 2), "detect_to_switch_blocks": dist(lat_b, 1),
        "fault_to_switch_s": dist(fault_s, 2),
        "preemptive_switches": sum(t.get("preemptive_switches", 0) for t in trials)}
    for name in ("switches", "false_switches", "clobbering_switches", "unrecovered", "sms",
                 "double_production"):
        out[name] = sum(t[name] for t in trials)
    out["rpc_calls_per_hour"] = round(sum(t["rpc_calls_per_hour"] for t in trials)
                                      / max(1, len(trials)))
    kinds: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    for t in trials:
        kinds.update(t["sms_kinds"])
        refusals.update(t.get("refusals_by_rule", {}))
    out["sms_by_kind"] = dict(sorted(kinds.items()))
    if refusals:
        out["refusals_by_rule"] = dict(sorted(refusals.items()))
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


# ---- the report -------------------------------------------------------------------------

LOWER_IS_BETTER = ("missed_blocks", "detect_to_switch_s", "false_switches",
                   "clobbering_switches", "unrecovered", "sms", "rpc_calls_per_hour")
WHY_WORSE = {
    "missed_blocks": "Ours switches before the witness's slot when its probes and the "
                     "signer's see the producing node dead or stuck; when the fault falls "
                     "within a few blocks of that slot (two bad probes, the signer's own "
                     "confirmation, one block to include the switch), or the watcher holds "
                     "pre-emption back right after a switch, it falls back to acting on the "
                     "first visible miss as the seed does. How many blocks that costs is set "
                     "by where the witness's next slot falls (the schedule is reshuffled every "
                     "round): a one-block difference in a few trials is the shuffle, not the "
                     "tool, unless the switch times differ by a slot or more.",
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
           "see: a chain halt (chain_halted, then recovered), too few fresh RPC nodes "
           "(rpc_unhealthy, then recovered), a producer node going down or out of sync and "
           "coming back (node_down / node_unhealthy, node_recovered: the first SMS of a "
           "pre-emptive switch) and a pre-emptive request the signer refused "
           "(preempt_refused, in partition). The seed sends one SMS per switch and nothing "
           "else. In rpc_fault, rpc_unhealthy comes from the `timeout` variant: a poll waits "
           "rpc_timeout_s = 2 s for the hanging node, which on {slot} s slots is "
           "{timeout_slots:.0f} blocks, so the node read after it is that many blocks ahead "
           "of the one read before it and the reader takes the earlier one as stale (lagging "
           "more than stale_after_s worth of blocks); with one fresh node left, quorum 2 "
           "fails. On a 3 s chain a 2 s timeout is under one block and this does not "
           "happen; the drill's 2 s timeout is not scaled to the devnet's slot.",
    "rpc_calls_per_hour": "Ours counts the watcher's probes of the three producer nodes' "
                          "own APIs (one call per node per block, 3,600 per chain hour: "
                          "the price of switching before a miss) as well as its chain "
                          "reads. The watcher reads two nodes per poll (quorum = 2, two calls "
                          "each: head and witness), polls right after each of the witness's "
                          "slots and at least every 10 slots, reads the schedule every round, "
                          "and reads the third node whenever the first two disagree or one is "
                          "stale or failing. In a halt every node is stale, so each poll "
                          "reads all three, every half slot until stale_after_s (5 slots), "
                          "then every 10 slots. The seed reads one node every 10 slots. Both "
                          "are negligible load for an API node, and the probes go to the "
                          "witness's own nodes. The signer's own reads and probes (only when "
                          "asked to switch) are not counted.",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


_NONE: dict[str, Any] = {"p50": None, "p95": None, "max": None}


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
    if "stuck" in sc:
        o, b = pair("stuck")
        lines.append(
            f"- **stuck**: the primary answers but its head is frozen and it produces nothing. "
            f"Ours switched {o['switches']} times ({o['preemptive_switches']} pre-emptively, "
            f"on its lag) for {_dist(o['missed_blocks'])} missed blocks (p50 / p95 / max); "
            f"the baseline, which only sees misses, {b['switches']} times for "
            f"{_dist(b['missed_blocks'])}.")
    if "partition" in sc:
        o, b = pair("partition")
        lines.append(
            f"- **partition**: only our watcher's probes lose the healthy primary. Switches "
            f"ours {o['switches']}, baseline {b['switches']}; the signer's refusals "
            f"{_kinds(o.get('refusals_by_rule', {}))} (`health_disagrees`: its own probes see "
            "the primary healthy, so the watcher's evidence is refused, audited and alerted).")
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
  signer min_missed 1, approval auto, health_url on every node). Both tools' RPC
  timeout is the drill's 2 s,
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
  `witness_watcher_rpc_calls_total` plus `witness_watcher_probe_calls_total` (its
  `/metrics`: chain reads and node probes), the seed's from its own counter, each over
  the time the tool ran.
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
  still has the old ones; then as crash. *stuck*: as crash, but the primary is made
  stuck (`devnet.set_node_faults stuck=true`: it answers with a frozen head and does not
  produce). *partition*: 0-20 slots into the trial the primary's API stops answering our
  watcher's probes only (they leave from 127.0.0.2, `[health] source_address`;
  `partition: ["127.0.0.2"]`, connections reset) for two rounds; the primary keeps
  producing and the signer still reaches it.
- **Pre-emptive failover.** Both of our services probe every producer node's own API
  (`health_url`, as `witness-devnet init` writes it: one probe round per block, two bad
  probes, the signer confirms with its own probes). **Fault → switch included** is from
  the moment the fault was injected to the sample where the key changed; **pre-emptive**
  counts our switches whose request carried the watcher's health evidence (the signer's
  audit). The seed has no such path.
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


def _result_rows(doc: dict[str, Any]) -> list[str]:
    """The results table: one row per scenario and tool."""
    rows = ["| scenario | tool | missed blocks p50 / p95 / max | first visible miss → switch "
            "included, s p50 / p95 / max | … in blocks | fault → switch included, s p50 / "
            "p95 / max | switches | pre-emptive | false switches | clobbering switches | "
            "unrecovered | SMS | RPC calls / chain hour |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for scenario, res in doc["scenarios"].items():
        for tool in ("ours", "baseline"):
            r = res[tool]
            rows.append(f"| {scenario} | {tool} | {_dist(r['missed_blocks'])} | "
                        f"{_dist(r['detect_to_switch_s'])} | "
                        f"{_dist(r['detect_to_switch_blocks'])} | "
                        f"{_dist(r.get('fault_to_switch_s', _NONE))} | {r['switches']} | "
                        f"{r.get('preemptive_switches', 0)} | "
                        f"{r['false_switches']} | {r['clobbering_switches']} | "
                        f"{r['unrecovered']} | {r['sms']} | {r['rpc_calls_per_hour']} |")
    return rows


def _real_interval(real: dict[str, Any] | None) -> list[str]:
    """The section for a second run at the real 3-second slot (none without one)."""
    if real is None:
        return []
    run_info = real["run"]
    return [
        f"## At the real {run_info['slot_seconds']:g}-second interval",
        "",
        f"The same tools and scenarios ({', '.join(real['scenarios'])}) with one devnet slot "
        f"lasting {run_info['slot_seconds']:g} s of wall time, as on Hive; "
        f"{run_info['trials_per_scenario']} trials per scenario and tool, "
        f"{run_info['elapsed_s']} s:",
        "",
        "```sh",
        run_info["command"],
        "```",
        "",
        *_result_rows(real),
        "",
    ]


def write_docs(doc: dict[str, Any], docs: Path, real: dict[str, Any] | None = None) -> None:
    """docs/headtohead.md (tables, command, machine, notes) and docs/headtohead.png.

    ``real``: a second run's document at the real slot length, shown in its own section.
    """
    run_info, m = doc["run"], doc["run"]["machine"]
    slot = run_info["slot_seconds"]
    rows = _result_rows(doc)
    ratio_rows = ["| scenario | " + " | ".join(
        k if s is None else f"{k} {s}" for k, s in RATIO_KEYS) + " |",
        "|---|" + "---|" * len(RATIO_KEYS)]
    for scenario, res in doc["scenarios"].items():
        ratio = res["ratio_ours_to_baseline"]
        ratio_rows.append(f"| {scenario} | " + " | ".join(_fmt(v) for v in ratio.values())
                          + " |")
    extras = [f"double production (two nodes signing with one key), all scenarios: ours "
              f"{sum(r['ours']['double_production'] for r in doc['scenarios'].values())}, "
              f"baseline "
              f"{sum(r['baseline']['double_production'] for r in doc['scenarios'].values())}"]
    for scenario, res in doc["scenarios"].items():
        for tool in ("ours", "baseline"):
            for key in ("sms_by_kind", "flaps_that_hit_alice_slot", "fault_kinds",
                        "refusals_by_rule"):
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
        *_real_interval(real),
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
    import matplotlib  # type: ignore[import-not-found]  # noqa: PLC0415 - bench extra, chart only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found]  # noqa: PLC0415

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
