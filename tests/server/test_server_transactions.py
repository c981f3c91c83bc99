"""Transactions over the wire (issue 15, items 1 and 2): librdkafka and aiokafka transactional
producers commit and abort against ``ServerThread`` and the COMMIT/ABORT control batches land in
every partition of the transaction; a second instance with the same ``transactional.id`` fences
the first; a transaction left open past ``transaction.timeout.ms`` is aborted by the server's
timer with the epoch bumped; a ``serve`` killed with SIGKILL while a transaction is in
PrepareCommit completes it on restart; ``send_offsets_to_transaction`` commits a consumer
group's offsets with the transaction (and an abort leaves them); and the bad requests of the
issue's "Done when" get Kafka's error codes with nothing applied. Requests framed by hand
(kio's types) reach each error exactly.

The librdkafka runs and the subprocess are slow; the fast set keeps the hand-framed requests
and one librdkafka commit and abort (:func:`test_commit_and_abort_write_control_batches_on_every_partition`).
"""

from __future__ import annotations

import asyncio
import datetime
import io
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import NamedTuple

import java_client
import pytest
from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

from dedup.cluster import _is_commit
from dedup.coordinator.transaction_log import TransactionLogValue
from dedup.coordinator.transaction_metadata import TransactionState
from dedup.records import scan_batches
from dedup.server import ServerThread
from dedup.server.wire import ApiKey, build

confluent_kafka = pytest.importorskip("confluent_kafka")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPIC = "clicks"
TXN_PARTITIONS = 3
MINUTE = datetime.timedelta(minutes=1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerThread(tmp_path_factory.mktemp("serve"), brokers=3, topics=[(TOPIC, 2), ("billed", 1)],
                      transaction_state_log_num_partitions=TXN_PARTITIONS, offsets_topic_num_partitions=3,
                      group_initial_rebalance_delay_ms=0) as running:  # fmt: skip
        yield running


# --- hand-framed requests --------------------------------------------------------------------------------


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


def call(server: ServerThread, broker: int, api_key: int, version: int, body: dict):
    """One request to ``broker`` on a new connection; the parsed response."""
    schema = load_request_schema(api_key, version)
    buffer = io.BytesIO()
    header = schema.__header_schema__
    entity_writer(header)(buffer, header(request_api_key=api_key, request_api_version=version, correlation_id=7,
                                         client_id="wire"))  # fmt: skip
    entity_writer(schema)(buffer, build(schema, body))
    data = buffer.getvalue()
    with socket.create_connection(("127.0.0.1", server.server.ports[broker]), timeout=15) as sock:
        sock.sendall(struct.pack(">i", len(data)) + data)
        frame = _exactly(sock, struct.unpack(">i", _exactly(sock, 4))[0])
    response_schema = load_response_schema(api_key, version)
    head, used = entity_reader(response_schema.__header_schema__)(frame, 0)
    response, rest = entity_reader(response_schema)(frame, used)
    assert head.correlation_id == 7 and used + rest == len(frame)
    return response


def coordinator(server: ServerThread, key: str, key_type: int = 1) -> int:
    response = call(server, 0, ApiKey.FIND_COORDINATOR, 3, {"key": key, "key_type": key_type})
    assert response.error_code == ErrorCode.none
    return int(response.node_id)


def init(server: ServerThread, tid: str, version: int = 4, timeout: datetime.timedelta = MINUTE, **extra):
    """InitProducerId for ``tid`` at its coordinator, retried while the coordinator loads (14)."""
    for _ in range(50):
        response = call(server, coordinator(server, tid), ApiKey.INIT_PRODUCER_ID, version,
                        {"transactional_id": tid, "transaction_timeout": timeout, **extra})  # fmt: skip
        if response.error_code not in (ErrorCode.coordinator_load_in_progress, ErrorCode.concurrent_transactions):
            return response
        time.sleep(0.05)
    raise AssertionError(f"InitProducerId for {tid} kept answering {response.error_code}")


def add_partitions(server, tid, pid, epoch, partitions, version=3):
    body = {"v3_and_below_transactional_id": tid, "v3_and_below_producer_id": pid,
            "v3_and_below_producer_epoch": epoch,
            "v3_and_below_topics": [{"name": TOPIC, "partitions": list(partitions)}]}  # fmt: skip
    response = call(server, coordinator(server, tid), ApiKey.ADD_PARTITIONS_TO_TXN, version, body)
    return {r.partition_index: r.partition_error_code for t in response.results_by_topic_v3_and_below
            for r in t.results_by_partition}  # fmt: skip


class Described(NamedTuple):
    error_code: int
    transactional_id: str
    transaction_state: str
    transaction_timeout_ms: int
    transaction_start_time_ms: int
    producer_id: int
    producer_epoch: int
    topics: list[tuple[str, list[int]]]


def describe(server, tid) -> Described:
    """DescribeTransactions v0 for ``tid`` at its coordinator, the response read by hand: kio's
    reader refuses the start time -1 that Kafka answers for a transaction not started."""
    schema = load_request_schema(ApiKey.DESCRIBE_TRANSACTIONS, 0)
    buffer = io.BytesIO()
    entity_writer(schema.__header_schema__)(buffer, schema.__header_schema__(
        request_api_key=ApiKey.DESCRIBE_TRANSACTIONS, request_api_version=0, correlation_id=7, client_id="wire"))
    entity_writer(schema)(buffer, build(schema, {"transactional_ids": [tid]}))  # fmt: skip
    data = buffer.getvalue()
    broker = coordinator(server, tid)
    with socket.create_connection(("127.0.0.1", server.server.ports[broker]), timeout=15) as sock:
        sock.sendall(struct.pack(">i", len(data)) + data)
        frame = _exactly(sock, struct.unpack(">i", _exactly(sock, 4))[0])
    reader = _Flexible(frame)
    assert reader.fixed(">i") == 7  # correlation id
    reader.tags()
    reader.fixed(">i")  # throttle time
    [state] = [reader.state() for _ in range(reader.varint() - 1)]
    reader.tags()
    assert reader.at == len(frame)
    return state


class _Flexible:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def fixed(self, layout: str) -> int:
        value = struct.unpack_from(layout, self.data, self.at)[0]
        self.at += struct.calcsize(layout)
        return int(value)

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def string(self) -> str:
        length = self.varint() - 1
        self.at += length
        return self.data[self.at - length : self.at].decode()

    def tags(self) -> None:
        for _ in range(self.varint()):
            self.varint()
            self.at += self.varint()

    def state(self) -> Described:
        error, tid, state = self.fixed(">h"), self.string(), self.string()
        timeout, start, pid, epoch = self.fixed(">i"), self.fixed(">q"), self.fixed(">q"), self.fixed(">h")
        topics = []
        for _ in range(self.varint() - 1):
            topic = self.string()
            topics.append((topic, [self.fixed(">i") for _ in range(self.varint() - 1)]))
            self.tags()
        self.tags()
        return Described(error, tid, state, timeout, start, pid, epoch, topics)


def txn_offset_commit(server, tid, pid, epoch, group, offset, version=3):
    body = {"transactional_id": tid, "group_id": group, "producer_id": pid, "producer_epoch": epoch,
            "generation_id": -1, "member_id": "", "group_instance_id": None,
            "topics": [{"name": TOPIC, "partitions": [{"partition_index": 0, "committed_offset": offset,
                                                       "committed_leader_epoch": -1, "committed_metadata": ""}]}]}
    response = call(server, coordinator(server, group, 0), ApiKey.TXN_OFFSET_COMMIT, version, body)  # fmt: skip
    return response.topics[0].partitions[0].error_code


def fetch_offset(server, group, require_stable=False):
    body = {"group_id": group, "topics": [{"name": TOPIC, "partition_indexes": [0]}], "require_stable": require_stable}
    response = call(server, coordinator(server, group, 0), ApiKey.OFFSET_FETCH, 7, body)
    partition = response.topics[0].partitions[0]
    return partition.error_code, partition.committed_offset


def end_txn(server, tid, pid, epoch, committed, version=3):
    """EndTxn at ``tid``'s coordinator, retried while it loads (after a failover)."""
    body = {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "committed": committed}
    for _ in range(50):
        error = call(server, coordinator(server, tid), ApiKey.END_TXN, version, body).error_code
        if error != ErrorCode.coordinator_load_in_progress:
            return error
        time.sleep(0.05)
    return error


def control_batches(server: ServerThread, topic: str = TOPIC, partition: int = 0) -> list[tuple[bool, int, int]]:
    """(commit, producer id, epoch) of each control batch in the partition's leader log."""

    def scan() -> list[tuple[bool, int, int]]:
        log = server.server.partition(topic, partition).leader_log
        data = log.read(log.log_start_offset, 1 << 20, max_offset=log.high_watermark)
        return _controls(data)

    return server.run(scan)  # type: ignore[no-any-return]


def _controls(data: bytes) -> list[tuple[bool, int, int]]:
    out = []
    for header in scan_batches(data) if data else []:
        if header["is_control"]:
            start = int(header["position"])
            batch = memoryview(data)[start : start + int(header["batch_length"]) + 12]
            out.append((_is_commit(batch), int(header["producer_id"]), int(header["producer_epoch"])))
    return out


# --- the bad input: Kafka's code, nothing applied ---------------------------------------------------


def test_end_txn_for_an_unknown_transactional_id_is_invalid_producer_id_mapping(server):
    assert end_txn(server, "never-initialised", 1000, 0, True) == ErrorCode.invalid_producer_id_mapping
    assert describe(server, "never-initialised").error_code == ErrorCode.transactional_id_not_found


def test_a_transaction_timeout_over_the_maximum_is_invalid_transaction_timeout(server):
    response = init(server, "too-long", timeout=datetime.timedelta(milliseconds=900_001))
    assert (response.error_code, response.producer_id) == (ErrorCode.invalid_transaction_timeout, -1)
    assert describe(server, "too-long").error_code == ErrorCode.transactional_id_not_found  # nothing created
    assert init(server, "too-long", timeout=datetime.timedelta(milliseconds=900_000)).error_code == ErrorCode.none


@pytest.mark.parametrize(("version", "code"), [(1, ErrorCode.invalid_producer_epoch), (3, ErrorCode.producer_fenced)])
def test_add_partitions_with_a_stale_epoch_is_fenced_and_adds_nothing(server, version, code):
    tid = f"stale-{version}"
    first = init(server, tid)
    second = init(server, tid)
    assert (second.producer_id, second.producer_epoch) == (first.producer_id, first.producer_epoch + 1)
    assert add_partitions(server, tid, first.producer_id, first.producer_epoch, [0, 1], version) == {0: code, 1: code}
    state = describe(server, tid)
    assert (state.transaction_state, state.topics, state.transaction_start_time_ms) == ("Empty", [], -1)


def test_txn_offset_commit_for_a_group_the_transaction_did_not_add_is_invalid_txn_state(server):
    tid, group = "no-group", "group-not-added"
    producer = init(server, tid)
    assert add_partitions(server, tid, producer.producer_id, producer.producer_epoch, [0]) == {0: ErrorCode.none}
    error = txn_offset_commit(server, tid, producer.producer_id, producer.producer_epoch, group, 42)
    assert error == ErrorCode.invalid_txn_state
    assert fetch_offset(server, group, require_stable=True) == (ErrorCode.none, -1)  # nothing pending either
    assert end_txn(server, tid, producer.producer_id, producer.producer_epoch, True) == ErrorCode.none
    assert fetch_offset(server, group) == (ErrorCode.none, -1)


@pytest.mark.parametrize("commit", [True, False])
def test_transactional_offsets_are_unstable_until_the_marker_then_committed_or_dropped(server, commit):
    tid, group = f"offsets-{commit}", f"group-{commit}"
    p = init(server, tid)
    body = {"transactional_id": tid, "producer_id": p.producer_id, "producer_epoch": p.producer_epoch,
            "group_id": group}  # fmt: skip
    assert call(server, coordinator(server, tid), ApiKey.ADD_OFFSETS_TO_TXN, 3, body).error_code == ErrorCode.none
    assert txn_offset_commit(server, tid, p.producer_id, p.producer_epoch, group, 42) == ErrorCode.none
    assert fetch_offset(server, group, require_stable=True) == (ErrorCode.unstable_offset_commit, -1)  # KIP-447
    assert fetch_offset(server, group) == (ErrorCode.none, -1)
    assert end_txn(server, tid, p.producer_id, p.producer_epoch, commit) == ErrorCode.none
    expected = 42 if commit else -1
    assert fetch_offset(server, group, require_stable=True) == (ErrorCode.none, expected)
    # the marker is in the group's __consumer_offsets partition, as Kafka writes it there
    offsets_partition = server.run(server.server.groups.partition_for, group)
    assert (commit, p.producer_id, p.producer_epoch) in control_batches(server, "__consumer_offsets",
                                                                        offsets_partition)  # fmt: skip


def commit_plain(server, group, offset):
    body = {"group_id": group, "generation_id_or_member_epoch": -1, "generation_id": -1, "member_id": "",
            "group_instance_id": None, "topics": [{"name": TOPIC, "partitions": [
                {"partition_index": 0, "committed_offset": offset, "committed_leader_epoch": -1,
                 "committed_metadata": ""}]}]}  # fmt: skip
    response = call(server, coordinator(server, group, 0), ApiKey.OFFSET_COMMIT, 8, body)
    return response.topics[0].partitions[0].error_code


def test_a_plain_commit_after_the_transactional_one_wins_when_the_marker_comes(server):
    # Kafka's GroupMetadata.completePendingTxnOffsetCommit keeps the offset whose record is later in the log.
    tid, group = "ordering", "group-ordering"
    p = init(server, tid)
    body = {"transactional_id": tid, "producer_id": p.producer_id, "producer_epoch": p.producer_epoch,
            "group_id": group}  # fmt: skip
    assert call(server, coordinator(server, tid), ApiKey.ADD_OFFSETS_TO_TXN, 3, body).error_code == ErrorCode.none
    assert txn_offset_commit(server, tid, p.producer_id, p.producer_epoch, group, 42) == ErrorCode.none
    assert commit_plain(server, group, 50) == ErrorCode.none
    assert end_txn(server, tid, p.producer_id, p.producer_epoch, True) == ErrorCode.none
    assert fetch_offset(server, group) == (ErrorCode.none, 50)


def test_pending_transactional_offsets_survive_a_reload_of_the_group(tmp_path):
    with ServerThread(tmp_path, brokers=3, topics=[(TOPIC, 2)], transaction_state_log_num_partitions=TXN_PARTITIONS,
                      offsets_topic_num_partitions=3) as running:  # fmt: skip
        tid, group = "reloaded", "group-reloaded"
        p = init(running, tid)
        body = {"transactional_id": tid, "producer_id": p.producer_id, "producer_epoch": p.producer_epoch,
                "group_id": group}  # fmt: skip
        assert call(running, coordinator(running, tid), ApiKey.ADD_OFFSETS_TO_TXN, 3, body).error_code == 0
        assert commit_plain(running, group, 7) == ErrorCode.none
        assert txn_offset_commit(running, tid, p.producer_id, p.producer_epoch, group, 42) == ErrorCode.none
        # The group's coordinator moves: the new leader replays __consumer_offsets (a pending offset stays pending).
        leader = running.run(running.server.groups.coordinator_id, group)
        running.stop_broker(leader)
        assert fetch_offset(running, group, require_stable=True) == (ErrorCode.unstable_offset_commit, -1)
        assert fetch_offset(running, group) == (ErrorCode.none, 7)
        assert end_txn(running, tid, p.producer_id, p.producer_epoch, True) == ErrorCode.none
        assert fetch_offset(running, group, require_stable=True) == (ErrorCode.none, 42)


def test_describe_and_list_transactions_over_the_wire(server):
    p = init(server, "listed")
    assert add_partitions(server, "listed", p.producer_id, p.producer_epoch, [1]) == {1: ErrorCode.none}
    state = describe(server, "listed")
    assert (state.error_code, state.transaction_state, state.producer_id) == (0, "Ongoing", p.producer_id)
    assert state.topics == [(TOPIC, [1])]
    found = []
    for broker in range(3):
        response = call(server, broker, ApiKey.LIST_TRANSACTIONS, 1,
                        {"state_filters": ["Ongoing"], "producer_id_filters": [p.producer_id], "duration_filter": -1})
        assert response.error_code == ErrorCode.none
        found += [(s.transactional_id, s.transaction_state) for s in response.transaction_states]
    assert found == [("listed", "Ongoing")]
    assert end_txn(server, "listed", p.producer_id, p.producer_epoch, False) == ErrorCode.none


def test_a_transaction_left_open_past_its_timeout_is_aborted_and_its_producer_fenced(tmp_path):
    # The server's own timer (the event loop's), not a manual clock: the abort runs every 100 ms here.
    with ServerThread(tmp_path, brokers=3, topics=[(TOPIC, 2)], transaction_state_log_num_partitions=TXN_PARTITIONS,
                      transaction_abort_timed_out_transaction_cleanup_interval_ms=100) as running:  # fmt: skip
        p = init(running, "slow", timeout=datetime.timedelta(milliseconds=300))
        assert add_partitions(running, "slow", p.producer_id, 0, [0, 1]) == {0: ErrorCode.none, 1: ErrorCode.none}
        deadline = time.monotonic() + 20
        while describe(running, "slow").transaction_state != "CompleteAbort" and time.monotonic() < deadline:
            time.sleep(0.05)
        state = describe(running, "slow")
        assert (state.transaction_state, state.producer_epoch) == ("CompleteAbort", 1)
        assert [control_batches(running, TOPIC, i) for i in (0, 1)] == [[(False, p.producer_id, 1)]] * 2
        assert end_txn(running, "slow", p.producer_id, 0, True) == ErrorCode.producer_fenced
        assert end_txn(running, "slow", p.producer_id, 0, True, version=1) == ErrorCode.invalid_producer_epoch


# --- librdkafka and aiokafka -----------------------------------------------------------------------------------


def producer(server: ServerThread, tid: str, **extra) -> confluent_kafka.Producer:
    p = confluent_kafka.Producer({"bootstrap.servers": server.bootstrap_servers, "transactional.id": tid,
                                  "linger.ms": 0, **extra})  # fmt: skip
    p.init_transactions(30)
    return p


def test_commit_and_abort_write_control_batches_on_every_partition(server):
    p = producer(server, "librdkafka-commit")
    try:
        before = [control_batches(server, TOPIC, i) for i in (0, 1)]
        p.begin_transaction()
        for i in range(10):
            p.produce(TOPIC, value=b"committed-%d" % i, partition=i % 2)
        p.commit_transaction(30)
        p.begin_transaction()
        for i in range(4):
            p.produce(TOPIC, value=b"aborted-%d" % i, partition=i % 2)
        p.flush(30)  # sent, so the partitions are in the transaction (librdkafka skips EndTxn for none)
        p.abort_transaction(30)
    finally:
        p.flush(5)
    state = describe(server, "librdkafka-commit")
    assert state.transaction_state == "CompleteAbort"
    for i in (0, 1):
        added = control_batches(server, TOPIC, i)[len(before[i]):]
        assert added == [(True, state.producer_id, 0), (False, state.producer_id, 0)]


@pytest.mark.slow
def test_aiokafka_commits_and_aborts_with_the_old_versions_of_the_apis(server):
    aiokafka = pytest.importorskip("aiokafka")
    before = [control_batches(server, TOPIC, i) for i in (0, 1)]

    async def run() -> None:
        p = aiokafka.AIOKafkaProducer(bootstrap_servers=server.bootstrap_servers, transactional_id="aiokafka",
                                      enable_idempotence=True)  # fmt: skip
        await p.start()
        try:
            async with p.transaction():
                await p.send_and_wait(TOPIC, b"committed", partition=0)
                await p.send_and_wait(TOPIC, b"committed", partition=1)
            await p.begin_transaction()
            await p.send_and_wait(TOPIC, b"aborted", partition=0)
            await p.abort_transaction()
        finally:
            await p.stop()

    asyncio.run(asyncio.wait_for(run(), 60))
    state = describe(server, "aiokafka")
    assert state.transaction_state == "CompleteAbort"
    assert control_batches(server, TOPIC, 0)[len(before[0]):] == [(True, state.producer_id, 0),
                                                                   (False, state.producer_id, 0)]  # fmt: skip
    assert control_batches(server, TOPIC, 1)[len(before[1]):] == [(True, state.producer_id, 0)]


@pytest.mark.slow
def test_java_kafka_clients_commits_and_aborts(server):
    """kafka-clients 4.x (InitProducerId v5, AddPartitionsToTxn v3, EndTxn v4); skipped with the
    reason where no JVM can be had."""
    before = [control_batches(server, TOPIC, i) for i in (0, 1)]
    result = java_client.start("produce-transactional", server.bootstrap_servers, TOPIC, "--count", "6",
                               "--transactional-id", "java", "--timeout-s", "60").result(120)  # fmt: skip
    assert result["errors"] == []
    assert sorted({p for p, _ in result["committed"]}) == sorted({p for p, _ in result["aborted"]}) == [0, 1]
    state = describe(server, "java")
    assert state.transaction_state == "CompleteAbort"
    for i in (0, 1):
        assert control_batches(server, TOPIC, i)[len(before[i]):] == [(True, state.producer_id, 0),
                                                                       (False, state.producer_id, 0)]  # fmt: skip


@pytest.mark.slow
def test_a_zombie_is_fenced_on_its_next_commit_and_writes_nothing_after(server):
    tid = "zombie"
    old = producer(server, tid)
    old.begin_transaction()
    old.produce(TOPIC, value=b"zombie-before", partition=0)
    old.flush(30)
    new = producer(server, tid)  # fences the old instance: its open transaction is aborted with a bumped epoch
    new.begin_transaction()
    new.produce(TOPIC, value=b"new", partition=0)
    new.commit_transaction(30)
    with pytest.raises(confluent_kafka.KafkaException) as raised:
        old.produce(TOPIC, value=b"zombie-after", partition=0)
        old.commit_transaction(30)
    assert raised.value.args[0].fatal()
    fenced = (confluent_kafka.KafkaError._FENCED, confluent_kafka.KafkaError.PRODUCER_FENCED)
    assert raised.value.args[0].code() in fenced
    state = describe(server, tid)
    assert (state.transaction_state, state.producer_epoch) == ("CompleteCommit", 2)

    def values_of_zombie() -> list[bytes | None]:
        cluster = server.server.partition(TOPIC, 0)
        return [r.value for r in cluster.consume() if r.value is not None and r.value.startswith(b"zombie")]

    assert server.run(values_of_zombie) == [b"zombie-before"]
    assert control_batches(server)[-2:] == [(False, state.producer_id, 1), (True, state.producer_id, 2)]


@pytest.mark.slow
def test_send_offsets_to_transaction_commits_a_groups_offsets_with_the_transaction(server):
    source = "offsets-source"
    call(server, 0, ApiKey.CREATE_TOPICS, 4, {"topics": [{"name": source, "num_partitions": 1,
                                                          "replication_factor": -1, "assignments": [],
                                                          "configs": []}],
                                              "timeout": MINUTE, "validate_only": False})  # fmt: skip
    plain = confluent_kafka.Producer({"bootstrap.servers": server.bootstrap_servers})
    for i in range(20):
        plain.produce(source, value=b"in-%d" % i)
    assert plain.flush(30) == 0
    group = "billing"
    consumer = confluent_kafka.Consumer({"bootstrap.servers": server.bootstrap_servers, "group.id": group,
                                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                         "isolation.level": "read_uncommitted"})  # fmt: skip
    p = producer(server, "consume-transform-produce")
    try:
        consumer.subscribe([source])
        got: list = []
        deadline = time.monotonic() + 60
        while len(got) < 10 and time.monotonic() < deadline:
            got += [m for m in consumer.consume(10 - len(got), 1.0) if m.error() is None]
        assert len(got) == 10
        p.begin_transaction()
        for message in got:
            p.produce("billed", value=b"billed-" + message.value())
        positions = [confluent_kafka.TopicPartition(source, 0, got[-1].offset() + 1)]
        p.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        [committed] = consumer.committed([confluent_kafka.TopicPartition(source, 0)], 30)
        assert committed.offset == 10
        p.begin_transaction()
        p.produce("billed", value=b"never")
        p.send_offsets_to_transaction([confluent_kafka.TopicPartition(source, 0, 20)],
                                      consumer.consumer_group_metadata(), 30)  # fmt: skip
        p.abort_transaction(30)
        [committed] = consumer.committed([confluent_kafka.TopicPartition(source, 0)], 30)
        assert committed.offset == 10  # the aborted transaction's offsets are dropped
    finally:
        consumer.close()
        p.flush(5)


# --- a serve killed in PrepareCommit ----------------------------------------------------------------------------


def start_serve(directory: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "dedup", "serve", "--port", "0", "--dir", directory, "--topic", f"{TOPIC}:2",
         "--override", f"transaction.state.log.num.partitions={TXN_PARTITIONS}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 60)
    line = process.stdout.readline() if ready else ""
    match = re.fullmatch(r"bootstrap\.servers=(\S+)\n", line)
    if match is None:
        process.kill()
        process.wait(30)
        pytest.fail(f"serve did not start: {line!r}")
    return process, match.group(1)


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(30)


@pytest.mark.slow
def test_serve_killed_in_prepare_commit_completes_the_transaction_on_restart(tmp_path):
    directory = str(tmp_path / "serve")
    process, bootstrap = start_serve(directory)
    try:
        p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "transactional.id": "crash", "linger.ms": 0,
                                      "log_level": 0})  # abandoned in doubt: its reconnections are noise
        p.init_transactions(30)
        p.begin_transaction()
        for i in range(6):
            p.produce(TOPIC, value=b"in-doubt-%d" % i, partition=i % 2)
        assert p.flush(30) == 0  # on both partitions, which are in the transaction
    finally:
        kill(process)

    # The coordinator logged PrepareCommit and died before any marker: that record, written into
    # __transaction_state as the coordinator writes it (the state a SIGKILL between the two leaves).
    def prepare_commit(running: ServerThread) -> int:
        coordinator = running.server.transactions
        metadata = coordinator.transactions["crash"]
        assert metadata.state is TransactionState.ONGOING
        transit = metadata.prepare_abort_or_commit(TransactionState.PREPARE_COMMIT, coordinator.clock())
        metadata.complete_transition_to(transit)
        assert coordinator.log.append("crash", TransactionLogValue.of(metadata)) == ErrorCode.none
        return metadata.producer_id

    with ServerThread(directory, brokers=3, topics=[(TOPIC, 2)],
                      transaction_state_log_num_partitions=TXN_PARTITIONS) as offline:  # fmt: skip
        time.sleep(0.2)  # the loads scheduled at start run
        producer_id = offline.run(prepare_commit, offline)
        assert [control_batches(offline, TOPIC, i) for i in (0, 1)] == [[], []]

    process, bootstrap = start_serve(directory)
    try:
        again = producer_again(bootstrap)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
    with ServerThread(directory, brokers=3, topics=[(TOPIC, 2)],
                      transaction_state_log_num_partitions=TXN_PARTITIONS) as after:  # fmt: skip
        # the in-doubt transaction committed on both partitions, then the new instance's (on partition 0)
        assert control_batches(after, TOPIC, 0) == [(True, producer_id, 0), (True, producer_id, 1)]
        assert control_batches(after, TOPIC, 1) == [(True, producer_id, 0)]
        metadata = after.run(lambda: after.server.transactions.transactions.get("crash"))
        assert metadata is not None and metadata.producer_id == producer_id
    assert again == (producer_id, 1)  # the id kept across the restarts, its epoch bumped once


def producer_again(bootstrap: str) -> tuple[int, int]:
    """The producer id and epoch a new instance of "crash" gets (from its first batch's header)."""
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "transactional.id": "crash", "linger.ms": 0})
    p.init_transactions(30)
    p.begin_transaction()
    delivered: list = []
    p.produce(TOPIC, value=b"after", partition=0, on_delivery=lambda err, msg: delivered.append((err, msg)))
    p.commit_transaction(30)
    [(error, message)] = delivered
    assert error is None
    return _pid_epoch_at(bootstrap, message.offset())


def _pid_epoch_at(bootstrap: str, offset: int) -> tuple[int, int]:
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    body = {"replica_id": -1, "max_wait": datetime.timedelta(0), "min_bytes": 0, "max_bytes": 1 << 20,
            "isolation_level": 0, "session_id": 0, "session_epoch": -1, "forgotten_topics_data": [], "rack_id": "",
            "topics": [{"topic": TOPIC, "partitions": [{"partition": 0, "current_leader_epoch": -1,
                                                        "fetch_offset": offset, "log_start_offset": -1,
                                                        "partition_max_bytes": 1 << 20}]}]}  # fmt: skip
    for broker in range(3):
        schema = load_request_schema(ApiKey.FETCH, 11)
        buffer = io.BytesIO()
        entity_writer(schema.__header_schema__)(buffer, schema.__header_schema__(
            request_api_key=ApiKey.FETCH, request_api_version=11, correlation_id=7, client_id="wire"))  # fmt: skip
        entity_writer(schema)(buffer, build(schema, body))
        data = buffer.getvalue()
        with socket.create_connection((host, int(port) + broker), timeout=15) as sock:
            sock.sendall(struct.pack(">i", len(data)) + data)
            frame = _exactly(sock, struct.unpack(">i", _exactly(sock, 4))[0])
        response_schema = load_response_schema(ApiKey.FETCH, 11)
        _, used = entity_reader(response_schema.__header_schema__)(frame, 0)
        response, _ = entity_reader(response_schema)(frame, used)
        partition = response.responses[0].partitions[0]
        if partition.error_code == ErrorCode.none and partition.records:
            [header] = scan_batches(bytes(partition.records))[:1]
            return int(header["producer_id"]), int(header["producer_epoch"])
    raise AssertionError("no broker served the batch")


# --- the group coordinator crashes during send_offsets_to_transaction ----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("crash", [True, False], ids=["group-coordinator-crashed", "control"])
def test_send_offsets_to_transaction_finds_the_new_group_coordinator_after_a_crash(tmp_path, crash):
    """aiokafka's send_offsets_to_transaction while the broker coordinating the group is down: the
    producer's AddOffsetsToTxn goes to the transaction coordinator (another broker), its
    TxnOffsetCommit finds the group's new coordinator (the __consumer_offsets partition's new
    leader, which loads the group: GroupCoordinator.onElection) and the offsets commit with the
    transaction. The producer has used the old coordinator in an earlier transaction, so it
    finds it gone rather than asking afresh. librdkafka 2.16 can hang here
    (confluentinc/librdkafka#5511, #5456: a coordinator request waits on a decommissioned
    broker), which is why this runs with aiokafka; the control does the same with every broker up."""
    aiokafka = pytest.importorskip("aiokafka")
    group, source = "crash-billing", "crash-source"
    with ServerThread(tmp_path, brokers=3, topics=[(source, 1), ("billed", 1)], transaction_state_log_num_partitions=3,
                      offsets_topic_num_partitions=3, group_initial_rebalance_delay_ms=0) as running:  # fmt: skip
        group_broker = running.run(running.server.groups.coordinator_id, group)
        coordinator_of = running.server.transactions.coordinator_id
        tid = next(f"txn-{i}" for i in range(50) if running.run(coordinator_of, f"txn-{i}") not in (None, group_broker))

        async def run() -> None:
            p = aiokafka.AIOKafkaProducer(bootstrap_servers=running.bootstrap_servers, transactional_id=tid,
                                          enable_idempotence=True)  # fmt: skip
            await p.start()
            try:
                # The first transaction's offsets go to the group's coordinator, which the producer
                # then knows; the second's find it gone.
                for number, offset in enumerate((3, 7)):
                    await p.begin_transaction()
                    await p.send_and_wait("billed", b"billed-%d" % number)
                    if crash and number == 1:
                        running.stop_broker(group_broker)
                    await p.send_offsets_to_transaction({aiokafka.TopicPartition(source, 0): offset}, group)
                    await p.commit_transaction()
            finally:
                await p.stop()

        asyncio.run(asyncio.wait_for(run(), 60))
        now = running.run(running.server.groups.coordinator_id, group)
        assert (now != group_broker) is crash, (group_broker, now)
        assert describe(running, tid).transaction_state == "CompleteCommit"
        consumer = confluent_kafka.Consumer({"bootstrap.servers": running.bootstrap_servers, "group.id": group})
        try:
            [committed] = consumer.committed([confluent_kafka.TopicPartition(source, 0)], 30)
        finally:
            consumer.close()
        assert committed.offset == 7
