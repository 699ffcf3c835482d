"""Where drills pick their ports (drill/procs.py): WITNESS_DRILL_PORTS and the default range."""

from __future__ import annotations

import os

import pytest

from drill.procs import (
    DRILL_PORT_SPAN,
    ENV_PORT_RANGE,
    DrillError,
    drill_port_range,
    free_port_base,
)


def test_a_set_range_is_where_the_ports_are_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    """With WITNESS_DRILL_PORTS set, every picked range lies inside it, ports included."""
    monkeypatch.setenv(ENV_PORT_RANGE, "23000-23100")
    assert drill_port_range() == (23000, 23100)
    for _ in range(50):
        base = free_port_base()
        assert base >= 23000
        assert base + DRILL_PORT_SPAN <= 23100


def test_without_the_variable_the_range_stays_under_the_ephemeral_ports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The default: from 10000 up to the kernel's ephemeral range."""
    monkeypatch.delenv(ENV_PORT_RANGE, raising=False)
    low, high = drill_port_range()
    assert low == 10000
    assert high > low + DRILL_PORT_SPAN
    base = free_port_base()
    assert low <= base < high - DRILL_PORT_SPAN


@pytest.mark.parametrize("value", ["23000", "a-b", "23000-23005", "80-9000", "60000-70000",
                                   "23100-23000"])
def test_a_malformed_range_is_refused_by_name(monkeypatch: pytest.MonkeyPatch,
                                             value: str) -> None:
    """Not LOW-HIGH, too narrow for one drill, under 1024 or over 65535: an error naming the
    variable, not a silent fallback."""
    monkeypatch.setenv(ENV_PORT_RANGE, value)
    with pytest.raises(DrillError, match=ENV_PORT_RANGE):
        drill_port_range()


def test_each_test_worker_has_its_own_slice() -> None:
    """Under xdist (as in `make test`), conftest gave this worker a slice of its own."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("not running under xdist")
    low, high = drill_port_range()
    count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.pop(ENV_PORT_RANGE)
    try:
        whole = drill_port_range()
    finally:
        os.environ[ENV_PORT_RANGE] = f"{low}-{high}"
    assert high - low == (whole[1] - whole[0]) // count  # one worker's share of the whole
    assert whole[0] <= low
    assert high <= whole[1]
