"""Signer benchmark: authentication throughput, refusal latency, latency under a forged flood.

Prints one JSON object. A real devnet and a real ``witness-signer serve`` run from a
throwaway drill directory (``witness-devnet init --fast-kdf``); everything talks to
127.0.0.1 only and every process is stopped at the end. Run:

    .venv/bin/python bench/signer_bench.py [--auth-seconds 3] [--flood-rate 1000]
                                           [--flood-seconds 20] [--samples 200]
                                           [--flood-source 127.0.0.2] [--flood-sources 1]
                                           [--flood-give-up-s 10] [--refusal-pace 10]
                                           [--refusal-total 100]

1. ``authenticate``: ``SignerService.authenticate`` (RFC 9421 checks, Ed25519, SQLite
   nonce store with WAL and ``synchronous=FULL``), in this process pinned to one CPU,
   built by the signer's own composition root on a separate state directory. Signing
   the requests is not timed; each pooled request has a fresh nonce.
2. HTTP round trips to the served signer: a forged signature (401; from an address of its
   own and no more than the signer's refusal burst, so this is the cost of a refusal, not
   the refusal pace), a policy refusal
   (409 "no evidence": primary up, no new misses), and accepted requests: ``GET
   /v1/status`` and a ``dry_run`` failover after primary stopped (200 "switch"). Both
   accepted kinds (and the 409) include the signer's own RPC read of the witness from
   the devnet, but no broadcast or block inclusion ("chain time"). ``devnet_chain_read``
   times that read alone, over keep-alive (as the signer does) and fresh connections.
3. Latency of legitimate requests while a separate process sends forged failover requests
   (bounded: rate x seconds requests, at most seconds + 10 s) to the signer: ``GET
   /v1/status`` (``status_under_flood``) and, every 4th request of the same loop, an
   authentic failover ask refused with 409 "no evidence" (``refused_no_evidence_under_flood``:
   the whole decision path, chain read and SQLite write included). The flood comes
   from another loopback address (``--flood-source``, 127.0.0.2), as an attacker's
   would; ``--flood-source 127.0.0.1`` puts it on the legitimate client's own address.
   ``--flood-sources N`` spreads it over N consecutive addresses from there (a flood from
   many hosts); ``--flood-give-up-s S`` makes each flood connection give up on an answer
   after S seconds and reconnect (an attacker that churns connections to dodge the pace);
   ``--refusal-pace P`` and ``--refusal-total T`` set the signer's
   ``signer.refusals_per_source_per_s`` and ``signer.refusals_per_s`` (100000 for both
   turns the pacing off, for the figures without it).

The signer allows 30 failover asks a minute per client, so the bench adds throwaway
watcher clients to its drill's signer.toml and spreads the 409 and dry-run samples
over them. With two or more CPUs the signer runs on all CPUs but the last and the load
generators (this process and the flood) on the last; the devnet, which stands for API
nodes on other hosts, runs with the load generators (``--layout own-core``) or with
the signer (``--layout shared``, the layout of the earlier figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import ipaddress
import itertools
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from devnet.client import DevnetClient
from drill.procs import console_script, free_port_base, start_process, stop_process, wait_until
from shared.errors import AuthError, ChainError
from shared.httpsig import (
    Ed25519Signer,
    Headers,
    HttpMessage,
    HttpResponse,
    MemoryNonceStore,
    generate_keypair,
    load_private_key,
    load_public_key,
    signed_headers_for,
    verify_request,
    verify_response,
)
from shared.rpc import JsonRpcClient

HOST = "127.0.0.1"
EXTRA_WATCHERS = 40  # x 30 asks/min each: room for the 409, 409-under-flood and dry-run series
ASK_EVERY = 4  # under the flood, every 4th legitimate request is a failover ask (409)
# Under the signer's per-source cap (max_connections_per_source, 32 by default) with room for
# the bench's own client: at 32, one flood connection was refused and reset on every retry.
FLOOD_CONNECTIONS = 24
FORGED_SERIES_SOURCE = "127.0.0.9"  # part 2's forged series: an address of its own
REFUSAL_BURST = 10  # the signer's default signer.refusal_burst_per_source
FLOOD_POOL = 5000  # distinct forged requests, cycled; a forged nonce is never spent
# Any well-formed key: authentication does not read the body, and forged requests never get
# further than the signature check.
SOME_KEY = "STM7ghGnsqJZZDM6HdSk13L7ywGdGoR3RL5epnzCeeQeWN3UozuyG"


def percentiles_ms(samples_s: list[float]) -> dict[str, float | int]:
    """p50, p99 and max in milliseconds, with the sample count."""
    cuts = statistics.quantiles(samples_s, n=100)
    return {"n": len(samples_s), "p50_ms": round(cuts[49] * 1000, 2),
            "p99_ms": round(cuts[98] * 1000, 2), "max_ms": round(max(samples_s) * 1000, 2)}


@contextmanager
def affinity(cpus: set[int] | None) -> Iterator[None]:
    """Run the block (and whatever it forks) on ``cpus``; restore afterwards."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def cpu_split() -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, load-generator CPUs): all but the last, and the last; None if one CPU."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return set(cpus[:-1]), {cpus[-1]}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` and its direct children (Linux /proc), or None."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        total = 0
        for p in (pid, *map(int, children)):
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    except (OSError, ValueError, IndexError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def failover_body(failing_key: str, missed: int, *, dry_run: bool = False) -> bytes:
    return json.dumps({"witness": "alice", "failing_key": failing_key,
                       "observed_total_missed": missed, "reason": "signer bench",
                       "dry_run": dry_run}).encode()


# ---- 1. authenticate on one core -----------------------------------------------------------


def bench_authenticate(drill: Path, seconds: float) -> dict[str, Any]:
    """Time SignerService.authenticate on fresh, validly signed requests, pinned to one CPU."""
    from signer.app import build_service  # noqa: PLC0415 - the signer stack loads only here
    from signer.config import SignerConfig  # noqa: PLC0415

    config = SignerConfig.load(drill / "signer.toml")
    config = dataclasses.replace(config, state_dir=drill / "auth-bench-state")
    service = build_service(config)
    watcher = load_private_key(drill / "keys" / "watcher.key")
    url = f"http://{HOST}:{config.port}/v1/failover"
    body = failover_body(SOME_KEY, 12)

    def batch(count: int) -> list[HttpMessage]:
        now = datetime.now(UTC)
        return [HttpMessage("POST", url, Headers(signed_headers_for(
            "POST", url, body, "application/json", watcher, "watcher", now)), body)
            for _ in range(count)]

    cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    durations: list[float] = []
    crypto: list[float] = []
    try:
        with affinity(None if cpu is None else {cpu}):
            while sum(durations) < seconds:
                for msg in batch(500):
                    t0 = time.perf_counter()
                    service.authenticate(msg, "failover")
                    durations.append(time.perf_counter() - t0)
            # The same checks with an in-memory nonce store: what SQLite adds.
            keys, now = {"watcher": watcher.public_key}, datetime.now(UTC)
            for msg in batch(2000):
                t0 = time.perf_counter()
                verify_request(msg, keys, MemoryNonceStore(), now)
                crypto.append(time.perf_counter() - t0)
    finally:
        service.close()
    total = sum(durations)
    return {
        "what": "SignerService.authenticate(route='failover') with the SQLite nonce store "
                "(WAL, synchronous=FULL), in-process; request signing not timed",
        "pinned_cpu": cpu,
        "verified": len(durations),
        "seconds": round(total, 3),
        "verified_per_s": round(len(durations) / total),
        "latency": percentiles_ms(durations),
        "memory_nonce_store_per_s": round(len(crypto) / sum(crypto)),
    }


# ---- processes ----------------------------------------------------------------------------


def add_watchers(drill: Path, count: int) -> list[tuple[str, Ed25519Signer]]:
    """Generate ``count`` extra watcher clients and append them to signer.toml."""
    clients, lines = [], []
    for i in range(count):
        keyid, key_path = f"bench{i}", drill / "keys" / f"bench{i}.key"
        clients.append((keyid, generate_keypair(key_path, key_path.with_suffix(".pub"))))
        lines.append(f'\n[[clients]]\nkeyid = "{keyid}"\nrole = "watcher"\n'
                     f'public_key = "keys/{keyid}.pub"\n')
    text = (drill / "signer.toml").read_text()
    head, sep, tail = text.partition("\n[chain]")
    (drill / "signer.toml").write_text(head + "".join(lines) + sep + tail)
    return clients


@contextmanager
def started(argv: list[str], log: Path, ready: Callable[[], bool], what: str
            ) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` in its own session, logging to ``log``; stop it on exit."""
    proc = start_process(argv, log)
    try:
        wait_until(ready, 90, what, procs=[proc], interval_s=0.1,
                   not_ready=(OSError, ChainError, http.client.HTTPException))
        yield proc
    finally:
        stop_process(proc, timeout_s=15)


# ---- 2 and 3: HTTP ----------------------------------------------------------------------------


class Signer:
    """A keep-alive connection to the served signer; signs outside the timed round trip."""

    def __init__(self, port: int, signer_pub: Path, source: str = HOST) -> None:
        self.port = port
        self.signer_key = load_public_key(signer_pub)
        self.conn = http.client.HTTPConnection(HOST, port, timeout=30,
                                               source_address=(source, 0))
        self.unverified = 0

    def send(self, method: str, path: str, body: bytes, key: Ed25519Signer, keyid: str,
             *, check_answer: bool = True) -> tuple[int, bytes, float]:
        """One signed request; return (status, body, seconds of the round trip)."""
        url = f"http://{HOST}:{self.port}{path}"
        headers = signed_headers_for(method, url, body, "application/json" if body else None,
                                     key, keyid, datetime.now(UTC))
        for attempt in (1, 2):
            t0 = time.perf_counter()
            try:
                self.conn.request(method, path, body or None, headers)
                response = self.conn.getresponse()
                data = response.read()
                elapsed = time.perf_counter() - t0
                break
            except (OSError, http.client.HTTPException):
                self.conn.close()  # the server closed an idle keep-alive: reconnect once
                if attempt == 2:
                    raise
        if check_answer:
            try:
                verify_response(HttpResponse(response.status, Headers(response.getheaders()),
                                             data), headers, self.signer_key, datetime.now(UTC))
            except AuthError:
                self.unverified += 1
        return response.status, data, elapsed

    @staticmethod
    def series(count: int, call: Callable[[int], tuple[int, bytes, float]]
               ) -> tuple[list[float], Counter[int], bytes]:
        """Run ``call(i)`` ``count`` times: (round trips, statuses, the last body)."""
        times, statuses, last = [], Counter[int](), b""
        for i in range(count):
            status, last, elapsed = call(i)
            times.append(elapsed)
            statuses[status] += 1
        return times, statuses, last


def series_doc(what: str, times: list[float], statuses: Counter[int], **extra: Any
               ) -> dict[str, Any]:
    return {"what": what, "statuses": {str(k): v for k, v in sorted(statuses.items())},
            **percentiles_ms(times), **extra}


def _raw_request(method: str, path: str, port: int, body: bytes,
                 headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 request, keep-alive, as the bytes on the wire."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _read_status(sock: socket.socket) -> tuple[str, bool]:
    """Read one whole answer; return its status code and whether the connection stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed before the answer")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":")
                                                          for line in lines[1:])}
    length = int(fields.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed in the answer's body")
        rest += chunk
    return lines[0].split(" ", 2)[1], fields.get("connection", "").lower() != "close"


def flood_addresses(first: str, count: int) -> list[str]:
    """``count`` consecutive IPv4 addresses from ``first``."""
    start = int(ipaddress.IPv4Address(first))
    return [str(ipaddress.IPv4Address(start + i)) for i in range(count)]


def flood(port: int, rate: float, seconds: float, sources: list[str], give_up_s: float
          ) -> None:
    """(Child process.) Send forged failover requests at ``rate``/s for ``seconds``; print JSON.

    The connections come from the loopback addresses ``sources`` in turn (Linux routes
    all of 127.0.0.0/8 locally): 127.0.0.1 is the legitimate client's own address. A
    connection that has no answer within ``give_up_s`` is dropped and a new one opened.
    """
    mallory = Ed25519Signer.generate()  # signs as keyid "watcher": the signature never verifies
    path, url = "/v1/failover", f"http://{HOST}:{port}/v1/failover"
    body = failover_body(SOME_KEY, 99)
    now = datetime.now(UTC)  # within max_skew for the whole (bounded) flood
    # Whole requests as bytes, built up front: the generator spends its CPU on sending,
    # not on http.client, so it keeps up on the core it shares with the devnet.
    pool = [_raw_request("POST", path, port, body, signed_headers_for(
        "POST", url, body, "application/json", mallory, "watcher", now))
        for _ in range(FLOOD_POOL)]
    total = int(rate * seconds)
    counter, statuses, errors = itertools.count(), Counter[str](), Counter[str]()
    latencies: list[float] = []
    lock = threading.Lock()
    print("start", flush=True)
    t0 = time.perf_counter()
    deadline = t0 + seconds + 10

    def sender(source: str) -> None:
        sock: socket.socket | None = None
        while (i := next(counter)) < total and time.perf_counter() < deadline:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent_at = time.perf_counter()
            try:
                if sock is None:
                    sock = socket.create_connection((HOST, port), timeout=give_up_s,
                                                    source_address=(source, 0))
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(pool[i % FLOOD_POOL])
                outcome, keep = _read_status(sock)
                bucket = statuses
                if not keep:
                    sock.close()
                    sock = None
            except OSError as e:
                if sock is not None:
                    sock.close()
                sock, outcome, bucket = None, type(e).__name__, errors
            with lock:
                bucket[outcome] += 1
                latencies.append(time.perf_counter() - sent_at)
        if sock is not None:
            sock.close()

    connections = max(FLOOD_CONNECTIONS, len(sources))
    threads = [threading.Thread(target=sender, args=(sources[i % len(sources)],), daemon=True)
               for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.perf_counter()) + 1)
    elapsed = time.perf_counter() - t0
    sent = sum(statuses.values()) + sum(errors.values())
    print(json.dumps({"offered_per_s": rate, "sent": sent, "seconds": round(elapsed, 2),
                      "achieved_per_s": round(sent / elapsed), "statuses": dict(statuses),
                      "errors": dict(errors), "connections": connections,
                      "source_addresses": [sources[0], sources[-1]] if len(sources) > 1
                      else sources[0], "give_up_s": give_up_s,
                      "forged_latency": percentiles_ms(latencies)}), flush=True)


def bench_chain_read(drill: Path, samples: int) -> dict[str, Any]:
    """Time the RPC calls the signer's read_view makes: read_node on every configured node."""
    from signer.config import SignerConfig  # noqa: PLC0415

    def closing_session() -> requests.Session:
        session = requests.Session()
        session.headers["Connection"] = "close"
        return session

    config = SignerConfig.load(drill / "signer.toml")
    out: dict[str, Any] = {
        "what": f"shared.rpc.JsonRpcClient.read_node on each of the {len(config.rpc_nodes)} "
                "configured devnet endpoints: the chain read inside every 409, status and "
                "dry-run answer; keep_alive is what the signer does"}
    for name, factory in (("keep_alive", requests.Session), ("connection_close", closing_session)):
        rpc = JsonRpcClient(config.rpc_nodes, timeout_s=config.rpc_timeout_s,
                            session_factory=factory)
        times, failed = [], 0
        for _ in range(samples):
            t0 = time.perf_counter()
            try:
                for url in config.rpc_nodes:
                    rpc.read_node(url, "alice")
            except ChainError:  # e.g. a closing connection reused under load: count, go on
                failed += 1
                continue
            times.append(time.perf_counter() - t0)
        out[name] = {**percentiles_ms(times), "failed": failed}
    return out


def bench_http(devnet: DevnetClient, signer: subprocess.Popen[bytes], port: int, drill: Path, *,
               watchers: list[tuple[str, Ed25519Signer]], args: argparse.Namespace
               ) -> dict[str, Any]:
    """Parts 2 and 3 against the served signer; stops node primary near the end."""
    client = Signer(port, drill / "keys" / "signer.pub")
    watcher = load_private_key(drill / "keys" / "watcher.key")
    mallory = Ed25519Signer.generate()
    status = devnet.status()
    primary, missed = status["witness"]["signing_key"], status["witness"]["total_missed"]
    n = args.samples
    out: dict[str, Any] = {}

    def asker(i: int) -> tuple[str, Ed25519Signer]:
        return watchers[i % len(watchers)]

    forger = Signer(port, drill / "keys" / "signer.pub", FORGED_SERIES_SOURCE)
    times, codes, _ = forger.series(min(n * 2, REFUSAL_BURST), lambda i: forger.send(
        "POST", "/v1/failover", failover_body(primary, missed), mallory, "watcher",
        check_answer=False))
    forger.conn.close()
    out["refused_forged_signature"] = series_doc(
        f"POST /v1/failover signed by another key under keyid 'watcher' -> 401 (from "
        f"{FORGED_SERIES_SOURCE}, at most the refusal burst: not paced)", times, codes)
    times, codes, last = client.series(n, lambda i: client.send(
        "POST", "/v1/failover", failover_body(primary, missed), asker(i)[1], asker(i)[0]))
    out["refused_no_evidence"] = series_doc(
        "POST /v1/failover, authentic, primary up, no new misses -> 409 'no evidence' "
        "(includes the signer's RPC read of the witness and storing the refused request)",
        times, codes, detail=json.loads(last).get("detail"))
    times, codes, _ = client.series(n, lambda i: client.send(
        "GET", "/v1/status", b"", watcher, "watcher"))
    baseline = series_doc("GET /v1/status, authentic -> 200 (includes the signer's RPC read "
                          "of the witness from the devnet; no broadcast)", times, codes)
    out["accepted_status"] = baseline
    out["devnet_chain_read"] = bench_chain_read(drill, max(20, n // 6))

    sources = flood_addresses(args.flood_source, args.flood_sources)
    proc = subprocess.Popen([sys.executable, __file__, "--flood", str(port), str(args.flood_rate),
                             str(args.flood_seconds), ",".join(sources),
                             str(args.flood_give_up_s)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "start":
            raise RuntimeError("the flood process did not start")
        cpu_before, t_before = cpu_seconds(signer.pid), time.monotonic()
        end = t_before + args.flood_seconds
        times, codes = [], Counter[int]()
        ask_times, ask_codes = [], Counter[int]()
        for i in itertools.count():
            if time.monotonic() >= end:
                break
            if i % ASK_EVERY == ASK_EVERY - 1:
                keyid, key = asker(i // ASK_EVERY + 2 * n)
                code, _, elapsed = client.send("POST", "/v1/failover",
                                               failover_body(primary, missed), key, keyid)
                ask_times.append(elapsed)
                ask_codes[code] += 1
            else:
                code, _, elapsed = client.send("GET", "/v1/status", b"", watcher, "watcher")
                times.append(elapsed)
                codes[code] += 1
            time.sleep(args.flood_gap_s)
        cpu_after, t_after = cpu_seconds(signer.pid), time.monotonic()
        flood_doc = json.loads(proc.stdout.readline())
        proc.wait(timeout=args.flood_seconds + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    out["status_under_flood"] = series_doc(
        f"GET /v1/status every {args.flood_gap_s * 1000:.0f} ms while forged POST "
        "/v1/failover requests arrive from another process", times, codes,
        baseline_p50_ms=baseline["p50_ms"], baseline_p99_ms=baseline["p99_ms"],
        signer_cpu_percent_of_one_core=None if cpu_before is None or cpu_after is None
        else round(100 * (cpu_after - cpu_before) / (t_after - t_before), 1),
        flood=flood_doc)
    out["refused_no_evidence_under_flood"] = series_doc(
        f"POST /v1/failover, authentic, no new misses -> 409 (every {ASK_EVERY}th legitimate "
        "request in the same loop as status_under_flood, same flood; chain read and a stored "
        "refused request included)", ask_times, ask_codes,
        baseline_p50_ms=out["refused_no_evidence"]["p50_ms"],
        baseline_p99_ms=out["refused_no_evidence"]["p99_ms"])

    devnet.call("devnet.stop_node", {"name": "primary"})
    deadline = time.monotonic() + 60
    while devnet.status()["witness"]["total_missed"] <= missed:
        if time.monotonic() > deadline:
            raise RuntimeError("no miss after stopping primary")
        time.sleep(0.1)
    times, codes, last = client.series(n, lambda i: client.send(
        "POST", "/v1/failover", failover_body(primary, missed + 1, dry_run=True),
        asker(i + n + 2 * n)[1], asker(i + n + 2 * n)[0]))
    out["accepted_dry_run"] = series_doc(
        "POST /v1/failover dry_run, authentic, primary stopped and a new miss on chain -> "
        "200 'switch' (includes the signer's RPC read; nothing broadcast)", times, codes,
        decision=json.loads(last).get("decision"))
    out["answers_failing_verification"] = client.unverified
    return out


def main() -> int:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--auth-seconds", type=float, default=3.0)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--flood-rate", type=float, default=1000.0)
    parser.add_argument("--flood-seconds", type=float, default=20.0)
    parser.add_argument("--flood-gap-s", type=float, default=0.01)
    parser.add_argument("--signer-threads", type=int, default=None,
                        help="signer.threads for the served signer (default: the drill's)")
    parser.add_argument("--layout", choices=("own-core", "shared"), default="own-core",
                        help="own-core: the signer alone on all CPUs but the last, the devnet "
                             "and the load generators on the last; shared: the devnet on the "
                             "signer's CPUs")
    parser.add_argument("--flood-source", default="127.0.0.2",
                        help="loopback address the flood comes from; 127.0.0.1 is the "
                             "legitimate client's own (the worst case: one source for both)")
    parser.add_argument("--flood-sources", type=int, default=1,
                        help="spread the flood over this many consecutive addresses from "
                             "--flood-source")
    parser.add_argument("--flood-give-up-s", type=float, default=10.0,
                        help="a flood connection without an answer after this long is "
                             "dropped and reopened")
    parser.add_argument("--refusal-pace", type=float, default=None,
                        help="signer.refusals_per_source_per_s for the served signer "
                             "(default: the signer's; 100000 turns the pacing off)")
    parser.add_argument("--refusal-total", type=float, default=None,
                        help="signer.refusals_per_s for the served signer (default: the "
                             "signer's)")
    parser.add_argument("--flood", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        flood(int(args.flood[0]), float(args.flood[1]), min(float(args.flood[2]), 25.0),
              args.flood[3].split(","), float(args.flood[4]))
        return 0
    if not 1 <= args.flood_sources <= 200:
        parser.error("--flood-sources must be in [1, 200]")
    if not 0 < args.flood_seconds <= 25:
        parser.error("--flood-seconds must be in (0, 25]: forged requests are signed up front "
                     "and must stay within the signer's 30 s skew")
    started_at = time.monotonic()
    server_cpus, load_cpus = cpu_split()
    with tempfile.TemporaryDirectory() as tmp:
        drill, base = Path(tmp) / "drill", free_port_base()
        subprocess.run([console_script("witness-devnet"), "init", str(drill), "--port-base",
                        str(base), "--slot-seconds", "0.25", "--fast-kdf"], check=True,
                       capture_output=True, timeout=60)
        watchers = add_watchers(drill, EXTRA_WATCHERS)
        if args.signer_threads is not None:
            text = (drill / "signer.toml").read_text()
            (drill / "signer.toml").write_text(re.sub(
                r"(?m)^threads = \d+$", f"threads = {args.signer_threads}", text, count=1))
        for name, value in (("refusals_per_source_per_s", args.refusal_pace),
                            ("refusals_per_s", args.refusal_total)):
            if value is not None:
                text = (drill / "signer.toml").read_text()
                (drill / "signer.toml").write_text(text.replace(
                    "[signer]\n", f"[signer]\n{name} = {value}\n", 1))
        signer_table = tomllib.loads((drill / "signer.toml").read_text())["signer"]
        threads = signer_table["threads"]
        pace = {name: signer_table.get(name, "default")
                for name in ("refusals_per_source_per_s", "refusals_per_s")}
        auth = bench_authenticate(drill, args.auth_seconds)
        devnet = DevnetClient(f"http://{HOST}:{base}/", timeout_s=10)

        def signer_up() -> bool:
            conn = http.client.HTTPConnection(HOST, base + 1, timeout=2)
            try:
                conn.request("GET", "/healthz")
                return conn.getresponse().status == 200
            finally:
                conn.close()

        # "own-core": the signer alone on its CPUs, as on its own host; the devnet (the
        # chain, elsewhere in production) with the load generators. "shared": the devnet
        # on the signer's CPUs (the layout of the earlier figures).
        devnet_cpus = load_cpus if args.layout == "own-core" else server_cpus
        try:
            with affinity(devnet_cpus), started(
                    [console_script("witness-devnet"), "serve", "--config",
                     str(drill / "devnet.toml")],
                    drill / "devnet.log", lambda: bool(devnet.status()), "the devnet"), \
                    affinity(server_cpus), started(
                    [console_script("witness-signer"), "serve", "--config",
                     str(drill / "signer.toml")], drill / "signer.log", signer_up,
                    "the signer") as signer, affinity(load_cpus):
                results = bench_http(devnet, signer, base + 1, drill, watchers=watchers,
                                     args=args)
        finally:
            devnet.close()
    print(json.dumps({
        "benchmark": "signer",
        "authenticate_one_core": auth,
        **results,
        "setup": {"devnet_slot_seconds": 0.25, "signer_threads": threads,
                  "extra_watcher_clients": EXTRA_WATCHERS,
                  "layout": args.layout, "flood_source": args.flood_source,
                  "flood_sources": args.flood_sources, "flood_give_up_s": args.flood_give_up_s,
                  "refusal_pacing": pace,
                  "signer_cpus": sorted(server_cpus) if server_cpus else "all",
                  "devnet_cpus": sorted(devnet_cpus) if devnet_cpus else "all",
                  "load_generator_cpus": sorted(load_cpus) if load_cpus else "all"},
        "wall_seconds": round(time.monotonic() - started_at, 1),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
