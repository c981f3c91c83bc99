"""The spec's §4.7 snapshot vectors (Kafka's format, byte for byte), shared by the snapshot
codec's tests and dump-snapshot's."""

EMPTY_KAFKA_VECTOR = bytes.fromhex("000148674bc700000000")
TWO_ENTRY_KAFKA_VECTOR = bytes.fromhex(
    "0001fedf4e50000000020000000000000001000200000001000000000000000200000003ffffffffffffffff0000"
    "00030000000000000064000000000000000b000cffffffffffffffffffffffff00000000000000000001e2400000"
    "000dffffffffffffffff"
)
BAD_CRC_VECTOR = EMPTY_KAFKA_VECTOR[:2] + bytes(4) + EMPTY_KAFKA_VECTOR[6:]
