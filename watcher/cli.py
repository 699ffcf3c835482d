"""``witness-watcher``: run the watcher, show its status, check its setup, make its key.

The composition root: loads the config once, builds the collaborators
(:mod:`watcher.app`) and hands them down. Never prints a secret: the config
holds paths, the Twilio token stays in a redacting wrapper.

Exit codes: 0 success; 1 a check failed or the watcher stopped on an error;
2 bad usage or configuration; 3 the state directory is locked or unusable.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from shared.clock import SystemClock
from shared.errors import ConfigError, FailoverError
from shared.httpsig import generate_keypair
from shared.logsetup import LOG_FORMATS, configure_logging
from shared.version import version_text
from watcher import report
from watcher.app import build_watcher
from watcher.config import (
    ENV_RPC_NODES,
    ENV_SIGNER_URL,
    ENV_STATE_DIR,
    TWILIO_ENV_NAMES,
    WatcherConfig,
)
from watcher.initconfig import write_watcher_init
from watcher.state import StateError

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_STATE = 0, 1, 2, 3
DEFAULT_CONFIG = Path("/etc/witness-watcher/watcher.toml")  # deploy/witness-watcher.service

_DESCRIPTION = """\
Watches a Hive/Steem witness for missed blocks on several RPC nodes and asks the
witness-signer (RFC 9421-signed HTTP) to switch its signing key when the misses
since the armed baseline reach the threshold. Holds no chain key.
"""
_EPILOG = f"""\
environment (overrides for containers; the config file names everything else):
  {ENV_RPC_NODES}   comma-separated RPC nodes, replaces watcher.rpc_nodes
  {ENV_SIGNER_URL}  replaces signer.url
  {ENV_STATE_DIR}   replaces watcher.state_dir
  the variable named by twilio.auth_token_env (default TWILIO_AUTH_TOKEN)
  {", ".join(TWILIO_ENV_NAMES[:2])},
  {", ".join(TWILIO_ENV_NAMES[2:])}
      also read from twilio.env_file, a KEY=VALUE file of mode 0600 (the
      environment and the [twilio] table win over the file)

exit codes: 0 ok, 1 check failed or runtime error, 2 usage/config error,
3 state directory locked or unusable
"""
_CONFIG_HELP = (f"path to watcher.toml (default {DEFAULT_CONFIG}; relative paths inside are "
                "relative to it)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="witness-watcher", description=_DESCRIPTION,
                                epilog=_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("--version", action="version", version=version_text("witness-watcher"))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="watch the witness and fail over (the daemon)",
                         description="Poll the RPC nodes around the witness's slots, alert, "
                         "and ask the signer for a failover when the threshold is met. "
                         "Stops on SIGTERM/SIGINT; state survives restarts.")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=_CONFIG_HELP)
    run.add_argument("--once", action="store_true",
                     help="one poll and decision (and the request it leads to), then exit")
    run.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                     help="text lines (default) or JSON lines (one object per line)")
    run.add_argument("--dry-run", action="store_true",
                     help="ask the signer with dry_run=true: it says what it would do, "
                     "changes nothing")

    st = sub.add_parser("status", help="show the witness, active node, misses, next slot",
                        description="Show the witness, which configured node's key is active, "
                        "misses since armed, last produced block, next slot ETA, and whether "
                        "the signer answers a signed request. Changes nothing.")
    st.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=_CONFIG_HELP)
    st.add_argument("--json", action="store_true", help="print JSON instead of text")

    ck = sub.add_parser("check", help="check config, RPC nodes, signer, Twilio",
                        description="Check the config and key files, every RPC node, a signed "
                        "round trip to the signer (GET /v1/status, no switch) and that Twilio "
                        "credentials are present. Sends an SMS only with --send-test.")
    ck.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=_CONFIG_HELP)
    ck.add_argument("--send-test", action="store_true",
                    help="also send a test SMS and a test message to each apprise channel")

    init = sub.add_parser("init", help="write a commented watcher.toml for a real chain",
                          description="Write DIR/watcher.toml for a real chain: public API "
                          "nodes and EDIT-ME placeholders to edit, key file paths only (no "
                          "secret), and an empty DIR/keys. Never overwrites; contacts nothing.")
    init.add_argument("--out", type=Path, required=True, metavar="DIR",
                      help="directory to write watcher.toml into")
    init.add_argument("--chain", choices=["hive", "steem"], default="hive",
                      help="chain whose public nodes are suggested (default hive)")
    init.add_argument("--account", default=None, metavar="NAME",
                      help="the witness account (default: a placeholder to edit)")
    init.add_argument("--node", action="append", default=None, metavar="URL",
                      help="an RPC node (repeat for several; default: public API nodes)")
    init.add_argument("--signer-url", default=None, metavar="URL",
                      help="the signer's base URL (default: a placeholder to edit)")

    kg = sub.add_parser("keygen", help="create the watcher's Ed25519 request key pair",
                        description="Write a new Ed25519 key pair: the private key at PATH "
                        "(mode 0600) and the public key next to it (.pub), for the signer's "
                        "[[clients]] list. Never overwrites.")
    kg.add_argument("--out", type=Path, required=True, metavar="PATH",
                    help="private key file to create, e.g. keys/watcher.key")
    return p


def cmd_run(config: WatcherConfig, args: argparse.Namespace) -> int:
    """Run the daemon until a signal, --once, or a fired one_shot."""
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    try:
        running = build_watcher(config, clock=SystemClock(), sleep=stop.wait,
                                dry_run=args.dry_run)
    except OSError as e:  # the metrics port (the only socket bound at build time)
        if config.metrics_port is None:
            raise
        reason = os.strerror(e.errno) if e.errno else str(e.strerror or e)
        print(f"witness-watcher: cannot listen on {config.metrics_host}:{config.metrics_port} "
              f"(metrics.port): {reason[:1].lower()}{reason[1:]}", file=sys.stderr)
        return EXIT_FAILED
    try:
        watcher = running.watcher
        log.info("watching %s on %d RPC node(s), quorum %d, threshold %d%s",
                 config.account, len(config.rpc_nodes), config.policy.quorum,
                 config.policy.miss_threshold, " (dry run)" if watcher.settings.dry_run else "")
        watcher.run(once=args.once, should_stop=stop.is_set)
        if args.once:
            plan = watcher.last_plan
            print(json.dumps({"phase": watcher.state.phase, "armed_key": watcher.state.armed_key,
                              "baseline_missed": watcher.state.baseline_missed,
                              "request_id": watcher.state.request_id,
                              "next_poll": None if plan is None else plan.at.isoformat(),
                              "rpc_calls": watcher.metrics.rpc_calls}, indent=1))
    finally:
        running.close()
    return EXIT_OK


def _print_status(doc: dict[str, Any]) -> None:
    print(f"witness:        {doc['witness']}")
    chain = doc.get("chain")
    if chain is None:
        print(f"chain:          no agreeing answer ({doc.get('rpc')})")
    else:
        node = chain["active_node"] or "not a configured node"
        print(f"signing key:    {chain['signing_key']} ({node})")
        print(f"head block:     #{chain['head_block_number']}")
        print(f"total_missed:   {chain['total_missed']}")
        print(f"last produced:  #{chain['last_produced_block']}")
    for node in doc.get("nodes") or []:
        status = "up" if node["status"] == "healthy" else node["status"].upper()
        print(f"node {node['name']:<9} {status} ({node['detail']}): {node['note']}")
    armed = doc.get("armed") or {}
    if armed.get("armed_key"):
        print(f"armed:          {armed['phase']} on {armed['armed_key']} at total_missed "
              f"{armed.get('baseline_missed')}")
        print(f"since armed:    {armed.get('misses_since_armed')} missed block(s)")
        if armed.get("outstanding_request"):
            print(f"outstanding:    request {armed['outstanding_request']}")
    else:
        print(f"armed:          not yet ({armed.get('phase', 'no state')})")
    if doc.get("state_file", "") is None:
        print(f"state:          none yet in {doc['state_dir']} (the first `run` writes it; "
              "if this watcher already ran, watcher.state_dir is wrong)")
    nxt = doc.get("next_slot")
    if nxt and nxt.get("in_this_round"):
        print(f"next slot:      in ~{nxt['eta_s']} s (slot {nxt['aslot']}, {nxt['eta']})")
    elif nxt:
        print(f"next slot:      not in this round ({nxt.get('after_blocks', '?')} blocks left)")
    signer = doc["signer"]
    if signer["reachable"]:
        print(f"signer:         reachable, answer verified (ready {signer['ready']}, "
              f"{signer['approval']} approval, {signer['key_mode']} keys, "
              f"{signer['open_requests']} open request(s))")
    else:
        print(f"signer:         UNREACHABLE: {signer['error']}")


def cmd_status(config: WatcherConfig, args: argparse.Namespace) -> int:
    """Print the status; exit 1 when the chain or the signer could not be read."""
    doc = report.status(config, SystemClock())
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
    else:
        _print_status(doc)
    return EXIT_OK if doc.get("chain") and doc["signer"]["reachable"] else EXIT_FAILED


def cmd_check(config: WatcherConfig, args: argparse.Namespace) -> int:
    """Run every check; exit 1 when one failed."""
    result = report.check(config, SystemClock(), send_test=args.send_test)
    for c in result.checks:
        mark = "WARN" if c.warning else ("ok  " if c.ok else "FAIL")
        print(f"[{mark}] {c.name}: {c.detail}")
    print("all checks passed" if result.ok else "some checks FAILED")
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a new key pair and print the public half."""
    private: Path = args.out
    public = private.with_suffix(".pub") if private.suffix == ".key" else Path(f"{private}.pub")
    key = generate_keypair(private, public)
    print(f"private key: {private} (mode 0600; keep it on the watcher host only)")
    print(f"public key:  {public}")
    print(f"add to the signer's signer.toml:\n\n[[clients]]\nkeyid = \"watcher\"\n"
          f"role = \"watcher\"\npublic_key = \"{public}\"   # {key.public_key.to_base64()}")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    """Write the config files and say what to edit next."""
    written = write_watcher_init(args.out, chain=args.chain, account=args.account,
                                 nodes=args.node or (), signer_url=args.signer_url)
    for path in written:
        print(f"wrote {path}")
    print(f"next: edit every EDIT line of {written[0]}, then `witness-watcher check --config "
          f"{written[0]}`")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``witness-watcher``."""
    args = _parser().parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO,
                      getattr(args, "log_format", "text"))
    try:
        if args.command == "keygen":
            return cmd_keygen(args)
        if args.command == "init":
            return cmd_init(args)
        config = WatcherConfig.load(args.config)
        commands = {"run": cmd_run, "status": cmd_status, "check": cmd_check}
        return commands[args.command](config, args)
    except ConfigError as e:
        print(f"witness-watcher: configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except StateError as e:
        print(f"witness-watcher: state error: {e}", file=sys.stderr)
        return EXIT_STATE
    except FailoverError as e:
        print(f"witness-watcher: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:
        print(f"witness-watcher: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAILED
