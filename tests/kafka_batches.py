"""Kafka v2 batches for tests, built by an independent encoder (kafka-python) or, for what
it cannot build (control batches, broken fields), from the spec's layout (§8.1, §8.3)."""

from __future__ import annotations

import struct

import crc32c as pypi_crc32c
from kafka.record.default_records import DefaultRecordBatchBuilder

HEADER = struct.Struct(">qiibIhiqqqhii")  # spec §8.1, 61 bytes
FIELDS = {  # name: (offset, struct format)
    "base_offset": (0, ">q"),
    "batch_length": (8, ">i"),
    "partition_leader_epoch": (12, ">i"),
    "magic": (16, ">b"),
    "crc": (17, ">I"),
    "attributes": (21, ">h"),
    "last_offset_delta": (23, ">i"),
    "base_timestamp": (27, ">q"),
    "max_timestamp": (35, ">q"),
    "producer_id": (43, ">q"),
    "producer_epoch": (51, ">h"),
    "base_sequence": (53, ">i"),
    "record_count": (57, ">i"),
}
TIMESTAMP = 1_700_000_000_000

# The spec's §8.6 vectors.
COMMIT_MARKER = bytes.fromhex(
    "000000000000002a00000042000000000240d514e90030000000000000018bcfe568000000018bcfe5680000000000000003e8"
    "0005ffffffff000000012000000008000000010c00000000000700"
)
IDEMPOTENT_BATCH = bytes.fromhex(
    "000000000000000000000039ffffffff02a605d7d30000000000000000018bcfe568000000018bcfe5680000000000000003e8"
    "000500000000000000010e00000001027600"
)


def build(
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    records: int = 1,
    *,
    transactional: bool = False,
    timestamp: int = TIMESTAMP,
    value: bytes = b"click",
) -> bytes:
    """A client's batch, as kafka-python's producer builds it (base offset 0)."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=int(transactional),
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        batch_size=1 << 20,
    )
    for offset in range(records):
        builder.append(offset, timestamp=timestamp + offset, key=None, value=value + b"%d" % offset, headers=[])
    return bytes(builder.build())


def fix_crc(batch: bytes | bytearray) -> bytes:
    """The batch with its CRC recomputed (CRC-32C of bytes [21, end), spec §8.5)."""
    out = bytearray(batch)
    struct.pack_into(">I", out, 17, pypi_crc32c.crc32c(bytes(out[21:])))
    return bytes(out)


def patch(batch: bytes, recompute_crc: bool = True, **fields: int) -> bytes:
    """The batch with header fields replaced (and its CRC fixed, unless told not to)."""
    out = bytearray(batch)
    for name, value in fields.items():
        offset, layout = FIELDS[name]
        struct.pack_into(layout, out, offset, value)
    return fix_crc(out) if recompute_crc else bytes(out)


def varint(value: int) -> bytes:
    """A zig-zag varint (varlong for 64-bit values), as Kafka's records use them (spec §8.3)."""
    raw = ((value << 1) ^ (value >> 63)) & ((1 << 64) - 1)  # zig-zag
    out = bytearray()
    while True:
        byte = raw & 0x7F
        raw >>= 7
        if raw:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def marker(
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int,
    *,
    commit: bool = True,
    base_offset: int = 0,
    timestamp: int = TIMESTAMP,
    control_type: int | None = None,
) -> bytes:
    """A COMMIT/ABORT marker batch (spec §8.3: transactional + control, sequence -1, one
    record whose key is version 0 + type and whose value is version 0 + coordinator epoch)."""
    key = struct.pack(">hh", 0, (1 if commit else 0) if control_type is None else control_type)
    value = struct.pack(">hi", 0, coordinator_epoch)
    body = b"\x00" + varint(0) + varint(0) + varint(len(key)) + key + varint(len(value)) + value + varint(0)
    records = varint(len(body)) + body
    header = HEADER.pack(
        base_offset, 49 + len(records), -1, 2, 0, 0x30, 0, timestamp, timestamp, producer_id, producer_epoch, -1, 1
    )
    return fix_crc(header + records)


def empty_control_batch(producer_id: int, producer_epoch: int, *, base_offset: int = 0) -> bytes:
    """A control batch left with no records by compaction (spec §2.2: a no-op)."""
    header = HEADER.pack(base_offset, 49, -1, 2, 0, 0x30, 0, TIMESTAMP, TIMESTAMP, producer_id, producer_epoch, -1, 0)
    return fix_crc(header)
