"""A run of free local ports below the ephemeral range, for a devnet with node APIs."""

from __future__ import annotations

import random
import socket
from pathlib import Path

NODE_API_SPAN = 13  # P .. P+12: chain, signer, metrics, reserved, three node APIs


def free_port_span(span: int = NODE_API_SPAN, attempts: int = 200) -> int:
    """A port P with P .. P+span-1 free on 127.0.0.1, below the ephemeral range.

    Below it, no outgoing connection of a busy test run takes one of them between
    this check and the devnet's bind.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(10000, max(10001, low - span))
        if all(_free(base + i) for i in range(span)):
            return base
    raise RuntimeError(f"no {span} free ports in a row found")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
