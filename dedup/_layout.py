"""Kafka's v2 batch layout and the codes dedup shares, each defined once (spec §8.1, §8.2, §2.7).

Every Python module takes these from here. The compiled core must keep C copies (the enums of
``src_cython/dedup/_records.pxd`` and ``_state.pxd``, which its loops read as constants); each
compiled module hands its values to :func:`check_compiled` when it is imported, and a copy that
disagrees is an ImportError naming the constant.

The batch header is one struct format; every field offset is computed from it:

>>> HEADER.format, RECORDS_OFFSET, PRODUCER_ID_OFFSET, LOG_OVERHEAD
('>qiibIhiqqqhii', 61, 43, 12)
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping

from ._types import Origin  # noqa: F401 - the C copy of it is checked (python_value)

# --- the v2 batch header (spec §8.1): big-endian, offsets from the batch's first byte ---------

#: The header's fields in order, with Kafka's names (those of ``BATCH_HEADER_DTYPE``) and
#: their struct codes.
HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("base_offset", "q"),
    ("batch_length", "i"),  # bytes after this field: the batch is batch_length + LOG_OVERHEAD bytes
    ("partition_leader_epoch", "i"),  # stamped by the leader, not covered by the CRC
    ("magic", "b"),
    ("crc", "I"),  # CRC-32C of [ATTRIBUTES_OFFSET, end of batch)
    ("attributes", "h"),  # the bits below
    ("last_offset_delta", "i"),
    ("base_timestamp", "q"),  # or the delete horizon, with ATTR_DELETE_HORIZON
    ("max_timestamp", "q"),
    ("producer_id", "q"),
    ("producer_epoch", "h"),
    ("base_sequence", "i"),
    ("record_count", "i"),
)
HEADER = struct.Struct(">" + "".join(code for _, code in HEADER_FIELDS))
_NAMES = tuple(name for name, _ in HEADER_FIELDS)


def header_prefix(last_field: str) -> struct.Struct:
    """The header's fields from the base offset through ``last_field``, for a reader that
    needs only those (``ValueError`` for a name that is not a field)."""
    return struct.Struct(">" + "".join(code for _, code in HEADER_FIELDS[: _NAMES.index(last_field) + 1]))


def field_offset(name: str) -> int:
    """Where header field ``name`` starts: the size of the fields before it (no padding)."""
    index = _NAMES.index(name)
    return header_prefix(_NAMES[index - 1]).size if index else 0


def field_struct(name: str) -> struct.Struct:
    """Header field ``name`` alone, to read or write it in place at :func:`field_offset`."""
    return struct.Struct(">" + HEADER_FIELDS[_NAMES.index(name)][1])


BASE_OFFSET_OFFSET = field_offset("base_offset")
BATCH_LENGTH_OFFSET = field_offset("batch_length")
PARTITION_LEADER_EPOCH_OFFSET = field_offset("partition_leader_epoch")
MAGIC_OFFSET = field_offset("magic")
CRC_OFFSET = field_offset("crc")
ATTRIBUTES_OFFSET = field_offset("attributes")
LAST_OFFSET_DELTA_OFFSET = field_offset("last_offset_delta")
BASE_TIMESTAMP_OFFSET = field_offset("base_timestamp")
MAX_TIMESTAMP_OFFSET = field_offset("max_timestamp")
PRODUCER_ID_OFFSET = field_offset("producer_id")
PRODUCER_EPOCH_OFFSET = field_offset("producer_epoch")
BASE_SEQUENCE_OFFSET = field_offset("base_sequence")
RECORDS_COUNT_OFFSET = field_offset("record_count")
#: Kafka's RECORD_BATCH_OVERHEAD: the records start here.
RECORDS_OFFSET = HEADER.size
#: Kafka's LOG_OVERHEAD: the base offset and batch length, the bytes batch_length does not count.
LOG_OVERHEAD = PARTITION_LEADER_EPOCH_OFFSET
#: The smallest batch_length: a header and no records.
MIN_BATCH_LENGTH = RECORDS_OFFSET - LOG_OVERHEAD
MAGIC_V2 = 2


_BASE_OFFSET_FIELD = field_struct("base_offset")
_PARTITION_LEADER_EPOCH_FIELD = field_struct("partition_leader_epoch")


def write_leader_fields(data: bytearray, position: int, base_offset: int, leader_epoch: int) -> None:
    """Stamp the batch at ``position`` of ``data`` as a leader does (spec §8.1): its base offset
    and, if ``leader_epoch`` >= 0, its partition leader epoch. Neither is covered by the CRC."""
    _BASE_OFFSET_FIELD.pack_into(data, position + BASE_OFFSET_OFFSET, base_offset)
    if leader_epoch >= 0:
        _PARTITION_LEADER_EPOCH_FIELD.pack_into(data, position + PARTITION_LEADER_EPOCH_OFFSET, leader_epoch)


# --- attributes (spec §8.2): only the low byte is used ------------------------------------------

ATTR_COMPRESSION_MASK = 0x07
ATTR_TIMESTAMP_TYPE = 0x08  # set: LogAppendTime
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
ATTR_DELETE_HORIZON = 0x40  # base_timestamp holds the delete horizon

#: Kafka's compression codecs by the number in the attributes' low bits.
COMPRESSION_NAMES = ("none", "gzip", "snappy", "lz4", "zstd")


# --- codes ---------------------------------------------------------------------------------------


class ErrorCode(enum.IntEnum):
    """Kafka's wire error codes that dedup returns, by Kafka's names (spec §2.7, Kafka's
    ``Errors``). Each error class in :mod:`dedup.errors` takes its code from here; the tables
    report these codes per batch."""

    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    NOT_LEADER_OR_FOLLOWER = 6
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    TRANSACTION_COORDINATOR_FENCED = 52
    KAFKA_STORAGE_ERROR = 56
    FENCED_LEADER_EPOCH = 74
    INVALID_RECORD = 87
    THROTTLING_QUOTA_EXCEEDED = 89
    PRODUCER_FENCED = 90


class Reason(enum.IntEnum):
    """Why a batch was refused: the field at fault, which picks the error message (see
    :func:`dedup._messages.record_error`)."""

    NONE = 0
    BASE_OFFSET = 1  # rule 3: a client batch must have base offset 0
    CRC = 2  # rule 5
    RECORD_COUNT = 3  # rule 6
    CONTROL_FROM_CLIENT = 4  # rule 7
    NO_SEQUENCE = 5  # rule 8
    OFFSET_DELTA = 6  # a negative last offset delta
    OFFSETS_BACKWARDS = 7  # a follower batch below the log end offset
    MARKER = 8  # a control batch whose first record is no marker
    TABLE = 9  # the producer-state table refused it (45, 47, 48, 52)
    OFFSET_OVERFLOW = 10  # the log end offset after it would pass 2^63-1


# --- the compiled copies ---------------------------------------------------------------------

#: How a C enum name maps to its Python definition: by prefix to a member of the enum of that
#: name here, otherwise to this module's constant of the same name.
_ENUMS_BY_PREFIX = {"ERR_": "ErrorCode", "REASON_": "Reason", "ORIGIN_": "Origin"}


def python_value(c_name: str) -> int:
    """The Python definition of the C constant ``c_name``: ``ERR_X`` is ``ErrorCode.X``,
    ``REASON_X`` is ``Reason.X``, ``ORIGIN_X`` is ``Origin.X``, any other name this module's
    constant of that name. ``LookupError`` if there is none."""
    for prefix, codes in _ENUMS_BY_PREFIX.items():
        if c_name.startswith(prefix):
            return int(globals()[codes][c_name[len(prefix) :]])
    value = globals().get(c_name)
    if not isinstance(value, int):
        raise LookupError(c_name)
    return value


class CompiledCopyError(ImportError):
    """A compiled module's C constant differs from its definition here (or has none)."""


def check_compiled(module: str, constants: Mapping[str, int]) -> None:
    """Check a compiled module's C constants (by their C names) against the definitions here.

    :class:`CompiledCopyError` (an ``ImportError``) naming the first constant whose value
    differs or that has no Python definition: the ``.pxd`` and this module must be changed
    together, and the extension rebuilt.
    """
    for name, value in constants.items():
        try:
            expected: int | None = python_value(name)
        except LookupError:
            expected = None
        if value != expected:
            defined = "has no definition" if expected is None else f"is {expected}"
            raise CompiledCopyError(
                f"{module}: the C constant {name} is {value} in its .pxd but {defined} in dedup._layout: "
                "change both together and rebuild (`pip install -e .`)",
                name=module,
            )
