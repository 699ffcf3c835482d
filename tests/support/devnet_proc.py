"""Run `witness-devnet` as a real process for integration and end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devnet.client import DevnetClient
from shared.errors import ChainError
from support.ports import free_port_base


def console_script(name: str) -> str:
    """Path of one of our console scripts in the running interpreter's venv."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed in this environment")
    return found


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
        """Poll devnet.status until ``predicate`` holds; fail the test on timeout."""
        deadline = time.monotonic() + timeout_s
        status = self.status()
        while not predicate(status):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; "
                                     f"last status: {status}")
            time.sleep(0.05)
            status = self.status()
        return status

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
             key_mode: str = "active") -> None:
    """Run `witness-devnet init` into ``directory``."""
    subprocess.run(
        [console_script("witness-devnet"), "init", str(directory), "--port-base",
         str(port_base), "--slot-seconds", str(slot_seconds), "--chain", chain,
         "--key-mode", key_mode, "--fast-kdf"],
        check=True, capture_output=True, timeout=60,
    )


@contextmanager
def running_devnet(directory: Path, *, slot_seconds: float = 0.1, chain: str = "hive",
                   key_mode: str = "active", port_base: int | None = None,
                   startup_timeout_s: float = 30.0) -> Iterator[RunningDevnet]:
    """Init a drill directory, start `witness-devnet serve`, stop it afterwards."""
    port_base = port_base or free_port_base()
    if not (directory / "devnet.toml").exists():
        init_dir(directory, port_base=port_base, slot_seconds=slot_seconds, chain=chain,
                 key_mode=key_mode)
    config_path = directory / "devnet.toml"
    config = tomllib.loads(config_path.read_text())
    port = int(config["devnet"]["port"])
    log_path = directory / "devnet.log"
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [console_script("witness-devnet"), "serve", "--config", str(config_path)],
            stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}/"
    client = DevnetClient(url, timeout_s=5)
    deadline = time.monotonic() + startup_timeout_s
    try:
        while True:
            try:
                client.status()
                break
            except ChainError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"devnet did not start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.05)
        yield RunningDevnet(directory, url, port_base, proc, client, config)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        client.close()
