"""``python -m dedup demo``: the ad-click scenario. Its numbers are checked against the run: the
cluster it leaves behind is reopened from its directory and counted again."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from dedup.cluster import Cluster
from dedup.tools import demo


def numbers(line):
    return [int(found) for found in re.findall(r"\d+", line)]


def line_starting(lines, prefix):
    [line] = [line for line in lines if line.lstrip().startswith(prefix)]
    return line


def click_counts(records, first, end):
    counts = Counter(json.loads(record.value)["click"] for record in records)
    return Counter({click: counts[click] for click in range(first, end) if counts[click]})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The demo's lines, and its cluster reopened from the directory it left."""
    directory = tmp_path_factory.mktemp("demo")
    lines = list(demo.ad_clicks(str(directory)))
    with Cluster(directory, brokers=3, min_insync_replicas=2) as cluster:
        yield lines, cluster.consume(), cluster.consume(isolation="read_committed")


def test_the_main_run_stores_every_click_exactly_once(run):
    lines, records, _ = run
    stored = line_starting(lines, "stored:")
    assert "every click exactly once, in send order" in stored
    counts = click_counts(records, 0, demo.CLICKS)
    assert numbers(stored)[:3] == [sum(counts.values()), len(counts), demo.CLICKS] == [demo.CLICKS] * 3
    assert [json.loads(r.value)["click"] for r in records[: demo.CLICKS]] == list(range(demo.CLICKS))


def test_the_faults_happened_and_retries_were_deduplicated(run):
    lines, _, _ = run
    assert re.search(r"broker (\d), the leader, crashed with [1-9]\d* requests in flight: broker (?!\1)\d", lines[1])
    assert "loaded from its snapshot at offset" in lines[2] and lines[2].endswith("in sync again: True")
    sent, requests = numbers(line_starting(lines, "sent:"))[0], numbers(line_starting(lines, "sent:"))[2]
    retried = numbers(line_starting(lines, "retried:"))
    assert sent == demo.CLICKS and requests == demo.CLICKS // demo.BATCH_RECORDS + retried[0]
    assert retried[0] == retried[1] + retried[2] + retried[4]  # lost requests + lost responses + errors
    deduplicated = numbers(line_starting(lines, "deduplicated:"))[0]
    assert 0 < deduplicated <= retried[3]  # at most one per lost acknowledgement


def test_a_new_producer_id_stores_the_unacknowledged_clicks_twice(run):
    lines, records, _ = run
    crashed = numbers(line_starting(lines, "a restart with a new producer id"))
    restarted = numbers(line_starting(lines, "restarted as producer"))
    counts = click_counts(records, demo.CLICKS, demo.CLICKS + 40)
    doubled = sum(count == 2 for count in counts.values())
    assert doubled > 0 and set(counts.values()) == {1, 2} and len(counts) == 40
    assert crashed[-1] == doubled  # "N of them stored": each of those is now stored twice
    assert restarted[2] == doubled and restarted[-2:] == [sum(counts.values()), 40]


def test_a_stable_identity_fences_the_old_instance_and_read_committed_sees_each_click_once(run):
    lines, records, committed = run
    assert line_starting(lines, "the old instance").endswith("fenced: INVALID_PRODUCER_EPOCH (47)")
    stalled = numbers(line_starting(lines, "the same with a stable identity"))
    new = numbers(line_starting(lines, "a new instance started"))
    assert new[:2] == [stalled[0], stalled[1] + 1]  # same producer id, epoch + 1
    seen = numbers(line_starting(lines, "a read_committed consumer"))
    in_log = click_counts(records, demo.CLICKS + 40, demo.CLICKS + 80)
    once = click_counts(committed, demo.CLICKS + 40, demo.CLICKS + 80)
    assert set(once.values()) == {1} and len(once) == 40
    assert seen == [len(once), 40, sum(in_log.values()), sum(in_log.values()) - 40]
    assert stalled[2] == sum(in_log.values()) - 40  # what the old instance wrote is what was aborted


@pytest.mark.slow  # two more runs of the demo; the fast set checks the one run above
def test_both_twins_tell_the_same_story(tmp_path, impl):
    compiled = list(demo.ad_clicks(str(tmp_path / "default")))
    assert list(demo.ad_clicks(str(tmp_path / impl.__module__), table_class=impl)) == compiled


def test_the_command_prints_the_same_run(run, real):
    result = subprocess.run([sys.executable, "-m", "dedup", "demo"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # deterministic: the same lines in any directory, the library's scenario then the real clients'
    assert result.stdout.splitlines() == run[0] + real


# -- the same limits with real clients (librdkafka against dedup.server) ----------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    pytest.importorskip("confluent_kafka")
    return list(demo.real_clients(str(tmp_path_factory.mktemp("serve"))))


def test_a_restarted_idempotent_application_stores_its_unacknowledged_clicks_twice(real):
    sent = numbers(line_starting(real, "an idempotent producer"))
    assert sent == [demo.REAL_CLICKS, demo.REAL_CLICKS]  # sent, and stored although unacknowledged
    assert "killed (SIGKILL)" in line_starting(real, "an idempotent producer")
    again = numbers(line_starting(real, "restarted, with a new producer id"))
    assert again == [demo.REAL_CLICKS, 2 * demo.REAL_CLICKS, demo.REAL_CLICKS]  # every click twice


def test_a_restarted_transactional_application_is_read_once_by_read_committed(real):
    old = numbers(line_starting(real, "a transactional producer"))
    new = numbers(line_starting(real, "restarted with the same transactional.id"))
    assert new[0] == old[0] and new[1] > old[1]  # the same producer id, a higher epoch: the old instance fenced
    assert numbers(line_starting(real, "a read_committed consumer reads")) == [
        demo.REAL_CLICKS,
        demo.REAL_CLICKS,
        2 * demo.REAL_CLICKS,
    ]  # once each; the aborted copies stay in the log


def test_without_confluent_kafka_the_real_clients_part_is_one_line(tmp_path, monkeypatch):
    real_find_spec = demo.importlib.util.find_spec
    monkeypatch.setattr(
        demo.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "confluent_kafka" else real_find_spec(name, *a),
    )
    assert list(demo.real_clients(str(tmp_path))) == [
        "With real clients: skipped, confluent-kafka is not installed (pip install -e '.[test]' installs it)"
    ]
