"""The inputs of ``python -m dedup fuzz``: the seed corpus (small valid batches, snapshot
files of both formats, Kafka request frames; :func:`seed_inputs`, :func:`load_corpus`) and the
mutation engine that changes them (:func:`mutate`: bit flips, interesting values, length
fields, truncation, extension, splicing, CRCs made right again half of the time).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_INPUT = 1 << 16  # mutated inputs are cut here: the bugs worth finding show up in small inputs
KINDS = ("batches", "snapshots", "frames")
TIMESTAMP = 1_767_225_600_000

_INTERESTING_BYTES = (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF)
_INTERESTING_16 = (0, 1, -1, 2, 0x7FFF, -0x8000, 5, 255)
_INTERESTING_32 = (0, 1, -1, 2, 12, 49, 61, 0x7FFFFFFF, -0x80000000, 0x7FFFFFF0, 65535)
_INTERESTING_64 = (0, 1, -1, (1 << 63) - 1, -(1 << 63), 1 << 32, TIMESTAMP)


# --- seeds -------------------------------------------------------------------------------------


def seed_inputs() -> dict[str, bytes]:
    """The corpus: small valid inputs, keyed ``"<kind>/<name>.bin"`` (kind: batches, snapshots,
    frames). ``python -m dedup fuzz --write-corpus DIR`` writes them."""
    seeds = {f"batches/{name}.bin": data for name, data in _batch_seeds().items()}
    seeds.update({f"snapshots/{name}.bin": data for name, data in _snapshot_seeds().items()})
    seeds.update({f"frames/{name}.bin": data for name, data in _frame_seeds().items()})
    return seeds


def _batch_seeds() -> dict[str, bytes]:
    from ..batch import encode_batch, encode_marker

    def batch(values: Any, **fields: Any) -> bytes:
        if "timestamps" not in fields:
            fields.setdefault("timestamp", TIMESTAMP)
        return encode_batch(values, **fields)

    next_1000 = batch([b"a", b"bb"], keys=[b"k", None], headers=[[("h", b"1")], [("n", None)]], producer_id=1000,
                      producer_epoch=5, base_sequence=3)  # fmt: skip
    transaction = batch([b"t"], producer_id=2000, producer_epoch=1, base_sequence=2, transactional=True)
    commit = encode_marker(producer_id=2000, producer_epoch=1, commit=True, coordinator_epoch=4, timestamp=TIMESTAMP)
    follower = b"".join(
        (
            batch(
                [b"x"] * 3,
                producer_id=1000,
                producer_epoch=5,
                base_sequence=3,
                base_offset=10,
                partition_leader_epoch=3,
            ),  # fmt: skip
            batch(
                [b"y"],
                producer_id=2000,
                producer_epoch=1,
                base_sequence=2,
                transactional=True,
                base_offset=13,
                partition_leader_epoch=3,
            ),  # fmt: skip
            encode_marker(
                producer_id=2000,
                producer_epoch=1,
                commit=False,
                coordinator_epoch=4,
                timestamp=TIMESTAMP,
                base_offset=14,
                partition_leader_epoch=3,
            ),  # fmt: skip
        )
    )
    return {
        "idempotent": next_1000,
        "plain": batch([b"no producer id", None]),
        "transactional": transaction,
        "commit-marker": commit,
        "abort-marker": encode_marker(producer_id=7, producer_epoch=0, commit=False, coordinator_epoch=0, timestamp=1),
        "retry": next_1000 + next_1000,
        "leader-buffer": next_1000
        + batch([b"c"], producer_id=1000, producer_epoch=5, base_sequence=5)
        + transaction
        + commit,
        "follower-buffer": follower,
        "timestamps": batch(
            [b"1", b"2", b"3"], timestamps=[TIMESTAMP, 5, -1], producer_id=4000, producer_epoch=0, base_sequence=0
        ),  # fmt: skip
        "sequence-wrap": batch([b"w"] * 3, producer_id=1000, producer_epoch=6, base_sequence=(1 << 31) - 2),
    }


def _snapshot_seeds() -> dict[str, bytes]:
    from .._state import ProducerStateTable
    from ..records import crc32c
    from ..snapshot import encode_snapshot

    table = ProducerStateTable(3)
    end = 0
    for sequence in range(4):  # a wrapped window
        end = table.append(1000, 5, 2 * sequence, 2, end, max_timestamp=100 + sequence).last_offset + 1
    end = table.append(7, 0, 0, 1, end, max_timestamp=200, transactional=True).last_offset + 1
    table.append_marker(9, 2, 4, end, commit=True, timestamp=300)
    escaping = ProducerStateTable(3)  # values the full format's version 2 escapes
    escaping.append(1, 0, 0, 1, 0, max_timestamp=-5)
    escaping.append(1, 0, 1, 70_000, 1 << 33, max_timestamp=1 << 40)
    escaping.append(1, 0, 70_001, 1, (1 << 33) + 70_000, max_timestamp=(1 << 40) + 1)
    # Version 1 of the full format (still read): every batch in full, 24 bytes each.
    body = struct.pack(">4shhqi", b"DDPS", 1, 3, table.map_end_offset, len(table))
    for producer_id in table:
        entry: Any = table.entry(producer_id)
        txn = -1 if entry.current_txn_first_offset is None else entry.current_txn_first_offset
        body += struct.pack(">qhiqqB", producer_id, entry.producer_epoch, entry.coordinator_epoch,
                            entry.last_timestamp, txn, len(entry.batches))  # fmt: skip
        for batch in entry.batches:
            body += struct.pack(">iiqq", batch.last_sequence, batch.offset_delta, batch.last_offset, batch.timestamp)
    return {
        "kafka-empty": encode_snapshot(ProducerStateTable(), "kafka"),
        "kafka-table": encode_snapshot(table, "kafka"),
        "full-empty": encode_snapshot(ProducerStateTable(), "full"),
        "full-table": encode_snapshot(table, "full"),
        "full-escapes": encode_snapshot(escaping, "full"),
        "full-v1-table": body + struct.pack(">I", crc32c(body)),
    }


def group_and_admin_requests() -> dict[str, tuple[int, int, dict[str, Any]]]:
    """One valid request of each group and admin API, ``name -> (api key, version, body)``,
    for the fuzzer's seeds and the server's mutated-frames test. Each is answered at once (a
    JoinGroup v5 without member id gets MEMBER_ID_REQUIRED; the rest name groups and members
    that do not exist, or only validate): a mutation may still make a JoinGroup or SyncGroup
    wait for a rebalance, as in Kafka's purgatory, bounded by the group's timeouts."""
    import datetime

    from ..server.wire import ApiKey

    ms = datetime.timedelta(milliseconds=1)
    group = "fuzz-group"
    committed = {"partition_index": 0, "committed_offset": 1, "committed_leader_epoch": -1, "committed_metadata": ""}
    topics = [{"name": "clicks", "partitions": [committed]}]
    return {
        "find-coordinator-v3": (ApiKey.FIND_COORDINATOR, 3, {"key": group, "key_type": 0}),
        "find-coordinator-v4": (ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": [group, "other"]}),
        "join-group-v5": (ApiKey.JOIN_GROUP, 5, {
            "group_id": group, "session_timeout": 10_000 * ms, "rebalance_timeout": 30_000 * ms, "member_id": "",
            "group_instance_id": None, "protocol_type": "consumer", "reason": None,
            "protocols": [{"name": "range", "metadata": b"\x00\x01\x00\x00\x00\x01\x00\x06clicks\xff\xff\xff\xff"}],
        }),  # fmt: skip
        "sync-group-v5": (ApiKey.SYNC_GROUP, 5, {
            "group_id": group, "generation_id": 1, "member_id": "nobody", "group_instance_id": None,
            "protocol_type": "consumer", "protocol_name": "range",
            "assignments": [{"member_id": "nobody", "assignment": b"\x00\x01"}],
        }),  # fmt: skip
        "heartbeat-v4": (ApiKey.HEARTBEAT, 4, {"group_id": group, "generation_id": 1, "member_id": "nobody",
                                               "group_instance_id": None}),  # fmt: skip
        "leave-group-v4": (ApiKey.LEAVE_GROUP, 4, {"group_id": group, "members": [
            {"member_id": "nobody", "group_instance_id": None, "reason": None}]}),  # fmt: skip
        "offset-commit-v8": (ApiKey.OFFSET_COMMIT, 8, {"group_id": group, "generation_id_or_member_epoch": 3,
                                                       "generation_id": 3, "member_id": "nobody",
                                                       "group_instance_id": None, "topics": topics}),  # fmt: skip
        "offset-fetch-v7": (ApiKey.OFFSET_FETCH, 7, {"group_id": group, "require_stable": False,
                                                     "topics": [{"name": "clicks", "partition_indexes": [0, 1]}]}),
        "offset-fetch-v8": (ApiKey.OFFSET_FETCH, 8, {"require_stable": False, "groups": [
            {"group_id": group, "topics": None}]}),  # fmt: skip
        "offset-delete-v0": (ApiKey.OFFSET_DELETE, 0, {"group_id": group, "topics": [
            {"name": "clicks", "partitions": [{"partition_index": 0}]}]}),  # fmt: skip
        "list-groups-v4": (ApiKey.LIST_GROUPS, 4, {"states_filter": ["Stable"]}),
        "describe-groups-v5": (ApiKey.DESCRIBE_GROUPS, 5, {"groups": [group],
                                                           "include_authorized_operations": True}),  # fmt: skip
        "delete-groups-v2": (ApiKey.DELETE_GROUPS, 2, {"groups_names": [group]}),
        "create-topics-v5": (ApiKey.CREATE_TOPICS, 5, {"timeout": 5000 * ms, "validate_only": True, "topics": [
            {"name": "fuzz-topic", "num_partitions": 3, "replication_factor": -1, "assignments": [],
             "configs": [{"name": "cleanup.policy", "value": "delete"}]}]}),  # fmt: skip
        "delete-topics-v4": (ApiKey.DELETE_TOPICS, 4, {"timeout": 5000 * ms, "topic_names": ["fuzz-no-topic"]}),
        "describe-configs-v4": (ApiKey.DESCRIBE_CONFIGS, 4, {
            "include_synonyms": False, "include_documentation": True,
            "resources": [{"resource_type": 2, "resource_name": "clicks", "configuration_keys": None},
                          {"resource_type": 4, "resource_name": "0", "configuration_keys": ["num.partitions"]}],
        }),  # fmt: skip
        "describe-cluster-v0": (ApiKey.DESCRIBE_CLUSTER, 0, {"include_cluster_authorized_operations": False}),
        # Transactions (issue 15): a transactional id that InitProducerId creates, the others naming it.
        "find-coordinator-txn-v4": (ApiKey.FIND_COORDINATOR, 4, {"key_type": 1, "coordinator_keys": ["fuzz-txn"]}),
        "init-producer-id-txn-v5": (ApiKey.INIT_PRODUCER_ID, 5, {
            "transactional_id": "fuzz-txn", "transaction_timeout": 60_000 * ms, "producer_id": -1,
            "producer_epoch": -1}),  # fmt: skip
        "add-partitions-to-txn-v3": (ApiKey.ADD_PARTITIONS_TO_TXN, 3, {
            "v3_and_below_transactional_id": "fuzz-txn", "v3_and_below_producer_id": 1000,
            "v3_and_below_producer_epoch": 0, "v3_and_below_topics": [{"name": "clicks", "partitions": [0]}]}),
        "add-offsets-to-txn-v3": (ApiKey.ADD_OFFSETS_TO_TXN, 3, {"transactional_id": "fuzz-txn", "producer_id": 1000,
                                                                 "producer_epoch": 0, "group_id": group}),  # fmt: skip
        "txn-offset-commit-v3": (ApiKey.TXN_OFFSET_COMMIT, 3, {
            "transactional_id": "fuzz-txn", "group_id": group, "producer_id": 1000, "producer_epoch": 0,
            "generation_id": -1, "member_id": "", "group_instance_id": None, "topics": topics}),  # fmt: skip
        "end-txn-v3": (ApiKey.END_TXN, 3, {"transactional_id": "fuzz-txn", "producer_id": 1000, "producer_epoch": 0,
                                           "committed": True}),  # fmt: skip
        "describe-transactions-v0": (ApiKey.DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": ["fuzz-txn"]}),
        "list-transactions-v1": (ApiKey.LIST_TRANSACTIONS, 1, {"state_filters": ["Ongoing"],
                                                               "producer_id_filters": [], "duration_filter": -1}),
    }


def _frame_seeds() -> dict[str, bytes]:
    import datetime
    import io

    from kio.index import load_request_schema
    from kio.serial import entity_writer

    from ..batch import encode_batch
    from ..server.wire import ApiKey, build

    def frame(api_key: int, version: int, body: dict[str, Any]) -> bytes:
        schema = load_request_schema(api_key, version)
        buffer = io.BytesIO()
        header = schema.__header_schema__
        fields: dict[str, Any] = {
            "request_api_key": api_key,
            "request_api_version": version,
            "correlation_id": 7,
            "client_id": "fuzz",
        }
        entity_writer(header)(buffer, header(**fields))
        entity_writer(schema)(buffer, build(schema, body))
        return buffer.getvalue()

    records = encode_batch([b"x", b"y"], producer_id=1000, producer_epoch=0, base_sequence=0, timestamp=TIMESTAMP)
    produce = {"acks": -1, "timeout": datetime.timedelta(seconds=5),
               "topic_data": [{"name": "clicks", "partition_data": [{"index": 0, "records": records}]}]}  # fmt: skip
    metadata = {"topics": [{"name": "clicks"}, {"name": "nope"}], "allow_auto_topic_creation": False}
    metadata.update(include_cluster_authorized_operations=False, include_topic_authorized_operations=False)
    partition = {"partition": 0, "fetch_offset": 0, "log_start_offset": -1, "partition_max_bytes": 1 << 20,
                 "current_leader_epoch": -1}  # fmt: skip
    fetch = {"replica_id": -1, "max_wait": datetime.timedelta(0), "min_bytes": 0, "max_bytes": 1 << 20,
             "isolation_level": 0, "session_id": 0, "session_epoch": -1,
             "topics": [{"topic": "clicks", "partitions": [partition]}], "forgotten_topics_data": [],
             "rack_id": ""}  # fmt: skip
    list_offsets = {"replica_id": -1, "isolation_level": 0, "topics": [{"name": "clicks", "partitions": [
        {"partition_index": 0, "timestamp": timestamp, "current_leader_epoch": -1}
        for timestamp in (-1, -2, TIMESTAMP)]}]}  # fmt: skip
    init = {"transactional_id": None, "transaction_timeout": datetime.timedelta(0), "producer_id": -1,
            "producer_epoch": -1}  # fmt: skip
    return {
        "api-versions-v0": frame(ApiKey.API_VERSIONS, 0, {}),
        "api-versions-v3": frame(ApiKey.API_VERSIONS, 3, {"client_software_name": "f", "client_software_version": "1"}),
        "metadata-v0": frame(ApiKey.METADATA, 0, metadata),
        "metadata-v1-all": frame(ApiKey.METADATA, 1, {**metadata, "topics": None}),
        "metadata-v9": frame(ApiKey.METADATA, 9, metadata),
        "init-producer-id-v0": frame(ApiKey.INIT_PRODUCER_ID, 0, init),
        "init-producer-id-v4": frame(ApiKey.INIT_PRODUCER_ID, 4, init),
        "produce-v3": frame(ApiKey.PRODUCE, 3, produce),
        "produce-v9": frame(ApiKey.PRODUCE, 9, produce),
        "fetch-v4": frame(ApiKey.FETCH, 4, fetch),
        "fetch-v11": frame(ApiKey.FETCH, 11, fetch),
        "list-offsets-v1": frame(ApiKey.LIST_OFFSETS, 1, list_offsets),
        "list-offsets-v5": frame(ApiKey.LIST_OFFSETS, 5, list_offsets),
    } | {name: frame(api_key, version, body) for name, (api_key, version, body) in group_and_admin_requests().items()}


def load_corpus(directory: Path | None) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden files and ``.txt``/``.md`` notes left out), keyed by
    its path relative to it; :func:`seed_inputs` when ``directory`` is None."""
    if directory is None:
        return seed_inputs()
    files = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix in (".txt", ".md"):
            continue
        files[relative.as_posix()] = path.read_bytes()
    return files


# --- mutations ------------------------------------------------------------------------------------


def _batch_starts(data: bytes | bytearray) -> list[int]:
    """Where v2 batches begin, walking lengths from 0 (as far as they hold together)."""
    starts, position = [], 0
    while position + 61 <= len(data):
        length = int.from_bytes(data[position + 8 : position + 12], "big", signed=True)
        if length < 49 or position + 12 + length > len(data):
            break
        starts.append(position)
        position += 12 + length
    return starts


def _length_fields(data: bytearray) -> list[tuple[int, int]]:
    """(offset, width) of fields that say how long or how many, by the layout the input looks like."""
    if data[:4] == b"DDPS":
        return [(6, 2), (16, 4)] + [(len(data) - 8, 4)] * (len(data) >= 28)
    if data[:2] == b"\x00\x01":
        return [(6, 4)]
    fields = [(position + 8, 4) for position in _batch_starts(data)]
    fields += [(position + 57, 4) for position in _batch_starts(data)]  # record count
    return fields or [(0, 4)]


def fix_crcs(data: bytearray) -> None:
    """Make the CRCs right again where the input's layout keeps them (snapshot formats, v2 batches
    laid end to end from 0), so a mutation reaches the checks behind the CRC."""
    from ..records import crc32c

    if data[:4] == b"DDPS" and len(data) >= 8:
        struct.pack_into(">I", data, len(data) - 4, crc32c(bytes(data[:-4])))
    elif data[:2] == b"\x00\x01" and len(data) >= 6:
        struct.pack_into(">I", data, 2, crc32c(bytes(data[6:])))
    else:
        for position in _batch_starts(data):
            if data[position + 16] == 2:
                end = position + 12 + int.from_bytes(data[position + 8 : position + 12], "big", signed=True)
                struct.pack_into(">I", data, position + 17, crc32c(bytes(data[position + 21 : end])))


def _put(data: bytearray, at: int, width: int, value: int) -> None:
    if at + width <= len(data):
        data[at : at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big")


def mutate(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    """``data`` changed by one to eight mutations, its CRCs then made right half of the time."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        kind = rng.randrange(11)
        at = rng.randrange(len(out)) if out else 0
        if kind == 0 and out:  # bit flip
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and out:  # an interesting byte
            out[at] = rng.choice(_INTERESTING_BYTES) if rng.random() < 0.8 else rng.randrange(256)
        elif kind == 2:  # an interesting big-endian field
            width = rng.choice((2, 4, 4, 8))
            values = {
                2: _INTERESTING_16,
                4: _INTERESTING_32 + (len(out), len(out) - 12, len(out) - 11),
                8: _INTERESTING_64,
            }
            _put(out, at, width, rng.choice(values[width]))
        elif kind == 3:  # a length or count field: set or nudged
            offset, width = rng.choice(_length_fields(out))
            if offset + width <= len(out):
                current = int.from_bytes(out[offset : offset + width], "big", signed=True)
                nudged = current + rng.choice((-1, 1, -2, 2, -12, 12, 1 << 16))
                _put(out, offset, width, nudged if rng.random() < 0.6 else rng.choice(_INTERESTING_32))
        elif kind == 4:  # truncation
            del out[rng.randrange(len(out) + 1) :]
        elif kind == 5:  # extension: random bytes, a copy of itself, or another input
            choice = rng.randrange(3)
            if choice == 0:
                out += rng.randbytes(rng.randrange(1, 32))
            elif choice == 1:
                out += out[at : at + rng.randrange(1, 128)]
            else:
                out += rng.choice(corpus)
        elif kind == 6 and out:  # a chunk deleted
            del out[at : at + rng.randrange(1, 16)]
        elif kind == 7:  # random bytes inserted
            out[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif kind == 8:  # spliced with another input
            other = rng.choice(corpus)
            out = out[:at] + other[rng.randrange(len(other) + 1) :]
        elif kind == 9 and out:  # a chunk copied over another place
            source = rng.randrange(len(out))
            chunk = out[source : source + rng.randrange(1, 16)]
            out[at : at + len(chunk)] = chunk
        elif kind == 10 and out:  # random bytes over a place
            out[at : at + 4] = rng.randbytes(min(4, len(out) - at))
        if len(out) > MAX_INPUT:
            del out[MAX_INPUT:]
    if rng.random() < 0.5:
        fix_crcs(out)
    return bytes(out)
