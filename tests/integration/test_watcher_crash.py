"""A real `witness-watcher run` killed (SIGKILL) at each step of a failover, then restarted.

The fail point is named by ``WITNESS_WATCHER_FAIL_POINT`` (read only by
:mod:`watcher.config`, unset in production): the watcher kills itself there, as
abruptly as a power cut. The devnet and the signer are real processes. Whatever
the step, the restarted watcher finishes the failover and the chain shows exactly
one switch: the key is backup1, never backup2 (a second request would have moved
it on), because the request is on disk before it is sent and the signer answers
a retried request id idempotently.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from drill.procs import console_script
from drill.services import RunningDevnet, running_devnet, running_signer
from watcher.config import ENV_FAIL_POINT, FAIL_POINTS

SLOT_S = 0.1
pytestmark = pytest.mark.slow


@contextmanager
def watcher_process(directory: Path, fail_point: str | None, tag: str
                    ) -> Iterator[subprocess.Popen[bytes]]:
    """`witness-watcher run` on the drill, with ``fail_point`` set or not; stopped at the end."""
    env = {k: v for k, v in os.environ.items() if k != ENV_FAIL_POINT}
    if fail_point is not None:
        env[ENV_FAIL_POINT] = fail_point
    with (directory / f"{tag}.log").open("ab") as log:
        proc = subprocess.Popen([console_script("witness-watcher"), "run", "--config",
                                 str(directory / "watcher.toml")], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def saved_state(directory: Path) -> dict[str, Any]:
    """The watcher's state file as it is on disk (empty before the first write)."""
    path = directory / "watcher-state" / "watcher-state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate``; fail the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)


def node_key(devnet: RunningDevnet, name: str) -> str:
    """The public signing key of producer node ``name``."""
    return str(next(n["public_key"] for n in devnet.status()["nodes"] if n["name"] == name))


# What is on disk when the watcher dies at each point, before the restart.
ON_DISK = {"decided": "armed", "request_saved": "requested", "request_sent": "requested",
           "answered": "requested", "state_saved": "switched"}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("point", FAIL_POINTS)
def test_watcher_killed_at_each_step_switches_once(tmp_path: Path, point: str) -> None:
    """SIGKILL at any step of a failover, restart: one switch to backup1, the state agrees."""
    assert set(ON_DISK) == set(FAIL_POINTS)
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as devnet, \
            running_signer(devnet.dir):
        backup1 = node_key(devnet, "backup1")
        with watcher_process(devnet.dir, point, "first") as first:
            wait_until(lambda: saved_state(devnet.dir).get("phase") == "armed", 30,
                       "the watcher to arm")
            devnet.client.call("devnet.stop_node", {"name": "primary"})
            assert first.wait(timeout=60) == -signal.SIGKILL
        assert f"fail point {point} reached" in (devnet.dir / "first.log").read_text()
        crashed = saved_state(devnet.dir)
        assert crashed["phase"] == ON_DISK[point]
        with watcher_process(devnet.dir, None, "second") as second:
            wait_until(lambda: saved_state(devnet.dir).get("armed_key") == backup1, 60,
                       "the restarted watcher to see the switch to backup1")
            devnet.wait_blocks(2 * 21)  # two rounds: time for any duplicate switch to show
            assert second.poll() is None
        state = saved_state(devnet.dir)
        status = devnet.status()
    assert status["witness"]["signing_key"] == backup1  # switched once: not on to backup2
    assert status["double_production"] == 0
    assert (state["phase"], state["armed_key"], state["switches"]) == ("armed", backup1, 1)
    if crashed["phase"] != "armed":
        # The restart finished the very request that was on disk.
        assert crashed["request_id"] is not None or point == "state_saved"
        assert state["last_tx_id"] is not None
