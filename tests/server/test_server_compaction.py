"""``__consumer_offsets`` is a compacted log (issue 14 item 3): the group coordinator reloads the
same groups and committed offsets from a cleaned offsets topic as from the uncleaned one, and the
topic's size stops growing under repeated commits of the same partitions (without the cleaner it
grows with every commit)."""

from __future__ import annotations

from test_server_groups import Harness, run, stable_group

from dedup.coordinator.store import OFFSETS_TOPIC

SEGMENT_BYTES = 2048


def offsets_clusters(h: Harness):
    return [c for c in h.topics.clusters() if c.topic == OFFSETS_TOPIC]


def loaded(h: Harness):
    """What the coordinator would load from each offsets partition: every group's state."""
    out = {}
    for cluster in offsets_clusters(h):
        for group in h.coordinator.store.replay(cluster.partition, cluster):
            out[group.group_id] = (
                group.state, group.generation_id, group.protocol_name, group.leader_id,
                sorted(group.members), dict(group.offsets),
            )  # fmt: skip
    return out


def size(h: Harness) -> int:
    return sum(b.log.size_bytes for c in offsets_clusters(h) for b in c.brokers if b.log is not None)


def harness(directory) -> Harness:
    h = Harness(directory)
    h.topics.cluster_options["segment_bytes"] = SEGMENT_BYTES
    return h


def test_the_coordinator_reloads_the_same_offsets_from_a_cleaned_offsets_topic(tmp_path):
    first = harness(tmp_path)

    async def build():
        (a, b), generation = await stable_group(first, 2)
        for round_ in range(60):
            offsets = {("t1", p): (round_ * 10 + p, 0, f"m{round_}") for p in range(3)}
            assert set(first.commit(a, generation, offsets).values()) == {0}
            first.commit("", -1, {("t3", 0): (round_, -1, "")}, group="simple")
            first.commit("", -1, {("t4", round_ % 5): (round_, -1, "")}, group="deleted")
        first.coordinator.delete_groups(first.broker("deleted"), ["deleted"])
        first.coordinator.delete_offsets(first.broker("simple"), "simple", [("t3", 0)])

    run(build)
    before = loaded(first)
    assert "deleted" not in before and before["simple"][5] == {}
    assert before["g"][5][("t1", 2)].offset == 592
    sizes = size(first)
    stats = [s for cluster in offsets_clusters(first) for s in cluster.clean(now_ms=first.timer.now())]
    assert any(s is not None and s.records_retained < s.records_read for s in stats)
    assert size(first) < sizes / 2
    assert loaded(first) == before
    first.close()
    second = Harness(tmp_path)  # a restart on the cleaned directory
    try:
        assert loaded(second) == before
        _, offsets = second.coordinator.fetch_offsets(second.broker(), "g", None)
        assert [(o.topic, o.partition, o.offset) for o in offsets] == [("t1", p, 590 + p) for p in range(3)]
        assert "deleted" not in second.coordinator.groups
    finally:
        second.close()


def commit_rounds(h: Harness, rounds: int, *, clean: bool) -> list[int]:
    """Commit the same three partitions ``rounds`` times; the offsets topic's size every 50."""
    sizes = []

    async def commits():
        [member], generation = await stable_group(h, 1)
        for round_ in range(1, rounds + 1):
            h.commit(member, generation, {("t1", p): (round_, 0, "") for p in range(3)})
            if clean and round_ % 10 == 0:
                for cluster in offsets_clusters(h):
                    cluster.clean(now_ms=h.timer.now(), min_cleanable_ratio=0.5)
            if round_ % 50 == 0:
                sizes.append(size(h))

    run(commits)
    return sizes


def test_the_offsets_topic_stops_growing_under_repeated_commits_with_the_cleaner(tmp_path):
    h = harness(tmp_path / "cleaned")
    try:
        cleaned = commit_rounds(h, 300, clean=True)
        _, offsets = h.coordinator.fetch_offsets(h.broker(), "g", None)
        assert [o.offset for o in offsets] == [300, 300, 300]
    finally:
        h.close()
    control = harness(tmp_path / "control")
    try:
        grown = commit_rounds(control, 300, clean=False)
    finally:
        control.close()
    # Without the cleaner the size grows with every commit; with it, it stays within a bound
    # (the active segment plus the compacted rest, on each of 3 replicas).
    assert grown[-1] > 5 * grown[0]
    assert max(cleaned[1:]) <= cleaned[0] + 3 * 2 * SEGMENT_BYTES
    assert cleaned[-1] < grown[-1] / 3


# -- the server's periodic cleaner -----------------------------------------------------------------


def serve_commits(tmp_path, *, enable: bool) -> int:
    """A server (cleaner every 20 ms when ``enable``, 1 KiB offsets segments) takes 400 commits of
    the same three partitions; the offsets topic's size on all replicas after they settle."""
    import time

    from dedup.server import ServerThread

    with ServerThread(tmp_path, brokers=3, topics=("t1",), offsets_topic_num_partitions=1,
                      offsets_topic_segment_bytes=1024, log_cleaner_enable=enable,
                      log_cleaner_backoff_ms=20) as server:  # fmt: skip
        coordinator = server.server.groups

        def commit(round_: int) -> None:
            broker = coordinator.coordinator_id("g")
            offsets = {("t1", p): (round_, -1, "") for p in range(3)}
            assert set(coordinator.commit_offsets(broker, "g", -1, "", None, offsets).values()) == {0}

        for round_ in range(1, 401):
            server.run(commit, round_)
        deadline = time.monotonic() + 10
        while enable and time.monotonic() < deadline:  # bounded: a few passes of the cleaner
            time.sleep(0.1)
            sizes = server.run(lambda: [b.log.size_bytes for c in server.server.compacted_partitions()
                                        for b in c.brokers])  # fmt: skip
            if max(sizes) < 2 * 1024:
                break
        topic = server.server.topics.get(OFFSETS_TOPIC)
        assert topic.configs == {"cleanup.policy": "compact", "segment.bytes": "1024"}
        offsets = server.run(lambda: coordinator.fetch_offsets(coordinator.coordinator_id("g"), "g", None)[1])
        assert [o.offset for o in offsets] == [400, 400, 400]
        return server.run(lambda: sum(b.log.size_bytes for c in topic.partitions for b in c.brokers))


def test_the_server_cleans_the_offsets_topic_periodically(tmp_path):
    cleaned = serve_commits(tmp_path / "cleaned", enable=True)
    grown = serve_commits(tmp_path / "control", enable=False)  # log.cleaner.enable=false: it only grows
    assert cleaned < 3 * 2 * 1024 < grown, (cleaned, grown)
