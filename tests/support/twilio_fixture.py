"""pytest fixture: a running local Twilio endpoint (see drill.fake_twilio).

Load it from tests/conftest.py with ``pytest_plugins = ["support.twilio_fixture"]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drill.fake_twilio import FakeTwilio

FAKE_ACCOUNT_SID = "AC" + "5f" * 16
FAKE_AUTH_TOKEN = "tok-" + "9c" * 14  # a throwaway token known only to the fake


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """A fake Twilio Messages API on 127.0.0.1, accepting FAKE_ACCOUNT_SID / FAKE_AUTH_TOKEN."""
    with FakeTwilio(FAKE_ACCOUNT_SID, FAKE_AUTH_TOKEN) as server:
        yield server
