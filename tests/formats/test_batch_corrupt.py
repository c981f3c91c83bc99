"""Bad bytes to dedup.batch's record-level decoder (spec §8): random bytes, random records
under valid batch headers, bit flips, splices and truncations raise only ``CorruptRecordError``
(never IndexError, struct.error, UnicodeDecodeError, ...) (hypothesis); every short truncation
is a torn tail; and each corruption is named: the batch, the record, the field, expected versus
found. The ``scanner`` fixture (conftest) runs each test with the compiled header scan and CRC
and with the pure-Python twin's.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kafka_batches import COMMIT_MARKER, IDEMPOTENT_BATCH, TIMESTAMP, fix_crc, patch, varint

from dedup._types import INT32_MAX, INT64_MAX, INT64_MIN
from dedup.batch import (
    decode_records,
    encode_batch,
    encode_marker,
)
from dedup.errors import CorruptRecordError, TruncatedBatchError

PID = 1000
property_settings = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- helpers -----------------------------------------------------------------------------------


def fix_all_crcs(data):
    """``data`` with the CRC of every complete batch recomputed (as far as lengths allow)."""
    out, position = bytearray(data), 0
    while position + 21 <= len(out):
        (length,) = struct.unpack_from(">i", out, position + 8)
        end = position + 12 + length
        if length < 49 or end > len(out):
            break
        out[position:end] = fix_crc(out[position:end])
        position = end
    return bytes(out)


def decoded_or_corrupt(data, control=False):
    """decode_records' result, or None for CorruptRecordError; any other exception fails."""
    try:
        return decode_records(data, control=control)
    except CorruptRecordError as error:
        assert str(error).startswith("batch "), error
        return None


def records_section(*records):
    return b"".join(varint(len(body)) + body for body in records)


def with_records(records, count, base_offset=0):
    """A batch (no producer) around a raw records section, with a right CRC."""
    header = struct.pack(">qiibIhiqqqhii", base_offset, 49 + len(records), -1, 2, 0, 0, max(count - 1, 0), 5, 5,
                         -1, -1, -1, count)  # fmt: skip
    return fix_crc(header + records)


#: A record: attributes, timestamp delta 0, offset delta 0, null key, value b"v", no headers.
GOOD = b"\x00" + varint(0) + varint(0) + varint(-1) + varint(1) + b"v" + varint(0)


# --- random bytes, records, flips and truncations ------------------------------------------------------


def sample_log():
    return (
        encode_batch([b"a", None, b"c" * 200], keys=[None, b"k", b""], headers=[[("h", b"1")], [], [("é", None)]],
                     producer_id=PID, producer_epoch=1, base_sequence=0, timestamps=[5, 1 << 40, 3])
        + encode_marker(producer_id=PID, producer_epoch=1, commit=False, coordinator_epoch=2, timestamp=9,
                        base_offset=3)
        + encode_batch([b"d"], timestamp=TIMESTAMP, base_offset=4)
    )  # fmt: skip


@property_settings
@given(st.binary(max_size=300), st.booleans())
@example(b"", False)
@example(b"\x00" * 12, False)
def test_random_bytes_raise_only_corrupt_record_error(scanner, data, control):
    decoded_or_corrupt(data, control)
    decoded_or_corrupt(fix_all_crcs(data), control)


@st.composite
def batch_shaped(draw):
    """Random records sections under valid batch headers with a right CRC: the record parser's
    input, not the scanner's."""
    body = draw(st.binary(max_size=120))
    header = struct.pack(
        ">qiibIhiqqqhii", draw(st.integers(INT64_MIN, INT64_MAX)), 49 + len(body), -1, 2, 0,
        draw(st.sampled_from([0, 0x08, 0x10, 0x20, 0x30, 0x40, 0x01])), draw(st.integers(-2, 5)),
        draw(st.integers(INT64_MIN, INT64_MAX)), draw(st.integers(INT64_MIN, INT64_MAX)), -1, -1, -1,
        draw(st.one_of(st.integers(-2, 6), st.integers(-(1 << 31), INT32_MAX))),
    )  # fmt: skip
    return fix_crc(header + body)


# Varints no Kafka writer produces: cut short, over-long, past 32 bits, past 64 bits.
weird_varints = st.sampled_from([b"\x80", b"\xff" * 5 + b"\x01", b"\xff\xff\xff\xff\x1f", b"\xff" * 9 + b"\x02"])


@st.composite
def almost_records(draw):
    """A batch of records that are almost right: every length and count honest or a little
    off, every varint sometimes malformed, header keys random bytes (not always UTF-8)."""

    def number(value):
        return draw(st.one_of(st.just(varint(value)), st.just(varint(value)), st.integers(-3, 9).map(varint),
                              weird_varints))  # fmt: skip

    def sized(content):
        return number(-1) if content is None else number(len(content)) + content

    records = []
    for _ in range(draw(st.integers(0, 3))):
        key, value = (
            draw(st.one_of(st.none(), st.binary(max_size=6))),
            draw(st.one_of(st.none(), st.binary(max_size=6))),
        )
        headers = draw(st.lists(st.tuples(st.binary(max_size=4), st.one_of(st.none(), st.binary(max_size=4))),
                                max_size=2))  # fmt: skip
        body = b"\x00" + number(draw(st.integers(INT64_MIN, INT64_MAX))) + number(draw(st.integers(-2, 3)))
        body += sized(key) + sized(value) + number(len(headers))
        body += b"".join(sized(header_key) + sized(header_value) for header_key, header_value in headers)
        records.append(number(len(body)) + body)
    count = len(records) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    return with_records(b"".join(records), count, base_offset=draw(st.sampled_from([0, INT64_MAX])))


@property_settings
@given(st.lists(st.one_of(batch_shaped(), almost_records()), min_size=1, max_size=3), st.booleans())
@example([with_records(records_section(GOOD[:-1] + varint(1) + varint(2) + b"\xff\xfe" + varint(-1)), 1)], False).via(
    "a header key that is not UTF-8"
)
def test_random_records_raise_only_corrupt_record_error(scanner, parts, control):
    decoded_or_corrupt(b"".join(parts), control)


@property_settings
@given(st.data(), st.booleans(), st.booleans())
def test_bit_flips_splices_and_truncations_raise_only_corrupt_record_error(scanner, data, recompute_crc, control):
    log = sample_log()
    mutated = bytearray(log)
    for _ in range(data.draw(st.integers(1, 4))):
        if data.draw(st.booleans()):
            bit = data.draw(st.integers(0, len(mutated) * 8 - 1))
            mutated[bit // 8] ^= 1 << (bit % 8)
        else:
            start = data.draw(st.integers(0, len(mutated) - 1))
            mutated[start : start + 4] = data.draw(st.binary(min_size=1, max_size=4))
    if recompute_crc:
        mutated = bytearray(fix_all_crcs(mutated))
    cut = data.draw(st.one_of(st.just(len(mutated)), st.integers(0, len(mutated))))
    result = decoded_or_corrupt(bytes(mutated[:cut]), control)
    if result is not None and not recompute_crc:
        # Under the CRC (every burst of 32 bits or less is caught) nothing changed: only the
        # base offsets and leader epochs can differ, or the records after a cut.
        original = decode_records(log, control=control)
        assert [record[1:] for record in result] == [record[1:] for record in original[: len(result)]]


@pytest.mark.parametrize("cut", range(1, 40))
def test_every_short_truncation_is_a_torn_tail(cut, scanner):
    log = sample_log()
    with pytest.raises(TruncatedBatchError, match="truncated"):
        decode_records(log[:-cut])


# --- decoding errors name the batch, the record, the field ---------------------------------------------


CORRUPTIONS = {
    "crc": (patch(IDEMPOTENT_BATCH, recompute_crc=False, max_timestamp=6), "(stored): Record is corrupt"),
    "compressed": (patch(IDEMPOTENT_BATCH, attributes=2), "compression: expected 0 (none), found 2 (snappy)"),
    "magic 1": (patch(IDEMPOTENT_BATCH, magic=1), "magic: expected 2 (rule 1), found 1"),
    "too few records": (with_records(records_section(GOOD), 2), "record_count: expected 2 records, found 1"),
    "too many records": (with_records(records_section(GOOD, GOOD), 1), "found 8 more bytes after them"),
    "negative count": (with_records(b"", -1), "record_count: expected 0 or more, found -1"),
    "record length past the batch": (with_records(varint(8) + GOOD, 1), "length: expected 0 to 7"),
    "record longer than its fields": (with_records(varint(8) + GOOD + b"\x00", 1),
                                      "expected the record's fields to take 8 bytes, found 7"),
    "varint runs past the record": (with_records(records_section(b"\x00\x80"), 1),
                                    "timestamp_delta: expected a varint, found 1 byte(s)"),
    "varint too long": (with_records(records_section(b"\x00" + b"\xff" * 11), 1),
                        "timestamp_delta: expected a varint of at most 10 bytes"),
    "varint past 32 bits": (with_records(records_section(b"\x00\x00" + b"\xff" * 4 + b"\x7f" + b"\x00" * 4), 1),
                            "offset_delta: expected a varint that fits in 32 bits, found one of 35 bits"),
    "key length -2": (with_records(records_section(b"\x00\x00\x00" + varint(-2) + varint(-1) + varint(0)), 1),
                      "key length: expected -1 (null) to 2"),
    "value past the record": (with_records(records_section(b"\x00\x00\x00\x01" + varint(5) + b"ab\x00"), 1),
                              "value length: expected -1 (null) to 3"),
    "negative header count": (with_records(records_section(GOOD[:-1] + varint(-1)), 1),
                              "header_count: expected 0 or more, found -1"),
    "null header key": (with_records(records_section(GOOD[:-1] + varint(1) + varint(-1) + varint(-1)), 1),
                        "header 0 key length: expected 0 (a header key is a non-null string) to 1 (the bytes left "
                        "in the record), found -1"),
    "header key not UTF-8": (with_records(records_section(GOOD[:-1] + varint(1) + varint(2) + b"\xc3\x28"
                                                          + varint(-1)), 1),
                             "header 0 key: expected UTF-8 (Kafka's header keys are strings), found bytes c3"),
    "offset past int64": (with_records(records_section(b"\x00\x00" + varint(1) + GOOD[3:]), 1, base_offset=INT64_MAX),
                          "offset_delta: expected base_offset + offset_delta within int64"),
}  # fmt: skip


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_is_named(name, scanner):
    data, words = CORRUPTIONS[name]
    log = sample_log() + data
    with pytest.raises(CorruptRecordError) as caught:
        decode_records(log)
    message = str(caught.value)
    assert message.startswith(f"batch 3 at position {len(sample_log())}: ") and words in message, message
    assert type(caught.value) is CorruptRecordError and caught.value.code == 2
    if name not in ("crc", "compressed", "magic 1", "too few records", "too many records", "negative count"):
        assert "record 0 at position" in message


def test_the_crc_of_a_skipped_control_batch_is_still_checked(scanner):
    broken = patch(COMMIT_MARKER, recompute_crc=False, max_timestamp=0)
    with pytest.raises(CorruptRecordError, match="batch 0 at position 0: crc"):
        decode_records(broken)


def test_a_compressed_control_batch_is_only_refused_when_read(scanner):
    compressed = patch(COMMIT_MARKER, attributes=0x31)
    assert decode_records(compressed) == []
    with pytest.raises(CorruptRecordError, match="compressed batches are not decoded"):
        decode_records(compressed, control=True)


def test_magic_error_keeps_the_scan_details(scanner):
    with pytest.raises(CorruptRecordError, match="reads v2 batches only") as caught:
        decode_records(IDEMPOTENT_BATCH + patch(IDEMPOTENT_BATCH, magic=0))
    assert caught.value.valid_bytes == len(IDEMPOTENT_BATCH) and len(caught.value.headers) == 1
