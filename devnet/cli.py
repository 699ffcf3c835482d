"""``witness-devnet``: the simulator's subcommands (serve, node stop/start, status).

The console script's entry point is :func:`drill.cli.main`, which adds ``init``
and ``demo`` (they need the signer and the watcher, which the devnet must not
import) through the ``extra`` hook of :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from devnet.client import DevnetClient
from devnet.config import DevnetConfig
from devnet.genesis import build_chain
from devnet.server import serve
from shared.errors import ChainError, FailoverError

log = logging.getLogger(__name__)

Command = Callable[[argparse.Namespace], int]
# Adds subcommands to the parser and returns their handlers by name.
Extension = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], dict[str, Command]]


def _parser(extra: Extension | None = None) -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    p = argparse.ArgumentParser(
        prog="witness-devnet",
        description="A local Hive/Steem-compatible chain with killable producer nodes, "
        "for failover drills and tests. Its keys are throwaway devnet keys.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    commands = dict(COMMANDS)
    if extra is not None:
        commands.update(extra(sub))

    srv = sub.add_parser("serve", help="run the chain until interrupted")
    srv.add_argument("--config", type=Path, required=True, help="path to devnet.toml")

    node = sub.add_parser("node", help="stop or start a producer node of the witness")
    node.add_argument("action", choices=["stop", "start"])
    node.add_argument("name", help="node name, e.g. primary, backup1, backup2")
    node.add_argument("--config", type=Path, required=True, help="path to devnet.toml")

    st = sub.add_parser("status", help="show the running devnet's state")
    st.add_argument("--config", type=Path, required=True, help="path to devnet.toml")
    st.add_argument("--json", action="store_true", help="print devnet.status as JSON")

    return p, commands


def _url(cfg: DevnetConfig) -> str:
    return f"http://{cfg.host}:{cfg.port}/"


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = DevnetConfig.load(args.config)
    chain = build_chain(cfg)
    devnet, httpd = serve(cfg, chain)
    host, port = httpd.server_address[:2]

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(f"devnet {cfg.chain.name} listening on http://{host!s}:{port} "
          f"(slot {cfg.slot_seconds} s, head {chain.head_num})", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        devnet.stop()
        httpd.server_close()
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    cfg = DevnetConfig.load(args.config)
    client = DevnetClient(_url(cfg))
    status = client.call(f"devnet.{args.action}_node", {"name": args.name})
    node = next(n for n in status["nodes"] if n["name"] == args.name)
    print(f"node {args.name}: {'up' if node['up'] else 'down'}")
    return 0


def _format_status(status: dict[str, Any]) -> str:
    w = status["witness"]
    active = next((n["name"] for n in status["nodes"] if n["public_key"] == w["signing_key"]),
                  "none of the nodes")
    lines = [
        f"chain {status['chain']}  head #{status['head_block_number']} "
        f"at {status['head_block_time']}{'  HALTED' if status.get('halted') else ''}",
        f"witness {w['owner']}: key {w['signing_key']} ({active}), total_missed "
        f"{w['total_missed']}, last block #{w['last_confirmed_block_num']}",
        "nodes: " + ", ".join(f"{n['name']} {'up' if n['up'] else 'DOWN'}"
                              for n in status["nodes"]),
        f"double production: {status['double_production']}",
    ]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    cfg = DevnetConfig.load(args.config)
    status = DevnetClient(_url(cfg)).status()
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else _format_status(status))
    return 0


COMMANDS: dict[str, Command] = {"serve": cmd_serve, "node": cmd_node, "status": cmd_status}


def main(argv: list[str] | None = None, *, extra: Extension | None = None) -> int:
    """Run ``witness-devnet`` with the simulator's subcommands and those ``extra`` adds."""
    parser, commands = _parser(extra)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", stream=sys.stderr)
    try:
        return commands[args.command](args)
    except ChainError as e:
        print(f"witness-devnet: cannot reach the devnet: {e}", file=sys.stderr)
        return 3
    except FailoverError as e:
        print(f"witness-devnet: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
