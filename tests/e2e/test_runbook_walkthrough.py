"""docs/runbook.md's devnet drill, run line by line with the real CLIs."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from devnet.client import DevnetClient
from drill.procs import console_script, free_port_base, start_process
from drill.services import Service
from shared.errors import ChainError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
DOC_PORT = "18190"


def drill_commands() -> list[str]:
    """The shell lines between the runbook's drill markers, comments dropped."""
    text = RUNBOOK.read_text(encoding="utf-8")
    block = text.split("<!-- drill:begin -->", 1)[1].split("<!-- drill:end -->", 1)[0]
    body = block.split("```sh", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in body.strip().splitlines()]
    return [line for line in lines if line]


def wait_until(check: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``check()`` until it is true; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except (ChainError, requests.RequestException):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_runbook_drill_lists_the_documented_steps() -> None:
    """The drill block has init, serve, signer serve, watcher run, node stop and status."""
    verbs = [" ".join(c.split()[:2]) for c in drill_commands()]
    for step in ("witness-devnet init", "witness-devnet serve", "witness-signer serve",
                 "witness-watcher run", "witness-devnet node", "witness-devnet status",
                 "witness-signer audit"):
        assert step in verbs, step
    assert verbs.index("witness-watcher run") < verbs.index("witness-devnet node")


def test_runbook_devnet_drill_fails_over_to_backup1(tmp_path: Path) -> None:
    """Following the runbook's drill as written (ports moved) switches alice to backup1."""
    port = free_port_base()
    commands = [c.replace(DOC_PORT, str(port)).replace("--slot-seconds 0.5",
                                                       "--slot-seconds 0.25")
                for c in drill_commands()]
    client = DevnetClient(f"http://127.0.0.1:{port}/", timeout_s=5)
    signer_url = f"http://127.0.0.1:{port + 1}/healthz"
    outputs: dict[str, str] = {}
    with ExitStack() as stack:
        stack.callback(client.close)
        background: list[Service] = []
        for command in commands:
            argv = command.rstrip("&").split()
            argv[0] = console_script(argv[0])
            step = " ".join(command.split()[:3])
            if command.endswith("&"):
                log = tmp_path / f"{len(background)}-{Path(argv[0]).name}.log"
                service = Service(start_process(argv, log, cwd=tmp_path), log)
                stack.callback(service.stop)
                background.append(service)
                if "witness-devnet serve" in command:
                    wait_until(client.status, 30, "the devnet")
                elif "witness-signer serve" in command:
                    wait_until(lambda: requests.get(signer_url, timeout=2).status_code == 200,
                               60, "the signer's /healthz")
                else:
                    start = client.status()["witness"]["last_confirmed_block_num"]
                    wait_until(lambda s=start: client.status()["witness"][
                        "last_confirmed_block_num"] > s, 30, "alice to produce once armed")
                    time.sleep(1.0)
                assert service.proc.poll() is None, log.read_text()[-3000:]
                continue
            if argv[1:3] == ["node", "start"]:
                backup1 = next(n["public_key"] for n in client.status()["nodes"]
                               if n["name"] == "backup1")
                assert client.status()["witness"]["signing_key"] == backup1
            if argv[1] == "status" and "witness-devnet" in argv[0]:
                backup1 = next(n["public_key"] for n in client.status()["nodes"]
                               if n["name"] == "backup1")
                wait_until(lambda k=backup1: client.status()["witness"]["signing_key"] == k,
                           60, "the switch to backup1")
            if argv[1] == "dry-run":
                before = client.status()["witness"]["signing_key"]
            out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True,
                                 timeout=60, check=False)
            assert out.returncode == 0, (command, out.stdout[-2000:], out.stderr[-2000:])
            outputs[step] = out.stdout
            if argv[1] == "dry-run":
                assert client.status()["witness"]["signing_key"] == before
        assert all(s.proc.poll() is None for s in background)
    assert "(backup1)" in outputs["witness-devnet status --config"]
    assert "double production: 0" in outputs["witness-devnet status --config"]
    assert re.search(r'"event": ?"confirmed"', outputs["witness-signer audit --config"])
    assert "signer:" in outputs["witness-watcher status --config"]
