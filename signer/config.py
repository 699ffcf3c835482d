"""signer.toml: loaded once at start-up into a frozen dataclass.

This is the only signer module that reads the environment. Config holds
*paths* to secrets, never the secrets themselves.

Environment overrides, for containers (they replace the file's value):
``WITNESS_SIGNER_HOST``, ``WITNESS_SIGNER_PORT``, ``WITNESS_SIGNER_RPC_NODES``
(comma-separated, replaces ``chain.nodes``) and ``WITNESS_SIGNER_STATE_DIR``.
``notify.twilio_env_file`` names a ``KEY=VALUE`` file (mode 0600) holding the
``TWILIO_*`` settings as the seed script kept them (:data:`TWILIO_ENV_NAMES`);
its values are read when needed and never stored here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from shared.chains import ChainProfile, profile
from shared.config import Fields, load_toml, parse_env_text, resolve_path
from shared.errors import ConfigError, KeystoreError
from shared.notify import parse_url_lines, read_url_file
from shared.secret import Secret
from signer.health import HealthConfig
from signer.policy import PolicyConfig
from signer.privatefile import read_private_file

Role = Literal["watcher", "operator"]
ENV_PREFIX = "WITNESS_SIGNER_"
ENV_HOST, ENV_PORT = ENV_PREFIX + "HOST", ENV_PREFIX + "PORT"
ENV_RPC_NODES = ENV_PREFIX + "RPC_NODES"  # comma-separated, replaces chain.nodes
ENV_STATE_DIR = ENV_PREFIX + "STATE_DIR"  # replaces signer.state_dir
# The .env names, as the seed script used them: the SID, the token, the sender, the
# recipients (comma-separated).
TWILIO_ENV_NAMES = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM", "TWILIO_TO")
_MAX_ENV_FILE_BYTES = 65536
# Every name signer.toml may hold, per table: anything else is a ConfigError that names
# the nearest valid name (a typo must not leave a policy at its default).
_TABLES: dict[str, tuple[str, ...]] = {
    "signer": ("host", "port", "threads", "max_body_bytes", "tls_cert", "tls_key", "state_dir",
               "signer_key", "max_skew_s", "header_timeout_s", "body_timeout_s",
               "max_connections", "max_connections_per_source", "threads_per_source",
               "refusals_per_source_per_s", "refusal_burst_per_source", "refusals_per_s"),
    "chain": ("name", "nodes", "quorum", "timeout_s", "stale_after_s", "tx_expiration_s",
              "confirm_timeout_s"),
    "witness": ("account", "key_mode", "keys"),
    "policy": ("min_missed", "max_switches", "window_s", "cooldown_s", "max_rounds",
               "on_exhausted", "approval", "approval_timeout_s", "veto_window_s",
               "preemptive", "deny_hold_s"),
    "health": ("probe_timeout_s", "max_lag_blocks", "confirm_probes", "confirm_interval_s"),
    "keystore": ("path", "passphrase_file", "passphrase_credential", "passphrase_env", "prompt"),
    "notify": ("twilio_account_sid", "twilio_auth_token_file", "twilio_auth_token_env",
               "twilio_from", "to", "twilio_api_base_url", "twilio_env_file",
               "apprise_urls_file", "apprise_urls_env"),
}
_CLIENT_FIELDS = ("keyid", "role", "public_key")
_NODE_KEY_FIELDS = ("name", "public_key", "health_url")


@dataclass(frozen=True)
class ClientConfig:
    """One authenticated client: its Ed25519 public key file and its role."""

    keyid: str
    public_key_path: Path
    role: Role


@dataclass(frozen=True)
class NodeKey:
    """A node of the witness the signer may switch to, by name and public key."""

    name: str
    public_key: str
    health_url: str | None = None  # the node's own read-only JSON-RPC API (issue 11)


@dataclass(frozen=True)
class TwilioConfig:
    """Twilio SMS settings; the token is referenced, never stored here."""

    account_sid: str
    auth_token_file: Path | None
    auth_token_env: str
    from_number: str
    to_numbers: tuple[str, ...]
    api_base_url: str | None
    env_file: Path | None = None


@dataclass(frozen=True)
class SignerConfig:
    """Everything the signer needs, validated at start-up."""

    path: Path
    host: str
    port: int
    threads: int
    max_body_bytes: int
    tls_cert: Path | None
    tls_key: Path | None
    state_dir: Path
    signer_key_path: Path
    max_skew: timedelta
    clients: tuple[ClientConfig, ...]
    chain: ChainProfile
    rpc_nodes: tuple[str, ...]
    quorum: int
    rpc_timeout_s: float
    stale_after: timedelta
    tx_expiration: timedelta
    confirm_timeout: timedelta
    node_keys: tuple[NodeKey, ...]
    policy: PolicyConfig
    keystore_path: Path
    passphrase_file: Path | None
    passphrase_credential: str | None
    passphrase_env: str | None
    passphrase_prompt: bool
    credentials_directory: str | None
    twilio: TwilioConfig | None
    # The HTTP front's limits on slow and hostile clients (threat T10).
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_connections: int = 512
    max_connections_per_source: int = 32
    threads_per_source: int = 1  # application threads one source may hold at once
    refusals_per_source_per_s: float = 10  # pace of a source refused unauthenticated
    refusal_burst_per_source: int = 10  # refusals answered at once before the pace
    refusals_per_s: float = 100  # the pace of all refused sources together
    # Producer-node probes ([health]); used when a node key has a health_url.
    health: HealthConfig = field(default_factory=HealthConfig)
    # apprise channels: a file of URLs (mode 0600), or an environment variable (warned).
    apprise_urls_file: Path | None = None
    apprise_urls_env: str | None = None
    # Prometheus metrics on their own loopback listener; off unless [metrics] port is set.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None

    @property
    def apprise_configured(self) -> bool:
        """Whether apprise channels are configured (file or environment variable)."""
        return self.apprise_urls_file is not None or self.apprise_urls_env is not None

    def apprise_urls(self) -> list[Secret]:
        """The apprise notification URLs, from ``notify.apprise_urls_file`` or the variable
        named by ``notify.apprise_urls_env`` (URLs separated by whitespace); [] if neither.

        Raises:
            ConfigError: the file is missing, unsafe or malformed; the variable is unset.
        """
        if self.apprise_urls_file is not None:
            return read_url_file(self.apprise_urls_file, config_path=self.path,
                                 field="notify.apprise_urls_file")
        if self.apprise_urls_env is None:
            return []
        value = (self.env_value(self.apprise_urls_env) or "").strip()
        if not value:
            raise ConfigError(f"environment variable {self.apprise_urls_env} is not set",
                              path=str(self.path), field="notify.apprise_urls_env")
        return [Secret(u) for u in parse_url_lines("\n".join(value.split()))]

    def env_value(self, name: str) -> str | None:
        """One environment variable (the only place the signer reads one).

        A ``TWILIO_*`` name missing from the environment is looked up in
        ``notify.twilio_env_file``, re-read now so the value never sits in the config.

        Raises:
            ConfigError: the .env file is unsafe or malformed.
        """
        value = os.environ.get(name)
        if value is None and self.twilio is not None and self.twilio.env_file is not None \
                and name.startswith("TWILIO_"):
            value = read_env_file(self.twilio.env_file, self.path).get(name)
        return value

    @classmethod
    def load(cls, path: Path) -> SignerConfig:
        """Read and validate ``path``.

        Raises:
            ConfigError: unreadable file or an invalid field, named.
        """
        raw = load_toml(path)
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: Path) -> SignerConfig:
        """Build from parsed TOML; relative paths are relative to the file.

        Raises:
            ConfigError: an invalid field, named.
        """
        f = Fields(raw, path, known={*_TABLES, "clients", "metrics"})
        for table, names in _TABLES.items():
            f.section(table, names)
        base = path.parent
        chain_name = f.str("chain.name")
        try:
            chain = profile(chain_name)
        except ConfigError as e:
            raise ConfigError(str(e), path=str(path), field="chain.name") from e
        clients = tuple(_clients(f))
        node_keys = tuple(_node_keys(f))
        policy = _policy(f, node_keys)
        nodes = f.str_list("chain.nodes")
        if os.environ.get(ENV_RPC_NODES):
            nodes = [n.strip() for n in os.environ[ENV_RPC_NODES].split(",") if n.strip()]
        for i, url in enumerate(nodes):
            if not url.startswith(("http://", "https://")):
                raise f.fail(f"chain.nodes[{i}]", "must be an http:// or https:// URL")
        quorum = f.int("chain.quorum", default=1, lo=1, hi=max(len(nodes), 1))
        tls_cert = f.opt_path("signer.tls_cert", base)
        tls_key = f.opt_path("signer.tls_key", base)
        if (tls_cert is None) != (tls_key is None):
            raise f.fail("signer.tls_key", "tls_cert and tls_key must be set together")
        env_override = os.environ.get(ENV_PORT)
        port = f.int("signer.port", lo=0, hi=65535)
        if env_override:
            if not env_override.isdigit() or not 0 <= int(env_override) <= 65535:
                raise ConfigError("must be a port number", field=ENV_PORT)
            port = int(env_override)
        state_dir = os.environ.get(ENV_STATE_DIR) or f.str("signer.state_dir", default="state")
        metrics_host, metrics_port = _metrics(f, port)
        threads = f.int("signer.threads", default=8, lo=1, hi=64)
        threads_per_source = f.int("signer.threads_per_source", default=1, lo=1, hi=64)
        if threads_per_source > threads:
            raise f.fail("signer.threads_per_source",
                         f"must not exceed signer.threads ({threads})")
        return cls(
            path=path,
            host=os.environ.get(ENV_HOST) or f.str("signer.host", default="127.0.0.1"),
            port=port,
            threads=threads,
            threads_per_source=threads_per_source,
            max_body_bytes=f.int("signer.max_body_bytes", default=8192, lo=256, hi=1 << 20),
            tls_cert=tls_cert,
            tls_key=tls_key,
            state_dir=resolve_path(base, state_dir),
            signer_key_path=resolve_path(base, f.str("signer.signer_key")),
            max_skew=timedelta(seconds=f.float("signer.max_skew_s", default=30, lo=1, hi=300)),
            clients=clients,
            chain=chain,
            rpc_nodes=tuple(nodes),
            quorum=quorum,
            rpc_timeout_s=f.float("chain.timeout_s", default=5, lo=0.1, hi=120),
            stale_after=timedelta(seconds=f.float("chain.stale_after_s", default=15, lo=0.1,
                                                  hi=3600)),
            tx_expiration=timedelta(seconds=f.float("chain.tx_expiration_s", default=60, lo=6,
                                                    hi=3600)),
            confirm_timeout=timedelta(seconds=f.float("chain.confirm_timeout_s", default=30,
                                                      lo=1, hi=3600)),
            node_keys=node_keys,
            policy=policy,
            keystore_path=resolve_path(base, f.str("keystore.path")),
            passphrase_file=f.opt_path("keystore.passphrase_file", base),
            passphrase_credential=f.opt_str("keystore.passphrase_credential"),
            passphrase_env=f.opt_str("keystore.passphrase_env"),
            passphrase_prompt=f.bool("keystore.prompt", default=False),
            credentials_directory=os.environ.get("CREDENTIALS_DIRECTORY"),
            twilio=_twilio(f, base),
            header_timeout_s=f.float("signer.header_timeout_s", default=10, lo=0.5, hi=300),
            body_timeout_s=f.float("signer.body_timeout_s", default=10, lo=0.5, hi=300),
            max_connections=f.int("signer.max_connections", default=512, lo=16, hi=65536),
            max_connections_per_source=f.int("signer.max_connections_per_source", default=32,
                                             lo=1, hi=65536),
            refusals_per_source_per_s=f.float("signer.refusals_per_source_per_s", default=10,
                                              lo=0.1, hi=100000),
            refusal_burst_per_source=f.int("signer.refusal_burst_per_source", default=10,
                                           lo=1, hi=100000),
            refusals_per_s=f.float("signer.refusals_per_s", default=100, lo=0.1, hi=1000000),
            health=_health(f),
            apprise_urls_file=f.opt_path("notify.apprise_urls_file", base),
            apprise_urls_env=f.opt_str("notify.apprise_urls_env"),
            metrics_host=metrics_host,
            metrics_port=metrics_port,
        )


def _metrics(f: Fields, api_port: int) -> tuple[str, int | None]:
    """``[metrics] host/port``: a loopback listener of its own, never the API port."""
    section = f.get("metrics", None)
    if section is None:
        return "127.0.0.1", None
    if not isinstance(section, dict):
        raise f.fail("metrics", "must be a table")
    Fields(section, f.path, "metrics.", known=("host", "port"))
    host = f.str("metrics.host", default="127.0.0.1")
    if host not in {"127.0.0.1", "::1", "localhost"}:
        # SECURITY: the metrics tell when the signer will act; keep them off the network
        # (a scraper elsewhere reaches them through a tunnel or a local agent).
        raise f.fail("metrics.host", "must be a loopback address")
    port = f.int("metrics.port", lo=0, hi=65535)
    if port != 0 and port == api_port:
        raise f.fail("metrics.port", "must differ from signer.port (metrics never share "
                     "the API listener)")
    return host, port


def _clients(f: Fields) -> list[ClientConfig]:
    items = f.table_list("clients", known=_CLIENT_FIELDS)
    if not items:
        raise f.fail("clients", "at least one [[clients]] entry is required")
    out: list[ClientConfig] = []
    for i, item in enumerate(items):
        keyid = item.str("keyid")
        if any(c.keyid == keyid for c in out):
            raise f.fail(f"clients[{i}].keyid", f"duplicate keyid {keyid!r}")
        role = item.str("role")
        if role not in ("watcher", "operator"):
            raise f.fail(f"clients[{i}].role", "must be 'watcher' or 'operator'")
        out.append(ClientConfig(keyid, resolve_path(f.path.parent, item.str("public_key")),
                                role))  # type: ignore[arg-type]
    return out


def _node_keys(f: Fields) -> list[NodeKey]:
    items = f.table_list("witness.keys", known=_NODE_KEY_FIELDS)
    if not items:
        raise f.fail("witness.keys", "list the witness's node keys in order, primary first")
    out: list[NodeKey] = []
    for i, item in enumerate(items):
        url = item.opt_str("health_url")
        if url is not None and not url.startswith(("http://", "https://")):
            raise f.fail(f"witness.keys[{i}].health_url", "must be an http:// or https:// URL")
        out.append(NodeKey(item.str("name"), item.str("public_key"), url))
    names = [k.name for k in out]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise f.fail(f"witness.keys[{i}].name", f"duplicate node name {name!r}")
    return out


def _health(f: Fields) -> HealthConfig:
    try:
        return HealthConfig(
            probe_timeout_s=f.float("health.probe_timeout_s", default=1.0, lo=0.05, hi=30),
            max_lag_blocks=f.int("health.max_lag_blocks", default=1, lo=0, hi=1000),
            confirm_probes=f.int("health.confirm_probes", default=2, lo=1, hi=10),
            confirm_interval_s=f.float("health.confirm_interval_s", default=0.2, lo=0, hi=10),
        )
    except ConfigError as e:
        if e.path is not None:
            raise
        raise ConfigError(str(e).split(": ", 1)[-1], path=str(f.path),
                          field=f"health.{e.field}") from e


def _preemptive(f: Fields, node_keys: tuple[NodeKey, ...]) -> bool:
    """``[policy] preemptive``: on by default when any node key has a health_url."""
    probed = any(k.health_url for k in node_keys)
    preemptive = f.bool("policy.preemptive", default=probed)
    if preemptive and not probed:
        raise f.fail("policy.preemptive", "needs a health_url on at least one "
                     "[[witness.keys]] entry (the signer must probe the nodes itself)")
    return preemptive


def _policy(f: Fields, node_keys: tuple[NodeKey, ...]) -> PolicyConfig:
    try:
        return PolicyConfig(
            witness=f.str("witness.account"),
            key_mode=f.choice("witness.key_mode", ("active", "signing")),  # type: ignore[arg-type]
            node_keys=tuple(k.public_key for k in node_keys),
            min_missed=f.int("policy.min_missed", default=2, lo=1, hi=10_000),
            max_switches=f.int("policy.max_switches", default=3, lo=1, hi=1000),
            window=timedelta(seconds=f.float("policy.window_s", default=3600, lo=1, hi=10**7)),
            cooldown=timedelta(seconds=f.float("policy.cooldown_s", default=60, lo=0, hi=10**7)),
            max_rounds=f.int("policy.max_rounds", default=1, lo=0, hi=100),
            on_exhausted=f.choice("policy.on_exhausted", ("hold", "disable"),  # type: ignore[arg-type]
                                  default="hold"),
            approval=f.choice("policy.approval", ("auto", "manual", "veto"),  # type: ignore[arg-type]
                              default="auto"),
            approval_timeout=timedelta(seconds=f.float("policy.approval_timeout_s", default=900,
                                                       lo=1, hi=10**6)),
            veto_window=timedelta(seconds=f.float("policy.veto_window_s", default=120, lo=0.1,
                                                  hi=10**6)),
            preemptive=_preemptive(f, node_keys),
            node_names=tuple(k.name for k in node_keys),
            deny_hold=timedelta(seconds=f.float("policy.deny_hold_s", default=600, lo=0,
                                                hi=10**7)),
        )
    except ConfigError as e:
        if e.path is not None:
            raise
        section = "witness" if e.field in {"witness", "key_mode", "node_keys"} else "policy"
        field = {"witness": "account", "node_keys": "keys"}.get(e.field or "", e.field or "")
        raise ConfigError(str(e).split(": ", 1)[-1], path=str(f.path),
                          field=f"{section}.{field}") from e


def _twilio(f: Fields, base: Path) -> TwilioConfig | None:
    env_file = f.opt_path("notify.twilio_env_file", base)
    # Only the SID, sender and recipients are kept; the token is looked up when needed.
    dotenv = {} if env_file is None else read_env_file(env_file, f.path)
    sid = f.opt_str("notify.twilio_account_sid") or dotenv.get("TWILIO_ACCOUNT_SID")
    if sid is None:
        if env_file is not None:
            raise f.fail("notify.twilio_account_sid", "not set here nor as TWILIO_ACCOUNT_SID "
                         f"in {env_file}")
        return None
    sender = f.opt_str("notify.twilio_from") or dotenv.get("TWILIO_FROM")
    if not sender:
        raise f.fail("notify.twilio_from", "is required (or TWILIO_FROM in the .env file)")
    to = f.str_list("notify.to", default=[]) or [
        n.strip() for n in dotenv.get("TWILIO_TO", "").split(",") if n.strip()]
    if not to:
        raise f.fail("notify.to", "list at least one number (or TWILIO_TO in the .env file)")
    return TwilioConfig(
        account_sid=sid,
        auth_token_file=f.opt_path("notify.twilio_auth_token_file", base),
        auth_token_env=f.str("notify.twilio_auth_token_env", default="TWILIO_AUTH_TOKEN"),
        from_number=sender,
        to_numbers=tuple(to),
        api_base_url=f.opt_str("notify.twilio_api_base_url"),
        env_file=env_file,
    )


def read_env_file(path: Path, config_path: Path) -> dict[str, str]:
    """The ``.env`` file at ``path``; it must be a regular file of mode 0600 (or 0400).

    Raises:
        ConfigError: missing, unsafe mode, too large, not UTF-8, or a malformed line.
    """
    field = "notify.twilio_env_file"
    try:
        # SECURITY: T8 — a .env readable by group or others leaks the Twilio token.
        data = read_private_file(path, ".env file", _MAX_ENV_FILE_BYTES)
    except KeystoreError as e:
        raise ConfigError(str(e), path=str(config_path), field=field) from e
    if data is None:
        raise ConfigError(f"{path} does not exist", path=str(config_path), field=field)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8", path=str(config_path), field=field) from e
    return parse_env_text(text, path)


def environment_help() -> str:
    """The environment variables the signer reads, for ``--help``."""
    return f"""\
environment (overrides for containers; the config file names everything else):
  {ENV_HOST}       replaces signer.host
  {ENV_PORT}       replaces signer.port
  {ENV_RPC_NODES}  comma-separated RPC node URLs, replace chain.nodes
  {ENV_STATE_DIR}  replaces signer.state_dir
  CREDENTIALS_DIRECTORY     systemd's, for keystore.passphrase_credential
  TWILIO_AUTH_TOKEN         or the variable named by notify.twilio_auth_token_env
  {", ".join(TWILIO_ENV_NAMES[:2])},
  {", ".join(TWILIO_ENV_NAMES[2:])}
                            also read from notify.twilio_env_file, a KEY=VALUE file of
                            mode 0600 (the environment wins over the file)
"""
