"""Threat T3/T10: a flood of forged requests, bounded, against the real `witness-signer serve`.

Forged failover requests (a valid-looking signature by the wrong key under keyid
``watcher``) arrive from two other loopback addresses (Linux routes 127.0.0.0/8
locally) while the watcher, on 127.0.0.1, reads its status and asks for a failover.
What must hold is correctness, not speed (the speed is `bench/signer_bench.py`'s,
docs/benchmarks.md): every forged request gets a 401 and nothing else, every genuine
one its right, signed answer, and the flood changes no state and floods no log.

The first test turns the signer's refusal pacing off (`signer.refusals_per_source_per_s`
very high) so that thousands of forged requests reach the authenticator; the second
keeps the default and checks that each flooding address is read no faster than the
pace allows, while the watcher is served as before.
"""

from __future__ import annotations

import http.client
import itertools
import json
import statistics
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from drill.services import Service, running_devnet, running_signer, signer_audit
from shared.httpsig import (
    Ed25519Signer,
    Headers,
    HttpResponse,
    load_private_key,
    load_public_key,
    signed_headers_for,
    verify_response,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

FLOOD_SOURCES = ("127.0.0.2", "127.0.0.3")
CONNECTIONS_PER_SOURCE = 6
FLOOD_REQUESTS = 3000  # in all; the flood also stops after FLOOD_MAX_S
FLOOD_MAX_S = 20.0
GENUINE_ROUNDS = 24  # at least; status reads, every 4th a failover ask, until the flood ends
MAX_ROUNDS = 100  # 25 asks: under the signer's 30 a minute per client


DEFAULT_PACE_PER_S, DEFAULT_BURST = 10, 10  # signer.refusals_per_source_per_s, ..._burst_...
PACED_FLOOD_S = 6.0


@pytest.fixture(scope="module")
def unpaced_signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A devnet and `witness-signer serve` (4 threads) with refusal pacing turned off:
    every forged request reaches the authenticator."""
    directory = tmp_path_factory.mktemp("flood") / "drill"
    with running_devnet(directory):
        config = directory / "signer.toml"
        config.write_text(config.read_text().replace(
            "[signer]\n", "[signer]\nrefusals_per_source_per_s = 100000\n"
                           "refusals_per_s = 100000\n", 1))
        with running_signer(directory) as service:
            yield service


@pytest.fixture(scope="module")
def paced_signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The signer as `witness-devnet init` writes it (the default refusal pacing), with its
    metrics listener on."""
    directory = tmp_path_factory.mktemp("paced") / "drill"
    with running_devnet(directory) as devnet:
        with (directory / "signer.toml").open("a", encoding="utf-8") as fh:
            fh.write(f'\n[metrics]\nhost = "127.0.0.1"\nport = {devnet.port_base + 3}\n')
        with running_signer(directory) as service:
            yield service


def _metrics(signer: Service) -> dict[str, float]:
    """The signer's unlabelled samples, parsed by prometheus_client's own parser."""
    config = tomllib.loads((signer.log.parent / "signer.toml").read_text(encoding="utf-8"))
    url = f"http://127.0.0.1:{config['metrics']['port']}/metrics"
    text = requests.get(url, timeout=5).text
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if not s.labels}


def _failover_body() -> bytes:
    return json.dumps({"witness": "alice", "failing_key": "STM" + "1" * 50,
                       "observed_total_missed": 0, "reason": "flood test"}).encode()


class Flood:
    """Forged failover requests on keep-alive connections from other addresses, bounded."""

    def __init__(self, url: str, max_s: float) -> None:
        parts = urlsplit(url)
        self._host, self._port = str(parts.hostname), int(parts.port or 80)
        mallory = Ed25519Signer.generate()
        body, now = _failover_body(), datetime.now(UTC)
        self._body = body
        self._pool = [signed_headers_for("POST", f"{url}/v1/failover", body, "application/json",
                                         mallory, "watcher", now) for _ in range(200)]
        self._max_s = max_s
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.per_source: Counter[str] = Counter()
        self.seconds = 0.0  # from the start to the last sender's end
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(source,), daemon=True)
                         for source in FLOOD_SOURCES for _ in range(CONNECTIONS_PER_SOURCE)]

    def __enter__(self) -> Flood:
        self._started = time.monotonic()
        self._deadline = self._started + self._max_s
        for thread in self._threads:
            thread.start()
        return self

    def done(self) -> bool:
        """True once every sender has stopped (all requests sent, or the time is up)."""
        return not any(thread.is_alive() for thread in self._threads)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        self.seconds = time.monotonic() - self._started

    def _send(self, source: str) -> None:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=10,
                                          source_address=(source, 0))
        while (not self._stop.is_set() and (i := next(self._counter)) < FLOOD_REQUESTS
               and time.monotonic() < self._deadline):
            try:
                conn.request("POST", "/v1/failover", self._body, self._pool[i % len(self._pool)])
                response = conn.getresponse()
                data = response.read()
                outcome = str(response.status)
                reason = json.loads(data).get("reason", "") if response.status == 401 else ""
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                outcome, reason = type(e).__name__, ""
            with self._lock:
                self.statuses[outcome] += 1
                self.reasons[reason] += 1
                self.per_source[source] += 1
        conn.close()


def _watch_during(signer: Service, flood: Flood) -> tuple[Counter[int], list[float]]:
    """The watcher's status reads (every 4th a failover ask) until the flood ends; each
    answer verified as signed by the signer and bound to its request."""
    directory = signer.log.parent
    watcher = load_private_key(directory / "keys" / "watcher.key")
    signer_pub = load_public_key(directory / "keys" / "signer.pub")
    genuine: Counter[int] = Counter()
    times: list[float] = []
    conn = http.client.HTTPConnection("127.0.0.1", int(urlsplit(signer.url).port or 80),
                                      timeout=10)
    time.sleep(0.3)  # the flood is under way
    for round_ in range(MAX_ROUNDS):
        if round_ >= GENUINE_ROUNDS and flood.done():
            break
        asks = round_ % 4 == 3
        method, path = ("POST", "/v1/failover") if asks else ("GET", "/v1/status")
        body = _failover_body() if asks else b""
        headers = signed_headers_for(method, f"{signer.url}{path}", body,
                                     "application/json" if body else None, watcher,
                                     "watcher", datetime.now(UTC))
        started = time.perf_counter()
        conn.request(method, path, body or None, headers)
        response = conn.getresponse()
        data = response.read()
        times.append(time.perf_counter() - started)
        verify_response(HttpResponse(response.status, Headers(response.getheaders()), data),
                        headers, signer_pub, datetime.now(UTC))
        genuine[response.status] += 1
        time.sleep(0.05)
    conn.close()
    return genuine, times


def _check_genuine_and_audit(signer: Service, genuine: Counter[int], audit_before: int) -> None:
    """Every 4th round asked (409, no evidence), the rest read (200); only those asks are
    in the audit: forged requests leave no trace in the state."""
    rounds = sum(genuine.values())
    assert genuine == Counter({200: rounds - rounds // 4, 409: rounds // 4})
    events = Counter(e.get("event") for e in signer_audit(signer.log.parent)[audit_before:])
    assert (events["request"], events["refused"]) == (rounds // 4, rounds // 4), events


def _all_forged_refused(flood: Flood, genuine: Counter[int], times: list[float]) -> int:
    """Print the run's figures, check that every forged request got a 401, return how many."""
    sent = sum(flood.statuses.values())
    print(f"\nflood: {dict(flood.per_source)} forged requests in {flood.seconds:.1f} s, "
          f"{dict(flood.statuses)}; genuine answers {dict(genuine)}, median "
          f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
    assert flood.statuses == Counter({"401": sent})
    return sent


def test_flood_of_forged_requests_gets_401s_while_the_watcher_is_served(
        unpaced_signer: Service) -> None:
    """3,000 forged requests from two addresses (pacing off): all 401, and the watcher's
    reads and asks during the flood get their right answers, signed and bound to their
    requests; the flood leaves nothing in the audit and a count, not a line each, in the log."""
    signer = unpaced_signer
    audit_before = len(signer_audit(signer.log.parent))
    with Flood(signer.url, FLOOD_MAX_S) as flood:
        genuine, times = _watch_during(signer, flood)
    sent = _all_forged_refused(flood, genuine, times)
    assert sent >= 1000, flood.statuses  # a flood, not a trickle
    assert flood.reasons == Counter({"key_or_signature": sent})
    _check_genuine_and_audit(signer, genuine, audit_before)
    # The log counts the flood instead of writing a line per forged request.
    log = signer.log.read_text()
    assert "authentication failures were counted but not logged one by one" in log
    assert log.count("authentication failed:") < sent // 4
    assert signer.proc.poll() is None


def test_each_flooding_address_is_read_at_the_refusal_pace(paced_signer: Service) -> None:
    """Default pacing: two addresses flood on six connections each for a few seconds; each
    gets at most burst + 1 + seconds x pace forged requests read and answered (all 401),
    while the watcher's reads and asks from a third address are served as before; the
    metrics count the requests that waited."""
    signer = paced_signer
    audit_before = len(signer_audit(signer.log.parent))
    with Flood(signer.url, PACED_FLOOD_S) as flood:
        genuine, times = _watch_during(signer, flood)
    sent = _all_forged_refused(flood, genuine, times)
    bound = DEFAULT_BURST + 1 + flood.seconds * DEFAULT_PACE_PER_S + 1  # +1: float rounding
    for source in FLOOD_SOURCES:
        # At least the burst (the pace is reached), at most what the pace allows.
        assert DEFAULT_BURST < flood.per_source[source] <= bound, (source, flood.per_source)
    _check_genuine_and_audit(signer, genuine, audit_before)
    # The pacing shows in the metrics: requests that waited, none closed (their turns were
    # well inside the header deadline), and the flood counted as failed authentications.
    metrics = _metrics(signer)
    assert 0 < metrics["witness_signer_paced_requests_total"] <= sent
    assert metrics["witness_signer_paced_closed_total"] == 0
    assert metrics["witness_signer_auth_failures_total"] >= sent
    assert "witness_signer_paced_sources" in metrics
    assert signer.proc.poll() is None
