"""What the devnet's endpoints and producer nodes do wrong: fault values and their params.

Pure values and the parsing of the ``devnet.set_faults`` / ``devnet.set_node_faults``
params (omitted fields unchanged); the servers in :mod:`devnet.server` and
:mod:`devnet.nodes` act on them.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from devnet.api_base import ControlError

LIAR_MISSED_OFFSET = 100
MAX_SLOW_S = 600.0
PARTITION_MODES = ("reset", "drop")
NODE_FAULT_KEYS = ("stuck", "slow_s", "partition", "partition_mode")


@dataclass(frozen=True)
class Faults:
    """What one virtual endpoint does wrong; all zero/false is a healthy node."""

    latency_s: float = 0.0
    error_rate: float = 0.0
    timeout: bool = False
    freeze_head: bool = False
    wrong_data: bool = False


FAULT_FIELDS = {"latency_s": float, "error_rate": float, "timeout": bool,
                "freeze_head": bool, "wrong_data": bool}


def updated_endpoint_faults(current: Faults, params: Mapping[str, object]) -> Faults:
    """``current`` with the fields named in ``params`` changed (``endpoint`` is ignored).

    Raises:
        ControlError: an unknown field or a value of the wrong type or range.
    """
    changes: dict[str, Any] = {}
    for key, value in params.items():
        if key == "endpoint":
            continue
        kind = FAULT_FIELDS.get(key)
        if kind is None:
            raise ControlError(f"unknown fault field {key!r}")
        if kind is bool and not isinstance(value, bool):
            raise ControlError(f"{key} must be true or false")
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ControlError(f"{key} must be a number >= 0")
            if key == "error_rate" and value > 1:
                raise ControlError("error_rate must be in [0, 1]")
            changes[key] = float(value)
        else:
            changes[key] = value
    return replace(current, **changes)


def lie(answer: bytes) -> bytes:
    """Make a lying node: witnesses appear to have missed many more blocks."""
    try:
        doc = json.loads(answer)
    except ValueError:
        return answer

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if isinstance(out.get("total_missed"), int):
                out["total_missed"] += LIAR_MISSED_OFFSET
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return json.dumps(walk(doc)).encode()


@dataclass(frozen=True)
class NodeFaults:
    """What a producer node does wrong; the defaults are a healthy node."""

    stuck: bool = False
    slow_s: float = 0.0
    partition: tuple[str, ...] = ()
    partition_mode: str = "reset"

    def cuts_off(self, address: str) -> bool:
        """Whether a client connecting from ``address`` is on the far side of the partition."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(n, strict=False) for n in self.partition)

    def as_json(self) -> dict[str, Any]:
        """The faults as ``devnet.status`` and ``devnet.set_node_faults`` spell them."""
        return {"stuck": self.stuck, "slow_s": self.slow_s, "partition": list(self.partition),
                "partition_mode": self.partition_mode}


def updated_node_faults(current: NodeFaults, params: Mapping[str, object]) -> NodeFaults:
    """``current`` with the fields named in ``params`` changed (``name`` is ignored).

    Raises:
        ControlError: an unknown field or a value of the wrong type or range.
    """
    changes: dict[str, Any] = {}
    for key, value in params.items():
        if key == "name":
            continue
        if key == "stuck":
            if not isinstance(value, bool):
                raise ControlError("stuck must be true or false")
            changes[key] = value
        elif key == "slow_s":
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    0 <= value <= MAX_SLOW_S):
                raise ControlError(f"slow_s must be a number in [0, {MAX_SLOW_S:g}]")
            changes[key] = float(value)
        elif key == "partition":
            changes[key] = _partition(value)
        elif key == "partition_mode":
            if value not in PARTITION_MODES:
                raise ControlError(f"partition_mode must be one of {list(PARTITION_MODES)}")
            changes[key] = value
        else:
            raise ControlError(f"unknown node fault field {key!r}; have {list(NODE_FAULT_KEYS)}")
    return replace(current, **changes)


def _partition(value: object) -> tuple[str, ...]:
    """Source addresses or networks, normalised (``127.0.0.3`` -> ``127.0.0.3/32``)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ControlError("partition must be an array of IP addresses or networks")
    try:
        return tuple(dict.fromkeys(str(ipaddress.ip_network(v, strict=False)) for v in value))
    except ValueError as e:
        raise ControlError(f"partition: {e}") from e


