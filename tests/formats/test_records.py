"""Kafka's v2 batches in and out (spec §2.1 rules 1, 3, 5-8, §3.2, §8), on both twins."""

from __future__ import annotations

import logging
import struct

import numpy as np
import pytest
from conftest import TWINS
from kafka_batches import (
    COMMIT_MARKER,
    IDEMPOTENT_BATCH,
    TIMESTAMP,
    build,
    empty_control_batch,
    marker,
    patch,
)

import dedup
from dedup import CompletedTxn, Origin
from dedup.errors import CorruptRecordError, InvalidRecordError, TruncatedBatchError

PID = 1000


def state(table):
    return {pid: table.entry(pid) for pid in table}, table.map_end_offset


# --- §8: the header ----------------------------------------------------------------------------


def test_spec_vectors_scan_to_their_fields(twin):
    records = twin.records
    (commit,) = records.scan_batches(COMMIT_MARKER)
    assert (commit["base_offset"], commit["batch_length"], commit["partition_leader_epoch"]) == (42, 66, 0)
    assert (commit["producer_id"], commit["producer_epoch"], commit["base_sequence"]) == (PID, 5, -1)
    assert commit["is_control"] and commit["is_transactional"] and commit["attributes"] == 0x30
    assert (commit["record_count"], commit["last_offset_delta"], commit["max_timestamp"]) == (1, 0, TIMESTAMP)
    (batch,) = records.scan_batches(IDEMPOTENT_BATCH)
    assert (batch["base_offset"], batch["partition_leader_epoch"], batch["base_sequence"]) == (0, -1, 0)
    assert (batch["producer_id"], batch["producer_epoch"], batch["record_count"]) == (PID, 5, 1)
    assert not batch["is_control"] and not batch["is_transactional"] and batch["compression"] == 0
    assert records.crc_valid(COMMIT_MARKER + IDEMPOTENT_BATCH).tolist() == [True, True]


def test_a_segment_of_batches_scans_in_place(twin):
    records = twin.records
    batches = [build(PID, 0, 0, 3), build(PID, 0, 3, 1), build(-1, -1, -1, 2), COMMIT_MARKER]
    segment = b"".join(batches)
    positions = np.cumsum([0] + [len(batch) for batch in batches[:-1]])
    for buffer in (segment, bytearray(segment), memoryview(segment), np.frombuffer(segment, dtype=np.uint8)):
        headers = records.scan_batches(buffer)
        assert headers.dtype == dedup.records.BATCH_HEADER_DTYPE
        assert headers["position"].tolist() == positions.tolist()
        assert headers["batch_length"].tolist() == [len(batch) - 12 for batch in batches]
    assert len(records.scan_batches(b"")) == 0


def test_both_twins_scan_to_identical_rows():
    segment = build(PID, 3, 7, 4, transactional=True) + COMMIT_MARKER + build(-1, -1, -1, 1)
    compiled, reference = (twin.records.scan_batches(segment).tobytes() for twin in TWINS.values())
    assert compiled == reference


# --- scan errors: torn tails and corruption ------------------------------------------------------


def test_torn_tail_is_reported_with_the_valid_prefix(twin):
    records = twin.records
    whole = build(PID, 0, 0, 2) + build(PID, 0, 2, 2)
    first = len(build(PID, 0, 0, 2))
    for cut in (first + 1, first + 11, first + 12, len(whole) - 1):
        with pytest.raises(TruncatedBatchError) as caught:
            records.scan_batches(whole[:cut])
        assert caught.value.code == 2 and caught.value.valid_bytes == first
        assert len(caught.value.headers) == 1 and "truncated" in str(caught.value)
        assert len(records.scan_batches(whole[:cut], tail="ignore")) == 1


def test_batch_length_below_the_minimum_is_corrupt(twin):
    records = twin.records
    broken = build(PID, 0, 0) + patch(build(PID, 0, 1), recompute_crc=False, batch_length=48)
    with pytest.raises(CorruptRecordError) as caught:
        records.scan_batches(broken, tail="ignore")
    assert "batch 1" in str(caught.value) and "expected at least 49, found 48" in str(caught.value)
    assert caught.value.valid_bytes == len(build(PID, 0, 0))


def test_rule1_magic_must_be_2(twin):
    records = twin.records
    with pytest.raises(InvalidRecordError, match="magic: expected 2") as caught:
        records.scan_batches(patch(build(PID, 0, 0), magic=1))
    assert caught.value.code == 87


# --- §2.1: the record-level rules -----------------------------------------------------------


@pytest.mark.parametrize(
    "fields,error,words",
    [
        ({"base_offset": 5}, InvalidRecordError, "base_offset: expected 0 from a client (rule 3), found 5"),
        ({"record_count": 3}, InvalidRecordError, "record_count: expected 1"),
        ({"record_count": 0, "last_offset_delta": -1}, CorruptRecordError, "last_offset_delta"),
        ({"attributes": 0x30}, InvalidRecordError, "control batch (rule 7)"),
        ({"base_sequence": -1}, InvalidRecordError, "base_sequence"),
    ],
)
def test_client_rules(twin, fields, error, words):
    records, table_class = twin.records, twin.ProducerStateTable
    batch = patch(build(PID, 0, 0), **fields)
    with pytest.raises(error) as caught:
        records.validate_batches(build(PID, 0, 0) + batch)
    assert words in str(caught.value) and "batch 1" in str(caught.value)
    # The append path refuses the same batch with the same code and writes nothing for it.
    table = table_class()
    result = records.append_batches(table, batch, log_end_offset=0)
    assert result.error_codes.tolist() == [error.code] and type(result.errors[0]) is error
    assert len(table) == 0 and table.map_end_offset == 0


def test_rule5_crc_mismatch_is_corrupt_message(twin):
    records = twin.records
    damaged = bytearray(build(PID, 0, 0))
    damaged[-1] ^= 0x01
    with pytest.raises(CorruptRecordError, match=r"Record is corrupt \(stored crc = \d+, computed crc = \d+\)"):
        records.validate_batches(bytes(damaged))
    assert records.crc_valid(bytes(damaged)).tolist() == [False]


def test_leader_epoch_and_base_offset_are_outside_the_crc(twin):
    # Spec §8.1/§8.5: a leader rewrites them without recomputing the CRC.
    records = twin.records
    rewritten = patch(build(PID, 0, 0), recompute_crc=False, base_offset=77, partition_leader_epoch=9)
    assert records.crc_valid(rewritten).tolist() == [True]
    records.validate_batches(rewritten, origin=Origin.REPLICATION)


def test_replication_keeps_only_the_crc_and_delta_rules(twin):
    records, table_class = twin.records, twin.ProducerStateTable
    follower_batch = patch(build(PID, 0, -1), base_offset=10, record_count=9)  # count and seq are the leader's
    records.validate_batches(follower_batch, origin=Origin.REPLICATION)
    result = records.append_batches(table_class(), follower_batch, origin=Origin.REPLICATION)
    assert result.error_codes.tolist() == [0] and result.base_offsets.tolist() == [10]


# --- appends from bytes (§3.2) ----------------------------------------------------------------


def test_leader_append_assigns_offsets_and_deduplicates(twin):
    records, table_class = twin.records, twin.ProducerStateTable
    table = table_class()
    request = bytearray(build(PID, 0, 0, 3) + build(PID, 0, 3, 2) + build(PID, 0, 0, 3) + build(PID, 0, 9, 1))
    result = records.append_batches(table, request, log_end_offset=100, write_offsets=True, partition_leader_epoch=4)
    assert result.error_codes.tolist() == [0, 0, 0, 45]
    assert result.duplicate.tolist() == [False, False, True, False]
    assert result.base_offsets.tolist() == [100, 103, 100, -1]
    assert result.last_offsets.tolist() == [102, 104, 102, -1]
    assert result.log_end_offset == 105 == table.map_end_offset
    assert "9 (incoming seq. number), 4 (current end sequence number)" in str(result.errors[3])
    assert "at offset 105" in str(result.errors[3])
    # Offsets and leader epoch written in place for the two appended batches only.
    headers = records.scan_batches(request)
    assert headers["base_offset"].tolist() == [100, 103, 0, 0]
    assert headers["partition_leader_epoch"].tolist() == [4, 4, 0, 0]  # kafka-python writes 0 there
    assert records.crc_valid(request).all()


def test_append_batches_is_append_per_batch(twin):
    """Same semantics as calling table.append per batch (the issue's contract)."""
    records, table_class = twin.records, twin.ProducerStateTable
    batches = [
        build(1, 0, 0, 2),
        build(2, 0, 5, 1),
        build(1, 0, 2, 1),
        build(1, 0, 0, 2),  # duplicate
        build(2, 1, 0, 3),  # epoch bump
        build(2, 0, 6, 1),  # fenced
        build(1, 0, 9, 1),  # gap
        build(3, 0, 0, 1, transactional=True),
        build(3, 0, 1, 1),  # plain batch inside a transaction
        build(-1, -1, -1, 4),  # no producer id
    ]
    from_bytes, by_hand = table_class(), table_class()
    result = records.append_batches(from_bytes, b"".join(batches), log_end_offset=0)
    end = 0
    for index, batch in enumerate(batches):
        (header,) = records.scan_batches(batch)
        if header["producer_id"] < 0:
            assert result.base_offsets[index] == end
            end += int(header["record_count"])
            by_hand.update_map_end_offset(end)
            continue
        try:
            expected = by_hand.append(
                int(header["producer_id"]), int(header["producer_epoch"]), int(header["base_sequence"]),
                int(header["record_count"]), end, max_timestamp=int(header["max_timestamp"]),
                transactional=bool(header["is_transactional"]),
            )
        except dedup.KafkaError as error:
            assert result.error_codes[index] == error.code
            assert str(result.errors[index]) == str(error)
            continue
        assert result.error_codes[index] == 0 and result.duplicate[index] == expected.duplicate
        assert (result.base_offsets[index], result.last_offsets[index]) == (expected.base_offset, expected.last_offset)
        assert result.timestamps[index] == expected.timestamp
        if not expected.duplicate:
            end = expected.last_offset + 1
    assert result.error_codes.tolist() == [0, 0, 0, 0, 0, 47, 45, 0, 48, 0]
    assert state(from_bytes) == state(by_hand) and result.log_end_offset == end


def test_both_twins_give_the_same_verdicts_and_state():
    buffer = bytearray(
        build(1, 0, 0, 2) + build(1, 0, 0, 2) + build(2, 3, 4, 1) + build(2, 2, 5, 1) + marker(2, 3, 0)
        + build(-1, -1, -1, 1) + patch(build(4, 0, 0), record_count=5)
    )
    outcomes = []
    for twin in TWINS.values():
        table, data = twin.ProducerStateTable(), bytearray(buffer)
        append_batches = twin.records.append_batches
        result = append_batches(table, data, origin=Origin.COORDINATOR, log_end_offset=7, write_offsets=True)
        outcomes.append((
            [getattr(result, name).tolist() for name in ("error_codes", "duplicate", "base_offsets", "last_offsets")],
            {index: (type(error), str(error)) for index, error in result.errors.items()},
            result.log_end_offset, bytes(data), state(table),
        ))
    assert outcomes[0] == outcomes[1]


def test_follower_keeps_the_leaders_offsets(twin, caplog):
    records, table_class = twin.records, twin.ProducerStateTable
    table = table_class()
    leader_log = patch(build(PID, 2, 0, 3), base_offset=10) + patch(build(PID, 1, 40, 1), base_offset=20)
    with caplog.at_level(logging.WARNING, logger="dedup"):
        result = records.append_batches(table, leader_log, origin=Origin.REPLICATION)
    assert result.base_offsets.tolist() == [10, 20] and result.error_codes.tolist() == [0, 0]
    assert table.entry(PID).producer_epoch == 1  # §2.4: an older epoch is applied with a warning
    assert table.map_end_offset == 21
    behind = records.append_batches(table, patch(build(PID, 1, 41, 1), base_offset=15), origin=Origin.REPLICATION)
    assert behind.error_codes.tolist() == [87] and "offsets go backwards" in str(behind.errors[0])


def test_markers_end_transactions_on_followers(twin):
    records, table_class = twin.records, twin.ProducerStateTable
    table = table_class()
    table.append(PID, 5, 0, 1, 1, transactional=True)
    result = records.append_batches(table, COMMIT_MARKER, origin=Origin.REPLICATION)
    assert result.completed_transactions == [CompletedTxn(PID, 1, 42, False)]
    entry = table.entry(PID)
    assert entry.current_txn_first_offset is None and entry.coordinator_epoch == 7
    assert entry.last_timestamp == TIMESTAMP and table.map_end_offset == 43


def test_marker_from_an_older_coordinator_is_refused_by_the_coordinator(twin):
    records, table_class = twin.records, twin.ProducerStateTable
    table = table_class()
    table.append_marker(PID, 5, 9, 0, commit=True)
    result = records.append_batches(table, marker(PID, 5, 7), origin=Origin.COORDINATOR, log_end_offset=1)
    assert result.error_codes.tolist() == [52]
    assert "coordinator epoch 7, older than the current 9" in str(result.errors[0])


def test_control_record_that_is_not_a_marker_is_refused(twin):
    records, table_class = twin.records, twin.ProducerStateTable
    result = records.append_batches(table_class(), marker(PID, 0, 0, control_type=2), origin=Origin.REPLICATION)
    assert result.error_codes.tolist() == [87] and "COMMIT or ABORT" in str(result.errors[0])


def test_empty_control_batch_is_a_no_op_that_keeps_the_entry(twin):
    # Spec §2.2: compaction can empty a control batch; Kafka still puts the entry.
    records, table_class = twin.records, twin.ProducerStateTable
    table = table_class()
    result = records.append_batches(table, empty_control_batch(PID, 3, base_offset=4), origin=Origin.REPLICATION)
    assert result.error_codes.tolist() == [0] and result.completed_transactions == []
    entry = table.entry(PID)
    assert (entry.producer_epoch, entry.batches, entry.current_txn_first_offset) == (-1, (), None)
    assert table.map_end_offset == 5


def test_batches_without_a_producer_id_only_move_the_map_end_offset(twin):
    records, table_class = twin.records, twin.ProducerStateTable
    table = table_class()
    result = records.append_batches(table, build(-1, -1, -1, 5), log_end_offset=3)
    assert (result.base_offsets.tolist(), result.last_offsets.tolist()) == ([3], [7])
    assert len(table) == 0 and table.map_end_offset == 8


def test_bad_arguments_name_themselves(twin):
    records, table_class = twin.records, twin.ProducerStateTable
    table = table_class()
    batch = build(PID, 0, 0)
    with pytest.raises(TypeError, match="log_end_offset"):
        records.append_batches(table, batch)
    with pytest.raises(TypeError, match="read-only"):
        records.append_batches(table, batch, log_end_offset=0, write_offsets=True)
    with pytest.raises(ValueError, match="write_offsets"):
        records.append_batches(table, bytearray(batch), origin=Origin.REPLICATION, write_offsets=True)
    with pytest.raises(ValueError, match="partition_leader_epoch"):
        records.append_batches(table, batch, log_end_offset=0, partition_leader_epoch=3)
    with pytest.raises(ValueError, match="tail"):
        records.scan_batches(batch, tail="cut")
    with pytest.raises(TypeError, match="data"):
        records.scan_batches("not bytes")
    with pytest.raises(TypeError, match="table"):
        records.append_batches(object(), batch, log_end_offset=0)
    table.append(PID, 0, 0, 1, 10)
    with pytest.raises(ValueError, match="log_end_offset"):
        records.append_batches(table, batch, log_end_offset=3)
    assert table.map_end_offset == 11


def test_public_append_batches_picks_the_twin_of_the_table():
    for twin in TWINS.values():
        table = twin.ProducerStateTable()
        result = dedup.records.append_batches(table, build(PID, 0, 0), log_end_offset=0)
        assert result.error_codes.tolist() == [0] and PID in table


def test_header_struct_matches_the_spec_layout():
    # The tests' own builder agrees with the spec's 61-byte header (§8.1).
    assert struct.calcsize(">qiibIhiqqqhii") == 61


# --- check_one_batch: a produce request's single batch (the log's fast path) --------------------


def _outcome(function, data):
    try:
        return function(data)
    except Exception as error:  # noqa: BLE001 - the class and message are what is compared
        return type(error).__name__, str(error)


@pytest.mark.parametrize(
    "data",
    [
        build(PID, 0, 0, 3),
        build(PID, 0, 7, 1, transactional=True),
        build(-1, -1, -1, 2),
        patch(build(PID, 0, 0), base_offset=4),  # rule 3
        patch(build(PID, 0, 0), record_count=2),  # rule 6
        patch(build(PID, 0, 0), base_sequence=-1),  # rule 8
        patch(build(PID, 0, 0), crc=1, recompute_crc=False),  # rule 5
        marker(PID, 0, 1),  # rule 7
        build(PID, 0, 0) + build(PID, 0, 1),  # two batches: not this path
        build(PID, 0, 0)[:-1],  # torn
        patch(build(PID, 0, 0), magic=1),
        b"",
    ],
)
def test_check_one_batch_is_validate_batches_for_one_batch(twin, data):
    records = twin.records
    outcome = _outcome(records.check_one_batch, data)
    headers = _outcome(records.validate_batches, data)
    if isinstance(headers, tuple):  # refused: the same error, or None (then validate_batches says why)
        assert outcome in (headers, None)
    elif len(headers) != 1:
        assert outcome is None
    else:
        header = headers[0]
        fields = ("attributes", "last_offset_delta", "max_timestamp", "producer_id", "producer_epoch",
                  "base_sequence", "record_count")
        assert outcome == tuple(int(header[name]) for name in fields)
    compiled, reference = (_outcome(twin.records.check_one_batch, data) for twin in TWINS.values())
    assert compiled == reference
