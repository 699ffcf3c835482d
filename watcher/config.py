"""watcher.toml, loaded once into a frozen :class:`WatcherConfig`.

The only watcher module that reads the environment: the Twilio auth token's
variable and the ``WITNESS_WATCHER_*`` overrides. ``twilio.env_file`` names a
``KEY=VALUE`` file (mode 0600) with the ``TWILIO_*`` settings as the seed
script kept them (:data:`TWILIO_ENV_NAMES`); the token in it is read when needed. Every problem is a
:class:`ConfigError` naming the file and the field. The config holds paths to
secrets (the Ed25519 key, the Twilio token file), never the secrets, except the
token read from the environment, which stays behind a redacting wrapper.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from shared.config import Fields, load_toml, parse_env_text, read_private_text, resolve_path
from shared.errors import ConfigError
from shared.notify import parse_url_lines, read_url_file
from shared.secret import Secret as SharedSecret
from shared.tls import check_ca_file
from watcher.core import Policy
from watcher.schedule import Timing

ENV_RPC_NODES: Final = "WITNESS_WATCHER_RPC_NODES"  # comma-separated, replaces watcher.rpc_nodes
ENV_SIGNER_URL: Final = "WITNESS_WATCHER_SIGNER_URL"  # replaces signer.url
ENV_STATE_DIR: Final = "WITNESS_WATCHER_STATE_DIR"  # replaces watcher.state_dir
# Crash tests only: the watcher SIGKILLs itself at this step of a failover. Off when unset.
ENV_FAIL_POINT: Final = "WITNESS_WATCHER_FAIL_POINT"
FAIL_POINTS: Final = ("decided", "request_saved", "request_sent", "answered", "state_saved")
# The .env names, as the seed script used them (TWILIO_TO: comma-separated numbers).
TWILIO_ENV_NAMES: Final = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM", "TWILIO_TO")
_MAX_ENV_FILE_BYTES: Final = 65536
DEFAULT_TOKEN_ENV: Final = "TWILIO_AUTH_TOKEN"  # noqa: S105 - a variable name, not a token
_MAX_TOKEN_BYTES: Final = 4096
_SECTIONS: Final = ("watcher", "nodes", "health", "signer", "metrics", "alerts", "twilio")


class Secret:
    """A string that never shows in repr, str or logs; ``reveal()`` hands it over."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True)
class NodeKey:
    """A configured producer node: a name for the public signing key it holds."""

    name: str
    public_key: str
    health_url: str | None = None  # the node's own read-only JSON-RPC API


@dataclass(frozen=True)
class HealthConfig:
    """``[health]``: probing the producer nodes' own APIs (issue 11's pre-emptive failover)."""

    probe_interval_s: float
    timeout_s: float
    max_lag_blocks: int
    bad_probes: int
    preemptive: bool
    cooldown_s: float
    source_address: str | None = None


@dataclass(frozen=True)
class TwilioSettings:
    """Where SMS alerts go; the token is read through :meth:`WatcherConfig.twilio_token`."""

    account_sid: str
    from_number: str
    to_numbers: tuple[str, ...]
    auth_token_file: Path | None
    auth_token_env: str
    api_base_url: str | None
    timeout_s: float
    env_file: Path | None = None


@dataclass(frozen=True)
class WatcherConfig:
    """Everything the watcher needs, checked at start-up."""

    path: Path
    account: str
    rpc_nodes: tuple[str, ...]
    rpc_timeout_s: float
    chain_block_interval_s: float
    policy: Policy
    timing: Timing
    dry_run: bool
    state_dir: Path
    node_keys: tuple[NodeKey, ...]
    signer_url: str
    signer_keyid: str
    key_path: Path
    signer_public_key_path: Path
    signer_ca_file: Path | None  # PEM CA bundle verifying an https signer.url (shared.tls)
    signer_timeout_s: float
    signer_attempts: int
    signer_backoff_s: float
    signer_retry_interval_s: float
    follow_timeout_s: float
    max_skew: timedelta
    metrics_host: str | None
    metrics_port: int | None
    alert_min_interval: timedelta
    alert_max_per_hour: int
    twilio: TwilioSettings | None
    health: HealthConfig | None = None  # None: no node has a health_url
    fail_point: str | None = None  # from ENV_FAIL_POINT: crash tests only
    _environ: Mapping[str, str] = field(repr=False, compare=False, default_factory=dict)
    # apprise channels: a file of URLs (mode 0600), or an environment variable (warned).
    apprise_urls_file: Path | None = None
    apprise_urls_env: str | None = None

    @classmethod
    def load(cls, path: Path, environ: Mapping[str, str] | None = None) -> WatcherConfig:
        """Read and check ``path``; ``environ`` defaults to the process environment.

        Raises:
            ConfigError: unreadable, not TOML, or any field missing or invalid.
        """
        env = dict(os.environ if environ is None else environ)
        raw = load_toml(path)
        return _build(Fields(raw, path, known=_SECTIONS), path.resolve().parent, env)

    def twilio_token(self) -> Secret:
        """The Twilio auth token, from its file (mode 0600) or environment variable.

        Raises:
            ConfigError: no Twilio section, or the token is missing, empty or unsafe.
        """
        if self.twilio is None:
            raise ConfigError("no [twilio] section", path=str(self.path), field="twilio")
        if self.twilio.auth_token_file is not None:
            return _read_token(self.twilio.auth_token_file, self.path)
        name = self.twilio.auth_token_env
        value = self._environ.get(name, "").strip()
        if not value and self.twilio.env_file is not None:
            value = read_env_file(self.twilio.env_file, self.path).get(name, "").strip()
        if not value:
            where = "" if self.twilio.env_file is None else f" nor in {self.twilio.env_file}"
            raise ConfigError(f"environment variable {name} is not set{where}",
                              path=str(self.path), field="twilio.auth_token_env")
        return Secret(value)


    @property
    def apprise_configured(self) -> bool:
        """Whether apprise channels are configured (file or environment variable)."""
        return self.apprise_urls_file is not None or self.apprise_urls_env is not None

    def apprise_urls(self) -> list[SharedSecret]:
        """The apprise notification URLs, from ``alerts.apprise_urls_file`` or the variable
        named by ``alerts.apprise_urls_env`` (URLs separated by whitespace); [] if neither.

        Raises:
            ConfigError: the file is missing, unsafe or malformed; the variable is unset.
        """
        if self.apprise_urls_file is not None:
            return read_url_file(self.apprise_urls_file, config_path=self.path,
                                 field="alerts.apprise_urls_file")
        if self.apprise_urls_env is None:
            return []
        value = self._environ.get(self.apprise_urls_env, "").strip()
        if not value:
            raise ConfigError(f"environment variable {self.apprise_urls_env} is not set",
                              path=str(self.path), field="alerts.apprise_urls_env")
        return [SharedSecret(u) for u in parse_url_lines("\n".join(value.split()))]


def read_env_file(env_path: Path, config_path: Path) -> dict[str, str]:
    """The ``.env`` file at ``env_path``: a regular file, not a symlink, mode 0600 or 0400.

    Raises:
        ConfigError: missing, unsafe mode, too large, not UTF-8, or a malformed line.
    """
    text = read_private_text(env_path, config_path=config_path, field="twilio.env_file",
                             max_bytes=_MAX_ENV_FILE_BYTES)
    return parse_env_text(text, env_path)


def _read_token(token_path: Path, config_path: Path) -> Secret:
    text = read_private_text(token_path, config_path=config_path,
                             field="twilio.auth_token_file", max_bytes=_MAX_TOKEN_BYTES).strip()
    if not text:
        raise ConfigError(f"{token_path} is empty", path=str(config_path),
                          field="twilio.auth_token_file")
    return Secret(text)


def _url(f: Fields, dotted: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.username or (
            parts.password) or parts.fragment:
        raise f.fail(dotted, f"{value!r} is not an http(s) URL without credentials")
    return value


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _build(f: Fields, base: Path, env: Mapping[str, str]) -> WatcherConfig:
    f.section("watcher", (
        "account", "rpc_nodes", "rpc_timeout_s", "quorum", "block_interval_s",
        "poll_interval_s", "miss_threshold", "one_shot", "dry_run", "state_dir",
        "stale_after_s", "max_poll_interval_s", "visible_after_s", "realert_interval_s"),
        required=True)
    account = f.str("watcher.account")
    if not account.replace("-", "").replace(".", "").isalnum() or not 3 <= len(account) <= 16:
        raise f.fail("watcher.account", "must be a chain account name")
    nodes = f.str_list("watcher.rpc_nodes")
    if env.get(ENV_RPC_NODES):
        nodes = [n.strip() for n in env[ENV_RPC_NODES].split(",") if n.strip()]
    if not nodes:
        raise f.fail("watcher.rpc_nodes", "must list at least one node")
    nodes = [_url(f, "watcher.rpc_nodes", n) for n in nodes]
    if len(set(nodes)) != len(nodes):
        raise f.fail("watcher.rpc_nodes", "lists a node twice")
    quorum = f.int("watcher.quorum", 1, lo=1, hi=len(nodes))
    chain_interval = f.float("watcher.block_interval_s", 3.0, lo=0.01, hi=60)
    # Wall seconds per block: the chain's interval on a real chain, faster on the devnet.
    wall = f.float("watcher.poll_interval_s", chain_interval, lo=0.01, hi=60)
    timing = Timing(
        block_interval_s=wall,
        max_poll_interval_s=f.float("watcher.max_poll_interval_s", 10 * wall, lo=wall, hi=3600),
        stale_after_s=f.float("watcher.stale_after_s", 5 * wall, lo=wall, hi=3600),
        visible_after_s=f.float("watcher.visible_after_s", wall / 3, lo=0, hi=10 * wall))
    node_keys = []
    for t in f.table_list("nodes", known=("name", "public_key", "health_url")):
        key = t.str("public_key")
        if not key.startswith("STM") or len(key) < 50:
            raise t.fail("public_key", "must be an STM public key")
        url = t.opt_str("health_url")
        node_keys.append(NodeKey(t.str("name"), key,
                                 None if url is None else _url(t, "health_url", url)))
    if len({n.name for n in node_keys}) != len(node_keys):
        raise f.fail("nodes", "names a node twice")
    health = _health(f, wall, any(n.health_url for n in node_keys))
    policy = Policy(
        miss_threshold=f.int("watcher.miss_threshold", lo=1, hi=1000),
        quorum=quorum, one_shot=f.bool("watcher.one_shot", False),
        realert_interval=timedelta(seconds=f.float("watcher.realert_interval_s", 900,
                                                   lo=0, hi=86400)),
        preemptive=health is not None and health.preemptive,
        preempt_cooldown=timedelta(seconds=0 if health is None else health.cooldown_s),
        health_max_age=timedelta(seconds=0 if health is None else
                                 3 * health.probe_interval_s + health.timeout_s))

    f.section("signer", (
        "url", "keyid", "key", "signer_public_key", "timeout_s", "attempts", "backoff_s",
        "retry_interval_s", "follow_timeout_s", "max_skew_s", "ca_file"), required=True)
    signer_url = _url(f, "signer.url", env.get(ENV_SIGNER_URL) or f.str("signer.url"))
    key_path, pub_path = f.opt_path("signer.key", base), f.opt_path("signer.signer_public_key",
                                                                      base)
    if key_path is None or pub_path is None:
        raise f.fail("signer.key" if key_path is None else "signer.signer_public_key",
                     "is required")
    ca_file = f.opt_path("signer.ca_file", base)
    if ca_file is not None:
        ca_file = check_ca_file(ca_file, signer_url, path=str(f.path))

    metrics_host: str | None = None
    metrics_port: int | None = None
    if f.section("metrics", ("host", "port")):
        metrics_host = f.str("metrics.host", "127.0.0.1")
        if not _loopback(metrics_host):
            # SECURITY: the metrics say when the watcher will act; keep them off the network.
            raise f.fail("metrics.host", "must be a loopback address")
        metrics_port = f.int("metrics.port", lo=0, hi=65535)
    f.section("alerts", ("min_interval_s", "max_per_hour", "apprise_urls_file",
                         "apprise_urls_env"))
    fail_point = env.get(ENV_FAIL_POINT) or None
    if fail_point is not None and fail_point not in FAIL_POINTS:
        raise ConfigError(f"{ENV_FAIL_POINT}={fail_point!r} is not one of {', '.join(FAIL_POINTS)}",
                          path=str(f.path), field=ENV_FAIL_POINT)
    return WatcherConfig(
        path=f.path, account=account, rpc_nodes=tuple(nodes),
        rpc_timeout_s=f.float("watcher.rpc_timeout_s", 5.0, lo=0.05, hi=120),
        chain_block_interval_s=chain_interval, policy=policy, timing=timing,
        dry_run=f.bool("watcher.dry_run", False),
        state_dir=(resolve_path(base, env[ENV_STATE_DIR]) if env.get(ENV_STATE_DIR)
                   else f.opt_path("watcher.state_dir", base) or base / "watcher-state"),
        node_keys=tuple(node_keys), signer_url=signer_url,
        signer_keyid=f.str("signer.keyid", "watcher"), key_path=key_path,
        signer_public_key_path=pub_path, signer_ca_file=ca_file,
        signer_timeout_s=f.float("signer.timeout_s", 10.0, lo=0.05, hi=300),
        signer_attempts=f.int("signer.attempts", 4, lo=1, hi=20),
        signer_backoff_s=f.float("signer.backoff_s", 0.5, lo=0.0, hi=60),
        signer_retry_interval_s=f.float("signer.retry_interval_s", min(5.0, 10 * wall),
                                        lo=0.01, hi=3600),
        follow_timeout_s=f.float("signer.follow_timeout_s", min(30.0, 20 * wall),
                                 lo=0.0, hi=3600),
        max_skew=timedelta(seconds=f.int("signer.max_skew_s", 30, lo=1, hi=600)),
        metrics_host=metrics_host, metrics_port=metrics_port,
        alert_min_interval=timedelta(seconds=f.float("alerts.min_interval_s", 300,
                                                     lo=0, hi=86400)),
        alert_max_per_hour=f.int("alerts.max_per_hour", 20, lo=1, hi=3600),
        twilio=_twilio(f, base), health=health, fail_point=fail_point, _environ=env,
        apprise_urls_file=f.opt_path("alerts.apprise_urls_file", base),
        apprise_urls_env=f.opt_str("alerts.apprise_urls_env"))


def _health(f: Fields, wall: float, urls: bool) -> HealthConfig | None:
    """``[health]``; None when no node names a ``health_url`` (the section is still checked).

    Defaults (docs/preemptive.md has the measurements): one probe round per block,
    a probe timeout of half of that (0.25 s to 2 s), unhealthy beyond 2 blocks of lag,
    2 bad probes in a row before acting, no pre-emption within 20 blocks of a switch.
    """
    f.section("health", ("probe_interval_s", "timeout_s", "max_lag_blocks", "bad_probes",
                         "preemptive", "cooldown_s", "source_address"))
    interval = f.float("health.probe_interval_s", wall, lo=0.01, hi=600)
    config = HealthConfig(
        probe_interval_s=interval,
        # Rounds never overlap (the next starts when one ends), so a timeout longer than
        # the interval only slows the rounds; a floor of 0.25 s spares fast devnets
        # false alarms on a loaded machine.
        timeout_s=f.float("health.timeout_s", min(2.0, max(0.25, interval / 2)), lo=0.01,
                          hi=60),
        max_lag_blocks=f.int("health.max_lag_blocks", 2, lo=1, hi=1000),
        bad_probes=f.int("health.bad_probes", 2, lo=1, hi=100),
        preemptive=f.bool("health.preemptive", True),
        cooldown_s=f.float("health.cooldown_s", 20 * wall, lo=0, hi=86400),
        source_address=f.opt_str("health.source_address"))
    if config.source_address is not None:
        try:
            ipaddress.ip_address(config.source_address)
        except ValueError:
            raise f.fail("health.source_address", "must be an IP address of this host") from None
    return config if urls else None


def _twilio(f: Fields, base: Path) -> TwilioSettings | None:
    if not f.section("twilio", ("account_sid", "auth_token_file", "auth_token_env", "from",
                                "to", "api_base_url", "timeout_s", "env_file")):
        return None
    env_file = f.opt_path("twilio.env_file", base)
    # The SID, sender and recipients fill what the table leaves out; the token is not kept.
    dotenv = {} if env_file is None else read_env_file(env_file, f.path)
    sid = f.opt_str("twilio.account_sid") or dotenv.get("TWILIO_ACCOUNT_SID", "")
    if not (sid.startswith("AC") and len(sid) == 34):
        raise f.fail("twilio.account_sid", "must be a Twilio account SID (AC + 32 hex), "
                     "here or as TWILIO_ACCOUNT_SID in twilio.env_file")
    token_file = f.opt_path("twilio.auth_token_file", base)
    token_env = f.str("twilio.auth_token_env", DEFAULT_TOKEN_ENV)
    to = f.str_list("twilio.to", []) or [
        n.strip() for n in dotenv.get("TWILIO_TO", "").split(",") if n.strip()]
    if not to:
        raise f.fail("twilio.to", "must list at least one number (or TWILIO_TO in the .env)")
    sender = f.opt_str("twilio.from") or dotenv.get("TWILIO_FROM")
    if not sender:
        raise f.fail("twilio.from", "is required (or TWILIO_FROM in the .env)")
    api = f.opt_str("twilio.api_base_url")
    return TwilioSettings(
        account_sid=sid, from_number=sender, to_numbers=tuple(to),
        auth_token_file=token_file, auth_token_env=token_env,
        api_base_url=None if api is None else _url(f, "twilio.api_base_url", api),
        timeout_s=f.float("twilio.timeout_s", 5.0, lo=0.1, hi=60), env_file=env_file)
