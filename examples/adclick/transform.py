"""One member of the ``billing`` group as a consume-transform-produce application: it reads
``clicks``, writes one bill per click to ``billed``, and commits its input offsets *inside* the
transaction (``send_offsets_to_transaction``), so a bill and the offset of its click are committed
together or not at all.

    python transform.py BOOTSTRAP NAME [--pause-after N] [--no-transactions]

exactly_once.py starts these, each its own process. The ``transactional.id`` is fixed per member
name (``billing-NAME``): a member restarted under its name fences its dead predecessor and the
coordinator aborts the transaction the predecessor left open. Its output on stdout, one line per
event, for exactly_once.py:

    assigned 0 2      the partitions a rebalance gave this member
    written 20        a batch of bills written (flushed), not yet committed
    committed 20      the batch committed (its bills and its input offsets)
    paused            waiting, with a batch written and not committed (--pause-after)

``--pause-after N``: after writing its N-th batch, wait before the commit (so that a SIGKILL sent
then lands between the write and the commit, the worst moment). ``--no-transactions``: the
control, an idempotent producer and a consumer commit after the bills are acknowledged
(at-least-once): a member killed between the two leaves bills whose clicks the next owner bills
again. SIGTERM leaves the group cleanly.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

SOURCE, SINK, GROUP = "clicks", "billed", "billing"
BATCH = 20  # clicks per transaction


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("name")
    parser.add_argument("--pause-after", type=int, default=0)
    parser.add_argument("--no-transactions", action="store_true")
    args = parser.parse_args()
    transactions = not args.no_transactions
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap, "group.id": GROUP, "client.id": args.name,
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",  # read what upstream committed, never an aborted click
        "session.timeout.ms": 3000, "heartbeat.interval.ms": 300,
    })  # fmt: skip
    settings = {"bootstrap.servers": args.bootstrap, "linger.ms": 5, "acks": "all", "enable.idempotence": True,
                "retry.backoff.ms": 20, "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
                "log.connection.close": False, "log_level": 0}  # fmt: skip
    if transactions:
        settings |= {"transactional.id": f"billing-{args.name}", "transaction.timeout.ms": 10000}
    producer = Producer(settings)
    if transactions:
        producer.init_transactions(60)  # fences a predecessor under this name; its open transaction is aborted
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        print("assigned", *sorted(p.partition for p in partitions), flush=True)

    consumer.subscribe([SOURCE], on_assign=on_assign)
    batches = 0
    try:
        while not stopping:
            messages = [m for m in consumer.consume(BATCH, 0.2) if m.error() is None]
            if not messages:
                continue
            if transactions:
                producer.begin_transaction()
            for message in messages:
                producer.produce(SINK, key=message.key(), value=bill(message.value()))
            if producer.flush(30):
                raise RuntimeError("bills not acknowledged within 30 s")
            batches += 1
            print("written", len(messages), flush=True)
            if batches == args.pause_after:
                print("paused", flush=True)
                time.sleep(60)  # killed here, between the write and the commit
            try:
                if transactions:
                    positions = consumer.position(consumer.assignment())
                    producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
                    producer.commit_transaction(30)
                else:
                    consumer.commit(asynchronous=False)
            except KafkaException as error:  # a rebalance under way: this batch is done again by the owner
                print(f"{args.name}: commit failed: {error}", file=sys.stderr, flush=True)
                if transactions:
                    producer.abort_transaction(30)
                    rewind(consumer)
                continue
            print("committed", len(messages), flush=True)
    finally:
        consumer.close()  # LeaveGroup: the others take this member's partitions at once


def bill(click: bytes) -> bytes:
    """The transform: a click becomes a bill line."""
    event = json.loads(click)
    return json.dumps({"click": event["click"], "ad": event["ad"], "cents": event["cents"]}).encode()


def rewind(consumer: Consumer) -> None:
    """After an abort: back to the committed offsets, so the aborted batch is read again."""
    for partition in consumer.committed(consumer.assignment(), 30):
        if partition.offset < 0:  # nothing committed yet: auto.offset.reset=earliest
            partition.offset = OFFSET_BEGINNING
        consumer.seek(partition)


if __name__ == "__main__":
    main()
