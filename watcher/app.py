"""Composition: from a loaded :class:`WatcherConfig` to the watcher's real collaborators.

The only place the watcher's clients are built: the RPC reader, the signer
client (the watcher's Ed25519 key and the signer's public key, nothing else:
the watcher holds no chain key, T1), the notifier chain and the state store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from shared.clock import Clock
from shared.errors import ConfigError
from shared.httpsig import load_private_key, load_public_key
from shared.logtext import KeyLabels
from shared.notify import (
    FanOutNotifier,
    LabelledNotifier,
    LogNotifier,
    NonBlockingNotifier,
    Notifier,
    RateLimitedNotifier,
)
from shared.rpc import HeadTracker, JsonRpcClient
from shared.sms import TwilioNotifier
from watcher.config import WatcherConfig
from watcher.daemon import Settings, Watcher
from watcher.health import HealthSettings
from watcher.metrics import Metrics, MetricsServer
from watcher.probe import HealthMonitor, ProbedNode, Prober
from watcher.reader import RpcChainReader
from watcher.signer_client import SignerClient
from watcher.state import ReadOnlyStateStore, StateStore

log = logging.getLogger(__name__)

# One SMS per request event, whatever the per-event interval: a second switch
# minutes after the first must not be suppressed as a repeat.
SWITCH_EVENTS: Final = frozenset({"switch_requested", "switch_confirmed", "switch_refused",
                                  "switch_failed"})


class AlertRouter:
    """Sends switch events through ``switches`` and everything else through ``conditions``."""

    def __init__(self, switches: Notifier, conditions: Notifier) -> None:
        self._switches = switches
        self._conditions = conditions

    def send(self, event: str, text: str) -> None:
        """Route by event kind.

        Raises:
            NotifyError: from the chosen notifier.
        """
        target = self._switches if event in SWITCH_EVENTS else self._conditions
        target.send(event, text)

    def __repr__(self) -> str:
        return f"AlertRouter({self._switches!r}, {self._conditions!r})"


def build_sms(config: WatcherConfig) -> TwilioNotifier:
    """A :class:`TwilioNotifier` for the config's [twilio] section.

    Raises:
        ConfigError: no section, no token, or bad settings.
    """
    t = config.twilio
    if t is None:
        raise ConfigError("no [twilio] section", path=str(config.path), field="twilio")
    return TwilioNotifier(t.account_sid, config.twilio_token(), t.from_number, t.to_numbers,
                          api_base_url=t.api_base_url, timeout_s=t.timeout_s)


def build_notifier(config: WatcherConfig, clock: Clock) -> tuple[Notifier, Callable[[], None]]:
    """RateLimited(FanOut(NonBlocking(Twilio), NonBlocking(apprise))) over the configured
    channels, else the log; and a closer.

    Raises:
        ConfigError: a channel is configured but its token or URLs are missing or unsafe.
    """
    channels: list[NonBlockingNotifier] = []
    closers: list[Callable[[], object]] = []
    if config.twilio is not None:
        sms = build_sms(config)
        channels.append(NonBlockingNotifier(sms))
        closers.append(sms.close)
    if config.apprise_configured:
        from shared.channels import AppriseNotifier  # noqa: PLC0415 - apprise only if configured

        if config.apprise_urls_file is None:
            log.warning("apprise URLs come from the environment (%s); prefer "
                        "alerts.apprise_urls_file (mode 0600)", config.apprise_urls_env)
        apprise = AppriseNotifier(config.apprise_urls())
        log.info("alert channels: %s", ", ".join(apprise.names))
        channels.append(NonBlockingNotifier(apprise))
    labels = key_labels(config)
    if not channels:
        log.warning("no [twilio] section and no apprise URLs: alerts go to the log only")
        return LabelledNotifier(LogNotifier(), labels.annotate), lambda: None
    fan_out = LabelledNotifier(FanOutNotifier(channels), labels.annotate)
    hourly = config.alert_max_per_hour
    router = AlertRouter(
        RateLimitedNotifier(fan_out, per_event_min_interval=timedelta(0), max_per_hour=hourly,
                            clock=clock),
        RateLimitedNotifier(fan_out, per_event_min_interval=config.alert_min_interval,
                            max_per_hour=hourly, clock=clock))

    def close() -> None:
        for channel in channels:
            channel.close()
        _close_all(closers)

    return router, close


def key_labels(config: WatcherConfig) -> KeyLabels:
    """Node names for keys, from the config's ``[[nodes]]``."""
    return KeyLabels((n.public_key, n.name) for n in config.node_keys)


def build_reader(config: WatcherConfig) -> RpcChainReader:
    """The RPC reader over the configured nodes."""
    rpc = JsonRpcClient(config.rpc_nodes, timeout_s=config.rpc_timeout_s)
    tracker = HeadTracker(timedelta(seconds=config.timing.stale_after_s))
    return RpcChainReader(rpc, config.account, quorum=config.policy.quorum, tracker=tracker,
                          block_interval_s=config.timing.block_interval_s)


def build_health(config: WatcherConfig, clock: Clock) -> HealthMonitor | None:
    """The producer-node prober (not started), or None when no node has a ``health_url``."""
    health = config.health
    if health is None:
        return None
    nodes = tuple(ProbedNode(n.name, n.public_key, n.health_url) for n in config.node_keys
                  if n.health_url is not None)
    prober = Prober(timeout_s=health.timeout_s, source_address=health.source_address)
    return HealthMonitor(nodes, prober, HealthSettings(max_lag_blocks=health.max_lag_blocks,
                                                       bad_probes=health.bad_probes),
                         interval_s=health.probe_interval_s, clock=clock)


def build_signer_client(config: WatcherConfig, clock: Clock,
                        sleep: Callable[[float], object]) -> SignerClient:
    """The signer client with the watcher's request key and the signer's answer key.

    Raises:
        ConfigError: a key file is missing, malformed or has unsafe modes.
    """
    return SignerClient(
        config.signer_url, load_private_key(config.key_path), config.signer_keyid,
        load_public_key(config.signer_public_key_path), clock=clock, sleep=sleep,
        timeout_s=config.signer_timeout_s, attempts=config.signer_attempts,
        backoff_s=config.signer_backoff_s, max_skew=config.max_skew,
        ca_file=config.signer_ca_file)


def settings_of(config: WatcherConfig, *, dry_run: bool = False) -> Settings:
    """The daemon's settings; ``dry_run`` adds to the config's own flag."""
    return Settings(account=config.account, policy=config.policy, timing=config.timing,
                    dry_run=dry_run or config.dry_run,
                    signer_retry_interval_s=config.signer_retry_interval_s,
                    follow_timeout_s=config.follow_timeout_s, fail_point=config.fail_point)


@dataclass
class Running:
    """A built watcher and what must be closed after it."""

    watcher: Watcher
    closers: list[Callable[[], object]] = field(default_factory=list)

    def close(self) -> None:
        """Close everything, last built first; keep going on errors."""
        _close_all(self.closers)


def _close_all(closers: list[Callable[[], object]]) -> None:
    for close in reversed(closers):
        try:
            close()
        except Exception:  # the rest still needs closing
            log.warning("error while closing the watcher", exc_info=True)


def build_watcher(config: WatcherConfig, *, clock: Clock, sleep: Callable[[float], object],
                  dry_run: bool = False, notifier: Notifier | None = None,
                  metrics_server: bool = True) -> Running:
    """Lock the state directory and build the daemon with every collaborator.

    Raises:
        ConfigError: key files, Twilio settings.
        StateError: another watcher holds the state directory, or the state is corrupt.
        OSError: the metrics port cannot be bound.
    """
    closers: list[Callable[[], object]] = []
    settings = settings_of(config, dry_run=dry_run)
    # A dry run reads the saved state but never creates, locks or writes it.
    store = (ReadOnlyStateStore if settings.dry_run else StateStore)(config.state_dir)
    store.lock()
    closers.append(store.unlock)
    try:
        signer = build_signer_client(config, clock, sleep)
        closers.append(signer.close)
        if notifier is None:
            notifier, close_notifier = build_notifier(config, clock)
            closers.append(close_notifier)
        reader = build_reader(config)
        closers.append(reader.close)
        metrics = Metrics()
        health = build_health(config, clock)
        if health is not None:
            closers.append(health.close)
        if metrics_server and config.metrics_host is not None and config.metrics_port is not None:
            server = MetricsServer(metrics, config.metrics_host, config.metrics_port).start()
            closers.append(server.close)
            log.info("metrics on http://%s:%d/metrics", config.metrics_host, server.port)
        watcher = Watcher(settings, reader, signer,
                          notifier=notifier, clock=clock, sleep=sleep, store=store,
                          metrics=metrics, key_labels=key_labels(config),
                          health=health)
        if health is not None:
            health.on_change = watcher.wake
            health.start()
            log.info("probing %d producer node(s) every %.2f s%s", len(health.nodes),
                     health.interval_s, "; pre-emptive failover on"
                     if config.policy.preemptive else "; pre-emptive failover off")
    except BaseException:
        _close_all(closers)
        raise
    return Running(watcher, closers)
