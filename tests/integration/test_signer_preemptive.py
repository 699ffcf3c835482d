"""Pre-emptive failover on the real devnet with producer-node APIs (issue 11, threat T9).

The signer runs in-process behind the real Flask app; the devnet is a real process
whose nodes answer on their own ports. The signer's probes, not the watcher's
claim, decide whether a node is down and where a switch may go.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from support.twilio_fixture import FAKE_ACCOUNT_SID, FAKE_AUTH_TOKEN
from werkzeug.serving import make_server

from drill.fake_twilio import FakeTwilio
from drill.services import RunningDevnet, running_devnet
from shared.httpsig import (
    HttpResponse,
    load_private_key,
    load_public_key,
    signed_headers_for,
    verify_response,
)
from signer import cli
from signer.app import build_prober, build_service
from signer.config import SignerConfig
from signer.http import create_app
from signer.service import ServiceOptions, SignerService

pytestmark = pytest.mark.timeout(120)

WAIT_S = 30.0
SLOT_S = 0.1


@dataclass
class Notes:
    """Every notification the signer sent (when no Twilio is configured)."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    def send(self, event: str, text: str) -> None:
        """Record the notification."""
        self.sent.append((event, text))


@dataclass
class Signer:
    """The in-process signer on 127.0.0.1:<ephemeral> and its config file."""

    service: SignerService
    url: str
    config_path: Path
    drill: Path
    session: requests.Session

    def post(self, path: str, doc: Any, who: str = "watcher") -> requests.Response:
        """A genuine signed request; its answer must carry a valid signature bound to it."""
        body = json.dumps(doc).encode()
        headers = signed_headers_for("POST", self.url + path, body, "application/json",
                                     load_private_key(self.drill / "keys" / f"{who}.key"), who,
                                     datetime.now(UTC))
        response = self.session.post(self.url + path, data=body, headers=headers,
                                     timeout=WAIT_S)
        verify_response(HttpResponse(response.status_code, response.headers, response.content),
                        headers, load_public_key(self.drill / "keys" / "signer.pub"),
                        datetime.now(UTC))
        return response

    def audit(self, event: str) -> list[dict[str, Any]]:
        """The signer's audit records of one event."""
        return [r for r in self.service.store.iter_audit() if r["event"] == event]


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[RunningDevnet]:
    """A devnet process of its own (a switch changes the chain for good)."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as dn:
        yield dn


def write_config(devnet: RunningDevnet, state_dir: Path, *, approval: str = "auto",
                 urls: bool = True, extra: str = "") -> Path:
    """The drill's signer.toml with health_urls, one RPC node, its own state directory,
    and min_missed so high that only the pre-emptive rule can switch."""
    text = (devnet.dir / "signer.toml").read_text(encoding="utf-8")
    # init's health_url lines and preemptive switch; set again below when ``urls``.
    text = re.sub(r'(?m)^(health_url|preemptive) = .*\n', "", text)
    text = re.sub(r'(?m)^state_dir = .*$', f'state_dir = "{state_dir}"', text)
    text = re.sub(r'(?m)^nodes = .*$', f'nodes = ["{devnet.url}"]', text)
    text = re.sub(r'(?m)^min_missed = .*$', "min_missed = 1000", text)
    text = re.sub(r'(?m)^approval = .*$', f'approval = "{approval}"', text)
    if urls:
        for node in devnet.status()["nodes"]:
            text = text.replace(f'name = "{node["name"]}"\n',
                                f'name = "{node["name"]}"\nhealth_url = "{node["api_url"]}"\n')
    path = devnet.dir / f"signer-{state_dir.name}.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path


@contextmanager
def running_signer(devnet: RunningDevnet, config_path: Path, notifier: Any = None
                   ) -> Iterator[Signer]:
    """Build the signer from ``config_path``, serve it on a free port, stop it after."""
    config = SignerConfig.load(config_path)
    service = build_service(config, notifier=notifier, options=ServiceOptions(tick_s=0.1))
    service.start()
    server = make_server("127.0.0.1", 0, create_app(service, config.max_body_bytes),
                         threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    session = requests.Session()
    session.trust_env = False
    try:
        yield Signer(service, f"http://127.0.0.1:{server.server_port}", config_path,
                     devnet.dir, session)
    finally:
        server.shutdown()
        thread.join(10)
        session.close()
        service.close()


def key_of(devnet: RunningDevnet, name: str) -> str:
    """The public signing key of devnet node ``name``."""
    return str(next(n["public_key"] for n in devnet.status()["nodes"] if n["name"] == name))


def stop(devnet: RunningDevnet, name: str) -> None:
    """Stop a producer node: its API port refuses from now on."""
    devnet.client.call("devnet.stop_node", {"name": name})


def preemptive_ask(devnet: RunningDevnet, node: str = "primary", **changes: Any
                   ) -> dict[str, Any]:
    """The body a watcher sends when it sees ``node`` (holding the key) down."""
    witness = devnet.status()["witness"]
    body = {"witness": "alice", "failing_key": witness["signing_key"],
            "observed_total_missed": witness["total_missed"],
            "reason": f"{node} down for 3 probes (connection refused)",
            "evidence": {"kind": "node_down", "node": node,
                         "node_key": witness["signing_key"], "since": int(time.time()) - 2,
                         "probes": 3, "detail": "connection refused"}}
    body.update(changes)
    return body


def wait_key(devnet: RunningDevnet, key: str) -> dict[str, Any]:
    """Wait until alice's on-chain signing key is ``key``."""
    return devnet.wait_for(lambda s: s["witness"]["signing_key"] == key, WAIT_S, f"key {key}")


def test_primary_down_preemptive_switch_to_backup1(devnet: RunningDevnet,
                                                  tmp_path: Path) -> None:
    """(a) Primary stopped: a signed pre-emptive request is accepted and the key moves to
    backup1 without any miss being required; the answer carries the signer's health view."""
    with running_signer(devnet, write_config(devnet, tmp_path / "a"), Notes()) as signer:
        stop(devnet, "primary")
        body = preemptive_ask(devnet)
        started = datetime.now(UTC)
        response = signer.post("/v1/failover", body)
        doc = response.json()
        assert response.status_code == 200, doc
        assert doc["state"] in {"broadcast", "confirmed"}
        assert doc["target_key"] == key_of(devnet, "backup1")
        assert doc["preemptive"] is True
        assert doc["evidence"]["node"] == "primary"
        assert doc["health"]["nodes"]["primary"]["state"] == "down"
        assert doc["health"]["nodes"]["backup1"]["state"] == "healthy"
        status = wait_key(devnet, key_of(devnet, "backup1"))
        broadcast = signer.audit("broadcast")[0]
        latency = datetime.fromisoformat(broadcast["at"]) - started
        print(f"pre-emptive POST -> broadcast: {latency.total_seconds() * 1000:.0f} ms; "
              f"total_missed {body['observed_total_missed']} -> "
              f"{status['witness']['total_missed']}")
        assert latency.total_seconds() < 5
        request = signer.audit("request")[0]["data"]
        assert request["preemptive"] is True
        assert request["health"]["nodes"]["primary"]["state"] == "down"


def test_watcher_lying_about_a_healthy_primary_is_refused(devnet: RunningDevnet,
                                                         tmp_path: Path,
                                                         fake_twilio: FakeTwilio) -> None:
    """(b) A watcher claiming a healthy primary is down gets 409 health_disagrees, an audit
    line and an SMS; nothing is broadcast and the chain keeps the primary's key."""
    token = tmp_path / "twilio.token"
    token.write_text(FAKE_AUTH_TOKEN + "\n")
    token.chmod(0o600)
    notify = (f'\n[notify]\ntwilio_account_sid = "{FAKE_ACCOUNT_SID}"\n'
              f'twilio_auth_token_file = "{token}"\ntwilio_from = "+15550000000"\n'
              f'to = ["+15551111111"]\ntwilio_api_base_url = "{fake_twilio.base_url}"\n')
    primary = key_of(devnet, "primary")
    with running_signer(devnet, write_config(devnet, tmp_path / "b", extra=notify)) as signer:
        response = signer.post("/v1/failover", preemptive_ask(devnet))
        doc = response.json()
        assert response.status_code == 409, doc
        assert doc["state"] == "refused"
        assert doc["detail"].startswith("[health_disagrees]")
        assert doc["health"]["nodes"]["primary"]["state"] == "healthy"
        refused = signer.audit("refused")
        assert [r["data"]["rule"] for r in refused] == ["health_disagrees"]
        assert signer.audit("broadcast") == []
        assert fake_twilio.wait_for_messages(1, timeout=10)
        assert "the signer sees it healthy" in fake_twilio.messages[0].body
        devnet.wait_blocks(3)
        status = devnet.status()
        assert status["witness"]["signing_key"] == primary
        assert status["pending_transactions"] == 0


def test_dead_backup1_is_skipped(devnet: RunningDevnet, tmp_path: Path) -> None:
    """(c) Backup1 and the primary stopped: the pre-emptive switch goes to backup2."""
    with running_signer(devnet, write_config(devnet, tmp_path / "c"), Notes()) as signer:
        stop(devnet, "backup1")
        stop(devnet, "primary")
        response = signer.post("/v1/failover", preemptive_ask(devnet))
        doc = response.json()
        assert response.status_code == 200, doc
        assert doc["target_key"] == key_of(devnet, "backup2")
        assert doc["health"]["nodes"]["backup1"]["state"] == "down"
        wait_key(devnet, key_of(devnet, "backup2"))


def test_reactive_switch_skips_a_dead_backup_too(devnet: RunningDevnet, tmp_path: Path) -> None:
    """After real misses (no evidence), the switch also skips the backup the signer sees dead."""
    config = write_config(devnet, tmp_path / "x")
    config.write_text(re.sub(r"(?m)^min_missed = .*$", "min_missed = 1", config.read_text()))
    with running_signer(devnet, config, Notes()) as signer:
        stop(devnet, "backup1")
        stop(devnet, "primary")
        baseline = devnet.status()["witness"]["total_missed"]
        devnet.wait_for(lambda s: s["witness"]["total_missed"] > baseline, WAIT_S, "a miss")
        body = preemptive_ask(devnet)
        del body["evidence"]
        body["observed_total_missed"] = devnet.status()["witness"]["total_missed"]
        response = signer.post("/v1/failover", body)
        doc = response.json()
        assert response.status_code == 200, doc
        assert doc["target_key"] == key_of(devnet, "backup2")
        assert doc["preemptive"] is False
        assert doc["health"]["nodes"]["backup1"]["state"] == "down"
        assert "skipped dead backup1" in signer.audit("health")[0]["data"]["why"]
        wait_key(devnet, key_of(devnet, "backup2"))


def test_named_dead_target_is_refused(devnet: RunningDevnet, tmp_path: Path) -> None:
    """(d) A request naming backup1 as the target while backup1 is dead is refused, with an
    alert, and nothing moves."""
    notes = Notes()
    primary, backup1 = key_of(devnet, "primary"), key_of(devnet, "backup1")
    with running_signer(devnet, write_config(devnet, tmp_path / "d"), notes) as signer:
        stop(devnet, "backup1")
        stop(devnet, "primary")
        response = signer.post("/v1/failover", preemptive_ask(devnet, target_key=backup1))
        doc = response.json()
        assert response.status_code == 409, doc
        assert doc["detail"].startswith("[target_unhealthy]")
        assert [e for e, _ in notes.sent] == ["request_refused"]
        assert signer.audit("broadcast") == []
        assert devnet.status()["witness"]["signing_key"] == primary


def test_manual_mode_shows_the_health_evidence(devnet: RunningDevnet, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """In manual mode the pending notice, `witness-signer pending` and the request's
    description carry the watcher's evidence and the signer's own probes."""
    notes = Notes()
    config = write_config(devnet, tmp_path / "m", approval="manual")
    with running_signer(devnet, config, notes) as signer:
        stop(devnet, "primary")
        response = signer.post("/v1/failover", preemptive_ask(devnet))
        doc = response.json()
        assert response.status_code == 202, doc
        assert doc["preemptive"] is True
        assert doc["health"]["nodes"]["primary"]["state"] == "down"
        notice = next(text for event, text in notes.sent if event == "approval_needed")
        assert "watcher says primary node_down" in notice
        assert "signer sees primary down" in notice
        capsys.readouterr()
        assert cli.main(["pending", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        line, health = out.splitlines()[:2]
        assert line.startswith(f"{doc['request_id'][:12]}  primary -> backup1")
        assert health.startswith("    pre-emptive: watcher says primary node_down")
        assert "primary down" in out
        assert "backup1 healthy" in out


def test_pending_request_is_redecided_with_fresh_probes(devnet: RunningDevnet,
                                                        tmp_path: Path) -> None:
    """A pending pre-emptive request approved after the primary came back is refused at
    execution: the signer probes again and no longer agrees."""
    config = write_config(devnet, tmp_path / "r", approval="manual")
    primary = key_of(devnet, "primary")
    with running_signer(devnet, config, Notes()) as signer:
        stop(devnet, "primary")
        doc = signer.post("/v1/failover", preemptive_ask(devnet)).json()
        assert doc["state"] == "pending"
        devnet.client.call("devnet.start_node", {"name": "primary"})
        signer.post(f"/v1/requests/{doc['request_id']}/approve", {}, who="operator")
        deadline = time.monotonic() + WAIT_S
        while signer.service.store.get(doc["request_id"]).state not in {"refused", "failed"}:
            assert time.monotonic() < deadline, "the request was not re-decided"
            time.sleep(0.1)
        record = signer.service.store.get(doc["request_id"])
        assert record.rule == "health_disagrees"
        stages = [r["data"]["stage"] for r in signer.audit("health")]
        assert stages == ["decision", "execution"]
        assert devnet.status()["witness"]["signing_key"] == primary


def test_probe_latency_dead_and_slow_nodes(devnet: RunningDevnet, tmp_path: Path) -> None:
    """A stopped node is found down in milliseconds; a slow node costs one probe timeout,
    and all nodes are probed at once."""
    config = SignerConfig.load(write_config(devnet, tmp_path / "p",
                                            extra="\n[health]\nprobe_timeout_s = 0.5\n"))
    prober = build_prober(config)
    assert prober is not None
    try:
        head = devnet.status()["head_block_number"]
        assert all(n.state == "healthy" for n in prober.snapshot(head).nodes)
        stop(devnet, "primary")
        devnet.client.call("devnet.set_node_faults", {"name": "backup1", "slow_s": 3.0})
        started = time.monotonic()
        snap = prober.snapshot(devnet.status()["head_block_number"])
        elapsed = time.monotonic() - started
        states = {n.name: (n.state, n.detail) for n in snap.nodes}
        urls = {n["name"]: n["api_url"] for n in devnet.status()["nodes"]}
        refused = prober.probe(urls["primary"])
        print(f"probe: stopped node {refused.elapsed_s * 1000:.1f} ms ({refused.detail}); "
              f"snapshot with a 3 s-slow node {elapsed:.2f} s (timeout 0.5 s)")
        assert states["primary"] == ("down", "connection refused")
        assert states["backup1"] == ("down", "timeout")
        assert states["backup2"][0] == "healthy"
        assert refused.elapsed_s < 0.2
        assert 0.45 < elapsed < 1.5
    finally:
        devnet.client.call("devnet.set_node_faults", {"name": "backup1", "slow_s": 0})
        prober.close()
