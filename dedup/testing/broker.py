"""A Kafka broker for an application's tests: ``dedup serve`` in-process, with faults.

:class:`Broker` starts dedup's brokers (:class:`dedup.server.ServerThread`: one
:class:`~dedup.server.KafkaServer` on a background event loop) on free ports of 127.0.0.1
with a temporary log directory, in well under a second, and removes everything on
:meth:`Broker.close`. Real clients (confluent-kafka, kafka-python, aiokafka, the Java client)
connect to :attr:`Broker.bootstrap_servers`. The faults an idempotent producer exists for are
methods, placed exactly by the test:

- :meth:`Broker.drop_next_responses`: the next N produce responses are lost after the batch
  is appended and replicated (the connection breaks; the client retries the same batch);
- :meth:`Broker.delay_next_responses`: the next N produce responses are held back;
- :meth:`Broker.crash_leader` / :meth:`Broker.restart_broker`: the leader of a partition
  crashes (a follower in sync takes over) and later restarts from its directory;
- :meth:`Broker.fill_disk` / :meth:`Broker.free_disk`: a broker's disk is full: its next
  segment write fails with ENOSPC, that replica goes offline and its partitions fail over to
  an in-sync replica (Kafka's log-directory failure), until the broker restarts with space.

Example::

    with kafka_broker(topics=["orders"]) as broker:
        producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap_servers,
                                             "enable.idempotence": True})
        broker.drop_next_responses(1)
        ...
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import _args
from ..errors import KafkaStorageError
from ..segment import LogSegment
from ..server.faults import Fate, Faults
from ..server.thread import ServerThread

__all__ = ["Broker", "kafka_broker"]


class _ScriptedFaults(Faults):
    """Faults placed by count instead of by share: the next ``drop`` produce responses are
    dropped, then the next ``delay`` are delayed. Changed only on the server's thread."""

    drop_next: int = 0
    delay_next: int = 0

    def produce_response_fate(self) -> Fate:
        if self.drop_next > 0:
            self.drop_next -= 1
            self.dropped += 1
            return Fate.DROP
        if self.delay_next > 0:
            self.delay_next -= 1
            self.delayed += 1
            return Fate.DELAY
        return super().produce_response_fate()


class _FullDisks:
    """The broker directories whose disk is "full": every segment write under one fails with
    ENOSPC, as a real full disk fails it (the file is left as it was). The wrapper of
    :meth:`LogSegment.append` is installed once per process, on the first :meth:`fill`, and
    costs one set lookup per write while any directory is full."""

    def __init__(self) -> None:
        self.directories: set[str] = set()
        self._lock = threading.Lock()
        self._original: Callable[..., Any] | None = None

    def fill(self, directory: str) -> None:
        with self._lock:
            if self._original is None:
                self._original = original = LogSegment.append
                full = self.directories

                def append(segment: LogSegment, data: Any, *args: Any, **kwargs: Any) -> Any:
                    if full and any(segment.directory.startswith(prefix) for prefix in full):
                        error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                        raise KafkaStorageError(f"segment {segment.path}: write failed: {error}") from error
                    return original(segment, data, *args, **kwargs)

                setattr(LogSegment, "append", append)  # noqa: B010 (a method replaced for the process)
            self.directories.add(os.path.join(os.path.abspath(directory), ""))

    def free(self, directory: str) -> None:
        with self._lock:
            self.directories.discard(os.path.join(os.path.abspath(directory), ""))


_FULL_DISKS = _FullDisks()


class Broker:
    """``brokers`` dedup brokers on free loopback ports serving ``topics`` (each with
    ``partitions`` partitions, replicated on up to 3 brokers, ``min.insync.replicas`` 2 with
    more than one broker), in a temporary directory unless ``directory`` is given.

    ``deduplicate=False`` runs a broker without idempotence (retries are stored again): the
    control run that shows a test can fail. Other keyword arguments go to
    :class:`dedup.server.KafkaServer` (``auto_create_topics_enable``,
    ``producer_id_expiration_ms``, ``segment_bytes``, ...). A context manager; :meth:`close`
    stops every broker and removes the temporary directory."""

    def __init__(
        self,
        *,
        topics: Iterable[str] = ("test",),
        partitions: int = 1,
        brokers: int = 3,
        deduplicate: bool = True,
        directory: Any = None,
        **options: Any,
    ) -> None:
        self._faults = _ScriptedFaults()
        self.server = ServerThread(
            directory,
            brokers=brokers,
            topics=[(name, partitions) for name in topics],
            deduplicate=deduplicate,
            faults=self._faults,
            **options,
        )

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT,...``: every broker, for a client's ``bootstrap.servers``."""
        return self.server.bootstrap_servers

    @property
    def directory(self) -> str:
        return self.server.server.directory

    # -- faults ----------------------------------------------------------------------------------

    def drop_next_responses(self, count: int = 1) -> None:
        """Lose the next ``count`` produce responses (of any broker): each batch is appended
        and replicated, then its connection is closed instead of answered, as when a
        broker's network fails right after a write. Adds to any count still pending."""
        count = _args.integer("count", count, 0, 1 << 31, "an integer in [0, 2^31]")
        self.server.run(self._add, "drop_next", count)

    def delay_next_responses(self, count: int = 1, seconds: float = 1.0) -> None:
        """Send the next ``count`` produce responses (after the drops pending) only after
        ``seconds``: a client whose ``socket.timeout.ms``/``request.timeout.ms`` is shorter
        retries on a new connection while the batch is already stored."""
        count = _args.integer("count", count, 0, 1 << 31, "an integer in [0, 2^31]")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < 3600:
            raise ValueError(f"seconds must be a number in [0, 3600), got {seconds!r}")
        self.server.run(setattr, self._faults, "delay_seconds", float(seconds))
        self.server.run(self._add, "delay_next", count)

    def _add(self, name: str, count: int) -> None:
        setattr(self._faults, name, getattr(self._faults, name) + count)

    @property
    def dropped(self) -> int:
        """Produce responses dropped so far."""
        return int(self.server.run(getattr, self._faults, "dropped"))

    @property
    def delayed(self) -> int:
        """Produce responses delayed so far."""
        return int(self.server.run(getattr, self._faults, "delayed"))

    def leader(self, topic: str, partition: int = 0) -> int | None:
        """The broker id leading ``topic``-``partition`` (None: offline)."""
        leader: int | None = self.server.run(self.server.server.leader, topic, partition)
        return leader

    def crash_leader(self, topic: str, partition: int = 0) -> int:
        """Crash the broker leading ``topic``-``partition`` (its port closes, its connections
        break, an in-sync follower is elected, as Kafka's controller does); returns its id,
        for :meth:`restart_broker`. Every partition it led fails over with it."""
        return self.server.stop_leader(topic, partition)

    def stop_broker(self, broker_id: int) -> None:
        """Stop broker ``broker_id`` as a crash does (no clean shutdown); its partitions fail
        over. :meth:`restart_broker` starts it again."""
        self.server.stop_broker(broker_id)

    def restart_broker(self, broker_id: int) -> None:
        """Restart a crashed broker: recovery from its directory, truncation to the leader and
        catch-up, then its port opens again (the same port)."""
        self.server.start_broker(broker_id)

    def fill_disk(self, broker_id: int) -> None:
        """Fill broker ``broker_id``'s disk: its next segment write fails with ENOSPC, so that
        replica goes offline (``KAFKA_STORAGE_ERROR`` to a produce on it), leaves the ISR, and
        each partition it led fails over to an in-sync replica, as Kafka's controller moves
        the partitions of a failed log directory. The replica stays offline until
        :meth:`free_disk` and :meth:`restart_broker` (recovery from its files)."""
        _FULL_DISKS.fill(self._broker_directory(broker_id))

    def free_disk(self, broker_id: int) -> None:
        """Give broker ``broker_id``'s disk space again (its offline replicas come back when
        it restarts: :meth:`crash_leader` or a stop, then :meth:`restart_broker`)."""
        _FULL_DISKS.free(self._broker_directory(broker_id))

    def _broker_directory(self, broker_id: int) -> str:
        brokers = len(self.server.server.ports)
        broker_id = _args.integer("broker_id", broker_id, 0, brokers - 1, f"a broker id in [0, {brokers - 1}]")
        return os.path.join(self.directory, f"broker-{broker_id}")

    def close(self) -> None:
        for broker_id in range(len(self.server.server.ports)):
            _FULL_DISKS.free(self._broker_directory(broker_id))
        self.server.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


@contextlib.contextmanager
def kafka_broker(**options: Any) -> Iterator[Broker]:
    """A :class:`Broker` for the ``with`` block (the options are :class:`Broker`'s)."""
    broker = Broker(**options)
    try:
        yield broker
    finally:
        broker.close()
