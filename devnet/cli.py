"""``witness-devnet``: the simulator's subcommands (serve, node stop/start/fault, status).

The console script's entry point is :func:`drill.cli.main`, which adds ``init``
and ``demo`` (they need the signer and the watcher, which the devnet must not
import) through the ``extra`` hook of :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
from shared.errors import ChainUnavailableError, ConfigError, FailoverError
from shared.version import version_text

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
    p.add_argument("--version", action="version", version=version_text("witness-devnet"))
    sub = p.add_subparsers(dest="command", required=True)

    commands = dict(COMMANDS)
    if extra is not None:
        commands.update(extra(sub))

    srv = sub.add_parser("serve", help="run the chain until interrupted")
    srv.add_argument("--config", type=Path, required=True, help="path to devnet.toml")

    node = sub.add_parser("node", help="stop, start or fault a producer node of the witness")
    node.add_argument("action", choices=["stop", "start", "fault"])
    node.add_argument("name", help="node name, e.g. primary, backup1, backup2")
    node.add_argument("--config", type=Path, required=True, help="path to devnet.toml")
    _add_fault_options(node)

    st = sub.add_parser("status", help="show the running devnet's state")
    st.add_argument("--config", type=Path, required=True, help="path to devnet.toml")
    st.add_argument("--json", action="store_true", help="print devnet.status as JSON")

    return p, commands


def _add_fault_options(node: argparse.ArgumentParser) -> None:
    """Options of ``node fault``; an option left out leaves that fault as it is."""
    faults = node.add_argument_group("node fault options (devnet.set_node_faults)")
    faults.add_argument("--stuck", action=argparse.BooleanOptionalAction, default=None,
                        help="head frozen, out of sync, not producing (--no-stuck: catch up)")
    faults.add_argument("--slow", type=float, default=None, metavar="S",
                        help="the node's API answers after S seconds (0: at once)")
    faults.add_argument("--partition", action="append", default=None, metavar="ADDR",
                        help="refuse the node's API to this source address or network "
                        "(repeatable; replaces the list)")
    faults.add_argument("--no-partition", action="store_true",
                        help="serve every source address again")
    faults.add_argument("--partition-mode", choices=["reset", "drop"], default=None,
                        help="reset the partitioned connections, or hold them unanswered")
    faults.add_argument("--clear", action="store_true", help="clear every fault of the node")


def node_fault_params(args: argparse.Namespace) -> dict[str, Any]:
    """The ``devnet.set_node_faults`` params for ``node fault`` (``--clear`` first).

    Raises:
        ConfigError: no fault option given, or contradictory ones.
    """
    params: dict[str, Any] = {"name": args.name}
    if args.clear:
        params.update(stuck=False, slow_s=0.0, partition=[], partition_mode="reset")
    if args.partition is not None and args.no_partition:
        raise ConfigError("give --partition or --no-partition, not both", field="--partition")
    if args.stuck is not None:
        params["stuck"] = args.stuck
    if args.slow is not None:
        params["slow_s"] = args.slow
    if args.partition is not None:
        params["partition"] = args.partition
    if args.no_partition:
        params["partition"] = []
    if args.partition_mode is not None:
        params["partition_mode"] = args.partition_mode
    if len(params) == 1:
        raise ConfigError("name a fault: --stuck, --slow S, --partition ADDR, or --clear",
                          field="node fault")
    return params


def _fault_options_given(args: argparse.Namespace) -> bool:
    return (args.clear or args.no_partition or args.stuck is not None
            or args.slow is not None or args.partition is not None
            or args.partition_mode is not None)


def _url(cfg: DevnetConfig) -> str:
    return f"http://{cfg.host}:{cfg.port}/"


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = DevnetConfig.load(args.config)
    chain = build_chain(cfg)
    try:
        devnet, httpd = serve(cfg, chain)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e.strerror or e)
        print(f"witness-devnet: cannot listen on {cfg.host}:{cfg.port} (devnet.port): "
              f"{reason[:1].lower()}{reason[1:]}", file=sys.stderr)
        return 1
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
    if args.action == "fault":
        method, params = "devnet.set_node_faults", node_fault_params(args)
    elif _fault_options_given(args):
        raise ConfigError(f"fault options go with `node fault`, not `node {args.action}`",
                          field="node")
    else:
        method, params = f"devnet.{args.action}_node", {"name": args.name}
    cfg = DevnetConfig.load(args.config)
    client = DevnetClient(_url(cfg))
    status = client.call(method, params)
    node = next(n for n in status["nodes"] if n["name"] == args.name)
    print(f"node {args.name}: {_node_line(node)}")
    return 0


def _node_line(node: dict[str, Any]) -> str:
    """``up``/``DOWN``, the API's URL and the node's faults, for people."""
    faults = node.get("faults") or {}
    words = ["up" if node["up"] else "DOWN"]
    if faults.get("stuck"):
        words.append(f"STUCK at #{node.get('head_block_number')}")
    if faults.get("slow_s"):
        words.append(f"slow {faults['slow_s']:g} s")
    if faults.get("partition"):
        words.append(f"partitioned from {', '.join(faults['partition'])} "
                     f"({faults.get('partition_mode', 'reset')})")
    if node.get("api_url"):
        words.append(f"api {node['api_url']}")
    return ", ".join(words)


def _format_status(status: dict[str, Any]) -> str:
    w = status["witness"]
    active = next((n["name"] for n in status["nodes"] if n["public_key"] == w["signing_key"]),
                  "none of the nodes")
    lines = [
        f"chain {status['chain']}  head #{status['head_block_number']} "
        f"at {status['head_block_time']}{'  HALTED' if status.get('halted') else ''}",
        f"witness {w['owner']}: key {w['signing_key']} ({active}), total_missed "
        f"{w['total_missed']}, last block #{w['last_confirmed_block_num']}",
        "nodes:", *(f"  {n['name']}: {_node_line(n)}" for n in status["nodes"]),
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
    except ChainUnavailableError as e:
        print(f"witness-devnet: cannot reach the devnet: {e}", file=sys.stderr)
        return 3
    except FailoverError as e:
        print(f"witness-devnet: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
