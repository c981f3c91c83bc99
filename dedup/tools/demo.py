"""``python -m dedup demo``: ad clicks stored exactly once through lost acknowledgements and a
leader failover, then the limits of an idempotent producer, on real files.

An idempotent producer (:mod:`dedup.producer`) sends ad-click events to one partition
replicated on 3 brokers (:mod:`dedup.cluster`) in a temporary directory. The network loses
requests and acknowledgements, the leader crashes mid-stream and a follower takes over, the
crashed broker restarts and recovers from its snapshot. Then the limits: a restarted producer
with a new producer id stores again the clicks whose acknowledgement it never got; with a
stable identity (a transactional id) the old instance is fenced and its open transaction
aborted instead. Every number printed comes from the run.

Then the same two limits with real clients, when confluent-kafka (librdkafka) is installed (it
comes with ``pip install -e '.[test]'``; without it the demo says so in one line): a Kafka-protocol
server (:mod:`dedup.server`) on 127.0.0.1, an application process killed with SIGKILL and
restarted, once with an idempotent producer (the clicks it never saw acknowledged are stored
twice) and once with a ``transactional.id`` (a ``read_committed`` consumer reads every click once).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..batch import Record
from ..cluster import Cluster
from ..log import LoadReport
from ..producer import IdempotentProducer, Network, ProducerBatch
from . import cli

CLICKS = 300  # the main run; each limit uses 40 more
SEED = 4
SEGMENT_BYTES = 1024  # small segments, so that snapshots exist when the broker restarts
BATCH_RECORDS = 2
LOST_ACKNOWLEDGEMENTS = 3  # in each limit, before the producer stops


def main(write: Callable[[str], None] = print) -> int:
    """The scenario in a temporary directory, each line given to ``write``."""
    with tempfile.TemporaryDirectory(prefix="dedup-demo-") as directory:
        for line in ad_clicks(os.path.join(directory, "cluster")):
            write(line)
        for line in real_clients(os.path.join(directory, "serve")):
            write(line)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the scenario is fixed (its seed, its sizes), so its numbers can be checked."""


COMMAND = cli.Command("demo", __doc__, add_arguments, lambda args: main())


def ad_clicks(directory: str, *, table_class: type | None = None) -> Iterator[str]:
    """The scenario in ``directory``, one printed line at a time (``table_class``: either twin's table)."""
    clock = itertools.count(1_700_000_000_000).__next__  # one deterministic clock for clients and brokers
    options: dict[str, Any] = {"clock": clock, "segment_bytes": SEGMENT_BYTES, "table_class": table_class}
    with Cluster(directory, brokers=3, min_insync_replicas=2, **options) as cluster:
        network = Network(SEED, drop_request=0.05, drop_response=0.15, reorder=False)  # one connection: in order
        producer = IdempotentProducer(cluster, network=network, batch_records=BATCH_RECORDS, clock=clock)
        producer.init()
        clicks = [click_event(number) for number in range(CLICKS)]
        yield (
            f"{CLICKS} ad clicks -> partition clicks-0 on 3 brokers (acks=all, min.insync.replicas=2), "
            f"idempotent producer {producer.producer_id}, {BATCH_RECORDS} clicks per batch, up to "
            f"{producer.max_in_flight} requests in flight; requests and acknowledgements get lost"
        )
        send(producer, clicks[:100])
        leader, in_flight = cluster.leader_id, len(producer.in_flight)
        assert leader is not None
        cluster.stop_broker(leader)  # a crash, mid-stream
        yield (
            f"  broker {leader}, the leader, crashed with {in_flight} requests in flight: "
            f"broker {cluster.leader_id} leads in epoch {cluster.leader_epoch}"
        )
        send(producer, clicks[100:200])
        log = cluster.start_broker(leader)  # recovery from its files, then catching up
        yield f"  broker {leader} restarted: {recovery(log.load_report)}; in sync again: {leader in cluster.isr}"
        send(producer, clicks[200:])
        producer.flush()
        yield from report(producer, cluster.consume(), clicks)
        yield "The limits:"
        more = [click_event(number) for number in range(CLICKS, CLICKS + 80)]
        yield from restart_with_new_producer_id(cluster, clock, more[:40])
        yield from restart_with_stable_identity(cluster, clock, more[40:])


# -- helpers ---------------------------------------------------------------------------------------


def click_event(number: int) -> bytes:
    """One ad click as the JSON a click tracker would send."""
    return json.dumps({"click": number, "ad": f"ad-{number % 7}", "user": f"u-{number * 37 % 101}"}).encode()


def click_number(record: Record) -> int:
    return int(json.loads(record.value or b"{}")["click"])


def send(producer: IdempotentProducer, clicks: Sequence[bytes]) -> None:
    """Send the clicks, one producer step per batch (so requests stay in flight)."""
    for number, click in enumerate(clicks, 1):
        producer.send(click)
        if number % producer.batch_records == 0:
            producer.poll()


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"


def recovery(report: LoadReport) -> str:
    replayed = plural(report.replayed_batches, "batch", "batches")
    if report.snapshot_offset is None:
        return f"no snapshot, producer state rebuilt from its log ({replayed})"
    return f"producer state loaded from its snapshot at offset {report.snapshot_offset}, then {replayed} replayed"


#: Why a request got each error, in this scenario.
WHY = {
    "OUT_OF_ORDER_SEQUENCE_NUMBER": "behind a lost batch",
    "NETWORK_EXCEPTION": "to the crashed leader",
    "NOT_LEADER_OR_FOLLOWER": "to a former leader",
    "NOT_ENOUGH_REPLICAS": "too few in-sync replicas",
}


def report(producer: IdempotentProducer, stored: list[Record], clicks: Sequence[bytes]) -> Iterator[str]:
    stats = producer.stats
    errors = ", ".join(f"{count} {name} ({WHY.get(name, 'retriable')})" for name, count in sorted(stats.errors.items()))
    yield f"sent:         {stats.records_sent} clicks in {stats.batches_sent} batches, {stats.requests} requests"
    yield (
        f"retried:      {stats.retries} requests, the same bytes each time: {stats.lost_requests} lost on the way, "
        f"{stats.lost_responses} responses lost ({stats.lost_acknowledgements} of them acknowledgements), "
        f"{sum(stats.errors.values())} errors: {errors or 'none'}"
    )
    yield (
        f"deduplicated: {plural(stats.duplicates, 'retry', 'retries')} recognised by the leader as already written, "
        f"answered with the original offsets and not written again"
    )
    counts = Counter(click_number(record) for record in stored)
    exactly_once = len(counts) == len(clicks) and set(counts.values()) == {1}
    in_order = [record.value for record in stored] == list(clicks)
    doubled, missing = sum(count > 1 for count in counts.values()), len(clicks) - len(counts)
    verdict = "every click exactly once" if exactly_once else f"{missing} clicks missing, {doubled} doubled"
    yield (
        f"stored:       {len(stored)} records, {len(counts)} distinct clicks of {len(clicks)} sent: {verdict}, "
        f"{'in send order' if in_order else 'not in send order'}"
    )


class LoseLastAcknowledgements(Network):
    """In order, nothing lost, except the first response to each of the last ``count`` of
    ``batches`` batches: the producer is left with clicks it does not know are stored."""

    def __init__(self, batches: int, count: int) -> None:
        super().__init__(SEED, reorder=False)
        self.first, self.count = batches - count, count

    def lose_response(self, batch: ProducerBatch) -> bool:
        return batch.index >= self.first and batch.attempts == 1


def crash_after_lost_acknowledgements(producer: IdempotentProducer, network: LoseLastAcknowledgements) -> None:
    """Step the producer until the network has lost its last acknowledgements; it stops there
    (a crash, or a stall) without retrying them."""
    while producer.stats.lost_responses < network.count:
        producer.poll()


def stored_count(cluster: Cluster, clicks: Sequence[bytes | None], isolation: str = "read_uncommitted") -> int:
    wanted = set(clicks)
    return sum(1 for record in cluster.consume(isolation=isolation) if record.value in wanted)


def restart_with_new_producer_id(cluster: Cluster, clock: Callable[[], int], clicks: list[bytes]) -> Iterator[str]:
    network = LoseLastAcknowledgements(len(clicks), LOST_ACKNOWLEDGEMENTS)
    first = IdempotentProducer(cluster, network=network, clock=clock)
    first.init()
    for click in clicks:
        first.send(click)
    crash_after_lost_acknowledgements(first, network)
    unacknowledged = first.unacknowledged_values()
    already = stored_count(cluster, unacknowledged)
    restarted = IdempotentProducer(cluster, network=Network(SEED, reorder=False), clock=clock)
    restarted.init()
    for value in unacknowledged:  # what an application does after a restart: send again what was not acknowledged
        restarted.send(value)
    restarted.flush()
    counts = Counter(record.value for record in cluster.consume() if record.value in set(clicks))
    doubled = sum(count > 1 for count in counts.values())
    yield (
        f"  a restart with a new producer id: producer {first.producer_id} sent {len(clicks)} clicks and crashed "
        f"with {len(unacknowledged)} unacknowledged, {already} of them stored (their acknowledgements were lost)"
    )
    yield (
        f"    restarted as producer {restarted.producer_id}, it sent those {len(unacknowledged)} again: new to the "
        f"brokers, so {plural(doubled, 'click')} now stored twice ({sum(counts.values())} records for "
        f"{len(clicks)} clicks)"
    )


def restart_with_stable_identity(cluster: Cluster, clock: Callable[[], int], clicks: list[bytes]) -> Iterator[str]:
    def instance(network: Network) -> IdempotentProducer:
        producer = IdempotentProducer(cluster, transactional_id="ad-clicks", network=network, clock=clock)
        producer.init()  # InitProducerId: same producer id, epoch + 1, the previous transaction aborted
        producer.begin_transaction()
        return producer

    network = LoseLastAcknowledgements(len(clicks), LOST_ACKNOWLEDGEMENTS)
    old = instance(network)
    for click in clicks:
        old.send(click)
    crash_after_lost_acknowledgements(old, network)
    unacknowledged = old.unacknowledged_values()
    written = stored_count(cluster, clicks)
    new = instance(Network(SEED, reorder=False))
    old.flush()  # the old instance was only stalled: its retries reach the partition now
    for click in clicks:  # the aborted transaction is done again, whole
        new.send(click)
    new.commit_transaction()
    committed = Counter(record.value for record in cluster.consume(isolation="read_committed"))
    once = sum(committed[click] == 1 for click in clicks)
    in_log = stored_count(cluster, clicks)
    fenced = "not fenced" if old.fatal_error is None else f"{old.fatal_error.error_name} ({old.fatal_error.code})"
    yield (
        f'  the same with a stable identity (transactional.id "ad-clicks"): producer {old.producer_id} epoch '
        f"{old.producer_epoch} stalled inside a transaction, {written} of its {len(clicks)} clicks written, "
        f"{len(unacknowledged)} of them unacknowledged"
    )
    yield (
        f"    a new instance started: producer {new.producer_id} epoch {new.producer_epoch}; the old transaction "
        f"was aborted, and the new instance sent all {len(clicks)} clicks again in a new one and committed it"
    )
    yield f"    the old instance resumed its retries and was fenced: {fenced}"
    yield (
        f"    a read_committed consumer sees {once} of the {len(clicks)} clicks, each exactly once; the log holds "
        f"{in_log} records for them, {in_log - sum(committed[click] for click in clicks)} of them aborted"
    )


# -- the same limits with real clients ---------------------------------------------------------------

REAL_CLICKS = 10
TRANSACTIONAL_ID = "ad-clicks"
#: The application, in a child process: ``python -c APPLICATION BOOTSTRAP MODE`` (MODE: idempotent or
#: transactional) sends the clicks, prints ``written`` once they are stored, and waits to be killed.
APPLICATION = "import sys; from dedup.tools.demo import application; application(*sys.argv[1:])"


def real_clients(directory: str) -> Iterator[str]:
    """Both limits with librdkafka against :class:`~dedup.server.ServerThread` in ``directory``;
    one line saying why not when confluent-kafka is not installed."""
    if importlib.util.find_spec("confluent_kafka") is None:
        yield "With real clients: skipped, confluent-kafka is not installed (pip install -e '.[test]' installs it)"
        return
    import logging

    from ..server import Faults, ServerThread

    logging.getLogger("dedup.server").setLevel(logging.CRITICAL)  # the killed clients' broken connections
    faults = Faults()
    with ServerThread(directory, brokers=1, topics=[("clicks", 1)], faults=faults,
                      transaction_state_log_num_partitions=1, offsets_topic_num_partitions=1) as server:  # fmt: skip
        bootstrap = server.bootstrap_servers
        yield "With real clients (librdkafka) against dedup's Kafka-protocol server (one broker on 127.0.0.1):"
        clicks = [click_event(number) for number in range(10_000, 10_000 + REAL_CLICKS)]
        server.run(setattr, faults, "drop_responses", 1.0)  # every acknowledgement lost: the clicks stay unacknowledged
        _kill(_start_application(bootstrap, "idempotent"))
        server.run(setattr, faults, "drop_responses", 0.0)
        stored = _read(bootstrap, "read_uncommitted").count
        before = sum(stored(click) for click in clicks)
        restarted = _producer(bootstrap)
        for click in clicks:  # a restarted application sends again what it never saw acknowledged
            restarted.produce("clicks", value=click)
        restarted.flush(30)
        counts = _read(bootstrap, "read_uncommitted")
        yield (
            f"  an idempotent producer (an application process) sent {REAL_CLICKS} clicks; the broker stored "
            f"{before} of them, all their acknowledgements were lost, and the application was killed (SIGKILL)"
        )
        yield (
            f"    restarted, with a new producer id, it sent the {REAL_CLICKS} again: a consumer reads "
            f"{sum(counts.count(click) for click in clicks)} records, "
            f"{sum(counts.count(click) == 2 for click in clicks)} clicks twice"
        )
        clicks = [click_event(number) for number in range(20_000, 20_000 + REAL_CLICKS)]
        _kill(_start_application(bootstrap, "transactional", *clicks))
        old = server.run(lambda: server.server.transactions.transactions[TRANSACTIONAL_ID])
        old_id, old_epoch = old.producer_id, old.producer_epoch
        again = _producer(
            bootstrap, TRANSACTIONAL_ID
        )  # InitProducerId: the old instance fenced, its transaction aborted
        new = server.run(lambda: server.server.transactions.transactions[TRANSACTIONAL_ID])
        again.begin_transaction()
        for click in clicks:
            again.produce("clicks", value=click)
        again.commit_transaction(30)
        committed, everything = _read(bootstrap, "read_committed"), _read(bootstrap, "read_uncommitted")
        yield (
            f'  a transactional producer (transactional.id "{TRANSACTIONAL_ID}", producer {old_id} epoch {old_epoch}) '
            f"wrote {REAL_CLICKS} clicks in a transaction and was killed (SIGKILL) before committing it"
        )
        yield (
            f"    restarted with the same transactional.id: producer {new.producer_id} epoch {new.producer_epoch}, "
            f"the old transaction aborted; it sent the {REAL_CLICKS} again and committed"
        )
        yield (
            f"    a read_committed consumer reads {sum(committed.count(click) for click in clicks)} records, "
            f"{sum(committed.count(click) == 1 for click in clicks)} clicks once each; the log holds "
            f"{sum(everything.count(click) for click in clicks)} (a read_uncommitted consumer reads the aborted ones)"
        )


def application(bootstrap: str, mode: str, *values: str) -> None:
    """The killed application (a child process): send the clicks, say when they are stored, wait."""
    import confluent_kafka

    clicks = [value.encode() for value in values] or [click_event(n) for n in range(10_000, 10_000 + REAL_CLICKS)]
    producer = _producer(bootstrap, TRANSACTIONAL_ID if mode == "transactional" else None)
    if mode == "transactional":
        producer.begin_transaction()
    for click in clicks:
        producer.produce("clicks", value=click)
    if mode == "transactional":
        producer.flush(30)  # written, in the open transaction
    else:
        consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "demo"})
        deadline = time.monotonic() + 30  # the acknowledgements are lost: wait until the broker has the clicks
        while consumer.get_watermark_offsets(confluent_kafka.TopicPartition("clicks", 0), 5)[1] < REAL_CLICKS:
            producer.poll(0.05)
            if time.monotonic() > deadline:
                break
    print("written", flush=True)
    time.sleep(60)  # killed here


def _producer(bootstrap: str, transactional_id: str | None = None) -> Any:
    import confluent_kafka

    settings = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 0,
                "retry.backoff.ms": 20, "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 100,
                "log.connection.close": False, "log_level": 0}  # fmt: skip
    if transactional_id is not None:
        settings["transactional.id"] = transactional_id
    producer = confluent_kafka.Producer(settings)
    if transactional_id is not None:
        producer.init_transactions(30)
    return producer


def _start_application(bootstrap: str, mode: str, *clicks: bytes) -> subprocess.Popen[str]:
    """The application process, once it says its clicks are stored."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-c", APPLICATION, bootstrap, mode, *(click.decode() for click in clicks)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 60)
    if not ready or process.stdout.readline() != "written\n":
        _kill(process)
        raise RuntimeError(f"the {mode} application did not write its clicks")
    return process


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(30)


def _read(bootstrap: str, isolation: str) -> list[bytes]:
    """Every value a consumer with ``isolation`` reads from clicks-0, to its end."""
    import confluent_kafka

    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-reader",
                                         "isolation.level": isolation, "enable.partition.eof": True,
                                         "enable.auto.commit": False, "fetch.wait.max.ms": 20})  # fmt: skip
    consumer.assign([confluent_kafka.TopicPartition("clicks", 0, confluent_kafka.OFFSET_BEGINNING)])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error, value = message.error(), message.value()
            if error is None and value is not None:
                values.append(value)
            elif error is not None and error.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                return values
        raise RuntimeError(f"the {isolation} consumer did not reach the end of clicks-0")
    finally:
        consumer.close()
