"""Partitioned topics in ``dedup serve``: CreateTopics, DeleteTopics, Metadata with
auto-creation, per-partition Produce and Fetch, failover by partition, and restarts.

Raw-protocol tests frame requests by hand (kio's types) to reach every error code; the
real-client tests use kafka-python (its admin client and an idempotent keyed producer).
confluent-kafka's ``list_topics()`` for all topics is not used: it sends Metadata v9 with a
tagged field in its header, which the server closes the connection on until KIP-482's
tagged fields are skipped (another branch of issue 14).
"""

from __future__ import annotations

import collections
import datetime
import io
import logging
import os
import socket
import struct

import kafka
import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from dedup.cluster import Cluster
from dedup.server import ServerThread
from dedup.server.topics import REGISTRY_FILE, assign_replicas
from dedup.server.wire import ApiKey, build

TIMEOUT = datetime.timedelta(seconds=5)


def call(server: ServerThread, api_key: int, version: int, body: dict, broker: int = 0):
    """One request to ``broker`` and its parsed response (or None if the connection closed)."""
    schema = load_request_schema(api_key, version)
    buffer = io.BytesIO()
    header = schema.__header_schema__
    entity_writer(header)(buffer, header(request_api_key=api_key, request_api_version=version, correlation_id=7,
                                         client_id="test"))  # fmt: skip
    entity_writer(schema)(buffer, build(schema, body))
    data = buffer.getvalue()
    with socket.create_connection(("127.0.0.1", server.server.ports[broker]), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(data)) + data)
        size = sock.recv(4, socket.MSG_WAITALL)
        if len(size) < 4:
            return None
        payload = sock.recv(struct.unpack(">i", size)[0], socket.MSG_WAITALL)
    response = load_response_schema(api_key, version)
    _, at = entity_reader(response.__header_schema__)(payload, 0)
    return entity_reader(response)(payload, at)[0]


def topic(name, partitions=-1, replication_factor=-1, configs=None):
    return {"name": name, "num_partitions": partitions, "replication_factor": replication_factor, "assignments": [],
            "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()]}  # fmt: skip


def create(server, topics, version=5, validate_only=False):
    body = {"topics": topics, "timeout": TIMEOUT, "validate_only": validate_only}
    return {t.name: t for t in call(server, ApiKey.CREATE_TOPICS, version, body).topics}


def metadata(server, names, version=9, allow=True):
    body = {"topics": None if names is None else [{"name": n} for n in names], "allow_auto_topic_creation": allow,
            "include_topic_authorized_operations": False, "include_cluster_authorized_operations": False}  # fmt: skip
    return {t.name: t for t in call(server, ApiKey.METADATA, version, body).topics}


@pytest.fixture
def server(tmp_path):
    with ServerThread(tmp_path, brokers=3, topics=["clicks"]) as running:
        yield running


# -- CreateTopics ----------------------------------------------------------------------------------


def test_create_topics_assigns_replicas_round_robin_and_answers_v5_fields(server, tmp_path):
    answer = create(server, [topic("six", 6, 3, {"retention.ms": "60000"})])["six"]
    assert (answer.error_code, answer.num_partitions, answer.replication_factor) == (0, 6, 3)
    configs = {c.name: (c.value, c.config_source) for c in answer.configs}
    assert configs["retention.ms"] == ("60000", 1)  # DYNAMIC_TOPIC_CONFIG
    assert configs["min.insync.replicas"] == ("2", 4)  # the server's setting: STATIC_BROKER_CONFIG
    partitions = metadata(server, ["six"])["six"].partitions
    expected = assign_replicas(6, 3, [0, 1, 2])
    assert [list(p.replica_nodes) for p in partitions] == expected
    assert expected[:3] == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]  # AdminUtils, fixedStartIndex 0
    assert [p.leader_id for p in partitions] == [0, 1, 2, 0, 1, 2]  # the preferred replica leads
    for b in range(3):
        assert sorted(os.listdir(tmp_path / f"broker-{b}")) == ["clicks-0"] + [f"six-{p}" for p in range(6)]


@pytest.mark.parametrize(
    ("request_topic", "code"),
    [
        (topic("clicks", 1, 1), 36),  # TOPIC_ALREADY_EXISTS
        (topic("zero", 0, 1), 37),  # INVALID_PARTITIONS
        (topic("negative", -5, 1), 37),
        (topic("past-bound", 1001, 1), 37),  # this server's bound (1,000 partitions over all topics)
        (topic("huge", 100_000, 1), 44),  # POLICY_VIOLATION: Kafka's 10,000 partitions per request
        (topic("rf0", 1, 0), 38),  # INVALID_REPLICATION_FACTOR
        (topic("rf4", 1, 4), 38),  # more than the 3 brokers
        (topic("bad name", 1, 1), 17),  # INVALID_TOPIC_EXCEPTION
        (topic("a/b", 1, 1), 17),
        (topic("..", 1, 1), 17),
        (topic("x" * 250, 1, 1), 17),
        (topic("", 1, 1), 17),
        (topic("click_s", 1, 1), 0),  # no collision with clicks
        (topic("__cluster_metadata", 1, 1), 42),  # INVALID_REQUEST: ControllerApis refuses it
        (topic("cfg", 1, 1, {"no.such.config": "1"}), 40),  # INVALID_CONFIG
        (topic("cfg", 1, 1, {"segment.bytes": "ten"}), 40),
        (topic("cfg", 1, 1, {"cleanup.policy": "compact"}), 40),  # the log does not compact
    ],
)
def test_create_topics_refuses_with_kafkas_error_codes(server, tmp_path, request_topic, code):
    answer = create(server, [request_topic])[request_topic["name"]]
    assert answer.error_code == code, answer.error_message
    if code:
        assert (answer.num_partitions, answer.replication_factor) == (-1, -1)
        assert sorted(os.listdir(tmp_path / "broker-0")) == ["clicks-0"]  # nothing created


def test_create_topics_collision_duplicates_and_validate_only(server, tmp_path):
    create(server, [topic("a.b", 1, 1)])
    assert create(server, [topic("a_b", 1, 1)])["a_b"].error_code == 17  # collides with a.b
    results = call(server, ApiKey.CREATE_TOPICS, 4, {"topics": [topic("twice", 1, 1), topic("twice", 1, 1)],
                                                     "timeout": TIMEOUT, "validate_only": False}).topics  # fmt: skip
    assert [r.error_code for r in results] == [42, 42]  # INVALID_REQUEST: Duplicate topic name.
    checked = create(server, [topic("dry", 4, 2)], validate_only=True)["dry"]
    assert (checked.error_code, checked.num_partitions, checked.replication_factor) == (0, 4, 2)
    assert metadata(server, ["dry"], allow=False)["dry"].error_code == 3  # not created
    assert not any(name.startswith("dry-") for name in os.listdir(tmp_path / "broker-0"))


def test_create_topics_with_kafka_python_admin_and_list_all_topics(server):
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap_servers, request_timeout_ms=10000)
    try:
        admin.create_topics([NewTopic("orders", 6, 3)])
        with pytest.raises(kafka.errors.TopicAlreadyExistsError):
            admin.create_topics([NewTopic("orders", 6, 3)])
        with pytest.raises(kafka.errors.InvalidPartitionsError):
            admin.create_topics([NewTopic("none", 0, 1)])
        assert sorted(admin.list_topics()) == ["clicks", "orders"]  # Metadata for all topics
        [described] = admin.describe_topics(["orders"])
        assert len(described["partitions"]) == 6
    finally:
        admin.close()


# -- DeleteTopics ----------------------------------------------------------------------------------


def test_delete_topics_removes_the_files_from_every_broker(server, tmp_path):
    create(server, [topic("gone", 3, 3)])
    assert all((tmp_path / f"broker-{b}" / "gone-2").is_dir() for b in range(3))
    answer = call(server, ApiKey.DELETE_TOPICS, 5, {"topic_names": ["gone", "never"], "timeout": TIMEOUT})
    assert {r.name: r.error_code for r in answer.responses} == {"gone": 0, "never": 3}
    for b in range(3):
        assert sorted(os.listdir(tmp_path / f"broker-{b}")) == ["clicks-0"]
    assert not [name for name in os.listdir(tmp_path) if "gone" in name]  # the controller's files too
    assert metadata(server, ["gone"], allow=False)["gone"].error_code == 3
    again = create(server, [topic("gone", 1, 1)])["gone"]  # the name is free again
    assert again.error_code == 0


# -- Metadata --------------------------------------------------------------------------------------


def test_metadata_auto_creates_with_num_partitions_and_answers_leader_not_available_first(tmp_path):
    with ServerThread(tmp_path, brokers=3, topics=["clicks"], num_partitions=4) as server:
        first = metadata(server, ["fresh"])["fresh"]
        assert (first.error_code, first.partitions) == (5, ())  # LEADER_NOT_AVAILABLE, as Kafka's
        second = metadata(server, ["fresh"])["fresh"]
        assert second.error_code == 0 and len(second.partitions) == 4
        assert all(len(p.replica_nodes) == 3 for p in second.partitions)  # default.replication.factor
        assert metadata(server, ["not-asked"], allow=False)["not-asked"].error_code == 3  # v4+: the client says no
        assert metadata(server, ["bad name"])["bad name"].error_code == 17
        assert metadata(server, ["__consumer_offsets"])["__consumer_offsets"].error_code == 3  # its coordinator's
        assert set(metadata(server, None)) == {"clicks", "fresh"}  # all topics never creates


def test_metadata_does_not_auto_create_when_disabled(tmp_path):
    with ServerThread(tmp_path, brokers=3, auto_create_topics_enable=False) as server:
        assert metadata(server, ["fresh"])["fresh"].error_code == 3
        assert metadata(server, ["fresh"], version=1)["fresh"].error_code == 3
        assert set(metadata(server, [], version=0)) == {"clicks"}  # v0: an empty list is every topic
        assert set(metadata(server, [], version=1)) == set()  # v1+: an empty list is none


@pytest.mark.parametrize("enabled", [True, False], ids=["auto-create", "disabled"])
def test_librdkafka_producing_to_a_topic_that_does_not_exist(tmp_path, enabled):
    """The issue's symptom: librdkafka waited ``message.timeout.ms`` (5 minutes by default) to
    produce to a topic the server did not have. Its Metadata request creates the topic (Kafka's
    auto.create.topics.enable, num.partitions), and the message is delivered at once; with
    auto-creation off the topic stays unknown and the delivery fails when the message times out
    (librdkafka waits topic.metadata.propagation.max.ms for an unknown topic to appear first)."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    with ServerThread(tmp_path, brokers=3, num_partitions=3, auto_create_topics_enable=enabled) as server:
        producer = confluent_kafka.Producer({"bootstrap.servers": server.bootstrap_servers, "enable.idempotence": True,
                                             "message.timeout.ms": 3000})  # fmt: skip
        outcomes: list[object] = []
        producer.produce("fresh", value=b"v", on_delivery=lambda error, message: outcomes.append(error))
        assert producer.flush(15) == 0
        topics = set(metadata(server, None))
    if enabled:
        assert outcomes == [None] and "fresh" in topics
        with ServerThread(tmp_path) as again:  # the same directory: the topic and its 3 partitions stay
            assert len(metadata(again, ["fresh"], allow=False)["fresh"].partitions) == 3
    else:
        codes = (confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART, confluent_kafka.KafkaError._MSG_TIMED_OUT)
        assert len(outcomes) == 1 and outcomes[0] is not None and outcomes[0].code() in codes
        assert "fresh" not in topics


def test_internal_topics_are_internal_in_metadata(server):
    server.run(lambda: server.server.topics.ensure("__consumer_offsets", 3, live_brokers=[0, 1, 2], internal=True))
    answer = metadata(server, None)
    assert answer["__consumer_offsets"].is_internal and not answer["clicks"].is_internal
    assert len(answer["__consumer_offsets"].partitions) == 3


# -- producing and consuming over partitions -------------------------------------------------------


def produce_keyed(bootstrap: str, topic_name: str, count: int) -> dict[int, list[bytes]]:
    """``count`` keyed values through an idempotent kafka-python producer; what it sent per partition."""
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5,
                                   request_timeout_ms=10000, max_block_ms=20000)  # fmt: skip
    sent: dict[int, list[bytes]] = collections.defaultdict(list)
    try:
        futures = [(producer.send(topic_name, key=b"k%d" % i, value=b"v%04d" % i), b"v%04d" % i) for i in range(count)]
        for future, value in futures:
            sent[future.get(timeout=20).partition].append(value)
    finally:
        producer.close(10)
    return sent


def consume_partition(bootstrap: str, topic_name: str, partition: int) -> list[bytes]:
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                                   consumer_timeout_ms=2000)  # fmt: skip
    try:
        consumer.assign([kafka.TopicPartition(topic_name, partition)])
        return [message.value for message in consumer]
    finally:
        consumer.close()


@pytest.mark.slow
def test_keyed_idempotent_producer_spreads_over_six_partitions_read_back_once_each(tmp_path):
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    with ServerThread(tmp_path, brokers=3, topics=[("clicks", 6)]) as server:
        sent = produce_keyed(server.bootstrap_servers, "clicks", 300)
        assert sorted(sent) == list(range(6))  # the keys reach every partition
        for partition in range(6):
            assert consume_partition(server.bootstrap_servers, "clicks", partition) == sent[partition]
            log = server.run(lambda p=partition: server.server.partition("clicks", p).leader_log)
            assert server.run(lambda log=log: log.high_watermark) == len(sent[partition])  # each stored once


def test_produce_to_partition_two_and_errors_by_partition(tmp_path):
    """Fails on the single-partition server: ``topics=[("clicks", 3)]`` is not accepted there,
    and a produce to partition 2 was UNKNOWN_TOPIC_OR_PARTITION."""
    from dedup.batch import encode_batch

    with ServerThread(tmp_path, brokers=3, topics=[("clicks", 3)]) as server:
        leader = server.run(server.server.leader, "clicks", 2)
        records = encode_batch([b"x"], producer_id=-1, producer_epoch=-1, base_sequence=-1, timestamp=1)

        def produce(partition, broker):
            data = [{"name": "clicks", "partition_data": [{"index": partition, "records": records}]}]
            body = {"transactional_id": None, "acks": -1, "timeout": TIMEOUT, "topic_data": data}
            answer = call(server, ApiKey.PRODUCE, 9, body, broker=broker)
            return answer.responses[0].partition_responses[0]

        assert leader == 2
        assert produce(2, leader).error_code == 0
        assert produce(2, (leader + 1) % 3).error_code == 6  # NOT_LEADER_OR_FOLLOWER
        assert produce(3, leader).error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION: outside the topic
        assert server.run(lambda: server.server.partition("clicks", 2).high_watermark) == 1
        assert server.run(lambda: server.server.partition("clicks", 0).high_watermark) == 0


def test_stopping_one_broker_moves_only_the_partitions_it_led(tmp_path):
    with ServerThread(tmp_path, brokers=3, topics=[("clicks", 6)]) as server:
        partitions = metadata(server, ["clicks"])["clicks"].partitions
        before = {p.partition_index: (p.leader_id, p.leader_epoch) for p in partitions}
        server.stop_broker(1)
        after = {p.partition_index: p for p in metadata(server, ["clicks"])["clicks"].partitions}
        for index, (leader, epoch) in before.items():
            if leader == 1:
                assert after[index].leader_id != 1 and after[index].leader_epoch == epoch + 1
            else:
                assert (after[index].leader_id, after[index].leader_epoch) == (leader, epoch)
            assert list(after[index].offline_replicas) == [1]
            assert 1 not in after[index].isr_nodes
        server.start_broker(1)
        assert all(1 in p.isr_nodes for p in metadata(server, ["clicks"])["clicks"].partitions)


def test_topics_survive_a_restart_on_the_same_directory(tmp_path):
    with ServerThread(tmp_path, brokers=3, topics=["clicks"]) as server:
        create(server, [topic("six", 6, 2, {"retention.ms": "60000"})])
        create(server, [topic("gone", 2, 1)])
        call(server, ApiKey.DELETE_TOPICS, 4, {"topic_names": ["gone"], "timeout": TIMEOUT})
        before = {p.partition_index: list(p.replica_nodes) for p in metadata(server, ["six"])["six"].partitions}
    assert (tmp_path / REGISTRY_FILE).is_file()
    with ServerThread(tmp_path, brokers=3, topics=["clicks"], auto_create_topics_enable=False) as server:
        answer = metadata(server, None)
        assert set(answer) == {"clicks", "six"}
        assert {p.partition_index: list(p.replica_nodes) for p in answer["six"].partitions} == before
        assert server.run(lambda: server.server.topics.get("six").configs) == {"retention.ms": "60000"}


@pytest.mark.parametrize("value", ["a:0", "a:x", "a:1001", "a:"])
def test_command_line_refuses_a_bad_topic_partition_count(capsys, value):
    from dedup.server.cli import COMMAND, topic_spec

    assert topic_spec("clicks") == "clicks" and topic_spec("clicks:6") == ("clicks", 6)
    with pytest.raises(SystemExit) as exit_info:
        COMMAND.main(["--topic", value, "--exit-after", "0", "--port", "0"])
    assert exit_info.value.code == 2
    assert "argument --topic: expected NAME[:PARTITIONS]" in capsys.readouterr().err


# -- the Cluster under it --------------------------------------------------------------------------


def test_cluster_with_a_subset_of_replicas(tmp_path):
    with Cluster(tmp_path, brokers=3, topic="t", partition=4, replicas=[2, 0], min_insync_replicas=1) as cluster:
        assert cluster.leader_id == 2  # the preferred replica
        assert cluster.broker(2).log.directory == os.path.join(cluster.directory, "broker-2", "t-4")
        assert not (tmp_path / "broker-1").exists()
        with pytest.raises(ValueError, match="holds no replica"):
            cluster.stop_broker(1)
        cluster.stop_broker(2)
        assert cluster.leader_id == 0
        assert (tmp_path / "controller-leader-epoch-t-4").is_file()
