"""The README's quickstart, step by step with the real CLIs, and `witness-devnet demo`."""

from __future__ import annotations

import re
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from devnet.client import DevnetClient
from drill.procs import console_script, free_port_base, start_process
from drill.services import Service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart_commands() -> list[str]:
    """The shell lines of the README's quickstart block, without `make venv`."""
    text = README.read_text()
    block = text.split("## Quickstart on the devnet", 1)[1].split("```sh", 1)[1].split("```")[0]
    lines = [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]
    return [line for line in lines if line and not line.startswith("make venv")]


def test_quickstart_from_the_readme(tmp_path: Path) -> None:
    """The README's quickstart, run as written (ports moved to free ones), ends on backup1."""
    port = free_port_base()
    commands = [c.replace("18090", str(port)).replace("0.5", "0.25") for c in quickstart_commands()]
    assert commands[0].startswith("witness-devnet init drill")
    with ExitStack() as stack:
        background: list[Service] = []
        client = DevnetClient(f"http://127.0.0.1:{port}/", timeout_s=5)
        for command in commands:
            argv = command.rstrip("&").split()
            argv[0] = console_script(argv[0])
            if command.endswith("&"):
                log = tmp_path / f"{Path(argv[0]).name}.log"
                service = Service(start_process(argv, log, cwd=tmp_path), log)
                stack.callback(service.stop)
                background.append(service)
                time.sleep(1.5)
                continue
            if argv[1:3] == ["node", "stop"]:
                # Stop primary only once the watcher and signer are armed and alice produced.
                start = client.status()["witness"]["last_confirmed_block_num"]
                deadline = time.monotonic() + 30
                while client.status()["witness"]["last_confirmed_block_num"] == start:
                    assert time.monotonic() < deadline, "alice never produced"
                    time.sleep(0.1)
            if argv[1] == "status":
                backup1 = next(n["public_key"] for n in client.status()["nodes"]
                               if n["name"] == "backup1")
                deadline = time.monotonic() + 60
                while client.status()["witness"]["signing_key"] != backup1:
                    assert time.monotonic() < deadline, "no switch to backup1"
                    time.sleep(0.1)
            out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True,
                                 timeout=60, check=False)
            assert out.returncode == 0, (command, out.stderr[-2000:])
            if argv[1] == "status":
                assert "(backup1)" in out.stdout
            if argv[1] == "audit":
                assert re.search(r'"event": ?"confirmed"', out.stdout), out.stdout[-2000:]
        assert all(s.proc.poll() is None for s in background)


def test_demo_command_succeeds(tmp_path: Path) -> None:
    """`witness-devnet demo` (what `make demo` runs) exits 0 with a timeline ending in PASS."""
    out = subprocess.run([console_script("witness-devnet"), "demo", "--dir",
                          str(tmp_path / "demo"), "--port-base", str(free_port_base()),
                          "--slot-seconds", "0.25"], capture_output=True, text=True,
                         timeout=200, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "first block by backup1" in out.stdout
    assert out.stdout.rstrip().endswith("PASS")
