"""``python -m dedup demo``: ad clicks stored exactly once through lost acknowledgements and a
leader failover, then the limits of an idempotent producer, on real files.

An idempotent producer (:mod:`dedup.producer`) sends ad-click events to one partition
replicated on 3 brokers (:mod:`dedup.cluster`) in a temporary directory. The network loses
requests and acknowledgements, the leader crashes mid-stream and a follower takes over, the
crashed broker restarts and recovers from its snapshot. Then the limits: a restarted producer
with a new producer id stores again the clicks whose acknowledgement it never got; with a
stable identity (a transactional id) the old instance is fenced and its open transaction
aborted instead. Every number printed comes from the run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
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
        for line in ad_clicks(directory):
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
