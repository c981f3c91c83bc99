"""append_many's two paths give the same results: the compiled client loop decides the common
row itself (known producer, same epoch, in sequence, narrow entry, no transaction, no retained
batch with the same last sequence) and sends every other row to the general path.

Each test drives many producers through calls long enough for the loop's look-ahead (16 rows)
and mixes the common rows with every way out of the shortcut: new producers (the index grows
in the middle of a call), duplicates (also one that is in sequence, which rule 10 still calls a
duplicate), gaps, epoch bumps and regressions, NO_PRODUCER_EPOCH, no sequence, sequences
crossing 2^31-1, wide entries (offsets and timestamps 2^31 apart, more than 65,536 records),
transactions and markers, replication and coordinator rows. The results are compared with
the reference twin's append_many and with the compiled ``append`` per row (the general path
alone): verdict columns, log end offsets and every entry.

Spec: docs/spec.md §2 (rules 8, 10, 12, 15, 16, 18), §2.3, §2.4, §8.4.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup import reference
from dedup._types import Origin
from dedup.errors import KafkaError

_state = pytest.importorskip("dedup._state")

INT32_MAX = (1 << 31) - 1
# Past this many bytes of entries the compiled loop also prefetches entries (_state.pyx).
PREFETCH_ENTRIES_FROM = 4 << 20
ENTRY_BYTES_WINDOW_5 = 112

VERDICTS = ("error_codes", "duplicate", "base_offsets", "last_offsets", "timestamps")


@pytest.fixture(autouse=True)
def _quiet_replication_warnings(caplog):
    caplog.set_level(logging.CRITICAL, logger="dedup")


def state(table):
    return {pid: table.entry(pid) for pid in table}, len(table), table.map_end_offset


class Clients:
    """Producers that mostly send their next batch, and now and then something else."""

    def __init__(self, rng, producers, first_id=1, near_wrap=0.0):
        self.rng = rng
        self.ids = list(range(first_id, first_id + producers))
        self.epoch = dict.fromkeys(self.ids, 0)
        # Some producers start just below 2^31-1, so their sequences wrap (§8.4).
        self.next = {pid: (INT32_MAX - int(rng.integers(0, 6)) if rng.random() < near_wrap else 0) for pid in self.ids}
        self.sent = {pid: [] for pid in self.ids}
        self.clock = 1_767_225_600_000

    def columns(self, rows, special=0.1, new_ids=None, transactional=False):
        """``rows`` rows: batches of known producers in sequence, a fraction ``special`` of
        them something else; ``new_ids`` producers join in the middle."""
        rng = self.rng
        pids, epochs, seqs, counts, stamps, txn = [], [], [], [], [], []
        joining = list(new_ids or [])
        for _ in range(rows):
            if joining and rng.random() < 0.2:
                pid = joining.pop()
                self.ids.append(pid)
                # Some join without an epoch: then no sequence is ever checked (rules 15, 16).
                self.epoch[pid] = -1 if rng.random() < 0.3 else 0
                self.next[pid], self.sent[pid] = 0, []
            else:
                pid = self.ids[int(rng.integers(0, len(self.ids)))]
            count = int(rng.integers(1, 4))
            epoch, seq = self.epoch[pid], self.next[pid]
            self.clock += int(rng.integers(0, 3))
            stamp = self.clock
            action = rng.choice(
                ["retry", "gap", "epoch up", "epoch down", "no epoch", "no sequence", "wrap", "big", "far clock"]
            ) if rng.random() < special else "next"  # fmt: skip
            if action == "retry" and self.sent[pid]:
                recent = self.sent[pid][-7:]
                epoch, seq, count = recent[int(rng.integers(0, len(recent)))]
            else:
                if action == "gap":
                    seq = (seq + int(rng.integers(1, 3))) % (INT32_MAX + 1)
                elif action == "epoch up":
                    epoch, seq = epoch + 1, 0
                elif action == "epoch down":
                    epoch, seq = epoch - 1, 0
                elif action == "no epoch":  # this batch only: fenced unless the producer has none
                    epoch = -1
                elif action == "wrap":
                    seq = INT32_MAX - int(rng.integers(0, 3))
                elif action == "big":  # more records than a narrow entry's uint16 delta holds
                    count = int(rng.integers(65_536, 70_000))
                elif action == "far clock":  # timestamps 2^31 ms (~24.8 days) apart, either way
                    stamp = self.clock + int(rng.choice([-1, 1])) * (1 << 31) + int(rng.integers(0, 9))
                if action == "no epoch":
                    pass
                elif action != "no sequence":
                    self.epoch[pid] = epoch
                    self.next[pid] = (seq + count) % (INT32_MAX + 1)
                    self.sent[pid].append((epoch, seq, count))
                else:
                    seq = -1
            pids.append(pid)
            epochs.append(epoch)
            seqs.append(seq)
            counts.append(count)
            stamps.append(stamp)
            txn.append(bool(rng.random() < 0.05))
        args = {
            "producer_ids": np.asarray(pids, dtype=np.int64),
            "producer_epochs": np.asarray(epochs, dtype=np.int16),
            "base_sequences": np.asarray(seqs, dtype=np.int32),
            "record_counts": np.asarray(counts, dtype=np.int32),
            "max_timestamps": np.asarray(stamps, dtype=np.int64),
        }
        if transactional:
            args["transactional"] = np.asarray(txn, dtype=np.bool_)
        return args


def append_loop(table, args, log_end_offset, origin):
    """The compiled general path alone: append() per row, as append_many's verdict columns."""
    out = {name: [] for name in VERDICTS}
    txn = args.get("transactional")
    for k in range(len(args["producer_ids"])):
        try:
            r = table.append(
                int(args["producer_ids"][k]), int(args["producer_epochs"][k]), int(args["base_sequences"][k]),
                int(args["record_counts"][k]), log_end_offset, max_timestamp=int(args["max_timestamps"][k]),
                origin=origin, transactional=False if txn is None else bool(txn[k]),
            )  # fmt: skip
        except KafkaError as error:
            row = (error.code, False, -1, -1, -1)
        else:
            row = (0, r.duplicate, r.base_offset, r.last_offset, r.timestamp)
            if not r.duplicate:
                log_end_offset = r.last_offset + 1
        for name, value in zip(VERDICTS, row, strict=True):
            out[name].append(value)
    return out, log_end_offset


class Trio:
    """The compiled table through append_many, the twin through append_many, and the compiled
    table through append() per row, fed the same operations and compared after each."""

    def __init__(self, window, capacity=0):
        self.many = _state.ProducerStateTable(window, capacity=capacity)
        self.twin = reference.ProducerStateTable(window)
        self.loop = _state.ProducerStateTable(window)
        self.end = 0

    def append_many(self, args, origin=Origin.CLIENT, gap=0, check_loop=True):
        end = self.end + gap
        got = self.many.append_many(**args, log_end_offset=end, origin=origin)
        want = self.twin.append_many(**args, log_end_offset=end, origin=origin)
        for name in VERDICTS:
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
        assert got.log_end_offset == want.log_end_offset
        if check_loop:
            loop, loop_end = append_loop(self.loop, args, end, origin)
            for name in VERDICTS:
                np.testing.assert_array_equal(getattr(got, name), np.asarray(loop[name]), err_msg=name)
            assert got.log_end_offset == loop_end
        self.end = got.log_end_offset
        return got

    def marker(self, pid, epoch, commit):
        for table in (self.many, self.twin, self.loop):
            try:
                table.append_marker(pid, epoch, 0, self.end, commit=commit, timestamp=5)
            except KafkaError:
                pass
        self.end += 1

    def check(self, with_loop=True):
        expected = state(self.twin)
        assert state(self.many) == expected
        if with_loop:
            assert state(self.loop) == expected


# Few examples: each drives four paths through thousands of calls.
@settings(max_examples=examples(25))
@given(
    seed=st.integers(0, 2**32 - 1),
    window=st.sampled_from([1, 2, 4, 5, 8, 9]),
    special=st.sampled_from([0.02, 0.1, 0.4]),
    near_wrap=st.sampled_from([0.0, 0.5]),
)
def test_paths_agree_on_mixed_client_streams(seed, window, special, near_wrap):
    """Client calls of every length around the look-ahead, with every way out of the shortcut;
    between calls: log end offset jumps (2^31 apart: wide entries), replication and
    coordinator calls, transactional calls, markers."""
    rng = np.random.default_rng(seed)
    trio = Trio(window)
    clients = Clients(rng, producers=int(rng.integers(1, 60)), near_wrap=near_wrap)
    trio.append_many(clients.columns(int(rng.integers(0, 40)), special=0.0))
    next_id = 10_000
    for _ in range(6):
        rows = int(rng.choice([1, 7, 15, 16, 17, 31, 33, 200]))
        new_ids = list(range(next_id, next_id + int(rng.integers(0, 5))))
        next_id += len(new_ids)
        kind = rng.choice(["client", "client", "client", "transactional", "replication", "coordinator"])
        gap = int(rng.choice([0, 0, 0, 3, 1 << 31]))
        if kind in ("client", "transactional"):
            args = clients.columns(rows, special=special, new_ids=new_ids, transactional=kind == "transactional")
            trio.append_many(args, gap=gap)
        else:
            args = clients.columns(rows, special=special, new_ids=new_ids)
            origin = Origin.REPLICATION if kind == "replication" else Origin.COORDINATOR
            trio.append_many(args, origin=origin, gap=gap)
        if rng.random() < 0.3 and clients.ids:
            pid = clients.ids[int(rng.integers(0, len(clients.ids)))]
            trio.marker(pid, clients.epoch[pid], commit=bool(rng.random() < 0.5))
        trio.check()


@pytest.mark.parametrize("window", [2, 5, 9])
def test_a_retained_batch_in_sequence_is_still_a_duplicate(window):
    """Rule 10 comes first: replication left the ring holding sequences 11 then 10, so a client
    batch 11 follows the newest one (rule 16 would accept it) yet repeats a retained batch."""
    trio = Trio(window)
    trio.append_many(_columns([1, 1], [0, 0], [11, 10], [1, 1], [100, 200]), origin=Origin.REPLICATION)
    result = trio.append_many(_columns([1, 2, 1], [0, 0, 0], [11, 0, 11], [1, 1, 1], [300, 300, 300]))
    assert result.duplicate.tolist() == [True, False, True]
    assert result.base_offsets.tolist()[0] == 0  # the retained batch's offsets
    trio.check()
    # The same after sequences wrapped: the newest is 2^31-1 and the retained batch is 0.
    trio.append_many(_columns([3, 3], [0, 0], [0, INT32_MAX], [1, 1], [1, 2]), origin=Origin.REPLICATION)
    result = trio.append_many(_columns([3] * 17, [0] * 17, [0] * 17, [1] * 17, [9] * 17))
    assert result.duplicate.all()
    trio.check()


def test_an_empty_ring_takes_only_sequence_0():
    """A marker for an unknown producer makes its entry with no batches (M4); a batch at the
    marker's epoch must then start at sequence 0 (no newest batch to follow: rule 16 against
    NO_SEQUENCE), and a marker with a new epoch empties the ring of a known producer (M5)."""
    trio = Trio(5)
    others = np.arange(100, 120, dtype=np.int64)
    trio.append_many(_columns(others, [0] * 20, [0] * 20, [1] * 20, [1] * 20))
    trio.marker(1, 3, commit=True)
    trio.marker(100, 4, commit=False)
    pids = np.concatenate([others, [1, 100, 1, 100, 1, 100]])
    epochs = np.concatenate([[0] * 20, [3, 4, 3, 4, 3, 4]])
    seqs = np.concatenate([[1] * 20, [1, 1, 0, 0, 1, 1]])
    result = trio.append_many(_columns(pids, epochs, seqs, [1] * 26, [2] * 26))
    assert result.error_codes.tolist()[20:] == [45, 45, 0, 0, 0, 0]
    trio.check()


def test_sequences_wrap_in_the_loop():
    """§8.4: batches crossing 2^31-1 and starting at 0 after it, many in one call."""
    trio = Trio(5)
    pids = np.arange(1, 41, dtype=np.int64)
    trio.append_many(_columns(pids, [0] * 40, [INT32_MAX - 3] * 40, [2] * 40, [7] * 40))
    # Next: base 2^31-2, 3 records (last 0), then 1, then 2 ...: every row in sequence.
    seqs = [INT32_MAX - 1, 1, 2, 3]
    counts = [3, 1, 1, 1]
    args = _columns(np.tile(pids, 4), [0] * 160, np.repeat(seqs, 40), np.repeat(counts, 40), [8] * 160)
    result = trio.append_many(args)
    assert (result.error_codes == 0).all() and not result.duplicate.any()
    trio.check()


def test_large_table_with_entry_prefetch_agrees():
    """Past PREFETCH_ENTRIES_FROM bytes of entries the loop also prefetches entries: the same
    results, with new producers (the index and the entry chunks grow) in the middle."""
    producers = PREFETCH_ENTRIES_FROM // ENTRY_BYTES_WINDOW_5 + 2_000
    rng = np.random.default_rng(5)
    ids = rng.permutation(np.arange(1, producers + 1, dtype=np.int64))
    trio = Trio(5)
    zeros = np.zeros(producers)
    trio.append_many(_columns(ids, zeros, zeros, np.ones(producers), zeros), check_loop=False)
    clients = Clients(rng, producers=0)
    clients.ids = [int(pid) for pid in ids[:3_000]]
    for pid in clients.ids:
        clients.epoch[pid], clients.next[pid], clients.sent[pid] = 0, 1, [(0, 0, 1)]
    for call in range(3):
        new_ids = list(range(producers + 1 + 100 * call, producers + 101 + 100 * call))
        trio.append_many(clients.columns(4_000, special=0.1, new_ids=new_ids), check_loop=False)
    # The general loop prefetches entries too (replication takes no shortcut).
    trio.append_many(clients.columns(2_000, special=0.1), origin=Origin.REPLICATION, check_loop=False)
    trio.check(with_loop=False)


def _columns(pids, epochs, seqs, counts, stamps):
    return {
        "producer_ids": np.asarray(pids, dtype=np.int64),
        "producer_epochs": np.asarray(epochs, dtype=np.int16),
        "base_sequences": np.asarray(seqs, dtype=np.int32),
        "record_counts": np.asarray(counts, dtype=np.int32),
        "max_timestamps": np.asarray(stamps, dtype=np.int64),
    }
