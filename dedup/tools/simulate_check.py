"""The invariants a simulation run must keep, checked on the cluster it leaves: the list in
:mod:`dedup.tools.simulate`'s description, numbered the same way in :func:`check`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

from .._types import Origin
from ..producer import IdempotentProducer, ProducerBatch
from ..records import append_batches, scan_batches
from .simulate_run import Run


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
            skipped = run.skipped.get(broker.broker_id, set())
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
    return violations


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
