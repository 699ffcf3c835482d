"""Load benchmark: 200 concurrent JSON-RPC readers against a real devnet process.

Prints one JSON object: requests/s, latency percentiles, errors, and whether the
chain kept producing on schedule under the load. Run:

    .venv/bin/python bench/devnet_load.py [--readers 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from drill.procs import console_script, free_port_base, running_process, wait_until

BODIES = [
    b'{"jsonrpc":"2.0","id":1,"method":"condenser_api.get_witness_by_account","params":["alice"]}',
    b'{"jsonrpc":"2.0","id":2,"method":"condenser_api.get_dynamic_global_properties","params":[]}',
    b'{"jsonrpc":"2.0","id":3,"method":"call","params":["database_api","find_witnesses",'
    b'{"owners":["alice"]}]}',
    b'{"jsonrpc":"2.0","id":4,"method":"condenser_api.get_witness_schedule","params":[]}',
]


def reader(port: int, stop: threading.Event, latencies: list[float], errors: list[str],
           index: int) -> None:
    """One client: a keep-alive connection issuing requests until told to stop."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    i = index
    while not stop.is_set():
        body = BODIES[i % len(BODIES)]
        i += 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            if response.status != 200 or b'"result"' not in data:
                errors.append(f"status {response.status}")
        except (OSError, http.client.HTTPException) as e:
            errors.append(type(e).__name__)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append(time.perf_counter() - t0)
    conn.close()


def status(port: int) -> dict[str, object]:
    """devnet.status over a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/", b'{"jsonrpc":"2.0","id":0,"method":"devnet.status","params":{}}',
                 {"Content-Type": "application/json"})
    doc = json.loads(conn.getresponse().read())
    conn.close()
    return dict(doc["result"])


def main() -> int:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--slot-seconds", type=float, default=0.25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port_base()
        subprocess.run([console_script("witness-devnet"), "init", f"{tmp}/d", "--port-base",
                        str(port), "--slot-seconds", str(args.slot_seconds), "--fast-kdf"],
                       check=True, capture_output=True)
        with running_process([console_script("witness-devnet"), "serve", "--config",
                              f"{tmp}/d/devnet.toml"], Path(tmp) / "d" / "devnet.log") as proc:
            before = wait_until(lambda: status(port), 10, "the devnet", procs=[proc])
            stop = threading.Event()
            latencies: list[float] = []
            errors: list[str] = []
            threads = [threading.Thread(target=reader, args=(port, stop, latencies, errors, i),
                                        daemon=True) for i in range(args.readers)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads:
                t.join(timeout=30)
            elapsed = time.perf_counter() - t0
            after = status(port)
    latencies.sort()
    blocks = int(after["head_block_number"]) - int(before["head_block_number"])  # type: ignore[call-overload]
    expected_blocks = elapsed / args.slot_seconds
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 100 else [float("nan")] * 99
    print(json.dumps({
        "benchmark": "devnet_load",
        "readers": args.readers,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": {"p50": round(q[49] * 1000, 2), "p99": round(q[98] * 1000, 2),
                       "max": round(latencies[-1] * 1000, 2) if latencies else None},
        "errors": len(errors),
        "blocks_produced": blocks,
        "blocks_expected": round(expected_blocks, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
