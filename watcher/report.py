"""What ``witness-watcher status`` and ``check`` find out; values only, the CLI prints them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from shared.clock import Clock
from shared.errors import ChainError, ConfigError, FailoverError
from shared.httpsig import load_private_key, load_public_key
from watcher.app import build_health, build_reader, build_signer_client, build_sms
from watcher.config import WatcherConfig
from watcher.core import quorum_key, quorum_missed
from watcher.reader import RpcChainReader
from watcher.schedule import slots_until
from watcher.state import StateStore

log = logging.getLogger(__name__)


def _signer_view(config: WatcherConfig, clock: Clock) -> dict[str, Any]:
    """The signer's signed /v1/status, or the reason it could not be had."""
    try:
        client = build_signer_client(config, clock, lambda _s: None)
    except ConfigError as e:
        return {"reachable": False, "error": str(e)}
    client.attempts = 1
    try:
        doc = client.status()
    except FailoverError as e:
        return {"reachable": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        client.close()
    chain = doc.get("chain") if isinstance(doc.get("chain"), dict) else None
    open_requests = doc.get("open_requests")
    return {"reachable": True, "verified": True, "witness": doc.get("witness"),
            "ready": doc.get("ready"), "approval": doc.get("approval"),
            "key_mode": doc.get("key_mode"), "new_misses": doc.get("new_misses"),
            "chain": chain,
            "open_requests": len(open_requests) if isinstance(open_requests, list) else None}


def status(config: WatcherConfig, clock: Clock) -> dict[str, Any]:
    """The witness, its active node, misses since armed, next slot, signer reachability."""
    names = {n.public_key: n.name for n in config.node_keys}
    out: dict[str, Any] = {"witness": config.account}
    try:
        store = StateStore(config.state_dir)
        state = store.load()  # reads only: status never creates the state
        out["state_file"] = str(store.path) if store.path.exists() else None
        out["state_dir"] = str(config.state_dir)
    except FailoverError as e:
        out["state_error"] = str(e)
        state = None
    reader = build_reader(config)
    try:
        now = clock.now()
        obs = reader.observe(now)
        out["rpc"] = {"answered": len(obs.nodes), "failed": list(obs.failed),
                      "quorum": config.policy.quorum}
        key = quorum_key(obs.nodes, config.policy.quorum) if obs.nodes else None
        missed = None if key is None else quorum_missed(obs.nodes, key, config.policy.quorum)
        if key is not None and missed is not None:
            node = next(n for n in obs.nodes if n.signing_key == key)
            out["chain"] = {"head_block_number": max(n.head_block_number for n in obs.nodes),
                            "signing_key": key, "active_node": names.get(key),
                            "total_missed": missed,
                            "last_produced_block": node.last_confirmed_block_num}
            out["next_slot"] = _next_slot(reader, config, node.current_aslot,
                                          node.head_block_number, now)
            if state is not None and state.armed_key is not None:
                out["armed"] = {"phase": state.phase, "armed_key": state.armed_key,
                                "baseline_missed": state.baseline_missed,
                                "misses_since_armed": missed - state.baseline_missed
                                if key == state.armed_key else None,
                                "outstanding_request": state.request_id}
        out["rpc_calls"] = reader.calls
        if config.health is not None:
            heads = sorted((n.head_block_number for n in obs.fresh), reverse=True)
            q = config.policy.quorum
            out["nodes"] = _node_health(config, clock, heads[q - 1] if len(heads) >= q
                                        else None, key)
    finally:
        reader.close()
    if state is not None and "armed" not in out:
        out["armed"] = {"phase": state.phase, "armed_key": state.armed_key}
    out["signer"] = _signer_view(config, clock)
    return out


def _node_health(config: WatcherConfig, clock: Clock, chain_head: int | None,
                 on_chain: str | None) -> list[dict[str, Any]]:
    """One probe of every producer node (no streak: what each answers right now)."""
    monitor = build_health(config, clock)
    if monitor is None:
        return []
    monitor.settings = replace(monitor.settings, bad_probes=1)
    monitor.set_chain_head(chain_head)
    try:
        view = monitor.probe_round()
    finally:
        monitor.close()
    out = []
    for n in view.nodes:
        holds = on_chain is not None and n.public_key == on_chain
        note = "holds the on-chain key" if holds else (
            "a failover would skip it" if n.bad else "a failover may use it")
        out.append({"name": n.name, "status": n.status, "detail": n.detail, "head": n.head,
                    "lag_blocks": n.lag, "on_chain": holds, "note": note})
    return out


def _next_slot(reader: RpcChainReader, config: WatcherConfig, aslot: int, head: int,
               now: datetime) -> dict[str, Any] | None:
    try:
        schedule = reader.schedule()
    except ChainError as e:
        return {"error": str(e)}
    s = slots_until(schedule, config.account, aslot, head)
    if s is None:
        return {"in_this_round": False,
                "after_blocks": schedule.next_shuffle_block_num - head}
    eta = now + timedelta(seconds=s * config.timing.block_interval_s)
    return {"in_this_round": True, "slots_after_head": s, "aslot": aslot + s,
            "eta": eta.isoformat(timespec="seconds"),
            "eta_s": round(s * config.timing.block_interval_s, 2)}


@dataclass
class Check:
    """One line of ``witness-watcher check``."""

    name: str
    ok: bool
    detail: str
    warning: bool = False


@dataclass
class CheckReport:
    """Every check; ``ok`` when none failed (warnings allowed)."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str, *, warning: bool = False) -> None:
        """Record one result."""
        self.checks.append(Check(name, ok, detail, warning))


def check(config: WatcherConfig, clock: Clock, *, send_test: bool) -> CheckReport:
    """Config, keys, state, every RPC node, a signed round trip, Twilio (SMS only if asked)."""
    report = CheckReport()
    report.add("config", True, f"{config.path} (witness {config.account}, quorum "
               f"{config.policy.quorum} of {len(config.rpc_nodes)} nodes)")
    try:
        key = load_private_key(config.key_path)
        load_public_key(config.signer_public_key_path)
        report.add("keys", True, f"request key {config.signer_keyid!r} "
                   f"(public {key.public_key.to_base64()}), signer public key loaded")
    except ConfigError as e:
        report.add("keys", False, str(e))
    try:
        store = StateStore(config.state_dir)
        state = store.load()  # reads only: check never creates the state
        if store.path.exists():
            report.add("state", True, f"{config.state_dir} (phase {state.phase})")
        else:
            report.add("state", True, f"no state at {store.path} yet: the first `run` "
                       "creates it; if this watcher already ran, watcher.state_dir is wrong",
                       warning=True)
    except FailoverError as e:
        report.add("state", False, str(e))
    reader = build_reader(config)
    healthy = 0
    try:
        for url in config.rpc_nodes:
            try:
                reading = reader.rpc.read_node(url, config.account)
            except ChainError as e:
                report.add(f"rpc {url}", False, f"{type(e).__name__}: {e}")
                continue
            healthy += 1
            report.add(f"rpc {url}", True, f"head #{reading.props.head_block_number}, key "
                       f"{reading.witness.signing_key}, total_missed "
                       f"{reading.witness.total_missed}")
    finally:
        reader.close()
    report.add("rpc quorum", healthy >= config.policy.quorum,
               f"{healthy} node(s) answered, quorum {config.policy.quorum}")
    for node in _node_health(config, clock, None, None):
        report.add(f"node {node['name']}", node["status"] == "healthy",
                   f"{node['detail']}" if node["status"] == "healthy" else
                   f"{node['status']} ({node['detail']}): a failover would skip it; check "
                   f"its health_url, bind address and firewall")
    signer = _signer_view(config, clock)
    if signer["reachable"] and signer.get("witness") != config.account:
        report.add("signer", False, f"signed answer verified, but the signer serves "
                   f"{signer.get('witness')!r}, not {config.account!r}")
    elif signer["reachable"]:
        report.add("signer", True, f"signed round trip to {config.signer_url} verified "
                   f"(ready {signer.get('ready')}, approval {signer.get('approval')})")
    else:
        report.add("signer", False, f"{config.signer_url}: {signer['error']}")
    _check_twilio(config, report, send_test=send_test)
    _check_apprise(config, report, send_test=send_test)
    return report


def _check_twilio(config: WatcherConfig, report: CheckReport, *, send_test: bool) -> None:
    if config.twilio is None:
        report.add("twilio", not send_test, "not configured: alerts go to the log only",
                   warning=True)
        return
    try:
        sms = build_sms(config)
    except ConfigError as e:
        report.add("twilio", False, str(e))
        return
    try:
        if not send_test:
            report.add("twilio", True, f"credentials present for {len(config.twilio.to_numbers)}"
                       " recipient(s); no SMS sent (use --send-test)")
            return
        try:
            sms.send("test", f"{config.account}: witness-watcher test message")
        except FailoverError as e:
            report.add("twilio", False, f"test SMS failed: {e}")
        else:
            report.add("twilio", True, "test SMS accepted by Twilio")
    finally:
        sms.close()


def _check_apprise(config: WatcherConfig, report: CheckReport, *, send_test: bool) -> None:
    if not config.apprise_configured:
        return
    from shared.channels import AppriseNotifier  # noqa: PLC0415 - apprise only if configured

    try:
        channels = AppriseNotifier(config.apprise_urls())
    except ConfigError as e:
        report.add("apprise", False, str(e))
        return
    names = ", ".join(channels.names)
    if not send_test:
        report.add("apprise", True, f"{names}; nothing sent (use --send-test)")
        return
    try:
        channels.send("test", f"{config.account}: witness-watcher test message")
    except FailoverError as e:
        report.add("apprise", False, f"test message failed: {e}")
    else:
        report.add("apprise", True, f"test message accepted by {names}")
