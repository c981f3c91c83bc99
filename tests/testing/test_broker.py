"""The broker for users' tests (``dedup.testing.Broker``, the ``dedup_broker`` fixture): quick
to start and stop, and each fault control does what it says, seen on the wire; then a user's
test: a confluent-kafka idempotent producer through a dropped acknowledgement and a leader
crash reads back each message once, and the same test without deduplication sees the
duplicate."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dedup.testing import Broker, kafka_broker, plugin
from dedup.tools.probe import Session, Target

# What the pytest plugin (entry point pytest11) gives a user's tests, taken here so that these run
# without the installed entry point too; the marker is registered in pyproject.toml.
dedup_broker = plugin.dedup_broker
dedup_broker_factory = plugin.dedup_broker_factory


@pytest.fixture(autouse=True)
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    for name in ("dedup.server", "dedup.cluster", "dedup.log"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def test_a_broker_starts_and_stops_in_well_under_a_second():
    started = time.perf_counter()
    with kafka_broker(topics=["orders"]) as broker:
        up = time.perf_counter() - started
        host, port = broker.bootstrap_servers.split(",")[0].split(":")
        assert host == "127.0.0.1" and int(port) > 0
        directory = broker.directory
    total = time.perf_counter() - started
    # Measured at about 0.03 s up and 0.3 s in all on an idle machine; the bound leaves room for a loaded one.
    assert up < 1.0 and total < 2.0, (up, total)
    assert not os.path.exists(directory), "the temporary directory is removed at close"


def test_a_dropped_response_is_appended_and_its_retry_is_a_duplicate(dedup_broker: Broker):
    target = Target(dedup_broker.bootstrap_servers, "test")
    session = Session(target)
    pid, epoch = target.init_producer_id()
    session.send(pid, epoch, 0)
    dedup_broker.drop_next_responses(1)
    # The response is lost (the connection breaks); Target sends the same batch again on a
    # new connection, as a client does, and the answer is the original's offset.
    answer = session.send(pid, epoch, 1)
    assert dedup_broker.dropped == 1
    assert answer.error_code == 0 and answer.base_offset == 1
    assert target.produce(pid, epoch, 2, 1).base_offset == 2, "one append for the dropped batch, not two"
    target.close()


def test_a_delayed_response_arrives_after_the_delay(dedup_broker: Broker):
    target = Target(dedup_broker.bootstrap_servers, "test")
    pid, epoch = target.init_producer_id()
    dedup_broker.delay_next_responses(1, seconds=0.5)
    started = time.monotonic()
    assert target.produce(pid, epoch, 0, 1).error_code == 0
    assert time.monotonic() - started >= 0.5
    assert dedup_broker.delayed == 1
    started = time.monotonic()
    target.produce(pid, epoch, 1, 1)
    assert time.monotonic() - started < 0.5, "only the next response is delayed"
    target.close()


def test_crash_and_restart_the_leader(dedup_broker: Broker):
    first = dedup_broker.leader("test")
    assert dedup_broker.crash_leader("test") == first
    second = dedup_broker.leader("test")
    assert second is not None and second != first
    dedup_broker.restart_broker(first)
    dedup_broker.crash_leader("test")
    assert dedup_broker.leader("test") not in (None, second)


@pytest.mark.dedup_broker(topics=["orders", "payments"], partitions=3, deduplicate=False)
def test_the_marker_sets_the_fixture_s_options(dedup_broker: Broker):
    server = dedup_broker.server.server
    assert not server.deduplicate
    assert dedup_broker.server.run(lambda: sorted(server.topics)) == ["orders", "payments"]
    assert dedup_broker.server.run(lambda: server.partition("payments", 2)) is not None


def test_the_factory_makes_independent_brokers(dedup_broker_factory):
    one, two = dedup_broker_factory(), dedup_broker_factory(brokers=1)
    assert one.bootstrap_servers != two.bootstrap_servers
    assert len(two.bootstrap_servers.split(",")) == 1


def test_fault_arguments_are_checked(dedup_broker: Broker):
    with pytest.raises(ValueError, match="count"):
        dedup_broker.drop_next_responses(-1)
    with pytest.raises(ValueError, match="seconds"):
        dedup_broker.delay_next_responses(1, seconds=-1)


# --- a user's test ------------------------------------------------------------------------------

confluent_kafka = pytest.importorskip("confluent_kafka")

MESSAGES = [b"order-%02d" % i for i in range(12)]


def produce_through_faults(broker: Broker) -> list[str]:
    """The user's application: an idempotent producer sending MESSAGES one by one, while the
    test loses the acknowledgement of message 3 and crashes the leader before message 7."""
    errors: list[str] = []
    producer = confluent_kafka.Producer({
        "bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True, "acks": "all",
        "linger.ms": 0, "retry.backoff.ms": 20, "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 100,
        "topic.metadata.refresh.interval.ms": 500, "message.timeout.ms": 30000,
    })  # fmt: skip

    def delivered(error: object, _: object) -> None:
        if error is not None:
            errors.append(str(error))

    for i, value in enumerate(MESSAGES):
        if i == 3:
            broker.drop_next_responses(1)
        if i == 7:
            broker.crash_leader("orders")
        producer.produce("orders", value=value, on_delivery=delivered)
        producer.flush(30)
    return errors


def read_back(broker: Broker) -> list[bytes]:
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": broker.bootstrap_servers, "group.id": "reader", "enable.auto.commit": False,
        "topic.metadata.refresh.interval.ms": 500,
    })  # fmt: skip
    consumer.assign([confluent_kafka.TopicPartition("orders", 0, confluent_kafka.OFFSET_BEGINNING)])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                if len(got) >= len(MESSAGES):
                    break
                continue
            if message.error() is None:
                got.append(message.value())
    finally:
        consumer.close()
    return got


@pytest.mark.dedup_broker(topics=["orders"])
def test_an_idempotent_producer_survives_a_lost_ack_and_a_leader_crash(dedup_broker: Broker):
    assert produce_through_faults(dedup_broker) == []
    assert dedup_broker.dropped == 1
    assert read_back(dedup_broker) == MESSAGES


@pytest.mark.dedup_broker(topics=["orders"], deduplicate=False)
def test_without_deduplication_the_same_test_sees_the_duplicate(dedup_broker: Broker):
    assert produce_through_faults(dedup_broker) == []
    got = read_back(dedup_broker)
    assert set(got) == set(MESSAGES)
    assert got.count(MESSAGES[3]) == 2, got


USER_APP_TEST = """\
import pytest


@pytest.mark.dedup_broker(topics=["orders"], brokers=1)
def test_my_app(dedup_broker):
    assert dedup_broker.bootstrap_servers.startswith("127.0.0.1:")
    assert dedup_broker.leader("orders") == 0
"""


def test_the_plugin_gives_a_user_s_tests_the_fixture_and_its_marker(tmp_path):
    """As a user's project enables it, with --strict-markers: the plugin registers the marker
    itself. Autoloading is off so that ``-p`` is the only way in: where dedup is installed its
    ``pytest11`` entry point loads the same module, and a stale ``dedup.egg-info`` on the path
    makes "is it installed" unanswerable from here."""
    (tmp_path / "test_app.py").write_text(USER_APP_TEST)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # fmt: skip
    enable = ["-p", "dedup.testing.plugin"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers", *enable, "test_app.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


@pytest.mark.dedup_broker(topics=["orders"])
def test_a_full_disk_on_the_leader_fails_the_partition_over_and_nothing_is_lost(dedup_broker: Broker):
    """fill_disk: the leader's next write fails with ENOSPC, its replica goes offline and the
    partition moves to an in-sync replica; the idempotent producer's retry lands there once.
    Freed and restarted, the broker comes back through recovery."""
    producer = confluent_kafka.Producer({
        "bootstrap.servers": dedup_broker.bootstrap_servers, "enable.idempotence": True, "acks": "all",
        "linger.ms": 0, "retry.backoff.ms": 20, "topic.metadata.refresh.interval.ms": 500,
        "message.timeout.ms": 30000,
    })  # fmt: skip
    errors: list[str] = []

    def delivered(error: object, _: object) -> None:
        if error is not None:
            errors.append(str(error))

    first = dedup_broker.leader("orders")
    assert first is not None
    for i, value in enumerate(MESSAGES):
        if i == 5:
            dedup_broker.fill_disk(first)
        producer.produce("orders", value=value, on_delivery=delivered)
        producer.flush(30)
    assert errors == []
    assert dedup_broker.leader("orders") not in (None, first), "the partition failed over"
    assert read_back(dedup_broker) == MESSAGES
    dedup_broker.free_disk(first)
    dedup_broker.stop_broker(first)
    dedup_broker.restart_broker(first)
    dedup_broker.crash_leader("orders")  # the recovered replica can lead again
    assert read_back(dedup_broker) == MESSAGES


def test_fill_disk_checks_the_broker_id(dedup_broker: Broker):
    with pytest.raises(ValueError, match="broker_id"):
        dedup_broker.fill_disk(3)
