"""Fakes of the watcher daemon's collaborators (chain reader, signer, notifier, clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.errors import NotifyError
from watcher.core import NodeView, Observation, Policy
from watcher.daemon import Settings, Watcher
from watcher.schedule import Schedule, Timing
from watcher.signer_client import SignerAnswer
from watcher.state import StateStore

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PRIMARY = "STM" + "P" * 50
BACKUP = "STM" + "B" * 50
SETTINGS = Settings(account="alice", policy=Policy(miss_threshold=1),
                    timing=Timing(block_interval_s=3, max_poll_interval_s=30, stale_after_s=15,
                                  visible_after_s=1))


class FakeClock:
    """One second per reading."""

    def __init__(self) -> None:
        self.t = T0

    def now(self) -> datetime:
        """The next second."""
        self.t += timedelta(seconds=1)
        return self.t


class FakeReader:
    """One node; ``down`` makes it fail."""

    def __init__(self) -> None:
        self.key, self.missed, self.head, self.calls, self.down = PRIMARY, 10, 100, 0, False

    def observe(self, now: datetime) -> Observation:
        """A new head each poll, or nothing when down."""
        if self.down:
            return Observation((), ("http://127.0.0.1:1/",))
        self.head += 1
        self.calls += 2
        return Observation((NodeView("http://127.0.0.1:1/", True, self.head, now, self.head,
                                     self.key, self.missed, self.head - 1),))

    def schedule(self) -> Schedule:
        """A one-witness round."""
        return Schedule(("alice",), self.head + 100)


class FakeSigner:
    """Scripted answers; records the POST bodies and GETs."""

    def __init__(self, *answers: SignerAnswer | Exception) -> None:
        self.answers = list(answers)
        self.bodies: list[bytes] = []
        self.gets: list[str] = []
        self.requests_sent = 0

    def _next(self) -> SignerAnswer:
        self.requests_sent += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def failover(self, body: bytes) -> SignerAnswer:
        """Record and answer."""
        self.bodies.append(body)
        return self._next()

    def request_state(self, request_id: str, attempts: int | None = None) -> SignerAnswer:
        """Record and answer."""
        self.gets.append(request_id)
        return self._next()

    def follow(self, answer: SignerAnswer, timeout_s: float, interval_s: float) -> SignerAnswer:
        """Broadcast answers stay as they are here."""
        return answer


class Recorder:
    """A notifier that records, or fails when ``broken``."""

    def __init__(self, *, broken: bool = False) -> None:
        self.sent: list[tuple[str, str]] = []
        self.broken = broken

    def send(self, event: str, text: str) -> None:
        """Record or fail."""
        if self.broken:
            raise NotifyError("twilio down")
        self.sent.append((event, text))

    @property
    def events(self) -> list[str]:
        """Event names in order."""
        return [e for e, _ in self.sent]


SWITCH_BLOCK = 10_000  # beyond the fake nodes' heads: they have not applied the switch yet


def answer(state: str, status: int = 200, **extra: object) -> SignerAnswer:
    """A verified signer answer."""
    return SignerAnswer(status, state, "sig-" + "1" * 28, BACKUP, "ab" * 20, SWITCH_BLOCK,
                        str(extra.get("detail", "")), {"state": state, **extra})


def make(tmp_path: Path, signer: FakeSigner, notifier: Recorder | None = None, *,
         settings: Settings = SETTINGS) -> tuple[Watcher, FakeReader, Recorder]:
    """A daemon over fakes with a real state store."""
    reader, notes = FakeReader(), notifier or Recorder()
    w = Watcher(settings, reader, signer, notifier=notes, clock=FakeClock(),
                sleep=lambda _s: None, store=StateStore(tmp_path / "state"))
    return w, reader, notes
