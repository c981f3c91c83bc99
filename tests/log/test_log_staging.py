"""A leader's append of several client batches, in Kafka's order (spec §2.1 rules 10-18, §3.1).

Kafka's UnifiedLog.analyzeAndValidateProducerState looks each batch's duplicate up in the
producer's committed entry only (``producerStateManager.lastEntry`` + ``findDuplicateBatch``)
and validates it with the producer's ProducerAppendInfo, which stages the append's batches in
``updatedEntry`` and still knows ``currentEntry``, the entry before the append (rule 16 exempts
every batch of a producer whose ``currentEntry`` has no epoch). The cases below are what Kafka
does; the property test drives the log with random appends against ``KafkaModel``, that
algorithm written out here from the spec, on both twins of the table.
"""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from kafka_batches import TIMESTAMP, build

from dedup import InvalidProducerEpochError, OutOfOrderSequenceError, scan_batches
from dedup._types import BatchMetadata, ProducerStateEntry
from dedup.errors import KafkaError
from dedup.log import PartitionLog
from dedup.records import crc_valid

NOW = 1_700_000_000_000


def state(log):
    table = log.producer_state
    return table.map_end_offset, {pid: table.entry(pid) for pid in table}


@pytest.fixture
def open_log(tmp_path, impl):
    opened = []

    def opener(name="clicks-0", **options):
        log = PartitionLog(tmp_path / name, table_class=impl, clock=lambda: NOW, **options)
        opened.append(log)
        return log

    yield opener
    for log in opened:
        log.close_uncleanly()


# -- what Kafka does --------------------------------------------------------------------------


def test_the_same_batch_twice_in_one_append_of_a_new_producer_is_written_twice(open_log):
    # The committed entry (lastEntry) holds nothing, so neither batch is a duplicate; the
    # second is exempt from the sequence rule as the producer had no epoch before the append
    # (rule 16, ProducerAppendInfo.checkSequence). Before, the log answered "duplicate,
    # offsets 0-2" for a batch it had never written, and wrote nothing.
    log = open_log()
    batch = build(1000, 0, 0, 3)
    info = log.append_as_leader(batch + batch, leader_epoch=4)
    assert (info.base_offset, info.last_offset, info.duplicate, info.batches) == (0, 5, False, 2)
    data = log.read(0)
    headers = scan_batches(data)
    assert headers["base_offset"].tolist() == [0, 3] and headers["partition_leader_epoch"].tolist() == [4, 4]
    assert crc_valid(data, headers).all()
    entry = log.producer_state.entry(1000)
    assert [(b.first_sequence, b.last_sequence, b.first_offset, b.last_offset) for b in entry.batches] == [
        (0, 2, 0, 2),
        (0, 2, 3, 5),
    ]
    # A retry now finds the oldest of the two, as Kafka's findFirst.
    retry = log.append_as_leader(batch, leader_epoch=4)
    assert retry.duplicate and (retry.base_offset, retry.last_offset) == (0, 2) and log.log_end_offset == 6
    # The replay of recovery (origin REPLICATION) rebuilds the same table from what was written.
    before = state(log)
    log.close_uncleanly()
    assert state(open_log()) == before


def test_the_same_batch_twice_in_one_append_of_a_known_producer_is_out_of_sequence(open_log):
    # Not a committed duplicate, so validated: the staged entry ends at sequence 4, and 3 does
    # not follow it. Nothing is written.
    log = open_log()
    log.append_as_leader(build(1000, 0, 0, 3))
    before = state(log)
    again = build(1000, 0, 3, 2)
    with pytest.raises(OutOfOrderSequenceError, match=r"at offset 5: 3 \(incoming seq. number\), 4 \(current end"):
        log.append_as_leader(again + again)
    assert log.log_end_offset == 3 and state(log) == before
    assert log.append_as_leader(again).base_offset == 3


def test_a_new_producers_later_batches_skip_the_sequence_rule(open_log):
    # Spec §2.1 rule 16's quirk: the exemption looks at the entry from before the append.
    log = open_log()
    info = log.append_as_leader(build(7, 0, 0) + build(7, 0, 5, 2) + build(7, 0, 40))
    assert (info.base_offset, info.last_offset, info.duplicate) == (0, 3, False)
    assert log.producer_state.entry(7).last_sequence == 40
    # Once known, the rule applies, within one append too.
    with pytest.raises(OutOfOrderSequenceError):
        log.append_as_leader(build(7, 0, 41) + build(7, 0, 50))
    # A new epoch inside one append still starts at 0 (rule 15 looks at the staged epoch).
    with pytest.raises(OutOfOrderSequenceError, match="new epoch"):
        log.append_as_leader(build(8, 0, 0) + build(8, 1, 3))


def test_a_committed_batch_past_the_staged_window_is_still_a_duplicate(open_log):
    # The committed entry holds sequences 0-4; five new batches in the same append push them
    # out of the staged window, but Kafka looks in the committed entry: the sixth batch
    # repeats the committed batch at offset 0, and answers the whole append.
    log = open_log(window=5)
    for sequence in range(5):
        log.append_as_leader(build(3, 0, sequence))
    before = state(log)
    newer = b"".join(build(3, 0, sequence) for sequence in range(5, 10))
    info = log.append_as_leader(newer + build(3, 0, 0))
    assert info.duplicate and (info.base_offset, info.last_offset, info.max_timestamp) == (0, 0, TIMESTAMP)
    assert log.log_end_offset == 5 and state(log) == before


def test_a_committed_batch_is_a_duplicate_even_where_the_staged_copy_would_take_it_in_sequence(open_log):
    # Rule 16's quirk leaves a window out of sequence order: 500 then 10. The next append
    # continues from 10 up to 499, which pushes 500 out of the staged window (2 batches), and
    # then repeats 500, in sequence for the staged copy; Kafka finds it in the committed
    # entry and answers with its offset.
    log = open_log(window=2)
    log.append_as_leader(build(9, 0, 0) + build(9, 0, 500) + build(9, 0, 10))
    before = state(log)
    info = log.append_as_leader(build(9, 0, 11, 489) + build(9, 0, 500))
    assert info.duplicate and (info.base_offset, info.last_offset) == (1, 1)
    assert log.log_end_offset == 3 and state(log) == before


def test_a_committed_duplicate_comes_before_the_epoch_check(open_log):
    # Rule 10 before rule 12: the first batch bumps the epoch in the staged entry, the second
    # repeats a committed batch of the old epoch; Kafka answers with that batch.
    log = open_log()
    log.append_as_leader(build(5, 0, 0, 2))
    info = log.append_as_leader(build(5, 1, 0) + build(5, 0, 0, 2))
    assert info.duplicate and (info.base_offset, info.last_offset) == (0, 1) and log.log_end_offset == 2
    with pytest.raises(InvalidProducerEpochError):  # not a duplicate: fenced by the staged epoch
        log.append_as_leader(build(5, 1, 0) + build(5, 0, 2))


# -- Kafka's algorithm as an oracle -----------------------------------------------------------


class Entry:
    """Kafka's ProducerStateEntry (spec §1.2)."""

    def __init__(self, window):
        self.epoch = -1
        self.batches = deque(maxlen=window)
        self.coordinator_epoch = -1
        self.last_timestamp = -1
        self.txn_first_offset = None

    def staged(self, window):
        """ProducerAppendInfo's updatedEntry: this entry without its batch metadata."""
        other = Entry(window)
        other.epoch, other.coordinator_epoch = self.epoch, self.coordinator_epoch
        other.last_timestamp, other.txn_first_offset = self.last_timestamp, self.txn_first_offset
        return other

    @property
    def last_sequence(self):
        return self.batches[-1].last_sequence if self.batches else -1

    def update_epoch(self, epoch):
        if epoch != self.epoch:
            self.batches.clear()
            self.epoch = epoch


def in_sequence(last, following):
    return following == last + 1 or (following == 0 and last == (1 << 31) - 1)


class KafkaModel:
    """UnifiedLog.analyzeAndValidateProducerState and ProducerStateManager.update for client
    appends (spec §2.1, §3.1, §3.2), written from Kafka's structure, not from dedup's."""

    def __init__(self, window):
        self.window = window
        self.producers = {}
        self.log_end_offset = 0

    def append(self, batches):
        """("dup", BatchMetadata) | ("err", code) | ("ok", (base_offset, last_offset))."""
        infos = {}  # producer id -> (currentEntry, updatedEntry)
        offset = self.log_end_offset
        for pid, epoch, sequence, count, transactional in batches:
            if pid < 0:  # no producer id: no producer state
                offset += count
                continue
            current = self.producers.get(pid)
            last_sequence = sequence + count - 1
            if current is not None and current.epoch == epoch:  # rule 10, committed entry only
                for batch in current.batches:
                    if batch.first_sequence == sequence and batch.last_sequence == last_sequence:
                        return "dup", batch
            current = current if current is not None else Entry(self.window)
            current, updated = infos.setdefault(pid, (current, current.staged(self.window)))
            if epoch < updated.epoch:
                return "err", InvalidProducerEpochError.code  # rule 12
            if epoch != updated.epoch:
                if sequence != 0 and updated.epoch != -1:
                    return "err", OutOfOrderSequenceError.code  # rule 15
            else:
                if updated.batches:
                    expected = updated.last_sequence
                else:
                    expected = current.last_sequence if epoch == current.epoch else -1
                if not (current.epoch == -1 or in_sequence(expected, sequence)):
                    return "err", OutOfOrderSequenceError.code  # rule 16
            updated.update_epoch(epoch)  # rule 17: addBatch
            timestamp = TIMESTAMP + count - 1
            updated.batches.append(BatchMetadata(last_sequence, offset + count - 1, count - 1, timestamp))
            updated.last_timestamp = timestamp
            if updated.txn_first_offset is not None and not transactional:
                return "err", 48  # rule 18: INVALID_TXN_STATE
            if updated.txn_first_offset is None and transactional:
                updated.txn_first_offset = offset
            offset += count
        for pid, (_, updated) in infos.items():  # §3.2 step 4: ProducerStateEntry.update
            live = self.producers.setdefault(pid, Entry(self.window))
            live.update_epoch(updated.epoch)
            live.batches.extend(updated.batches)
            live.coordinator_epoch, live.txn_first_offset = updated.coordinator_epoch, updated.txn_first_offset
            live.last_timestamp = updated.last_timestamp
        base, self.log_end_offset = self.log_end_offset, offset
        return "ok", (base, offset - 1)

    def entries(self):
        return {
            pid: ProducerStateEntry(
                pid, e.epoch, tuple(e.batches), e.coordinator_epoch, e.last_timestamp, e.txn_first_offset
            )
            for pid, e in self.producers.items()
        }


@st.composite
def appends(draw):
    """Requests of 2-6 client batches over three producers: mostly in sequence, with repeats
    of earlier batches (of the same request or before), gaps, epoch bumps, transactions and
    batches without a producer id."""
    sent = []  # every batch drawn so far: repeats come from here
    last = {}  # producer id -> (epoch, last sequence) a well-behaved client would follow
    requests = []
    for _ in range(draw(st.integers(1, 8))):
        request = []
        for _ in range(draw(st.integers(2, 6))):
            kind = draw(st.sampled_from(["next", "next", "repeat", "gap", "bump", "plain"]))
            if kind == "repeat" and sent:
                batch = draw(st.sampled_from(sent))
            elif kind == "plain":
                batch = (-1, -1, -1, draw(st.integers(1, 3)), False)
            else:
                pid = draw(st.sampled_from([1, 2, 3]))
                epoch, sequence = last.get(pid, (0, -1))
                if kind == "bump":
                    epoch, sequence = epoch + 1, -1
                sequence += 1 + (draw(st.integers(1, 3)) if kind == "gap" else 0)
                count = draw(st.integers(1, 3))
                transactional = draw(st.integers(0, 9)) == 0
                batch = (pid, epoch, sequence, count, transactional)
                last[pid] = (epoch, sequence + count - 1)
            request.append(batch)
            sent.append(batch)
        requests.append(request)
    return draw(st.sampled_from([1, 2, 5])), requests


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(case=appends())
def test_appends_of_several_batches_decide_as_kafka_does(tmp_path_factory, impl, case):
    window, requests = case
    log = PartitionLog(tmp_path_factory.mktemp("log") / "clicks-0", table_class=impl, window=window, clock=lambda: NOW)
    model = KafkaModel(window)
    try:
        for request in requests:
            data = b"".join(build(p, e, s, n, transactional=t) for p, e, s, n, t in request)
            expected = model.append(request)
            try:
                info = log.append_as_leader(data, leader_epoch=0)
            except KafkaError as error:
                found: tuple = ("err", error.code)
            else:
                if info.duplicate:
                    found = ("dup", (info.base_offset, info.last_offset, info.max_timestamp))
                else:
                    found = ("ok", (info.base_offset, info.last_offset))
            if expected[0] == "dup":
                batch = expected[1]
                expected = ("dup", (batch.first_offset, batch.last_offset, batch.timestamp))
            hypothesis_event(expected[0])
            assert found == expected, request
            assert log.log_end_offset == model.log_end_offset
            assert state(log)[1] == model.entries()
    finally:
        log.close_uncleanly()
