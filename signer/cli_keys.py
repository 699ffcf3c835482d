"""``witness-signer`` commands that touch key material: ``keystore``, ``keygen``, ``dry-run``.

Split from :mod:`signer.cli` (the composition root, which parses the arguments
and dispatches here). No command prints a private key or a passphrase.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.clock import SystemClock
from shared.errors import KeystoreError
from shared.httpsig import generate_keypair
from shared.rpc import JsonRpcClient
from signer.app import DB_NAME, configured_passphrase_sources, open_store
from signer.config import SignerConfig
from signer.keystore import (
    Keystore,
    PassphraseSource,
    Role,
    Secret,
    check_authority,
    create_keystore,
    read_passphrase,
    read_wif_noecho,
)
from signer.policy import History

EXIT_OK, EXIT_ERROR = 0, 2


def key_name(config: SignerConfig, key: str) -> str:
    """The configured node name of ``key``, or a warning that it is not one of ours."""
    return next((k.name for k in config.node_keys if k.public_key == key),
                "NOT a configured node key")


# ---- keystore ---------------------------------------------------------------------------------


def _available(source: PassphraseSource) -> bool:
    if source.kind == "file":
        return source.path is not None and (source.path.exists() or source.path.is_symlink())
    return source.kind == "env" and source.env_value is not None


def passphrase(config: SignerConfig, *, confirm: bool = False) -> Secret:
    """The passphrase from the configured credential, file or variable; else the terminal.

    Raises:
        KeystoreError: unsafe passphrase file, no source, or two different entries.
    """
    configured = [s for s in configured_passphrase_sources(config) if s.kind != "tty"]
    if any(_available(s) for s in configured):
        return read_passphrase(configured)  # an unsafe file mode is an error, not a fallback
    if not sys.stdin.isatty():
        raise KeystoreError("no passphrase: set keystore.passphrase_file (or _credential, "
                            "_env) in the config, or run this command on a terminal")
    first = read_passphrase(PassphraseSource.tty("New keystore passphrase: " if confirm
                                                 else "Keystore passphrase: "))
    if confirm and read_passphrase(PassphraseSource.tty("Repeat it: ")).reveal() != (
            first.reveal()):
        raise KeystoreError("the two passphrases differ")
    return first


def cmd_keystore(config: SignerConfig, args: argparse.Namespace) -> int:
    """``keystore create | import | list``."""
    if args.keystore_command == "create":
        create_keystore(config.keystore_path, passphrase(config, confirm=True)).close()
        print(f"created an empty keystore at {config.keystore_path}; next: keystore import")
        return EXIT_OK
    secret = passphrase(config)
    with Keystore.open(config.keystore_path, secret) as store:
        if args.keystore_command == "list":
            active = store.public_keys("active")
            for key in store.public_keys():
                print(f"{key}  active  account {config.policy.witness}" if key in active
                      else f"{key}  signing  node {key_name(config, key)}")
            print(f"{len(store.public_keys())} key(s) in {config.keystore_path}")
            return EXIT_OK
        return _import(config, store, secret, args.role or config.policy.key_mode)


def _import(config: SignerConfig, store: Keystore, secret: Secret, role: Role) -> int:
    # SECURITY: T6/T1 — in signing mode the keystore never holds the active key, and a key
    # for the other mode is one more secret on the host with no use.
    if role != config.policy.key_mode:
        raise KeystoreError(f"--role {role} does not match witness.key_mode = "
                            f"{config.policy.key_mode!r}")
    # A terminal gets a no-echo prompt; a pipe (scripts) gives the first line.
    wif = read_wif_noecho() if sys.stdin.isatty() else Secret(sys.stdin.readline().strip())
    pubkey = store.add(wif, role)  # in memory only until the authority check passes
    account: dict[str, Any] = {}
    if role == "active":
        # The dry run module brings beembase (transactions) and the chain adapter;
        # beem's key classes are already loaded with signer.keystore.
        from signer.dryrun import read_account  # noqa: PLC0415

        account = read_account(JsonRpcClient(config.rpc_nodes, timeout_s=config.rpc_timeout_s),
                               config.chain, config.policy.witness)
    # SECURITY: T6 — a key without the authority would sign transactions the chain refuses.
    check_authority(pubkey, role, account, config.policy.node_keys)
    store.save(secret)
    print(f"imported {pubkey} ({role}) into {config.keystore_path}")
    return EXIT_OK


# ---- dry-run ------------------------------------------------------------------------------


def _stored_history(config: SignerConfig, now: datetime) -> History | None:
    """Past switches and rounds from the state database, if the signer ever ran here."""
    if not (config.state_dir / DB_NAME).is_file():  # a dry run never creates the state
        return None
    with open_store(config) as store:
        return store.history(now - max(config.policy.window, config.policy.cooldown))


def cmd_dry_run(config: SignerConfig, args: argparse.Namespace) -> int:
    """Build, sign and verify the next switch's transaction; print it unsigned; never broadcast."""
    # beembase (the transaction serialiser) loads with the dry run, not with the
    # other commands; signer.keystore above has already loaded beem's key classes.
    from signer.dryrun import dry_run, render_text  # noqa: PLC0415

    clock = SystemClock()
    history = _stored_history(config, clock.now())
    with Keystore.open(config.keystore_path, passphrase(config)) as keystore:
        report = dry_run(config, keystore, history=history, clock=clock)
    if args.json:
        print(json.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        print(render_text(report))
    return EXIT_OK if report.tx is not None else EXIT_ERROR


# ---- keygen ---------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a new Ed25519 identity and print its public half."""
    out: Path = args.out
    public = out.with_name(out.name + ".pub")
    signer = generate_keypair(out, public)
    print(f"wrote {out} (private, mode 0600) and {public}: {signer.public_key.to_base64()}")
    return EXIT_OK
