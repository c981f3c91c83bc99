"""dedup.testing.strategies: values reach their edges, client streams behave as a client does
(retries in flight are duplicates), batch bytes parse with an independent reader
(kafka-python), and corruptions are caught by dedup's reader where the CRC covers them."""

from __future__ import annotations

import pytest
from hypothesis import find, given
from hypothesis import strategies as st

from dedup import reference
from dedup._layout import CRC_OFFSET
from dedup._types import INT16_MAX, INT32_MAX, INT64_MAX
from dedup.batch import decode_records
from dedup.errors import KafkaError
from dedup.records import scan_batches
from dedup.testing import strategies

DefaultRecordBatch = pytest.importorskip("kafka.record.default_records").DefaultRecordBatch


@pytest.mark.parametrize(
    ("strategy", "edge"),
    [
        (strategies.producer_ids(), INT64_MAX),
        (strategies.producer_ids(), 0),
        (strategies.producer_epochs(), INT16_MAX),
        (strategies.sequences(), INT32_MAX),
        (strategies.sequences(), 0),
    ],
)
def test_values_reach_their_edges(strategy, edge):
    assert find(strategy, lambda value: value == edge) == edge


@given(strategies.producer_ids(), strategies.producer_epochs(), strategies.sequences(), strategies.record_counts())
def test_values_stay_in_kafka_s_ranges(producer_id, producer_epoch, sequence, count):
    assert 0 <= producer_id <= INT64_MAX and 0 <= producer_epoch <= INT16_MAX and 0 <= sequence <= INT32_MAX
    assert 1 <= count <= 10


def replay(stream):
    """Each send through a reference table: ("append" | "duplicate" | error name) per send."""
    table, verdicts = reference.ProducerStateTable(), []
    for batch in stream:
        try:
            result = table.append(batch.producer_id, batch.producer_epoch, batch.base_sequence, batch.record_count,
                                  table.map_end_offset)  # fmt: skip
        except KafkaError as error:
            verdicts.append(type(error).__name__)
        else:
            verdicts.append("duplicate" if result.duplicate else "append")
    return verdicts


@given(strategies.client_streams(reorder=False, bumps=False, restarts=False, first_sequences=strategies.sequences()))
def test_without_reordering_every_retry_is_a_duplicate_and_nothing_is_refused(stream):
    """A client keeps at most 5 batches in flight, so a retry of one whose response was lost is
    always within the broker's window of 5: a duplicate, never an error; sequences wrap."""
    verdicts = replay(stream)
    for batch, verdict in zip(stream, verdicts, strict=True):
        if batch.event == "retry":
            assert verdict == "duplicate", (stream, verdicts)
        else:
            assert verdict == "append", (stream, verdicts)


@given(strategies.client_streams(lose_responses=False, reorder=False, bumps=False, restarts=False))
def test_a_client_on_a_perfect_network_never_retries(stream):
    assert {batch.event for batch in stream} <= {"new"}
    assert replay(stream) == ["append"] * len(stream)


def test_streams_have_every_kind_of_event():
    wanted = {"new", "retry", "reordered", "epoch_bump", "restart"}
    stream = find(strategies.client_streams(), lambda s: wanted <= {batch.event for batch in s})
    assert wanted <= {batch.event for batch in stream}
    assert any(batch.response_lost for batch in find(strategies.client_streams(), lambda s: len(s) > 3))


@given(strategies.batch_bytes())
def test_batch_bytes_are_valid_kafka_batches(data):
    batch = DefaultRecordBatch(data)
    assert batch.validate_crc()
    headers = scan_batches(data)
    assert len(headers) == 1 and int(headers["batch_length"][0]) + 12 == len(data)
    records = list(batch)
    assert len(records) == batch.next_offset - batch.base_offset
    if batch.is_control_batch:
        assert batch.is_transactional and batch.base_sequence == -1


@given(strategies.batch_bytes(control=False, compression=True))
def test_compressed_batches_carry_gzip_in_their_attributes(data):
    batch = DefaultRecordBatch(data)
    assert batch.compression_type == strategies.GZIP and batch.validate_crc()
    assert len(list(batch)) >= 1  # kafka-python decompresses them


@given(strategies.batch_bytes(control=True))
def test_control_batches_are_markers(data):
    assert DefaultRecordBatch(data).is_control_batch


@given(st.data())
def test_a_corruption_changes_the_bytes_and_dedup_s_reader_finds_it_where_the_crc_covers_it(data):
    original = data.draw(strategies.batch_bytes(compression=False))
    damaged = data.draw(strategies.corruptions(original))
    assert damaged != original
    changed = [i for i in range(min(len(original), len(damaged))) if original[i] != damaged[i]]
    # Kafka's CRC-32C covers the attributes to the end; the base offset and the partition leader
    # epoch (and the magic byte, read before it) are outside it.
    covered = len(damaged) != len(original) or any(i >= CRC_OFFSET for i in changed)
    if covered:
        with pytest.raises(KafkaError):
            decode_records(damaged, control=True)
