"""``witness-signer``: the signer's composition root and its operator commands.

``serve`` loads signer.toml once and builds the service in gunicorn's worker
(:mod:`signer.serving`); ``pending``/``approve``/``deny``/``audit`` work on the running
server's SQLite state, ``status`` on the chain, ``keystore`` on the keystore. No command
prints a private key or a passphrase.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from shared.errors import (
    ChainDataError,
    ChainError,
    ChainUnavailableError,
    ConfigError,
    FailoverError,
    KeystoreError,
)
from shared.httpsig import generate_keypair
from shared.rpc import JsonRpcClient
from signer.app import configured_passphrase_sources, open_store
from signer.approvals import approve_request, deny_request, describe_request
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
from signer.serving import serve_signer
from signer.store import RequestRecord

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_CHAIN = 0, 2, 3
_CONFIG_HELP = "path to signer.toml (relative paths in it are relative to the file)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="witness-signer",
        description="The witness-failover signer: the only process that holds a chain key. "
        "It serves the signed HTTP API the watcher calls, applies its own policy and "
        "switches the witness's signing key. Exit status: 0 ok, 1 other failure (e.g. the "
        "port is in use), 2 configuration, keystore, file mode or refused operation, 3 chain "
        "error (unreachable, or a node on another chain).",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, *, config: bool = True) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=text, description=text)
        if config:
            cmd.add_argument("--config", type=Path, required=True, help=_CONFIG_HELP)
        return cmd

    command("serve", "open the keystore, check the nodes' chain id, reconcile interrupted "
            "switches, then serve the API with gunicorn (one worker process with "
            "signer.threads threads) until SIGTERM; refuses to start on a bad config, "
            "keystore, passphrase, file mode or chain id")
    command("status", "show the witness as each configured RPC node reports it, and the "
            "signer's armed baseline; needs no key; exit 3 when no node answers or one is "
            "on another chain").add_argument(
        "--json", action="store_true", help="print JSON instead of text")
    command("pending", "list the failover requests waiting for an operator's approval "
            "(read from the state database)").add_argument(
        "--json", action="store_true", help="print one JSON object per line")
    for verb, what in (("approve", "approve a pending request; the running signer re-checks "
                        "the chain and executes it"),
                       ("deny", "deny a pending request; it will never be executed")):
        cmd = command(verb, what)
        cmd.add_argument("request_id", metavar="ID", help="request id (see `pending`)")
        cmd.add_argument("--as", dest="actor", default=None, metavar="NAME",
                         help="operator name recorded in the audit (default: the OS user)")
        cmd.add_argument("--note", default="", help="free text recorded with the verdict")
    audit = command("audit", "print the audit trail as JSON lines, oldest first")
    audit.add_argument("--since", type=_timestamp, default=None, metavar="ISO",
                       help="only records at or after this ISO 8601 time (UTC if no zone)")
    audit.add_argument("--follow", action="store_true",
                       help="keep printing new records until interrupted")
    audit.add_argument("--interval", type=float, default=0.5, metavar="SECONDS",
                       help="poll interval with --follow (default 0.5)")

    ks = command("keystore", "create the encrypted keystore, import a key, list keys",
                 config=False)
    ks_sub = ks.add_subparsers(dest="keystore_command", required=True, metavar="ACTION")
    for name, text in (
        ("create", "write a new, empty keystore at keystore.path; the passphrase comes from "
         "the configured source, or is prompted for twice"),
        ("import", "add a WIF private key, read without echo (or from stdin when it is not a "
         "terminal); refused unless the key holds the authority the mode needs, checked on "
         "chain for the active key and against witness.keys for signing keys"),
        ("list", "list the public keys in the keystore and their roles (never private keys)"),
    ):
        cmd = ks_sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--config", type=Path, required=True, help=_CONFIG_HELP)
        if name == "import":
            cmd.add_argument("--role", choices=["active", "signing"], default=None,
                             help="role of the key (default and only allowed value: "
                             "witness.key_mode)")

    keygen = command("keygen", "write a new Ed25519 identity for the signer, a watcher or "
                     "an operator: PATH (private, mode 0600) and PATH.pub", config=False)
    keygen.add_argument("--out", type=Path, required=True, metavar="PATH",
                        help="private key file to create (never overwritten)")
    return p


def _timestamp(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# ---- serve -------------------------------------------------------------------------------


def cmd_serve(config: SignerConfig, args: argparse.Namespace) -> int:
    return serve_signer(config, error_code=exit_code)


# ---- state: pending, approve, deny, audit ---------------------------------------------------


def _row(record: RequestRecord) -> list[str]:
    deadline = (f"approve by {record.approve_by:%Y-%m-%d %H:%M:%S}Z" if record.approve_by
                else f"runs at {record.execute_at:%Y-%m-%d %H:%M:%S}Z" if record.execute_at
                else "")
    return [record.id, f"{record.created_at:%Y-%m-%d %H:%M:%S}Z", record.client_keyid,
            record.failing_key, record.target_key or "-", deadline]


def cmd_pending(config: SignerConfig, args: argparse.Namespace) -> int:
    with open_store(config) as store:
        records = store.list_pending()
        if args.json:
            for r in records:
                print(json.dumps({"client": r.client_keyid, **describe_request(store, r)},
                                 sort_keys=True))
            return EXIT_OK
    if not records:
        print("no pending requests")
        return EXIT_OK
    table = [["ID", "CREATED", "CLIENT", "FAILING KEY", "TARGET KEY", "DEADLINE"]]
    table += [_row(r) for r in records]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _actor(args: argparse.Namespace) -> str:
    if args.actor:
        return str(args.actor)
    try:
        return getpass.getuser()
    except (KeyError, OSError) as e:
        raise ConfigError("cannot tell who you are; pass --as NAME") from e


def cmd_verdict(config: SignerConfig, args: argparse.Namespace) -> int:
    verdict = approve_request if args.command == "approve" else deny_request
    with open_store(config) as store:
        record = verdict(store, args.request_id, _actor(args), datetime.now(UTC), args.note)
    then = ("the running signer re-checks the chain and executes it"
            if record.state == "approved" else "it will not be executed")
    print(f"request {record.id} {record.state} by {record.decided_by}; {then}")
    return EXIT_OK


def cmd_audit(config: SignerConfig, args: argparse.Namespace) -> int:
    stop = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    last_id = 0
    with open_store(config) as store:
        while not stop:
            for record in store.iter_audit(after_id=last_id):
                last_id = int(record["id"])
                if not args.since or datetime.fromisoformat(str(record["at"])) >= args.since:
                    print(json.dumps(record, sort_keys=True), flush=True)
            if not args.follow:
                break
            time.sleep(args.interval)
    return EXIT_OK


# ---- status: the chain through the configured nodes -----------------------------------------


def _key_name(config: SignerConfig, key: str) -> str:
    return next((k.name for k in config.node_keys if k.public_key == key),
                "NOT a configured node key")


def _read_nodes(config: SignerConfig, rpc: JsonRpcClient) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    for url in rpc.urls:
        entry: dict[str, Any] = {"url": url}
        try:
            chain_id = rpc.chain_id(url)
            entry["chain_id_ok"] = chain_id == config.chain.chain_id
            reading = rpc.read_node(url, config.policy.witness)
        except ChainError as e:
            entry["error"] = str(e)
        else:
            w = reading.witness
            entry.update(head_block_num=reading.props.head_block_number,
                         head_time=reading.props.time.isoformat(), signing_key=w.signing_key,
                         key_name=_key_name(config, w.signing_key),
                         total_missed=w.total_missed,
                         last_confirmed_block_num=w.last_confirmed_block_num)
        nodes.append(entry)
    return nodes


def cmd_status(config: SignerConfig, args: argparse.Namespace) -> int:
    rpc = JsonRpcClient(config.rpc_nodes, timeout_s=config.rpc_timeout_s)
    nodes = _read_nodes(config, rpc)
    armed, pending = None, 0
    if config.state_dir.is_dir():  # status never creates the signer's state
        with open_store(config) as store:
            armed, pending = store.get_armed(), len(store.list_pending())
    doc = {"witness": config.policy.witness, "chain": config.chain.name,
           "key_mode": config.policy.key_mode, "approval": config.policy.approval,
           "nodes": nodes, "pending_requests": pending,
           "armed": armed and {"baseline_missed": armed.baseline_missed,
                               "armed_key": armed.armed_key,
                               "armed_at": armed.armed_at.isoformat(), "rounds": armed.rounds}}
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(f"witness {doc['witness']} on {doc['chain']}: key mode {doc['key_mode']}, "
              f"approval {doc['approval']}, {pending} pending request(s)")
        for n in nodes:
            if "error" in n:
                print(f"  {n['url']}: unavailable: {n['error']}")
                continue
            print(f"  {n['url']}: chain id {'ok' if n['chain_id_ok'] else 'WRONG'}, head "
                  f"#{n['head_block_num']}, key {n['signing_key']} ({n['key_name']}), "
                  f"total_missed {n['total_missed']}")
        if armed is not None:
            print(f"  armed on {_key_name(config, armed.armed_key)} at total_missed "
                  f"{armed.baseline_missed} since {armed.armed_at:%Y-%m-%d %H:%M:%S}Z")
    if any(n.get("chain_id_ok") is False for n in nodes):
        return EXIT_CHAIN
    return EXIT_OK if any("error" not in n for n in nodes) else EXIT_CHAIN


# ---- keystore ---------------------------------------------------------------------------------


def _available(source: PassphraseSource) -> bool:
    if source.kind == "file":
        return source.path is not None and (source.path.exists() or source.path.is_symlink())
    return source.kind == "env" and source.env_value is not None


def _passphrase(config: SignerConfig, *, confirm: bool = False) -> Secret:
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
    if args.keystore_command == "create":
        create_keystore(config.keystore_path, _passphrase(config, confirm=True)).close()
        print(f"created an empty keystore at {config.keystore_path}; next: keystore import")
        return EXIT_OK
    passphrase = _passphrase(config)
    with Keystore.open(config.keystore_path, passphrase) as store:
        if args.keystore_command == "list":
            active = store.public_keys("active")
            for key in store.public_keys():
                print(f"{key}  active  account {config.policy.witness}" if key in active
                      else f"{key}  signing  node {_key_name(config, key)}")
            print(f"{len(store.public_keys())} key(s) in {config.keystore_path}")
            return EXIT_OK
        return _import(config, store, passphrase, args.role or config.policy.key_mode)


def _import(config: SignerConfig, store: Keystore, passphrase: Secret, role: Role) -> int:
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
        account = _account_on_chain(config)
    # SECURITY: T6 — a key without the authority would sign transactions the chain refuses.
    check_authority(pubkey, role, account, config.policy.node_keys)
    store.save(passphrase)
    print(f"imported {pubkey} ({role}) into {config.keystore_path}")
    return EXIT_OK


def _account_on_chain(config: SignerConfig) -> dict[str, Any]:
    """The witness's account from the first node that proves it is on the configured chain.

    Raises:
        ChainDataError: a node is on another chain, or the account does not exist.
        ChainUnavailableError: no node answered.
    """
    rpc = JsonRpcClient(config.rpc_nodes, timeout_s=config.rpc_timeout_s)
    for url in rpc.urls:
        try:
            chain_id = rpc.chain_id(url)
            # SECURITY: T6 — an account read from another chain proves nothing about this one.
            accounts = None if chain_id != config.chain.chain_id else rpc.call_node(
                url, "condenser_api.get_accounts", [[config.policy.witness]])
        except ChainUnavailableError as e:
            log.warning("node unavailable: %s", e)
            continue
        if accounts is None:
            raise ChainDataError(f"{url} is on chain {chain_id}, not {config.chain.name}")
        if not (isinstance(accounts, list) and len(accounts) == 1
                and isinstance(accounts[0], dict)):
            raise ChainDataError(f"{url}: no account {config.policy.witness!r}")
        return accounts[0]
    raise ChainUnavailableError("no RPC node answered; cannot check the key's authority")


# ---- keygen and main --------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    out: Path = args.out
    public = out.with_name(out.name + ".pub")
    signer = generate_keypair(out, public)
    print(f"wrote {out} (private, mode 0600) and {public}: {signer.public_key.to_base64()}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[SignerConfig, argparse.Namespace], int]] = {
    "serve": cmd_serve, "status": cmd_status, "pending": cmd_pending, "approve": cmd_verdict,
    "deny": cmd_verdict, "audit": cmd_audit, "keystore": cmd_keystore,
}


def exit_code(error: FailoverError) -> int:
    """The exit status for ``error``: 3 for chain errors, 2 for everything else."""
    return EXIT_CHAIN if isinstance(error, ChainError) else EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``witness-signer``; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO
                        if args.command == "serve" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        if args.command == "keygen":
            return cmd_keygen(args)
        config = SignerConfig.load(args.config)
        return COMMANDS[args.command](config, args)
    except FailoverError as e:
        # SECURITY: T8 — messages of our errors never carry a key or a passphrase.
        print(f"witness-signer: {e}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        return 130
