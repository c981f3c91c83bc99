"""The controller's view of topics: which exist, their partitions, replicas and configs.

:class:`Topics` holds, for each topic, one :class:`~dedup.cluster.Cluster` per partition, all
sharing the server's directory in Kafka's ``log.dirs`` layout
(``<directory>/broker-<b>/<topic>-<partition>``). It validates creations as Kafka's
controller does (ReplicationControlManager.createTopics, with ControllerApis' checks before
it) and answers with Kafka's error codes through :class:`TopicError`:

- a name that is not legal (Topic.validate: 1-249 of ``[a-zA-Z0-9._-]``, not ``.``/``..``), or
  one that collides with an existing topic once ``.`` and ``_`` are unified:
  INVALID_TOPIC_EXCEPTION (17); ``__cluster_metadata``: INVALID_REQUEST (42), the only name
  ControllerApis refuses (``__consumer_offsets`` and ``__transaction_state`` may be created
  by clients in Kafka too; they are internal by name, Topic.isInternal);
- an existing topic: TOPIC_ALREADY_EXISTS (36);
- an unknown or unsupported topic config, or a bad value: INVALID_CONFIG (40);
- partitions below 1 (``-1`` is ``num.partitions``): INVALID_PARTITIONS (37); replication
  factor below 1 (``-1`` is ``default.replication.factor``) or above the live brokers:
  INVALID_REPLICATION_FACTOR (38); a manual assignment that names unknown brokers, repeats
  one, or skips a partition: INVALID_REPLICA_ASSIGNMENT (39);
- more than :data:`MAX_PARTITIONS_PER_REQUEST` (10,000) partitions in one CreateTopics:
  POLICY_VIOLATION (44) for every topic of the request, as Kafka's
  ReplicationControlManager.validateTotalNumberOfPartitions ("Excessively large number of
  partitions per request."), so 100,000 partitions never reach the disk;
- beyond that, this server's own bound (Kafka has none): at most ``max_partitions``
  partitions over all topics (default :data:`MAX_PARTITIONS`, 1,000; every replica keeps
  files open in this one process): INVALID_PARTITIONS (37).

Replicas are assigned as Kafka's AdminUtils.assignReplicasToBrokersRackUnaware does (the
assignment ZooKeeper-mode Kafka used, kept in ``org.apache.kafka.admin.AdminUtils``): the
first replica of partition ``p`` is live broker ``(p + start) % n``, the others follow it
shifted by ``1 + (shift + j) % (n - 1)``, the shift growing by one every ``n`` partitions, so
leaders (the first replicas) go round robin. Kafka draws ``start`` and ``shift`` at random;
here both are 0 (Kafka's ``fixedStartIndex = 0``), so assignments are deterministic.

The topics, their assignments and configs are recorded in ``<directory>/@topics`` (``@`` is
not a topic character, so no topic's files can take the name), written atomically and
fsynced before a creation or deletion is answered, and reopened by a server started on the
same directory. A deletion removes the partition directories from every broker; a creation
first removes leftovers of an interrupted deletion under the same name.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode

from ..checkpoints import _is_topic, read_checkpoint, write_checkpoint
from ..cluster import Cluster
from .config import TOPIC_CONFIGS, ConfigError

__all__ = [
    "INTERNAL_TOPICS",
    "MAX_PARTITIONS",
    "MAX_PARTITIONS_PER_REQUEST",
    "REGISTRY_FILE",
    "Topic",
    "TopicError",
    "Topics",
    "TransactionStateTopic",
    "assign_replicas",
    "is_internal",
    "migrate_topic_directories",
]

logger = logging.getLogger("dedup.server")

#: Kafka's ReplicationControlManager.MAX_PARTITIONS_PER_BATCH.
MAX_PARTITIONS_PER_REQUEST = 10_000
#: This server's bound on the partitions of all topics together.
MAX_PARTITIONS = 1_000
#: Kafka's Topic.INTERNAL_TOPICS: internal by name, whoever created them.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__share_group_state"})
#: The one name ControllerApis.createTopics refuses (KRaft's metadata log).
CLUSTER_METADATA_TOPIC = "__cluster_metadata"
#: The registry's file name under the server's directory.
REGISTRY_FILE = "@topics"
_REGISTRY_VERSION = 0


def is_internal(name: str) -> bool:
    """Kafka's Topic.isInternal."""
    return name in INTERNAL_TOPICS


class TopicError(Exception):
    """A creation or deletion refused with Kafka's error ``code`` and ``message``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def assign_replicas(partitions: int, replication_factor: int, brokers: list[int]) -> list[list[int]]:
    """Kafka's AdminUtils.assignReplicasToBrokersRackUnaware with ``fixedStartIndex = 0``:
    the replicas of each partition, the preferred leader first.

    >>> assign_replicas(4, 2, [0, 1, 2])
    [[0, 1], [1, 2], [2, 0], [0, 2]]
    """
    count = len(brokers)
    start = shift = 0
    assignment = []
    for partition in range(partitions):
        if partition > 0 and partition % count == 0:
            shift += 1
        first = (partition + start) % count
        replicas = [brokers[first]]
        for j in range(replication_factor - 1):
            replicas.append(brokers[(first + 1 + (shift + j) % (count - 1)) % count])
        assignment.append(replicas)
    return assignment


@dataclass
class Topic:
    """A topic: its partitions (one :class:`Cluster` each, index = partition), their replica
    assignments, and the topic configs it was created with (Kafka's keys, as text)."""

    name: str
    assignment: list[list[int]]
    configs: dict[str, str]
    partitions: list[Cluster] = field(default_factory=list)

    @property
    def internal(self) -> bool:
        return is_internal(self.name)

    @property
    def replication_factor(self) -> int:
        return len(self.assignment[0])

    def record(self) -> str:
        return json.dumps(
            {"name": self.name, "assignment": self.assignment, "configs": self.configs}, separators=(",", ":")
        )


def _parse_record(line: str) -> Topic:
    document = json.loads(line)
    if not isinstance(document, dict) or set(document) != {"name", "assignment", "configs"}:
        raise ValueError(f"expected a topic record, found {line[:80]!r}")
    name, assignment, configs = document["name"], document["assignment"], document["configs"]
    if not isinstance(name, str) or not _is_topic(name):
        raise ValueError(f"expected a legal topic name, found {name!r}")
    if (
        not isinstance(assignment, list)
        or not assignment
        or not all(
            isinstance(replicas, list) and replicas and all(type(b) is int for b in replicas) for replicas in assignment
        )
    ):
        raise ValueError(f"topic {name}: expected replica lists, found {assignment!r}")
    if not isinstance(configs, dict) or not all(isinstance(v, str) for v in configs.values()):
        raise ValueError(f"topic {name}: expected configs as text, found {configs!r}")
    return Topic(name, assignment, configs)


@dataclass
class Plan:
    """A validated creation: what CreateTopics answers, before (or without) creating it."""

    name: str
    assignment: list[list[int]]
    configs: dict[str, str]


class Topics:
    """The topics of one server under ``directory``, on ``brokers`` brokers.

    ``num_partitions`` and ``default_replication_factor`` are Kafka's defaults for a creation
    that asks ``-1``; ``cluster_options`` go to every partition's :class:`Cluster`
    (``min_insync_replicas``, ``unclean_leader_election``, log options), a topic's configs
    override them; ``max_partitions`` bounds the partitions of all topics. Reopens the
    topics recorded in ``directory``.
    """

    def __init__(
        self,
        directory: str,
        *,
        brokers: int,
        num_partitions: int = 1,
        default_replication_factor: int = 1,
        max_partitions: int = MAX_PARTITIONS,
        cluster_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.directory = directory
        self.brokers = brokers
        self.num_partitions = num_partitions
        self.default_replication_factor = default_replication_factor
        self.max_partitions = max_partitions
        self.cluster_options = dict(cluster_options or {})
        self._topics: dict[str, Topic] = {}
        migrated = [] if os.path.exists(self._registry) else migrate_topic_directories(directory, brokers)
        if migrated:
            write_checkpoint(self._registry, _REGISTRY_VERSION, [topic.record() for topic in migrated])
            for topic in migrated:
                shutil.rmtree(os.path.join(directory, _MIGRATING + topic.name), ignore_errors=True)
        for topic in read_checkpoint(self._registry, _REGISTRY_VERSION, _parse_record):
            self._open(topic)

    @property
    def _registry(self) -> str:
        return os.path.join(self.directory, REGISTRY_FILE)

    def _persist(self) -> None:
        write_checkpoint(self._registry, _REGISTRY_VERSION, [topic.record() for topic in self._topics.values()])

    # -- reading -----------------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._topics

    def __iter__(self) -> Any:
        return iter(list(self._topics))

    def __len__(self) -> int:
        return len(self._topics)

    def get(self, name: str) -> Topic | None:
        return self._topics.get(name)

    def partition(self, name: str, index: int) -> Cluster | None:
        """The partition ``index`` of topic ``name``; None if either does not exist."""
        topic = self._topics.get(name)
        if topic is None or not 0 <= index < len(topic.partitions):
            return None
        return topic.partitions[index]

    def clusters(self) -> list[Cluster]:
        """Every partition of every topic."""
        return [cluster for topic in self._topics.values() for cluster in topic.partitions]

    def partition_count(self) -> int:
        return sum(len(topic.assignment) for topic in self._topics.values())

    # -- creating ----------------------------------------------------------------------------------

    def validate(
        self,
        name: Any,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: Mapping[str, str | None] | None = None,
        *,
        live_brokers: Iterable[int],
        assignments: Mapping[int, list[int]] | None = None,
        internal: bool = False,
    ) -> Plan:
        """A creation checked as Kafka's controller checks it; :class:`TopicError` if refused.
        ``internal``: a creation by the broker itself (the coordinators' topics), which may
        ask configs clients may not (``cleanup.policy=compact``: the server's log cleaner compacts it)."""
        if not isinstance(name, str) or not _is_topic(name):
            raise TopicError(
                ErrorCode.invalid_topic_exception,
                f"Topic name {name!r} is illegal: 1 to 249 of ASCII alphanumerics, '.', '_' and '-', not '.' or '..'",
            )
        if name == CLUSTER_METADATA_TOPIC:
            raise TopicError(ErrorCode.invalid_request, f"Creation of internal topic {name} is prohibited.")
        if name in self._topics:
            raise TopicError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.")
        unified = _unify(name)
        for existing in self._topics:
            if _unify(existing) == unified:
                raise TopicError(
                    ErrorCode.invalid_topic_exception,
                    f"Topic '{name}' collides with existing topic: {existing}",
                )
        checked = self._check_configs(name, configs or {}, internal)
        live = sorted(set(live_brokers))
        if assignments:
            if num_partitions != -1 or replication_factor != -1:
                raise TopicError(
                    ErrorCode.invalid_request,
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at "
                    "the same time.",
                )
            assignment = self._check_assignment(assignments)
        else:
            partitions = self.num_partitions if num_partitions == -1 else num_partitions
            factor = self.default_replication_factor if replication_factor == -1 else replication_factor
            if partitions <= 0:
                raise TopicError(
                    ErrorCode.invalid_partitions, "Number of partitions was set to an invalid non-positive value."
                )
            if factor <= 0:
                raise TopicError(
                    ErrorCode.invalid_replication_factor,
                    "Replication factor must be larger than 0, or -1 to use the default value.",
                )
            if factor > len(live):
                raise TopicError(
                    ErrorCode.invalid_replication_factor,
                    f"Unable to replicate the partition {factor} time(s): The target replication factor of {factor} "
                    f"cannot be reached because only {len(live)} broker(s) are registered.",
                )
            self._check_room(partitions)
            assignment = assign_replicas(partitions, factor, live)
        return Plan(name, assignment, checked)

    def _check_room(self, partitions: int) -> None:
        if self.partition_count() + partitions > self.max_partitions:
            raise TopicError(
                ErrorCode.invalid_partitions,
                f"{partitions} partitions would take this server past its bound of {self.max_partitions} partitions "
                f"over all topics ({self.partition_count()} exist)",
            )

    def _check_assignment(self, assignments: Mapping[int, list[int]]) -> list[list[int]]:
        if sorted(assignments) != list(range(len(assignments))):
            raise TopicError(
                ErrorCode.invalid_replica_assignment,
                f"Partitions must be numbered consecutively from 0, got {sorted(assignments)}",
            )
        out = []
        for index in range(len(assignments)):
            replicas = list(assignments[index])
            if not replicas or len(set(replicas)) != len(replicas):
                message = f"Partition {index}: a replica list without duplicates is required, got {replicas}"
                raise TopicError(ErrorCode.invalid_replica_assignment, message)
            if any(not 0 <= broker < self.brokers for broker in replicas):
                raise TopicError(ErrorCode.invalid_replica_assignment,
                                 f"Partition {index}: unknown broker in {replicas}")  # fmt: skip
            out.append(replicas)
        if len({len(replicas) for replicas in out}) != 1:
            raise TopicError(
                ErrorCode.invalid_replica_assignment, "All partitions must have the same number of replicas"
            )
        self._check_room(len(out))
        return out

    def _check_configs(self, name: str, configs: Mapping[str, str | None], internal: bool) -> dict[str, str]:
        checked: dict[str, str] = {}
        for key, value in configs.items():
            if key not in TOPIC_CONFIGS:
                raise TopicError(ErrorCode.invalid_config, f"Unknown topic config name: {key}")
            if value is None:
                raise TopicError(ErrorCode.invalid_config, f"Null value not supported for topic config: {key}")
            if internal and key == "cleanup.policy":
                checked[key] = value
                continue
            try:
                parsed = TOPIC_CONFIGS[key].parse(value)
            except ConfigError as error:
                raise TopicError(ErrorCode.invalid_config, str(error)) from None
            if key == "min.insync.replicas" and parsed > self.brokers:
                message = f"Invalid value {value} for configuration {key}: more than the {self.brokers} brokers"
                raise TopicError(ErrorCode.invalid_config, message)
            checked[key] = TOPIC_CONFIGS[key].to_text(parsed) or ""
        return checked

    def create(self, plan: Plan) -> Topic:
        """Create a validated topic: its partitions' directories on their replicas (leftovers
        of an interrupted deletion under the name removed first), then the record."""
        topic = Topic(plan.name, plan.assignment, plan.configs)
        for broker_id in range(self.brokers):
            for index in range(len(plan.assignment)):
                shutil.rmtree(os.path.join(self.directory, f"broker-{broker_id}", f"{plan.name}-{index}"),
                              ignore_errors=True)  # fmt: skip
        for index in range(len(plan.assignment)):
            try:
                os.unlink(os.path.join(self.directory, f"controller-leader-epoch-{plan.name}-{index}"))
            except FileNotFoundError:
                pass
        self._open(topic)
        self._persist()
        logger.info("created topic %s: %d partitions, replicas %s", topic.name, len(topic.assignment), topic.assignment)
        return topic

    def _open(self, topic: Topic) -> None:
        options = dict(self.cluster_options)
        for key, value in topic.configs.items():
            config = TOPIC_CONFIGS[key]
            if config.kwarg is not None:
                options[config.kwarg] = config.parse(value)
        topic.partitions = [
            Cluster(
                self.directory, brokers=self.brokers, topic=topic.name, partition=index, replicas=replicas, **options
            )
            for index, replicas in enumerate(topic.assignment)
        ]
        self._topics[topic.name] = topic

    def ensure(
        self,
        name: str,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: Mapping[str, str] | None = None,
        *,
        live_brokers: Iterable[int],
        internal: bool = False,
    ) -> Topic:
        """The topic ``name``, created first if it does not exist (``internal``: by the broker
        itself, for the coordinators' topics). :class:`TopicError` if it cannot be."""
        existing = self._topics.get(name)
        if existing is not None:
            return existing
        plan = self.validate(name, num_partitions, replication_factor, configs,
                             live_brokers=live_brokers, internal=internal)  # fmt: skip
        return self.create(plan)

    # -- deleting ----------------------------------------------------------------------------------

    def delete(self, name: str) -> None:
        """Delete topic ``name``: the record first, then every replica's files on every
        broker. :class:`TopicError` UNKNOWN_TOPIC_OR_PARTITION if there is no such topic."""
        topic = self._topics.get(name)
        if topic is None:
            raise TopicError(ErrorCode.unknown_topic_or_partition, "This server does not host this topic-partition.")
        del self._topics[name]
        self._persist()
        for cluster in topic.partitions:
            cluster.delete()
        logger.info("deleted topic %s", name)

    def close(self) -> None:
        for cluster in self.clusters():
            cluster.close()


#: The prefix of an old-layout topic directory being migrated (``@``: no topic can take the name).
_MIGRATING = "@migrating-"


def migrate_topic_directories(directory: str, brokers: int) -> list[Topic]:
    """Move the topics of the layout from before partitioned topics into Kafka's ``log.dirs``
    layout, and return them (one partition each, replicated on every broker, as they were);
    the caller records them, then removes the ``@migrating-<topic>`` directories left.

    Before, topic ``t`` lived in ``<directory>/t/`` (``broker-<b>/t-0`` per replica and the
    controller's ``controller-leader-epoch``), a legal topic name in the same directory as the
    server's own files, so ``--topic producer-id-block`` collided with the producer id file.
    Now the root holds only ``broker-<b>/`` log directories and files of the server, whose
    partition directories ``<topic>-<partition>`` are where topics live: no topic name reaches
    the root (``@topics`` and ``@migrating-`` could not be taken by one anyway).

    Crash-safe: ``t/`` is first renamed ``@migrating-t/`` (one rename), each replica moved
    only if it is still there, and a restart before the registry is written finds the
    ``@migrating-`` directories and goes on."""
    found: dict[str, str] = {}
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        path = os.path.join(directory, entry)
        if entry.startswith(_MIGRATING) and _is_topic(entry[len(_MIGRATING) :]):
            found[entry[len(_MIGRATING) :]] = path
        elif _is_topic(entry) and any(
            os.path.isdir(os.path.join(path, f"broker-{b}", f"{entry}-0")) for b in range(brokers)
        ):
            found[entry] = path
    topics = []
    for name, path in found.items():
        moving = os.path.join(directory, _MIGRATING + name)
        if path != moving:
            os.rename(path, moving)
        for broker_id in range(brokers):
            replica = os.path.join(moving, f"broker-{broker_id}", f"{name}-0")
            if os.path.isdir(replica):
                target = os.path.join(directory, f"broker-{broker_id}")
                os.makedirs(target, exist_ok=True)
                os.rename(replica, os.path.join(target, f"{name}-0"))
        epochs = [epoch for file in ("controller-leader-epoch", f"controller-leader-epoch-{name}-0")
                  for epoch in read_checkpoint(os.path.join(moving, file), 0, int)]  # fmt: skip
        controller = os.path.join(directory, f"controller-leader-epoch-{name}-0")
        epochs += read_checkpoint(controller, 0, int)
        if epochs:
            write_checkpoint(controller, 0, [str(max(epochs))])
        topics.append(Topic(name, [list(range(brokers))], {}))
        logger.warning("migrated topic %s from %s to broker-<b>/%s-0 (Kafka's log.dirs layout)", name, path, name)
    return topics


def _unify(name: str) -> str:
    """Kafka's Topic.unifyCollisionChars: '.' and '_' collide in metric names."""
    return re.sub(r"[._]", "_", name)


class OffsetsTopic:
    """``__consumer_offsets`` among ``topics``, as the group coordinator stores into it
    (:class:`dedup.coordinator.group_coordinator.OffsetsStorage`): an internal topic created
    on first use with ``num_partitions`` partitions of ``replication_factor`` replicas over the
    live brokers, ``cleanup.policy=compact`` (the server's log cleaner compacts it,
    :mod:`dedup.cleaner`) and ``segment.bytes`` Kafka's ``offsets.topic.segment.bytes``, as
    Kafka's AutoTopicCreationManager creates it for FindCoordinator. A topic that exists keeps
    its partition count (Kafka: ``offsets.topic.num.partitions`` "should not change after
    deployment"). The owner of ``topics`` starts and stops the brokers' replicas."""

    NAME = "__consumer_offsets"

    def __init__(
        self,
        topics: Topics,
        *,
        num_partitions: int,
        replication_factor: int,
        live_brokers: Callable[[], Iterable[int]],
        segment_bytes: int | None = None,
    ) -> None:
        self.topics = topics
        #: Kafka's ``offsets.topic.segment.bytes``: the topic's ``segment.bytes`` when it is created.
        self.segment_bytes = segment_bytes
        existing = topics.get(self.NAME)
        self.num_partitions = num_partitions if existing is None else len(existing.assignment)
        self.replication_factor = replication_factor
        self.live_brokers = live_brokers

    def created(self) -> list[int]:
        topic = self.topics.get(self.NAME)
        return [] if topic is None else list(range(len(topic.partitions)))

    def partition(self, partition: int) -> Cluster | None:
        """Partition ``partition``, the topic created first if need be; None if it cannot be
        (fewer live brokers than its replication factor: Kafka's FindCoordinator answers
        COORDINATOR_NOT_AVAILABLE until it can)."""
        try:
            configs = {"cleanup.policy": "compact"}
            if self.segment_bytes is not None:
                configs["segment.bytes"] = str(self.segment_bytes)
            topic = self.topics.ensure(self.NAME, self.num_partitions, self.replication_factor, configs,
                                       live_brokers=self.live_brokers(), internal=True)  # fmt: skip
        except TopicError as error:
            logger.warning("%s cannot be created: %s", self.NAME, error.message)
            return None
        return topic.partitions[partition]

    def leader(self, partition: int) -> int | None:
        cluster = self.partition(partition)
        return None if cluster is None else cluster.leader_id


class TransactionStateTopic(OffsetsTopic):
    """``__transaction_state`` among ``topics``, as the transaction coordinator stores into it
    (:class:`dedup.coordinator.transaction_log.TransactionLog`): created on first use as
    :class:`OffsetsTopic` creates ``__consumer_offsets`` (compacted, ``segment.bytes`` Kafka's
    ``transaction.state.log.segment.bytes``), with ``transaction.state.log.num.partitions``
    partitions of ``transaction.state.log.replication.factor`` replicas (Kafka's
    TransactionStateManager.transactionTopicConfigs)."""

    NAME = "__transaction_state"
