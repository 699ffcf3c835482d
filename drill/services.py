"""The devnet, the signer and the watcher as real processes on one drill directory.

Used by ``witness-devnet demo``, the benchmarks and the integration and
end-to-end tests; each helper starts a console script, waits until it is
ready and stops its whole process group afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devnet.client import DevnetClient
from drill.procs import (
    DrillError,
    console_script,
    free_port_base,
    signal_group,
    start_process,
    stop_process,
    tail,
    wait_http,
    wait_until,
)
from drill.service_files import SIGNER_STATE
from shared.errors import ChainError

STARTUP_TIMEOUT_S = 60.0


@dataclass
class Service:
    """A service process (its own process group) and its log file."""

    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Signal the whole process group (the service and anything it started)."""
        signal_group(self.proc, sig)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit within 20 s; return the exit status."""
        return stop_process(self.proc)


@dataclass
class RunningDevnet:
    """A devnet process and the drill directory it was initialised from."""

    dir: Path
    url: str
    port_base: int
    process: subprocess.Popen[bytes]
    client: DevnetClient
    config: dict[str, Any]

    def status(self) -> dict[str, Any]:
        """devnet.status."""
        return self.client.status()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float,
                 what: str) -> dict[str, Any]:
        """Poll devnet.status until ``predicate`` holds.

        Raises:
            DrillError: timeout (the message carries the last status) or the devnet died.
        """
        last: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            last.clear()
            last.update(self.status())
            return dict(last) if predicate(last) else None

        try:
            return wait_until(check, timeout_s, what, procs=[self.process],
                              not_ready=(ChainError,))
        except DrillError as e:
            raise DrillError(f"{e}; last status: {last}") from None

    def wait_blocks(self, count: int, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until the head advanced by ``count`` blocks."""
        start = self.status()["head_block_number"]
        return self.wait_for(lambda s: s["head_block_number"] >= start + count, timeout_s,
                             f"{count} blocks")

    def node_wif(self, name: str) -> str:
        """The devnet-only signing WIF of node ``name``."""
        for node in self.config["nodes"]:
            if node["name"] == name:
                return str(node["signing_wif"])
        raise KeyError(name)

    @property
    def active_wif(self) -> str:
        """The devnet-only active WIF of the watched account."""
        return str(self.config["accounts"]["active_wif"])


def init_dir(directory: Path, *, port_base: int, slot_seconds: float, chain: str = "hive",
             key_mode: str = "active", health: bool = True) -> None:
    """Run ``witness-devnet init --fast-kdf`` into ``directory`` (the real CLI);
    ``health=False`` adds ``--no-health`` (the services act on misses only)."""
    subprocess.run(
        [console_script("witness-devnet"), "init", str(directory), "--port-base",
         str(port_base), "--slot-seconds", str(slot_seconds), "--chain", chain,
         "--key-mode", key_mode, "--fast-kdf", *([] if health else ["--no-health"])],
        check=True, capture_output=True, timeout=60,
    )


@contextmanager
def running_devnet(directory: Path, *, slot_seconds: float = 0.1, chain: str = "hive",
                   key_mode: str = "active", port_base: int | None = None,
                   startup_timeout_s: float = 30.0, health: bool = True
                   ) -> Iterator[RunningDevnet]:
    """Init a drill directory unless it has one, run ``witness-devnet serve``, stop it after.

    Raises:
        DrillError: the devnet did not answer within ``startup_timeout_s``.
    """
    port_base = port_base or free_port_base()
    if not (directory / "devnet.toml").exists():
        init_dir(directory, port_base=port_base, slot_seconds=slot_seconds, chain=chain,
                 key_mode=key_mode, health=health)
    config_path = directory / "devnet.toml"
    config = tomllib.loads(config_path.read_text(encoding="utf-8"))
    port = int(config["devnet"]["port"])
    log = directory / "devnet.log"
    proc = start_process([console_script("witness-devnet"), "serve", "--config",
                          str(config_path)], log)
    url = f"http://127.0.0.1:{port}/"
    client = DevnetClient(url, timeout_s=5)
    try:
        try:
            wait_until(client.status, startup_timeout_s, "the devnet to start", procs=[proc],
                       not_ready=(ChainError,))
        except DrillError as e:
            raise DrillError(f"devnet did not start ({e}): {tail(log, 2000)}") from None
        yield RunningDevnet(directory, url, port_base, proc, client, config)
    finally:
        stop_process(proc, timeout_s=10)
        client.close()


@contextmanager
def running_signer(directory: Path, tag: str = "signer",
                   startup_timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[Service]:
    """``witness-signer serve`` on ``directory``, ready when /healthz answers.

    Raises:
        DrillError: the signer did not become healthy (the message has its log's end).
    """
    port = tomllib.loads((directory / "signer.toml").read_text(encoding="utf-8"))["signer"]["port"]
    url = f"http://127.0.0.1:{port}"
    log = directory / f"{tag}.log"
    service = Service(start_process([console_script("witness-signer"), "serve", "--config",
                                     str(directory / "signer.toml")], log), log, url)
    try:
        try:
            wait_http(f"{url}/healthz", startup_timeout_s, "the signer", procs=[service.proc])
        except DrillError as e:
            raise DrillError(f"signer did not start ({e}): {tail(log)}") from None
        yield service
    finally:
        service.stop()


@contextmanager
def running_watcher(directory: Path, tag: str = "watcher") -> Iterator[Service]:
    """``witness-watcher run`` on ``directory``; it must survive its first 0.2 s.

    Raises:
        DrillError: the watcher exited at start (the message has its log's end).
    """
    log = directory / f"{tag}.log"
    service = Service(start_process([console_script("witness-watcher"), "run", "--config",
                                     str(directory / "watcher.toml")], log), log)
    try:
        time.sleep(0.2)
        if service.proc.poll() is not None:
            raise DrillError(f"watcher exited at start: {tail(log)}")
        yield service
    finally:
        service.stop()


def signer_audit(directory: Path) -> list[dict[str, Any]]:
    """The signer's audit log so far (JSON lines); a half-written last line is skipped."""
    path = directory / SIGNER_STATE / "audit.jsonl"
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events
