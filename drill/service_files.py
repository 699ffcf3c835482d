"""The signer and watcher half of a devnet drill directory (``witness-devnet init``).

Writes, next to ``devnet.toml``: ``signer.toml`` (port P+1), ``watcher.toml``
(metrics on P+2) and ``keys/`` with the encrypted chain keystore, its
passphrase and the Ed25519 identities of the signer, the watcher and the
operator. The file names are a contract: docs/devnet.md lists them. Both
configs name each producer node's own API (``health_url``, node *i* on
P+10+i, where the devnet serves it) so both sides probe the nodes themselves.

# SECURITY: the watcher's files name only its own Ed25519 key and the signer's
# public key; no chain key is ever written outside the encrypted keystore
# (T1: a stolen watcher host yields no chain key).
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from pathlib import Path

from devnet.config import NODE_API_PORT_OFFSET
from devnet.keys import PrivateKey
from shared.errors import ConfigError
from shared.httpsig import generate_keypair
from signer.keystore import (
    MEMLIMIT_MIN,
    MEMLIMIT_MODERATE,
    OPSLIMIT_MIN,
    OPSLIMIT_MODERATE,
    Role,
    Secret,
    create_keystore,
)

WATCHED = "alice"
NODE_ORDER = ("primary", "backup1", "backup2")
KEYS_DIR = "keys"
SIGNER_STATE = "signer-state"
WATCHER_STATE = "watcher-state"
_DEFAULT_SLOT_S = 3.0

SIGNER_TOML = """\
# witness-signer configuration for a devnet drill, written by `witness-devnet init`.
# The signer is the only process that holds a chain key: encrypted in
# keys/chain.keystore, unlocked with keys/signer.passphrase. Relative paths are
# relative to this file. Run it with:
#     witness-signer serve --config {config_path}

[signer]
host = "127.0.0.1"
port = {port}
threads = 4
state_dir = "{signer_state}"         # SQLite state and audit.jsonl
signer_key = "keys/signer.key"       # Ed25519 key that signs the signer's answers
max_skew_s = 30

# Clients allowed to call the API, by RFC 9421 keyid.
[[clients]]
keyid = "watcher"
role = "watcher"
public_key = "keys/watcher.pub"

[[clients]]
keyid = "operator"
role = "operator"
public_key = "keys/operator.pub"

[chain]
name = {chain}
nodes = {nodes}
quorum = 1
timeout_s = 5
stale_after_s = 10
# Chain seconds: the devnet's chain clock runs 3 s per slot, whatever the wall clock does.
tx_expiration_s = 300
confirm_timeout_s = 30

[witness]
account = {account}
key_mode = {key_mode}                 # "active": witness_update; "signing": witness_set_properties
# The signer's own ordered list of node keys; a switch goes to the next one.
{node_keys_comment}{node_keys}
[policy]
# Drill values: act on the first new miss, short cooldown, no human in the loop.
min_missed = 1
max_switches = 3
window_s = 3600
cooldown_s = 5
max_rounds = 1
on_exhausted = "hold"
approval = "auto"                    # "auto", "manual" or "veto"
approval_timeout_s = 900
veto_window_s = 30
{health}
[keystore]
path = "keys/chain.keystore"
passphrase_file = "keys/signer.passphrase"

# SMS alerts (optional). Uncomment and fill in to enable:
# [notify]
# twilio_account_sid = "AC..."
# twilio_auth_token_file = "keys/twilio.token"
# twilio_from = "+15550000000"
# to = ["+15551111111"]
"""

SIGNER_HEALTH_TOML = """\
# Pre-emptive switches (a request carrying the watcher's health evidence) are on
# by default once a key has a health_url; the signer's own probes must agree. Its
# probes use the [health] defaults (docs/configuration.md): a refused connection
# fails at once, a silent node after probe_timeout_s = 1 s.
preemptive = true
"""

SIGNER_KEYS_COMMENT = """\
# health_url is the node's own read-only API: the signer probes it itself before a
# pre-emptive switch, and never switches to a node it sees down or out of sync.
"""

NODE_KEY_TOML = """\
[[witness.keys]]
name = {name}
public_key = {public_key}
{health_url}"""

WATCHER_TOML = """\
# witness-watcher configuration for a devnet drill, written by `witness-devnet init`.
# Read by `witness-watcher run|status|check --config {config_path}`; relative
# paths are relative to this file. The watcher holds NO chain key: only its own
# Ed25519 request key and the signer's public key, to check the signer's answers.

[watcher]
account = {account}
# Read-only JSON-RPC endpoints of the devnet; each poll reads `quorum` of them
# (more when they disagree), healthiest first.
rpc_nodes = {rpc_nodes}
quorum = 2                           # fresh nodes that must agree on the miss count (T4)
rpc_timeout_s = 2
block_interval_s = 3                 # chain seconds per block (hived's interval)
# Wall seconds per block, the unit of every poll timing: 3 on a real chain,
# the devnet's slot_seconds here (its chain clock runs faster than the wall clock).
poll_interval_s = {poll_interval_s}
miss_threshold = 1                   # new misses since the armed baseline
one_shot = false                     # true: stop after the first confirmed switch
state_dir = "{watcher_state}"

{node_keys_comment}{node_keys}
{health}[signer]
url = "http://127.0.0.1:{signer_port}"
keyid = "watcher"
key = "keys/watcher.key"             # Ed25519 private key that signs requests
signer_public_key = "keys/signer.pub"  # checks the signer's answers

[metrics]
host = "127.0.0.1"
port = {metrics_port}

# SMS alerts (optional). Uncomment and fill in to enable:
# [twilio]
# account_sid = "AC..."
# auth_token_env = "TWILIO_AUTH_TOKEN"  # or auth_token_file = "keys/twilio.token" (mode 0600)
# from = "+15550000000"
# to = ["+15551111111"]
"""

WATCHER_HEALTH_TOML = """\
# The probes of the nodes' health_url use the [health] defaults, in units of
# poll_interval_s (one block here): one probe round per block, a node down or out
# of sync after 2 bad probes in a row (docs/configuration.md). To rehearse a
# one-sided partition (`witness-devnet node fault primary --partition 127.0.0.2`),
# let the probes leave from another local address:
# [health]
# source_address = "127.0.0.2"

"""

WATCHER_KEYS_COMMENT = """\
# The producer nodes, public keys only, so `status` can name the active one.
"""

WATCHER_HEALTH_KEYS_COMMENT = """\
# The producer nodes: public keys (no private key), so `status` can name the active
# one. health_url is the node's own read-only API: probed about once per block, a node
# that refuses, times out or lags is reported, and a dead active node triggers a
# pre-emptive request (with evidence) before the witness's next slot.
"""

WATCHER_NODE_TOML = """\
[[nodes]]
name = {name}
public_key = {public_key}
{health_url}"""


def _q(value: str) -> str:
    """A TOML basic string (JSON string escapes are valid TOML for these values)."""
    return json.dumps(value)


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create ``path`` with ``mode``; never overwrite.

    Raises:
        ConfigError: the file exists or cannot be written.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
    except FileExistsError as e:
        raise ConfigError("refusing to overwrite an existing file", path=str(path)) from e
    except OSError as e:
        raise ConfigError(f"cannot create: {e.strerror}", path=str(path)) from e
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), mode)  # the umask may have narrowed it
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return path


def _slot_seconds(directory: Path) -> float:
    """The devnet's wall seconds per slot, from the devnet.toml written just before."""
    try:
        raw = tomllib.loads((directory / "devnet.toml").read_text(encoding="utf-8"))
        value = raw["devnet"]["slot_seconds"]
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError):
        return _DEFAULT_SLOT_S
    return float(value) if isinstance(value, int | float) else _DEFAULT_SLOT_S


def node_api_url(port_base: int, index: int) -> str:
    """The devnet's API of producer node ``index`` (0 = primary): P+10+index."""
    return f"http://127.0.0.1:{port_base + NODE_API_PORT_OFFSET + index}/"


def _health_url_line(port_base: int, index: int, health: bool) -> str:
    return f"health_url = {_q(node_api_url(port_base, index))}\n" if health else ""


def signer_toml(*, port_base: int, chain: str, key_mode: str,
                node_keys: list[tuple[str, str]], config_path: Path,
                health: bool = True) -> str:
    """The text of the drill's signer.toml; ``node_keys`` are (name, public key) in order.

    With ``health``, node *i* gets ``health_url`` = :func:`node_api_url` (P+10+i), as
    the devnet serves it, and ``[policy] preemptive = true``; without, the signer acts
    on misses only (the file as before issue 11).
    """
    base = f"http://127.0.0.1:{port_base}"
    keys_text = "\n".join(NODE_KEY_TOML.format(name=_q(n), public_key=_q(k),
                                               health_url=_health_url_line(port_base, i, health))
                          for i, (n, k) in enumerate(node_keys))
    health_text = SIGNER_HEALTH_TOML if health else ""
    return SIGNER_TOML.format(
        port=port_base + 1, signer_state=SIGNER_STATE, chain=_q(chain),
        nodes=json.dumps([f"{base}/", f"{base}/rpc/1"]), account=_q(WATCHED),
        key_mode=_q(key_mode), node_keys=keys_text, config_path=config_path,
        node_keys_comment=SIGNER_KEYS_COMMENT if health else "", health=health_text,
    )


def watcher_toml(*, port_base: int, slot_seconds: float,
                 node_keys: list[tuple[str, str]] | None = None,
                 config_path: Path | str = "watcher.toml", health: bool = True) -> str:
    """The text of the drill's watcher.toml; ``node_keys`` are (name, public key) in order.

    With ``health`` each node names its API (``health_url``, P+10+i), probed once per
    block by the ``[health]`` defaults. No chain key, by construction: public keys,
    URLs and paths only.
    """
    base = f"http://127.0.0.1:{port_base}"
    nodes_text = "\n".join(WATCHER_NODE_TOML.format(
        name=_q(n), public_key=_q(k), health_url=_health_url_line(port_base, i, health))
        for i, (n, k) in enumerate(node_keys or []))
    health_text = WATCHER_HEALTH_TOML if health else ""
    return WATCHER_TOML.format(
        account=_q(WATCHED),
        rpc_nodes=json.dumps([f"{base}/", f"{base}/rpc/1", f"{base}/rpc/2"]),
        poll_interval_s=slot_seconds, watcher_state=WATCHER_STATE, node_keys=nodes_text,
        signer_port=port_base + 1, metrics_port=port_base + 2, config_path=config_path,
        node_keys_comment=WATCHER_HEALTH_KEYS_COMMENT if health else WATCHER_KEYS_COMMENT,
        health=health_text,
    )


def _write_keystore(path: Path, passphrase: Secret, key_mode: str, active: PrivateKey,
                    nodes: dict[str, PrivateKey], *, fast_kdf: bool) -> None:
    """The encrypted chain keystore: the active key, or the node signing keys.

    Raises:
        KeystoreError: the keystore cannot be written.
    """
    cost = (OPSLIMIT_MIN, MEMLIMIT_MIN) if fast_kdf else (OPSLIMIT_MODERATE, MEMLIMIT_MODERATE)
    role: Role = "active" if key_mode == "active" else "signing"
    wifs = [active.wif()] if role == "active" else [nodes[n].wif() for n in NODE_ORDER]
    with create_keystore(path, passphrase, opslimit=cost[0], memlimit=cost[1]) as store:
        for wif in wifs:
            store.add(Secret(wif), role)
        store.save(passphrase)


def write_service_files(directory: Path, *, port_base: int, chain: str, key_mode: str,
                        active: PrivateKey, nodes: dict[str, PrivateKey],
                        fast_kdf: bool = False, health: bool = True) -> list[Path]:
    """Write the signer and watcher files of a drill directory; return the paths written.

    ``health``: both configs name each node's API (pre-emptive failover); without, the
    services act on misses only.

    Raises:
        ConfigError: bad arguments, or a file that would be overwritten.
        KeystoreError: the keystore cannot be written.
    """
    if key_mode not in ("active", "signing"):
        raise ConfigError("must be 'active' or 'signing'", field="--key-mode")
    missing = [n for n in NODE_ORDER if n not in nodes]
    if missing:
        raise ConfigError(f"node {missing[0]!r} is missing", field="nodes")
    keys = _private_dir(directory / KEYS_DIR)
    written: list[Path] = []

    passphrase_path = keys / "signer.passphrase"
    passphrase = Secret(secrets.token_urlsafe(32))
    _write_new(passphrase_path, passphrase.reveal() + "\n", 0o600)
    written.append(passphrase_path)

    keystore_path = keys / "chain.keystore"
    _write_keystore(keystore_path, passphrase, key_mode, active, nodes, fast_kdf=fast_kdf)
    written.append(keystore_path)

    for who in ("signer", "watcher", "operator"):
        private, public = keys / f"{who}.key", keys / f"{who}.pub"
        generate_keypair(private, public)
        written += [private, public]

    signer_path = directory / "signer.toml"
    node_keys = [(n, nodes[n].public_key()) for n in NODE_ORDER]
    slot_seconds = _slot_seconds(directory)
    _write_new(signer_path, signer_toml(port_base=port_base, chain=chain, key_mode=key_mode,
                                        node_keys=node_keys, config_path=signer_path,
                                        health=health), 0o644)
    watcher_path = directory / "watcher.toml"
    _write_new(watcher_path, watcher_toml(port_base=port_base, slot_seconds=slot_seconds,
                                          node_keys=node_keys, config_path=watcher_path,
                                          health=health), 0o644)
    written += [signer_path, watcher_path]

    for state in (SIGNER_STATE, WATCHER_STATE):
        written.append(_private_dir(directory / state))
    return written
