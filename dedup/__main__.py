"""``python -m dedup COMMAND [OPTIONS]``: one argparse tree over the commands of
:mod:`dedup.tools` and ``serve`` (:mod:`dedup.server.cli`), each of them a
:class:`dedup.tools.cli.Command`. Only the module of the command given is imported.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .tools import cli

#: name: (module and attribute of its Command, the line ``python -m dedup --help`` shows).
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("dedup.tools.demo:COMMAND", "ad clicks exactly once through a 3-broker cluster, then the limits"),
    "dump-log": ("dedup.tools.dump:DUMP_LOG", "print a .log segment or a .txnindex, as kafka-dump-log.sh does"),
    "dump-snapshot": ("dedup.tools.dump:DUMP_SNAPSHOT", "print a .snapshot file, as kafka-dump-log.sh does"),
    "bench": ("dedup.tools.bench:COMMAND", "headline speed and memory against the peers and a C loop"),
    "serve": ("dedup.server.cli:COMMAND", "dedup's brokers on loopback for real Kafka clients"),
    "simulate": ("dedup.tools.simulate:COMMAND", "deterministic fault simulation of a replicated partition"),
    "fuzz": ("dedup.tools.fuzz:COMMAND", "mutation fuzzing of everything that reads bytes"),
    "probe": ("dedup.tools.probe:COMMAND", "check a Kafka-compatible broker's idempotent-producer rules"),
}

DESCRIPTION = "dedup: the broker side of Kafka's idempotent producer, and its tools."
EPILOG = f"""\
python -m dedup COMMAND --help describes a command and its options.

Exit status: 0 done; 1 the command found a problem (a corrupt file, a failed
simulation seed, a fuzz finding); 2 a wrong command line (one line on stderr);
{cli.INTERRUPTED} interrupted by Ctrl-C (one line on stderr); {cli.CLOSED_PIPE} the reader of the output went
away early (as with python -m dedup dump-log FILE | head), nothing said."""


def load(name: str) -> cli.Command:
    module, attribute = COMMANDS[name][0].split(":")
    command: cli.Command = getattr(importlib.import_module(module), attribute)
    return command


def parser(selected: str | None = None) -> tuple[cli.CommandParser, dict[str, argparse.ArgumentParser]]:
    """The tree, and the parser of each command; only ``selected`` has its options (its
    module imported), the others are names and help lines for ``python -m dedup --help``."""
    top = cli.CommandParser(prog="python -m dedup", description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = top.add_subparsers(dest="name", title="commands", metavar="COMMAND", required=True)
    parsers: dict[str, argparse.ArgumentParser] = {}
    for name, (_, summary) in COMMANDS.items():
        if name == selected:
            command = load(name)
            parsers[name] = commands.add_parser(name, help=summary, **cli.help_options(command.doc))
            command.add_arguments(parsers[name])
            parsers[name].set_defaults(command=command)
        else:
            parsers[name] = commands.add_parser(name, help=summary)
    return top, parsers


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    top, parsers = parser(arguments[0] if arguments and arguments[0] in COMMANDS else None)
    args, unknown = top.parse_known_args(arguments)
    command_parser = parsers[args.name]
    if unknown:  # said by the command's parser, whose --help lists what it takes
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    command: cli.Command = args.command
    return cli.finish(command.prog, lambda: cli.call(command_parser, command.run, args))


if __name__ == "__main__":
    sys.exit(main())
