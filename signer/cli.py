"""``witness-signer``: the signer's composition root and its operator commands.

``serve`` loads signer.toml once, builds the service and serves it behind the gevent
front (:mod:`signer.serving`); ``pending``/``approve``/``deny``/``audit`` work on the running
server's SQLite state, ``status`` on the chain; ``arm``/``switch``/``disable``/``enable``
are recorded for the running signer to execute (:mod:`signer.cli_operator`), ``remote``
does the same over the signed API (:mod:`signer.remote`); ``keystore``, ``keygen`` and ``dry-run``
live in :mod:`signer.cli_keys`, ``init`` writes a config (:mod:`signer.initconfig`).
No command prints a private key or a passphrase.
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

from shared.errors import ChainError, ConfigError, FailoverError
from shared.logsetup import LOG_FORMATS, configure_logging
from shared.rpc import JsonRpcClient
from shared.version import version_text
from signer.app import DB_NAME, open_store
from signer.cli_keys import cmd_dry_run, cmd_keygen, cmd_keystore, key_name
from signer.cli_operator import add_operator_commands, cmd_operator
from signer.config import ENV_STATE_DIR, SignerConfig, environment_help
from signer.initconfig import write_signer_init
from signer.lifecycle import Lifecycle
from signer.messages import (
    checked_note,
    describe_request,
    health_fields,
    pending_line,
    pending_summary,
)
from signer.policy import Verdict
from signer.remote import add_remote_parser, cmd_remote
from signer.serving import serve_signer
from signer.store import Store

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_CHAIN = 0, 2, 3
DEFAULT_CONFIG = Path("/etc/witness-signer/signer.toml")  # deploy/witness-signer.service
_CONFIG_HELP = (f"path to signer.toml (default {DEFAULT_CONFIG}; relative paths in it are "
                "relative to the file)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="witness-signer", epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The witness-failover signer: the only process that holds a chain key. "
        "It serves the signed HTTP API the watcher calls, applies its own policy and "
        "switches the witness's signing key. Exit status: 0 ok, 1 other failure (e.g. the "
        "port is in use), 2 configuration, keystore, file mode or refused operation, 3 chain "
        "error (unreachable, or a node on another chain).",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    p.add_argument("--version", action="version", version=version_text("witness-signer"))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, *, config: bool = True) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=text, description=text)
        if config:
            cmd.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=_CONFIG_HELP)
        return cmd

    serve = command("serve", "open the keystore, check the nodes' chain id, reconcile interrupted "
            "switches, then serve the API (one process: a gevent front reads each request "
            "under deadlines, the app runs on signer.threads threads) until SIGTERM; "
            "refuses to start on a bad config, keystore, passphrase, file mode or chain id")
    serve.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                       help="text lines (default) or JSON lines (one object per line)")
    command("status", "show the witness as each configured RPC node reports it, and the "
            "signer's armed baseline; needs no key; exit 3 when no node answers or one is "
            "on another chain").add_argument(
        "--json", action="store_true", help="print JSON instead of text")
    command("pending", "list the failover requests waiting for an operator's approval "
            "(read from the state database)").add_argument(
        "--json", action="store_true", help="print one JSON object per line")
    for verb, what in (("approve", "approve a pending request; the running signer re-checks "
                        "the chain and executes it"),
                       ("deny", "deny a pending request; it will never be executed, and no new "
                        "request for the same outage is accepted for policy.deny_hold_s")):
        cmd = command(verb, what)
        cmd.add_argument("request_id", metavar="ID",
                         help="request id or a unique prefix of 6+ characters (see `pending`)")
        cmd.add_argument("--as", dest="actor", default=None, metavar="NAME",
                         help="operator name recorded in the audit (default: the OS user)")
        cmd.add_argument("--note", default="", help="free text recorded with the verdict")
    add_operator_commands(command)
    add_remote_parser(sub)
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
        cmd.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=_CONFIG_HELP)
        if name == "import":
            cmd.add_argument("--role", choices=["active", "signing"], default=None,
                             help="role of the key (default and only allowed value: "
                             "witness.key_mode)")

    dry = command("dry-run", "rehearse the next switch against the configured chain: check "
                  "the nodes' chain id, read the witness, pick the target as the policy would "
                  "(the missed-blocks evidence is assumed, every other rule applies), build and "
                  "sign the exact transaction with fresh TaPoS, recover its signer against the "
                  "chain id, check the key's authority, print it; NEVER broadcasts and writes no "
                  "state; exit 2 when the policy refuses, 3 on a chain error")
    dry.add_argument("--json", action="store_true", help="print one JSON report")
    init = command("init", "write a commented signer.toml for a real chain into DIR, with "
                   "public API nodes and EDIT-ME placeholders to edit; holds no secret (key "
                   "files and credential names only); never overwrites; contacts no node",
                   config=False)
    init.add_argument("--out", type=Path, required=True, metavar="DIR",
                      help="directory to write signer.toml (and an empty keys/) into")
    init.add_argument("--chain", choices=["hive", "steem"], default="hive",
                      help="chain profile (default hive)")
    init.add_argument("--account", default=None, metavar="NAME",
                      help="the witness account (default: a placeholder to edit)")
    init.add_argument("--key-mode", choices=["active", "signing"], default="signing",
                      help="signing: witness_set_properties with the nodes' signing keys "
                      "(default); active: witness_update with the active key")
    init.add_argument("--node", action="append", default=None, metavar="URL",
                      help="an RPC node (repeat for several; default: public API nodes)")
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


def open_existing_store(config: SignerConfig) -> Store:
    """The running signer's state database; never creates one (read-only and verdict commands).

    Raises:
        ConfigError: there is no database in ``signer.state_dir`` (a wrong path, or a
            signer that never served): an empty new one would answer "nothing pending".
    """
    db = config.state_dir / DB_NAME
    if not db.is_file():
        raise ConfigError(f"no signer state at {db}: check signer.state_dir (and "
                          f"{ENV_STATE_DIR}); `witness-signer serve` creates it on its first "
                          "start", path=str(config.path), field="signer.state_dir")
    return open_store(config)


def cmd_pending(config: SignerConfig, args: argparse.Namespace) -> int:
    names = {k.public_key: k.name for k in config.node_keys}
    with open_existing_store(config) as store:
        armed = store.get_armed()
        records = store.list_pending()
        docs = [{**describe_request(store, r), **pending_summary(store, r, names, armed)}
                for r in records]
        health = [_health_line(health_fields(store, r)) for r in records]
    if args.json:
        for doc in docs:
            print(json.dumps(doc, sort_keys=True))
        return EXIT_OK
    if not docs:
        print("no pending requests")
    for doc, line in zip(docs, health, strict=True):
        print(pending_line(doc))
        if line:
            print(f"    {line}")
    return EXIT_OK


def _health_line(fields: dict[str, Any]) -> str:
    """The health evidence of a pending request for the operator ("" when there is none)."""
    parts = []
    evidence = fields.get("evidence")
    if isinstance(evidence, dict):
        parts.append(f"pre-emptive: watcher says {evidence['node']} {evidence['kind']} for "
                     f"{evidence['probes']} probes ({evidence['detail']})")
    health = fields.get("health")
    if isinstance(health, dict):
        nodes = health.get("nodes", {})
        seen = ", ".join(f"{name} {n['state']}" + (f" ({n['detail']})" if n["detail"] else "")
                         for name, n in nodes.items())
        parts.append(f"signer saw at {fields.get('health_stage')}: {seen} "
                     f"(chain head {health.get('chain_head')})")
    return "; ".join(parts)


def _actor(args: argparse.Namespace) -> str:
    if args.actor:
        return str(args.actor)
    try:
        return getpass.getuser()
    except (KeyError, OSError) as e:
        raise ConfigError("cannot tell who you are; pass --as NAME") from e


def cmd_verdict(config: SignerConfig, args: argparse.Namespace) -> int:
    verdict: Verdict = "approve" if args.command == "approve" else "deny"
    note = checked_note(args.note)  # before any change: the audit line must not be refused
    with open_existing_store(config) as store:
        lifecycle = Lifecycle(store)
        record = lifecycle.verdict(lifecycle.resolve(args.request_id), _actor(args),
                                   datetime.now(UTC), verdict=verdict, note=note)
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
    with open_existing_store(config) as store:
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
                         key_name=key_name(config, w.signing_key),
                         total_missed=w.total_missed,
                         last_confirmed_block_num=w.last_confirmed_block_num)
        nodes.append(entry)
    return nodes


def cmd_status(config: SignerConfig, args: argparse.Namespace) -> int:
    rpc = JsonRpcClient(config.rpc_nodes, timeout_s=config.rpc_timeout_s)
    nodes = _read_nodes(config, rpc)
    armed, pending = None, 0
    db = config.state_dir / DB_NAME
    if db.is_file():  # status never creates the signer's state
        with open_existing_store(config) as store:
            armed, pending = store.get_armed(), len(store.list_pending())
    doc = {"witness": config.policy.witness, "chain": config.chain.name,
           "state_db": str(db) if db.is_file() else None,
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
        if doc["state_db"] is None:
            print(f"  no signer state at {db}: the signer has not served with this config yet, "
                  "or signer.state_dir is wrong")
        if armed is not None:
            print(f"  armed on {key_name(config, armed.armed_key)} at total_missed "
                  f"{armed.baseline_missed} since {armed.armed_at:%Y-%m-%d %H:%M:%S}Z")
    if any(n.get("chain_id_ok") is False for n in nodes):
        return EXIT_CHAIN
    return EXIT_OK if any("error" not in n for n in nodes) else EXIT_CHAIN


# ---- init and main ---------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    """Write a commented signer.toml for a real chain; never overwrites, contacts nothing."""
    written = write_signer_init(args.out, chain=args.chain, account=args.account,
                                key_mode=args.key_mode, nodes=args.node or ())
    for path in written:
        print(f"wrote {path}")
    print(f"next: edit every EDIT line of {written[0]}, then `witness-signer dry-run --config "
          f"{written[0]}` (see the file's header)")
    return EXIT_OK


COMMANDS: dict[str, Callable[[SignerConfig, argparse.Namespace], int]] = {
    "serve": cmd_serve, "status": cmd_status, "pending": cmd_pending, "approve": cmd_verdict,
    "deny": cmd_verdict, "audit": cmd_audit, "keystore": cmd_keystore, "dry-run": cmd_dry_run,
    "arm": cmd_operator, "switch": cmd_operator, "disable": cmd_operator,
    "enable": cmd_operator,
}


def exit_code(error: FailoverError) -> int:
    """The exit status for ``error``: 3 for chain errors, 2 for everything else."""
    return EXIT_CHAIN if isinstance(error, ChainError) else EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``witness-signer``; returns the exit status."""
    args = _parser().parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO
                      if args.command == "serve" else logging.WARNING,
                      getattr(args, "log_format", "text"))
    try:
        if args.command == "keygen":
            return cmd_keygen(args)
        if args.command == "init":
            return cmd_init(args)
        if args.command == "remote":
            return cmd_remote(args)
        config = SignerConfig.load(args.config)
        return COMMANDS[args.command](config, args)
    except FailoverError as e:
        # SECURITY: T8 — messages of our errors never carry a key or a passphrase.
        print(f"witness-signer: {e}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        return 130
