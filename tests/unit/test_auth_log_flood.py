"""A flood of forged requests is logged as a burst per second plus a count, not line by line."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.httpsig import Headers, HttpMessage
from shared.notify import LogNotifier
from signer.auth import Authenticator, RejectedRequestError
from signer.store import Store


class StepClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.at = datetime(2026, 12, 2, 4, 0, 0, 100_000, tzinfo=UTC)

    def now(self) -> datetime:
        """The time the test set."""
        return self.at


def forged() -> HttpMessage:
    """A request with no signature at all."""
    return HttpMessage("POST", "http://127.0.0.1/v1/failover",
                       Headers({"Content-Type": "application/json"}), b"{}")


def test_failures_beyond_the_burst_are_counted_then_reported(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """12 failures in one second log 5 lines; the next second says 7 more were counted."""
    clock = StepClock()
    with Store(tmp_path / "s.sqlite3", clock=clock.now) as store:
        auth = Authenticator(store, {}, max_skew=timedelta(seconds=30), notifier=LogNotifier(),
                             clock=clock, alert_per_min=1000, alert_interval=timedelta(hours=1))
        with caplog.at_level(logging.WARNING, logger="signer.auth"):
            for _ in range(12):
                with pytest.raises(RejectedRequestError):
                    auth.authenticate(forged(), "failover")
            lines = [r.getMessage() for r in caplog.records]
            assert sum(m.startswith("authentication failed") for m in lines) == 5
            assert not any("more authentication failures" in m for m in lines)
            caplog.clear()
            clock.at += timedelta(seconds=1)
            with pytest.raises(RejectedRequestError):
                auth.authenticate(forged(), "failover")
            lines = [r.getMessage() for r in caplog.records]
        assert lines[0] == ("7 more authentication failures were counted but not logged "
                            "one by one")
        assert lines[1].startswith("authentication failed")
        assert auth.failures_total == 13
