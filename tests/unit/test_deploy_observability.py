"""deploy/prometheus-rules.yml and deploy/grafana-dashboard.json: well-formed, and every
metric they name is one the services document (the e2e test checks the live exposition)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\bwitness_(?:watcher|signer)_[a-z_]+")


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((ROOT / "deploy" / "prometheus-rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    return doc


def _documented() -> set[str]:
    text = (ROOT / "docs" / "observability.md").read_text()
    names = set(re.findall(r"^\| `(witness_(?:watcher|signer)_[a-z_]+)", text, re.MULTILINE))
    # A counter is documented as foo_total; PromQL may name it so too.
    return names | {n.removesuffix("_total") for n in names}


def test_rules_are_prometheus_alerting_rules() -> None:
    """Each rule has a name, an expression, a severity and a summary; names are unique."""
    rules = _rules()
    assert rules
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"]
        assert METRIC.search(rule["expr"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
    assert len({r["alert"] for r in rules}) == len(rules)


def test_rules_cover_the_operator_alerts() -> None:
    """Watcher down (absent metrics), signer not ready, misses growing, switch failed and
    authentication failures each have a rule."""
    exprs = {r["alert"]: r["expr"] for r in _rules()}
    assert "absent(witness_watcher_polls_total)" in exprs["WitnessWatcherDown"]
    assert "witness_signer_ready == 0" in exprs["WitnessSignerNotReady"]
    assert "total_missed" in exprs["WitnessMissesGrowing"]
    assert 'state="failed"' in exprs["WitnessSwitchFailed"]
    assert "auth_failures" in exprs["WitnessSignerAuthFailures"]


def test_dashboard_panels_query_prometheus() -> None:
    """Every panel has a unique id, a title, a grid position and Prometheus targets."""
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = {p["title"] for p in panels}
    assert {"Misses since armed", "Current node", "Switches", "Failover requests by state",
            "Authentication failures", "Watcher poll health"} <= titles
    for p in panels:
        assert p["datasource"]["type"] == "prometheus"
        assert p["targets"]
        assert all(METRIC.search(t["expr"]) for t in p["targets"]), p["title"]


def test_every_referenced_metric_is_documented() -> None:
    """The dashboard and the rules name only metrics listed in docs/observability.md."""
    exprs = [r["expr"] for r in _rules()]
    exprs += [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used - _documented() == set()
