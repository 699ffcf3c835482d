"""The signer process on the devnet: rotation, wrap-around and on_exhausted = disable."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from drill.services import running_devnet, running_signer
from shared.chains import NULL_KEY
from shared.httpsig import (
    Headers,
    HttpResponse,
    load_private_key,
    load_public_key,
    signed_headers_for,
    verify_response,
)

pytestmark = pytest.mark.timeout(180)


def post_failover(url: str, directory: Path, body: dict[str, Any]) -> requests.Response:
    """POST /v1/failover signed with the watcher's key; the signed answer is verified."""
    raw = json.dumps(body).encode()
    target = f"{url}/v1/failover"
    headers = signed_headers_for("POST", target, raw, "application/json",
                                 load_private_key(directory / "keys" / "watcher.key"),
                                 "watcher", datetime.now(UTC))
    response = requests.post(target, data=raw, headers=headers, timeout=30)
    verify_response(HttpResponse(response.status_code, Headers(response.headers.items()),
                                 response.content), headers,
                    load_public_key(directory / "keys" / "signer.pub"), datetime.now(UTC))
    return response


def set_policy(directory: Path, **values: object) -> None:
    """Rewrite [policy] fields of the drill's signer.toml."""
    path = directory / "signer.toml"
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        name = line.split("=", 1)[0].strip()
        if name in values:
            lines[i] = f"{name} = {json.dumps(values[name])}"
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("chain", ["hive", "steem"])
def test_rotation_wraps_then_disables(tmp_path: Path, chain: str) -> None:
    """Keys rotate primary→backup1→backup2→primary (one wrap), then the null key when exhausted."""
    # Every node is stopped to make misses: rotation without health information.
    with running_devnet(tmp_path / "drill", slot_seconds=0.1, chain=chain,
                        health=False) as devnet:
        set_policy(devnet.dir, max_switches=10, cooldown_s=0, max_rounds=1,
                   on_exhausted="disable")
        keys = {n["name"]: n["public_key"] for n in devnet.status()["nodes"]}
        before = devnet.client.call("condenser_api.get_witness_by_account", ["alice"])
        with running_signer(devnet.dir) as signer:
            for name in keys:
                devnet.client.call("devnet.stop_node", {"name": name})
            expected = ["backup1", "backup2", "primary", "backup1", "backup2", None]
            seen: list[str | None] = []
            for step in expected:
                status = devnet.status()
                current = status["witness"]["signing_key"]
                baseline = status["witness"]["total_missed"]
                status = devnet.wait_for(lambda s, b=baseline: s["witness"]["total_missed"] > b,
                                         30, "a new miss")
                answer = post_failover(signer.url, devnet.dir, {
                    "witness": "alice", "failing_key": current,
                    "observed_total_missed": status["witness"]["total_missed"],
                    "reason": "rotation test", "request_id": secrets.token_hex(12)})
                assert answer.status_code == 200, answer.text
                want = NULL_KEY if step is None else keys[step]
                devnet.wait_for(lambda s, k=want: s["witness"]["signing_key"] == k, 30,
                                f"the switch to {step or 'the null key'}")
                seen.append(step)
            assert seen == expected
            after = devnet.client.call("condenser_api.get_witness_by_account", ["alice"])
            assert after["url"] == before["url"]
            assert after["props"] == before["props"]
            # Disabled: alice leaves the schedule and no further request can switch her.
            refused = post_failover(signer.url, devnet.dir, {
                "witness": "alice", "failing_key": NULL_KEY, "observed_total_missed": 0,
                "reason": "after disable", "request_id": secrets.token_hex(12)})
            assert refused.status_code == 409
            assert devnet.status()["witness"]["signing_key"] == NULL_KEY
