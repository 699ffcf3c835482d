"""signer.toml: loaded once at start-up into a frozen dataclass.

This is the only signer module that reads the environment. Config holds
*paths* to secrets, never the secrets themselves.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from shared.chains import ChainProfile, profile
from shared.config import Fields, resolve_path
from shared.errors import ConfigError
from signer.policy import PolicyConfig

Role = Literal["watcher", "operator"]
ENV_PREFIX = "WITNESS_SIGNER_"


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


@dataclass(frozen=True)
class TwilioConfig:
    """Twilio SMS settings; the token is referenced, never stored here."""

    account_sid: str
    auth_token_file: Path | None
    auth_token_env: str
    from_number: str
    to_numbers: tuple[str, ...]
    api_base_url: str | None


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

    def env_value(self, name: str) -> str | None:
        """Read one environment variable (the only place the signer does)."""
        return os.environ.get(name)

    @classmethod
    def load(cls, path: Path) -> SignerConfig:
        """Read and validate ``path``.

        Raises:
            ConfigError: unreadable file or an invalid field, named.
        """
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read: {e.strerror}", path=str(path)) from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"not valid TOML: {e}", path=str(path)) from e
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: Path) -> SignerConfig:
        """Build from parsed TOML; relative paths are relative to the file.

        Raises:
            ConfigError: an invalid field, named.
        """
        f = Fields(raw, path, known={"signer", "clients", "chain", "witness", "policy",
                                     "keystore", "notify"})
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
        for i, url in enumerate(nodes):
            if not url.startswith(("http://", "https://")):
                raise f.fail(f"chain.nodes[{i}]", "must be an http:// or https:// URL")
        quorum = f.int("chain.quorum", default=1, lo=1, hi=max(len(nodes), 1))
        tls_cert = f.opt_path("signer.tls_cert", base)
        tls_key = f.opt_path("signer.tls_key", base)
        if (tls_cert is None) != (tls_key is None):
            raise f.fail("signer.tls_key", "tls_cert and tls_key must be set together")
        env_override = os.environ.get(ENV_PREFIX + "PORT")
        port = f.int("signer.port", lo=0, hi=65535)
        if env_override:
            if not env_override.isdigit() or not 0 <= int(env_override) <= 65535:
                raise ConfigError("must be a port number", field=ENV_PREFIX + "PORT")
            port = int(env_override)
        return cls(
            path=path,
            host=os.environ.get(ENV_PREFIX + "HOST") or f.str("signer.host",
                                                                 default="127.0.0.1"),
            port=port,
            threads=f.int("signer.threads", default=8, lo=1, hi=64),
            max_body_bytes=f.int("signer.max_body_bytes", default=8192, lo=256, hi=1 << 20),
            tls_cert=tls_cert,
            tls_key=tls_key,
            state_dir=resolve_path(base, f.str("signer.state_dir", default="state")),
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
        )


def _clients(f: Fields) -> list[ClientConfig]:
    items = f.table_list("clients")
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
    items = f.table_list("witness.keys")
    if not items:
        raise f.fail("witness.keys", "list the witness's node keys in order, primary first")
    return [NodeKey(item.str("name"), item.str("public_key")) for item in items]


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
        )
    except ConfigError as e:
        if e.path is not None:
            raise
        section = "witness" if e.field in {"witness", "key_mode", "node_keys"} else "policy"
        field = {"witness": "account", "node_keys": "keys"}.get(e.field or "", e.field or "")
        raise ConfigError(str(e).split(": ", 1)[-1], path=str(f.path),
                          field=f"{section}.{field}") from e


def _twilio(f: Fields, base: Path) -> TwilioConfig | None:
    sid = f.opt_str("notify.twilio_account_sid")
    if sid is None:
        return None
    return TwilioConfig(
        account_sid=sid,
        auth_token_file=f.opt_path("notify.twilio_auth_token_file", base),
        auth_token_env=f.str("notify.twilio_auth_token_env", default="TWILIO_AUTH_TOKEN"),
        from_number=f.str("notify.twilio_from"),
        to_numbers=tuple(f.str_list("notify.to")),
        api_base_url=f.opt_str("notify.twilio_api_base_url"),
    )
