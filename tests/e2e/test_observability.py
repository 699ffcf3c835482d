"""End to end: alerts through apprise, JSON logs, one request id across both services, and
the Prometheus metrics of both services against the shipped dashboard and alert rules."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from drill.fake_webhook import WebhookRecorder
from drill.procs import (
    DrillError,
    console_script,
    start_process,
    stop_process,
    tail,
    wait_http,
    wait_until,
)
from drill.services import RunningDevnet, Service, running_devnet, signer_audit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
SLOT_S = 0.25
WITNESSES = 21
METRIC_NAME = re.compile(r"\bwitness_(?:watcher|signer)_[a-z_]+")


@dataclass
class Observed:
    """A running drill with apprise channels, JSON watcher logs and both metrics listeners."""

    devnet: RunningDevnet
    signer: Service
    watcher: Service
    webhook: WebhookRecorder
    signer_metrics: str
    watcher_metrics: str


def _urls_file(path: Path, url: str) -> str:
    path.write_text(f"# where alerts go (one apprise URL a line)\n{url}\n", encoding="utf-8")
    path.chmod(0o600)
    return path.name


@pytest.fixture
def observed(tmp_path: Path) -> Iterator[Observed]:
    """devnet + signer (metrics on P+3) + watcher, both with --log-format json, alerts to a
    webhook."""
    with ExitStack() as stack:
        webhook = stack.enter_context(WebhookRecorder())
        # A reactive failover (the watcher's "requesting failover … (primary)" line).
        devnet = stack.enter_context(running_devnet(tmp_path / "drill", slot_seconds=SLOT_S,
                                                    health=False))
        keys = devnet.dir / "keys"
        signer_urls = _urls_file(keys / "signer-apprise.urls", webhook.url("json", "/signer"))
        watcher_urls = _urls_file(keys / "watcher-apprise.urls", webhook.url("form", "/watcher"))
        metrics_port = devnet.port_base + 3
        with (devnet.dir / "signer.toml").open("a", encoding="utf-8") as fh:
            fh.write(f'\n[notify]\napprise_urls_file = "keys/{signer_urls}"\n\n'
                     f'[metrics]\nhost = "127.0.0.1"\nport = {metrics_port}\n')
        with (devnet.dir / "watcher.toml").open("a", encoding="utf-8") as fh:
            fh.write(f'\n[alerts]\napprise_urls_file = "keys/{watcher_urls}"\n')
        signer_log = devnet.dir / "signer.log"
        signer_proc = start_process([console_script("witness-signer"), "serve", "--log-format",
                                     "json", "--config", str(devnet.dir / "signer.toml")],
                                    signer_log)
        stack.callback(stop_process, signer_proc)
        signer = Service(signer_proc, signer_log, f"http://127.0.0.1:{devnet.port_base + 1}")
        try:
            wait_http(f"{signer.url}/healthz", 60, "the signer", procs=[signer_proc])
        except DrillError as e:
            raise DrillError(f"{e}: {tail(signer_log)}") from None
        log = devnet.dir / "watcher.log"
        proc = start_process([console_script("witness-watcher"), "run", "--log-format", "json",
                              "--config", str(devnet.dir / "watcher.toml")], log)
        stack.callback(stop_process, proc)
        watcher = Service(proc, log)
        yield Observed(devnet, signer, watcher, webhook,
                       f"http://127.0.0.1:{metrics_port}/metrics",
                       f"http://127.0.0.1:{devnet.port_base + 2}/metrics")


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of a real /metrics listener, parsed by prometheus_client's own parser."""
    text = requests.get(url, timeout=5).text
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        samples.setdefault(family.name, {})
    return samples


def referenced_metrics() -> set[str]:
    """The metric names the shipped dashboard and alert rules use."""
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus-rules.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return {m for e in exprs for m in METRIC_NAME.findall(e)}


def test_failover_is_observable_end_to_end(observed: Observed) -> None:
    """A primary crash: both services alert through apprise, the signer's audit and log carry
    the watcher's request id, the watcher logs JSON lines, and every metric the dashboard and
    rules use is exposed, with the current node and the switch counted."""
    dn = observed.devnet
    try:
        wait_until(lambda: scrape(observed.watcher_metrics)["witness_watcher_state"].get(
            (("phase", "armed"),)) == 1, 30, "the watcher to arm", procs=[observed.watcher.proc],
            not_ready=(requests.RequestException, KeyError))
    except DrillError as e:
        raise DrillError(f"{e}: {tail(observed.watcher.log)}") from None
    before = dn.status()
    dn.client.call("devnet.stop_node", {"name": "primary"})
    backup1 = next(n["public_key"] for n in before["nodes"] if n["name"] == "backup1")
    dn.wait_for(lambda s: s["witness"]["signing_key"] == backup1,
                WITNESSES * SLOT_S * 4 + 30, "the switch to backup1")
    assert observed.webhook.wait_for_posts(2, 30), observed.webhook.posts
    wait_until(lambda: {"/signer", "/watcher"} <= {p.path for p in observed.webhook.posts}
               and any("switched" in p.fields.get("title", "") for p in observed.webhook.posts),
               30, "both services' alerts")
    by_path = {p.path: p for p in observed.webhook.posts}
    assert by_path["/signer"].content_type.startswith("application/json")
    assert "alice" in by_path["/watcher"].fields["message"]

    # One id end to end: the watcher's request_id is in the signer's audit and log.
    lines = [json.loads(line) for line in observed.watcher.log.read_text().splitlines() if line]
    assert all({"time", "level", "logger", "message"} <= set(doc) for doc in lines)
    own_ids = {doc["request_id"] for doc in lines if doc.get("request_id")}
    assert own_ids, "the watcher logged no request_id"
    audit = signer_audit(dn.dir)
    audited = {r["data"].get("client_request_id") for r in audit if r.get("request_id")}
    assert own_ids & audited
    signer_lines = observed.signer.log.read_text().splitlines()
    # stdout's one "listening on" announcement aside, the signer writes JSON lines.
    assert [ln for ln in signer_lines if not ln.startswith("{")] == [
        ln for ln in signer_lines if ln.startswith("witness-signer listening on")]
    signer_docs = [json.loads(ln) for ln in signer_lines if ln.startswith("{")]
    assert own_ids & {d.get("client_request_id") for d in signer_docs}
    # keys are labelled with their node names
    assert any("(backup1)" in d["message"] for d in signer_docs)
    assert any("(primary)" in doc["message"] for doc in lines
               if doc["message"].startswith("requesting failover"))
    assert "(backup1)" in by_path["/signer"].fields["message"]

    signer = wait_until(lambda: (m := scrape(observed.signer_metrics))
                        ["witness_signer_switches_total"].get(()) == 1 and m, 15,
                        "the signer's metrics to count the switch")
    watcher = scrape(observed.watcher_metrics)
    assert signer["witness_signer_ready"][()] == 1
    assert signer["witness_signer_signing_key_info"] == {
        (("key", backup1), ("node", "backup1")): 1}
    assert signer["witness_signer_requests"][(("state", "confirmed"),)] == 1
    assert signer["witness_signer_last_switch_timestamp_seconds"][()] > 0
    assert watcher["witness_watcher_polls_total"][()] > 0
    exposed = set(signer) | set(watcher)
    missing = referenced_metrics() - exposed
    assert not missing, f"dashboard/rules use metrics no service exposes: {sorted(missing)}"
    # The metrics never share the API listener.
    assert requests.get(f"{observed.signer.url}/metrics", timeout=5).status_code == 404
