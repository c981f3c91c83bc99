"""``python -m dedup dump-log`` and ``dump-snapshot``: Kafka's files printed as
kafka-dump-log.sh prints them, ``--json`` for machines, and exit status 1 with one line on
stderr for any file that is not sound (a torn tail, a batch whose CRC does not match, a
corrupt header, a corrupt or truncated snapshot)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kafka_batches import IDEMPOTENT_BATCH, build
from snapshot_vectors import BAD_CRC_VECTOR, EMPTY_KAFKA_VECTOR, TWO_ENTRY_KAFKA_VECTOR

import dedup
from dedup import reference
from dedup._types import INT32_MAX
from dedup.snapshot import write_snapshot
from dedup.tools.dump import dump_log_main, dump_snapshot_main

PID = 1000


def one_line(err: str, prefix: str) -> str:
    assert err.count("\n") == 1 and err.startswith(prefix), err
    return err


# --- dump-log ---------------------------------------------------------------------------------------


@pytest.fixture
def segment(tmp_path):
    """A segment from offset 100: an idempotent batch of 3 records, then one without a producer id."""
    data = bytearray(build(PID, 5, 0, 3) + build(-1, -1, -1, 1))
    dedup.records.append_batches(dedup.ProducerStateTable(), data, log_end_offset=100, write_offsets=True,
                                 partition_leader_epoch=0)  # fmt: skip
    path = tmp_path / "00000000000000000100.log"
    path.write_bytes(bytes(data))
    return path


def test_dump_log_prints_kafkas_batch_lines(segment, capsys):
    assert dump_log_main([str(segment)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[:2] == [f"Dumping {segment}", "Log starting offset: 100"]
    assert lines[2].startswith(
        "baseOffset: 100 lastOffset: 102 count: 3 baseSequence: 0 lastSequence: 2 producerId: 1000 "
        "producerEpoch: 5 partitionLeaderEpoch: 0 isTransactional: false isControl: false "
        "deleteHorizonMs: OptionalLong.empty position: 0 CreateTime: 1700000000002 size: "
    )
    crc = int(dedup.records.scan_batches(segment.read_bytes())["crc"][0])
    assert lines[2].endswith(f"magic: 2 compresscodec: none crc: {crc} isvalid: true")
    assert lines[3].startswith("baseOffset: 103 lastOffset: 103 count: 1 baseSequence: -1 lastSequence: -1 ")
    assert len(lines) == 4 and err == ""


def test_dump_log_of_a_torn_tail_prints_it_as_kafka_does_and_exits_1(segment, capsys):
    sound = segment.read_bytes()
    segment.write_bytes(sound + b"\x00\x01\x02")
    assert dump_log_main([str(segment)]) == 1  # exit status 0 before: the README promised 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == f"Found 3 invalid bytes at the end of {segment.name}"
    assert len(out.splitlines()) == 5  # the two batches are printed as before
    one_line(err, f"dump-log: {segment}: 3 invalid bytes at the end (a torn batch)")


def test_dump_log_json_and_crc_check(tmp_path, capsys):
    damaged = bytearray(build(PID, 5, 0, 2))
    damaged[-1] ^= 0xFF
    path = tmp_path / "segment.log"
    path.write_bytes(bytes(damaged))
    assert dump_log_main([str(path), "--json"]) == 1  # exit status 0 before, for a batch that fails its CRC
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document["batches"][0]["isvalid"] is False and document["invalid_bytes"] == 0
    assert document["batches"][0]["producerId"] == PID
    one_line(err, f"dump-log: {path}: 1 batch fails the CRC check (isvalid: false), the first at position 0")


def test_dump_log_names_every_problem_in_its_one_line(segment, capsys):
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF  # the second batch's CRC
    segment.write_bytes(bytes(data) + b"\x00" * 5)
    assert dump_log_main([str(segment)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[3].endswith("isvalid: false")
    one_line(err, f"dump-log: {segment}: 1 batch fails the CRC check (isvalid: false), the first at position ")
    assert err.rstrip().endswith("; 5 invalid bytes at the end (a torn batch)")


def test_dump_log_of_a_corrupt_header_mid_file_prints_what_came_before(segment, capsys):
    first = build(PID, 5, 0, 3)
    segment.write_bytes(first + b"\x00" * 8 + b"\x00\x00\x00\x05" + b"\x00" * 60)  # a batch length of 5
    assert dump_log_main([str(segment)]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and out.splitlines()[2].startswith("baseOffset: 0 lastOffset: 2 ")
    assert "Found" not in out
    one_line(err, f"dump-log: {segment}: ")


@pytest.mark.parametrize("content", [b"\x00" * 8 + b"\x00\x00\x00\x05" + b"\x00" * 60, None, "directory"])
def test_dump_log_corrupt_or_missing_file_is_one_line_and_exit_1(tmp_path, capsys, content):
    path = tmp_path / "00000000000000000000.log"
    if content == "directory":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    assert dump_log_main([str(path)]) == 1
    one_line(capsys.readouterr().err, f"dump-log: {path}: ")


def test_python_dash_m_dedup_dump_log(tmp_path):
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(IDEMPOTENT_BATCH)
    result = subprocess.run([sys.executable, "-m", "dedup", "dump-log", str(path)], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "producerId: 1000 producerEpoch: 5" in result.stdout and "isvalid: true" in result.stdout
    path.write_bytes(IDEMPOTENT_BATCH[:-1])  # torn: the whole file is one partial batch
    result = subprocess.run([sys.executable, "-m", "dedup", "dump-log", str(path)], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    torn = len(IDEMPOTENT_BATCH) - 1
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == f"Found {torn} invalid bytes at the end of {path.name}"
    one_line(result.stderr, f"dump-log: {path}: {torn} invalid bytes at the end")


# --- dump-log of a .txnindex ----------------------------------------------------------------------


def aborted_transactions_log(directory):
    """A log whose segment at 0 holds two aborted transactions (ABORT markers at 1 and 4)."""
    from kafka_batches import marker

    from dedup._types import Origin
    from dedup.log import PartitionLog

    log = PartitionLog(directory, clock=lambda: 1_700_000_000_000)
    log.append_as_leader(build(7, 0, 0, 1, transactional=True))  # 0
    log.append_as_leader(marker(7, 0, 0, commit=False), origin=Origin.COORDINATOR)  # 1
    log.append_as_leader(build(8, 0, 0, 1, transactional=True))  # 2
    log.append_as_leader(build(9, 0, 0, 1, transactional=True))  # 3
    log.append_as_leader(marker(8, 0, 0, commit=False), origin=Origin.COORDINATOR)  # 4: 9's is still open
    log.close()
    return directory / "00000000000000000000.txnindex"


def test_dump_log_of_a_txnindex_prints_kafkas_aborted_txn_lines(tmp_path, capsys):
    path = aborted_transactions_log(tmp_path / "t-0")
    assert dump_log_main([str(path)]) == 0
    out, err = capsys.readouterr()
    # DumpLogSegments.dumpTxnIndex's line for each AbortedTxn, in the file's order.
    assert out.splitlines() == [
        f"Dumping {path}",
        "version: 0 producerId: 7 firstOffset: 0 lastOffset: 1 lastStableOffset: 2",
        "version: 0 producerId: 8 firstOffset: 2 lastOffset: 4 lastStableOffset: 3",
    ]
    assert err == ""
    assert dump_log_main([str(path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["base_offset"] == 0 and document["error"] is None
    assert document["aborted_transactions"][1] == {
        "version": 0, "producerId": 8, "firstOffset": 2, "lastOffset": 4, "lastStableOffset": 3
    }  # fmt: skip


ENTRY = bytes.fromhex("0000" "0000000000000007" "0000000000000000" "0000000000000001" "0000000000000002")  # fmt: skip


@pytest.mark.parametrize(
    "content, message",
    [
        (ENTRY + ENTRY[:10], "CorruptIndexError: 10 bytes at the end are not a whole 34-byte entry"),
        (ENTRY + b"\x00\x01" + ENTRY[2:], "CorruptIndexError: unexpected aborted transaction version 1 at position 34"),
        (ENTRY + ENTRY, "CorruptIndexError: last offsets do not increase at position 34: 1 after 1"),
    ],
    ids=["torn", "version", "order"],
)
def test_dump_log_of_a_corrupt_txnindex_is_a_typed_error_on_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "00000000000000000000.txnindex"
    path.write_bytes(content)
    assert dump_log_main([str(path)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"Dumping {path}", "version: 0 producerId: 7 firstOffset: 0 lastOffset: 1 "
                                "lastStableOffset: 2"]  # fmt: skip  (the entry before the corruption)
    one_line(err, f"dump-log: {path}: {message}")
    assert dump_log_main([str(path), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["error"].startswith(message) and len(document["aborted_transactions"]) == 1


def test_dump_log_of_a_txnindex_checks_the_entries_against_its_base_offset(tmp_path, capsys):
    """TransactionIndex.sanityCheck: an entry whose marker is below the segment's base offset."""
    path = tmp_path / "00000000000000000005.txnindex"
    path.write_bytes(ENTRY)  # last offset 1 < 5
    assert dump_log_main([str(path)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"Dumping {path}"]
    one_line(err, f"dump-log: {path}: CorruptIndexError: last offset of aborted transaction ")
    assert "is less than start offset 5" in err


def test_python_dash_m_dedup_dump_log_of_a_txnindex(tmp_path):
    path = aborted_transactions_log(tmp_path / "t-0")
    result = subprocess.run([sys.executable, "-m", "dedup", "dump-log", str(path)], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "version: 0 producerId: 8 firstOffset: 2 lastOffset: 4 lastStableOffset: 3" in result.stdout
    path.write_bytes(path.read_bytes()[:-1])
    result = subprocess.run([sys.executable, "-m", "dedup", "dump-log", str(path)], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    one_line(result.stderr, f"dump-log: {path}: CorruptIndexError: 33 bytes at the end")


# --- dump-snapshot ----------------------------------------------------------------------------------


def test_dump_kafka_snapshot_as_kafka_dump_log_prints_it(tmp_path, capsys):
    path = tmp_path / "00000000000000000101.snapshot"
    path.write_bytes(TWO_ENTRY_KAFKA_VECTOR)
    assert dump_snapshot_main([str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        f"Dumping {path}",
        "producerId: 1 producerEpoch: 2 coordinatorEpoch: 3 currentTxnFirstOffset: OptionalLong[100] "
        "lastTimestamp: -1 firstSequence: 2147483646 lastSequence: 1 lastOffset: 2 offsetDelta: 3 timestamp: -1",
        "producerId: 11 producerEpoch: 12 coordinatorEpoch: 13 currentTxnFirstOffset: OptionalLong.empty "
        "lastTimestamp: 123456",
    ]


def test_dump_full_snapshot_lists_every_batch(tmp_path, capsys):
    table = dedup.ProducerStateTable(2)
    end = 0
    for sequence in range(3):
        end = table.append(1000, 5, sequence, 1, end, max_timestamp=10 + sequence).last_offset + 1
    path = tmp_path / "state.snapshot"
    write_snapshot(path, table)
    assert dump_snapshot_main([str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"Dumping {path}",
        "version: 2 window: 2 mapEndOffset: 3",
        "producerId: 1000 producerEpoch: 5 coordinatorEpoch: -1 currentTxnFirstOffset: OptionalLong.empty "
        "lastTimestamp: 12 firstSequence: 1 lastSequence: 1 lastOffset: 1 offsetDelta: 0 timestamp: 11 "
        "firstSequence: 2 lastSequence: 2 lastOffset: 2 offsetDelta: 0 timestamp: 12",
    ]


def test_dump_json(tmp_path, capsys):
    path = tmp_path / "00000000000000000101.snapshot"
    path.write_bytes(TWO_ENTRY_KAFKA_VECTOR)
    assert dump_snapshot_main([str(path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["format"] == "kafka" and document["window"] is None and document["map_end_offset"] == 101
    assert document["version"] == 1
    assert document["producers"][0] == {
        "producer_id": 1,
        "producer_epoch": 2,
        "coordinator_epoch": 3,
        "current_txn_first_offset": 100,
        "last_timestamp": -1,
        "batches": [
            {
                "first_sequence": INT32_MAX - 1,
                "last_sequence": 1,
                "first_offset": -1,
                "last_offset": 2,
                "offset_delta": 3,
                "timestamp": -1,
            }
        ],
    }
    assert document["producers"][1]["batches"] == [] and document["producers"][1]["current_txn_first_offset"] is None
    table = reference.ProducerStateTable()
    for offset in range(6):  # producers 0 and 1, three batches each
        table.append(offset % 2, 0, offset // 2, 1, offset, max_timestamp=offset // 2)
    full = tmp_path / "full.snapshot"
    write_snapshot(full, table)
    assert dump_snapshot_main([str(full), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["format"], document["version"], document["window"], document["map_end_offset"]) == (
        "full",
        2,
        5,
        6,
    )
    assert [len(p["batches"]) for p in document["producers"]] == [3, 3]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "No such file or directory"),
        (EMPTY_KAFKA_VECTOR[:7], "Kafka snapshot: too short"),
        (BAD_CRC_VECTOR, "Kafka snapshot: CRC-32C of bytes [6, 10) does not match"),
        (EMPTY_KAFKA_VECTOR + b"\x00", "Kafka snapshot: "),  # a byte too many: the CRC covers it
        (b"\x00\x07junk", "unknown file version"),
        ("directory", "Is a directory"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_dump_error_is_one_line_on_stderr(tmp_path, capsys, content, message, as_json):
    path = tmp_path / "00000000000000000001.snapshot"
    if content == "directory":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    assert dump_snapshot_main([str(path), *(["--json"] if as_json else [])]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    one_line(err, f"dump-snapshot: {path}: {message}")


def test_python_m_dedup_dump_snapshot(tmp_path, capsys):
    from dedup.__main__ import main

    path = tmp_path / "00000000000000000000.snapshot"
    path.write_bytes(EMPTY_KAFKA_VECTOR)
    assert main(["dump-snapshot", str(path)]) == 0
    assert capsys.readouterr().out == f"Dumping {path}\n"
