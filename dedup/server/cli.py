"""``python -m dedup serve``: dedup's brokers on loopback for real Kafka clients.

Prints one line ``bootstrap.servers=HOST:PORT,...`` once every broker listens, serves until
SIGINT or SIGTERM (or ``--exit-after``), then shuts the brokers down cleanly and prints
what it served and which faults it injected.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from .core import KafkaServer
from .faults import Faults

logger = logging.getLogger("dedup.server")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dedup serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--dir", help="directory of the logs (default: a temporary one, removed at exit)")
    p.add_argument("--brokers", type=int, default=3, help="brokers, each on its own port (default 3)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=int,
        default=9092,
        help="first broker's port; broker b listens on PORT + b; 0: any free ports (default 9092)",
    )
    p.add_argument(
        "--topic",
        action="append",
        dest="topics",
        metavar="NAME",
        help="a topic with one partition, replicated on every broker (repeatable; default: clicks)",
    )
    p.add_argument("--min-insync-replicas", type=int, default=None, help="min.insync.replicas (default 2)")
    p.add_argument(
        "--no-dedup",
        action="store_true",
        help="store batches without their producer ids, as a broker without idempotence does",
    )
    faults = p.add_argument_group("faults (reproducible with --seed)")
    faults.add_argument(
        "--drop-responses",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of produce responses lost after the append (the connection breaks)",
    )
    faults.add_argument(
        "--delay-responses",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of produce responses sent only after --delay-ms",
    )
    faults.add_argument("--delay-ms", type=int, default=1000, help="delay of a delayed response (default 1000)")
    faults.add_argument(
        "--close-connections",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of requests whose connection closes before they are handled",
    )
    faults.add_argument("--seed", type=int, default=None, help="seed of the fault draws")
    faults.add_argument(
        "--crash-leader-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="crash the first topic's leader every SECONDS",
    )
    faults.add_argument(
        "--restart-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="restart a crashed broker (recovery from its directory) after SECONDS",
    )
    p.add_argument("--exit-after", type=float, default=None, metavar="SECONDS", help="stop serving after SECONDS")
    p.add_argument("--verbose", "-v", action="store_true", help="log every fault and failover")
    return p


async def _chaos(server: KafkaServer, every: float, restart_after: float | None) -> None:
    topic = next(iter(server.clusters))
    while True:
        await asyncio.sleep(every)
        leader = server.leader(topic)
        if leader is None or len(server.live_brokers()) <= 1:
            continue
        await server.stop_broker(leader)
        print(f"crashed broker {leader}, the leader of {topic}-0; now led by {server.leader(topic)}", flush=True)
        if restart_after is not None:
            asyncio.get_running_loop().call_later(restart_after, _restart_soon, server, leader)


def _restart_soon(server: KafkaServer, broker_id: int) -> None:
    asyncio.ensure_future(_restart(server, broker_id))


async def _restart(server: KafkaServer, broker_id: int) -> None:
    await server.start_broker(broker_id)
    print(f"restarted broker {broker_id} from its directory", flush=True)


async def serve(args: argparse.Namespace) -> int:
    faults = Faults(
        drop_responses=args.drop_responses, delay_responses=args.delay_responses,
        delay_seconds=args.delay_ms / 1000, close_connections=args.close_connections, seed=args.seed,
    )  # fmt: skip
    options = {} if args.min_insync_replicas is None else {"min_insync_replicas": args.min_insync_replicas}
    ports = [0 if args.port == 0 else args.port + b for b in range(args.brokers)]
    server = KafkaServer(args.dir, brokers=args.brokers, topics=args.topics or ["clicks"], host=args.host,
                         ports=ports, deduplicate=not args.no_dedup, faults=faults, **options)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tasks = []
    try:
        await server.start()
        print(f"bootstrap.servers={server.bootstrap_servers}", flush=True)
        print(f"topics: {', '.join(server.clusters)}; logs in {server.directory}; "
              f"deduplication {'off' if args.no_dedup else 'on'}", flush=True)  # fmt: skip
        if args.crash_leader_every:
            tasks.append(asyncio.ensure_future(_chaos(server, args.crash_leader_every, args.restart_after)))
        if args.exit_after is not None:
            loop.call_later(args.exit_after, stop.set)
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await server.close()
    stats = server.stats
    served = ", ".join(f"{name} {count}" for name, count in sorted(stats.requests.items())) or "nothing"
    share = stats.engine_seconds / stats.produce_seconds if stats.produce_seconds else 0.0
    print(f"produce requests: {stats.produce_seconds:.3f} s handled, {stats.engine_seconds:.3f} s of it in the "
          f"engine (log, table, replication: {share:.0%})", flush=True)  # fmt: skip
    print(f"served: {served}; {stats.batches} produce batches, {stats.duplicates} retries recognised as "
          f"duplicates, {stats.bad_requests} bad requests; faults: {faults.summary()}", flush=True)  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")  # fmt: skip
    if not args.verbose:
        logging.getLogger("dedup.log").setLevel(logging.WARNING)
    try:
        return asyncio.run(serve(args))
    except (ValueError, OSError) as error:
        print(f"python -m dedup serve: {error}", file=sys.stderr)
        return 2
