"""Fail points: off by default, refused when unknown, a SIGKILL at the armed point only."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from shared.errors import ConfigError
from signer.failpoints import POINTS, Failpoints


def test_unknown_point_refused() -> None:
    """A misspelt point is a ConfigError at start-up, not a crash test that never crashes."""
    with pytest.raises(ConfigError, match="unknown fail point"):
        Failpoints("after_intnet")


@pytest.mark.parametrize("armed", [None, ""], ids=["unset", "empty"])
def test_off_by_default(armed: str | None) -> None:
    """With nothing armed every point passes."""
    points = Failpoints(armed)
    for point in POINTS:
        points.hit(point)
    assert points.armed is None


def test_armed_point_kills_only_there() -> None:
    """The process passes the other points and dies by SIGKILL at the armed one.

    Its own session: the fail point kills the whole process group, as a crash of the
    signer would.
    """
    script = ("from signer.failpoints import Failpoints\n"
              "p = Failpoints('intent_logged')\n"
              "p.hit('signed')\n"
              "print('passed signed', flush=True)\n"
              "p.hit('intent_logged')\n"
              "print('survived')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False, start_new_session=True)
    assert done.returncode == -signal.SIGKILL
    assert done.stdout == "passed signed\n"
