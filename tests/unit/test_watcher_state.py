"""The watcher's state file: atomic, private, and a restart resumes instead of re-triggering."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from support.watcher_fakes import BACKUP, PRIMARY, SETTINGS, T0, FakeClock, FakeReader, FakeSigner

from shared.notify import LogNotifier
from watcher.core import WatchState
from watcher.daemon import Watcher
from watcher.signer_client import SignerAnswer, SignerUnreachableError
from watcher.state import STATE_FILE, StateError, StateStore

SWITCH_BLOCK = 10_000  # beyond the fake nodes' heads: they have not applied the switch yet


def answer(state: str) -> SignerAnswer:
    """A verified signer answer in ``state``."""
    return SignerAnswer(200 if state == "confirmed" else 409, state, "sig-" + "1" * 28, BACKUP,
                        "ab" * 20, SWITCH_BLOCK, "", {"state": state})


def watcher(store: StateStore, reader: FakeReader, signer: FakeSigner) -> Watcher:
    """A daemon over fakes, with the real state store."""
    return Watcher(SETTINGS, reader, signer, notifier=LogNotifier(), clock=FakeClock(),
                   sleep=lambda _s: None, store=store)


def test_save_load_round_trip_private_modes(tmp_path: Path) -> None:
    """The state comes back equal; the file is 0600 and the directory 0700."""
    store = StateStore(tmp_path / "state")
    state = replace(WatchState(), phase="requested", armed_key=PRIMARY, baseline_missed=3,
                    armed_at=T0, request_id="r" * 32, request_body='{"a":1}',
                    alerted={"rpc_unhealthy": T0})
    store.save(state)
    assert store.load() == state
    assert store.load().alerted == {"rpc_unhealthy": T0}
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.state_dir.stat().st_mode) == 0o700
    assert [p.name for p in store.state_dir.iterdir()] == [STATE_FILE]


def test_missing_file_is_unarmed(tmp_path: Path) -> None:
    """No state file yet means a fresh, unarmed watcher."""
    assert StateStore(tmp_path / "state").load() == WatchState()


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way leaves the previous state intact and no temporary file."""
    store = StateStore(tmp_path / "state")
    store.save(replace(WatchState(), phase="armed", armed_key=PRIMARY, baseline_missed=1))
    before = store.path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StateError):
        store.save(replace(WatchState(), phase="armed", armed_key=BACKUP, baseline_missed=9))
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert [p.name for p in store.state_dir.iterdir()] == [STATE_FILE]


@pytest.mark.parametrize("content", [
    pytest.param(b"{not json", id="not-json"),
    pytest.param(b'{"version": 99}', id="other-version"),
    pytest.param(b'{"version": 1, "phase": "armed", "evil": 1}', id="unknown-field"),
    pytest.param(b'{"version": 1, "phase": "exploded"}', id="unknown-phase"),
    pytest.param(b'{"version": 1, "phase": "requested"}', id="request-without-body"),
    pytest.param(b'{"version": 1, "armed_at": "yesterday"}', id="bad-time"),
])
def test_corrupt_state_is_refused(tmp_path: Path, content: bytes) -> None:
    """A corrupt state file stops the watcher instead of silently resetting it."""
    store = StateStore(tmp_path)
    store.path.write_bytes(content)
    store.path.chmod(0o600)
    with pytest.raises(StateError):
        store.load()


def test_state_writable_by_others_is_refused(tmp_path: Path) -> None:
    """A state file others may write is not trusted."""
    store = StateStore(tmp_path)
    store.save(WatchState())
    store.path.chmod(0o666)
    with pytest.raises(StateError):
        store.load()


def test_second_watcher_on_same_state_is_refused(tmp_path: Path) -> None:
    """Only one watcher may hold a state directory."""
    first, second = StateStore(tmp_path / "s"), StateStore(tmp_path / "s")
    first.lock()
    try:
        with pytest.raises(StateError):
            second.lock()
    finally:
        first.unlock()
    second.lock()
    second.unlock()


def test_restart_resumes_outstanding_request_with_same_bytes(tmp_path: Path) -> None:
    """A watcher restarted while its request was unanswered resends the very same body once."""
    store, reader = StateStore(tmp_path / "s"), FakeReader()
    down = FakeSigner(SignerUnreachableError("connection refused"))
    first = watcher(store, reader, down)
    first.step()  # arms at 10
    reader.missed = 11
    first.step()  # threshold met: request persisted, signer unreachable
    assert store.load().phase == "requested"
    assert len(down.bodies) == 1

    back = FakeSigner(answer("confirmed"))
    second = watcher(store, reader, back)
    second.step()
    assert back.bodies == down.bodies  # same request_id, same bytes: idempotent at the signer
    assert second.metrics.requests_sent == 0  # no new request was created
    assert len(json.loads(back.bodies[0])["request_id"]) == 32
    assert store.load().phase == "switched"

    third = watcher(store, reader, FakeSigner(answer("confirmed")))
    third.step()  # nodes still show the old key with the old misses
    assert third.metrics.requests_sent == 0
    reader.key = BACKUP
    third.step()
    assert (store.load().phase, store.load().armed_key) == ("armed", BACKUP)


def test_restart_after_refusal_does_not_retrigger(tmp_path: Path) -> None:
    """Misses a refused request was based on are handled, also across a restart."""
    store, reader = StateStore(tmp_path / "s"), FakeReader()
    first = watcher(store, reader, FakeSigner(answer("refused")))
    first.step()
    reader.missed = 12
    first.step()
    assert (store.load().phase, store.load().baseline_missed) == ("armed", 12)
    signer = FakeSigner(answer("refused"))
    second = watcher(store, reader, signer)
    second.step()
    second.step()
    assert signer.bodies == []
    reader.missed = 13
    second.step()
    assert len(signer.bodies) == 1
