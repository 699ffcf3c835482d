"""Node fault params (devnet.set_node_faults): partial updates, validation, partitions."""

from __future__ import annotations

from typing import Any

import pytest

from devnet.api_base import ControlError
from devnet.faults import NodeFaults, updated_node_faults

HEALTHY = NodeFaults()


@pytest.mark.parametrize(("params", "expected"), [
    pytest.param({"name": "primary"}, HEALTHY, id="nothing-named"),
    pytest.param({"stuck": True}, NodeFaults(stuck=True), id="stuck"),
    pytest.param({"slow_s": 2}, NodeFaults(slow_s=2.0), id="slow-int"),
    pytest.param({"partition": ["127.0.0.3"]}, NodeFaults(partition=("127.0.0.3/32",)),
                 id="one-address"),
    pytest.param({"partition": ["10.1.2.3/8", "10.0.0.0/8"]},
                 NodeFaults(partition=("10.0.0.0/8",)), id="network-deduplicated"),
    pytest.param({"partition_mode": "drop"}, NodeFaults(partition_mode="drop"), id="drop"),
])
def test_named_fields_change(params: dict[str, Any], expected: NodeFaults) -> None:
    """Each named field is set from a healthy node; the others keep their defaults."""
    assert updated_node_faults(HEALTHY, params) == expected


def test_omitted_fields_stay_and_zero_clears() -> None:
    """A later call changes only what it names; all zero/false/empty is a healthy node."""
    faults = updated_node_faults(HEALTHY, {"stuck": True, "slow_s": 0.5,
                                           "partition": ["127.0.0.3"]})
    faults = updated_node_faults(faults, {"slow_s": 1.5})
    assert faults == NodeFaults(stuck=True, slow_s=1.5, partition=("127.0.0.3/32",))
    assert updated_node_faults(faults, {"stuck": False, "slow_s": 0, "partition": []}) == HEALTHY


@pytest.mark.parametrize("params", [
    pytest.param({"stuck": 1}, id="stuck-int"),
    pytest.param({"slow_s": -0.1}, id="negative-delay"),
    pytest.param({"slow_s": 601}, id="delay-too-long"),
    pytest.param({"slow_s": "1"}, id="delay-string"),
    pytest.param({"partition": "127.0.0.3"}, id="partition-string"),
    pytest.param({"partition": [3]}, id="partition-number"),
    pytest.param({"partition": ["127.0.0.300"]}, id="partition-bad-address"),
    pytest.param({"partition_mode": "RESET"}, id="mode-case"),
    pytest.param({"up": False}, id="unknown-field"),
])
def test_bad_params_are_refused(params: dict[str, Any]) -> None:
    """Wrong types, ranges and unknown fields raise ControlError (JSON-RPC -32602)."""
    with pytest.raises(ControlError):
        updated_node_faults(HEALTHY, params)


@pytest.mark.parametrize(("address", "cut"), [
    pytest.param("127.0.0.3", True, id="listed"),
    pytest.param("127.0.0.2", False, id="other"),
    pytest.param("10.9.8.7", True, id="in-network"),
    pytest.param("::1", False, id="other-family"),
    pytest.param("not-an-address", False, id="garbage"),
])
def test_cuts_off_matches_addresses_and_networks(address: str, cut: bool) -> None:
    """A partition cuts off listed addresses and members of listed networks only."""
    faults = updated_node_faults(HEALTHY, {"partition": ["127.0.0.3", "10.0.0.0/8"]})
    assert faults.cuts_off(address) is cut


def test_status_json_shape() -> None:
    """The faults render as devnet.status lists them: plain JSON types."""
    faults = NodeFaults(stuck=True, slow_s=0.25, partition=("127.0.0.3/32",))
    assert faults.as_json() == {"stuck": True, "slow_s": 0.25, "partition": ["127.0.0.3/32"],
                                "partition_mode": "reset"}
