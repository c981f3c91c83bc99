"""Every routine request a client sends at start-up, answered (issue 14, item 4): Metadata for
all topics from confluent-kafka, kafka-python and aiokafka; unknown tagged fields (KIP-482) in
request headers and bodies at any depth skipped; ApiVersions naming exactly what is served;
DescribeConfigs (broker and topic) and DescribeCluster from real admin clients and raw frames."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import struct

import pytest
from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from dedup.server import ServerThread
from dedup.server.apis import HANDLERS
from dedup.server.config import BROKER_CONFIGS, TOPIC_CONFIGS
from dedup.server.wire import SUPPORTED_VERSIONS, ApiKey, build

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")
aiokafka = pytest.importorskip("aiokafka")
from confluent_kafka.admin import AdminClient, ConfigResource  # noqa: E402

TOPICS = {"clicks", "views"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with ServerThread(tmp_path_factory.mktemp("routine"), brokers=3, topics=sorted(TOPICS), segment_bytes=1 << 20,
                      min_insync_replicas=1) as running:  # fmt: skip
        yield running


# --- raw frames ------------------------------------------------------------------------------------


def encode(api_key: int, version: int, body: dict, correlation_id: int = 1) -> bytes:
    """A request without its size prefix: header and body, from kio's types."""
    schema = load_request_schema(api_key, version)
    buffer = io.BytesIO()
    header = schema.__header_schema__
    entity_writer(header)(buffer, header(request_api_key=api_key, request_api_version=version,
                                         correlation_id=correlation_id, client_id="routine"))  # fmt: skip
    entity_writer(schema)(buffer, build(schema, body))
    return buffer.getvalue()


def exchange(server: ServerThread, request: bytes, broker: int = 0) -> bytes | None:
    """Send one request; its response frame, or None if the server closed the connection."""
    with socket.create_connection(("127.0.0.1", server.server.ports[broker]), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack_from(">i", data)[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        return data[4:]


def decode(api_key: int, version: int, data: bytes | None):
    assert data is not None, "the server closed the connection"
    schema = load_response_schema(api_key, version)
    header, size = entity_reader(schema.__header_schema__)(data, 0)
    body, _ = entity_reader(schema)(data, size)
    return body


def tagged(*fields: tuple[int, bytes]) -> bytes:
    """A tagged-field section (KIP-482): count, then tag, size and bytes of each (all < 128)."""
    return bytes([len(fields)]) + b"".join(bytes([tag, len(data)]) + data for tag, data in fields)


# --- Metadata for all topics -------------------------------------------------------------------------


def test_confluent_kafka_lists_every_topic(server):
    # librdkafka's all-topics Metadata v9 writes its null topic array in 4 bytes; Kafka reads the
    # extra bytes as booleans and an unknown tagged field (tag 0), and ignores the last one.
    admin = AdminClient({"bootstrap.servers": server.bootstrap_servers})
    metadata = admin.list_topics(timeout=10)
    assert set(metadata.topics) == TOPICS
    assert {broker.id for broker in metadata.brokers.values()} == {0, 1, 2}


def test_kafka_python_lists_every_topic(server):
    consumer = kafka.KafkaConsumer(bootstrap_servers=server.bootstrap_servers, request_timeout_ms=10000)
    try:
        assert consumer.topics() == TOPICS
    finally:
        consumer.close()


def test_aiokafka_lists_every_topic(server):
    async def topics() -> set[str]:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=server.bootstrap_servers, request_timeout_ms=10000)
        await consumer.start()
        try:
            return set(await asyncio.wait_for(consumer.topics(), 10))
        finally:
            await consumer.stop()

    assert asyncio.run(topics()) == TOPICS


# --- KIP-482: unknown tagged fields are skipped ----------------------------------------------------


def test_unknown_tagged_fields_in_the_header_and_at_every_depth_of_the_body_are_skipped(server):
    body = {"topics": [{"name": "clicks"}], "allow_auto_topic_creation": False,
            "include_cluster_authorized_operations": False, "include_topic_authorized_operations": False}  # fmt: skip
    plain = encode(ApiKey.METADATA, 9, body, correlation_id=9)
    header_end = 2 + 2 + 4 + 2 + len("routine")  # then the header's tagged fields: b"\0"
    body = plain[header_end + 1 :]
    topic = bytes([2, 7]) + b"clicks"  # one topic (compact array 1 + 1), its name (compact string)
    assert body == topic + b"\0" + b"\0\0\0" + b"\0"  # the topic's tags, three booleans, the body's tags
    request = (
        plain[:header_end] + tagged((5, b"hdr"), (900 % 128, b""))  # the header's
        + topic + tagged((3, b"topic-level"))  # the topic entry's (nested)
        + b"\0\0\0" + tagged((0, b""), (77, b"\x01\x02"))  # the body's
    )  # fmt: skip
    response = decode(ApiKey.METADATA, 9, exchange(server, request))
    [topic_metadata] = response.topics
    assert (topic_metadata.name, topic_metadata.error_code) == ("clicks", 0)


def test_a_tagged_field_longer_than_the_request_is_still_refused(server):
    plain = encode(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})
    assert plain.endswith(b"\0")
    request = plain[:-1] + bytes([1, 4, 100]) + b"short"  # a field of 100 bytes, 5 present
    assert exchange(server, request) is None
    assert decode(ApiKey.API_VERSIONS, 0, exchange(server, encode(ApiKey.API_VERSIONS, 0, {}))).error_code == 0


# --- ApiVersions is what is served -------------------------------------------------------------------


def test_api_versions_lists_exactly_the_apis_with_a_handler(server):
    response = decode(ApiKey.API_VERSIONS, 3, exchange(server, encode(ApiKey.API_VERSIONS, 3, {
        "client_software_name": "t", "client_software_version": "1"})))  # fmt: skip
    listed = {key.api_key: (key.min_version, key.max_version) for key in response.api_keys}
    assert listed == SUPPORTED_VERSIONS
    assert set(listed) == set(HANDLERS) | {ApiKey.FETCH}  # Fetch is served by the server itself (it waits)
    assert {ApiKey.DESCRIBE_CONFIGS, ApiKey.DESCRIBE_CLUSTER} <= set(listed)


@pytest.mark.parametrize("api_key", [57, 9999])  # UpdateFeatures (not served), a key Kafka does not have
def test_an_api_that_is_not_listed_closes_the_connection_as_kafka_does(server, api_key):
    assert api_key not in SUPPORTED_VERSIONS
    assert exchange(server, struct.pack(">hhih", api_key, 0, 1, -1)) is None


# --- DescribeConfigs -----------------------------------------------------------------------------------


def test_confluent_kafka_describes_broker_and_topic_configs(server):
    admin = AdminClient({"bootstrap.servers": server.bootstrap_servers})
    futures = admin.describe_configs([ConfigResource("BROKER", "1"), ConfigResource("TOPIC", "clicks"),
                                      ConfigResource("TOPIC", "nope")])  # fmt: skip
    results = {(resource.restype, resource.name): future for resource, future in futures.items()}
    broker = results[(ConfigResource.Type.BROKER, "1")].result(timeout=10)
    assert set(broker) == set(BROKER_CONFIGS)
    assert broker["log.segment.bytes"].value == str(1 << 20)
    assert not broker["log.segment.bytes"].is_default
    assert broker["log.segment.bytes"].source == confluent_kafka.admin.ConfigSource.STATIC_BROKER_CONFIG.value
    assert broker["num.partitions"].value == "1" and broker["num.partitions"].is_default
    assert broker["listeners"].value == f"PLAINTEXT://127.0.0.1:{server.server.ports[1]}"
    topic = results[(ConfigResource.Type.TOPIC, "clicks")].result(timeout=10)
    assert set(topic) == set(TOPIC_CONFIGS)
    assert topic["segment.bytes"].value == str(1 << 20)
    assert topic["min.insync.replicas"].value == "1"
    assert topic["cleanup.policy"].value == "delete"
    with pytest.raises(confluent_kafka.KafkaException) as error:
        results[(ConfigResource.Type.TOPIC, "nope")].result(timeout=10)
    assert error.value.args[0].code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART


def test_kafka_python_describes_the_broker_configs_that_were_set(server):
    from kafka.admin import ConfigResource as PyConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap_servers, request_timeout_ms=10000)
    try:  # config_filter="static": the configs of source STATIC_BROKER_CONFIG
        result = admin.describe_configs([PyConfigResource(ConfigResourceType.BROKER, "0")], config_filter="static")
    finally:
        admin.close()
    configs = result["broker"]["0"]
    assert "log.segment.bytes" in configs and "num.partitions" not in configs
    assert configs["log.segment.bytes"]["value"] == str(1 << 20)


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_describe_configs_filters_lists_synonyms_and_documents(server, version):
    body = {"resources": [
        {"resource_type": 4, "resource_name": "0", "configuration_keys": ["log.segment.bytes", "group.max.size"]},
        {"resource_type": 2, "resource_name": "views", "configuration_keys": None},
        {"resource_type": 4, "resource_name": "2", "configuration_keys": None},  # asked of broker 0
        {"resource_type": 2, "resource_name": "no/such", "configuration_keys": None},
        {"resource_type": 3, "resource_name": "a-group", "configuration_keys": None},
        {"resource_type": 99, "resource_name": "x", "configuration_keys": None},
    ], "include_synonyms": True, "include_documentation": True}  # fmt: skip
    response = decode(ApiKey.DESCRIBE_CONFIGS, version, exchange(server, encode(ApiKey.DESCRIBE_CONFIGS, version,
                                                                                body)))  # fmt: skip
    broker, topic, other_broker, illegal, group, unknown = response.results
    assert broker.error_code == 0
    segment, group_max = broker.configs
    assert (segment.name, segment.value, segment.config_source, segment.read_only) == (
        "log.segment.bytes", str(1 << 20), 4, True)  # STATIC_BROKER_CONFIG
    assert [(s.name, s.value, s.source) for s in segment.synonyms] == [
        ("log.segment.bytes", str(1 << 20), 4), ("log.segment.bytes", "1073741824", 5)]
    assert (group_max.value, group_max.config_source) == ("2147483647", 5)  # DEFAULT_CONFIG
    if version >= 3:
        assert segment.config_type == 3  # INT
        assert segment.documentation == BROKER_CONFIGS["log.segment.bytes"].doc
    assert topic.error_code == 0 and {c.name for c in topic.configs} == set(TOPIC_CONFIGS)
    segment_of_topic = {c.name: c for c in topic.configs}["segment.bytes"]
    assert [(s.name, s.source) for s in segment_of_topic.synonyms] == [("log.segment.bytes", 4),
                                                                        ("log.segment.bytes", 5)]  # fmt: skip
    assert other_broker.error_code == 42 and "Unexpected broker id" in other_broker.error_message
    assert illegal.error_code == 17  # INVALID_TOPIC_EXCEPTION
    assert group.error_code == unknown.error_code == 42  # INVALID_REQUEST
    assert unknown.error_message == "Unsupported resource type: 99"


# --- DescribeCluster -----------------------------------------------------------------------------------


def test_confluent_kafka_describes_the_cluster(server):
    admin = AdminClient({"bootstrap.servers": server.bootstrap_servers})
    cluster = admin.describe_cluster(request_timeout=10).result(timeout=10)
    assert cluster.cluster_id == server.server.cluster_id
    assert {(node.id, node.port) for node in cluster.nodes} == set(enumerate(server.server.ports))
    assert cluster.controller.id in {0, 1, 2}


@pytest.mark.parametrize(("version", "endpoint_type", "error"), [
    (0, None, 0), (1, 1, 0), (1, 2, 114), (1, 7, 115), (0, None, 0)])  # fmt: skip
def test_describe_cluster_by_endpoint_type(server, version, endpoint_type, error):
    body = {"include_cluster_authorized_operations": False}
    if endpoint_type is not None:
        body["endpoint_type"] = endpoint_type
    response = decode(ApiKey.DESCRIBE_CLUSTER, version,
                      exchange(server, encode(ApiKey.DESCRIBE_CLUSTER, version, body)))  # fmt: skip
    assert response.error_code == error  # MISMATCHED_ENDPOINT_TYPE 114, UNSUPPORTED_ENDPOINT_TYPE 115
    if not error:
        assert [b.broker_id for b in response.brokers] == [0, 1, 2]
        assert response.cluster_id == "dedup"


# --- authorized operations (KIP-430) -----------------------------------------------------------------


@pytest.mark.parametrize("include", [True, False], ids=["asked", "not-asked"])
def test_confluent_kafka_reads_the_authorized_operations_of_topics_and_the_cluster(server, include):
    """Without an authorizer Kafka allows every operation a resource supports (AuthHelper,
    AclEntry.supportedOperations); before, Metadata and DescribeCluster always answered
    "not asked" (INT32_MIN), so an admin client that asked got nothing."""
    from confluent_kafka import TopicCollection

    admin = AdminClient({"bootstrap.servers": server.bootstrap_servers})
    cluster = admin.describe_cluster(include_authorized_operations=include, request_timeout=10).result()
    name = sorted(TOPICS)[0]
    topic = admin.describe_topics(TopicCollection([name]), include_authorized_operations=include,
                                  request_timeout=10)[name].result()  # fmt: skip
    if not include:
        assert not cluster.authorized_operations and not topic.authorized_operations
        return
    assert sorted(op.name for op in cluster.authorized_operations) == [
        "ALTER", "ALTER_CONFIGS", "CLUSTER_ACTION", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "IDEMPOTENT_WRITE"]
    assert sorted(op.name for op in topic.authorized_operations) == [
        "ALTER", "ALTER_CONFIGS", "CREATE", "DELETE", "DESCRIBE", "DESCRIBE_CONFIGS", "READ", "WRITE"]


@pytest.mark.parametrize("brokers", [1, 3])
def test_describe_configs_reports_the_replication_serve_starts_with(tmp_path, brokers):
    """serve replicates by default where Kafka's defaults would not fit its brokers
    (default.replication.factor and offsets.topic.replication.factor min(3, brokers),
    min.insync.replicas min(2, brokers)): DescribeConfigs says what the server uses, not
    Kafka's defaults (before, it said 1 and 3 whatever the brokers)."""
    with ServerThread(tmp_path, brokers=brokers) as running:
        admin = AdminClient({"bootstrap.servers": running.bootstrap_servers})
        (future,) = admin.describe_configs([ConfigResource("BROKER", "0")]).values()
        configs = future.result(timeout=10)
    got = {key: configs[key].value for key in
           ("default.replication.factor", "offsets.topic.replication.factor", "min.insync.replicas")}  # fmt: skip
    assert got == {"default.replication.factor": str(min(3, brokers)),
                   "offsets.topic.replication.factor": str(min(3, brokers)),
                   "min.insync.replicas": str(min(2, brokers))}  # fmt: skip
