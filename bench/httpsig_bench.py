"""Benchmark verify_request on a typical failover request; prints one JSON object.

Run: ``.venv/bin/python bench/httpsig_bench.py [seconds]``. The process pins itself
to one CPU where the OS allows, signs a pool of requests with distinct nonces, then
verifies them in a loop for ``seconds`` (default 3) and samples per-call latency of
valid and of forged requests (a signature by another key under the same keyid).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from shared.errors import AuthError
from shared.httpsig import (
    Ed25519Signer,
    Headers,
    HttpMessage,
    MemoryNonceStore,
    signed_headers_for,
    verify_request,
)

URL = "http://127.0.0.1:8081/v1/failover"
BODY = json.dumps({
    "witness": "alice",
    "failing_key": "STM6LLegbAgLAy28EHrffBVuANFWcFgmqRMW13wBmTExqFE9SCkg4",
    "observed_total_missed": 12,
    "reason": "2 misses since armed",
    "dry_run": False,
}).encode()
POOL = 4000
SAMPLES = 4000


def pin_one_core() -> int | None:
    """Pin to a single CPU if the platform supports it; return that CPU."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def signed_pool(key: Ed25519Signer, now: datetime, count: int) -> list[HttpMessage]:
    return [
        HttpMessage("POST", URL, Headers(signed_headers_for(
            "POST", URL, BODY, "application/json", key, "watcher", now)), BODY)
        for _ in range(count)
    ]


def percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    cuts = statistics.quantiles(samples_ns, n=100)
    return {"p50_us": round(cuts[49] / 1000, 1), "p99_us": round(cuts[98] / 1000, 1)}


def sample(calls: list[Callable[[], object]]) -> list[int]:
    out = []
    for call in calls:
        start = time.perf_counter_ns()
        with contextlib.suppress(AuthError):
            call()
        out.append(time.perf_counter_ns() - start)
    return out


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    cpu = pin_one_core()
    watcher, mallory = Ed25519Signer.generate(), Ed25519Signer.generate()
    keys = {"watcher": watcher.public_key}
    now = datetime.now(UTC)
    pool = signed_pool(watcher, now, POOL)

    verified, store, index = 0, MemoryNonceStore(), 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        if index == len(pool):
            index, store = 0, MemoryNonceStore()  # each pooled nonce is fresh again
        verify_request(pool[index], keys, store, now)
        index += 1
        verified += 1
    elapsed = time.perf_counter() - start

    store = MemoryNonceStore()
    valid_ns = sample([
        lambda m=m: verify_request(m, keys, store, now) for m in pool[:SAMPLES]  # type: ignore[misc]
    ])
    forged = [
        dataclasses.replace(m, headers=Headers(dict(m.headers) | {
            "signature": signed_pool(mallory, now, 1)[0].headers["signature"]}))
        for m in pool[:SAMPLES]
    ]
    forged_ns = sample([
        lambda m=m: verify_request(m, keys, MemoryNonceStore(), now)  # type: ignore[misc]
        for m in forged
    ])
    print(json.dumps({
        "benchmark": "httpsig.verify_request",
        "request_body_bytes": len(BODY),
        "pinned_cpu": cpu,
        "python": platform.python_version(),
        "verifications": verified,
        "seconds": round(elapsed, 3),
        "verifications_per_s": round(verified / elapsed),
        "valid": percentiles_us(valid_ns),
        "forged": percentiles_us(forged_ns),
    }, indent=2))


if __name__ == "__main__":
    main()
