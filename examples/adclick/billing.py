"""One member of the ``billing`` consumer group: it bills every click it reads, then commits it.

run.py starts three of these, each its own process: ``python billing.py BOOTSTRAP NAME``.
Each prints one line per event on stdout, which run.py collects as the billing ledger:

    assigned 0 3                  the partitions a rebalance gave this member
    billed 3 117 summer-sale 25   a click billed: partition, offset, ad, cents

The bill is written before the offset is committed (at-least-once): if the process dies in
between, the partition's next owner reads that click again from the committed offset, and
the ledger, keyed by (partition, offset), bills it once. SIGTERM leaves the group cleanly.
"""

from __future__ import annotations

import json
import signal
import sys

from confluent_kafka import Consumer, KafkaException, TopicPartition

TOPIC = "clicks"
GROUP = "billing"


def main() -> None:
    bootstrap, name = sys.argv[1:3]
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": GROUP,
        "client.id": name,
        "enable.auto.commit": False,      # commit after billing, never on a timer
        "auto.offset.reset": "earliest",  # a partition nobody has committed yet: from its first click
        "session.timeout.ms": 3000,       # a killed member is noticed after 3 s (serve allows down to 1 s)
        "heartbeat.interval.ms": 300,
    })  # fmt: skip
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        print("assigned", *sorted(p.partition for p in partitions), flush=True)

    consumer.subscribe([TOPIC], on_assign=on_assign)
    try:
        while not stopping:
            message = consumer.poll(0.1)
            if message is None:
                continue
            if message.error():
                print(f"{name}: {message.error()}", file=sys.stderr, flush=True)
                continue
            click = json.loads(message.value())
            print("billed", message.partition(), message.offset(), click["ad"], click["cents"], flush=True)
            try:
                consumer.commit(message=message, asynchronous=False)
            except KafkaException as error:  # a rebalance under way: the next owner re-reads from the last commit
                print(f"{name}: commit failed: {error}", file=sys.stderr, flush=True)
    finally:
        consumer.close()  # LeaveGroup: the others take this member's partitions at once


if __name__ == "__main__":
    main()
