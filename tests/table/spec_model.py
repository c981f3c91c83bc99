"""The state machine's third, independent oracle (test_state_machine.py): the spec's decision
procedure (docs/spec.md §2.8) written out from the rules, with the state §1.2/§3.2/§6 say the
table must hold, and the spec's sequence arithmetic (§8.4) written from the formulas. Nothing
here is imported from dedup but the result types, so a bug shared by both twins fails too.
"""

from __future__ import annotations

from collections import deque

from dedup._types import BatchMetadata, CompletedTxn, Origin, ProducerStateEntry

INT32_MAX = (1 << 31) - 1

# Error codes, spelled out from the spec's table (§2.7) rather than imported.
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
TRANSACTION_COORDINATOR_FENCED = 52
INVALID_RECORD = 87
THROTTLING_QUOTA_EXCEEDED = 89  # a capped table full of open transactions refuses a new client producer


# --- the spec's arithmetic (§8.4), written from the formulas, not imported ------------------


def increment_sequence(sequence: int, increment: int) -> int:
    # incrementSequence for non-negative s, k: the wrap goes 2^31-1 -> 0.
    return (sequence + increment) % (1 << 31)


def decrement_sequence(sequence: int, decrement: int) -> int:
    # decrementSequence; also right for the -1 of a sequence-less batch (MAX - k).
    return (sequence - decrement) % (1 << 31)


def in_sequence(last: int, following: int) -> bool:
    return following == last + 1 or (following == 0 and last == INT32_MAX)


# --- the independent oracle -----------------------------------------------------------------


class ModelEntry:
    """ProducerStateEntry as §1.2 describes it."""

    def __init__(self, window: int) -> None:
        self.epoch = -1
        self.batches: deque[BatchMetadata] = deque(maxlen=window)  # addBatch evicts the head
        self.coordinator_epoch = -1
        self.last_timestamp = -1
        self.txn_first_offset: int | None = None

    def copy(self, window: int) -> ModelEntry:
        other = ModelEntry(window)
        other.epoch = self.epoch
        other.batches.extend(self.batches)
        other.coordinator_epoch = self.coordinator_epoch
        other.last_timestamp = self.last_timestamp
        other.txn_first_offset = self.txn_first_offset
        return other

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence if self.batches else -1

    def maybe_update_epoch(self, epoch: int) -> None:
        # §1.2: the only sequence reset: any epoch change, up or down, drops the batches.
        if epoch != self.epoch:
            self.batches.clear()
            self.epoch = epoch


class Model:
    """The spec's decision procedure for one partition (§2.8, §2.2, §6), single appends only."""

    def __init__(self, window: int, max_producers: int | None = None) -> None:
        self.window = window
        self.producers: dict[int, ModelEntry] = {}
        self.map_end_offset = 0
        # Bounded producer state (dedup's own, KIP-936's problem): a new producer in a table
        # holding max_producers evicts the producer without a transaction whose newest batch
        # is the oldest (last offset, -1 without a batch; ties by id).
        self.max_producers = max_producers
        self.evictions = 0

    def admit(self, pid: int) -> ModelEntry:
        if self.max_producers is not None:
            while len(self.producers) >= self.max_producers:
                idle = [
                    (e.batches[-1].last_offset if e.batches else -1, other)
                    for other, e in self.producers.items()
                    if e.txn_first_offset is None
                ]
                if not idle:
                    break
                del self.producers[min(idle)[1]]
                self.evictions += 1
        live = self.producers[pid] = ModelEntry(self.window)
        return live

    def copy(self) -> Model:
        other = Model(self.window, self.max_producers)
        other.evictions = self.evictions
        other.producers = {pid: e.copy(self.window) for pid, e in self.producers.items()}
        other.map_end_offset = self.map_end_offset
        return other

    def append(self, pid, epoch, seq, count, base_offset, ts, origin, transactional):
        """("dup", BatchMetadata) | ("ok", None) | ("err", code); records the batch on "ok"."""
        assert base_offset >= self.map_end_offset
        live = self.producers.get(pid)
        current_epoch = live.epoch if live is not None else -1
        last_seq = -1 if seq == -1 else increment_sequence(seq, count - 1)
        if origin == Origin.CLIENT and seq < 0:
            return ("err", INVALID_RECORD)  # rule 8
        if origin == Origin.CLIENT and live is not None and epoch == live.epoch:
            for batch in live.batches:  # rule 10: oldest first, before any other check
                first = decrement_sequence(batch.last_sequence, batch.offset_delta)
                if first == seq and batch.last_sequence == last_seq:
                    return ("dup", batch)
        if epoch < current_epoch and origin != Origin.REPLICATION:
            return ("err", INVALID_PRODUCER_EPOCH)  # rule 12 (§2.4: a follower only warns)
        if origin == Origin.CLIENT:  # rules 15-16; §2.3 and §2.4 skip them
            if epoch != current_epoch:
                if seq != 0 and current_epoch != -1:
                    return ("err", OUT_OF_ORDER_SEQUENCE_NUMBER)
            elif current_epoch != -1 and not in_sequence(live.last_sequence, seq):
                return ("err", OUT_OF_ORDER_SEQUENCE_NUMBER)
        if live is not None and live.txn_first_offset is not None and not transactional:
            return ("err", INVALID_TXN_STATE)  # rule 18, every origin
        if live is None and self.max_producers is not None and origin == Origin.CLIENT:
            if sum(e.txn_first_offset is not None for e in self.producers.values()) >= self.max_producers:
                return ("err", THROTTLING_QUOTA_EXCEEDED)  # nothing can be evicted
        self.record(pid, epoch, last_seq, count, base_offset, ts, transactional)
        return ("ok", None)

    def record(self, pid, epoch, last_seq, count, base_offset, ts, transactional):
        # Rule 17 / §1.2 addBatch, §3.2 step 4 and step 6.
        live = self.producers.get(pid) or self.admit(pid)
        live.maybe_update_epoch(epoch)
        live.batches.append(BatchMetadata(last_seq, base_offset + count - 1, count - 1, ts))
        live.last_timestamp = ts
        if transactional and live.txn_first_offset is None:
            live.txn_first_offset = base_offset  # rule 18: the first transactional batch starts it
        self.map_end_offset = base_offset + count

    def marker(self, pid, epoch, coordinator_epoch, offset, commit, ts, origin):
        """("ok", CompletedTxn | None) | ("err", code) (§2.2)."""
        assert offset >= self.map_end_offset
        live = self.producers.get(pid)
        current_epoch = live.epoch if live is not None else -1
        current_coordinator = live.coordinator_epoch if live is not None else -1
        if origin == Origin.CLIENT:
            return ("err", INVALID_RECORD)  # rule 7: clients cannot send control batches
        if epoch < current_epoch and origin != Origin.REPLICATION:
            return ("err", INVALID_PRODUCER_EPOCH)  # M2
        if current_coordinator > coordinator_epoch and origin != Origin.REPLICATION:
            return ("err", TRANSACTION_COORDINATOR_FENCED)  # M3
        live = self.producers.get(pid) or self.admit(pid)  # M4
        completed = None
        if live.txn_first_offset is not None:  # M5; an empty transaction completes nothing
            completed = CompletedTxn(pid, live.txn_first_offset, offset, not commit)
        live.maybe_update_epoch(epoch)
        live.coordinator_epoch = coordinator_epoch
        live.txn_first_offset = None
        live.last_timestamp = ts
        self.map_end_offset = offset + 1
        return ("ok", completed)

    def expire(self, now_ms, expiration_ms) -> int:
        # §6: no ongoing transaction and now - lastTimestamp >= expiration (exact arithmetic).
        gone = [
            pid
            for pid, e in self.producers.items()
            if e.txn_first_offset is None and now_ms - e.last_timestamp >= expiration_ms
        ]
        for pid in gone:
            del self.producers[pid]
        return len(gone)

    def entries(self) -> dict[int, ProducerStateEntry]:
        return {
            pid: ProducerStateEntry(
                pid, e.epoch, tuple(e.batches), e.coordinator_epoch, e.last_timestamp, e.txn_first_offset
            )
            for pid, e in self.producers.items()
        }

    def next_in_sequence(self, pid: int) -> tuple[int, int]:
        """(epoch, sequence) a well-behaved client sends next."""
        live = self.producers.get(pid)
        if live is None or live.epoch < 0:
            return 0, 0
        if not live.batches:
            return live.epoch, 0
        return live.epoch, increment_sequence(live.last_sequence, 1)
