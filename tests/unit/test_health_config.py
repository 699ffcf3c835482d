"""signer.toml's health fields and the failover body's ``evidence`` object (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drill import service_files
from shared.errors import ConfigError, RequestInvalidError
from signer.config import SignerConfig
from signer.messages import parse_failover

KEY = "STM" + "5" * 50
NODE_KEYS = [("primary", KEY), ("backup1", KEY.replace("5", "6")),
             ("backup2", KEY.replace("5", "7"))]


def load(tmp_path: Path, *, urls: tuple[str | None, ...] = (None, None, None),
         policy: str = "", health: str = "") -> SignerConfig:
    """The drill's signer.toml with health_urls on the node keys and extra settings."""
    # The reactive template (no health_url, no preemptive line): each test adds its own.
    text = service_files.signer_toml(port_base=18090, chain="hive", key_mode="active",
                                     node_keys=NODE_KEYS, config_path=tmp_path / "signer.toml",
                                     health=False)
    for (name, _), url in zip(NODE_KEYS, urls, strict=True):
        if url is not None:
            text = text.replace(f'name = "{name}"\n', f'name = "{name}"\nhealth_url = "{url}"\n')
    if policy:
        text = text.replace("[policy]\n", f"[policy]\n{policy}\n")
    path = tmp_path / "signer.toml"
    path.write_text(text + (f"\n[health]\n{health}\n" if health else ""))
    return SignerConfig.load(path)


def test_without_health_urls_nothing_changes(tmp_path: Path) -> None:
    """No health_url: pre-emptive is off and every node key has no URL."""
    config = load(tmp_path)
    assert config.policy.preemptive is False
    assert all(k.health_url is None for k in config.node_keys)
    assert config.policy.node_names == ("primary", "backup1", "backup2")


def test_health_urls_turn_preemptive_on_by_default(tmp_path: Path) -> None:
    """One health_url is enough for preemptive to default to true; [health] has defaults."""
    config = load(tmp_path, urls=("http://10.0.0.1:8091/", None, None))
    assert config.policy.preemptive is True
    assert config.node_keys[0].health_url == "http://10.0.0.1:8091/"
    assert (config.health.probe_timeout_s, config.health.max_lag_blocks,
            config.health.confirm_probes, config.health.confirm_interval_s) == (1.0, 1, 2, 0.2)


def test_preemptive_can_be_turned_off(tmp_path: Path) -> None:
    """preemptive = false keeps the probes (to skip dead backups) but not the pre-emptive rule."""
    config = load(tmp_path, urls=("http://10.0.0.1:8091/", None, None),
                  policy="preemptive = false")
    assert config.policy.preemptive is False


def test_preemptive_without_health_url_is_a_config_error(tmp_path: Path) -> None:
    """preemptive = true with no health_url anywhere names the field."""
    with pytest.raises(ConfigError) as e:
        load(tmp_path, policy="preemptive = true")
    assert e.value.field == "policy.preemptive"


@pytest.mark.parametrize(("urls", "health", "field"), [
    (("ftp://x/", None, None), "", "witness.keys[0].health_url"),
    ((None, None, None), "probe_timeout_s = 0", "health.probe_timeout_s"),
    ((None, None, None), "max_lag_blocks = -1", "health.max_lag_blocks"),
    ((None, None, None), "confirm_probes = 0", "health.confirm_probes"),
    ((None, None, None), "confirm_interval_s = 60", "health.confirm_interval_s"),
])
def test_bad_health_fields_are_named(tmp_path: Path, urls: tuple[str | None, ...], health: str,
                                     field: str) -> None:
    """Every bad health field is a ConfigError that names it."""
    with pytest.raises(ConfigError) as e:
        load(tmp_path, urls=urls, health=health)
    assert e.value.field == field


# ---- the evidence object of POST /v1/failover ---------------------------------------------


def evidence(**changes: Any) -> dict[str, Any]:
    """A well-formed evidence object about the primary."""
    doc: dict[str, Any] = {"kind": "node_down", "node": "primary", "node_key": KEY,
                           "since": 1764644000, "probes": 3, "detail": "connection refused"}
    doc.update(changes)
    return doc


def body(ev: object) -> bytes:
    """A failover body for KEY carrying ``ev``."""
    return json.dumps({"witness": "alice", "failing_key": KEY, "observed_total_missed": 5,
                       "reason": "primary down for 3 probes (connection refused)",
                       "evidence": ev}).encode()


def test_evidence_parses_into_the_ask() -> None:
    """A well-formed evidence object reaches the policy's question as typed values."""
    ask = parse_failover(body(evidence())).ask
    assert ask.evidence is not None
    assert ask.evidence.as_json() == evidence()
    assert parse_failover(body(None)).ask.evidence is None


@pytest.mark.parametrize("ev", [
    pytest.param("primary", id="not_an_object"),
    pytest.param(evidence(extra=1), id="unknown_field_inside"),
    pytest.param({k: v for k, v in evidence().items() if k != "since"}, id="missing_since"),
    pytest.param(evidence(kind="node_slow"), id="unknown_kind"),
    pytest.param(evidence(node_key=KEY.replace("5", "6")), id="node_key_not_failing_key"),
    pytest.param(evidence(node=""), id="empty_node"),
    pytest.param(evidence(since=-1), id="negative_since"),
    pytest.param(evidence(since=True), id="boolean_since"),
    pytest.param(evidence(probes=0), id="zero_probes"),
    pytest.param(evidence(detail="x" * 201), id="detail_too_long"),
    pytest.param(evidence(detail="a\nb"), id="detail_control_character"),
    pytest.param(evidence(detail="5H" + "J" * 49), id="detail_wif_like"),
])
def test_bad_evidence_is_422(ev: object) -> None:
    """Any malformed evidence is refused as a schema error (422), never reaching the policy."""
    with pytest.raises(RequestInvalidError) as e:
        parse_failover(body(ev))
    assert e.value.status == 422


def test_evidence_is_part_of_the_idempotency_digest() -> None:
    """A request_id retried with other evidence is another body."""
    assert parse_failover(body(evidence())).digest != parse_failover(
        body(evidence(probes=4))).digest
