"""``witness-signer remote``: the operator's commands over the signed API, from anywhere.

Every request is signed with the operator's Ed25519 key (RFC 9421, through
:class:`shared.signed_client.SignedJsonClient`) and every answer is accepted only
if the signer's key signed it for that very request. No chain key, no state,
nothing is written locally. ``switch``/``arm``/``disable``/``enable`` and
``approve`` follow the request until it is final (bounded by ``--timeout``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.clock import SystemClock
from shared.errors import ConfigError
from shared.httpsig import load_private_key, load_public_key
from shared.signed_client import (
    SignedJsonClient,
    UnreachableError,
    UnverifiedAnswerError,
    VerifiedAnswer,
)
from shared.tls import check_ca_file
from signer.cli_operator import follow, outcome_text
from signer.messages import node_label, pending_line
from signer.schema import FINAL_STATES

EXIT_OK, EXIT_TIMEOUT, EXIT_ERROR, EXIT_UNAVAILABLE = 0, 1, 2, 3

_ACTIONS = {
    "status": "the witness as the signer sees it: key, node, misses, armed, open requests",
    "pending": "the requests waiting for an operator's verdict, one line each",
    "approve": "approve a pending request (id or unique prefix of 6+ characters) and follow it",
    "deny": "deny a pending request; the denial holds for policy.deny_hold_s",
    "arm": "take the on-chain key and its total_missed as the new baseline",
    "switch": "switch to a configured node by name (the cooldown holds unless --force)",
    "disable": "set the null key (key_mode = 'active' only)",
    "enable": "from the null key to a configured node (key_mode = 'active' only)",
}


def add_remote_parser(sub: Any) -> None:  # argparse's _SubParsersAction is private
    """Add ``remote ACTION`` with its connection options to the CLI's subparsers."""
    remote = sub.add_parser(
        "remote", help="operator commands over the signed HTTP API, from any host",
        description="Operator commands over the signer's HTTP API, signed with the operator "
        "key; answers are verified against the signer's public key. Exit status: 0 done, "
        "1 still running at --timeout, 2 refused, denied, failed or a bad argument, 3 signer "
        "unreachable or its answer not authentic.")
    actions = remote.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in _ACTIONS.items():
        cmd = actions.add_parser(action, help=text, description=text)
        cmd.add_argument("--url", required=True, help="the signer's base URL, e.g. "
                         "https://signer.example:8443")
        cmd.add_argument("--key", type=Path, required=True, metavar="KEYFILE",
                         help="the operator's Ed25519 private key (mode 0600)")
        cmd.add_argument("--keyid", default="operator",
                         help="the operator's keyid in the signer's [[clients]] (default "
                         "operator)")
        cmd.add_argument("--signer-public-key", type=Path, default=None, metavar="FILE",
                         help="the signer's public key that signs its answers (default: "
                         "signer.pub next to KEYFILE)")
        cmd.add_argument("--ca-file", default=None, metavar="FILE",
                         help="CA bundle for the signer's TLS certificate (self-signed "
                         "certificates)")
        cmd.add_argument("--json", action="store_true", help="print the signer's JSON answers")
        if action in ("approve", "deny"):
            cmd.add_argument("request_id", metavar="ID", help="request id or unique prefix")
        if action in ("switch", "enable"):
            cmd.add_argument("--to", required=True, metavar="NODE", help="node name")
        if action in ("switch", "disable", "enable"):
            cmd.add_argument("--force", action="store_true",
                             help="skip the cooldown (never the rate limit or the key list)")
        if action not in ("status", "pending"):
            cmd.add_argument("--note", default="", help="free text recorded in the audit")
            cmd.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                             help="how long to follow the request (default 120)")


def _client(args: argparse.Namespace) -> SignedJsonClient:
    signer_pub = args.signer_public_key or args.key.parent / "signer.pub"
    if not signer_pub.exists():
        raise ConfigError("the signer's public key is needed to verify its answers; pass "
                          "--signer-public-key", path=str(signer_pub))
    ca_file = None if args.ca_file is None else str(
        check_ca_file(Path(args.ca_file), args.url, field="--ca-file"))
    return SignedJsonClient(args.url, load_private_key(args.key), args.keyid,
                            load_public_key(signer_pub), clock=SystemClock(),
                            ca_file=ca_file)


def _refusal(answer: VerifiedAnswer) -> str:
    doc = answer.doc
    return f"HTTP {answer.status}: {doc.get('detail') or doc.get('error') or doc}"


def cmd_remote(args: argparse.Namespace) -> int:
    """Run one ``remote`` action; returns the exit status."""
    client = _client(args)
    try:
        return _run(client, args)
    except (UnreachableError, UnverifiedAnswerError) as e:
        print(f"witness-signer remote: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        client.close()


def _names(client: SignedJsonClient) -> tuple[dict[str, object], dict[str, str]]:
    status = client.call("GET", "/v1/status").doc
    nodes = status.get("nodes")
    names = ({str(k): str(n) for n, k in nodes.items()} if isinstance(nodes, Mapping) else {})
    return status, names


def _run(client: SignedJsonClient, args: argparse.Namespace) -> int:
    action = args.action
    if action == "status":
        status, names = _names(client)
        _print_status(status, names, as_json=args.json)
        return EXIT_OK
    if action == "pending":
        status, names = _names(client)
        pending = status.get("pending")
        docs = [d for d in pending if isinstance(d, Mapping)] if isinstance(pending, list) else []
        for doc in docs:
            print(json.dumps(doc, sort_keys=True) if args.json else pending_line(doc))
        if not docs and not args.json:
            print("no pending requests")
        return EXIT_OK
    _, names = _names(client)
    body: dict[str, object] = {"note": args.note}
    if action in ("approve", "deny"):
        path = f"/v1/requests/{args.request_id}/{action}"
    else:
        path = f"/v1/operator/{action}"
        if getattr(args, "to", None):
            body["to"] = args.to
        if getattr(args, "force", False):
            body["force"] = True
    answer = client.call("POST", path, body)
    if args.json:
        print(json.dumps(answer.doc, sort_keys=True))
    if "request_id" not in answer.doc:
        print(f"refused: {_refusal(answer)}")
        return EXIT_UNAVAILABLE if answer.status >= 500 else EXIT_ERROR
    rid = str(answer.doc["request_id"])

    def read() -> Mapping[str, object]:
        return client.call("GET", f"/v1/requests/{rid}").doc

    final = follow(answer.doc, read, args.timeout, names, interval_s=0.5)
    state = final.get("state")
    if state not in FINAL_STATES:
        print(f"still {state} after {args.timeout:g} s; check with `remote status`")
        return EXIT_TIMEOUT
    if action == "deny":
        return EXIT_OK if state == "denied" else EXIT_ERROR
    return EXIT_OK if state == "confirmed" else EXIT_ERROR


def _print_status(status: Mapping[str, object], names: Mapping[str, str], *,
                  as_json: bool) -> None:
    if as_json:
        print(json.dumps(status, sort_keys=True))
        return
    chain = status.get("chain")
    armed = status.get("armed")
    print(f"witness {status.get('witness')}: ready {status.get('ready')}, key mode "
          f"{status.get('key_mode')}, approval {status.get('approval')}")
    if isinstance(chain, Mapping):
        key = chain.get("signing_key")
        print(f"  on chain: {node_label(names, key if isinstance(key, str) else None)}, "
              f"total_missed {chain.get('total_missed')}, head #{chain.get('head_block_num')}")
    else:
        print("  on chain: unavailable to the signer")
    if isinstance(armed, Mapping):
        key = armed.get("armed_key")
        print(f"  armed on {node_label(names, key if isinstance(key, str) else None)} at "
              f"total_missed {armed.get('baseline_missed')} (rounds {armed.get('rounds')}), "
              f"{status.get('new_misses', '?')} miss(es) since")
    requests = status.get("open_requests")
    for doc in requests if isinstance(requests, list) else []:
        if isinstance(doc, Mapping):
            print("  open: " + outcome_text(doc, names))
