"""The idempotent producer model (dedup.producer) against a real cluster on temporary files."""

from __future__ import annotations

import itertools

import pytest

from dedup import InvalidProducerEpochError, OutOfOrderSequenceError, ProducerFencedError, scan_batches
from dedup._types import INT32_MAX
from dedup.cluster import Cluster, ProduceResponse
from dedup.producer import IdempotentProducer, Network, ProducerBatch, window_overflow_example


def tick_clock():
    """A deterministic millisecond clock shared by the producer and the brokers."""
    return itertools.count(1_700_000_000_000).__next__


@pytest.fixture
def clock():
    return tick_clock()


def make_cluster(path, clock, **options):
    options.setdefault("brokers", 1)
    options.setdefault("min_insync_replicas", 1)
    return Cluster(path, clock=clock, **options)


def values(count, prefix=b"v"):
    return [b"%s-%04d" % (prefix, index) for index in range(count)]


def run(producer, payload):
    for value in payload:
        producer.send(value)
    producer.flush()


class SpyCluster:
    """Records the bytes of every produce request that reaches the cluster."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.requests = []
        self._produce = cluster.produce
        cluster.produce = self.produce

    def produce(self, data, *, acks="all"):
        self.requests.append(bytes(data))
        return self._produce(data, acks=acks)


class LoseResponses(Network):
    """In order; loses the responses to the first attempt of the listed batches."""

    def __init__(self, *indexes):
        super().__init__(0, reorder=False)
        self.indexes = set(indexes)

    def lose_response(self, batch):
        return batch.index in self.indexes and batch.attempts == 1


# -- sequences -------------------------------------------------------------------------------------


def test_batches_get_consecutive_sequences_and_their_offsets(tmp_path, clock):
    with make_cluster(tmp_path, clock) as cluster:
        producer = IdempotentProducer(cluster, batch_records=3, clock=clock)
        assert producer.init() == (1000, 0)
        run(producer, values(10))
        assert [(b.base_sequence, b.last_sequence, b.record_count) for b in producer.batches] == [
            (0, 2, 3), (3, 5, 3), (6, 8, 3), (9, 9, 1),
        ]  # fmt: skip
        headers = scan_batches(b"".join(batch.data for batch in producer.batches))
        assert headers["producer_id"].tolist() == [1000] * 4
        assert headers["producer_epoch"].tolist() == [0] * 4
        assert headers["base_sequence"].tolist() == [0, 3, 6, 9]
        assert [(b.base_offset, b.last_offset) for b in producer.batches] == [(0, 2), (3, 5), (6, 8), (9, 9)]
        assert [r.value for r in cluster.consume()] == values(10)
        assert producer.acknowledged_values() == values(10) and producer.unacknowledged_values() == []


def test_sequences_wrap_at_int32_max(tmp_path, clock):
    with make_cluster(tmp_path, clock) as cluster:
        producer = IdempotentProducer(cluster, batch_records=3, clock=clock)
        producer.init()
        producer._next_sequence = INT32_MAX - 1  # a long-lived producer near the end of the range
        run(producer, values(6))
        assert [(b.base_sequence, b.last_sequence) for b in producer.batches] == [(INT32_MAX - 1, 0), (1, 3)]
        assert producer.fatal_error is None
        assert [r.value for r in cluster.consume()] == values(6)


# -- retries ----------------------------------------------------------------------------------------


def test_a_retry_resends_the_same_bytes_and_is_answered_with_the_original_offsets(tmp_path, clock):
    with make_cluster(tmp_path, clock) as cluster:
        spy = SpyCluster(cluster)
        producer = IdempotentProducer(cluster, network=LoseResponses(1, 2), clock=clock)
        producer.init()
        run(producer, values(4))
        assert [spy.requests.count(batch.data) for batch in producer.batches] == [1, 2, 2, 1]
        assert len(spy.requests) == 6  # nothing but the four batches' bytes
        first, retry = producer.batches[1], producer.batches[2]
        assert first.acknowledged and first.duplicate and (first.base_offset, first.last_offset) == (1, 1)
        assert retry.duplicate and (retry.base_offset, retry.last_offset) == (2, 2)
        assert producer.stats.duplicates == 2 and producer.stats.lost_responses == 2
        assert [r.value for r in cluster.consume()] == values(4)


@pytest.mark.parametrize("seed", range(4))
def test_every_attempt_of_a_batch_sends_identical_bytes(tmp_path, clock, seed):
    with make_cluster(tmp_path, clock) as cluster:
        spy = SpyCluster(cluster)
        network = Network(seed, drop_request=0.2, drop_response=0.3)
        producer = IdempotentProducer(cluster, network=network, batch_records=2, clock=clock)
        producer.init()
        run(producer, values(40))
        by_sequence = {}
        for data in spy.requests:
            by_sequence.setdefault(int(scan_batches(data)["base_sequence"][0]), set()).add(data)
        assert all(len(copies) == 1 for copies in by_sequence.values())
        assert sorted(by_sequence) == [batch.base_sequence for batch in producer.batches]
        assert max(batch.attempts for batch in producer.batches) > 1


@pytest.mark.parametrize("seed", range(6))
def test_out_of_order_arrival_ends_with_every_record_once_in_order(tmp_path, clock, seed):
    with make_cluster(tmp_path, clock, brokers=3, min_insync_replicas=2) as cluster:
        producer = IdempotentProducer(cluster, network=Network(seed), clock=clock)
        producer.init()
        run(producer, values(60))
        assert producer.fatal_error is None and producer.done
        assert producer.stats.errors["OUT_OF_ORDER_SEQUENCE_NUMBER"] > 0  # the network did reorder
        assert producer.stats.acknowledged_batches == 60
        assert [r.value for r in cluster.consume()] == values(60)


def test_one_request_in_flight_never_arrives_out_of_order(tmp_path, clock):
    with make_cluster(tmp_path, clock) as cluster:
        producer = IdempotentProducer(cluster, max_in_flight=1, network=Network(5, drop_response=0.3), clock=clock)
        producer.init()
        run(producer, values(30))
        assert not producer.stats.errors
        assert producer.stats.retries == producer.stats.lost_responses > 0
        # a retry whose own response is lost is retried again: one duplicate answer per retried batch
        assert producer.stats.duplicates == sum(batch.attempts > 1 for batch in producer.batches)
        assert [r.value for r in cluster.consume()] == values(30)


def test_only_one_request_in_flight_until_the_leader_knows_the_producer(tmp_path, clock):
    """A leader takes any first sequence from an unknown producer: a second request must not overtake."""
    with make_cluster(tmp_path, clock) as cluster:
        producer = IdempotentProducer(cluster, clock=clock)
        producer.init()
        for value in values(5):
            producer.send(value)
        producer.poll()
        producer.poll()  # cannot send batch 1 yet: delivers batch 0
        assert producer.batches[0].acknowledged and len(producer.in_flight) == 0
        for _ in range(4):
            producer.poll()
        assert len(producer.in_flight) == 4


@pytest.mark.parametrize("seed", range(4))
def test_stats_add_up(tmp_path, clock, seed):
    with make_cluster(tmp_path, clock) as cluster:
        network = Network(seed, drop_request=0.15, drop_response=0.25)
        producer = IdempotentProducer(cluster, network=network, batch_records=2, clock=clock)
        producer.init()
        run(producer, values(51))
        stats = producer.stats
        assert stats.records_sent == stats.acknowledged_records == 51
        assert stats.batches_sent == stats.acknowledged_batches == 26
        assert stats.requests == stats.batches_sent + stats.retries
        answered = stats.acknowledged_batches + sum(stats.errors.values())
        assert stats.requests == stats.lost_requests + stats.lost_responses + answered
        assert stats.retries == stats.lost_requests + stats.lost_responses + sum(stats.errors.values())
        assert stats.duplicates == sum(batch.duplicate for batch in producer.batches)
        assert 0 < stats.duplicates <= stats.lost_responses
        assert stats.lost_requests > 0
        assert [r.value for r in cluster.consume()] == values(51)


def test_the_same_seed_gives_the_same_run(tmp_path):
    def one(path):
        clock = tick_clock()
        with make_cluster(path, clock) as cluster:
            producer = IdempotentProducer(cluster, network=Network(9, drop_request=0.1, drop_response=0.2), clock=clock)
            producer.init()
            run(producer, values(30))
            return producer.stats, [(b.attempts, b.base_offset, b.duplicate) for b in producer.batches]

    assert one(tmp_path / "a") == one(tmp_path / "b")


def test_without_idempotence_a_lost_response_stores_the_batch_twice(tmp_path, clock):
    with make_cluster(tmp_path, clock) as cluster:
        producer = IdempotentProducer(cluster, network=LoseResponses(1, 3), clock=clock, enable_idempotence=False)
        assert producer.init() == (-1, -1)
        run(producer, values(5))
        assert scan_batches(producer.batches[0].data)["producer_id"][0] == -1
        stored = [r.value for r in cluster.consume()]
        # written, response lost, written again behind the others: duplicated and reordered
        assert stored == [b"v-0000", b"v-0001", b"v-0002", b"v-0003", b"v-0004", b"v-0001", b"v-0003"]
        assert producer.stats.duplicates == 0


# -- leader changes and errors ----------------------------------------------------------------------


def test_requests_in_flight_to_a_failed_leader_are_retried_on_the_new_one(tmp_path, clock):
    with make_cluster(tmp_path, clock, brokers=3, min_insync_replicas=2) as cluster:
        producer = IdempotentProducer(cluster, network=Network(0, reorder=False), clock=clock)
        producer.init()
        run(producer, values(1))
        for value in values(5, b"w"):
            producer.send(value)
        for _ in range(5):
            producer.poll()
        assert len(producer.in_flight) == 5
        cluster.stop_broker(0)  # a crash: the connections to it break
        cluster.start_broker(0)  # back, but a follower now
        producer.flush()
        assert producer.stats.errors["NOT_LEADER_OR_FOLLOWER"] >= 1
        assert [r.value for r in cluster.consume()] == values(1) + values(5, b"w")
        assert producer.batches[1].responses[0].error.error_name == "NOT_LEADER_OR_FOLLOWER"

        for value in values(3, b"x"):
            producer.send(value)
        for _ in range(3):
            producer.poll()
        cluster.stop_broker(cluster.leader_id)
        producer.flush()
        assert producer.stats.errors["NETWORK_EXCEPTION"] >= 1
        assert [r.value for r in cluster.consume()][-3:] == values(3, b"x")


def test_not_enough_replicas_is_retried_until_the_replicas_are_back(tmp_path, clock):
    with make_cluster(tmp_path, clock, brokers=3, min_insync_replicas=2) as cluster:
        producer = IdempotentProducer(cluster, clock=clock)
        producer.init()
        cluster.stop_broker(1)
        cluster.stop_broker(2)
        producer.send(b"click")
        with pytest.raises(TimeoutError, match="NOT_ENOUGH_REPLICAS x"):
            producer.flush(max_polls=20)
        cluster.start_broker(2)
        producer.flush()
        assert producer.batches[0].acknowledged and producer.stats.retries >= 9
        assert [r.value for r in cluster.consume()] == [b"click"]


def test_out_of_order_for_the_next_batch_is_a_gap_and_stops_the_producer(tmp_path, clock):
    with make_cluster(tmp_path, clock) as cluster:
        producer = IdempotentProducer(cluster, clock=clock)
        producer.init()
        run(producer, values(2))
        producer._next_sequence = 10  # sequences 2-9 lost, as an unclean election loses them
        run(producer, values(2, b"w"))
        assert isinstance(producer.fatal_error, OutOfOrderSequenceError)
        assert producer.batches[2].error is producer.fatal_error and not producer.batches[2].acknowledged
        assert producer.done and producer.unacknowledged_values() == values(2, b"w")
        with pytest.raises(OutOfOrderSequenceError):
            producer.send(b"more")
        assert producer.poll() is False
        producer.flush()  # returns: the producer has stopped
        assert [r.value for r in cluster.consume()] == values(2)


# -- max_in_flight versus the window ----------------------------------------------------------------


def test_six_in_flight_with_a_window_of_five_no_longer_recognise_a_retry(tmp_path):
    overflow = window_overflow_example(tmp_path / "six", max_in_flight=6, window=5)
    assert not overflow.recognised
    assert overflow.retry_response.error.error_name == "OUT_OF_ORDER_SEQUENCE_NUMBER"
    assert isinstance(overflow.producer_error, OutOfOrderSequenceError)
    assert overflow.copies == 1  # it was written once: the "gap" is not real
    assert overflow == window_overflow_example(tmp_path / "again", max_in_flight=6, window=5)._replace(
        retry_response=overflow.retry_response, producer_error=overflow.producer_error
    )


@pytest.mark.parametrize(("max_in_flight", "window"), [(5, 5), (6, 6), (1, 1), (3, 5)])
def test_in_flight_within_the_window_recognise_the_retry(tmp_path, max_in_flight, window):
    overflow = window_overflow_example(tmp_path, max_in_flight=max_in_flight, window=window)
    assert overflow.recognised and overflow.producer_error is None
    assert overflow.retry_response == ProduceResponse(None, 1, 1, True, 0, 0)
    assert (overflow.base_offset, overflow.copies) == (1, 1)


# -- transactions and fencing -----------------------------------------------------------------------


def test_a_new_instance_with_the_same_transactional_id_fences_the_old_one(tmp_path, clock):
    with make_cluster(tmp_path, clock, brokers=3, min_insync_replicas=2) as cluster:
        old = IdempotentProducer(cluster, transactional_id="clicks", clock=clock)
        assert old.init() == (1000, 0)
        old.begin_transaction()
        run(old, values(3, b"old"))  # written, never committed
        new = IdempotentProducer(cluster, transactional_id="clicks", clock=clock)
        assert new.init() == (1000, 1)  # same id, bumped epoch: the old transaction is aborted
        new.begin_transaction()
        run(new, values(3, b"new"))
        new.commit_transaction()

        old.send(b"zombie")
        with pytest.raises(InvalidProducerEpochError):
            old.commit_transaction()  # its batch reaches the partition with epoch 0
        assert isinstance(old.fatal_error, InvalidProducerEpochError)
        assert [r.value for r in cluster.consume(isolation="read_committed")] == values(3, b"new")
        assert len(cluster.consume()) == 6  # the aborted records are in the log

        stale = IdempotentProducer(cluster, transactional_id="clicks", clock=clock)
        stale.init()  # epoch 2
        with pytest.raises(ProducerFencedError):
            new.begin_transaction()
        with pytest.raises(ProducerFencedError):
            new.send(b"after")


def test_abort_transaction_hides_its_records(tmp_path, clock):
    with make_cluster(tmp_path, clock) as cluster:
        producer = IdempotentProducer(cluster, transactional_id="t", clock=clock)
        producer.init()
        producer.begin_transaction()
        run(producer, [b"a"])
        producer.abort_transaction()
        producer.begin_transaction()
        run(producer, [b"b"])
        producer.commit_transaction()
        assert [r.value for r in cluster.consume(isolation="read_committed")] == [b"b"]
        assert all(batch.transactional for batch in producer.batches)


# -- arguments and states ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"max_in_flight": 0}, ValueError, "max_in_flight"),
        ({"max_in_flight": True}, TypeError, "max_in_flight"),
        ({"batch_records": 0}, ValueError, "batch_records"),
        ({"batch_records": 1.5}, TypeError, "batch_records"),
        ({"network": "lossy"}, TypeError, "network"),
        ({"clock": 5}, TypeError, "clock"),
        ({"transactional_id": ""}, TypeError, "transactional_id"),
        ({"transactional_id": 7}, TypeError, "transactional_id"),
        ({"enable_idempotence": 1}, TypeError, "enable_idempotence"),
        ({"transactional_id": "t", "enable_idempotence": False}, ValueError, "enable_idempotence"),
    ],
)
def test_bad_producer_arguments_name_themselves(tmp_path, clock, options, error, match):
    with make_cluster(tmp_path, clock) as cluster, pytest.raises(error, match=match):
        IdempotentProducer(cluster, **options)


def test_the_cluster_must_be_a_cluster():
    with pytest.raises(TypeError, match="cluster"):
        IdempotentProducer(object())


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"drop_request": 1.0}, ValueError, "drop_request"),
        ({"drop_response": -0.1}, ValueError, "drop_response"),
        ({"drop_response": "0.1"}, TypeError, "drop_response"),
        ({"drop_request": True}, TypeError, "drop_request"),
        ({"reorder": 1}, TypeError, "reorder"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_network_arguments_name_themselves(options, error, match):
    with pytest.raises(error, match=match):
        Network(**options)


def refuses(error, match, call, *args, **kwargs):
    with pytest.raises(error, match=match):
        call(*args, **kwargs)


def test_calls_in_the_wrong_state_are_runtime_errors(tmp_path, clock):
    with make_cluster(tmp_path, clock) as cluster:
        producer = IdempotentProducer(cluster, clock=clock)
        refuses(RuntimeError, "init", producer.send, b"x")
        refuses(RuntimeError, "init", producer.flush)
        producer.init()
        refuses(RuntimeError, "already", producer.init)
        refuses(TypeError, "value", producer.send, "text")
        refuses(TypeError, "key", producer.send, b"x", key=3)
        refuses(RuntimeError, "transactional_id", producer.begin_transaction)
        refuses(ValueError, "max_polls", producer.flush, max_polls=0)
        transactional = IdempotentProducer(cluster, transactional_id="t", clock=clock)
        transactional.init()
        refuses(RuntimeError, "inside", transactional.send, b"x")
        refuses(RuntimeError, "no transaction", transactional.commit_transaction)
        transactional.begin_transaction()
        refuses(RuntimeError, "already open", transactional.begin_transaction)


def test_send_returns_the_batch_that_will_carry_the_record(tmp_path, clock):
    with make_cluster(tmp_path, clock) as cluster:
        producer = IdempotentProducer(cluster, batch_records=2, clock=clock)
        producer.init()
        first, second, third = (producer.send(value, key=b"user-1") for value in values(3))
        assert first is second is producer.batches[0] and third is producer.batches[1]
        assert isinstance(first, ProducerBatch) and not first.acknowledged
        producer.flush()
        assert (third.base_offset, third.acknowledged) == (2, True)
        assert [r.key for r in cluster.consume()] == [b"user-1"] * 3
        assert "acknowledged" in repr(third) and "producer_id=1000" in repr(producer)
