"""The spec's §4.7 snapshot vectors (Kafka's format, byte for byte), shared by the snapshot
codec's tests and dump-snapshot's, and the entries the two-entry file holds."""

from dedup._types import BatchMetadata, ProducerStateEntry

EMPTY_KAFKA_VECTOR = bytes.fromhex("000148674bc700000000")
TWO_ENTRY_KAFKA_VECTOR = bytes.fromhex(
    "0001fedf4e50000000020000000000000001000200000001000000000000000200000003ffffffffffffffff0000"
    "00030000000000000064000000000000000b000cffffffffffffffffffffffff00000000000000000001e2400000"
    "000dffffffffffffffff"
)
BAD_CRC_VECTOR = EMPTY_KAFKA_VECTOR[:2] + bytes(4) + EMPTY_KAFKA_VECTOR[6:]

#: The entries of TWO_ENTRY_KAFKA_VECTOR (§4.7).
TWO_ENTRIES = (
    ProducerStateEntry(
        producer_id=1,
        producer_epoch=2,
        batches=(BatchMetadata(last_sequence=1, last_offset=2, offset_delta=3, timestamp=-1),),
        coordinator_epoch=3,
        last_timestamp=-1,
        current_txn_first_offset=100,
    ),
    ProducerStateEntry(
        producer_id=11,
        producer_epoch=12,
        batches=(),
        coordinator_epoch=13,
        last_timestamp=123456,
        current_txn_first_offset=None,
    ),
)
