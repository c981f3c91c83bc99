# What a snapshot reader or writer found wrong, in words (part of _snapshot.pyx, which includes
# it): a Problem's kind (_snapshot.pxd, ProblemKind) and values become the message of
# CorruptSnapshotError (readers) or ValueError (the full format's writer). The twin,
# dedup.reference.snapshot, words each one the same.
#
# Spec: docs/spec.md §4.4 steps 1-2 (Kafka's CorruptSnapshotException: an unknown version, a
# failed validation, a CRC mismatch naming both CRCs).

# --- problems -------------------------------------------------------------------------------

cdef inline int problem(Problem* p, int kind) noexcept nogil:
    p.kind = kind
    return kind


cdef void problem_clear(Problem* p) noexcept nogil:
    p.kind = PROBLEM_NONE
    p.entry = -1
    p.item = -1
    p.count = 0
    p.producer_id = 0
    p.found = 0
    p.other = 0
    p.bound = 0
    p.position = 0


cdef str problem_message(const Problem* p, Py_ssize_t size, object first_bytes):
    """What a reader found, as expected versus found. The twin words each one the same."""
    cdef int kind = p.kind
    entry, item, count, pid = p.entry, p.item, p.count, p.producer_id
    found, other, bound, position = p.found, p.other, p.bound, p.position
    if kind == KAFKA_BAD_VERSION:
        return f"Kafka snapshot: unknown file version: expected {SNAPSHOT_VERSION}, found {found}"
    if kind == KAFKA_TOO_SHORT:
        return (f"Kafka snapshot: too short: expected at least {KAFKA_HEADER_SIZE} bytes (version, crc, count), "
                f"found {size}")
    if kind == KAFKA_NEGATIVE_COUNT:
        return f"Kafka snapshot: negative producer count: expected >= 0, found {count}"
    if kind == KAFKA_SIZE:
        what = "short file" if size < bound else f"{size - bound} trailing bytes"
        return f"Kafka snapshot: {what}: {count} producers need 10 + 46 x {count} = {bound} bytes, found {size}"
    if kind == KAFKA_BAD_CRC:
        return (f"Kafka snapshot: CRC-32C of bytes [{KAFKA_CRC_START}, {size}) does not match: "
                f"stored crc {found:#010x}, computed crc {other:#010x}")
    if kind == KAFKA_NEGATIVE_PRODUCER_ID:
        return f"Kafka snapshot: entry {entry}: producer id {pid} is negative: expected >= 0"
    if kind == KAFKA_NEGATIVE_OFFSET_DELTA:
        return (f"Kafka snapshot: entry {entry} (producer id {pid}): offset delta {found} is negative: "
                f"expected >= 0")
    if kind == FULL_BAD_MAGIC:
        return f"full snapshot: bad magic: expected {MAGIC!r}, found {first_bytes!r}"
    if kind == FULL_TOO_SHORT:
        what = "header and crc" if bound == FULL_MIN_SIZE else "header, escape count and crc"
        return f"full snapshot: too short: expected at least {bound} bytes ({what}), found {size}"
    if kind == FULL_BAD_VERSION:
        return f"full snapshot: unknown version: expected {FULL_VERSION_1} or {FULL_VERSION_2}, found {found}"
    if kind == FULL_BAD_WINDOW:
        return f"full snapshot: window out of range: expected 1..255, found {found}"
    if kind == FULL_NEGATIVE_MAP_END_OFFSET:
        return f"full snapshot: negative map end offset: expected >= 0, found {found}"
    if kind == FULL_NEGATIVE_COUNT:
        return f"full snapshot: negative producer count: expected >= 0, found {found}"
    if kind == FULL_SHORT_ENTRY:
        return (f"full snapshot: short file: entry {entry} of {count} needs {FULL_ENTRY_SIZE} bytes at byte "
                f"{position}, found {found} before the crc")
    if kind == FULL_BATCH_COUNT_OVER_WINDOW:
        return f"full snapshot: entry {entry}: batch count {found} exceeds the window: expected 0..{bound}"
    if kind == FULL_SHORT_BATCHES:
        return (f"full snapshot: short file: the {other} batches of entry {entry} of {count} need "
                f"{FULL_BATCH_SIZE * other} bytes at byte {position}, found {found} before the crc")
    if kind == FULL_TRAILING_BYTES:
        return (f"full snapshot: {size - FULL_CRC_SIZE - position} trailing bytes: {count} producers end at byte "
                f"{position}, expected a {position + FULL_CRC_SIZE}-byte file, found {size} bytes")
    if kind == FULL_BAD_CRC:
        return (f"full snapshot: CRC-32C of bytes [0, {size - FULL_CRC_SIZE}) does not match: "
                f"stored crc {found:#010x}, computed crc {other:#010x}")
    if kind == FULL2_NEGATIVE_ESCAPE_COUNT:
        return f"full snapshot: negative escaped value count: expected >= 0, found {found}"
    if kind == FULL2_SIZE:
        what = "short file" if size < bound else f"{size - bound} trailing bytes"
        return (f"full snapshot: {what}: {count} producers of {position} bytes (window {found}) and {other} "
                f"escaped values need 20 + {position} x {count} + 8 x {other} + 8 = {bound} bytes, found {size}")
    if kind == FULL2_UNUSED_ESCAPES:
        return (f"full snapshot: {bound - found} escaped values unused: the records use {found} of the {bound} "
                "the file holds")
    if kind == FULL_NEGATIVE_PRODUCER_ID:
        return f"full snapshot: entry {entry}: producer id {pid} is negative: expected >= 0"
    where = f"full snapshot: entry {entry} (producer id {pid})"
    if kind == FULL_BAD_TXN_FIRST_OFFSET:
        return f"{where}: current txn first offset {found}: expected -1 (none) or an offset in [0, {bound})"
    if kind == FULL_REPEATED_PRODUCER_ID:
        return (f"full snapshot: entry {entry}: producer id {pid} repeats entry {item}: "
                "expected unique producer ids")
    where = f"{where}, batch {item}"
    if kind == FULL2_MISSING_ESCAPE:
        return f"{where}: escaped value {found} is missing: the file holds {bound}"
    if kind == FULL_NEGATIVE_OFFSET_DELTA:
        return f"{where}: offset delta {found} is negative: expected >= 0"
    if kind == FULL_NEGATIVE_FIRST_OFFSET:
        return (f"{where}: last offset {found} is below its offset delta {other}: "
                "expected last offset >= offset delta (a first offset >= 0)")
    if kind == FULL_OFFSET_PAST_MAP_END:
        return f"{where}: last offset {found} is not below the map end offset: expected < {bound}"
    return f"snapshot problem {kind}"  # pragma: no cover - every kind is worded above


cdef str unwritable_message(const Problem* p):
    """Why full_encode refused a table. The twin words it the same."""
    hint = ("; only a table loaded from a Kafka snapshot can hold this, and the full format's reader "
            "would reject it")
    if p.kind == FULL_BAD_TXN_FIRST_OFFSET:
        return (f"cannot write a full snapshot: producer {p.producer_id}: current txn first offset {p.found} "
                f"is not below the table's map end offset {p.bound}{hint}")
    if p.kind == FULL_NEGATIVE_FIRST_OFFSET:
        return (f"cannot write a full snapshot: producer {p.producer_id}, batch {p.item}: last offset {p.found} "
                f"is below its offset delta {p.other} (a negative first offset){hint}")
    return (f"cannot write a full snapshot: producer {p.producer_id}, batch {p.item}: last offset {p.found} "
            f"is not below the table's map end offset {p.bound}{hint}")


cdef int raise_corrupt(const Problem* p, const unsigned char[::1] view) except -1:
    raise CorruptSnapshotError(problem_message(p, view.shape[0], bytes(view[:4])))
