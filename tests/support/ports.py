"""Free local ports for test servers."""

from __future__ import annotations

import socket


def free_port_base(span: int = 3, attempts: int = 50) -> int:
    """A port P such that P .. P+span-1 are free on 127.0.0.1 right now."""
    for _ in range(attempts):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + span > 65535:
            continue
        if all(_free(base + i) for i in range(span)):
            return base
    raise RuntimeError("no free port range found")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
