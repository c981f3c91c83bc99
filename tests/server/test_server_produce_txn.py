"""Produce with transactional records and no transactional id: Kafka's KafkaApis.handleProduceRequest
answers TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53) for every partition and appends nothing."""

from __future__ import annotations

import datetime
import io
import socket
import struct

import pytest
from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

from dedup.batch import encode_batch
from dedup.server import ServerThread
from dedup.server.wire import ApiKey, build

TIMEOUT = datetime.timedelta(seconds=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerThread(tmp_path_factory.mktemp("serve"), brokers=1, topics=[("clicks", 2)]) as running:
        yield running


def produce(server: ServerThread, transactional_id: str | None, records: dict[int, bytes], version: int = 9):
    """One Produce (acks=-1) of ``records`` by partition of ``clicks``; its responses by partition."""
    schema = load_request_schema(ApiKey.PRODUCE, version)
    data = [{"name": "clicks", "partition_data": [{"index": p, "records": r} for p, r in records.items()]}]
    body = {"transactional_id": transactional_id, "acks": -1, "timeout": TIMEOUT, "topic_data": data}
    buffer = io.BytesIO()
    header = schema.__header_schema__
    entity_writer(header)(buffer, header(request_api_key=ApiKey.PRODUCE, request_api_version=version,
                                         correlation_id=7, client_id="test"))  # fmt: skip
    entity_writer(schema)(buffer, build(schema, body))
    frame = buffer.getvalue()
    with socket.create_connection(("127.0.0.1", server.server.ports[0]), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = sock.recv(4, socket.MSG_WAITALL)
        assert len(size) == 4, "the server closed the connection"
        payload = sock.recv(struct.unpack(">i", size)[0], socket.MSG_WAITALL)
    response = load_response_schema(ApiKey.PRODUCE, version)
    _, at = entity_reader(response.__header_schema__)(payload, 0)
    (topic,) = entity_reader(response)(payload, at)[0].responses
    return {p.index: p for p in topic.partition_responses}


def high_watermarks(server: ServerThread) -> list[int]:
    return [server.run(lambda p=p: server.server.partition("clicks", p).high_watermark) for p in range(2)]


def test_transactional_records_without_a_transactional_id_are_refused_for_every_partition(server):
    """Fails without the check: the transactional batch was appended (error 0, high watermark 1)."""
    plain = encode_batch([b"plain"], producer_id=-1, producer_epoch=-1, base_sequence=-1, timestamp=1)
    txn = encode_batch([b"txn"], producer_id=7001, producer_epoch=0, base_sequence=0, timestamp=1, transactional=True)
    before = high_watermarks(server)
    for version in (3, 9):
        answer = produce(server, None, {0: plain, 1: txn}, version)
        assert sorted(answer) == [0, 1]
        for partition in answer.values():
            # Kafka's ProduceRequest.getErrorResponse: the code, offsets -1, no message of its own
            assert partition.error_code == ErrorCode.transactional_id_authorization_failed
            assert partition.base_offset == -1
            if version >= 5:
                assert partition.log_start_offset == -1
            if version >= 8:
                assert partition.error_message is None
    assert high_watermarks(server) == before  # nothing appended, not even the plain batch


def test_transactional_records_with_a_transactional_id_and_plain_records_without_one_are_appended(server):
    """The check is the one Kafka makes, no wider: plain records need no id, and any id passes
    (dedup has no authorizer)."""
    plain = encode_batch([b"plain"], producer_id=-1, producer_epoch=-1, base_sequence=-1, timestamp=1)
    txn = encode_batch([b"txn"], producer_id=7002, producer_epoch=0, base_sequence=0, timestamp=1, transactional=True)
    before = high_watermarks(server)
    assert produce(server, None, {0: plain})[0].error_code == ErrorCode.none
    assert produce(server, "t", {1: txn})[1].error_code == ErrorCode.none
    assert high_watermarks(server) == [before[0] + 1, before[1] + 1]
