"""The log cleaner and transactions (Kafka's Cleaner with CleanedTransactionMetadata, KIP-98 and
KIP-534): the cleanable range stops at the last stable offset; committed transactional records
enter the offset map and are compacted as any other; an aborted transaction's records go; a
marker stays while its transaction has data, then gets a delete horizon, and goes once it has
passed; the cleaned segment's ``.txnindex`` holds the aborted transactions whose data is still
there; and ``__consumer_offsets`` written by TxnOffsetCommit reloads to the same offsets."""

from __future__ import annotations

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from dedup import scan_batches
from dedup._types import Origin
from dedup.batch import decode_records, encode_batch, encode_marker
from dedup.cleaner import clean_log
from dedup.cluster import Cluster
from dedup.coordinator.offsets import OffsetCommitValue, encode_offset_commit_key, encode_offset_commit_value
from dedup.coordinator.store import GroupStore
from dedup.log import PartitionLog
from dedup.transaction_index import ABORTED_TXN_SIZE, AbortedTxn, txn_index_file_name

NOW = 1_700_000_000_000
RETENTION = 86_400_000
LATER = NOW + 10 * RETENTION  # past every producer's expiration (Kafka's 1 day default)


def open_log(path, **options):
    options.setdefault("segment_bytes", 1 << 20)
    options.setdefault("clock", lambda: NOW)
    return PartitionLog(path, **options)


def append(log, records, **producer):
    return log.append_as_leader(
        encode_batch([v for _, v in records], keys=[k for k, _ in records], timestamp=NOW, **producer)
    )


def transactional(log, producer_id, records, sequence=0):
    return append(log, records, producer_id=producer_id, producer_epoch=0, base_sequence=sequence, transactional=True)


def end_txn(log, producer_id, *, commit):
    marker = encode_marker(producer_id=producer_id, producer_epoch=0, commit=commit, coordinator_epoch=0,
                           timestamp=NOW)  # fmt: skip
    return log.append_as_leader(marker, origin=Origin.COORDINATOR).base_offset


def settle(log):
    """Roll (the active segment is never cleaned) and move the high watermark to the end."""
    log.roll()
    log.update_high_watermark(log.log_end_offset)


def batches(log):
    """Every batch of the log as (base offset, is control, producer id, record count, raw)."""
    out = []
    for segment in log._local_log.segments:
        with segment.batches_from(segment.base_offset) as view:
            data = bytes(view)
        for header in scan_batches(data):
            start = int(header["position"])
            raw = data[start : start + int(header["batch_length"]) + 12]
            out.append((int(header["base_offset"]), bool(header["is_control"]), int(header["producer_id"]),
                        int(header["record_count"]), raw))  # fmt: skip
    return out


def records(log):
    """Every data record (offset, key, value)."""
    return [(r.offset, r.key, r.value) for *_, raw in batches(log) for r in decode_records(raw)]


def markers(log):
    """The control batches that still hold their marker: (offset, delete horizon or None)."""
    out = []
    for base, control, _, count, raw in batches(log):
        if control and count:
            parsed = DefaultRecordBatch(raw)
            assert parsed.validate_crc()
            attributes, base_timestamp = struct.unpack_from(">h4xq", raw, 21)  # attributes, base timestamp
            horizon = base_timestamp if attributes & 0x40 else None  # KIP-534's delete-horizon flag
            out.append((base, horizon))
    return out


def index_entries(log):
    out = []
    for base in log.segment_base_offsets:
        with open(os.path.join(log.directory, txn_index_file_name(base)), "rb") as file:
            data = file.read()
        out += [AbortedTxn.from_bytes(data, p) for p in range(0, len(data), ABORTED_TXN_SIZE)]
    return out


def replay(rows):
    state = {}
    for _, key, value in rows:
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    return state


def dirty_again(log, n):
    """A plain record of its own key and a roll: something dirty, so the next pass runs."""
    append(log, [(b"filler-%d" % n, b"x")])
    settle(log)


def test_a_key_committed_in_a_transaction_then_deleted_stays_deleted_after_the_horizon(tmp_path):
    """The resurrection case: a committed transactional record and a later plain tombstone of
    its key. The transactional record is in the offset map's range like any other and goes at
    the first pass, so when the tombstone goes after its horizon the key stays deleted."""
    log = open_log(tmp_path / "t-0")
    transactional(log, 9, [(b"group-offset", b"committed")])  # 0
    end_txn(log, 9, commit=True)  # 1
    append(log, [(b"group-offset", None)])  # 2: the delete
    append(log, [(b"other", b"1")])  # 3
    settle(log)
    assert replay(records(log)) == {b"other": b"1"}
    clean_log(log, now_ms=NOW)  # the tombstone gets its delete horizon
    dirty_again(log, 1)
    clean_log(log, now_ms=NOW + RETENTION)  # past the horizon: the tombstone goes
    assert [r for r in records(log) if r[1] == b"group-offset"] == []
    assert replay(records(log)) == {b"other": b"1", b"filler-1": b"x"}
    log.close()
    again = open_log(tmp_path / "t-0")
    assert replay(records(again)) == {b"other": b"1", b"filler-1": b"x"}
    again.close()


def test_an_aborted_transactions_records_go_and_do_not_shadow_older_records(tmp_path):
    log = open_log(tmp_path / "t-0")
    append(log, [(b"k", b"before")])  # 0
    transactional(log, 9, [(b"k", b"aborted"), (b"j", b"aborted")])  # 1-2
    end_txn(log, 9, commit=False)  # 3
    append(log, [(b"z", b"1")])  # 4
    settle(log)
    log.remove_expired_producers(LATER)  # Kafka keeps an active producer's last batch
    clean_log(log, now_ms=NOW)
    # buildOffsetMap left the aborted records out: the older k is still the latest committed one.
    assert records(log) == [(0, b"k", b"before"), (4, b"z", b"1")]
    log.close()


def test_markers_go_only_after_their_transaction_is_empty_and_the_horizon_has_passed(tmp_path):
    log = open_log(tmp_path / "t-0")
    transactional(log, 9, [(b"a", b"aborted")])  # 0
    abort = end_txn(log, 9, commit=False)  # 1
    transactional(log, 8, [(b"b", b"committed")])  # 2
    commit = end_txn(log, 8, commit=True)  # 3
    append(log, [(b"b", b"newer")])  # 4: supersedes the committed record
    append(log, [(b"c", b"1")])  # 5
    settle(log)
    log.remove_expired_producers(LATER)
    assert index_entries(log) == [AbortedTxn(9, 0, 1, 2)]
    # Pass 1: the transactions' data goes; their markers stay (the pass still read their batches),
    # and so does the aborted transaction's index entry, without a horizon yet.
    clean_log(log, now_ms=NOW)
    assert records(log) == [(4, b"b", b"newer"), (5, b"c", b"1")]
    assert markers(log) == [(abort, None), (commit, None)]
    assert index_entries(log) == [AbortedTxn(9, 0, 1, 2)]
    # Pass 2: no data left: each marker gets its delete horizon; the entry leaves the index.
    second = NOW + 1000
    dirty_again(log, 1)
    clean_log(log, now_ms=second)
    assert markers(log) == [(abort, second + RETENTION), (commit, second + RETENTION)]
    assert index_entries(log) == []
    # Pass 3, before the horizon: they stay. Pass 4, at the horizon: they go.
    dirty_again(log, 2)
    clean_log(log, now_ms=second + RETENTION - 1)
    assert markers(log) == [(abort, second + RETENTION), (commit, second + RETENTION)]
    dirty_again(log, 3)
    clean_log(log, now_ms=second + RETENTION)
    assert markers(log) == []
    assert replay(records(log)) == {b"b": b"newer", b"c": b"1", b"filler-1": b"x", b"filler-2": b"x",
                                    b"filler-3": b"x"}  # fmt: skip
    log.close()
    again = open_log(tmp_path / "t-0")
    assert markers(again) == [] and index_entries(again) == []
    assert again.last_stable_offset == again.high_watermark == again.log_end_offset
    again.close()


def test_an_active_producers_batches_and_so_its_marker_stay(tmp_path):
    """RETAIN_EMPTY: the producer-state table still holds producer 9, so its aborted batch stays
    as an empty header; a batch of the transaction is still read, so its marker and its index
    entry stay too (Kafka: "we will never delete a marker until all the records from that
    transaction are removed")."""
    log = open_log(tmp_path / "t-0")
    transactional(log, 9, [(b"a", b"aborted")])  # 0
    abort = end_txn(log, 9, commit=False)  # 1
    append(log, [(b"c", b"1")])  # 2
    settle(log)
    for n in range(3):
        clean_log(log, now_ms=NOW + n * RETENTION)
        dirty_again(log, n)
    assert [(b[0], b[3]) for b in batches(log) if b[2] == 9] == [(0, 0), (abort, 1)]
    assert markers(log) == [(abort, None)]
    assert index_entries(log) == [AbortedTxn(9, 0, 1, 2)]
    log.close()


def test_nothing_at_or_past_the_last_stable_offset_is_cleaned_while_a_transaction_is_open(tmp_path):
    log = open_log(tmp_path / "t-0")
    append(log, [(b"k", b"1")])  # 0
    append(log, [(b"k", b"2")])  # 1
    transactional(log, 9, [(b"t", b"open")])  # 2: opens a transaction
    append(log, [(b"k", b"3")])  # 3
    append(log, [(b"k", b"4")])  # 4
    settle(log)
    assert log.last_stable_offset == 2 and log.high_watermark == 5
    stats = clean_log(log, now_ms=NOW)
    assert stats.end_offset == 2
    assert records(log) == [(1, b"k", b"2"), (2, b"t", b"open"), (3, b"k", b"3"), (4, b"k", b"4")]
    end_txn(log, 9, commit=True)  # 5
    settle(log)
    assert clean_log(log, now_ms=NOW).end_offset == 6
    assert records(log) == [(2, b"t", b"open"), (4, b"k", b"4")]
    log.close()


def test_the_cleaned_index_keeps_the_aborted_transactions_still_holding_data(tmp_path):
    """Aborted transactions whose markers are in several segments: the first pass still reads
    their data, so the merged segment's index keeps both entries; the next pass finds none, so
    the index is empty. The fetch path (collect_aborted_transactions) agrees, after a reopen too."""
    log = open_log(tmp_path / "t-0", segment_bytes=300)
    transactional(log, 9, [(b"a", b"1")])  # 0
    end_txn(log, 9, commit=False)  # 1
    transactional(log, 8, [(b"b", b"1")])  # 2
    end_txn(log, 8, commit=False)  # 3
    append(log, [(b"c", b"1")])  # 4
    settle(log)
    log.remove_expired_producers(LATER)
    assert len(log.segment_base_offsets) > 2  # the markers' entries are in several segments' indexes
    before = index_entries(log)
    clean_log(log, now_ms=NOW)
    assert index_entries(log) == before  # data was read in this pass: the entries stay, merged
    assert log.collect_aborted_transactions(0, log.log_end_offset) == before
    dirty_again(log, 1)
    clean_log(log, now_ms=NOW)
    assert index_entries(log) == [] and log.collect_aborted_transactions(0, log.log_end_offset) == []
    log.close()
    again = open_log(tmp_path / "t-0", segment_bytes=300)
    assert index_entries(again) == [] and records(again) == [(4, b"c", b"1"), (5, b"filler-1", b"x")]
    again.close()


def gzip_batch(producer_id, records, *, transactional):
    """A gzip batch, as kafka-python's producer builds it (values long enough to be compressed)."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=1, is_transactional=int(transactional),
                                        producer_id=producer_id, producer_epoch=0, base_sequence=0,
                                        batch_size=1 << 20)  # fmt: skip
    for offset, (key, value) in enumerate(records):
        builder.append(offset, timestamp=NOW, key=key, value=value, headers=[])
    data = bytes(builder.build())
    assert struct.unpack_from(">h", data, 21)[0] & 0x07 == 1  # gzip
    return data


def test_compressed_batches_an_aborted_one_goes_any_other_is_copied_as_it_is(tmp_path):
    log = open_log(tmp_path / "t-0")
    append(log, [(b"a", b"before")])  # 0
    log.append_as_leader(gzip_batch(9, [(b"a", b"aborted" * 50), (b"b", b"aborted" * 50)], transactional=True))  # 1-2
    end_txn(log, 9, commit=False)  # 3
    committed = gzip_batch(8, [(b"c", b"committed" * 50)], transactional=True)
    log.append_as_leader(committed)  # 4
    end_txn(log, 8, commit=True)  # 5
    append(log, [(b"c", b"newer")])  # 6: dedup does not decompress, so 4 stays
    settle(log)
    kept = [raw for base, *_, raw in batches(log) if base == 4]
    clean_log(log, now_ms=NOW)
    # Producer 9 is still active: its aborted batch stays as an empty header, uncompressed.
    (empty,) = [raw for base, *_, raw in batches(log) if base == 1]
    assert DefaultRecordBatch(empty).validate_crc() and struct.unpack_from(">hi", empty, 21) == (0x10, 1)
    assert [(base, count) for base, _, _, count, _ in batches(log)] == [(0, 1), (1, 0), (3, 1), (4, 1), (5, 1), (6, 1)]
    assert [raw for base, *_, raw in batches(log) if base == 4] == kept
    log.close()


# -- __consumer_offsets written by TxnOffsetCommit ----------------------------------------------------


class OneOffsetsPartition:
    """The OffsetsStorage of GroupStore over a single ``__consumer_offsets`` partition."""

    num_partitions = 1

    def __init__(self, cluster):
        self.cluster = cluster

    def created(self):
        return [0]

    def partition(self, partition):
        return self.cluster

    def leader(self, partition):
        return self.cluster.leader_id


def commit(offset):
    return encode_offset_commit_value(OffsetCommitValue(offset, commit_timestamp=NOW))


def committed(store, cluster):
    return {
        group.group_id: {where: value.offset for where, value in group.offsets.items()}
        for group in store.replay(0, cluster)
    }


def test_an_aborted_txn_offset_commit_is_cleaned_away_and_the_offsets_reload_the_same(tmp_path):
    options = dict(brokers=2, min_insync_replicas=1, topic="__consumer_offsets", clock=lambda: NOW,
                   segment_bytes=1 << 20)  # fmt: skip
    cluster = Cluster(tmp_path, **options)
    store = GroupStore(OneOffsetsPartition(cluster), lambda: NOW)
    key0, key1 = (encode_offset_commit_key("billing", "clicks", p) for p in (0, 1))
    assert store.append("billing", [(key0, commit(5)), (key1, commit(5))]) == 0
    # A consume-transform-produce application commits 50 in a transaction that aborts...
    assert store.append_transactional("billing", [(key0, commit(50)), (key1, commit(50))], 1000, 0) == 0
    cluster.write_marker(1000, 0, commit=False, coordinator_epoch=0)
    # ... and 7 for partition 1 in one that commits; then a plain commit of 6 for partition 0.
    assert store.append_transactional("billing", [(key1, commit(7))], 1001, 0) == 0
    cluster.write_marker(1001, 0, commit=True, coordinator_epoch=0)
    assert store.append("billing", [(key0, commit(6))]) == 0
    expected = {"billing": {("clicks", 0): 6, ("clicks", 1): 7}}
    assert committed(store, cluster) == expected
    for broker in cluster.brokers:
        broker.log.roll()
        broker.log.remove_expired_producers(LATER)
    assert all(stats is not None for stats in cluster.clean(now_ms=NOW))
    for broker in cluster.brokers:
        values = [r.value for *_, raw in batches(broker.log) for r in decode_records(raw)]
        assert commit(50) not in values  # the aborted transaction's records are gone
        assert values == [commit(7), commit(6)]  # and every superseded one
    assert committed(store, cluster) == expected
    cluster.close()
    reopened = Cluster(tmp_path, **options)
    assert committed(GroupStore(OneOffsetsPartition(reopened), lambda: NOW), reopened) == expected
    reopened.close()


# -- against an oracle ----------------------------------------------------------------------------------


def committed_view(log):
    """What a read_committed consumer replays below the last stable offset: the data records of
    plain batches and of transactions not aborted (the aborted ones from the .txnindex files, as
    a Fetch's aborted_transactions list: producer id and first offset, up to its marker)."""
    lso = log.last_stable_offset
    aborted = log.collect_aborted_transactions(log.log_start_offset, lso)
    rows = []
    for base, control, producer_id, _, raw in batches(log):
        if control or base >= lso:
            continue
        if any(e.producer_id == producer_id and e.first_offset <= base < e.last_offset for e in aborted):
            continue
        rows += [(r.offset, r.key, r.value) for r in decode_records(raw)]
    return replay(rows)


keys = st.sampled_from([b"a", b"b", b"c", b"d"])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("plain"), keys, st.none() | st.binary(min_size=1, max_size=6)),
        st.tuples(st.just("txn"), st.sampled_from([7, 8, 9]), keys, st.none() | st.binary(min_size=1, max_size=6)),
        st.tuples(st.just("end"), st.sampled_from([7, 8, 9]), st.booleans()),
    ),
    min_size=1, max_size=40,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(steps=steps, segment_bytes=st.integers(150, 700), expire=st.booleans())
def test_cleaning_never_changes_what_a_read_committed_consumer_replays(tmp_path_factory, steps, segment_bytes, expire):
    log = open_log(tmp_path_factory.mktemp("c") / "t-0", segment_bytes=segment_bytes)
    sequences: dict[int, int] = {}
    try:
        for step in steps:
            if step[0] == "plain":
                append(log, [step[1:]])
            elif step[0] == "txn":
                producer_id = step[1]
                transactional(log, producer_id, [step[2:]], sequences.get(producer_id, 0))
                sequences[producer_id] = sequences.get(producer_id, 0) + 1
            elif step[1] in log.ongoing_transactions:
                end_txn(log, step[1], commit=step[2])
        settle(log)
        if expire:
            log.remove_expired_producers(LATER)
        expected = committed_view(log)
        lso = log.last_stable_offset
        for n, now in enumerate([NOW, NOW + 1, NOW + RETENTION, NOW + 3 * RETENTION]):
            clean_log(log, now_ms=now)
            # (the fillers are past the last stable offset while a transaction is open)
            fillers = {} if log.ongoing_transactions else {b"filler-%d" % i: b"x" for i in range(n)}
            assert committed_view(log) == {**expected, **fillers}
            assert log.last_stable_offset == lso or n
            for *_, raw in batches(log):
                assert DefaultRecordBatch(raw).validate_crc()
            dirty_again(log, n)
            lso = None
        expected = committed_view(log)
        log.close()
        log = open_log(log.directory, segment_bytes=segment_bytes)
        assert committed_view(log) == expected
    finally:
        log.close()
