"""Command line: ``python -m dedup demo | serve | simulate | dump-log FILE | dump-snapshot FILE | bench | fuzz``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedup", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="ad clicks exactly once through a 3-broker cluster, then the limits")
    for name, what in (("dump-log", "a .log segment, batch by batch"), ("dump-snapshot", "a .snapshot file")):
        command = commands.add_parser(name, help=f"print {what}, as kafka-dump-log.sh does", add_help=False)
        command.add_argument("arguments", nargs=argparse.REMAINDER)
    commands.add_parser("bench", help="headline speed and memory against the peers and a C loop", add_help=False)
    commands.add_parser("serve", help="dedup's brokers on loopback for real Kafka clients", add_help=False)
    commands.add_parser("simulate", help="deterministic fault simulation of a replicated partition", add_help=False)
    commands.add_parser("fuzz", help="mutation fuzzing of everything that reads bytes", add_help=False)
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:  # its options start with "--", which REMAINDER would not take
        from .tools.bench import main as bench_main

        return bench_main(arguments[1:])
    if arguments[:1] == ["simulate"]:
        from .tools.simulate import main as simulate_main

        return simulate_main(arguments[1:])
    if arguments[:1] == ["fuzz"]:
        from .tools.fuzz import main as fuzz_main

        return fuzz_main(arguments[1:])
    if arguments[:1] == ["serve"]:
        from .server.cli import main as serve_main

        return serve_main(arguments[1:])
    args = parser.parse_args(arguments)
    if args.command == "demo":
        from .tools import demo

        return demo.main()
    if args.command == "dump-log":
        from .tools.dump import dump_log_main

        return dump_log_main(args.arguments)
    from .tools.dump import dump_snapshot_main

    return dump_snapshot_main(args.arguments)


if __name__ == "__main__":
    sys.exit(main())
