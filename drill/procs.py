"""Processes, ports and waiting: the plumbing every drill, benchmark and e2e test shares.

Each process runs in its own session (process group), so stopping the group stops
whatever the process started too.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import requests

from shared.errors import ChainError, FailoverError

T = TypeVar("T")

STOP_TIMEOUT_S = 20.0
# What a readiness check may raise while the thing it looks at is still starting.
NOT_READY: tuple[type[Exception], ...] = (ChainError, requests.RequestException, OSError,
                                          ValueError, KeyError)


class DrillError(FailoverError):
    """A drill did not reach its goal: a timeout, or one of its processes died."""


def console_script(name: str) -> str:
    """Path of one of our console scripts, preferably from this interpreter's environment.

    Raises:
        DrillError: the script is not installed.
    """
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise DrillError(f"{name} is not installed in this environment")
    return found


def start_process(argv: Sequence[str], log: Path, cwd: Path | None = None
                  ) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, output appended to ``log``."""
    with log.open("ab") as fh:
        return subprocess.Popen(list(argv), stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def signal_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the process group of ``proc`` if it still runs."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # exited since the poll
            os.killpg(proc.pid, sig)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM the group, SIGKILL it after ``timeout_s``; return the exit status."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
    return proc.wait(timeout=10)


@contextmanager
def running_process(argv: Sequence[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` running for the duration of the block, stopped (group-wide) afterwards."""
    proc = start_process(argv, log)
    try:
        yield proc
    finally:
        stop_process(proc)


def port_free(port: int) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 right now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# A drill uses P (chain), P+1 (signer), P+2 (watcher metrics) and P+10..P+12 (the
# producer nodes' own APIs, devnet.config.NODE_API_PORT_OFFSET).
DRILL_PORT_SPAN = 13


# "LOW-HIGH": the ports drills pick their ranges from. Processes that run drills side by
# side (parallel test workers) each get a range of their own, so two of them never pick
# overlapping ports between one's check and its bind.
ENV_PORT_RANGE = "WITNESS_DRILL_PORTS"


def drill_port_range(span: int = DRILL_PORT_SPAN) -> tuple[int, int]:
    """Where :func:`free_port_base` picks P (P from LOW to HIGH - span): ``WITNESS_DRILL_PORTS``
    when set, else from 10000 up to the kernel's ephemeral range.

    Raises:
        DrillError: ``WITNESS_DRILL_PORTS`` is not ``LOW-HIGH`` with 1024 <= LOW and
            LOW + span <= HIGH <= 65535.
    """
    text = os.environ.get(ENV_PORT_RANGE, "").strip()
    if not text:
        return 10000, max(10000 + span + 1, _ephemeral_low())
    low_text, _, high_text = text.partition("-")
    if not (low_text.strip().isdigit() and high_text.strip().isdigit()):
        raise DrillError(f"{ENV_PORT_RANGE} must be LOW-HIGH (two port numbers), not {text!r}")
    low, high = int(low_text), int(high_text)
    if not low >= 1024 or not low + span <= high <= 65535:
        raise DrillError(f"{ENV_PORT_RANGE}={text}: needs 1024 <= LOW and LOW + {span} <= "
                         "HIGH <= 65535")
    return low, high


def free_port_base(span: int = DRILL_PORT_SPAN, attempts: int = 200, *,
                   below_ephemeral: bool = True) -> int:
    """A port P such that P .. P+span-1 are free on 127.0.0.1 right now.

    ``below_ephemeral`` (the default) picks P in :func:`drill_port_range`, under the
    kernel's ephemeral range: a harness that restarts services on P+1.. many times must
    not see an outgoing connection take one of those ports in between.

    Raises:
        DrillError: no free range was found, or ``WITNESS_DRILL_PORTS`` is malformed.
    """
    rng = random.Random()  # noqa: S311 - port choice, not a secret
    low, high = drill_port_range(span)
    for _ in range(attempts):
        if below_ephemeral:
            base = rng.randrange(low, high - span)
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                base = int(s.getsockname()[1])
        if base + span <= 65535 and all(port_free(base + i) for i in range(span)):
            return base
    raise DrillError(f"no {span} free consecutive ports found")


def wait_until(check: Callable[[], T | None], timeout_s: float, what: str, *,
               procs: Sequence[subprocess.Popen[bytes]] = (),
               interval_s: float = 0.05,
               not_ready: tuple[type[Exception], ...] = NOT_READY) -> T:
    """Call ``check`` until it returns something truthy and return that.

    An exception listed in ``not_ready`` counts as "not yet".

    Raises:
        DrillError: ``timeout_s`` passed, or one of ``procs`` exited meanwhile.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except not_ready:
            result = None
        if result:
            return result
        for proc in procs:
            if proc.poll() is not None:
                raise DrillError(f"{proc.args!r} exited with {proc.returncode} "
                                 f"while waiting for {what}")
        if time.monotonic() > deadline:
            raise DrillError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``GET url`` answers 200 (a readiness probe such as ``/healthz``)."""
    return requests.get(url, timeout=timeout_s).status_code == 200


def wait_http(url: str, timeout_s: float, what: str, *,
              procs: Sequence[subprocess.Popen[bytes]] = ()) -> None:
    """Wait until ``GET url`` answers 200.

    Raises:
        DrillError: timeout, or one of ``procs`` exited meanwhile.
    """
    wait_until(lambda: http_ok(url), timeout_s, what, procs=procs, interval_s=0.1)


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file, for an error message ("" when it does not exist)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""
