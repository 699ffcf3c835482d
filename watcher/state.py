"""The watcher's state file: one JSON document, written atomically, mode 0600.

A restart must neither forget an outstanding request (it is resumed with the same
request id and body, so the signer answers it idempotently) nor re-trigger for
misses already handled (the armed baseline is kept). Write order: temporary file
in the same directory, fsync, rename over the old file, fsync the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Final, get_args

from shared.errors import FailoverError
from watcher.core import Phase, WatchState

log = logging.getLogger(__name__)

STATE_FILE: Final = "watcher-state.json"
LOCK_FILE: Final = "watcher.lock"
VERSION: Final = 1
_MAX_BYTES: Final = 1 << 20
_TIMES: Final = frozenset({"armed_at", "requested_at", "last_switch_at"})
_PHASES: Final = frozenset(get_args(Phase))


class StateError(FailoverError):
    """The state directory or file cannot be used (unsafe modes, corrupt, locked)."""


def encode(state: WatchState) -> dict[str, Any]:
    """The JSON document of ``state``."""
    doc = asdict(state)
    for name in _TIMES:
        value = doc[name]
        doc[name] = None if value is None else value.isoformat()
    doc["alerted"] = {k: v.isoformat() for k, v in sorted(state.alerted.items())}
    return {"version": VERSION, **doc}


def decode(doc: object) -> WatchState:
    """Rebuild a :class:`WatchState` from its JSON document.

    Raises:
        StateError: not a state document of this version.
    """
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise StateError(f"not a version {VERSION} watcher state document")
    known = {f.name: f for f in fields(WatchState)}
    values: dict[str, Any] = {}
    try:
        for name, raw in doc.items():
            if name == "version":
                continue
            if name not in known:
                raise StateError(f"unknown field {name!r}")
            if name in _TIMES and raw is not None:
                values[name] = datetime.fromisoformat(raw)
            elif name == "alerted":
                values[name] = {str(k): datetime.fromisoformat(v) for k, v in raw.items()}
            else:
                values[name] = raw
    except (TypeError, ValueError, AttributeError) as e:
        raise StateError(f"malformed state field: {e}") from e
    state = WatchState(**values)
    checks = [
        state.phase in _PHASES,
        isinstance(state.baseline_missed, int) and state.baseline_missed >= 0,
        isinstance(state.switches, int) and state.switches >= 0,
        state.switch_block is None or (
            isinstance(state.switch_block, int) and state.switch_block >= 0),
        state.phase not in {"requested", "pending"} or (
            isinstance(state.request_id, str) and isinstance(state.request_body, str)),
    ]
    if not all(checks):
        raise StateError("inconsistent watcher state (phase, counters or request)")
    return state


class StateStore:
    """The state file in ``state_dir`` (0700), with a lock so only one watcher uses it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE
        self._lock_fd: int | None = None

    def _prepare_dir(self) -> None:
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            mode = self.state_dir.stat().st_mode
        except OSError as e:
            raise StateError(f"{self.state_dir}: cannot create: {e.strerror}") from e
        if mode & 0o022:
            # SECURITY: whoever can write here can rewrite the baseline or the request.
            raise StateError(f"{self.state_dir}: writable by group or others "
                             f"(mode {stat.S_IMODE(mode):03o})")

    def lock(self) -> None:
        """Take the directory's exclusive lock for the life of this process.

        Raises:
            StateError: another watcher holds it, or the directory is unusable.
        """
        self._prepare_dir()
        path = self.state_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StateError(f"{path}: cannot open: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            # Two watchers on one state would each send (idempotent, but noisy) requests.
            raise StateError(f"{self.state_dir}: another witness-watcher is running") from e
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock (closing the descriptor releases the flock)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> WatchState:
        """The saved state, or a fresh unarmed one when there is no file yet.

        Raises:
            StateError: unsafe mode, unreadable or corrupt (never silently reset: a
                reset would forget an outstanding request).
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return WatchState()
        except OSError as e:
            raise StateError(f"{self.path}: cannot open: {e.strerror}") from e
        with os.fdopen(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode) or mode & 0o022:
                raise StateError(f"{self.path}: must be a regular file not writable by "
                                 f"others (mode {stat.S_IMODE(mode):03o})")
            data = fh.read(_MAX_BYTES + 1)
        if len(data) > _MAX_BYTES:
            raise StateError(f"{self.path}: larger than {_MAX_BYTES} bytes")
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise StateError(f"{self.path}: corrupt (move it away to start unarmed)") from e
        try:
            return decode(doc)
        except StateError as e:
            raise StateError(f"{self.path}: {e}") from e

    def save(self, state: WatchState) -> None:
        """Replace the state file atomically and durably (mode 0600).

        Raises:
            StateError: it could not be written; the old file is left as it was.
        """
        self._prepare_dir()
        data = (json.dumps(encode(state), indent=1, sort_keys=True) + "\n").encode()
        tmp = self.state_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(self.path)
            dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StateError(f"{self.path}: cannot write: {e.strerror}") from e


class ReadOnlyStateStore(StateStore):
    """A dry run's store: reads the saved state if there is one; never creates, locks or writes.

    A dry run (``run --dry-run``, ``watcher.dry_run``) keeps its state in memory, so
    rehearsing on a healthy chain leaves no armed baseline behind and a real
    watcher's state is never touched.
    """

    def lock(self) -> None:
        """Take no lock: nothing is written, and the directory is not created."""

    def save(self, state: WatchState) -> None:
        """Keep the state in memory only."""
        log.debug("dry run: state not saved (phase %s)", state.phase)
