"""``witness-signer init``: a commented signer.toml for a real chain, with placeholders.

The file names where secrets live (key files, a systemd credential, a .env
file), never a secret. Values the operator must supply are ``EDIT-ME``
placeholders that the config loader rejects, so an unedited file cannot run.
The public API nodes are suggestions only: nothing here contacts them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from shared.errors import ConfigError

__all__ = ["PLACEHOLDER", "PUBLIC_NODES", "signer_toml", "write_new_files", "write_signer_init"]

PLACEHOLDER = "EDIT-ME"
# Well-known public API nodes, as placeholders: prefer your own or ones you trust.
PUBLIC_NODES: dict[str, tuple[str, ...]] = {
    "hive": ("https://api.hive.blog", "https://api.deathwing.me", "https://api.openhive.network"),
    "steem": ("https://api.steemit.com", "https://api.justyy.com"),
}
_ACCOUNT = re.compile(r"[a-z][a-z0-9.-]{2,15}")
_NODE_NAMES = ("primary", "backup1")

SIGNER_TOML = """\
# witness-signer configuration for the {chain} chain, written by `witness-signer init`.
#
# Edit every line marked EDIT; the loader refuses the EDIT-ME placeholders. Then:
#     witness-signer keygen --out keys/signer.key      # the signer's answer key
#     witness-signer keystore create --config signer.toml
#     witness-signer keystore import --config signer.toml   # {key_mode} key, no echo
#     witness-signer dry-run --config signer.toml      # builds + signs, never broadcasts
#     witness-signer serve --config signer.toml
#
# Secrets never go in this file: it names the files and credentials holding them.
# Relative paths are relative to this file. Container overrides (environment):
# WITNESS_SIGNER_HOST, WITNESS_SIGNER_PORT, WITNESS_SIGNER_RPC_NODES (comma-separated),
# WITNESS_SIGNER_STATE_DIR; see `witness-signer --help`.

[signer]
host = "127.0.0.1"                   # reach it over a VPN/tunnel, or bind wider with TLS
port = 8443
threads = 8
state_dir = "state"                  # SQLite state + audit.jsonl; systemd: /var/lib/witness-signer
signer_key = "keys/signer.key"       # Ed25519 key signing the answers (mode 0600)
max_skew_s = 30
# TLS, recommended when the port is reachable from another host:
# tls_cert = "tls/signer.crt"
# tls_key = "tls/signer.key"

# Who may call the API, by RFC 9421 keyid. Copy each public key from its host
# (`witness-watcher keygen`, `witness-signer keygen` for the operator).
[[clients]]
keyid = "watcher"
role = "watcher"                     # may ask for a failover and read its requests
public_key = "keys/watcher.pub"

[[clients]]
keyid = "operator"
role = "operator"                    # may also approve and deny
public_key = "keys/operator.pub"

[chain]
name = {chain_q}
# EDIT: public API nodes as placeholders; prefer your own nodes or ones you trust.
# Every node's chain id is checked against {chain} before anything is signed.
nodes = {nodes}
quorum = {quorum}                           # fresh nodes that must agree before acting (T4)
timeout_s = 5
stale_after_s = 15                   # a node whose head does not move for this long is skipped
tx_expiration_s = 60                 # chain seconds; at most 3600
confirm_timeout_s = 60

[witness]
account = {account}
# "signing": witness_set_properties signed with the current signing key; the keystore
#            holds the nodes' signing keys, never the active key (recommended).
# "active":  witness_update signed with the active key; needed to disable the witness.
key_mode = {key_mode_q}
# EDIT: your producer nodes' public signing keys, in failover order, primary first.
# A switch goes to the next key after the one on chain; no other key is ever set.
{node_keys}
[policy]
min_missed = 2                       # new misses since armed before a switch
max_switches = 3                     # at most this many switches per window
window_s = 3600
cooldown_s = 600                     # after a switch
max_rounds = 1                       # wrap-arounds of the key list before on_exhausted
on_exhausted = "hold"                # "hold", or "disable" (null key, key_mode "active" only)
approval = "auto"                    # "auto", "manual" (an operator approves) or "veto"
approval_timeout_s = 900             # manual: evidence older than this is stale
veto_window_s = 120                  # veto: switch after this unless denied

[keystore]
path = "keys/chain.keystore"         # encrypted (Argon2id + SecretBox), mode 0600
# The passphrase, first found wins: a systemd credential
# (LoadCredential=signer-passphrase:/etc/credstore/witness-signer.passphrase), a 0600 file,
# or an environment variable (with a warning). On a terminal it is prompted for.
passphrase_credential = "signer-passphrase"
# passphrase_file = "keys/signer.passphrase"
# passphrase_env = "WITNESS_SIGNER_PASSPHRASE"

# SMS alerts (optional). The token is never written here: name a 0600 .env file
# with TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM and TWILIO_TO (comma-
# separated), or set twilio_account_sid/twilio_from/to here and the token in the
# environment variable twilio_auth_token_env or a 0600 twilio_auth_token_file.
# [notify]
# twilio_env_file = "twilio.env"
# Under systemd, the token as a credential instead (deploy/witness-signer.service has
# LoadCredential=twilio-token:/etc/credstore/witness-signer.twilio-token):
# twilio_auth_token_file = "/run/credentials/witness-signer.service/twilio-token"
"""

NODE_KEY_TOML = """\
[[witness.keys]]
name = {name}
public_key = {public_key}
"""


def _q(value: str) -> str:
    return json.dumps(value)  # a TOML basic string: JSON escapes are valid TOML here


def check_nodes(nodes: Sequence[str]) -> list[str]:
    """``nodes`` as given, each an http(s) URL without credentials; never contacted.

    Raises:
        ConfigError: a value is not such a URL, or one is listed twice.
    """
    for url in nodes:
        if not re.fullmatch(r"https?://[^\s/@]+(/\S*)?", url):
            raise ConfigError(f"{url!r} is not an http(s) URL without credentials",
                              field="--node")
    if len(set(nodes)) != len(nodes):
        raise ConfigError("a node is listed twice", field="--node")
    return list(nodes)


def signer_toml(*, chain: str, account: str | None, key_mode: str,
                nodes: Sequence[str] = ()) -> str:
    """The text of a real-chain signer.toml; pure.

    Raises:
        ConfigError: unknown chain or key mode, bad account name or node URL.
    """
    if chain not in PUBLIC_NODES:
        raise ConfigError(f"unknown chain {chain!r}", field="--chain")
    if key_mode not in ("active", "signing"):
        raise ConfigError("must be 'active' or 'signing'", field="--key-mode")
    if account is not None and not _ACCOUNT.fullmatch(account):
        raise ConfigError(f"{account!r} is not a chain account name", field="--account")
    urls = check_nodes(nodes) or list(PUBLIC_NODES[chain])
    keys = "\n".join(NODE_KEY_TOML.format(
        name=_q(name), public_key=_q(f"{PLACEHOLDER}: the {name} node's STM public key"))
        for name in _NODE_NAMES)
    return SIGNER_TOML.format(
        chain=chain, chain_q=_q(chain), nodes=json.dumps(urls), quorum=min(2, len(urls)),
        account=_q(account) if account else f'"{PLACEHOLDER}: the witness account"  # EDIT',
        key_mode=key_mode, key_mode_q=_q(key_mode), node_keys=keys)


def write_new_files(directory: Path, files: dict[str, str]) -> list[Path]:
    """Create ``directory`` (0750) and each file (0644); refuse before writing if one exists.

    Raises:
        ConfigError: a file exists, or the directory or a file cannot be created.
    """
    targets = [directory / name for name in files]
    existing = [p for p in targets if p.exists() or p.is_symlink()]
    if existing:
        raise ConfigError("refusing to overwrite an existing file", path=str(existing[0]))
    try:
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the directory: {e.strerror}",
                          path=str(directory)) from e
    for path, text in zip(targets, files.values(), strict=True):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644)
        except FileExistsError as e:  # created since the check above
            raise ConfigError("refusing to overwrite an existing file", path=str(path)) from e
        except OSError as e:
            raise ConfigError(f"cannot create: {e.strerror}", path=str(path)) from e
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    return targets


def write_signer_init(out: Path, *, chain: str, account: str | None, key_mode: str,
                      nodes: Sequence[str] = ()) -> list[Path]:
    """Write ``out/signer.toml`` and the empty ``out/keys`` directory (0700).

    Raises:
        ConfigError: bad arguments, or the file exists.
    """
    text = signer_toml(chain=chain, account=account, key_mode=key_mode, nodes=nodes)
    written = write_new_files(out, {"signer.toml": text})
    keys = out / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    return [*written, keys]
