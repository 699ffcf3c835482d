"""``witness-signer arm|switch|disable|enable`` on the signer host: asked here, done by the signer.

The command never signs. It checks that a signer runs on the state directory (it
holds ``signer.lock``), reads the on-chain key, and records the command in the
shared state as a request approved by ``user@host``; the running signer's worker
executes it through the same policy, audit, broadcast and confirmation path as a
failover. The command then follows the request, bounded, printing each state.
"""

from __future__ import annotations

import argparse
import fcntl
import getpass
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from shared.errors import (
    ChainDataError,
    ChainError,
    ChainUnavailableError,
    ConfigError,
    PolicyError,
)
from shared.rpc import JsonRpcClient
from signer.app import LOCK_NAME, open_store
from signer.config import SignerConfig
from signer.lifecycle import Lifecycle
from signer.messages import (
    OperatorCommand,
    checked_note,
    describe_request,
    node_label,
    parse_operator,
)
from signer.schema import FINAL_STATES
from signer.service import operator_target

EXIT_OK, EXIT_TIMEOUT, EXIT_ERROR = 0, 1, 2

_HELP = {
    "arm": "take the current on-chain key, if it is a configured node key, and its "
           "total_missed as the new baseline (rotation rounds restart)",
    "switch": "switch the signing key to a configured node, e.g. back to a repaired primary; "
              "no missed-blocks evidence needed (you are the evidence), but the rate limit "
              "and the cooldown (unless --force) apply; re-arms once confirmed",
    "disable": "set the null key: the witness stops producing (key_mode = 'active' only)",
    "enable": "from the null key to a configured node (key_mode = 'active' only); re-arms",
}


def add_operator_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add ``arm``, ``switch``, ``disable`` and ``enable`` through the CLI's ``command`` helper."""
    for verb, text in _HELP.items():
        cmd = command(verb, text + "; recorded for the running signer, which executes it; "
                      "this command waits for the outcome (exit 0 done, 2 refused or failed, "
                      "1 still running at --timeout)")
        if verb in ("switch", "enable"):
            cmd.add_argument("--to", required=True, metavar="NODE",
                             help="node name from witness.keys (e.g. primary)")
        if verb != "arm":
            cmd.add_argument("--force", action="store_true",
                             help="skip the cooldown (never the rate limit or the key list)")
        cmd.add_argument("--as", dest="actor", default=None, metavar="NAME",
                         help="operator name recorded in the audit (default: user@host)")
        cmd.add_argument("--note", default="", help="free text recorded with the command")
        cmd.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                         help="how long to wait for the outcome (default 120)")


def signer_running(state_dir: Path) -> bool:
    """Whether a ``witness-signer serve`` holds the state directory's lock."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the lock if we got it
    return False


def chain_key(config: SignerConfig) -> str:
    """The witness's signing key, from the first configured node on the right chain.

    Raises:
        ChainUnavailableError: no node answered; ChainDataError: nodes on another chain.
    """
    rpc = JsonRpcClient(config.rpc_nodes, timeout_s=config.rpc_timeout_s)
    problems: list[str] = []
    for url in rpc.urls:
        try:
            if rpc.chain_id(url) != config.chain.chain_id:
                problems.append(f"{url}: another chain")
                continue
            return rpc.read_node(url, config.policy.witness).witness.signing_key
        except ChainError as e:
            problems.append(f"{url}: {e}")
    if problems and all(p.endswith("another chain") for p in problems):
        raise ChainDataError("every node is on another chain")
    raise ChainUnavailableError("no node answered: " + "; ".join(problems))


def _actor(args: argparse.Namespace) -> str:
    if args.actor:
        return str(args.actor)
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError) as e:
        raise ConfigError("cannot tell who you are; pass --as NAME") from e


def outcome_text(doc: Mapping[str, object], names: Mapping[str, str]) -> str:
    """One line on where an operator's request (or any request) stands."""
    state = str(doc.get("state"))
    rid = str(doc.get("request_id"))
    kind = str(doc.get("kind", "failover"))
    key = doc.get("target_key")
    target = node_label(names, key if isinstance(key, str) else None)
    if state == "confirmed" and kind == "arm":
        return f"request {rid} confirmed: {doc.get('detail', 'armed')}"
    if state == "confirmed":
        return (f"request {rid} confirmed: signing key is now {target} (block "
                f"{doc.get('block_num')}, tx {doc.get('tx_id')}); the signer re-armed on it")
    if state == "broadcast":
        return f"request {rid} broadcast: tx {doc.get('tx_id')} sent, waiting for inclusion"
    if state == "approved":
        return f"request {rid} approved: waiting for the running signer to execute it"
    detail = doc.get("detail")
    return f"request {rid} {state}" + (f": {detail}" if detail else "")


def cmd_operator(config: SignerConfig, args: argparse.Namespace) -> int:
    """Record an operator command for the running signer and follow it to its outcome."""
    note = checked_note(args.note)
    body: dict[str, object] = {"note": note, "force": bool(getattr(args, "force", False))}
    if getattr(args, "to", None) is not None:
        body["to"] = args.to
    # The body is built and checked the way the HTTP route gets it.
    command: OperatorCommand = parse_operator(args.command, json.dumps(body).encode())
    target = operator_target(command, config)
    if not config.state_dir.is_dir() or not signer_running(config.state_dir):
        # SECURITY: T7 — the CLI never signs; only the one running signer executes.
        raise ConfigError("no witness-signer is running on this state directory; start it "
                          "(`witness-signer serve`): this command only asks it",
                          path=str(config.state_dir))
    seen = chain_key(config)
    names = {k.public_key: k.name for k in config.node_keys}
    actor = _actor(args)
    with open_store(config) as store:
        lifecycle = Lifecycle(store)
        busy = lifecycle.open_request()
        if busy is not None:
            raise PolicyError(f"[busy] request {busy.id} is {busy.state}; approve, deny or "
                              "wait for it first")
        record, _ = lifecycle.operator_request(
            kind=command.kind, actor=actor, idempotency_key=f"op:{actor}:{uuid.uuid4().hex}",
            digest=command.digest, witness=config.policy.witness, seen_key=seen,
            target_key=target, force=command.force, now=datetime.now(UTC), note=note)
        print(f"request {record.id}: {command.kind}"
              + (f" to {command.to}" if command.to else "")
              + f" from {node_label(names, seen)}, recorded for the running signer", flush=True)
        final = follow(describe_request(store, record),
                       lambda: describe_request(store, lifecycle.get(record.id)), args.timeout,
                       names)
    state = final.get("state")
    if state not in FINAL_STATES:
        print(f"still {state} after {args.timeout:g} s; follow it with "
              f"`witness-signer audit` or `pending`")
        return EXIT_TIMEOUT
    return EXIT_OK if state == "confirmed" else EXIT_ERROR


def follow(first: Mapping[str, object], read: Callable[[], Mapping[str, object]],
           timeout_s: float, names: Mapping[str, str],
           interval_s: float = 0.25) -> Mapping[str, object]:
    """Poll a request's description until it is final or ``timeout_s`` passed; print each state.

    ``first`` is where it stands now; ``read`` returns it again as
    :func:`signer.messages.describe_request` describes it.
    """
    deadline = time.monotonic() + timeout_s
    shown = ""
    doc = first
    while True:
        state = str(doc.get("state"))
        if state != shown:
            shown = state
            print(outcome_text(doc, names), flush=True)
        if state in FINAL_STATES or time.monotonic() >= deadline:
            return doc
        time.sleep(interval_s)
        doc = read()
