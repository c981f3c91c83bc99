"""``dedup serve`` on the wire: each API's answers and error codes, and bad input.

Requests are framed by hand over raw sockets (bodies from kio's generated types), so
every error path is reached exactly: Kafka's error codes per partition (UNKNOWN_TOPIC_OR_
PARTITION, NOT_LEADER_OR_FOLLOWER, OFFSET_OUT_OF_RANGE, FENCED_LEADER_EPOCH, ...), and
the frames a broker closes the connection on (oversized, negative size, unknown API key,
unserved version, malformed bytes), after which it keeps serving every other
client. A hypothesis test mutates valid frames of every API and checks the server never
crashes, hangs or fails with an internal error.
"""

from __future__ import annotations

import datetime
import io
import logging
import socket
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from dedup.batch import encode_batch
from dedup.server import ServerThread
from dedup.server.apis import strip_producer_ids
from dedup.server.wire import MAX_REQUEST_BYTES, SUPPORTED_VERSIONS, ApiKey, build
from dedup.tools.fuzz_inputs import group_and_admin_requests

TOPIC = "clicks"
NO_WAIT = datetime.timedelta(0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerThread(tmp_path_factory.mktemp("serve"), brokers=3, topics=[TOPIC, "views", "times"],
                      auto_create_topics_enable=False) as running:
        yield running


def connect(server: ServerThread, broker: int | None = None) -> socket.socket:
    """A connection to ``broker`` (default: the leader of TOPIC)."""
    if broker is None:
        broker = server.run(server.server.leader, TOPIC)
    sock = socket.create_connection(("127.0.0.1", server.server.ports[broker]), timeout=10)
    return sock


def frame(api_key: int, version: int, body: dict, correlation_id: int = 1) -> bytes:
    schema = load_request_schema(api_key, version)
    buffer = io.BytesIO()
    header = schema.__header_schema__
    fields = {"request_api_key": api_key, "request_api_version": version, "correlation_id": correlation_id,
              "client_id": "test"}  # fmt: skip
    entity_writer(header)(buffer, header(**fields))
    entity_writer(schema)(buffer, build(schema, body))
    data = buffer.getvalue()
    return struct.pack(">i", len(data)) + data


def receive(sock: socket.socket) -> bytes | None:
    """One response frame, or None if the server closed the connection."""
    size = _exactly(sock, 4)
    if size is None:
        return None
    return _exactly(sock, struct.unpack(">i", size)[0])


def _exactly(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def call(sock: socket.socket, api_key: int, version: int, body: dict, correlation_id: int = 1):
    sock.sendall(frame(api_key, version, body, correlation_id))
    data = receive(sock)
    assert data is not None, "the server closed the connection"
    schema = load_response_schema(api_key, version)
    header, size = entity_reader(schema.__header_schema__)(data, 0)
    assert header.correlation_id == correlation_id
    response, used = entity_reader(schema)(data, size)
    assert size + used == len(data)
    return response


def closes(sock: socket.socket) -> bool:
    try:
        return receive(sock) is None
    except (ConnectionResetError, TimeoutError):
        return False


def still_serving(server: ServerThread) -> bool:
    with connect(server, 0) as sock:
        response = call(sock, ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})
        return response.error_code == 0


def batch(producer_id: int = -1, sequence: int = -1, values: tuple[bytes, ...] = (b"x",)) -> bytes:
    return encode_batch(values, producer_id=producer_id, producer_epoch=0 if producer_id >= 0 else -1,
                        base_sequence=sequence, timestamp=1_700_000_000_000)  # fmt: skip


def produce_body(records: bytes, topic: str = TOPIC, partition: int = 0, acks: int = -1, **extra) -> dict:
    partitions = [{"index": partition, "records": records}]
    topics = [{"name": topic, "partition_data": partitions}]
    return {"acks": acks, "timeout": datetime.timedelta(seconds=5), "topic_data": topics, **extra}


def metadata_body(topics) -> dict:
    return {"topics": topics, "allow_auto_topic_creation": False, "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False}  # fmt: skip


def partition_of(response):
    [topic] = response.responses
    [partition] = topic.partition_responses
    return partition


# --- the APIs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", range(SUPPORTED_VERSIONS[ApiKey.API_VERSIONS][1] + 1))
def test_api_versions_lists_the_served_versions(server, version):
    body = {"client_software_name": "t", "client_software_version": "1"}
    with connect(server) as sock:
        response = call(sock, ApiKey.API_VERSIONS, version, body)
    assert response.error_code == 0
    assert {k.api_key: (k.min_version, k.max_version) for k in response.api_keys} == SUPPORTED_VERSIONS


def test_api_versions_in_an_unserved_version_is_answered_in_v0_with_unsupported_version(server):
    # KIP-511: the client learns the broker's range and retries in a version both speak.
    with connect(server) as sock:
        sock.sendall(frame(ApiKey.API_VERSIONS, 4, {"client_software_name": "t", "client_software_version": "1"}))
        data = receive(sock)
    schema = load_response_schema(ApiKey.API_VERSIONS, 0)
    header, size = entity_reader(schema.__header_schema__)(data, 0)
    response, _ = entity_reader(schema)(data, size)
    assert response.error_code == 35  # UNSUPPORTED_VERSION
    assert {k.api_key: (k.min_version, k.max_version) for k in response.api_keys} == SUPPORTED_VERSIONS


@pytest.mark.parametrize("version", [0, 1, 9])
def test_metadata_names_the_leader_replicas_and_isr(server, version):
    topics = [{"name": TOPIC}, {"name": "nope"}]
    with connect(server) as sock:
        response = call(sock, ApiKey.METADATA, version, metadata_body(topics))
    by_name = {t.name: t for t in response.topics}
    assert by_name["nope"].error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION: auto.create.topics.enable=false
    [partition] = by_name[TOPIC].partitions
    assert partition.error_code == 0
    assert partition.leader_id == server.run(server.server.leader, TOPIC)
    assert sorted(partition.replica_nodes) == [0, 1, 2]
    assert {b.node_id: b.port for b in response.brokers} == dict(enumerate(server.server.ports))


def test_metadata_without_topics_lists_every_topic(server):
    with connect(server) as sock:
        v0 = call(sock, ApiKey.METADATA, 0, metadata_body([]))  # v0: an empty list means all
        v1 = call(sock, ApiKey.METADATA, 1, metadata_body(None))
    assert {t.name for t in v0.topics} == {t.name for t in v1.topics} == {TOPIC, "views", "times"}


def test_init_producer_id_hands_out_new_ids_to_idempotent_producers(server):
    with connect(server) as sock:
        first = call(sock, ApiKey.INIT_PRODUCER_ID, 1, {"transactional_id": None, "transaction_timeout": NO_WAIT})
        again = {"transactional_id": None, "transaction_timeout": NO_WAIT, "producer_id": first.producer_id,
                 "producer_epoch": 0}  # fmt: skip
        second = call(sock, ApiKey.INIT_PRODUCER_ID, 4, again)
        txn = call(sock, ApiKey.INIT_PRODUCER_ID, 1, {"transactional_id": "t", "transaction_timeout": NO_WAIT})
    assert first.error_code == second.error_code == 0
    assert second.producer_id != first.producer_id  # Kafka: a new id whatever an idempotent producer sends
    assert (first.producer_epoch, second.producer_epoch) == (0, 0)
    assert txn.error_code == 50  # INVALID_TRANSACTION_TIMEOUT: a transactional id needs a timeout in (0, max]


def test_producer_ids_are_not_reused_after_a_restart(tmp_path):
    body = {"transactional_id": None, "transaction_timeout": NO_WAIT}
    ids = []
    for _ in range(2):
        with ServerThread(tmp_path, brokers=1) as running, connect(running, 0) as sock:
            ids += [call(sock, ApiKey.INIT_PRODUCER_ID, 1, body).producer_id for _ in range(3)]
    assert len(set(ids)) == 6
    assert min(ids[3:]) > max(ids[:3])


def test_produce_deduplicates_a_retry_and_answers_the_original_offset(server):
    producer_id = 77_001
    records = batch(producer_id, 0, (b"a", b"b"))
    with connect(server) as sock:
        first = partition_of(call(sock, ApiKey.PRODUCE, 9, produce_body(records, topic="views")))
        retry = partition_of(call(sock, ApiKey.PRODUCE, 3, produce_body(records, topic="views")))
        gap = partition_of(call(sock, ApiKey.PRODUCE, 9, produce_body(batch(producer_id, 5), topic="views")))
    assert first.error_code == retry.error_code == 0
    assert retry.base_offset == first.base_offset  # rule 10: the original offsets
    assert gap.error_code == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER (rule 16)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"topic": "nope"}, 3),  # UNKNOWN_TOPIC_OR_PARTITION
        ({"partition": 1}, 3),
        ({"acks": 2}, 21),  # INVALID_REQUIRED_ACKS
        ({"records": batch() + batch()}, 87),  # INVALID_RECORD: v3+ carries exactly one batch
        ({"records": b""}, 87),
        ({"records": batch()[:16] + b"\x01" + batch()[17:]}, 87),  # magic 1
    ],
)
def test_produce_errors_per_partition(server, change, code):
    change = dict(change)
    body = produce_body(change.pop("records", batch()), **change)
    with connect(server) as sock:
        assert partition_of(call(sock, ApiKey.PRODUCE, 9, body)).error_code == code


def test_produce_to_a_follower_is_not_leader_or_follower(server):
    follower = next(b for b in range(3) if b != server.run(server.server.leader, TOPIC))
    with connect(server, follower) as sock:
        assert partition_of(call(sock, ApiKey.PRODUCE, 9, produce_body(batch()))).error_code == 6


def test_produce_of_corrupt_bytes_is_corrupt_message(server):
    records = bytearray(batch(88_001, 0))
    records[-1] ^= 0xFF  # the CRC no longer matches
    with connect(server) as sock:
        assert partition_of(call(sock, ApiKey.PRODUCE, 9, produce_body(bytes(records)))).error_code == 2


def test_produce_with_acks_0_gets_no_response(server):
    with connect(server) as sock:
        sock.sendall(frame(ApiKey.PRODUCE, 9, produce_body(batch(), acks=0), correlation_id=5))
        after = call(sock, ApiKey.API_VERSIONS, 0, {}, correlation_id=6)  # answered next, with its own id
    assert after.error_code == 0


def fetch_body(offset: int, topic: str = TOPIC, leader_epoch: int = -1) -> dict:
    partition = {"partition": 0, "fetch_offset": offset, "log_start_offset": -1, "partition_max_bytes": 1 << 20,
                 "current_leader_epoch": leader_epoch}  # fmt: skip
    return {"replica_id": -1, "max_wait": NO_WAIT, "min_bytes": 0, "max_bytes": 1 << 20, "isolation_level": 0,
            "session_id": 0, "session_epoch": -1, "topics": [{"topic": topic, "partitions": [partition]}],
            "forgotten_topics_data": [], "rack_id": ""}  # fmt: skip


def fetched(response):
    [topic] = response.responses
    [partition] = topic.partitions
    return partition


def test_fetch_returns_what_was_produced(server):
    records = batch(values=(b"fetch-me",))
    with connect(server) as sock:
        offset = partition_of(call(sock, ApiKey.PRODUCE, 9, produce_body(records))).base_offset
        response = fetched(call(sock, ApiKey.FETCH, 11, fetch_body(offset)))
        beyond = fetched(call(sock, ApiKey.FETCH, 4, fetch_body(response.high_watermark + 10)))
        epoch = server.run(lambda: server.server.partition(TOPIC, 0).leader_epoch)
        fenced = fetched(call(sock, ApiKey.FETCH, 11, fetch_body(offset, leader_epoch=epoch - 1))) if epoch else None
        unknown = fetched(call(sock, ApiKey.FETCH, 11, fetch_body(offset, leader_epoch=epoch + 1)))
    assert response.error_code == 0
    assert response.high_watermark > offset
    assert bytes(response.records)[61:].find(b"fetch-me") >= 0
    assert beyond.error_code == 1  # OFFSET_OUT_OF_RANGE
    assert fenced is None or fenced.error_code == 74  # FENCED_LEADER_EPOCH (KIP-320)
    assert unknown.error_code == 75  # UNKNOWN_LEADER_EPOCH


def test_list_offsets_earliest_latest_and_by_time(server):
    def offsets(timestamp: int) -> tuple[int, int]:
        body = {"replica_id": -1, "isolation_level": 0,
                "topics": [{"name": "times", "partitions": [{"partition_index": 0, "timestamp": timestamp,
                                                             "current_leader_epoch": -1}]}]}  # fmt: skip
        [topic] = call(sock, ApiKey.LIST_OFFSETS, 5, body).topics
        [partition] = topic.partitions
        assert partition.error_code == 0
        return partition.timestamp, partition.offset

    early = encode_batch([b"e"], timestamp=1_000)
    late = encode_batch([b"l1", b"l2"], timestamp=5_000)
    with connect(server, server.run(server.server.leader, "times")) as sock:
        start = partition_of(call(sock, ApiKey.PRODUCE, 9, produce_body(early, topic="times"))).base_offset
        call(sock, ApiKey.PRODUCE, 9, produce_body(late, topic="times"))
        assert offsets(-2)[1] == 0
        assert offsets(-1)[1] == start + 3
        assert offsets(4_000) == (5_000, start + 1)
        assert offsets(1 << 50) == (-1, -1)


def test_strip_producer_ids_makes_a_batch_plain():
    from dedup.records import crc_valid, scan_batches

    data = strip_producer_ids(batch(123, 7) + batch(124, 0))
    headers = scan_batches(data)
    assert headers["producer_id"].tolist() == [-1, -1]
    assert headers["base_sequence"].tolist() == [-1, -1]
    assert crc_valid(data).all()


# --- bad input: the connection closes, the server keeps serving --------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(struct.pack(">i", MAX_REQUEST_BYTES + 1), id="oversized"),
        pytest.param(struct.pack(">i", -1), id="negative-size"),
        pytest.param(struct.pack(">ihhi", 8, 9999, 0, 1), id="unknown-api-key"),
        pytest.param(struct.pack(">ihhi", 8, 10, 0, 1), id="unserved-api-find-coordinator"),
        pytest.param(struct.pack(">ihhi", 8, 0, 2, 1), id="produce-v2-message-sets"),
        pytest.param(struct.pack(">ihhi", 8, 1, 12, 1), id="unserved-fetch-version"),
        pytest.param(struct.pack(">ihh", 4, 18, 0), id="short-header"),
        pytest.param(struct.pack(">ihhih", 11, 3, 1, 1, 40) + b"x", id="client-id-past-the-end"),
        pytest.param(frame(ApiKey.API_VERSIONS, 0, {})[:4], id="size-without-body"),
    ],
)
def test_bad_frames_close_the_connection_and_others_are_still_served(server, raw, caplog):
    with connect(server) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)  # a body that never comes ends in EOF, not a wait
        assert closes(sock)
    assert still_serving(server)
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]


def test_trailing_bytes_after_a_request_are_ignored_as_kafka_does(server):
    # AbstractRequest.parseRequest reads the body and ignores what follows; librdkafka's
    # all-topics Metadata v9 relies on it (see test_server_routine).
    good = frame(ApiKey.API_VERSIONS, 0, {}, correlation_id=77)
    padded = struct.pack(">i", len(good) - 4 + 3) + good[4:] + b"xyz"
    with connect(server) as sock:
        sock.sendall(padded)
        response = receive(sock)
    assert response is not None and struct.unpack_from(">ih", response) == (77, 0)  # correlation id, no error


# --- fuzzing ---------------------------------------------------------------------------------------


def valid_frames() -> list[bytes]:
    """One valid request frame of every served API, for mutation."""
    records = batch(99_000, 0)
    return [
        frame(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"}),
        frame(ApiKey.METADATA, 9, metadata_body([{"name": TOPIC}])),
        frame(ApiKey.METADATA, 1, metadata_body(None)),
        frame(ApiKey.INIT_PRODUCER_ID, 2, {"transactional_id": None, "transaction_timeout": NO_WAIT}),
        frame(ApiKey.PRODUCE, 9, produce_body(records)),
        frame(ApiKey.PRODUCE, 3, produce_body(records)),
        frame(ApiKey.FETCH, 11, fetch_body(0)),
        frame(ApiKey.LIST_OFFSETS, 1, {"replica_id": -1, "topics": [
            {"name": TOPIC, "partitions": [{"partition_index": 0, "timestamp": -1}]}]}),
        *[frame(*request) for request in group_and_admin_requests().values()],
    ]  # fmt: skip


FRAMES = valid_frames()


def test_every_valid_frame_is_answered(server):
    """The mutation test's seeds, each a request the server answers as it is."""
    for index, raw in enumerate(FRAMES):
        with connect(server) as sock:
            sock.sendall(raw)
            response = receive(sock)
            assert response is not None and struct.unpack_from(">i", response)[0] == 1, f"frame {index}"


@st.composite
def mutated_frames(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(FRAMES))[4:])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
        elif kind == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return struct.pack(">i", len(data)) + bytes(data)


LONG_POLL_FETCH = bytes.fromhex(
    "000000590001000b00000001000474657374ffffffff01000000010000000010000000000000"
    "00ffffffff000000010006636c69636b730000000100000000ffffffff0000000000000000ff"
    "ffffffffffffff00100000000000000000"
)  # a fetch frame mutated to MaxWaitMs 0x01000000 and MinBytes 1


# Slow (a server round trip an example); the fast set keeps every request above and the bad frames.
@pytest.mark.slow
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=mutated_frames())
@example(raw=LONG_POLL_FETCH)
def test_mutated_frames_never_break_the_server(server, raw, caplog):
    with connect(server) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        # The server answers, or closes; either way the read ends (a hang fails on the timeout).
        while True:
            try:
                if receive(sock) is None:
                    break
            except ConnectionResetError:
                break
            except TimeoutError:
                # But for a fetch: mutated into a valid one with a MaxWaitMs of hours and a
                # MinBytes of 1 or more, it waits for records as Kafka's fetch purgatory would
                # (found by this test: 0x01000000 ms, 4.6 hours), and Kafka reads no more of
                # the connection meanwhile either. The server must still serve everyone else.
                # JoinGroup and SyncGroup wait the same way for a rebalance (bounded by the group's
                # rebalance and session timeouts, at most group.max.session.timeout.ms).
                waiting = [struct.pack(">h", key) for key in (ApiKey.FETCH, ApiKey.JOIN_GROUP, ApiKey.SYNC_GROUP)]
                assert raw[4:6] in waiting, "no answer to a request that does not wait"
                break
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "dedup.server"]
    assert not errors, errors[0].getMessage()
    assert still_serving(server)
