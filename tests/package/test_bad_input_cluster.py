"""The bad-input matrix (see test_bad_input_matrix.py), part 4: the replicated cluster, the
producer, the simulated network, the simulator and the Kafka-protocol server: the argument
named, nothing applied."""

from __future__ import annotations

import asyncio
import os

import pytest
from bad_input import (
    GOOD_BATCH,
    STRIDED,
    ids,
    row,
)

from dedup.cluster import Cluster
from dedup.producer import IdempotentProducer, Network
from dedup.server import Faults, KafkaServer
from dedup.tools.simulate import run_seed

# --- the replicated cluster ---------------------------------------------------------------------


def cluster_state(cluster):
    return (
        cluster.leader_id,
        cluster.leader_epoch,
        sorted(cluster.isr),
        [(broker.alive, broker.log and broker.log.log_end_offset) for broker in cluster.brokers],
    )


CLUSTER_CONSTRUCTOR_ROWS = [
    row("Cluster", "directory", "None", lambda d: Cluster(None), TypeError),
    row("Cluster", "brokers", "zero", lambda d: Cluster(d, brokers=0), ValueError),
    row("Cluster", "brokers", "None", lambda d: Cluster(d, brokers=None), TypeError),
    row("Cluster", "brokers", "beyond 64", lambda d: Cluster(d, brokers=65), ValueError),
    # The topic names the replicas' directories: "../x" would write outside the cluster.
    row("Cluster", "topic", "None", lambda d: Cluster(d, topic=None), TypeError),
    row("Cluster", "topic", "empty", lambda d: Cluster(d, topic=""), ValueError),
    row("Cluster", "topic", "a path", lambda d: Cluster(d, topic="../x"), ValueError),
    row(
        "Cluster",
        "min_insync_replicas",
        "more than the brokers",
        lambda d: Cluster(d, min_insync_replicas=4),
        ValueError,
    ),
    row("Cluster", "unclean_leader_election", "int", lambda d: Cluster(d, unclean_leader_election=1), TypeError),
    row("Cluster", "clock", "not callable", lambda d: Cluster(d, clock=5), TypeError),
]


@pytest.mark.parametrize("bad", CLUSTER_CONSTRUCTOR_ROWS, ids=ids(CLUSTER_CONSTRUCTOR_ROWS))
def test_cluster_constructor(tmp_path, bad):
    directory = tmp_path / "cluster"
    with pytest.raises(bad.error, match=bad.match):
        bad.call(directory)
    assert not directory.exists() and os.listdir(tmp_path) == []


CLUSTER_ROWS = [
    row("Cluster.produce", "records", "None", lambda c: c.produce(None), TypeError),
    row("Cluster.produce", "records", "non-contiguous", lambda c: c.produce(STRIDED), TypeError),
    row("Cluster.produce", "acks", "None", lambda c: c.produce(GOOD_BATCH, acks=None), ValueError),
    row("Cluster.produce", "acks", "int", lambda c: c.produce(GOOD_BATCH, acks=1), ValueError),
    # A negative id would index from the end and stop the last broker.
    row("Cluster.stop_broker", "broker_id", "negative", lambda c: c.stop_broker(-1), ValueError),
    row("Cluster.stop_broker", "broker_id", "past the last", lambda c: c.stop_broker(3), ValueError),
    row("Cluster.stop_broker", "broker_id", "None", lambda c: c.stop_broker(None), TypeError),
    row("Cluster.stop_broker", "broker_id", "str", lambda c: c.stop_broker("0"), TypeError),
    row("Cluster.stop_broker", "broker_id", "bool", lambda c: c.stop_broker(True), TypeError),
    row("Cluster.stop_broker", "broker_id", "float", lambda c: c.stop_broker(1.0), TypeError),
    row("Cluster.stop_broker", "clean", "int", lambda c: c.stop_broker(1, clean=1), TypeError),
    row("Cluster.start_broker", "broker_id", "negative", lambda c: c.start_broker(-1), ValueError),
    row("Cluster.start_broker", "broker_id", "past the last", lambda c: c.start_broker(3), ValueError),
    row("Cluster.start_broker", "broker_id", "bool", lambda c: c.start_broker(True), TypeError),
    row("Cluster.consume", "isolation", "unknown", lambda c: c.consume(isolation="dirty"), ValueError),
    row("Cluster.consume", "offset", "negative", lambda c: c.consume(from_offset=-1), ValueError),
    row(
        "Cluster.write_marker",
        "producer_id",
        "None",
        lambda c: c.write_marker(None, 0, commit=True, coordinator_epoch=0),
        TypeError,
    ),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for every row (each refused call must leave it as it was), broker 2 down."""
    with Cluster(tmp_path_factory.mktemp("cluster"), clock=lambda: 1_700_000_000_000) as made:
        assert made.produce(GOOD_BATCH).error is None
        made.stop_broker(2)
        yield made


@pytest.mark.parametrize("bad", CLUSTER_ROWS, ids=ids(CLUSTER_ROWS))
def test_cluster(cluster, bad):
    before = cluster_state(cluster)
    with pytest.raises(bad.error, match=bad.match):
        bad.call(cluster)
    assert cluster_state(cluster) == before


# --- producer, network, server, simulation ------------------------------------------------------

CLIENT_ROWS = [
    # The full option matrix is tests/cluster/test_producer.py (test_bad_producer_arguments_name_themselves).
    row("IdempotentProducer", "cluster", "None", lambda: IdempotentProducer(None), TypeError),
    row("IdempotentProducer", "cluster", "object", lambda: IdempotentProducer(object()), TypeError),
    row("Network", "seed", "None", lambda: Network(None), TypeError),
    row("Network", "seed", "float", lambda: Network(1.5), TypeError),
    row("Network", "drop_request", "None", lambda: Network(drop_request=None), TypeError),
    row("Network", "drop_request", "1 (nothing gets through)", lambda: Network(drop_request=1.0), ValueError),
    row("Network", "drop_response", "negative", lambda: Network(drop_response=-0.1), ValueError),
    row("Network", "reorder", "int", lambda: Network(reorder=1), TypeError),
    row("Faults", "drop_responses", "None", lambda: Faults(drop_responses=None), TypeError),
    row("Faults", "drop_responses", "str", lambda: Faults(drop_responses="0.1"), TypeError),
    row("Faults", "drop_responses", "above 1", lambda: Faults(drop_responses=1.5), ValueError),
    row("Faults", "delay_responses", "negative", lambda: Faults(delay_responses=-0.5), ValueError),
    row("Faults", "close_connections", "bool", lambda: Faults(close_connections=True), TypeError),
    row(
        "Faults",
        "delay_responses",
        "shares above 1 together",
        lambda: Faults(drop_responses=0.6, delay_responses=0.6),
        ValueError,
    ),
    row("Faults", "delay_seconds", "None", lambda: Faults(delay_seconds=None), TypeError),
    row("Faults", "delay_seconds", "negative", lambda: Faults(delay_seconds=-1), ValueError),
    row("Faults", "delay_seconds", "infinite", lambda: Faults(delay_seconds=float("inf")), ValueError),
    row("Faults", "seed", "float", lambda: Faults(seed=1.5), TypeError),
    row("Faults", "seed", "list", lambda: Faults(seed=[1]), TypeError),
    row("run_seed", "seed", "None", lambda: run_seed(None, steps=0), TypeError),
    row("run_seed", "seed", "str", lambda: run_seed("7", steps=0), TypeError),
    row("run_seed", "seed", "float", lambda: run_seed(1.5, steps=0), TypeError),
    row("run_seed", "seed", "negative", lambda: run_seed(-1, steps=0), ValueError),
    row("run_seed", "unclean_share", "str", lambda: run_seed(1, unclean_share="x", steps=0), TypeError),
    row("run_seed", "unclean_share", "above 1", lambda: run_seed(1, unclean_share=2.0, steps=0), ValueError),
    row("run_seed", "unclean_share", "None", lambda: run_seed(1, unclean_share=None, steps=0), TypeError),
    row("run_seed", "steps", "negative", lambda: run_seed(1, steps=-1), ValueError),
    row("run_seed", "steps", "None", lambda: run_seed(1, steps=None), TypeError),
    row("run_seed", "steps", "float", lambda: run_seed(1, steps=1.5), TypeError),
]


@pytest.mark.parametrize("bad", CLIENT_ROWS, ids=ids(CLIENT_ROWS))
def test_clients_and_simulation(bad):
    with pytest.raises(bad.error, match=bad.match):
        bad.call()


SERVER_ROWS = [
    row("KafkaServer", "directory", "int", lambda d: KafkaServer(5, brokers=1), TypeError),
    row("KafkaServer", "brokers", "zero", lambda d: KafkaServer(d, brokers=0), ValueError),
    # A str would be read as its letters, one topic each; a path would leave the directory.
    row("KafkaServer", "topics", "str", lambda d: KafkaServer(d, brokers=1, topics="abc"), TypeError),
    row("KafkaServer", "topics", "None", lambda d: KafkaServer(d, brokers=1, topics=None), TypeError),
    row("KafkaServer", "topics", "empty", lambda d: KafkaServer(d, brokers=1, topics=[]), ValueError),
    row("KafkaServer", "topics", "repeated", lambda d: KafkaServer(d, brokers=1, topics=["a", "a"]), ValueError),
    row(
        "KafkaServer", "topics", "int name", lambda d: KafkaServer(d, brokers=1, topics=[1]), TypeError, r"topics\[0\]"
    ),
    row(
        "KafkaServer",
        "topics",
        "a path",
        lambda d: KafkaServer(d, brokers=1, topics=["../x"]),
        ValueError,
        r"topics\[0\]",
    ),
    row("KafkaServer", "ports", "int", lambda d: KafkaServer(d, brokers=1, ports=5), TypeError),
    row(
        "KafkaServer", "ports", "str port", lambda d: KafkaServer(d, brokers=1, ports=["80"]), TypeError, r"ports\[0\]"
    ),
    row(
        "KafkaServer", "ports", "float port", lambda d: KafkaServer(d, brokers=1, ports=[1.5]), TypeError, r"ports\[0\]"
    ),
    row(
        "KafkaServer",
        "ports",
        "negative port",
        lambda d: KafkaServer(d, brokers=1, ports=[-1]),
        ValueError,
        r"ports\[0\]",
    ),
    row(
        "KafkaServer",
        "ports",
        "beyond uint16",
        lambda d: KafkaServer(d, brokers=1, ports=[70000]),
        ValueError,
        r"ports\[0\]",
    ),
    row("KafkaServer", "ports", "mismatched length", lambda d: KafkaServer(d, brokers=2, ports=[0]), ValueError),
    row("KafkaServer", "host", "None", lambda d: KafkaServer(d, brokers=1, host=None), TypeError),
    row("KafkaServer", "host", "empty", lambda d: KafkaServer(d, brokers=1, host=""), ValueError),
    row("KafkaServer", "deduplicate", "int", lambda d: KafkaServer(d, brokers=1, deduplicate=1), TypeError),
    row("KafkaServer", "faults", "int", lambda d: KafkaServer(d, brokers=1, faults=5), TypeError),
    row(
        "KafkaServer",
        "max_request_bytes",
        "too small",
        lambda d: KafkaServer(d, brokers=1, max_request_bytes=1),
        ValueError,
    ),
    row("KafkaServer", "cluster_id", "None", lambda d: KafkaServer(d, brokers=1, cluster_id=None), TypeError),
]


@pytest.mark.parametrize("bad", SERVER_ROWS, ids=ids(SERVER_ROWS))
def test_server_constructor(tmp_path, bad):
    directory = tmp_path / "server"
    with pytest.raises(bad.error, match=bad.match):
        bad.call(directory)
    assert os.listdir(tmp_path) == []  # checked before anything is created


@pytest.mark.parametrize(
    "method, broker_id, keywords, error",
    [
        ("stop_broker", -1, {}, ValueError),
        ("stop_broker", 2, {}, ValueError),
        ("stop_broker", True, {}, TypeError),
        ("stop_broker", 1, {"clean": 1}, TypeError),
        ("start_broker", -1, {}, ValueError),
        ("start_broker", None, {}, TypeError),
    ],
)
def test_server_broker_ids(tmp_path, method, broker_id, keywords, error):
    server = KafkaServer(tmp_path, brokers=2)
    try:
        before = [cluster_state(cluster) for cluster in server.topics.clusters()], server.live_brokers()
        match = "clean" if keywords else "broker_id"
        with pytest.raises(error, match=match):
            asyncio.run(getattr(server, method)(broker_id, **keywords))
        assert ([cluster_state(cluster) for cluster in server.topics.clusters()], server.live_brokers()) == before
    finally:
        asyncio.run(server.close())
