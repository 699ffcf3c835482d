"""``witness-watcher init``: a commented watcher.toml for a real chain, with placeholders.

The watcher holds no chain key; the file names its own Ed25519 key file, the
signer's public key file and, for SMS, a .env file or a variable name, never a
secret. Values the operator must supply are ``EDIT-ME`` placeholders that the
config loader rejects. The public API nodes are suggestions: nothing here
contacts them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from shared.errors import ConfigError

__all__ = ["PLACEHOLDER", "PUBLIC_NODES", "watcher_toml", "write_watcher_init"]

PLACEHOLDER = "EDIT-ME"
# Well-known public API nodes, as placeholders: prefer your own or ones you trust.
PUBLIC_NODES: dict[str, tuple[str, ...]] = {
    "hive": ("https://api.hive.blog", "https://api.deathwing.me", "https://api.openhive.network"),
    "steem": ("https://api.steemit.com", "https://api.justyy.com"),
}
_ACCOUNT = re.compile(r"[a-z][a-z0-9.-]{2,15}")
_URL = re.compile(r"https?://[^\s/@]+(/\S*)?")
_NODE_NAMES = ("primary", "backup1")

WATCHER_TOML = """\
# witness-watcher configuration for the {chain} chain, written by `witness-watcher init`.
#
# Edit every line marked EDIT; the loader refuses the EDIT-ME placeholders. Then:
#     witness-watcher keygen --out keys/watcher.key   # copy keys/watcher.pub to the signer
#     (copy the signer's keys/signer.pub here)
#     witness-watcher check --config watcher.toml
#     witness-watcher run --config watcher.toml --dry-run --once   # asks, changes nothing
#     witness-watcher run --config watcher.toml
#
# The watcher holds NO chain key and this file holds no secret. Relative paths are
# relative to this file. Container overrides (environment): WITNESS_WATCHER_RPC_NODES
# (comma-separated), WITNESS_WATCHER_SIGNER_URL, WITNESS_WATCHER_STATE_DIR; see
# `witness-watcher --help`.

[watcher]
account = {account}
# EDIT: public API nodes as placeholders; prefer your own nodes or ones you trust.
# Each poll reads `quorum` fresh nodes that must agree on the miss count (T4).
rpc_nodes = {nodes}
quorum = {quorum}
rpc_timeout_s = 5
block_interval_s = 3                 # hived's block interval, chain seconds
miss_threshold = 2                   # new misses since the armed baseline before asking
one_shot = false                     # true: stop after the first confirmed switch
dry_run = false                      # true: always ask the signer with dry_run=true
state_dir = "watcher-state"          # systemd: /var/lib/witness-watcher
realert_interval_s = 900

# EDIT: your producer nodes' public signing keys (as in the signer's witness.keys),
# so `status` can name the active node. Give each its node's own read-only API
# (health_url, on a private network: see docs/preemptive.md) and the watcher probes
# the nodes once a block and asks for a pre-emptive switch before the witness's slot
# when the node on the on-chain key is down.
{node_keys}
# Probing the producer nodes (used only with health_url; these are the defaults):
# [health]
# probe_interval_s = 3               # one round per block
# timeout_s = 1.5
# max_lag_blocks = 2                 # unhealthy beyond this many blocks behind
# bad_probes = 2                     # consecutive bad probes before acting
# preemptive = true                  # false: probe, show and alert only
# cooldown_s = 60                    # no pre-emptive request this soon after a switch
# source_address = "10.8.0.1"        # the local address probes leave from

[signer]
url = {signer_url}
keyid = "watcher"
key = "keys/watcher.key"             # Ed25519 private key signing the requests (mode 0600)
signer_public_key = "keys/signer.pub"  # checks the signer's answers
timeout_s = 10
attempts = 4
max_skew_s = 30
# The signer's TLS certificate is self-signed or from a private CA: its PEM file here
# (only with an https url; the system's trust store is used otherwise).
# ca_file = "signer-ca.pem"

# Prometheus metrics on loopback only (optional):
# [metrics]
# host = "127.0.0.1"
# port = 9464

# SMS alerts (optional). The token is never written here: name a 0600 .env file
# with TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM and TWILIO_TO (comma-
# separated), or set account_sid/from/to here and the token in the environment
# variable auth_token_env (default TWILIO_AUTH_TOKEN) or a 0600 auth_token_file.
# [twilio]
# env_file = "twilio.env"
"""

NODE_TOML = """\
[[nodes]]
name = {name}
public_key = {public_key}
# health_url = "http://10.8.0.2:8091/"   # EDIT: the node's API on your private network
"""


def _q(value: str) -> str:
    return json.dumps(value)  # a TOML basic string: JSON escapes are valid TOML here


def watcher_toml(*, chain: str, account: str | None, nodes: Sequence[str] = (),
                 signer_url: str | None = None) -> str:
    """The text of a real-chain watcher.toml; pure.

    Raises:
        ConfigError: unknown chain, bad account name or URL.
    """
    if chain not in PUBLIC_NODES:
        raise ConfigError(f"unknown chain {chain!r}", field="--chain")
    if account is not None and not _ACCOUNT.fullmatch(account):
        raise ConfigError(f"{account!r} is not a chain account name", field="--account")
    for url in [*nodes, *([signer_url] if signer_url else [])]:
        if not _URL.fullmatch(url):
            raise ConfigError(f"{url!r} is not an http(s) URL without credentials",
                              field="--node" if url in nodes else "--signer-url")
    if len(set(nodes)) != len(nodes):
        raise ConfigError("a node is listed twice", field="--node")
    urls = list(nodes) or list(PUBLIC_NODES[chain])
    keys = "\n".join(NODE_TOML.format(
        name=_q(name), public_key=_q(f"{PLACEHOLDER}: the {name} node's STM public key"))
        for name in _NODE_NAMES)
    return WATCHER_TOML.format(
        chain=chain, nodes=json.dumps(urls), quorum=min(2, len(urls)), node_keys=keys,
        account=_q(account) if account else f'"{PLACEHOLDER}: the witness account"  # EDIT',
        signer_url=_q(signer_url) if signer_url else
        f'"https://{PLACEHOLDER}.invalid:8443"  # EDIT: the signer, over TLS or a tunnel')


def write_watcher_init(out: Path, *, chain: str, account: str | None,
                       nodes: Sequence[str] = (), signer_url: str | None = None) -> list[Path]:
    """Write ``out/watcher.toml`` (0644) and an empty ``out/keys`` (0700); never overwrite.

    Raises:
        ConfigError: bad arguments, the file exists, or it cannot be written.
    """
    text = watcher_toml(chain=chain, account=account, nodes=nodes, signer_url=signer_url)
    path = out / "watcher.toml"
    if path.exists() or path.is_symlink():
        raise ConfigError("refusing to overwrite an existing file", path=str(path))
    try:
        out.mkdir(mode=0o750, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
    except FileExistsError as e:  # created since the check above
        raise ConfigError("refusing to overwrite an existing file", path=str(path)) from e
    except OSError as e:
        raise ConfigError(f"cannot create: {e.strerror}", path=str(path)) from e
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    keys = out / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    return [path, keys]
