"""``python -m dedup probe --bootstrap HOST:PORT``: does a Kafka-compatible broker follow the
idempotent producer's rules? Raw Produce requests, checked against dedup's reference table.

The probe speaks the Kafka protocol itself (request and response bodies from Kafka's own
message schemas, through kio, as ``dedup serve`` does; batches from :mod:`dedup.batch`), so no
client library retries or hides what the broker answered. It takes a producer id from
InitProducerId for each rule, sends batches with chosen epochs and sequences to the leader of
partition 0 of ``--topic`` (created through Metadata's auto-creation or CreateTopics if it
does not exist), and compares every answer with what ``dedup.reference`` (Kafka's
ProducerStateManager rules, docs/spec.md) says it must be:

- ``retry-last-5``: a retry of each of the last 5 batches is answered NONE with the
  batch's original base offset (ProducerStateEntry.findDuplicateBatch, window 5);
- ``sixth-oldest``: the 6th-oldest batch is no longer recognised: OUT_OF_ORDER_SEQUENCE_NUMBER;
- ``gap``: a batch after a missing one: OUT_OF_ORDER_SEQUENCE_NUMBER;
- ``older-epoch``: a batch with an epoch older than the producer's: INVALID_PRODUCER_EPOCH
  (Kafka 2.7+, ProducerAppendInfo.checkProducerEpoch);
- ``new-epoch``: a new epoch must start at sequence 0 (OUT_OF_ORDER_SEQUENCE_NUMBER
  otherwise), and does;
- ``wraparound``: sequences wrap from 2^31-1 to 0 (DefaultRecordBatch.incrementSequence),
  and a retry across the wrap is a duplicate;
- ``unknown-producer``: a producer the partition has no state for is accepted at any
  sequence (KIP-360: no UNKNOWN_PRODUCER_ID since Kafka 2.5);
- ``leader-change``: retries after a leader change are still duplicates, where the broker
  exposes a way to change the leader (from Python: ``run_probe(..., leader_change=...)``;
  from the command line it is skipped);

then a hypothesis phase: random client-like streams (:func:`dedup.testing.strategies.client_streams`:
retries, reordering, epoch bumps, new producers, sequences near 2^31-1), at most
``--examples`` streams in at most ``--seconds``, seeded by ``--seed`` (printed, so a run is
reproducible), each answer checked the same way.

One line per rule, PASS, FAIL (with what was sent, what came back and what was expected) or
SKIP, then a summary; ``--json`` prints one JSON object instead. Exit status 1 if any rule
failed. Safe by design: it writes only to ``--topic``, sends a bounded number of small
batches, and refuses a broker that is not on a loopback address unless
``--yes-i-own-this-broker`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import io
import ipaddress
import json
import random
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

from .._types import INT32_MAX, wrap_increment
from ..batch import encode_batch
from ..errors import KafkaError
from ..reference import ProducerStateTable as ReferenceTable
from ..server.wire import ApiKey, build
from . import cli

__all__ = ["COMMAND", "ProbeReport", "RuleResult", "run_probe"]

_TIMESTAMP = 1_767_225_600_000
_RETRIABLE = {ErrorCode.not_leader_or_follower, ErrorCode.leader_not_available, ErrorCode.unknown_topic_or_partition,
              ErrorCode.not_enough_replicas, ErrorCode.request_timed_out}  # fmt: skip
#: The versions the probe can speak, per API (kio's schemas); the broker's ApiVersions picks.
_OURS = {ApiKey.PRODUCE: (3, 8), ApiKey.METADATA: (1, 8), ApiKey.INIT_PRODUCER_ID: (0, 4),
         ApiKey.CREATE_TOPICS: (2, 4)}  # fmt: skip


def error_name(code: int) -> str:
    """``OUT_OF_ORDER_SEQUENCE_NUMBER (45)``: Kafka's name of an error code, and the code."""
    try:
        return f"{ErrorCode(code).name.upper()} ({code})"
    except ValueError:
        return f"error {code}"


class ProbeError(Exception):
    """The broker cannot be probed: unreachable, or it refuses what the probe needs."""


class NotLoopback(ProbeError):
    """The broker is not on a loopback address and ``--yes-i-own-this-broker`` was not given."""


class _Connection:
    """One TCP connection speaking Kafka's framing: request in, response out, in order."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.correlation_id = 0

    def call(self, api_key: int, version: int, body: dict[str, Any]) -> Any:
        self.correlation_id += 1
        schema = load_request_schema(api_key, version)
        buffer = io.BytesIO()
        header = schema.__header_schema__
        fields = {"request_api_key": api_key, "request_api_version": version,
                  "correlation_id": self.correlation_id, "client_id": "dedup-probe"}  # fmt: skip
        entity_writer(header)(buffer, build(header, fields))
        entity_writer(schema)(buffer, build(schema, body))
        data = buffer.getvalue()
        self.sock.sendall(struct.pack(">i", len(data)) + data)
        (size,) = struct.unpack(">i", self._exactly(4))
        frame = self._exactly(size)
        response = load_response_schema(api_key, version)
        response_header, used = entity_reader(response.__header_schema__)(frame, 0)
        if response_header.correlation_id != self.correlation_id:
            raise ProbeError(f"response to correlation id {response_header.correlation_id}, expected "
                             f"{self.correlation_id}")  # fmt: skip
        return entity_reader(response)(frame, used)[0]

    def _exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class Answer:
    """A partition's answer to one Produce: Kafka's error code and the base offset."""

    error_code: int
    base_offset: int

    def __str__(self) -> str:
        if self.error_code == 0:
            return f"NONE at base offset {self.base_offset}"
        return error_name(self.error_code)


def _address(text: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


class Target:
    """The broker under probe: its API versions, the leader of ``topic``-0, producer ids, and
    Produce with the retriable errors (leader moved, not available yet) retried."""

    def __init__(self, bootstrap: str, topic: str, *, timeout: float = 10.0, allow_remote: bool = False) -> None:
        self.topic, self.timeout, self.allow_remote = topic, timeout, allow_remote
        self.bootstrap = [_address(part) for part in bootstrap.split(",") if part.strip()]
        if not self.bootstrap:
            raise ValueError("no bootstrap address")
        for host, _ in self.bootstrap:
            self._check_host(host)
        self._leader: _Connection | None = None
        self.requests = 0
        self.init_version: int | None = None
        self.versions = self._api_versions()

    def _check_host(self, host: str) -> None:
        if not self.allow_remote and not is_loopback(host):
            raise NotLoopback(f"{host} is not a loopback address: the probe writes to the broker; pass "
                             f"--yes-i-own-this-broker if it is yours")  # fmt: skip

    def _connect_any(self) -> _Connection:
        errors = []
        for host, port in self.bootstrap:
            try:
                return _Connection(host, port, self.timeout)
            except OSError as error:
                errors.append(f"{host}:{port}: {error}")
        raise ProbeError("cannot connect: " + "; ".join(errors))

    def _api_versions(self) -> dict[int, tuple[int, int]]:
        connection = self._connect_any()
        try:
            response = connection.call(ApiKey.API_VERSIONS, 0, {})
        except (OSError, ConnectionError) as error:
            raise ProbeError(f"ApiVersions failed: {error}") from None
        finally:
            connection.close()
        return {int(key.api_key): (int(key.min_version), int(key.max_version)) for key in response.api_keys}

    def version(self, api_key: ApiKey) -> int | None:
        """The highest version both speak (InitProducerId: the one :meth:`check_init_producer_id`
        found working), or None."""
        ours, theirs = _OURS[api_key], self.versions.get(api_key)
        if theirs is None or max(ours[0], theirs[0]) > min(ours[1], theirs[1]):
            return None
        if api_key == ApiKey.INIT_PRODUCER_ID and self.init_version is not None:
            return self.init_version
        return min(ours[1], theirs[1])

    def check_init_producer_id(self) -> RuleResult:
        """InitProducerId in every version both speak (their fields mean the same for an
        idempotent producer); the highest that answers a producer id is used from then on."""
        ours, theirs = _OURS[ApiKey.INIT_PRODUCER_ID], self.versions.get(ApiKey.INIT_PRODUCER_ID, (0, -1))
        answers: dict[int, str] = {}
        for version in range(max(ours[0], theirs[0]), min(ours[1], theirs[1]) + 1):
            self.init_version = version
            try:
                pid, epoch = self.init_producer_id()
                answers[version] = "ok"
            except ProbeError as error:
                answers[version] = str(error).removeprefix("InitProducerId answered ")
        working = [version for version, answer in answers.items() if answer == "ok"]
        self.init_version = max(working) if working else None
        if not answers:
            raise ProbeError("the broker speaks no InitProducerId version from 0 to 4")
        if not working:
            raise ProbeError(f"InitProducerId answered no producer id: {answers}")
        spoken = f"v{min(answers)}-v{max(answers)}"
        failing = {version: answer for version, answer in answers.items() if answer != "ok"}
        if failing:
            wrong = ", ".join(f"v{version}: {answer}" for version, answer in failing.items())
            return RuleResult("init-producer-id", "FAIL", f"advertised {spoken}, but {wrong}; v{self.init_version} "
                                                          f"used for the rules")  # fmt: skip
        return RuleResult("init-producer-id", "PASS", f"{spoken} each answered a producer id")

    def call_any(self, api_key: ApiKey, body: dict[str, Any]) -> Any:
        version = self.version(api_key)
        if version is None:
            raise ProbeError(f"the broker speaks no version of {api_key.name} the probe knows ({_OURS[api_key]})")
        connection = self._connect_any()
        try:
            self.requests += 1
            return connection.call(api_key, version, body)
        finally:
            connection.close()

    def _find_leader(self) -> tuple[str, int] | None:
        version = self.version(ApiKey.METADATA)
        if version is None:
            raise ProbeError("the broker speaks no Metadata version from 1 to 8")
        response = self.call_any(ApiKey.METADATA, {
            "topics": [{"name": self.topic}], "allow_auto_topic_creation": True,
            "include_cluster_authorized_operations": False, "include_topic_authorized_operations": False,
        })  # fmt: skip
        brokers = {broker.node_id: (broker.host, broker.port) for broker in response.brokers}
        for topic in response.topics:
            if topic.name != self.topic:
                continue
            if topic.error_code == ErrorCode.unknown_topic_or_partition and self.version(ApiKey.CREATE_TOPICS):
                self.call_any(ApiKey.CREATE_TOPICS, {
                    "topics": [{"name": self.topic, "num_partitions": 1, "replication_factor": -1,
                                "assignments": [], "configs": []}],
                    "timeout": datetime.timedelta(seconds=5), "validate_only": False,
                })  # fmt: skip
            for partition in topic.partitions:
                if partition.partition_index == 0 and partition.leader_id in brokers:
                    return brokers[partition.leader_id]
        return None

    def refresh(self) -> None:
        """Find the leader of partition 0 again (bounded: ``timeout`` seconds)."""
        if self._leader is not None:
            self._leader.close()
            self._leader = None
        deadline = time.monotonic() + self.timeout
        while True:
            leader = self._find_leader()
            if leader is not None:
                self._check_host(leader[0])
                try:
                    self._leader = _Connection(*leader, self.timeout)
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise ProbeError(f"no leader for {self.topic}-0 after {self.timeout:.0f} s")
            time.sleep(0.1)

    def init_producer_id(self) -> tuple[int, int]:
        response = self.call_any(ApiKey.INIT_PRODUCER_ID, {
            "transactional_id": None, "transaction_timeout": datetime.timedelta(seconds=60),
            "producer_id": -1, "producer_epoch": -1,
        })  # fmt: skip
        if response.error_code != 0:
            raise ProbeError(f"InitProducerId answered {error_name(response.error_code)}")
        return int(response.producer_id), int(response.producer_epoch)

    def produce(self, producer_id: int, producer_epoch: int, base_sequence: int, record_count: int) -> Answer:
        """One batch of ``record_count`` records to ``topic``-0 with ``acks=all``; a retriable
        error or a broken connection refreshes the leader and sends it again (bounded)."""
        values = [b"dedup-probe %d/%d/%d+%d" % (producer_id, producer_epoch, base_sequence, i)
                  for i in range(record_count)]  # fmt: skip
        records = encode_batch(values, producer_id=producer_id, producer_epoch=producer_epoch,
                               base_sequence=base_sequence, timestamp=_TIMESTAMP)  # fmt: skip
        body = {"transactional_id": None, "acks": -1, "timeout": datetime.timedelta(seconds=self.timeout),
                "topic_data": [{"name": self.topic, "partition_data": [{"index": 0, "records": records}]}]}  # fmt: skip
        version = self.version(ApiKey.PRODUCE)
        if version is None:
            raise ProbeError("the broker speaks no Produce version from 3 to 8")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if self._leader is None:
                    self.refresh()
                assert self._leader is not None
                self.requests += 1
                response = self._leader.call(ApiKey.PRODUCE, version, body)
                partition = response.responses[0].partition_responses[0]
                answer = Answer(int(partition.error_code), int(partition.base_offset))
                if answer.error_code not in _RETRIABLE:
                    return answer
            except (OSError, ConnectionError):
                answer = Answer(-1, -1)
            if self._leader is not None:
                self._leader.close()
                self._leader = None
            if time.monotonic() > deadline:
                return answer
            time.sleep(0.1)

    def close(self) -> None:
        if self._leader is not None:
            self._leader.close()
            self._leader = None


class Mismatch(Exception):
    """An answer that is not the reference's."""


@dataclass
class Session:
    """One rule's producers: every batch sent to the broker and to a reference table, and
    the answers compared. The reference's offsets are its own; a duplicate must come back
    with the broker's offset of the original batch."""

    target: Target
    reference: ReferenceTable = field(default_factory=ReferenceTable)
    broker_offsets: dict[int, int] = field(default_factory=dict)  # reference base offset -> broker's
    sent: list[str] = field(default_factory=list)

    def send(self, producer_id: int, producer_epoch: int, base_sequence: int, record_count: int = 1) -> Answer:
        plural = "s" if record_count > 1 else ""
        what = f"producer {producer_id} epoch {producer_epoch} sequence {base_sequence} ({record_count} record{plural})"
        answer = self.target.produce(producer_id, producer_epoch, base_sequence, record_count)
        try:
            verdict = self.reference.append(producer_id, producer_epoch, base_sequence, record_count,
                                            self.reference.map_end_offset)  # fmt: skip
        except KafkaError as error:
            expected = error_name(error.code)
            if answer.error_code != error.code:
                raise Mismatch(f"sent {what}: answered {answer}, expected {expected}") from None
        else:
            if verdict.duplicate:
                original = self.broker_offsets[verdict.base_offset]
                expected = f"NONE at base offset {original} (the original batch's)"
                if (answer.error_code, answer.base_offset) != (0, original):
                    raise Mismatch(f"sent {what}, a retry: answered {answer}, expected {expected}")
            else:
                expected = "NONE at a new offset"
                known = self.broker_offsets.values()
                if answer.error_code != 0 or answer.base_offset < 0 or answer.base_offset in known:
                    raise Mismatch(f"sent {what}: answered {answer}, expected {expected}")
                self.broker_offsets[verdict.base_offset] = answer.base_offset
        self.sent.append(f"seq {base_sequence}: {answer}")
        return answer


@dataclass(frozen=True)
class RuleResult:
    rule: str
    status: str  # PASS, FAIL or SKIP
    detail: str

    def line(self) -> str:
        return f"{self.status} {self.rule}: {self.detail}"


# --- the rules ------------------------------------------------------------------------------------


def _retry_last_5(session: Session) -> str:
    pid, epoch = session.target.init_producer_id()
    sequence = 0
    sent = []
    for count in (1, 2, 1, 3, 1):
        session.send(pid, epoch, sequence, count)
        sent.append((sequence, count))
        sequence = wrap_increment(sequence, count)
    offsets = []
    for seq, count in sent:
        offsets.append(session.send(pid, epoch, seq, count).base_offset)
    return f"producer {pid}: 5 batches (sequences 0-7), each retried: answered its original base offset {offsets}"


def _sixth_oldest(session: Session) -> str:
    pid, epoch = session.target.init_producer_id()
    for seq in range(6):
        session.send(pid, epoch, seq)
    answer = session.send(pid, epoch, 0)
    return f"producer {pid}: 6 batches, then a retry of the first: answered {answer}"


def _gap(session: Session) -> str:
    pid, epoch = session.target.init_producer_id()
    session.send(pid, epoch, 0)
    answer = session.send(pid, epoch, 2)
    return f"producer {pid}: sequence 0, then 2: answered {answer}"


def _older_epoch(session: Session) -> str:
    pid, epoch = session.target.init_producer_id()
    session.send(pid, epoch, 0)
    session.send(pid, epoch + 1, 0)
    answer = session.send(pid, epoch, 1)
    return f"producer {pid}: epoch {epoch + 1} after {epoch}, then epoch {epoch} again: answered {answer}"


def _new_epoch(session: Session) -> str:
    pid, epoch = session.target.init_producer_id()
    session.send(pid, epoch, 0)
    session.send(pid, epoch, 1)
    wrong = session.send(pid, epoch + 1, 5)
    right = session.send(pid, epoch + 1, 0)
    return f"producer {pid}: epoch {epoch + 1} at sequence 5: {wrong}; at sequence 0: {right}"


def _wraparound(session: Session) -> str:
    pid, epoch = session.target.init_producer_id()
    start = INT32_MAX - 1
    session.send(pid, epoch, start, 3)  # sequences 2^31-2, 2^31-1, 0
    after = session.send(pid, epoch, 1)
    retry = session.send(pid, epoch, start, 3)
    return f"producer {pid}: sequences 2^31-2..0 then 1: {after}; retry across the wrap: {retry}"


def _unknown_producer(session: Session) -> str:
    pid, epoch = session.target.init_producer_id()
    first = session.send(pid, epoch, 7)
    second = session.send(pid, epoch, 8)
    return f"producer {pid}, new to the partition, starting at sequence 7: {first}; then 8: {second}"


def _leader_change(change: Callable[[], Any]) -> Callable[[Session], str]:
    def rule(session: Session) -> str:
        pid, epoch = session.target.init_producer_id()
        for seq in range(3):
            session.send(pid, epoch, seq)
        change()
        session.target.refresh()
        answers = [session.send(pid, epoch, seq) for seq in range(3)]
        after = session.send(pid, epoch, 3)
        return (f"producer {pid}: 3 batches, the leader changed, each retried: "
                f"{[answer.base_offset for answer in answers]} as originally; then sequence 3: {after}")  # fmt: skip

    return rule


RULES: dict[str, Callable[[Session], str]] = {
    "retry-last-5": _retry_last_5,
    "sixth-oldest": _sixth_oldest,
    "gap": _gap,
    "older-epoch": _older_epoch,
    "new-epoch": _new_epoch,
    "wraparound": _wraparound,
    "unknown-producer": _unknown_producer,
}


def _run_rule(target: Target, name: str, rule: Callable[[Session], str]) -> RuleResult:
    session = Session(target)
    try:
        return RuleResult(name, "PASS", rule(session))
    except Mismatch as mismatch:
        before = f" (after {'; '.join(session.sent)})" if session.sent else ""
        return RuleResult(name, "FAIL", f"{mismatch}{before}")
    except ProbeError as error:
        return RuleResult(name, "FAIL", str(error))


def _random_streams(target: Target, examples: int, seconds: float, seed: int) -> RuleResult:
    """Random client streams against the broker and the reference, bounded and seeded."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    from ..testing.strategies import client_streams, sequences

    deadline = time.monotonic() + seconds
    ran: list[int] = []
    failure: list[str] = []

    @hypothesis_seed(seed)
    @settings(max_examples=examples, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(client_streams(producers=2, max_batches=20, first_sequences=sequences()))
    def run(stream: Any) -> None:
        if failure or time.monotonic() > deadline:
            return
        ran.append(len(stream))
        session = Session(target)
        ids: dict[int, int] = {}
        for batch in stream:
            if batch.producer_id not in ids:
                ids[batch.producer_id] = target.init_producer_id()[0]
            try:
                session.send(ids[batch.producer_id], batch.producer_epoch, batch.base_sequence, batch.record_count)
            except Mismatch as mismatch:
                steps = ", ".join(f"{b.event} e{b.producer_epoch} s{b.base_sequence}+{b.record_count}"
                                  for b in stream)  # fmt: skip
                failure.append(f"stream {len(ran)} ({steps}): {mismatch}")
                return

    try:
        run()
    except ProbeError as error:
        return RuleResult("random-streams", "FAIL", f"seed {seed}: {error}")
    batches = sum(ran)
    if failure:
        return RuleResult("random-streams", "FAIL", f"seed {seed}: {failure[0]}")
    return RuleResult("random-streams", "PASS", f"seed {seed}: {len(ran)} streams, {batches} batches, every answer "
                                                f"the reference's")  # fmt: skip


@dataclass
class ProbeReport:
    bootstrap: str
    topic: str
    seed: int
    results: list[RuleResult]
    requests: int = 0

    @property
    def failed(self) -> list[str]:
        return [result.rule for result in self.results if result.status == "FAIL"]

    def summary(self) -> str:
        count = {status: sum(r.status == status for r in self.results) for status in ("PASS", "FAIL", "SKIP")}
        verdict = "conforms" if not count["FAIL"] else f"deviates ({', '.join(self.failed)})"
        return (f"probe {self.bootstrap} topic {self.topic}: {count['PASS']} passed, {count['FAIL']} failed, "
                f"{count['SKIP']} skipped, {self.requests} requests, seed {self.seed}: {verdict}")  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {"bootstrap": self.bootstrap, "topic": self.topic, "seed": self.seed, "requests": self.requests,
                "rules": [vars(result) for result in self.results], "failed": self.failed}  # fmt: skip


def run_probe(
    bootstrap: str,
    *,
    topic: str = "dedup-probe",
    examples: int = 20,
    seconds: float = 10.0,
    seed: int | None = None,
    allow_remote: bool = False,
    leader_change: Callable[[], Any] | None = None,
    timeout: float = 10.0,
) -> ProbeReport:
    """Every rule against the broker at ``bootstrap``, then the random phase (``examples``
    streams at most, ``seconds`` at most; 0 examples skips it). ``leader_change``, when
    given, is called to change the leader of ``topic``-0 (a test's ``Broker.crash_leader``),
    which runs the ``leader-change`` rule. ``ProbeError`` if the broker cannot be probed at
    all (unreachable, not loopback without ``allow_remote``)."""
    seed = random.randrange(1 << 32) if seed is None else seed
    target = Target(bootstrap, topic, timeout=timeout, allow_remote=allow_remote)
    try:
        target.refresh()
        results = [target.check_init_producer_id()]
        results += [_run_rule(target, name, rule) for name, rule in RULES.items()]
        if leader_change is None:
            results.append(RuleResult("leader-change", "SKIP", "the broker exposes no way to change the leader "
                                      "(from Python: run_probe(..., leader_change=broker.crash_leader))"))  # fmt: skip
        else:
            results.append(_run_rule(target, "leader-change", _leader_change(leader_change)))
        if examples and seconds:
            results.append(_random_streams(target, examples, seconds, seed))
        else:
            results.append(RuleResult("random-streams", "SKIP", "--examples 0 or --seconds 0"))
    finally:
        target.close()
    return ProbeReport(bootstrap, topic, seed, results, target.requests)


# --- the command ----------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", required=True, metavar="HOST:PORT", help="the broker (a comma-separated list)")
    p.add_argument("--topic", default="dedup-probe", help="the topic written to (default dedup-probe; created "
                   "through Metadata or CreateTopics if missing)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.add_argument("--examples", type=cli.non_negative_int, default=20, metavar="N",
                   help="random streams at most (default 20; 0: no random phase)")  # fmt: skip
    p.add_argument("--seconds", type=cli.non_negative_float, default=10.0, metavar="S",
                   help="the random phase's time at most (default 10)")  # fmt: skip
    p.add_argument("--seed", type=cli.seed, default=None, help="seed of the random phase (default: drawn, printed)")
    p.add_argument("--timeout", type=cli.positive_float, default=10.0, metavar="S",
                   help="seconds to wait for an answer or a leader (default 10)")  # fmt: skip
    p.add_argument("--yes-i-own-this-broker", action="store_true", dest="allow_remote",
                   help="probe a broker that is not on a loopback address (it writes to --topic)")  # fmt: skip


def run_command(args: argparse.Namespace) -> int:
    try:
        report = run_probe(args.bootstrap, topic=args.topic, examples=args.examples, seconds=args.seconds,
                           seed=args.seed, allow_remote=args.allow_remote, timeout=args.timeout)  # fmt: skip
    except (ValueError, NotLoopback) as error:
        raise cli.UsageError(f"argument --bootstrap: {error}") from None
    except ProbeError as error:
        print(f"python -m dedup probe: {error}", file=sys.stderr, flush=True)
        return 1
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        for result in report.results:
            print(result.line())
        print(report.summary())
    return 1 if report.failed else 0


COMMAND = cli.Command("probe", __doc__, add_arguments, run_command)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dedup probe ARGV`` in this process."""
    return COMMAND.main(argv)
