"""``python -m dedup serve [server.properties] [--override KEY=VALUE ...]``: dedup's brokers on
loopback for real Kafka clients.

The broker configuration is Kafka's, as ``kafka-server-start.sh`` takes it: a
``server.properties`` file, then ``--override KEY=VALUE`` (repeatable), a later value winning.
The keys served, with Kafka's defaults: num.partitions, auto.create.topics.enable,
default.replication.factor, min.insync.replicas, unclean.leader.election.enable,
log.segment.bytes, log.retention.ms/minutes/hours, log.retention.bytes,
producer.id.expiration.ms, socket.request.max.bytes, connections.max.idle.ms, max.connections,
max.connections.per.ip, queued.max.requests, log.dirs, listeners (several: PLAINTEXT, SSL,
SASL_PLAINTEXT, SASL_SSL) with listener.security.protocol.map, advertised.listeners,
sasl.enabled.mechanisms (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), the ssl.* PEM keys and
listener.name.<listener>.<mechanism>.sasl.jaas.config (or --jaas FILE), and the group
coordinator's offsets.topic.* and group.* keys. Kafka keys without effect here (broker.id,
node.id, process.roles, thread counts, socket buffers, ...) are accepted with a warning; any other
key, or a value Kafka would refuse, is an error naming the key (exit status 2). The flags
--dir, --host, --port and --min-insync-replicas are shorthands of log.dirs, listeners and
min.insync.replicas: when a flag and the file (or an override) both give a value, the flag wins.

Prints one line ``bootstrap.servers=HOST:PORT,...`` once every broker listens, serves until
SIGINT or SIGTERM (or ``--exit-after``), then shuts the brokers down cleanly and prints one
summary line: what it served, which faults it injected, and the time produce requests took.
The exit status is 0, or 130 after Ctrl-C (SIGINT), as for every command; a connected client or
a fetch waiting for data does not hold the shutdown up. A replica that cannot be closed cleanly
(a full disk: no clean-shutdown marker, so it is recovered at the next start) is named in one
line on stderr after the summary, every other broker closed, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ..cluster import Cluster
from ..errors import KafkaStorageError
from ..log import PartitionLog
from ..tools import cli
from .config import BROKER_CONFIGS, BrokerConfig, ConfigError, load_properties, parse_override
from .coordinators import CLEANER_OPTIONS, GROUP_OPTIONS, TRANSACTION_OPTIONS
from .core import KafkaServer
from .faults import Faults

logger = logging.getLogger("dedup.server")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("properties", nargs="?", metavar="server.properties",
                   help="Kafka broker configuration file (java.util.Properties format)")  # fmt: skip
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a broker configuration key, over the file's (repeatable; a later one wins)")  # fmt: skip
    p.add_argument("--dir", help="log.dirs: directory of the logs (default: a temporary one, removed at exit)")
    p.add_argument("--brokers", type=cli.int_in(1, 64), default=3, help="brokers, each on its own port (default 3)")
    p.add_argument("--host", default=None, help="listeners' host: address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=cli.port,
        default=None,
        help="listeners' port: the first broker's; broker b listens on PORT + b; 0: any free ports (default 9092)",
    )
    p.add_argument(
        "--topic",
        action="append",
        dest="topics",
        type=topic_spec,
        metavar="NAME[:PARTITIONS]",
        help="a topic created at start with PARTITIONS partitions (default: num.partitions, 1), kept as it is "
        "if --dir has it (repeatable; default: clicks)",
    )
    p.add_argument(
        "--jaas",
        metavar="FILE",
        default=None,
        help="JAAS file with the SASL credentials (a KafkaServer section, or <listener>.KafkaServer)",
    )
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a listener without SASL on a non-loopback address (refused without this flag)",
    )
    p.add_argument("--min-insync-replicas", type=cli.positive_int, default=None, metavar="N",
                   help="min.insync.replicas (default 2, or 1 with one broker: dedup serve replicates)")  # fmt: skip
    p.add_argument(
        "--no-dedup",
        action="store_true",
        help="store batches without their producer ids, as a broker without idempotence does",
    )
    faults = p.add_argument_group("faults (reproducible with --seed)")
    faults.add_argument(
        "--drop-responses",
        type=cli.share,
        default=0.0,
        metavar="SHARE",
        help="share of produce responses lost after the append (the connection breaks)",
    )
    faults.add_argument(
        "--delay-responses",
        type=cli.share,
        default=0.0,
        metavar="SHARE",
        help="share of produce responses sent only after --delay-ms",
    )
    faults.add_argument("--delay-ms", type=cli.non_negative_int, default=1000, metavar="MS",
                        help="delay of a delayed response (default 1000)")  # fmt: skip
    faults.add_argument(
        "--close-connections",
        type=cli.share,
        default=0.0,
        metavar="SHARE",
        help="share of requests whose connection closes before they are handled",
    )
    faults.add_argument("--seed", type=cli.seed, default=None, help="seed of the fault draws")
    faults.add_argument(
        "--crash-leader-every",
        type=cli.positive_float,
        default=None,
        metavar="SECONDS",
        help="crash the first topic's leader every SECONDS",
    )
    faults.add_argument(
        "--restart-after",
        type=cli.non_negative_float,
        default=None,
        metavar="SECONDS",
        help="restart a crashed broker (recovery from its directory) after SECONDS",
    )
    p.add_argument("--exit-after", type=cli.non_negative_float, default=None, metavar="SECONDS",
                   help="stop serving after SECONDS")  # fmt: skip
    p.add_argument("--verbose", "-v", action="store_true", help="log every fault and failover")


def topic_spec(text: str) -> str | tuple[str, int]:
    """``--topic NAME[:PARTITIONS]``: the name alone or ``(name, partitions)``."""
    name, colon, count = text.rpartition(":")
    if not colon:
        return text
    if not count.isdigit() or not 1 <= int(count) <= 1000:
        raise argparse.ArgumentTypeError(f"expected NAME[:PARTITIONS] with PARTITIONS in [1, 1000], got {text!r}")
    return name, int(count)


async def _chaos(server: KafkaServer, every: float, restart_after: float | None,
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:  # fmt: skip
    topic = next(iter(server.topics))
    while True:
        await asyncio.sleep(every)
        leader = server.leader(topic)
        if leader is None or len(server.live_brokers()) <= 1:
            continue
        await server.stop_broker(leader)
        print(f"crashed broker {leader}, the leader of {topic}-0; now led by {server.leader(topic)}", flush=True)
        if restart_after is not None:
            spawn(_restart(server, leader, restart_after))


def _describe(server: KafkaServer, name: str) -> str:
    topic = server.topics.get(name)
    return name if topic is None or len(topic.assignment) == 1 else f"{name}:{len(topic.assignment)}"


async def _restart(server: KafkaServer, broker_id: int, after: float) -> None:
    await asyncio.sleep(after)
    await server.start_broker(broker_id)
    print(f"restarted broker {broker_id} from its directory", flush=True)


async def serve(args: argparse.Namespace, faults: Faults) -> int | None:
    """Serve until SIGINT, SIGTERM or ``--exit-after``, then shut down and print the summary;
    the signal that ended it (None for ``--exit-after``). An error in the crash-and-restart
    schedule (or a closed stdout) stops the server too, and is raised once it is shut down."""
    options = dict(args.server_options)
    brokers = args.brokers
    port = options.pop("port", 9092)
    ports = [0 if port == 0 else port + b for b in range(brokers)]
    try:
        server = KafkaServer(brokers=brokers, topics=args.topics or ["clicks"], ports=ports,
                             deduplicate=not args.no_dedup, faults=faults, **options)  # fmt: skip
    except ValueError as error:  # what run_command does not check before (a topic name, say)
        raise cli.UsageError(str(error)) from None
    stop = asyncio.Event()
    received: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    tasks: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []
    closing: KafkaStorageError | None = None

    def finished(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]
            stop.set()

    def spawn(coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        task.add_done_callback(finished)
        tasks.add(task)

    try:
        await server.start()
        print(f"bootstrap.servers={server.bootstrap_servers}", flush=True)
        print(f"topics: {', '.join(_describe(server, name) for name in server.topics)}; logs in {server.directory}; "
              f"deduplication {'off' if args.no_dedup else 'on'}", flush=True)  # fmt: skip
        if args.crash_leader_every:
            spawn(_chaos(server, args.crash_leader_every, args.restart_after, spawn))
        if args.exit_after is not None:
            loop.call_later(args.exit_after, stop.set)
        await stop.wait()
    finally:
        while tasks:  # a restart may be scheduled while the chaos task is cancelled
            pending = list(tasks)
            tasks.clear()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            await server.close()
        except KafkaStorageError as error:  # every other broker is closed: reported after the summary
            closing = error
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if failures:
        raise failures[0]
    stats = server.stats
    served = ", ".join(f"{name} {count}" for name, count in sorted(stats.requests.items())) or "nothing"
    share = stats.engine_seconds / stats.produce_seconds if stats.produce_seconds else 0.0
    print(f"served: {served}; {stats.batches} produce batches, {stats.duplicates} retries recognised as "
          f"duplicates, {stats.bad_requests} bad requests; faults: {faults.summary()}; produce requests: "
          f"{stats.produce_seconds:.3f} s handled, {stats.engine_seconds:.3f} s of it in the engine (log, table, "
          f"replication: {share:.0%})", flush=True)  # fmt: skip
    if closing is not None:
        raise closing
    return received[0] if received else None


def _accepted_kwargs() -> set[str]:
    """The keyword arguments KafkaServer takes, itself, through every Cluster and PartitionLog, or
    for its group coordinator (GROUP_OPTIONS), transaction coordinator (TRANSACTION_OPTIONS) and
    log cleaner (CLEANER_OPTIONS)."""
    names: set[str] = set(GROUP_OPTIONS) | set(TRANSACTION_OPTIONS) | set(CLEANER_OPTIONS)
    for function in (KafkaServer.__init__, Cluster.__init__, PartitionLog.__init__):
        names.update(inspect.signature(function).parameters)
    return names


def broker_config(args: argparse.Namespace) -> BrokerConfig:
    """The configuration of the file and the overrides (UsageError naming the key on a bad one)."""
    try:
        file = {} if args.properties is None else load_properties(args.properties)
        overrides = dict(parse_override(argument) for argument in args.override)
        return BrokerConfig.from_layers(file, overrides)
    except ConfigError as error:
        raise cli.UsageError(f"config {error.key}: {error}") from None
    except OSError as error:
        raise cli.UsageError(f"argument server.properties: {error.strerror}: {args.properties}") from None


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """KafkaServer's keyword arguments (``port``: the first broker's) from the configuration
    and the shorthand flags, a flag winning over the file and the overrides."""
    config = broker_config(args)
    options = config.server_kwargs()
    accepted = _accepted_kwargs() | {"port"}
    for key, entry in BROKER_CONFIGS.items():
        if config.is_set(key) and entry.kwarg is not None and entry.kwarg not in accepted:
            raise cli.UsageError(f"config {key}: not served by this build of dedup serve")
    flags = {"directory": args.dir, "host": args.host, "port": args.port,
             "min_insync_replicas": args.min_insync_replicas, "jaas_file": args.jaas,
             "allow_unauthenticated": args.allow_unauthenticated or None}  # fmt: skip
    options.update({name: value for name, value in flags.items() if value is not None})
    port = options.get("port", 9092)
    if port and port + args.brokers - 1 > 65535:
        raise cli.UsageError(f"argument --port: brokers listen on {port} to {port + args.brokers - 1}, past 65535")
    insync = options.get("min_insync_replicas")
    if insync is not None and insync > args.brokers:
        raise cli.UsageError(f"argument --min-insync-replicas: min.insync.replicas must be at most --brokers "
                             f"({args.brokers}), got {insync}")  # fmt: skip
    return options


def run_command(args: argparse.Namespace) -> int:
    args.server_options = server_options(args)  # every configuration error before anything starts
    if args.drop_responses + args.delay_responses > 1:
        raise cli.UsageError("argument --delay-responses: --drop-responses + --delay-responses must be at most 1")
    faults = Faults(
        drop_responses=args.drop_responses, delay_responses=args.delay_responses,
        delay_seconds=args.delay_ms / 1000, close_connections=args.close_connections, seed=args.seed,
    )  # fmt: skip
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")  # fmt: skip
    if not args.verbose:
        logging.getLogger("dedup.log").setLevel(logging.WARNING)
    try:
        ended_by = asyncio.run(serve(args, faults))
    except BrokenPipeError:
        raise
    except (OSError, KafkaStorageError) as error:  # an address in use; a directory that cannot be written
        print(f"python -m dedup serve: {error}", file=sys.stderr)
        return 1
    if ended_by == signal.SIGINT:
        raise KeyboardInterrupt  # Ctrl-C, after a clean shutdown: reported as any command's (exit status 130)
    return 0


COMMAND = cli.Command("serve", __doc__, add_arguments, run_command)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dedup serve ARGV`` in this process."""
    return COMMAND.main(argv)
