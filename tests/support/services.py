"""Start the signer and the watcher as real processes on a drill directory."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from support.devnet_proc import console_script

STARTUP_TIMEOUT_S = 60.0


@dataclass
class Service:
    """A service process (its own process group) and its log file."""

    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Signal the whole process group (gunicorn runs a master and a worker)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit within 20 s; return the exit status."""
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
        return self.proc.wait(timeout=10)

def start_process(argv: list[str], log: Path, cwd: Path | None = None
                  ) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, output appended to ``log``."""
    with log.open("ab") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


@contextmanager
def running_signer(directory: Path, tag: str = "signer") -> Iterator[Service]:
    """`witness-signer serve` on ``directory``, ready when /healthz answers."""
    port = tomllib.loads((directory / "signer.toml").read_text())["signer"]["port"]
    url = f"http://127.0.0.1:{port}"
    log = directory / f"{tag}.log"
    service = Service(start_process([console_script("witness-signer"), "serve", "--config",
                              str(directory / "signer.toml")], log), log, url)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if service.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"signer did not start: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield service
    finally:
        service.stop()


@contextmanager
def running_watcher(directory: Path, tag: str = "watcher") -> Iterator[Service]:
    """`witness-watcher run` on ``directory``."""
    log = directory / f"{tag}.log"
    service = Service(start_process([console_script("witness-watcher"), "run", "--config",
                              str(directory / "watcher.toml")], log), log)
    try:
        time.sleep(0.2)
        if service.proc.poll() is not None:
            raise AssertionError(f"watcher exited at start: {log.read_text()[-3000:]}")
        yield service
    finally:
        service.stop()
