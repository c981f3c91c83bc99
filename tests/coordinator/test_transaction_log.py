"""``__transaction_state`` records in Kafka's byte layout (TransactionLogKey v0,
TransactionLogValue v0 written, v0 and v1 read), checked against bytes written out by hand
from Kafka's JSON schemas, not against our own encoder."""

from __future__ import annotations

import pytest

from dedup.coordinator.transaction_log import (
    CorruptTransactionRecord,
    TransactionLogValue,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
)
from dedup.coordinator.transaction_metadata import TransactionMetadata, TransactionState

ONGOING = TransactionLogValue(
    producer_id=1000, producer_epoch=5, transaction_timeout_ms=60_000, transaction_status=1,
    partitions=(("clicks", (0, 1)),), last_update_timestamp_ms=1_700_000_000_000,
    start_timestamp_ms=1_699_999_999_000,
)  # fmt: skip

# version 0 | ProducerId 1000 | ProducerEpoch 5 | TransactionTimeoutMs 60000 | TransactionStatus 1 (Ongoing)
# | TransactionPartitions: 1 entry: Topic "clicks", PartitionIds [0, 1] | LastUpdate 1700000000000 | Start 1699999999000
ONGOING_BYTES = bytes.fromhex(
    "0000" "00000000000003e8" "0005" "0000ea60" "01"
    "00000001" "0006" + b"clicks".hex() + "00000002" "00000000" "00000001"
    "0000018bcfe56800" "0000018bcfe56418"
)  # fmt: skip

# An Empty record: TransactionPartitions is null (-1), as TransactionLog.valueToBytes writes it.
EMPTY_BYTES = bytes.fromhex("0000" "00000000000003e8" "0000" "0000ea60" "00" "ffffffff" "0000018bcfe56800"
                            "ffffffffffffffff")  # fmt: skip


def test_key_is_version_0_and_the_transactional_id():
    assert encode_key("t1") == bytes.fromhex("0000" "0002") + b"t1"
    assert decode_key(bytes.fromhex("0000" "0002") + b"t1") == "t1"


def test_value_v0_has_kafkas_layout():
    assert encode_value(ONGOING) == ONGOING_BYTES
    assert decode_value(ONGOING_BYTES) == ONGOING


def test_an_empty_transaction_writes_null_partitions():
    metadata = TransactionMetadata("t1", 1000, 0, txn_timeout_ms=60_000, txn_last_update_timestamp=1_700_000_000_000)
    assert encode_value(TransactionLogValue.of(metadata)) == EMPTY_BYTES
    assert decode_value(EMPTY_BYTES).metadata("t1").state is TransactionState.EMPTY


def test_value_v1_flexible_with_tagged_fields_is_read():
    # version 1 | the same fixed fields | compact array (2 = 1 entry): compact string (7 = 6 bytes) "clicks",
    # compact int32 array (3 = 2 ids), no tagged fields | timestamps | 3 tagged fields: 0 PreviousProducerId 999,
    # 1 NextProducerId 1001, 2 ClientTransactionVersion 2
    data = bytes.fromhex(
        "0001" "00000000000003e8" "0005" "0000ea60" "01"
        "02" "07" + b"clicks".hex() + "03" "00000000" "00000001" "00"
        "0000018bcfe56800" "0000018bcfe56418"
        "03" "00" "08" "00000000000003e7" "01" "08" "00000000000003e9" "02" "02" "0002"
    )  # fmt: skip
    value = decode_value(data)
    assert value.partitions == (("clicks", (0, 1)),)
    assert (value.previous_producer_id, value.next_producer_id, value.client_transaction_version) == (999, 1001, 2)
    metadata = value.metadata("t1")
    assert (metadata.state, metadata.topic_partitions, metadata.previous_producer_id) == (
        TransactionState.ONGOING, {("clicks", 0), ("clicks", 1)}, 999)  # fmt: skip


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (ONGOING_BYTES[:-1], "bytes needed"),
        (ONGOING_BYTES + b"\0", "after the last field"),
        (b"\x00\x02" + ONGOING_BYTES[2:], "expected 0 or 1"),
        (ONGOING_BYTES[:16] + b"\x09" + ONGOING_BYTES[17:], "Unknown transaction state id 9"),
    ],
)
def test_values_that_do_not_parse_say_why(data, what):
    with pytest.raises(CorruptTransactionRecord, match=what):
        decode_value(data)


def test_states_have_kafkas_ids_and_names():
    assert [(s.id, s.state_name) for s in TransactionState] == [
        (0, "Empty"), (1, "Ongoing"), (2, "PrepareCommit"), (3, "PrepareAbort"), (4, "CompleteCommit"),
        (5, "CompleteAbort"), (6, "Dead"), (7, "PrepareEpochFence"),
    ]  # fmt: skip


def _oracle_v0(data: bytes) -> TransactionLogValue:
    """TransactionLogValue v0 read one field at a time from Kafka's layout, as the module's reader
    did before its load took the fixed fields in one unpack: the fast path must agree with it."""
    import struct

    at = 0

    def take(layout: str) -> int:
        nonlocal at
        (value,) = struct.unpack_from(layout, data, at)
        at += struct.calcsize(layout)
        return int(value)

    assert take(">h") == 0
    producer_id, epoch, timeout, status = take(">q"), take(">h"), take(">i"), take(">b")
    count = take(">i")
    partitions = None
    if count >= 0:
        entries = []
        for _ in range(count):
            length = take(">h")
            topic = data[at : at + length].decode()
            at += length
            entries.append((topic, tuple(take(">i") for _ in range(take(">i")))))
        partitions = tuple(entries)
    last_update, start = take(">q"), take(">q")
    assert at == len(data)
    return TransactionLogValue(producer_id, epoch, timeout, status, partitions, last_update, start)


def test_a_load_decodes_every_state_and_shape_as_kafkas_layout_says():
    """Many ids over every state, with null, empty and several partitions, epochs to 32767 and
    negative timestamps: each key and value decodes to what was written and to what the
    field-at-a-time oracle reads (the load's fast path changes nothing)."""
    topics = [(), (("clicks", (0,)),), (("clicks", (0, 1, 2)), ("billed", (7,))), (("é-topic", ()),)]
    for i in range(2000):
        state = list(TransactionState)[i % len(TransactionState)]
        partitions = None if state is TransactionState.EMPTY else topics[i % len(topics)]
        value = TransactionLogValue((1 << 62) + i, i * 17 % 32768, i * 1000, state.id, partitions,
                                    1_700_000_000_000 + i, -1 if i % 3 == 0 else 1_699_999_999_000 + i)  # fmt: skip
        data = encode_value(value)
        assert decode_value(data) == value == _oracle_v0(data)
        transactional_id = f"txn-{i}-{'ü' * (i % 4)}"
        assert decode_key(encode_key(transactional_id)) == transactional_id


def test_every_prefix_and_every_wrong_length_is_refused():
    v1 = bytes.fromhex("0001" "00000000000003e8" "0005" "0000ea60" "01" "02" "07" + b"clicks".hex() + "03"
                       "00000000" "00000001" "00" "0000018bcfe56800" "0000018bcfe56418" "00")  # fmt: skip
    assert decode_value(v1).partitions == (("clicks", (0, 1)),)
    for data in (ONGOING_BYTES, EMPTY_BYTES, v1):
        for end in range(len(data)):
            with pytest.raises(CorruptTransactionRecord):
                decode_value(data[:end])
    key = encode_key("t1")
    for end in range(len(key)):
        with pytest.raises(CorruptTransactionRecord):
            decode_key(key[:end])
    with pytest.raises(CorruptTransactionRecord, match="after the last field"):
        decode_key(key + b"x")
    with pytest.raises(CorruptTransactionRecord, match="expected 0"):
        decode_key(b"\x00\x01" + key[2:])
    with pytest.raises(CorruptTransactionRecord, match="not UTF-8"):
        decode_key(bytes.fromhex("0000" "0002") + b"\xff\xfe")
