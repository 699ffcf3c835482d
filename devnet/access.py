"""Shared, locked access to the one Chain from the HTTP threads and the producer."""

from __future__ import annotations

import threading
import time

from devnet.chain import Chain
from devnet.state import Block


class ChainAccess:
    """Serialises every chain call under one lock and signals produced blocks.

    Readers and the producer thread take ``lock``; code that must wait for a
    block (synchronous broadcast) uses :meth:`wait_for_block` without holding it.
    """

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.lock = threading.RLock()
        self._produced = threading.Condition(self.lock)

    def notify_block(self, block: Block | None) -> None:
        """Wake waiters after a tick (called by the producer, lock held)."""
        self._produced.notify_all()

    def wait_for_block(self, after: int, timeout_s: float) -> bool:
        """Wait until the head is past block ``after``; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while self.chain.head_num <= after:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._produced.wait(remaining)
            return True
