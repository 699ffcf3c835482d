"""Operator commands over the signed API and the local CLI, against a real signer and devnet."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drill.procs import console_script
from drill.services import RunningDevnet, Service, init_dir, running_devnet, running_signer
from shared.chains import NULL_KEY
from shared.clock import SystemClock
from shared.httpsig import load_private_key, load_public_key
from shared.signed_client import SignedJsonClient, VerifiedAnswer

pytestmark = pytest.mark.timeout(180)


@dataclass
class Api:
    """A devnet, a signer process in manual approval mode and a client per role."""

    devnet: RunningDevnet
    signer: Service
    clients: dict[str, SignedJsonClient]

    def call(self, who: str, method: str, path: str, doc: Any = None) -> VerifiedAnswer:
        """A signed request as ``who``; the answer's signature is verified by the client."""
        return self.clients[who].call(method, path, doc)

    def key_of(self, node: str) -> str:
        """A producer node's public key."""
        return str(next(n["public_key"] for n in self.devnet.status()["nodes"]
                        if n["name"] == node))

    def witness(self) -> dict[str, Any]:
        """alice's witness object on chain."""
        return dict(self.devnet.client.call("condenser_api.get_witness_by_account", ["alice"]))

    def follow(self, answer: VerifiedAnswer) -> dict[str, object]:
        """Poll the request of ``answer`` (as the operator) until it is final."""
        doc = answer.doc
        for _ in range(300):
            if doc["state"] in {"confirmed", "refused", "failed", "denied", "expired"}:
                return doc
            self.devnet.wait_blocks(1)
            doc = self.call("operator", "GET", f"/v1/requests/{doc['request_id']}").doc
        raise AssertionError(f"request stuck: {doc}")


def set_policy(directory: Path, **values: object) -> None:
    """Rewrite [policy] fields of the drill's signer.toml."""
    path = directory / "signer.toml"
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        name = line.split("=", 1)[0].strip()
        if name in values:
            lines[i] = f"{name} = {json.dumps(values[name])}"
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A fast devnet (active mode) and a signer process with manual approval."""
    with running_devnet(tmp_path_factory.mktemp("op") / "drill", slot_seconds=0.1) as devnet:
        set_policy(devnet.dir, approval="manual", cooldown_s=60)
        with running_signer(devnet.dir) as signer:
            keys = devnet.dir / "keys"
            clients = {who: SignedJsonClient(signer.url, load_private_key(keys / f"{who}.key"),
                                             who, load_public_key(keys / "signer.pub"),
                                             clock=SystemClock())
                       for who in ("operator", "watcher")}
            try:
                yield Api(devnet, signer, clients)
            finally:
                for client in clients.values():
                    client.close()


def test_watcher_key_may_not_give_operator_commands(api: Api) -> None:
    """A watcher gets a signed 403 on every operator route; nothing is recorded."""
    for verb, body in (("arm", {}), ("switch", {"to": "backup1"}), ("disable", {}),
                       ("enable", {"to": "backup1"})):
        answer = api.call("watcher", "POST", f"/v1/operator/{verb}", body)
        assert (answer.status, answer.doc) == (403, {"error": "forbidden"})
    assert api.call("operator", "GET", "/v1/status").doc["open_requests"] == []


def test_refusals_name_their_rule_and_change_nothing(api: Api) -> None:
    """Unknown node, the current key, enable while enabled: clear, typed refusals."""
    before = api.witness()
    unknown = api.call("operator", "POST", "/v1/operator/switch", {"to": "backup9"})
    assert unknown.status == 409
    assert "[unknown_node]" in str(unknown.doc["detail"])
    assert "primary, backup1, backup2" in str(unknown.doc["detail"])
    current = api.follow(api.call("operator", "POST", "/v1/operator/switch", {"to": "primary"}))
    assert current["state"] == "refused"
    assert "[already_current]" in str(current["detail"])
    enabled = api.follow(api.call("operator", "POST", "/v1/operator/enable", {"to": "backup1"}))
    assert "[not_disabled]" in str(enabled["detail"])
    bad = api.call("operator", "POST", "/v1/operator/reboot", {})
    assert bad.status == 404
    assert api.witness()["signing_key"] == before["signing_key"]


def test_arm_takes_the_on_chain_key(api: Api) -> None:
    """arm re-arms on the on-chain key at its total_missed, with an audit line by the operator."""
    answer = api.call("operator", "POST", "/v1/operator/arm", {"note": "after maintenance"})
    doc = api.follow(answer)
    assert (doc["state"], doc["kind"]) == ("confirmed", "arm")
    armed = api.call("operator", "GET", "/v1/status").doc["armed"]
    assert isinstance(armed, dict)
    assert armed["armed_key"] == api.key_of("primary")
    assert armed["rounds"] == 0
    by_prefix = api.call("operator", "GET", f"/v1/requests/{str(doc['request_id'])[:8]}")
    assert by_prefix.doc["request_id"] == doc["request_id"]
    assert api.call("watcher", "GET", f"/v1/requests/{str(doc['request_id'])[:8]}").status == 404


def test_denial_holds_for_the_same_outage(api: Api) -> None:
    """After a deny (by id prefix), the watcher asking again for the same key gets 409."""
    api.devnet.client.call("devnet.stop_node", {"name": "primary"})
    try:
        missed = api.witness()["total_missed"]
        api.devnet.wait_for(lambda s: s["witness"]["total_missed"] > missed, 30, "a miss")
        ask = {"witness": "alice", "failing_key": api.key_of("primary"),
               "observed_total_missed": api.witness()["total_missed"], "reason": "test"}
        first = api.call("watcher", "POST", "/v1/failover", ask)
        assert (first.status, first.doc["state"]) == (202, "pending")
        pending = api.call("operator", "GET", "/v1/status").doc["pending"]
        assert isinstance(pending, list)
        assert pending[0]["failing_node"] == "primary"
        prefix = str(first.doc["request_id"])[:7]
        denied = api.call("operator", "POST", f"/v1/requests/{prefix}/deny", {"note": "no"})
        assert denied.doc["state"] == "denied"
        again = api.call("watcher", "POST", "/v1/failover", ask)
        assert again.status == 409
        assert str(again.doc["detail"]).startswith("[denied_recently]")
    finally:
        api.devnet.client.call("devnet.start_node", {"name": "primary"})


def test_disable_then_enable_change_only_the_key(api: Api) -> None:
    """disable sets the null key, enable (--force past the cooldown) a node; url/props stay."""
    before = api.witness()
    disabled = api.follow(api.call("operator", "POST", "/v1/operator/disable", {}))
    assert disabled["state"] == "confirmed", disabled
    assert api.witness()["signing_key"] == NULL_KEY
    cooling = api.follow(api.call("operator", "POST", "/v1/operator/enable", {"to": "primary"}))
    assert "[cooldown]" in str(cooling["detail"])
    enabled = api.follow(api.call("operator", "POST", "/v1/operator/enable",
                                  {"to": "primary", "force": True}))
    assert enabled["state"] == "confirmed", enabled
    after = api.witness()
    assert after["signing_key"] == api.key_of("primary")
    assert (after["url"], after["props"]) == (before["url"], before["props"])
    armed = api.call("operator", "GET", "/v1/status").doc["armed"]
    assert isinstance(armed, dict)
    assert armed["armed_key"] == api.key_of("primary")


def test_local_command_needs_a_running_signer(tmp_path: Path) -> None:
    """Without a signer on the state directory the CLI says so, exits 2, and signs nothing."""
    init_dir(tmp_path / "drill", port_base=40000, slot_seconds=0.1)
    result = subprocess.run([console_script("witness-signer"), "arm", "--config",
                             str(tmp_path / "drill" / "signer.toml")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "no witness-signer is running" in result.stderr


def test_remote_cli_verifies_the_signers_answers(api: Api) -> None:
    """`remote status` prints node names; with the wrong signer key it refuses the answer (3)."""
    keys = api.devnet.dir / "keys"
    base = [console_script("witness-signer"), "remote", "status", "--url", api.signer.url,
            "--key", str(keys / "operator.key")]
    good = subprocess.run(base, capture_output=True, text=True, timeout=60, check=False)
    assert good.returncode == 0, good.stderr
    assert "armed on primary" in good.stdout
    assert api.key_of("primary") not in good.stdout
    wrong = subprocess.run([*base, "--signer-public-key", str(keys / "watcher.pub")],
                           capture_output=True, text=True, timeout=60, check=False)
    assert wrong.returncode == 3
    assert "not authentic" in wrong.stderr
