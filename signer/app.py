"""Composition: from a loaded :class:`SignerConfig` to a ready-to-start :class:`SignerService`.

The only place the signer's real collaborators are built: the keystore
(decrypted once), the client keys and the signer's response key, the SQLite
store and the request lifecycle over it, the chain adapter, the notifier, and
the executor and its worker thread, which the service is handed. Everything
refuses unsafe file modes, and a second signer on the same state directory is
refused (T7).

What loads where: :mod:`signer.keystore` (imported here) loads beem's key
classes (``beemgraphenebase``); the transaction serialiser (``beembase``) comes
with :mod:`signer.chain`, imported when the service is built. Twilio loads only
when SMS is configured.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from shared.clock import Clock, SystemClock
from shared.errors import ConfigError, KeystoreError
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
from signer.auth import Client
from signer.config import SignerConfig, TwilioConfig
from signer.executor import Executor
from signer.failpoints import ENV_NAME as FAILPOINT_ENV
from signer.failpoints import Failpoints
from signer.keystore import (
    Keystore,
    PassphraseSource,
    Secret,
    read_passphrase,
    warm_up_signing,
)
from signer.lifecycle import Lifecycle
from signer.privatefile import read_private_file
from signer.probes import NodeProber, ProbeTarget
from signer.service import ServiceOptions, SignerService
from signer.store import Store
from signer.worker import Worker

log = logging.getLogger(__name__)

DB_NAME = "signer.sqlite3"
LOCK_NAME = "signer.lock"
_MAX_TOKEN_BYTES = 4096


def open_store(config: SignerConfig, clock: Clock | None = None) -> Store:
    """Open the state database in ``config.state_dir`` (created 0700 when missing).

    Raises:
        ConfigError: the state directory is unusable or writable by others.
        StoreError: the database or audit file cannot be opened or has unsafe modes.
    """
    clock = clock or SystemClock()
    _make_state_dir(config.state_dir)
    window_s = max(600, int(config.max_skew.total_seconds()) * 4)
    return Store(config.state_dir / DB_NAME, nonce_window_s=window_s, clock=clock.now)


def _make_state_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the state directory: {e.strerror}",
                          path=str(state_dir)) from e


def configured_passphrase_sources(config: SignerConfig) -> list[PassphraseSource]:
    """The configured passphrase sources in order: credential, file, environment, terminal."""
    sources: list[PassphraseSource] = []
    if config.passphrase_credential:
        sources.append(PassphraseSource.credential(config.passphrase_credential,
                                                   config.credentials_directory))
    if config.passphrase_file:
        sources.append(PassphraseSource.file(config.passphrase_file))
    if config.passphrase_env:
        sources.append(PassphraseSource.env(config.passphrase_env,
                                            config.env_value(config.passphrase_env)))
    if config.passphrase_prompt:
        sources.append(PassphraseSource.tty())
    return sources


def _check_usable(config: SignerConfig, keystore: Keystore) -> None:
    """Refuse a keystore that cannot sign in the configured key mode."""
    policy = config.policy
    if policy.key_mode == "active":
        held = keystore.public_keys("active")
        if len(held) != 1:
            raise KeystoreError(f"{config.keystore_path}: key_mode 'active' needs exactly one "
                                f"active key; the keystore holds {len(held)}")
        return
    signing = set(keystore.public_keys("signing")) & set(policy.node_keys)
    if not signing:
        raise KeystoreError(f"{config.keystore_path}: key_mode 'signing' needs the signing "
                            "key of at least one configured node; the keystore holds none")
    missing = [k for k in policy.node_keys if k not in signing]
    if missing:
        log.warning("no signing key held for node key(s) %s: cannot switch away from them",
                    ", ".join(missing))


def _lock_state_dir(state_dir: Path) -> Callable[[], None]:
    """Hold an exclusive lock on the state directory; return its release."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot open the lock file: {e.strerror}", path=str(path)) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        # SECURITY: T7 — two signers on one state would each execute the same request.
        raise ConfigError("another witness-signer is running on this state directory",
                          path=str(state_dir)) from e
    return lambda: os.close(fd)


def _read_token(path: Path) -> Secret:
    """The Twilio auth token from a 0600 file (one line); never echoed in errors."""
    field = "notify.twilio_auth_token_file"
    try:
        data = read_private_file(path, "Twilio auth token", _MAX_TOKEN_BYTES)
    except KeystoreError as e:
        raise ConfigError(str(e), field=field) from e
    text = "" if data is None else data.decode("utf-8", errors="replace").strip()
    if not text:
        raise ConfigError("missing or empty", path=str(path), field=field)
    return Secret(text)


def _twilio(config: SignerConfig, twilio: TwilioConfig) -> Notifier:
    from shared.sms import TwilioNotifier  # noqa: PLC0415 - keep twilio off the default path

    if twilio.auth_token_file is not None:
        token = _read_token(twilio.auth_token_file)
    else:
        value = config.env_value(twilio.auth_token_env)
        if not value:
            raise ConfigError("no Twilio auth token: set the file or the environment variable",
                              path=str(config.path), field="notify.twilio_auth_token_env")
        token = Secret(value)
    return TwilioNotifier(twilio.account_sid, token, twilio.from_number, twilio.to_numbers,
                          api_base_url=twilio.api_base_url)


def build_notifier(config: SignerConfig, clock: Clock
                   ) -> tuple[Notifier, Callable[[], None]]:
    """RateLimited(FanOut(NonBlocking(Twilio), NonBlocking(apprise))) over the configured
    channels (the log when none is), node names next to keys; and its closer.

    Raises:
        ConfigError: a channel is configured but its token or URLs are missing or unsafe.
    """
    inner: list[Notifier] = []
    if config.twilio is not None:
        inner.append(_twilio(config, config.twilio))
    if config.apprise_configured:
        from shared.channels import AppriseNotifier  # noqa: PLC0415 - apprise only if configured

        if config.apprise_urls_file is None:
            log.warning("apprise URLs come from the environment (%s); prefer "
                        "notify.apprise_urls_file (mode 0600)", config.apprise_urls_env)
        apprise = AppriseNotifier(config.apprise_urls())
        log.info("alert channels: %s", ", ".join(apprise.names))
        inner.append(apprise)
    labels = KeyLabels((k.public_key, k.name) for k in config.node_keys)
    if not inner:
        log.warning("no SMS and no apprise URLs configured: alerts go to the log only")
        return LabelledNotifier(LogNotifier(), labels.annotate), lambda: None
    # Each channel behind its own queue: a hung channel never delays another one.
    queued = [NonBlockingNotifier(n) for n in inner]

    def close() -> None:
        for q in queued:
            q.close()
        for n in inner:
            closer = getattr(n, "close", None)
            if callable(closer):
                closer()

    # A flood of one condition is one alert a minute and at most 30 an hour; approval and
    # switch alerts are never suppressed (shared.notify.URGENT_EVENTS).
    limited = RateLimitedNotifier(LabelledNotifier(FanOutNotifier(queued), labels.annotate),
                                  per_event_min_interval=timedelta(minutes=1),
                                  max_per_hour=30, clock=clock)
    return limited, close


def build_prober(config: SignerConfig) -> NodeProber | None:
    """The producer-node prober, or None when no node key has a ``health_url``."""
    if not any(k.health_url for k in config.node_keys):
        return None
    return NodeProber([ProbeTarget(k.name, k.public_key, k.health_url) for k in config.node_keys],
                      config.health)


def build_service(config: SignerConfig, *,
                  passphrase_sources: Sequence[PassphraseSource] | None = None,
                  clock: Clock | None = None, notifier: Notifier | None = None,
                  options: ServiceOptions | None = None) -> SignerService:
    """Open the keystore, keys, store, chain and notifier, build the executor and worker;
    return the (unstarted) service.

    Raises:
        KeystoreError: wrong passphrase, unsafe keystore, or no key usable for the key mode.
        ConfigError: unsafe or unreadable key files, another signer on the state directory.
        StoreError: the state database cannot be opened.
    """
    clock = clock or SystemClock()
    sources = list(configured_passphrase_sources(config) if passphrase_sources is None
                   else passphrase_sources)
    with contextlib.ExitStack() as stack:
        keystore = Keystore.open(config.keystore_path, read_passphrase(sources))
        stack.callback(keystore.close)
        _check_usable(config, keystore)
        warm_up_signing()
        clients = {c.keyid: Client(c.keyid, c.role, load_public_key(c.public_key_path))
                   for c in config.clients}
        response_key = load_private_key(config.signer_key_path)
        _make_state_dir(config.state_dir)
        stack.callback(_lock_state_dir(config.state_dir))  # released after the store closed
        store = open_store(config, clock)
        stack.callback(store.close)
        # beembase (the serialiser) loads with the chain adapter, not with the CLI's
        # state-only commands, which import this module too.
        from signer.chain import RpcSignerChain  # noqa: PLC0415
        from signer.heads import HeadCache, HeadRefresher  # noqa: PLC0415

        heads = HeadCache(max_age_s=config.stale_after.total_seconds())
        chain = RpcSignerChain(JsonRpcClient(config.rpc_nodes, timeout_s=config.rpc_timeout_s),
                               keystore, profile=config.chain, witness=config.policy.witness,
                               key_mode=config.policy.key_mode, quorum=config.quorum,
                               tracker=HeadTracker(config.stale_after),
                               tx_expiration=config.tx_expiration, clock=clock,
                               heads=heads)
        # TaPoS and node freshness kept per block, so a decision reads only the witness.
        stack.callback(chain.close)
        refresher = HeadRefresher(chain.refresh_heads, heads)
        stack.callback(refresher.stop)  # before chain.close (last in, first out)
        refresher.start()
        closers: list[Callable[[], object]] = []
        if notifier is None:
            notifier, close_notifier = build_notifier(config, clock)
            closers.append(close_notifier)
        options = options or ServiceOptions()
        prober = build_prober(config)
        if prober is not None:
            closers.append(prober.close)
        lifecycle = Lifecycle(store)
        executor = Executor(lifecycle, chain, config.policy, notifier, clock,
                            quorum=config.quorum, confirm_timeout=config.confirm_timeout,
                            max_attempts=options.max_attempts,
                            failpoints=Failpoints(config.env_value(FAILPOINT_ENV)),
                            prober=prober,
                            key_label=KeyLabels((k.public_key, k.name)
                                                for k in config.node_keys))
        service = SignerService(config, lifecycle, executor, Worker(executor, options.tick_s),
                                clients=clients, response_key=response_key, notifier=notifier,
                                clock=clock, options=options,
                                closing=[*closers, stack.pop_all().close])
        log.info("signer built for %s (%s mode, %s approval, %d client(s))",
                 config.policy.witness, config.policy.key_mode, config.policy.approval,
                 len(clients))
        return service
