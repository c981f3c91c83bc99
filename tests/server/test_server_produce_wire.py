"""Produce's own paths through the wire layer, against the generic ones, in every version served:
the response written field by field (``apis/produce.py``'s encode_produce_response) against kio's
encoding of the same response, byte for byte; the request's hand-written walk
(``wire.plain_produce_request``) against the schema-driven :func:`known_fields_only`."""

from __future__ import annotations

import datetime
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kio.index import load_request_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_writer

from dedup.server.apis.produce import encode_produce_response
from dedup.server.wire import (
    SUPPORTED_VERSIONS,
    ApiKey,
    BadRequest,
    Request,
    build,
    encode_response,
    known_fields_only,
    parse_request,
    plain_produce_request,
    response_schema,
)

LOW, HIGH = SUPPORTED_VERSIONS[ApiKey.PRODUCE]

partition = st.fixed_dictionaries(
    {
        "index": st.integers(0, 2**31 - 1),
        "error_code": st.sampled_from([ErrorCode.none, ErrorCode.not_leader_or_follower,
                                       ErrorCode.out_of_order_sequence_number, ErrorCode.kafka_storage_error]),
        "base_offset": st.integers(-1, 2**63 - 1),
    },
    optional={
        "log_start_offset": st.integers(-1, 2**63 - 1),
        "error_message": st.none() | st.text(max_size=300),
    },
)  # fmt: skip
topic = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=300), "partition_responses": st.lists(partition, max_size=4)}
)
responses = st.lists(topic, max_size=4)


def by_kio(correlation_id: int, version: int, topics: list[dict]) -> bytes:
    request = Request(ApiKey.PRODUCE, version, correlation_id, None, None)
    with_errors = [
        {**t, "partition_responses": [{**p, "record_errors": []} for p in t["partition_responses"]]} for t in topics
    ]
    return encode_response(request, build(response_schema(request), {"responses": with_errors}))


@given(st.integers(LOW, HIGH), st.integers(-(2**31), 2**31 - 1), responses)
def test_every_version_is_kios_encoding_byte_for_byte(version, correlation_id, topics):
    assert encode_produce_response(correlation_id, version, topics) == by_kio(correlation_id, version, topics)


def test_the_versions_served_are_the_ones_written():
    """A version added to SUPPORTED_VERSIONS (v10 adds tagged fields: current_leader,
    node_endpoints) must be written here too: the test above would not see it."""
    assert (LOW, HIGH) == (3, 9)


# --- the request ---------------------------------------------------------------------------------

request_topics = st.lists(
    st.fixed_dictionaries({
        "name": st.text(min_size=1, max_size=200),
        "partition_data": st.lists(
            st.fixed_dictionaries({"index": st.integers(0, 2**31 - 1), "records": st.none() | st.binary(max_size=300)}),
            max_size=3,
        ),
    }),
    max_size=3,
)  # fmt: skip


def request_frame(version: int, client_id: str | None, transactional_id: str | None, topics: list[dict]) -> bytes:
    """A Produce request as a client sends it, without the size prefix, encoded by kio."""
    schema = load_request_schema(ApiKey.PRODUCE, version)
    buffer = io.BytesIO()
    header = schema.__header_schema__
    entity_writer(header)(buffer, header(request_api_key=ApiKey.PRODUCE, request_api_version=version,
                                         correlation_id=7, client_id=client_id))  # fmt: skip
    body = {"transactional_id": transactional_id, "acks": -1, "timeout": datetime.timedelta(seconds=30),
            "topic_data": topics}  # fmt: skip
    entity_writer(schema)(buffer, build(schema, body))
    return buffer.getvalue()


frames = st.builds(
    request_frame, st.integers(LOW, HIGH), st.none() | st.text(max_size=50), st.none() | st.text(max_size=50),
    request_topics,
)  # fmt: skip


@given(frames)
def test_a_clients_request_takes_the_hand_written_walk(frame):
    version = int.from_bytes(frame[2:4], "big")
    assert plain_produce_request(frame, version)
    assert known_fields_only(load_request_schema(ApiKey.PRODUCE, version), frame) is frame


@given(frames, st.data())
def test_the_hand_written_walk_says_plain_only_where_the_generic_walk_changes_and_refuses_nothing(frame, data):
    """Bytes overwritten, cut or inserted anywhere (lengths, counts, tags): wherever the hand
    walk takes the frame as it is, the schema's walk returns it unchanged, without BadRequest."""
    version = int.from_bytes(frame[2:4], "big")
    mutated = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(mutated)))
        action = data.draw(st.sampled_from(["overwrite", "cut", "insert"]))
        if action == "overwrite" and at < len(mutated):
            mutated[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del mutated[at:]
        else:
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    mutated = bytes(mutated)
    if plain_produce_request(mutated, version):
        assert known_fields_only(load_request_schema(ApiKey.PRODUCE, version), mutated) is mutated


SMALL_TOPICS = [
    {"name": "t", "partition_data": [{"index": 0, "records": b"xyz"}, {"index": 1, "records": None}]},
    {"name": "u", "partition_data": []},
    {"name": "", "partition_data": []},  # its length overwritten as null leaves a frame that walks on
]


@pytest.mark.parametrize("version", range(LOW, HIGH + 1))
@pytest.mark.parametrize("transactional_id", [None, "x"])
def test_every_byte_overwritten_the_hand_walk_agrees_with_the_generic_walk(version, transactional_id):
    """Every position of a small request overwritten with each of 0, 1, 0x7f, 0x80, 0xff (a null
    compact string, a tagged field count, a varint's continuation, a negative legacy length) and
    with 0xffff (a null legacy string or array): wherever the hand walk says plain, the schema's
    walk returns the frame unchanged, without BadRequest."""
    frame = request_frame(version, "c", transactional_id, SMALL_TOPICS)
    schema = load_request_schema(ApiKey.PRODUCE, version)
    plain = 0
    for at in range(len(frame)):
        for replacement in (b"\x00", b"\x01", b"\x7f", b"\x80", b"\xff", b"\xff\xff"):
            mutated = frame[:at] + replacement + frame[at + len(replacement) :]
            if plain_produce_request(mutated, version):
                plain += 1
                assert known_fields_only(schema, mutated) is mutated, (at, replacement)
    assert plain > 0


def test_unknown_tagged_fields_go_the_generic_way_and_are_skipped():
    """v9: a tagged field the schema does not know, in the body's last section: not plain,
    and parse_request skips it (KIP-482) instead of refusing the request."""
    frame = request_frame(9, "c", None, [{"name": "t", "partition_data": [{"index": 0, "records": b"x"}]}])
    assert frame[-1] == 0
    tagged = frame[:-1] + bytes([1, 99, 2]) + b"ab"  # one field: tag 99, 2 bytes
    assert not plain_produce_request(tagged, 9)
    assert parse_request(tagged).body == parse_request(frame).body


@pytest.mark.parametrize("version", [LOW, HIGH])
def test_a_length_past_the_end_is_refused_as_before(version):
    frame = request_frame(version, "c", None, [{"name": "t", "partition_data": [{"index": 0, "records": b"xyz"}]}])
    cut = frame[:-2] if version < 9 else frame[:-4]  # inside the records
    assert not plain_produce_request(cut, version)
    with pytest.raises(BadRequest, match="length of"):
        parse_request(cut)
