"""The Produce response written field by field (``apis/produce.py``'s encode_produce_response)
against kio's encoding of the same response, byte for byte, in every version served."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from dedup.server.apis.produce import encode_produce_response
from dedup.server.wire import SUPPORTED_VERSIONS, ApiKey, Request, build, encode_response, response_schema

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
