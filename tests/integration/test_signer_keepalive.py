"""The signer's front answers keep-alive requests without waiting for a delayed ACK."""

from __future__ import annotations

import http.client
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from drill.services import running_devnet, running_signer

pytestmark = [pytest.mark.timeout(120)]


def test_keep_alive_answers_do_not_stall_for_the_delayed_ack(tmp_path: Path) -> None:
    """Twenty /healthz calls on one connection: median well under Nagle's ~40 ms stall."""
    directory = tmp_path / "drill"
    with running_devnet(directory), running_signer(directory) as signer:
        where = urlsplit(signer.url)
        conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=5)
        times = []
        try:
            for _ in range(20):
                started = time.perf_counter()
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                assert response.status == 200
                times.append(time.perf_counter() - started)
        finally:
            conn.close()
    assert statistics.median(times) < 0.025, times
