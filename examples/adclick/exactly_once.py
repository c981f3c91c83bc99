"""Ad clicks billed exactly once by a consume-transform-produce group, through a member's crash
and a coordinator's crash.

    python examples/adclick/exactly_once.py                    # every click billed once
    python examples/adclick/exactly_once.py --no-transactions  # the control: some clicks billed twice

It needs dedup and confluent-kafka: ``pip install -e '.[test]'`` in a clone installs both.
What happens, in about 15 seconds:

1. Three brokers (dedup's ``ServerThread``, in this process, so one broker can be crashed and
   restarted) with topics ``clicks`` and ``billed`` of 3 partitions each, losing 15% of their
   produce responses (the producers retry, the brokers deduplicate).
2. Two billing members (transform.py, separate processes, ``group.id=billing``) read ``clicks``
   and write one bill per click to ``billed``, each batch in a transaction with its input
   offsets (``send_offsets_to_transaction``); an idempotent producer sends the clicks meanwhile.
3. ``billing-1`` is killed with SIGKILL after writing a batch of bills and before committing it,
   and restarted under the same name (so the same ``transactional.id``): the coordinator aborts
   the dead member's transaction, the group rebalances, the batch is read again from the
   committed offsets and billed again, in a new transaction.
4. A broker coordinating a member's transactions (not the group's) crashes mid-stream and restarts.
5. When the group has committed every click, a ``read_committed`` consumer reads ``billed``:
   every click exactly once. A ``read_uncommitted`` one shows the aborted bills too. With
   ``--no-transactions`` (offsets committed after the bills, at-least-once) the killed member's
   batch is billed twice. Exit status 0 when every click is billed once, 1 when not, 2 when the
   run could not finish.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from story import ADS, say, wait_for

from dedup.server import Faults, ServerThread

SOURCE, SINK, GROUP = "clicks", "billed", "billing"
PARTITIONS = 3
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Member:
    """A billing member (transform.py) in its own process; a thread reads what it prints."""

    def __init__(self, bootstrap: str, name: str, *options: str) -> None:
        self.name = name
        self.assigned: list[int] = []
        self.written = self.committed = 0
        self.paused = False
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        command = [sys.executable, os.path.join(HERE, "transform.py"), bootstrap, name, *options]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event, *fields = line.split()
            if event == "assigned":
                self.assigned = [int(p) for p in fields]
            elif event == "written":
                self.written += int(fields[0])
            elif event == "committed":
                self.committed += int(fields[0])
            elif event == "paused":
                self.paused = True

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # transform.py leaves the group and exits
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def clicks(count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` clicks as (key, value), keyed by user id."""
    rng = random.Random(seed)
    made = []
    for number in range(count):
        user, ad = rng.randrange(500), rng.choice(list(ADS))
        made.append((f"user-{user}", json.dumps({"click": number, "user": user, "ad": ad, "cents": ADS[ad]}).encode()))
    return made


def produce(bootstrap: str, to_send: list[tuple[str, bytes]], seconds: float, meanwhile: Callable[[], object]) -> None:
    """Send the clicks (idempotent producer) as a steady stream over about ``seconds``."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                         "retry.backoff.ms": 20, "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
                         "log.connection.close": False, "log_level": 0})  # fmt: skip
    begin = time.monotonic()
    for number, (key, value) in enumerate(to_send):
        producer.produce(SOURCE, key=key, value=value)
        producer.poll(0)
        meanwhile()
        ahead = begin + seconds * (number + 1) / len(to_send) - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    deadline = time.monotonic() + 30
    while producer.flush(0.1) and time.monotonic() < deadline:
        meanwhile()
    if len(producer):
        raise RuntimeError(f"{len(producer)} clicks not acknowledged")


def transaction_coordinator(server: ServerThread) -> tuple[int | None, str]:
    """A broker coordinating a member's transactions and not the group: when the group coordinator
    crashes, the broker leaves Metadata (as in Kafka) and librdkafka 2.16 can hang in
    send_offsets_to_transaction past its timeout (confluentinc/librdkafka#5511 and #5456, both open:
    the coordinator request waits on a decommissioned broker), a client bug this run steps around."""
    group = server.run(server.server.groups.coordinator_id, GROUP)
    for member in ("billing-2", "billing-1"):
        broker = server.run(server.server.transactions.coordinator_id, f"billing-{member}")
        if broker is not None and broker != group:
            return broker, member
    return None, ""


def committed_everything(bootstrap: str, ends: dict[int, int]) -> bool:
    """Whether the group's committed offsets (asked from outside the group) reach ``ends``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    try:
        found = consumer.committed([TopicPartition(SOURCE, p) for p in range(PARTITIONS)], timeout=10)
        return all(tp.offset >= ends[tp.partition] for tp in found)
    except Exception:  # noqa: BLE001 - a rebalance or a broker restart under way: ask again
        return False
    finally:
        consumer.close()


def read(bootstrap: str, topic: str, isolation: str) -> list[bytes]:
    """Every value a consumer with ``isolation`` reads from ``topic``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "adclick-report", "enable.auto.commit": False,
                         "isolation.level": isolation, "enable.partition.eof": True})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    values: list[bytes] = []
    ended: set[int] = set()
    deadline = time.monotonic() + 30
    try:
        while len(ended) < PARTITIONS:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {isolation} consumer did not reach the end of {topic}")
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    values.append(message.value())
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition())
    finally:
        consumer.close()
    return values


def run(args: argparse.Namespace) -> bool:
    """The scenario; True if every click is billed exactly once for a read_committed reader."""
    for name in ("dedup.server", "dedup.log", "dedup.cluster", "dedup.coordinator"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    mode = "idempotent producers, offsets committed after the bills (the control)" if args.no_transactions else (
        "transactions: bills and input offsets committed together (send_offsets_to_transaction)")  # fmt: skip
    options = ["--no-transactions"] if args.no_transactions else []
    with tempfile.TemporaryDirectory(prefix="adclick-eos-") as directory, ServerThread(
        directory, brokers=3, topics=[(SOURCE, PARTITIONS), (SINK, PARTITIONS)],
        faults=Faults(drop_responses=args.drop_responses, seed=args.seed),
        group_initial_rebalance_delay_ms=0, group_min_session_timeout_ms=1000,
        offsets_topic_num_partitions=3, transaction_state_log_num_partitions=3,
    ) as server:  # fmt: skip
        bootstrap = server.bootstrap_servers
        say(f"3 brokers at {bootstrap}, {SOURCE} and {SINK} with {PARTITIONS} partitions each, "
            f"{args.drop_responses:.0%} of produce responses lost; {mode}")  # fmt: skip
        victim = Member(bootstrap, "billing-1", "--pause-after", "3", *options)
        other = Member(bootstrap, "billing-2", *options)
        members = [victim, other]
        try:
            wait_for(lambda: len(victim.assigned) + len(other.assigned) == PARTITIONS and victim.assigned != [],
                     30, "the billing group to form")  # fmt: skip
            say("billing group: " + "; ".join(f"{m.name} has partitions {m.assigned}" for m in members))
            events: dict[str, object] = {}

            def meanwhile() -> None:
                if "killed" not in events and victim.paused:
                    pending = victim.written - victim.committed
                    victim.kill()
                    events["killed"] = pending
                    say(f"killed billing-1 (SIGKILL) with {pending} bills written and not committed; "
                        f"restarted under the same name (transactional.id billing-billing-1)")  # fmt: skip
                    members.append(Member(bootstrap, "billing-1", *options))
                elif (
                    "killed" in events
                    and "crashed" not in events
                    and sum(m.committed for m in members) >= args.clicks // 4
                ):
                    coordinator, whose = transaction_coordinator(server)
                    if coordinator is not None:
                        server.stop_broker(coordinator)
                        events["crashed"] = coordinator
                        events["crashed_at"] = time.monotonic()
                        say(f"broker {coordinator}, the transaction coordinator of {whose}, crashed")
                elif "crashed" in events and "restarted" not in events \
                        and time.monotonic() > events["crashed_at"] + 1:  # type: ignore[operator]  # fmt: skip
                    server.start_broker(events["crashed"])  # type: ignore[arg-type]
                    events["restarted"] = True
                    say(f"broker {events['crashed']} restarted")

            to_send = clicks(args.clicks, args.seed)
            say(f"producing {len(to_send)} clicks")
            produce(bootstrap, to_send, 4.0, meanwhile)
            say(f"producer: all {len(to_send)} clicks acknowledged")
            wait_for(lambda: (meanwhile(), "restarted" in events)[1], 30, "the member kill and the broker crash")
            ends = {p: server.run(lambda p=p: server.server.partition(SOURCE, p).high_watermark) for p in range(3)}
            wait_for(lambda: committed_everything(bootstrap, ends), 60, "the group to commit every click")
            say("the group committed the offsets of every click")
        finally:
            for member in members:
                member.stop()
        committed = read(bootstrap, SINK, "read_committed")
        everything = read(bootstrap, SINK, "read_uncommitted")
    counts = Counter(json.loads(value)["click"] for value in committed)
    twice = sum(count > 1 for count in counts.values())
    missing = args.clicks - len(counts)
    print(f"\nclicks sent: {args.clicks}")
    print(f"bills read by a read_committed consumer: {len(committed)}, {len(counts)} distinct clicks, "
          f"{twice} billed more than once, {missing} not billed")  # fmt: skip
    print(f"bills in the log (read_uncommitted): {len(everything)}, {len(everything) - len(committed)} of them "
          f"in aborted transactions")  # fmt: skip
    if twice == missing == 0:
        print(f"bill: exact, every one of the {args.clicks} clicks billed once")
        return True
    print(f"bill: WRONG, {twice} clicks billed more than once, {missing} not billed")
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, default=2000, help="clicks to send (default 2000)")
    parser.add_argument("--drop-responses", type=float, default=0.15, help="share of produce responses lost")
    parser.add_argument("--seed", type=int, default=7, help="seed of the clicks and of the lost responses")
    parser.add_argument("--no-transactions", action="store_true", help="at-least-once members (the control)")
    args = parser.parse_args()
    try:
        return 0 if run(args) else 1
    except (TimeoutError, RuntimeError) as error:
        print(f"adclick: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
