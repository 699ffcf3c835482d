"""End to end: the operator's whole cycle on the devnet, real processes, no file touched.

primary dies → the signer switches to backup1 → primary is repaired → the operator
switches back (``witness-signer switch --to primary``), which re-arms the signer →
primary dies again → switched to backup1 again. Once with ``approval = "auto"`` and
the local CLI, once with ``approval = "manual"`` driven only by ``witness-signer remote``.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drill.procs import console_script
from drill.services import (
    RunningDevnet,
    Service,
    running_devnet,
    running_signer,
    running_watcher,
    signer_audit,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SLOT_S = 0.3  # fast, still several watcher polls per block
WITNESSES = 21
ROUND_S = WITNESSES * SLOT_S


@dataclass
class Cycle:
    """The three processes of one drill, and the phase timings measured on them."""

    devnet: RunningDevnet
    signer: Service
    watcher: Service
    timings: dict[str, float] = field(default_factory=dict)

    def key_of(self, node: str) -> str:
        """The public key of a producer node."""
        return str(next(n["public_key"] for n in self.devnet.status()["nodes"]
                        if n["name"] == node))

    def on_chain(self) -> str:
        """The witness's signing key now."""
        return str(self.devnet.status()["witness"]["signing_key"])

    def signer_cli(self, *args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
        """``witness-signer ARGS`` on the signer host (this drill directory)."""
        return subprocess.run([console_script("witness-signer"), *args], capture_output=True,
                              text=True, timeout=timeout_s, check=False)

    def local(self, verb: str, *args: str) -> subprocess.CompletedProcess[str]:
        """A local operator command on the drill's signer.toml."""
        return self.signer_cli(verb, "--config", str(self.devnet.dir / "signer.toml"), *args)

    def remote(self, action: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``witness-signer remote ACTION`` signed with the drill's operator key."""
        return self.signer_cli("remote", action, "--url", self.signer.url, "--key",
                               str(self.devnet.dir / "keys" / "operator.key"), *args)


@pytest.fixture(params=["auto", "manual"])
def cycle(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cycle]:
    """devnet + signer + watcher (active key mode) with the approval mode of the param."""
    with ExitStack() as stack:
        devnet = stack.enter_context(running_devnet(tmp_path / "drill", slot_seconds=SLOT_S))
        config = devnet.dir / "signer.toml"
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace('approval = "auto"', f'approval = "{request.param}"'),
                          encoding="utf-8")
        signer = stack.enter_context(running_signer(devnet.dir))
        watcher = stack.enter_context(running_watcher(devnet.dir))
        result = Cycle(devnet, signer, watcher)
        yield result
        print(f"\n{request.param} cycle timings (s): {json.dumps(result.timings)}")


def kill_primary_after_it_produced(c: Cycle) -> None:
    """Stop primary right after alice produced a block with it."""
    dn = c.devnet
    first = dn.status()
    dn.wait_for(lambda s: s["witness"]["last_confirmed_block_num"]
                > first["witness"]["last_confirmed_block_num"], ROUND_S * 3 + 10,
                "alice to produce")
    dn.client.call("devnet.stop_node", {"name": "primary"})


def wait_key(c: Cycle, node: str, timeout_s: float = 60) -> None:
    """Wait until the chain shows ``node``'s key, then until alice produced with it."""
    key = c.key_of(node)
    switched = c.devnet.wait_for(lambda s: s["witness"]["signing_key"] == key, timeout_s,
                                 f"the switch to {node}")
    c.devnet.wait_for(lambda s: s["witness"]["last_confirmed_block_num"]
                      > switched["head_block_number"], ROUND_S * 3 + 10, f"{node} to produce")


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The output of a command that must have succeeded."""
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def pending_id(c: Cycle, timeout_s: float = 60) -> str:
    """The id prefix ``remote pending`` shows for the one pending request (polled)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = ok(c.remote("pending"))
        lines = [line for line in out.splitlines() if re.match(r"[0-9a-f]{12}  ", line)]
        if lines:
            (line,) = lines
            assert "primary -> backup1" in line, line
            assert c.key_of("primary") not in line
            assert "since armed" in line
            assert "approve by" in line
            return line[:12]
        time.sleep(SLOT_S)
    raise AssertionError("no pending request appeared")


def fail_over_to_backup1(c: Cycle, phase: str) -> None:
    """primary dies; the signer switches to backup1 (manual: approved with ``remote``)."""
    started = time.monotonic()
    kill_primary_after_it_produced(c)
    if "manual" in phase:
        prefix = pending_id(c)
        out = ok(c.remote("approve", prefix[:8], "--note", "e2e"))
        assert "confirmed" in out
    wait_key(c, "backup1")
    c.timings[phase] = round(time.monotonic() - started, 1)


def switch_back(c: Cycle, phase: str, remote: bool) -> None:
    """primary repaired; the operator switches back to it, which re-arms the signer."""
    c.devnet.client.call("devnet.start_node", {"name": "primary"})
    started = time.monotonic()
    # --force: the drill's 5 s cooldown since the failover may not be over yet.
    result = (c.remote("switch", "--to", "primary", "--force") if remote
              else c.local("switch", "--to", "primary", "--force"))
    out = ok(result)
    assert "confirmed: signing key is now primary" in out, out
    c.timings[phase] = round(time.monotonic() - started, 1)
    assert c.on_chain() == c.key_of("primary")
    if remote:
        status = ok(c.remote("status"))
        assert "armed on primary" in status, status
    else:
        status = json.loads(ok(c.signer_cli("status", "--json", "--config",
                                            str(c.devnet.dir / "signer.toml"))))
        assert status["armed"]["armed_key"] == c.key_of("primary")
        assert status["armed"]["rounds"] == 0


def test_operator_cycle(cycle: Cycle) -> None:
    """Fail over, switch back by command (re-armed, no file touched), fail over again."""
    c = cycle
    manual = _approval(c) == "manual"
    started = time.monotonic()
    fail_over_to_backup1(c, "manual_failover_1" if manual else "failover_1")
    switch_back(c, "switch_back", remote=manual)
    fail_over_to_backup1(c, "manual_failover_2" if manual else "failover_2")
    c.timings["cycle"] = round(time.monotonic() - started, 1)
    audit = signer_audit(c.devnet.dir)
    operator = [a for a in audit if a["event"] == "operator_request"]
    assert [a["data"]["kind"] for a in operator] == ["switch"]
    # remote: the operator's keyid; local: user@host
    assert operator[0]["actor"] == "operator" if manual else "@" in operator[0]["actor"]
    confirmed = [a for a in audit if a["event"] == "confirmed"]
    assert len(confirmed) == 3
    assert confirmed[1]["request_id"] == operator[0]["request_id"]
    if manual:
        approvals = [a for a in audit if a["event"] == "approved" and a["actor"] == "operator"]
        assert len(approvals) == 3  # two verdicts and the operator's own switch


def _approval(c: Cycle) -> str:
    text = (c.devnet.dir / "signer.toml").read_text(encoding="utf-8")
    found = re.search(r'^approval = "(\w+)"', text, re.MULTILINE)
    assert found is not None
    return found.group(1)
