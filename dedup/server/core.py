"""The Kafka-protocol front end: dedup's brokers on loopback ports, for real clients.

:class:`KafkaServer` runs, on one asyncio event loop, one listener per broker, in front of
the topics of a :class:`~dedup.server.topics.Topics` registry: each partition of a topic is a
:class:`~dedup.cluster.Cluster` replicated on the brokers Kafka's assignment gives it (round
robin, the preferred leader first), and broker ``b`` keeps its replicas in Kafka's
``log.dirs`` layout, ``<directory>/broker-<b>/<topic>-<partition>``; the registry of topics
is ``<directory>/@topics``. Other APIs find a partition with :meth:`KafkaServer.partition`.
Requests on a connection are handled one at a time, in order, as Kafka's network layer
does (a connection is muted while its request is served), so clients that pipeline up to
``max.in.flight`` requests get their responses in order. Produce goes through
:meth:`Cluster.produce <dedup.cluster.Cluster.produce>`: the leader's
``PartitionLog.append_as_leader``, replication to the in-sync replicas, and with
``acks=-1`` the acknowledgement once the high watermark passes the batch.

:class:`ServerThread` runs a server on a background thread for synchronous callers (tests,
the command line) and forwards the control operations to it.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode

from .. import _args
from ..checkpoints import _topic, read_checkpoint, write_checkpoint
from ..cleaner import DEFAULT_MIN_CLEANABLE_DIRTY_RATIO
from ..cluster import Cluster
from ..errors import KafkaStorageError
from .apis import HANDLERS, fetch_partitions
from .apis.failures import error_code_for, error_response
from .apis.fetch import fetch_response, release
from .config import BROKER_CONFIGS, INT_MAX, LONG_MAX
from .connections import Connection, ConnectionQuotas, RefusalLog, accept_failures
from .coordinators import (
    CLEANER_OPTIONS,
    GROUP_OPTIONS,
    TRANSACTION_OPTIONS,
    group_coordinator,
    transaction_coordinator,
)
from .faults import Fate, Faults
from .security import Authenticator, CloseConnection, Listener, advertised_host, configure_listeners
from .topics import TopicError, Topics
from .wire import (
    MAX_REQUEST_BYTES,
    ApiKey,
    BadRequest,
    Request,
    ResponseFrame,
    encode_response,
    parse_request,
    send_response,
)

__all__ = ["KafkaServer", "ProducerIdBlocks", "ServerStats"]

logger = logging.getLogger("dedup.server")

#: Kafka's producer id block size (ProducerIdManager: 1000 ids per block from the controller).
PRODUCER_ID_BLOCK = 1000


class ProducerIdBlocks:
    """Producer ids, unique across restarts of the server: ids are handed out from blocks of
    1000, and the end of the current block is written (atomically, fsynced) to
    ``<directory>/producer-id-block`` before any id of it is, as Kafka's controller records
    the blocks it allocates. A restarted server starts at the next block."""

    FILE = "producer-id-block"

    def __init__(self, directory: str, first: int = 1000) -> None:
        self._path = os.path.join(directory, self.FILE)
        recorded = read_checkpoint(self._path, 0, int)
        self._next = max([first, *recorded])
        self._end = self._next

    def next_id(self) -> int:
        if self._next == self._end:
            self._end = self._next + PRODUCER_ID_BLOCK
            write_checkpoint(self._path, 0, [str(self._end)])
        producer_id = self._next
        self._next += 1
        return producer_id


@dataclass
class ServerStats:
    """What the server has done, for the benchmark and the command line's summary."""

    requests: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    duplicates: int = 0
    bad_requests: int = 0
    engine_seconds: float = 0.0  # inside Cluster.produce: the log, the table, replication
    produce_seconds: float = 0.0  # parsing, handling and encoding produce requests, engine included


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def _ports(value: Any) -> list[int]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"ports must be an iterable of port numbers or None, got {type(value).__name__}")
    return [_args.integer(f"ports[{i}]", port, 0, 65535, "a port in [0, 65535]") for i, port in enumerate(value)]


#: This server's bound on the partitions of one topic given to ``topics=`` (CreateTopics has its own checks).
_MAX_TOPIC_PARTITIONS = 1000


def _topics(value: Any) -> list[tuple[str, int | None]]:
    """Distinct legal Kafka topic names, each alone (``num.partitions`` partitions) or with its
    partition count as ``(name, partitions)`` (a str would be read as its letters)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"topics must be an iterable of topic names or (name, partitions) pairs, got "
                        f"{type(value).__name__}")  # fmt: skip
    entries: list[tuple[str, int | None]] = []
    for i, item in enumerate(value):
        name, partitions = item if isinstance(item, tuple) and len(item) == 2 else (item, None)
        try:
            _topic(name)
            if partitions is not None:
                partitions = _args.integer("partitions", partitions, 1, _MAX_TOPIC_PARTITIONS,
                                           f"in [1, {_MAX_TOPIC_PARTITIONS}]")  # fmt: skip
        except (TypeError, ValueError) as error:
            raise type(error)(f"topics[{i}]: {error}") from None
        entries.append((name, partitions))
    names = [name for name, _ in entries]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"topics: one or more distinct names, got {names!r}")
    return entries


class KafkaServer:
    """``brokers`` brokers serving ``topics`` on ``host``: names (``num_partitions``
    partitions each) or ``(name, partitions)`` pairs, created at start unless the directory
    already has them (a topic that exists keeps its partitions).

    ``num_partitions``, ``auto_create_topics_enable`` and ``default_replication_factor`` are
    Kafka's ``num.partitions`` (1), ``auto.create.topics.enable`` (true) and
    ``default.replication.factor`` (Kafka's default is 1; here ``min(3, brokers)`` unless
    given: a fault-testing broker replicates by default).

    ``directory`` holds the logs (a temporary directory, removed on close, when None);
    ``ports`` gives each broker's port (0 or None: any free port, kept across restarts);
    ``deduplicate=False`` stores batches without their producer ids (a broker without
    idempotence: retries are stored again); ``faults`` (a :class:`Faults`) drops or delays
    produce responses and closes connections; ``max_request_bytes`` is Kafka's
    ``socket.request.max.bytes``; ``connections_max_idle_ms``, ``max_connections``,
    ``max_connections_per_ip`` and ``queued_max_requests`` are Kafka's
    ``connections.max.idle.ms``, ``max.connections``, ``max.connections.per.ip`` and
    ``queued.max.requests`` (:mod:`dedup.server.connections`). ``security_configs`` holds
    Kafka's listener and security keys (``listeners``, ``listener.security.protocol.map``,
    ``advertised.listeners``, ``sasl.enabled.mechanisms``, ``ssl.*``,
    ``listener.name.<listener>.<mechanism>.sasl.jaas.config``; :mod:`dedup.server.security`),
    the first PLAINTEXT listener (else the first) listening on ``host`` and ``ports``;
    ``jaas_file`` is ``--jaas``; a listener on a non-loopback address that does not
    authenticate is a ``ValueError`` unless ``allow_unauthenticated``. The remaining options go to every
    :class:`~dedup.cluster.Cluster` (``min_insync_replicas``, ``unclean_leader_election``,
    and the log options such as ``segment_bytes`` or ``fsync``), and the group coordinator's
    settings (:data:`GROUP_OPTIONS`: ``offsets_topic_num_partitions``,
    ``group_initial_rebalance_delay_ms``, ...) to :attr:`groups`, whose
    ``__consumer_offsets`` partitions live in ``<directory>/__consumer_offsets-<p>/``.
    """

    def __init__(
        self,
        directory: Any = None,
        *,
        brokers: int = 3,
        topics: Iterable[str] = ("clicks",),
        host: str = "127.0.0.1",
        ports: Iterable[int] | None = None,
        deduplicate: bool = True,
        faults: Faults | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        cluster_id: str = "dedup",
        num_partitions: int = 1,
        auto_create_topics_enable: bool = True,
        default_replication_factor: int | None = None,
        fetch_max_bytes: int = BROKER_CONFIGS["fetch.max.bytes"].default,
        connections_max_idle_ms: int = 600_000,
        max_connections: int = INT_MAX,
        max_connections_per_ip: int = INT_MAX,
        queued_max_requests: int = 500,
        security_configs: Mapping[str, Any] | None = None,
        jaas_file: str | None = None,
        allow_unauthenticated: bool = False,
        **cluster_options: Any,
    ) -> None:
        # What the server was given, by keyword, for DescribeConfigs (apis/configs.py).
        self.settings: dict[str, Any] = {name: value for name, value in locals().items() if name != "self"}
        self.settings.update(self.settings.pop("cluster_options"))
        # Every argument is checked before anything is created on disk.
        count = _args.integer("brokers", brokers, 1, 64, "between 1 and 64")
        self.host = _text("host", host)
        self.ports = [0] * count if ports is None else _ports(ports)
        if len(self.ports) != count:
            raise ValueError(f"ports: {len(self.ports)} ports for {count} brokers")
        # Listeners, TLS and SASL credentials, checked before anything is created or bound.
        self.listeners: list[Listener] = configure_listeners(
            dict(security_configs or {}), host=self.host, port=self.ports[0], jaas_file=jaas_file,
            allow_unauthenticated=_args.flag("allow_unauthenticated", allow_unauthenticated),
        )  # fmt: skip
        #: Each listener's port on each broker (the first PLAINTEXT listener's are :attr:`ports`).
        primary = self._primary()
        self.listener_ports: dict[str, list[int]] = {
            listener.name: self.ports if listener is primary else [listener.port + b if listener.port else 0
                                                                    for b in range(count)]
            for listener in self.listeners
        }  # fmt: skip
        self.deduplicate = _args.flag("deduplicate", deduplicate)
        if faults is not None and not isinstance(faults, Faults):
            raise TypeError(f"faults must be a dedup.server.Faults or None, got {type(faults).__name__}")
        self.faults = Faults() if faults is None else faults
        self.max_request_bytes = _args.integer("max_request_bytes", max_request_bytes, 64, 1 << 31, "64 to 2^31")
        self.cluster_id = _text("cluster_id", cluster_id)
        self.fetch_max_bytes = _args.integer("fetch_max_bytes", fetch_max_bytes, 0, INT_MAX, "an int32 >= 0")
        self.connections_max_idle_ms = _args.integer("connections_max_idle_ms", connections_max_idle_ms, 1, LONG_MAX,
                                                     "an int64 >= 1")  # fmt: skip
        self.max_connections = _args.integer("max_connections", max_connections, 0, INT_MAX, "in [0, 2^31-1]")
        self.max_connections_per_ip = _args.integer("max_connections_per_ip", max_connections_per_ip, 0, INT_MAX,
                                                    "in [0, 2^31-1]")  # fmt: skip
        self.queued_max_requests = _args.integer("queued_max_requests", queued_max_requests, 1, INT_MAX,
                                                 "in [1, 2^31-1]")  # fmt: skip
        entries = _topics(topics)
        self.num_partitions = _args.integer("num_partitions", num_partitions, 1, _MAX_TOPIC_PARTITIONS,
                                            f"in [1, {_MAX_TOPIC_PARTITIONS}]")  # fmt: skip
        self.auto_create_topics_enable = _args.flag("auto_create_topics_enable", auto_create_topics_enable)
        self.default_replication_factor = (
            min(3, count)
            if default_replication_factor is None
            else _args.integer("default_replication_factor", default_replication_factor, 1, count, "1..brokers")
        )
        if directory is not None:
            directory = _args.path("directory", directory)
        self._temporary = directory is None
        self.directory = tempfile.mkdtemp(prefix="dedup-serve-") if directory is None else directory
        os.makedirs(self.directory, exist_ok=True)
        cluster_options.setdefault("min_insync_replicas", min(2, count))
        # What serve starts with where it differs from Kafka's defaults, as DescribeConfigs reports it.
        self.settings["min_insync_replicas"] = cluster_options["min_insync_replicas"]
        self.settings["default_replication_factor"] = self.default_replication_factor
        group_options = {key: cluster_options.pop(key) for key in GROUP_OPTIONS if key in cluster_options}
        transaction_options = {key: cluster_options.pop(key) for key in TRANSACTION_OPTIONS if key in cluster_options}
        cleaner = {key: cluster_options.pop(key, BROKER_CONFIGS[name].default) for key, name in CLEANER_OPTIONS.items()}
        self.log_cleaner_enable = _args.flag("log_cleaner_enable", cleaner["log_cleaner_enable"])
        self.log_cleaner_backoff_ms = _args.integer("log_cleaner_backoff_ms", cleaner["log_cleaner_backoff_ms"], 0,
                                                    LONG_MAX, "an int64 >= 0")  # fmt: skip
        self.log_cleaner_delete_retention_ms = _args.integer(
            "log_cleaner_delete_retention_ms", cleaner["log_cleaner_delete_retention_ms"], 0, LONG_MAX, "an int64 >= 0"
        )
        self._cleaner: asyncio.Task[None] | None = None
        # A marker can move a partition's last stable offset: wake read_committed fetches.
        cluster_options["on_marker"] = self.data_arrived
        self.topics = Topics(
            self.directory,
            brokers=count,
            num_partitions=self.num_partitions,
            default_replication_factor=self.default_replication_factor,
            cluster_options=cluster_options,
        )
        try:
            for name, partitions in entries:
                if name in self.topics:
                    existing = len(self.topics.get(name).assignment)  # type: ignore[union-attr]
                    if partitions is not None and partitions != existing:
                        logger.warning("topic %s exists with %d partitions in %s: %d asked, kept as it is",
                                       name, existing, self.directory, partitions)  # fmt: skip
                    continue
                self.topics.ensure(name, -1 if partitions is None else partitions, live_brokers=range(count))
        except TopicError as error:
            self.topics.close()
            raise ValueError(f"topics: {error.message}") from None
        self.producer_ids = ProducerIdBlocks(self.directory)
        self.stats = ServerStats()
        self._alive = [True] * count
        self.groups = group_coordinator(self.topics, count, group_options, self.live_brokers)
        self.settings["offsets_topic_replication_factor"] = group_options["offsets_topic_replication_factor"]
        self.transactions = transaction_coordinator(self.topics, count, transaction_options, self.live_brokers,
                                                     self.producer_ids.next_id, self.groups)  # fmt: skip
        self.settings["transaction_state_log_replication_factor"] = (
            transaction_options["transaction_state_log_replication_factor"]
        )
        self._listeners: list[list[asyncio.Server] | None] = [None] * count
        #: Refused connections (limits, out of file descriptors), logged once per interval.
        self.refusals = RefusalLog()
        self._connections = [
            ConnectionQuotas(self.max_connections, self.max_connections_per_ip, self.refusals) for _ in range(count)
        ]
        # queued.max.requests, per broker: requests read and not yet answered (see connections.py).
        self._request_slots: list[asyncio.Semaphore] = []
        self._idle_sweeper: asyncio.Task[None] | None = None
        self._restore_exception_handler: Callable[[], None] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()  # the connections' tasks, for close()
        self._data = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every live broker's listener, and start the log cleaner (``log.cleaner.enable``),
        the idle connection sweep (``connections.max.idle.ms``) and the transaction coordinator
        (its partitions loaded, its timers)."""
        loop = asyncio.get_running_loop()
        if not self._request_slots:
            self._request_slots = [asyncio.Semaphore(self.queued_max_requests) for _ in self._alive]
        if self._restore_exception_handler is None:
            self._restore_exception_handler = accept_failures(loop, self.refusals)
        if self._idle_sweeper is None:
            self._idle_sweeper = loop.create_task(self._close_idle_connections())
        for broker_id, alive in enumerate(self._alive):
            if alive and self._listeners[broker_id] is None:
                await self._listen(broker_id)
        if self.log_cleaner_enable and self._cleaner is None:
            self._cleaner = asyncio.get_running_loop().create_task(self._run_cleaner())
        self.transactions.start()

    async def _run_cleaner(self) -> None:
        """Kafka's CleanerThread: a pass over the compacted partitions, then
        ``log.cleaner.backoff.ms`` of sleep (Kafka sleeps only when nothing was dirty enough;
        here every pass yields to the event loop between partitions, and sleeps after)."""
        while True:
            await asyncio.sleep(self.log_cleaner_backoff_ms / 1000)
            for cluster in self.compacted_partitions():
                self.clean_partition(cluster)
                await asyncio.sleep(0)

    async def _close_idle_connections(self) -> None:
        """Kafka's ``Selector.maybeCloseOldestConnection``, as a sweep: every tenth of
        ``connections.max.idle.ms`` (at most a second), close the connections idle longer."""
        idle = self.connections_max_idle_ms / 1000
        while True:
            await asyncio.sleep(min(max(idle / 10, 0.005), 1.0))
            now = time.monotonic()
            for quotas in self._connections:
                quotas.close_idle(idle, now)

    def compacted_partitions(self) -> list[Cluster]:
        """The partitions of the topics whose ``cleanup.policy`` includes ``compact``."""
        return [
            cluster
            for name in self.topics
            if (topic := self.topics.get(name)) is not None
            and "compact" in topic.configs.get("cleanup.policy", "").split(",")
            for cluster in topic.partitions
        ]

    def clean_partition(self, cluster: Cluster) -> None:
        """One cleaning pass on every live replica of ``cluster`` (Kafka's LogCleaner with
        ``min.cleanable.dirty.ratio`` 0.5 and ``log.cleaner.delete.retention.ms``). A pass that
        fails is logged and the partition left as it was; Kafka marks such a partition
        uncleanable and goes on with the others."""
        try:
            cluster.clean(delete_retention_ms=self.log_cleaner_delete_retention_ms,
                          min_cleanable_ratio=DEFAULT_MIN_CLEANABLE_DIRTY_RATIO)  # fmt: skip
        except (KafkaStorageError, OSError) as error:
            logger.error("log cleaner: cleaning %s failed: %s", cluster.name, error)
        except Exception:
            logger.exception("log cleaner: cleaning %s failed", cluster.name)

    def _primary(self) -> Listener:
        """The listener of :attr:`host` and :attr:`ports`: PLAINTEXT, else the first."""
        return next((listener for listener in self.listeners if listener.name == "PLAINTEXT"), self.listeners[0])

    def endpoint(self, broker_id: int, listener: str) -> tuple[str, int]:
        """The host and port broker ``broker_id`` advertises on ``listener`` (Kafka answers
        Metadata with the endpoints of the listener the request came in on)."""
        for candidate in self.listeners:
            if candidate.name == listener:
                port = self.listener_ports[listener][broker_id]
                if candidate.advertised_port:
                    port = candidate.advertised_port + broker_id
                return advertised_host(candidate), port
        return self.host, self.ports[broker_id]

    def advertised(self, broker_id: int, listener: str) -> dict[str, Any]:
        """:meth:`endpoint` as the ``host`` and ``port`` of a response's broker entry."""
        host, port = self.endpoint(broker_id, listener)
        return {"host": host, "port": port}

    async def _listen(self, broker_id: int) -> None:
        servers = []
        try:
            for listener in self.listeners:
                ports = self.listener_ports[listener.name]

                async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                    listener: Listener = listener) -> None:  # fmt: skip
                    task = asyncio.current_task()
                    assert task is not None
                    self._handlers.add(task)
                    try:
                        await self._serve(broker_id, reader, writer, listener)
                    except asyncio.CancelledError:
                        # Only close() (or the end of the loop) cancels a connection: it ends with
                        # the server, without the traceback asyncio logs for a cancelled task.
                        writer.close()
                    finally:
                        self._handlers.discard(task)

                # A TLS handshake is bounded as a request is (connections.max.idle.ms, at most asyncio's 60 s).
                handshake = min(60.0, self.connections_max_idle_ms / 1000) if listener.ssl_context else None
                server = await asyncio.start_server(connected, listener.host or None, ports[broker_id],
                                                    reuse_address=True, ssl=listener.ssl_context,
                                                    ssl_handshake_timeout=handshake)  # fmt: skip
                servers.append(server)
                ports[broker_id] = server.sockets[0].getsockname()[1]
                logger.info("broker %d listening on %s://%s:%d", broker_id, listener.name, listener.host,
                            ports[broker_id])  # fmt: skip
        except BaseException:
            for server in servers:
                server.close()
            raise
        self._listeners[broker_id] = servers

    async def _unlisten(self, broker_id: int) -> None:
        servers = self._listeners[broker_id] or []
        self._listeners[broker_id] = None
        for server in servers:
            server.close()
        for connection in list(self._connections[broker_id].connections):
            connection.writer.close()
        for server in servers:
            await server.wait_closed()

    async def close(self) -> None:
        """Close every listener and connection (a fetch waiting for data included), shut
        every broker's replicas down cleanly, and remove the directory if it was a temporary
        one. A replica that cannot be closed cleanly (a full disk: its clean-shutdown marker
        cannot be written, so it is recovered at the next start) does not keep the others
        open: every other one is closed, then the first failure is raised
        (``KafkaStorageError``)."""
        self._alive = [False] * len(self._alive)
        if self._cleaner is not None:
            self._cleaner.cancel()
            try:
                await self._cleaner
            except asyncio.CancelledError:
                pass
            self._cleaner = None
        if self._idle_sweeper is not None:
            self._idle_sweeper.cancel()
            try:
                await self._idle_sweeper
            except asyncio.CancelledError:
                pass
            self._idle_sweeper = None
        for broker_id in range(len(self._alive)):
            await self._unlisten(broker_id)
        self.refusals.flush()
        if self._restore_exception_handler is not None:
            self._restore_exception_handler()
            self._restore_exception_handler = None
        self.groups.close()  # answers the requests waiting for a rebalance
        self.transactions.close()
        handlers = [task for task in self._handlers if task is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        failures: list[BaseException] = []
        for cluster in self.topics.clusters():
            try:
                cluster.close()
            except (KafkaStorageError, OSError) as error:
                logger.error("closing %s: %s", cluster.name, error)
                failures.append(error)
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)
        if failures:
            raise failures[0] if isinstance(failures[0], KafkaStorageError) else KafkaStorageError(str(failures[0]))

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{port}" for port in self.ports)

    def live_brokers(self) -> list[int]:
        return [broker_id for broker_id, alive in enumerate(self._alive) if alive]

    def partition(self, topic: str, index: int) -> Cluster | None:
        """Partition ``index`` of ``topic``; None if there is no such topic or partition."""
        return self.topics.partition(topic, index)

    def leader(self, topic: str, partition: int = 0) -> int | None:
        """The broker leading ``topic``-``partition`` (None: offline); ``KeyError`` if there is
        no such partition."""
        cluster = self.topics.partition(topic, partition)
        if cluster is None:
            raise KeyError(f"{topic}-{partition}")
        return cluster.leader_id

    # -- failures ----------------------------------------------------------------------------------

    def _broker_id(self, value: Any) -> int:
        """A broker id of this server (a negative one would index from the end)."""
        last = len(self._alive) - 1
        return _args.integer("broker_id", value, 0, last, f"in [0, {last}]")

    async def stop_broker(self, broker_id: int, *, clean: bool = False) -> None:
        """A broker fails (a crash unless ``clean``): its port closes, its connections break,
        and every partition it led elects a new leader from the in-sync replicas (partitions
        it is no replica of are left alone)."""
        broker_id = self._broker_id(broker_id)
        clean = _args.flag("clean", clean)
        if not self._alive[broker_id]:
            raise ValueError(f"broker {broker_id} is already stopped")
        self._alive[broker_id] = False
        await self._unlisten(broker_id)
        for cluster in self.topics.clusters():
            if broker_id in cluster.replicas:
                cluster.stop_broker(broker_id, clean=clean)
        self.groups.leadership_changed()
        self.transactions.leadership_changed()
        logger.info("broker %d stopped (%s)", broker_id, "clean" if clean else "crash")

    async def start_broker(self, broker_id: int) -> None:
        """A stopped broker restarts: recovery from its directory, truncation and catch-up
        (:meth:`Cluster.start_broker <dedup.cluster.Cluster.start_broker>`), then its port
        opens again."""
        broker_id = self._broker_id(broker_id)
        if self._alive[broker_id]:
            raise ValueError(f"broker {broker_id} is already running")
        for cluster in self.topics.clusters():
            if broker_id in cluster.replicas:
                cluster.start_broker(broker_id)
        self.groups.leadership_changed()
        self.transactions.leadership_changed()
        self._alive[broker_id] = True
        await self._listen(broker_id)
        logger.info("broker %d restarted", broker_id)

    # -- requests ----------------------------------------------------------------------------------

    def data_arrived(self) -> None:
        """Wake fetches waiting for data (Kafka's fetch purgatory)."""
        self._data.set()
        self._data = asyncio.Event()

    async def _serve(
        self, broker_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: Listener
    ) -> None:
        """One connection: admitted under ``max.connections`` and ``max.connections.per.ip``,
        then its requests one at a time, each read under ``queued.max.requests`` and answered
        before the next is read (see :mod:`dedup.server.connections`)."""
        peer = writer.get_extra_info("peername")
        connection = Connection(peer, str(peer[0]) if peer else "", writer)
        authenticator = Authenticator(listener) if listener.sasl else None
        quotas = self._connections[broker_id]
        if not self._alive[broker_id] or not quotas.admit(connection):
            writer.close()
            return
        slots = self._request_slots[broker_id]
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big", signed=True)
                if size < 0 or size > self.max_request_bytes:
                    # Kafka's InvalidReceiveException: the connection is closed unread.
                    self.stats.bad_requests += 1
                    logger.warning("broker %d: %s sent a frame of %d bytes (limit %d): closing",
                                   broker_id, peer, size, self.max_request_bytes)  # fmt: skip
                    return
                if slots.locked():  # queued.max.requests reached: the frame waits in the socket
                    connection.in_service = True  # waiting on the broker, not on the client
                    await slots.acquire()
                    connection.in_service, connection.last_active = False, time.monotonic()
                else:
                    await slots.acquire()
                try:
                    frame = await reader.readexactly(size)
                    connection.in_service = True
                    if not await self._answer(broker_id, frame, peer, writer, listener, authenticator):
                        return
                finally:
                    slots.release()
                    connection.in_service, connection.last_active = False, time.monotonic()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away, the broker stopped, or the connection was idle too long
        except OSError as error:
            if error.errno not in (errno.EMFILE, errno.ENFILE):
                logger.exception("broker %d: internal error serving %s: closing the connection", broker_id, peer)
            else:  # out of file descriptors (a module to import, a file to open): the client retries
                self.refusals.refused(f"closed while serving: {error.strerror}")
        except Exception:
            # A bug in the server: this connection closes, every other keeps being served.
            logger.exception("broker %d: internal error serving %s: closing the connection", broker_id, peer)
        finally:
            quotas.remove(connection)
            writer.close()

    async def _answer(self, broker_id: int, frame: bytes, peer: Any, writer: asyncio.StreamWriter,
                      listener: Listener, authenticator: Authenticator | None) -> bool:  # fmt: skip
        """Parse, handle and answer one request frame; False when the connection must close."""
        started = time.perf_counter()
        if authenticator is not None and not authenticator.authenticated:
            try:
                return await self._authenticate(broker_id, frame, peer, writer, listener, authenticator)
            except CloseConnection as close:
                logger.info("broker %d: %s on %s: %s: closing", broker_id, peer, listener.name, close)
                if close.response is not None and self._alive[broker_id] and not writer.is_closing():
                    writer.write(close.response)
                    await writer.drain()
                return False
        try:
            request = parse_request(frame)
        except BadRequest as error:
            self.stats.bad_requests += 1
            logger.warning("broker %d: bad request from %s: %s: closing", broker_id, peer, error)
            return False
        request = request._replace(client_host=f"/{peer[0]}" if peer else "", listener=listener.name)
        if self.faults.close_before_handling():
            logger.info("broker %d: fault: closing %s before %s", broker_id, peer, request.name)
            return False
        self.stats.requests[request.name] = self.stats.requests.get(request.name, 0) + 1
        body = await self._handle(broker_id, request)
        if body is None:
            return True
        response = body if isinstance(body, ResponseFrame) else ResponseFrame([encode_response(request, body)])
        del body
        if request.api_key == ApiKey.PRODUCE:
            self.stats.produce_seconds += time.perf_counter() - started
            fate = self.faults.produce_response_fate()
            if fate is Fate.DROP:
                logger.info("broker %d: fault: produce response to %s dropped", broker_id, peer)
                response.close()
                return False
            if fate is Fate.DELAY:
                logger.info("broker %d: fault: produce response to %s delayed", broker_id, peer)
                await asyncio.sleep(self.faults.delay_seconds)
        if not self._alive[broker_id] or writer.is_closing():
            response.close()
            return False
        await send_response(writer, response)  # it closes the response's file regions
        return True

    async def _authenticate(self, broker_id: int, frame: bytes, peer: Any, writer: asyncio.StreamWriter,
                            listener: Listener, authenticator: Authenticator) -> bool:  # fmt: skip
        """A frame before the connection has authenticated (security/authenticator.py):
        ApiVersions, the SASL exchange, or CloseConnection."""
        if authenticator.raw_tokens:  # after SaslHandshake v0: a bare token, answered bare
            response = authenticator.raw_token(frame)
        else:
            try:
                request = parse_request(frame)
            except BadRequest as error:
                self.stats.bad_requests += 1
                raise CloseConnection(f"bad request: {error}") from None
            request = request._replace(client_host=f"/{peer[0]}" if peer else "", listener=listener.name)
            self.stats.requests[request.name] = self.stats.requests.get(request.name, 0) + 1
            body = authenticator.request(request)
            if body is None:
                body = HANDLERS[ApiKey(request.api_key)](self, broker_id, request)
            response = encode_response(request, body)
        if not self._alive[broker_id] or writer.is_closing():
            return False
        writer.write(response)
        await writer.drain()
        return True

    async def _handle(self, broker_id: int, request: Request) -> Any:
        """The response body to ``request`` (None: none is sent). A handler that fails gets
        Kafka's error response (KafkaApis.handleError): KAFKA_STORAGE_ERROR for a storage
        failure, UNKNOWN_SERVER_ERROR for a bug (logged with its traceback); the client gets
        a Kafka error code, and the connection stays open."""
        try:
            if request.api_key == ApiKey.FETCH:
                return await self._fetch(broker_id, request)
            body = HANDLERS[ApiKey(request.api_key)](self, broker_id, request)
            return await body if inspect.isawaitable(body) else body
        except Exception as error:
            code = error_code_for(error)
            if code == ErrorCode.unknown_server_error:
                logger.exception("broker %d: internal error serving %s: answered UNKNOWN_SERVER_ERROR", broker_id,
                                 request.name)  # fmt: skip
            else:
                logger.error("broker %d: %s failed: %s: answered %s", broker_id, request.name, error, code.name)
            if request.api_key == ApiKey.PRODUCE and request.body.acks == 0:
                return None
            return error_response(request, code)

    async def _fetch(self, broker_id: int, request: Request) -> ResponseFrame:
        """Fetch: records from the leader up to the high watermark, bounded by the request's
        and the broker's limits (:func:`~dedup.server.apis.fetch.fetch_partitions`), left in
        the segment files until they are sent; with nothing to return it waits up to
        ``max_wait_ms`` for a produce, as a fetch waits in Kafka's purgatory."""
        responses, size = fetch_partitions(self, broker_id, request)
        wait = request.body.max_wait.total_seconds()
        if size < max(request.body.min_bytes, 1) and wait > 0:
            try:
                await asyncio.wait_for(self._data.wait(), wait)
            except TimeoutError:
                pass
            if self._alive[broker_id]:
                release(responses)
                responses, size = fetch_partitions(self, broker_id, request)
        return fetch_response(request, responses)
