"""``witness-devnet``: the simulator's subcommands plus the drill's ``init`` and ``demo``.

The console script points here. ``serve``, ``node`` and ``status`` are the
devnet's own (:mod:`devnet.cli`); ``init`` writes a whole drill directory
(devnet, signer and watcher files, the encrypted chain keystore) and ``demo``
runs all three processes, so both live above the services. Their modules are
imported only when the subcommand runs: ``witness-devnet serve`` on a host with
only the ``devnet`` extra never loads the signer's dependencies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devnet import cli as devnet_cli


def _add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> dict[str, devnet_cli.Command]:
    init = sub.add_parser("init", help="write a complete devnet drill directory")
    init.add_argument("dir", type=Path, help="directory to create (must not hold a devnet)")
    init.add_argument("--port-base", type=int, required=True,
                      help="devnet RPC on P, signer on P+1, watcher metrics on P+2, the "
                      "producer nodes' own APIs on P+10..P+12 (P at most 65523)")
    init.add_argument("--slot-seconds", type=float, required=True,
                      help="real seconds per 3-second chain slot (e.g. 0.25 for tests)")
    init.add_argument("--chain", choices=["hive", "steem"], default="hive")
    init.add_argument("--key-mode", choices=["active", "signing"], default="active",
                      help="how the signer will switch keys (witness_update or "
                      "witness_set_properties)")
    init.add_argument("--fast-kdf", action="store_true",
                      help="weak Argon2id parameters for the keystore (tests only)")
    init.add_argument("--no-health", dest="health", action="store_false",
                      help="no health_url in signer.toml and watcher.toml: the services act "
                      "on missed blocks only, never pre-emptively")

    demo = sub.add_parser("demo", help="rehearse a failover on a throwaway devnet")
    demo.add_argument("--dir", type=Path, default=None,
                      help="drill directory to use (default: a new temporary one)")
    demo.add_argument("--port-base", type=int, default=18790)
    demo.add_argument("--slot-seconds", type=float, default=0.5)
    demo.add_argument("--chain", choices=["hive", "steem"], default="hive")
    demo.add_argument("--key-mode", choices=["active", "signing"], default="active")
    demo.add_argument("--devnet-only", action="store_true",
                      help="only the chain: stop primary and count the misses (no failover)")
    return {"init": cmd_init, "demo": cmd_demo}


def cmd_init(args: argparse.Namespace) -> int:
    """Write the drill directory and list what was written."""
    from drill.files import write_drill_dir  # noqa: PLC0415 - loads the signer's keystore

    written = write_drill_dir(args.dir, port_base=args.port_base,
                              slot_seconds=args.slot_seconds, chain=args.chain,
                              key_mode=args.key_mode, fast_kdf=args.fast_kdf,
                              health=args.health)
    print(f"wrote devnet drill directory {args.dir}:")
    for path in written:
        print(f"  {path.relative_to(args.dir)}")
    print(f"next: witness-devnet serve --config {args.dir / 'devnet.toml'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the failover rehearsal."""
    from drill.demo import run_demo  # noqa: PLC0415 - loads the signer's keystore

    return run_demo(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``witness-devnet``."""
    return devnet_cli.main(argv, extra=_add_commands)


if __name__ == "__main__":
    sys.exit(main())
