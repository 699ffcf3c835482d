"""The daemon over fakes: what it sends, what it alerts, how it follows the signer's answers."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from support.watcher_fakes import (
    PRIMARY,
    SETTINGS,
    FakeSigner,
    Recorder,
    answer,
    make,
)

from watcher.metrics import Metrics, MetricsServer
from watcher.signer_client import UntrustedAnswerError


def test_threshold_sends_one_request_and_alerts(tmp_path: Path) -> None:
    """The miss sends one signed-body request naming the failing key; SMS requested, confirmed."""
    signer = FakeSigner(answer("confirmed"))
    w, reader, notes = make(tmp_path, signer)
    w.step()
    reader.missed = 11
    w.step()
    body = json.loads(signer.bodies[0])
    assert body["failing_key"] == PRIMARY
    assert body["observed_total_missed"] == 11
    assert body["witness"] == "alice"
    assert "dry_run" not in body
    assert notes.events == ["switch_requested", "switch_confirmed"]
    reader.missed = 15
    w.step()  # still the old key on the nodes: no second request
    assert len(signer.bodies) == 1


def test_dry_run_asks_without_switching(tmp_path: Path) -> None:
    """--dry-run sends dry_run=true, reports the signer's verdict, and re-arms past the misses."""
    signer = FakeSigner(answer("dry_run", decision="switch", detail="would switch"))
    w, reader, notes = make(tmp_path, signer, settings=replace(SETTINGS, dry_run=True))
    w.step()
    reader.missed = 11
    w.step()
    assert json.loads(signer.bodies[0])["dry_run"] is True
    assert notes.events == ["dry_run"]
    assert (w.state.phase, w.state.baseline_missed) == ("armed", 11)


def test_refusal_alerts_and_rearms(tmp_path: Path) -> None:
    """A refused request is reported with the signer's detail and not retried for old misses."""
    signer = FakeSigner(answer("refused", 409, detail="[cooldown] cooling down"))
    w, reader, notes = make(tmp_path, signer)
    w.step()
    reader.missed = 11
    w.step()
    w.step()
    assert notes.events == ["switch_requested", "switch_refused"]
    assert "cooling down" in notes.sent[-1][1]
    assert len(signer.bodies) == 1


def test_pending_request_is_followed_until_confirmed(tmp_path: Path) -> None:
    """A 202 pending request is followed with GETs on the signer's id, never re-posted."""
    signer = FakeSigner(answer("pending", 202), answer("pending", 202), answer("confirmed"))
    w, reader, notes = make(tmp_path, signer)
    w.step()
    reader.missed = 11
    w.step()
    assert w.state.phase == "pending"
    w.step()
    w.step()
    assert len(signer.bodies) == 1
    assert signer.gets == ["sig-" + "1" * 28] * 2
    assert w.state.phase == "switched"
    assert notes.events[-1] == "switch_confirmed"


def test_untrusted_answers_keep_the_request_and_alert_once(tmp_path: Path) -> None:
    """Answers that fail verification change nothing; the request is retried, one SMS sent."""
    signer = FakeSigner(UntrustedAnswerError("bad signature"))
    w, reader, notes = make(tmp_path, signer)
    w.step()
    reader.missed = 11
    for _ in range(5):
        w.step()
    assert w.state.phase == "requested"
    assert len(set(signer.bodies)) == 1
    assert len(signer.bodies) == 5
    assert notes.events == ["switch_requested", "signer_unreachable"]


def test_rpc_outage_alerts_once_and_recovery_is_reported(tmp_path: Path) -> None:
    """No data: hold and alert once; data again: one "recovered" message."""
    w, reader, notes = make(tmp_path, FakeSigner(answer("confirmed")))
    w.step()
    reader.down = True
    for _ in range(4):
        w.step()
    reader.down = False
    w.step()
    assert notes.events == ["rpc_unhealthy", "recovered"]


def test_broken_notifier_never_blocks_a_failover(tmp_path: Path) -> None:
    """Every SMS failing does not stop the request or the switch."""
    signer = FakeSigner(answer("confirmed"))
    w, reader, _ = make(tmp_path, signer, Recorder(broken=True))
    w.step()
    reader.missed = 11
    w.step()
    assert w.state.phase == "switched"
    assert len(signer.bodies) == 1


def test_one_shot_run_returns_after_the_switch(tmp_path: Path) -> None:
    """run() with one_shot ends after the first confirmed switch, and a restart does not run."""
    settings = replace(SETTINGS, policy=replace(SETTINGS.policy, one_shot=True))
    signer = FakeSigner(answer("confirmed"))
    w, reader, _ = make(tmp_path, signer, settings=settings)
    w.step()
    reader.missed = 11
    w.run()
    assert w.state.phase == "stopped"
    again, _, _ = make(tmp_path, signer, settings=settings)
    again.run()
    assert len(signer.bodies) == 1


def test_metrics_endpoint_serves_prometheus_text(tmp_path: Path) -> None:
    """/metrics on loopback shows polls, RPC calls, misses, requests and the phase."""
    w, _, _ = make(tmp_path, FakeSigner(answer("confirmed")))
    server = MetricsServer(w.metrics, "127.0.0.1", 0).start()
    try:
        w.step()
        text = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
        assert requests.get(f"http://127.0.0.1:{server.port}/x", timeout=5).status_code == 404
    finally:
        server.close()
    assert "witness_watcher_polls_total 1" in text
    assert "witness_watcher_rpc_calls_total 2" in text
    assert 'witness_watcher_state{phase="armed"} 1' in text
    assert "witness_watcher_misses_since_armed 0" in text
    with pytest.raises(AttributeError):
        Metrics().update(no_such_metric=1)


def test_switched_back_before_seen_is_not_silent(tmp_path: Path) -> None:
    """Confirmed in a block the nodes passed while still showing the old key: alert, ask again."""
    signer = FakeSigner(replace(answer("confirmed"), block_num=102))  # heads: 101, 102, 103
    w, reader, notes = make(tmp_path, signer)
    w.step()
    reader.missed = 11
    w.step()  # request, confirmed in the next block
    assert w.state.phase == "switched"
    w.step()  # the nodes passed that block, and still show the primary
    assert notes.events == ["switch_requested", "switch_confirmed", "key_changed"]
    assert (w.state.phase, w.state.armed_key, w.state.baseline_missed) == ("armed", PRIMARY, 11)
    reader.missed = 12
    w.step()
    assert len(signer.bodies) == 2
    assert notes.events[-1] == "switch_confirmed"


def test_first_arm_sends_no_alert(tmp_path: Path) -> None:
    """Arming on the key found at start-up is silent: no key_changed message."""
    w, _, notes = make(tmp_path, FakeSigner(answer("confirmed")))
    w.step()
    assert (w.state.phase, notes.events) == ("armed", [])


def test_pending_answer_logged_on_change_only(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A request pending approval, asked about at every poll, is one INFO line (not one per
    poll) naming the watcher's own request id and the signer's; the next state is logged."""
    signer = FakeSigner(answer("pending", 202, detail="manual approval"),
                        answer("pending", 202, detail="manual approval"),
                        answer("pending", 202, detail="manual approval"),
                        answer("confirmed"))
    w, reader, _ = make(tmp_path, signer)
    w.step()
    reader.missed = 11
    with caplog.at_level(logging.INFO, logger="watcher.daemon"):
        for _ in range(4):
            w.step()
    lines = [r for r in caplog.records if r.levelno == logging.INFO
             and r.getMessage().startswith("signer: request")]
    own = json.loads(signer.bodies[0])["request_id"]
    assert [r.getMessage().split(" is ", 1)[1] for r in lines] == [
        "pending manual approval", "confirmed "]
    assert all(getattr(r, "request_id", None) == own for r in lines)
    assert own in lines[0].getMessage()
    assert "sig-" in lines[0].getMessage()
