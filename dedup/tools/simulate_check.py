"""The invariants a simulation run must keep, checked on the cluster it leaves: the list in
:mod:`dedup.tools.simulate`'s description, numbered the same way in :func:`check`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, NamedTuple

from .._types import Origin
from ..coordinator.transaction_metadata import TransactionState
from ..producer import IdempotentProducer, ProducerBatch
from ..records import append_batches, scan_batches
from ..transaction_index import CONTROL_ABORT, CONTROL_COMMIT, AbortedTxn
from .simulate_run import Run, open_transactions, transactional_batches
from .simulate_txn import settled_state


class _Stored(NamedTuple):
    offset: int
    last_offset: int
    key: tuple[int, int, int]  # producer id, epoch, base sequence


def _log_batches(log: Any, up_to: int | None = None) -> list[_Stored]:
    """Every data batch with a producer id in ``log`` (below ``up_to``)."""
    stored = []
    offset = log.log_start_offset
    end = log.log_end_offset if up_to is None else up_to
    while offset < end:
        data = log.read(offset, 1 << 20, max_offset=end)
        if not data:
            break
        headers = scan_batches(data)
        for row in headers:
            base = int(row["base_offset"])
            if int(row["producer_id"]) >= 0 and not row["is_control"]:
                key = (int(row["producer_id"]), int(row["producer_epoch"]), int(row["base_sequence"]))
                stored.append(_Stored(base, base + int(row["last_offset_delta"]), key))
        offset = int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) + 1
    return stored


def _rebuilt_table(log: Any) -> Any:
    """The producer table a replay of every batch of ``log`` from its start gives."""
    table = type(log.producer_state)(window=log.window)
    offset = log.log_start_offset
    table.update_map_end_offset(offset)
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        if not data:
            break
        append_batches(table, data, origin=Origin.REPLICATION, log_end_offset=offset)
        headers = scan_batches(data)
        offset = int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) + 1
    table.update_map_end_offset(max(table.map_end_offset, log.log_end_offset))
    return table


def _batch_key(producer: IdempotentProducer, batch: ProducerBatch) -> tuple[int, int, int]:
    return (producer.producer_id, producer.producer_epoch, batch.base_sequence)


def check(run: Run) -> list[str]:
    """The invariants of the module docstring; a list of violations (empty: the run is good)."""
    violations: list[str] = []
    cluster = run.cluster
    if cluster.leader_id is None:
        return ["no leader at the end of the run"]
    leader = cluster.leader_log
    committed = _log_batches(leader, leader.high_watermark)
    by_key: dict[tuple[int, int, int], list[_Stored]] = {}
    for stored in committed:
        by_key.setdefault(stored.key, []).append(stored)
    lost_ranges = [(loss.first_offset, loss.end_offset) for loss in cluster.data_loss]

    # 1, 6: acknowledged batches, exactly once, or reported lost.
    for instance in run.instances:
        producer = instance.producer
        for batch in producer.batches:
            if not batch.acknowledged:
                continue
            run.counts.acknowledged += 1
            run.counts.duplicates += int(batch.duplicate)
            found = by_key.get(_batch_key(producer, batch), [])
            reported = any(first <= batch.base_offset < end for first, end in lost_ranges)
            if len(found) > 1:
                violations.append(f"acknowledged batch {_batch_key(producer, batch)} is in the log {len(found)} times")
            elif not found or (found[0].offset, found[0].last_offset) != (batch.base_offset, batch.last_offset):
                if reported:
                    run.counts.lost_batches += 1
                else:
                    where = "missing" if not found else f"at {found[0].offset}-{found[0].last_offset}"
                    violations.append(
                        f"acknowledged batch {_batch_key(producer, batch)} at {batch.base_offset}-{batch.last_offset} "
                        f"is {where} in the committed log, and no unclean election reported it lost"
                    )
    if lost_ranges and not cluster.unclean_elections:
        violations.append(f"losses reported without an unclean election: {cluster.data_loss}")

    # 2: sequence order per producer id and epoch.
    last_sequence: dict[tuple[int, int], int] = {}
    for stored in committed:
        producer_key = stored.key[:2]
        if producer_key in last_sequence and stored.key[2] <= last_sequence[producer_key]:
            violations.append(f"producer {producer_key}: sequence {stored.key[2]} at offset {stored.offset} "
                              f"follows {last_sequence[producer_key]}")  # fmt: skip
        last_sequence[producer_key] = stored.key[2]

    for broker in cluster.brokers:
        log = broker.log
        if log is None:
            continue
        # 3: no batch twice in any replica's log.
        keys = Counter(stored.key for stored in _log_batches(log))
        for key, count in keys.items():
            if count > 1:
                violations.append(f"broker {broker.broker_id}: batch {key} is stored {count} times")
        # 4: the live table against a replay of the replica's own log.
        live = log.producer_state
        rebuilt = _rebuilt_table(log)
        for producer_id in sorted({*map(int, live.producer_ids()), *map(int, rebuilt.producer_ids())}):
            mine, replayed = live.entry(producer_id), rebuilt.entry(producer_id)
            if mine == replayed:
                continue
            if producer_id in run.expired_ids and (
                mine is None
                or (
                    replayed is not None
                    and replayed.batches[len(replayed.batches) - len(mine.batches) :] == mine.batches
                )  # fmt: skip
            ):
                continue
            skipped = run.skipped.get((cluster.name, broker.broker_id), set())
            if replayed is not None and any(
                start <= batch.last_offset < end
                for batch in replayed.batches
                if mine is None or batch not in mine.batches
                for start, end in skipped
            ):
                run.counts.kafka_shortcut += 1  # Kafka's own behaviour (spec §5.3 step 3), counted apart
                continue
            violations.append(f"broker {broker.broker_id}: producer {producer_id}'s entry {mine} differs from the "
                              f"one its log rebuilds, {replayed}")  # fmt: skip
        # 5: in-sync replicas agree with the leader up to the high watermark.
        if broker.broker_id in cluster.isr and broker.broker_id != cluster.leader_id:
            high_watermark = leader.high_watermark
            if log.log_end_offset >= high_watermark:
                mine_bytes = _read_all(log, high_watermark)
                if mine_bytes != _read_all(leader, high_watermark):
                    violations.append(f"in-sync broker {broker.broker_id} differs from the leader below the high "
                                      f"watermark {high_watermark}")  # fmt: skip
            else:
                violations.append(f"in-sync broker {broker.broker_id} ends at {log.log_end_offset}, below the high "
                                  f"watermark {high_watermark}")  # fmt: skip
    if run.coordinator is not None:
        violations += check_transactions(run)
    return violations


_SETTLED = {TransactionState.EMPTY.state_name, TransactionState.COMPLETE_COMMIT.state_name,
            TransactionState.COMPLETE_ABORT.state_name}  # fmt: skip


def check_transactions(run: Run) -> list[str]:
    """The invariants of transactions (runs with the real coordinator), after the run ended
    every transaction:

    7. each replica's ``.txnindex`` equals the one its log rebuilds (an AbortedTxn per ABORT
       marker closing an open transaction, with the first offset of the earliest transaction
       still open as its last stable offset), except the entries of transactions that span a
       range the replica's rebuild did not replay: Kafka's UnifiedLog.rebuildProducerState
       skips it when the table was empty before a truncation (``isEmptyBeforeTruncation``),
       ProducerStateManager.isProducerExpired lets producers whose transactions completed
       expire, and ProducerAppendInfo.appendEndTxnMarker then completes from the reloaded
       entry, so Kafka's ``.txnindex`` differs the same way (:func:`spans_a_skipped_replay`;
       counted apart; seeds 176, 1313, 1692; tests/log/test_rebuild_shortcut.py);
    8. without a reported unclean election, a read_committed reader of both partitions sees
       every record of every committed transaction exactly once, no record of an aborted one
       (by the client, or by the coordinator: fenced, timed out), all or none of a transaction
       whose EndTxn answer was lost; each leader's last stable offset is its high watermark and
       no transaction is left open in its log;
    9. the coordinator has settled every transactional id (Empty, CompleteCommit,
       CompleteAbort, no markers pending), and a coordinator loading ``__transaction_state``
       afresh finds the same producer id, epoch and state for each.

    Along the run (``run.violations``): the last stable offset never above the high watermark
    nor past an open transaction, the state of each id after every reload equal to its state
    before the crash (PrepareX completed), no zombie commit."""
    coordinator = run.coordinator
    assert coordinator is not None
    violations = list(run.violations)
    data = [cluster for cluster in (run.cluster, run.side) if cluster is not None]
    for cluster in data:
        for broker in cluster.brokers:
            if broker.log is None:
                continue
            found = [entry for segment in broker.log._local_log.segments for entry in segment.txn_index.entries]
            rebuilt = _rebuilt_txn_index(broker.log)
            if found == rebuilt:
                continue
            skipped = run.skipped.get((cluster.name, broker.broker_id), set())
            unexplained = [entry for entry in set(found) ^ set(rebuilt) if not spans_a_skipped_replay(entry, skipped)]
            if unexplained:
                violations.append(f"{cluster.name} broker {broker.broker_id}: .txnindex {found} differs from the one "
                                  f"its log rebuilds, {rebuilt}")  # fmt: skip
            else:
                run.counts.txnindex_kafka_shortcut += len(set(found) ^ set(rebuilt))
    if not any(cluster.data_loss for cluster in data):
        visible: Counter[bytes | None] = Counter()
        for cluster in data:
            visible.update(record.value for record in cluster.consume(isolation="read_committed"))
        for value, count in visible.items():
            if count > 1:
                violations.append(f"read_committed: {value!r} seen {count} times")
        for transaction in run.transactions:
            values = transaction.values()
            seen = [value for value in values if visible[value]]
            what = (f"producer {transaction.instance.slot} instance {transaction.instance.generation}'s "
                    f"{transaction.outcome} transaction from batch {transaction.first_batch}")  # fmt: skip
            if transaction.outcome == "committed" and len(seen) != len(values):
                missing = [value for value in values if not visible[value]]
                violations.append(f"{what}: {missing} not visible to read_committed")
            elif transaction.outcome in ("aborted", "open") and seen:
                violations.append(f"{what}: {seen} visible to read_committed")
            elif transaction.outcome == "unknown" and seen and len(seen) != len(values):
                violations.append(f"{what}: only {seen} of {values} visible to read_committed")
        for cluster in data:
            log = cluster.leader_log
            left_open = open_transactions(log)
            if log.last_stable_offset != log.high_watermark or left_open:
                violations.append(f"{cluster.name}: at the end the last stable offset is {log.last_stable_offset}, the "
                                  f"high watermark {log.high_watermark}, open transactions {left_open}")  # fmt: skip
    live = settled_state(coordinator.coordinator)
    for tid, (_, _, state) in sorted(live.items()):
        if state not in _SETTLED:
            violations.append(f"transactional id {tid}: {state} at the end of the run")
    if coordinator.coordinator._markers:
        violations.append(f"markers still pending at the end: {sorted(coordinator.coordinator._markers)}")
    coordinator.restart(fault=None)
    coordinator.settle()
    reloaded = settled_state(coordinator.coordinator)
    if reloaded != live:
        violations.append(f"the coordinator reloaded {reloaded}, it had {live}")
    return violations


def spans_a_skipped_replay(entry: AbortedTxn, skipped: Iterable[tuple[int, int]]) -> bool:
    """Whether the transaction of ``entry`` (from its first offset through its marker) overlaps
    a range [start, end) the replica's rebuild did not replay (Kafka's shortcut, spec §5.3 step
    3, ``PartitionLog.skipped_replays``). Only such a transaction can be missing from the
    replica's table (opened in the range: its ABORT completes nothing) or left open in it from
    an older snapshot (closed in the range: a later ABORT completes it with the old first
    offset), which is how Kafka's own ``.txnindex`` comes to differ from its log."""
    return any(entry.first_offset < end and entry.last_offset >= start for start, end in skipped)


def _rebuilt_txn_index(log: Any) -> list[AbortedTxn]:
    entries: list[AbortedTxn] = []
    ongoing: dict[int, int] = {}
    for producer_id, base, kind in transactional_batches(log):
        if kind is None:
            ongoing.setdefault(producer_id, base)
        elif kind in (CONTROL_ABORT, CONTROL_COMMIT) and producer_id in ongoing:
            first = ongoing.pop(producer_id)
            if kind == CONTROL_ABORT:
                entries.append(AbortedTxn(producer_id, first, base, min(ongoing.values(), default=base + 1)))
    return entries


def _read_all(log: Any, end: int) -> list[tuple[int, int]]:
    """(base offset, CRC) of every batch below ``end``: what two replicas must agree on
    (the leader epoch field sits outside the CRC and is compared by the epoch cache)."""
    out = []
    offset = log.log_start_offset
    while offset < end:
        data = log.read(offset, 1 << 20, max_offset=end)
        if not data:
            break
        headers = scan_batches(data)
        out += list(zip(headers["base_offset"].tolist(), headers["crc"].tolist(), strict=True))
        offset = int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) + 1
    return out
