"""The three CLIs as an operator meets them: read-only commands, busy ports, --version, defaults.

Real console scripts on a `witness-devnet init` drill directory; no chain is
needed: every case here fails (or answers) before any node is contacted.
"""

from __future__ import annotations

import errno
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import pytest

from drill.procs import console_script, free_port_base
from drill.service_files import SIGNER_STATE, WATCHER_STATE
from drill.services import init_dir

pytestmark = pytest.mark.slow


def run(tool: str, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one of our console scripts to completion, never on a terminal."""
    return subprocess.run([console_script(tool), *args], input="", capture_output=True,
                          text=True, timeout=timeout_s, check=False)


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A drill directory (never served) and its port base."""
    base = free_port_base()
    directory = tmp_path_factory.mktemp("cli") / "drill"
    init_dir(directory, port_base=base, slot_seconds=0.5)
    return directory, base


@contextmanager
def occupied(port: int) -> Iterator[None]:
    """Someone else listens on 127.0.0.1:``port`` for the duration."""
    sock = socket.socket()
    try:
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError as e:  # already taken by another process: busy all the same
            if e.errno != errno.EADDRINUSE:
                raise
        yield
    finally:
        sock.close()


@pytest.mark.parametrize("args", [
    pytest.param(("pending",), id="pending"),
    pytest.param(("pending", "--json"), id="pending_json"),
    pytest.param(("audit",), id="audit"),
    pytest.param(("approve", "0123456789abcdef"), id="approve"),
])
def test_signer_state_commands_never_create_state(drill: tuple[Path, int], tmp_path: Path,
                                                  args: tuple[str, ...]) -> None:
    """With a state_dir that holds no database, they fail naming the setting and create nothing."""
    directory, _ = drill
    config = tmp_path / "signer.toml"
    wrong = tmp_path / "no-such-state"
    text = (directory / "signer.toml").read_text()
    config.write_text(text.replace(f'state_dir = "{SIGNER_STATE}"', f'state_dir = "{wrong}"')
                      .replace('"keys/', f'"{directory}/keys/'))
    assert str(wrong) in config.read_text()
    done = run("witness-signer", args[0], "--config", str(config), *args[1:])
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no pending requests" not in done.stdout
    assert f"no signer state at {wrong}/signer.sqlite3: check signer.state_dir" in done.stderr
    assert not wrong.exists()


def test_signer_busy_port_is_one_line(drill: tuple[Path, int]) -> None:
    """serve on an occupied port prints one line naming signer.port and exits non-zero."""
    directory, base = drill
    with occupied(base + 1):
        done = run("witness-signer", "serve", "--config", str(directory / "signer.toml"))
    assert done.returncode != 0
    assert done.stderr == (f"witness-signer: cannot listen on 127.0.0.1:{base + 1} "
                           "(signer.port): address already in use\n")


def test_watcher_busy_metrics_port_names_the_setting(drill: tuple[Path, int]) -> None:
    """run with its metrics port taken says so in one line naming metrics.port."""
    directory, base = drill
    with occupied(base + 2):
        done = run("witness-watcher", "run", "--config", str(directory / "watcher.toml"),
                   "--once")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("witness-watcher:")]
    assert lines == [f"witness-watcher: cannot listen on 127.0.0.1:{base + 2} (metrics.port): "
                     "address already in use"]
    assert "Traceback" not in done.stderr


def test_devnet_busy_port_names_the_setting(drill: tuple[Path, int]) -> None:
    """serve on an occupied chain port prints one line naming devnet.port."""
    directory, base = drill
    with occupied(base):
        done = run("witness-devnet", "serve", "--config", str(directory / "devnet.toml"))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (f"witness-devnet: cannot listen on 127.0.0.1:{base} "
                                            "(devnet.port): address already in use")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("tool", ["witness-signer", "witness-watcher", "witness-devnet"])
def test_version_from_package_metadata(tool: str) -> None:
    """--version prints the installed distribution's version and exits 0."""
    done = run(tool, "--version")
    assert done.returncode == 0
    assert done.stdout == f"{tool} (witness-failover) {version('witness-failover')}\n"


@pytest.mark.parametrize(("tool", "args", "default"), [
    pytest.param("witness-signer", ("pending",), "/etc/witness-signer/signer.toml",
                 id="signer"),
    pytest.param("witness-watcher", ("status",), "/etc/witness-watcher/watcher.toml",
                 id="watcher"),
])
def test_default_config_path(tool: str, args: tuple[str, ...], default: str) -> None:
    """Without --config the services read the file their systemd unit names under /etc."""
    if Path(default).exists():
        pytest.skip(f"{default} exists on this host")
    done = run(tool, *args)
    assert done.returncode == 2
    assert default in done.stderr
    assert default in "".join(run(tool, args[0], "--help").stdout.split())  # wrapped help


@pytest.mark.parametrize("command", ["status", "check"])
def test_watcher_read_only_commands_never_create_state(drill: tuple[Path, int], tmp_path: Path,
                                                       command: str) -> None:
    """status and check with a state_dir that does not exist say so and create nothing."""
    directory, _ = drill
    wrong = tmp_path / "no-such-state"
    text = (directory / "watcher.toml").read_text()
    config = tmp_path / "watcher.toml"
    config.write_text(text.replace(f'state_dir = "{WATCHER_STATE}"', f'state_dir = "{wrong}"')
                      .replace('"keys/', f'"{directory}/keys/'))
    assert str(wrong) in config.read_text()
    done = run("witness-watcher", command, "--config", str(config))
    assert done.returncode == 1  # nothing answers: the drill is not running
    assert "watcher.state_dir is wrong" in done.stdout
    assert not wrong.exists()
