"""The group coordinator (classic protocol) on its own, then on the wire.

The coordinator tests drive :class:`~dedup.coordinator.GroupCoordinator` with plain values on
a :class:`~dedup.coordinator.ManualTimer` (clock and timers moved by hand, as Kafka's
GroupCoordinatorTest does with MockTime), over a real ``__consumer_offsets`` on disk: the
state machine, KIP-394 and KIP-345, session and rebalance timeouts, every error code, the
record formats, reloading after a restart and coordinator failover. The wire tests frame
requests by hand (kio bodies) against a ServerThread: each API in its versions, and bad input
that must get Kafka's error code while the group goes on.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import socket
import struct

import pytest
from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

from dedup.coordinator import GroupCoordinator, GroupState, ManualTimer, java_string_hash, partition_for
from dedup.coordinator.offsets import (
    GroupMetadataValue,
    MemberMetadataValue,
    OffsetCommitValue,
    decode_group_metadata_value,
    decode_key,
    decode_offset_commit_value,
    encode_group_metadata_key,
    encode_group_metadata_value,
    encode_offset_commit_key,
    encode_offset_commit_value,
)
from dedup.server import ServerThread
from dedup.server.topics import OffsetsTopic, Topics
from dedup.server.wire import ApiKey, build

SESSION = 10_000
REBALANCE = 30_000
PROTOCOLS = [("range", b"\x00\x01\x00\x00\x00\x01\x00\x02t1\xff\xff\xff\xff"), ("roundrobin", b"rr")]


# --- placement and record formats -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    # Known Java values; "Aa" and "BB" collide in Java; the last is over UTF-16 code units (a surrogate pair).
    [("", 0), ("hello", 99162322), ("Aa", 2112), ("BB", 2112), ("polygenelubricants", -(1 << 31)),
     ("é€😀", ((233 * 31 + 0x20AC) * 31 + 0xD83D) * 31 + 0xDE00)],
)
def test_java_string_hash_is_java_string_hashcode(text, code):
    assert java_string_hash(text) == code


def test_the_coordinator_partition_is_kafkas_utils_abs_of_the_hash_modulo_partitions():
    assert partition_for("hello", 50) == 99162322 % 50
    assert partition_for("polygenelubricants", 50) == 0  # Utils.abs(Integer.MIN_VALUE) is 0
    assert partition_for("a", 50) == 97 % 50
    # Java's "billing".hashCode() is negative: sum(c * 31^(n-1-i)) wraps past 2^31.
    code = sum(ord(c) * 31 ** (6 - i) for i, c in enumerate("billing")) % (1 << 32) - (1 << 32)
    assert java_string_hash("billing") == code < 0
    assert partition_for("billing", 7) == -code % 7


def test_offsets_records_have_kafkas_layout():
    assert encode_offset_commit_key("g", "t", 1) == b"\x00\x01" b"\x00\x01g" b"\x00\x01t" b"\x00\x00\x00\x01"
    assert encode_group_metadata_key("g") == b"\x00\x02\x00\x01g"
    value = OffsetCommitValue(offset=42, leader_epoch=3, metadata="m", commit_timestamp=7)
    assert encode_offset_commit_value(value) == (
        b"\x00\x03" + struct.pack(">q", 42) + struct.pack(">i", 3) + b"\x00\x01m" + struct.pack(">q", 7)
    )
    assert decode_offset_commit_value(encode_offset_commit_value(value)) == value
    # v1 (Kafka 2.0 wrote it, with an expire timestamp after the commit timestamp) reads too.
    v1 = b"\x00\x01" + struct.pack(">q", 5) + b"\x00\x00" + struct.pack(">qq", 8, 9)
    assert decode_offset_commit_value(v1) == OffsetCommitValue(5, -1, "", 8, 9)
    member = MemberMetadataValue("m-1", "i-1", "c", "/h", 30000, 10000, b"sub", b"asg")
    group = GroupMetadataValue("consumer", 4, "range", "m-1", 123, [member])
    data = encode_group_metadata_value(group)
    assert data[:2] == b"\x00\x03" and data[2:12] == b"\x00\x08consumer"
    assert decode_group_metadata_value(data) == group
    assert decode_key(encode_offset_commit_key("g", "t", 1)) == ("g", "t", 1)
    assert decode_key(encode_group_metadata_key("g")) == ("g", None, -1)


# --- the state machine ----------------------------------------------------------------------------


class Harness:
    """A coordinator over ``__consumer_offsets`` in ``directory`` (3 brokers, 3 partitions) on a
    manual clock; ``coordinator_for(group)`` is the broker to ask."""

    def __init__(self, directory, *, initial_delay: int = 0, **options) -> None:
        self.directory = directory
        self.timer = ManualTimer()
        self.topics = Topics(str(directory), brokers=3, cluster_options={"min_insync_replicas": 2})
        self.stopped: set[int] = set()
        self.offsets = OffsetsTopic(self.topics, num_partitions=3, replication_factor=3,
                                    live_brokers=lambda: [b for b in range(3) if b not in self.stopped])  # fmt: skip
        options.setdefault("group_min_session_timeout_ms", 1000)
        self.coordinator = GroupCoordinator(self.offsets, clock=self.timer.now, timer=self.timer,
                                            group_initial_rebalance_delay_ms=initial_delay, **options)  # fmt: skip

    def broker(self, group: str = "g") -> int:
        broker = self.coordinator.coordinator_id(group)
        assert broker is not None
        return broker

    def join(self, member_id: str = "", group: str = "g", *, instance=None, protocols=None, protocol_type="consumer",
             session=SESSION, version_4=True):  # fmt: skip
        return self.coordinator.join_group(
            self.broker(group), group, member_id, instance, protocol_type,
            PROTOCOLS if protocols is None else protocols,
            session_timeout_ms=session, rebalance_timeout_ms=REBALANCE, client_id="client", client_host="/h",
            require_known_member_id=version_4,
        )  # fmt: skip

    def sync(self, member_id: str, generation: int, assignments=None, group: str = "g", instance=None):
        return self.coordinator.sync_group(self.broker(group), group, generation, member_id, instance,
                                           assignments or {})  # fmt: skip

    def heartbeat(self, member_id: str, generation: int, group: str = "g", instance=None):
        return self.coordinator.heartbeat(self.broker(group), group, generation, member_id, instance)

    def commit(self, member_id: str, generation: int, offsets, group: str = "g"):
        return self.coordinator.commit_offsets(self.broker(group), group, generation, member_id, None, offsets)

    def group(self, group: str = "g"):
        return self.coordinator.groups[group]

    def stop_broker(self, broker_id: int) -> None:
        """A broker fails, as KafkaServer.stop_broker does it: its replicas stop, then the
        coordinator follows the leaders."""
        self.stopped.add(broker_id)
        for cluster in self.topics.clusters():
            if broker_id in cluster.replicas:
                cluster.stop_broker(broker_id)
        self.coordinator.leadership_changed()

    def start_broker(self, broker_id: int) -> None:
        self.stopped.discard(broker_id)
        for cluster in self.topics.clusters():
            if broker_id in cluster.replicas:
                cluster.start_broker(broker_id)
        self.coordinator.leadership_changed()

    def close(self) -> None:
        self.coordinator.close()
        self.topics.close()


def run(test):
    """Run ``test()`` (a coroutine function) on an event loop (the futures need one), bounded:
    a JoinGroup that never completes fails the test instead of hanging it."""
    return asyncio.run(asyncio.wait_for(test(), 20))


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def new_member(h: Harness, group: str = "g", **kwargs) -> str:
    """KIP-394: the first JoinGroup (v4+) without a member id gets MEMBER_ID_REQUIRED and an id."""
    result = await h.join("", group, **kwargs)
    assert result.error == ErrorCode.member_id_required
    assert result.member_id.startswith("client-")
    return result.member_id


async def stable_group(h: Harness, count: int, group: str = "g") -> tuple[list[str], int]:
    """``count`` members joined in one generation, synced, Stable: their ids and the generation."""
    ids = [await new_member(h, group) for _ in range(count)]
    joins = [h.join(member, group) for member in ids]
    h.timer.advance(0)  # the initial delay (0 here) runs out
    results = [await join for join in joins]
    generation = results[0].generation_id
    leader = results[0].leader_id
    assert all(r.error == ErrorCode.none and r.generation_id == generation for r in results)
    assert [len(r.members) for r in results] == [count if r.member_id == leader else 0 for r in results]
    syncs = {m: h.sync(m, generation, {x: x.encode() for x in ids} if m == leader else None, group) for m in ids}
    for member, sync in syncs.items():
        result = await sync
        assert result.error == ErrorCode.none and result.assignment == member.encode()
    assert h.group(group).state is GroupState.STABLE
    return ids, generation


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    h.close()


def test_join_sync_heartbeat_and_offsets_of_one_member(harness):
    async def test():
        [member], generation = await stable_group(harness, 1)
        assert generation == 1
        group = harness.group()
        assert (group.protocol_type, group.protocol_name, group.leader_id) == ("consumer", "range", member)
        assert harness.heartbeat(member, generation) == ErrorCode.none
        assert harness.commit(member, generation, {("t1", 0): (17, 0, "meta")}) == {("t1", 0): ErrorCode.none}
        error, offsets = harness.coordinator.fetch_offsets(harness.broker(), "g", [("t1", 0), ("t1", 1)])
        assert error == ErrorCode.none
        assert [(o.offset, o.metadata) for o in offsets] == [(17, "meta"), (-1, "")]

    run(test)


def test_a_new_member_rebalances_the_group_and_heartbeats_say_so(harness):
    async def test():
        [first], generation = await stable_group(harness, 1)
        second = await new_member(harness)
        joining = harness.join(second)
        assert harness.group().state is GroupState.PREPARING_REBALANCE
        assert harness.heartbeat(first, generation) == ErrorCode.rebalance_in_progress
        # A commit of the current generation is still taken while the group prepares to rebalance.
        assert harness.commit(first, generation, {("t1", 0): (5, -1, None)}) == {("t1", 0): ErrorCode.none}
        rejoin = harness.join(first)
        results = [await joining, await rejoin]
        assert {r.generation_id for r in results} == {generation + 1}
        assert harness.group().state is GroupState.COMPLETING_REBALANCE
        assert harness.commit(first, generation + 1, {("t1", 0): (6, -1, None)}) == {
            ("t1", 0): ErrorCode.rebalance_in_progress
        }
        stale = harness.commit(first, generation, {("t1", 0): (6, -1, None)})
        assert stale == {("t1", 0): ErrorCode.illegal_generation}

    run(test)


def test_the_initial_rebalance_delay_waits_for_more_members(tmp_path):
    h = Harness(tmp_path, initial_delay=3000)

    async def test():
        a, b = await new_member(h), await new_member(h)
        join_a = h.join(a)
        h.timer.advance(2000)
        join_b = h.join(b)  # a new member within the delay: the delay starts again (up to the rebalance timeout)
        h.timer.advance(2000)  # t=4000: the first delay ran out at 3000 with b new, so it waits to 6000
        await settle()
        assert not join_a.done()
        h.timer.advance(2000)
        results = [await join_a, await join_b]
        assert [r.generation_id for r in results] == [1, 1]

    try:
        run(test)
    finally:
        h.close()


def test_session_expiry_removes_a_silent_member_and_the_others_rebalance(harness):
    async def test():
        (a, b), generation = await stable_group(harness, 2)
        for _ in range(4):
            harness.timer.advance(SESSION // 2)
            assert harness.heartbeat(a, generation) in (ErrorCode.none, ErrorCode.rebalance_in_progress)
        assert b not in harness.group().members  # b never heartbeated: gone after its session
        assert harness.group().state is GroupState.PREPARING_REBALANCE
        result = await harness.join(a)  # the only member left rejoins: the rebalance completes at once
        assert (result.error, result.generation_id, result.leader_id) == (ErrorCode.none, generation + 1, a)
        assert harness.heartbeat(b, generation) == ErrorCode.unknown_member_id

    run(test)


def test_members_that_do_not_rejoin_within_the_rebalance_timeout_are_removed(harness):
    async def test():
        (a, b), generation = await stable_group(harness, 2)
        joining = harness.join(a)  # a rejoins (a new subscription, say); b keeps heartbeating but never rejoins
        for _ in range(REBALANCE // 5000 + 1):
            harness.timer.advance(5000)
            harness.heartbeat(b, generation)
        result = await joining
        assert result.error == ErrorCode.none and result.generation_id == generation + 1
        assert list(harness.group().members) == [a]

    run(test)


def test_leave_group_rebalances_and_the_last_member_leaves_an_empty_group(harness):
    async def test():
        (a, b), generation = await stable_group(harness, 2)
        assert harness.coordinator.leave_group(harness.broker(), "g", [(b, None), ("nobody", None)]) == (
            ErrorCode.none, [ErrorCode.none, ErrorCode.unknown_member_id],
        )  # fmt: skip
        result = await harness.join(a)
        assert result.generation_id == generation + 1
        assert harness.coordinator.leave_group(harness.broker(), "g", [(a, None)]) == (ErrorCode.none, [ErrorCode.none])
        # Nobody left to rejoin: the rebalance completes at once with nobody, the group is Empty.
        assert harness.group().state is GroupState.EMPTY
        assert harness.group().generation_id == generation + 2

    run(test)


def test_static_membership_replaces_the_old_member_id_and_fences_it(harness):
    async def test():
        first = harness.join("", instance="host-1")  # a static member needs no MEMBER_ID_REQUIRED
        harness.timer.advance(0)
        first = await first
        assert first.error == ErrorCode.none and first.member_id.startswith("host-1-")
        generation = first.generation_id
        assert (await harness.sync(first.member_id, generation, {first.member_id: b"a"}, instance="host-1")).error == 0
        # The instance restarts and rejoins without its member id: it gets a new one, the old is fenced.
        second = await harness.join("", instance="host-1")
        assert second.error == ErrorCode.none and second.member_id != first.member_id
        assert harness.heartbeat(first.member_id, second.generation_id, instance="host-1") == (
            ErrorCode.fenced_instance_id
        )
        assert (await harness.join(first.member_id, instance="host-1")).error == ErrorCode.fenced_instance_id

    run(test)


def test_members_that_send_no_sync_group_within_the_rebalance_timeout_are_removed(harness):
    """GroupMetadataManager.schedulePendingSync / expirePendingSync: a member of the new
    generation that keeps heartbeating but never sends SyncGroup is removed after the rebalance
    timeout, and the group rebalances without it."""

    async def test():
        ids = [await new_member(harness) for _ in range(2)]
        joins = [harness.join(member) for member in ids]
        harness.timer.advance(0)
        results = [await join for join in joins]
        generation, leader = results[0].generation_id, results[0].leader_id
        silent = next(member for member in ids if member != leader)
        assert (await harness.sync(leader, generation, {m: m.encode() for m in ids})).error == ErrorCode.none
        assert harness.group().state is GroupState.STABLE
        for _ in range(REBALANCE // 5000 - 1):
            harness.timer.advance(5000)
            assert harness.heartbeat(leader, generation) == harness.heartbeat(silent, generation) == ErrorCode.none
        harness.timer.advance(5000)  # the rebalance timeout since the join completed
        assert list(harness.group().members) == [leader]
        assert harness.group().state is GroupState.PREPARING_REBALANCE
        assert harness.heartbeat(leader, generation) == ErrorCode.rebalance_in_progress
        assert harness.heartbeat(silent, generation) == ErrorCode.unknown_member_id
        result = await harness.join(leader)
        assert result.error == ErrorCode.none and result.generation_id == generation + 1
        assert [m for m, _, _ in result.members] == [leader]
        # Everyone synced in this generation: the timer that runs out later removes nobody.
        assert (await harness.sync(leader, generation + 1, {leader: b"all"})).error == ErrorCode.none
        for _ in range(REBALANCE // 5000 + 1):
            harness.timer.advance(5000)
            assert harness.heartbeat(leader, generation + 1) == ErrorCode.none
        assert list(harness.group().members) == [leader] and harness.group().state is GroupState.STABLE

    run(test)


async def static_group(h: Harness) -> tuple[list[str], int, str]:
    """Two static members (instances host-1 and host-2), synced, Stable: ids, generation, leader."""
    joins = [h.join("", instance=f"host-{i}") for i in (1, 2)]
    h.timer.advance(0)
    results = [await join for join in joins]
    ids = [r.member_id for r in results]
    generation, leader = results[0].generation_id, results[0].leader_id
    syncs = [h.sync(m, generation, {x: x.encode() for x in ids} if m == leader else None, instance=f"host-{i}")
             for i, m in zip((1, 2), ids, strict=True)]  # fmt: skip
    assert [(await sync).assignment for sync in syncs] == [m.encode() for m in ids]
    return ids, generation, leader


def test_a_static_member_rejoining_a_stable_group_unchanged_gets_its_place_without_a_rebalance(harness):
    """KIP-345 (GroupMetadataManager.updateStaticMemberThenRebalanceOrCompleteJoin): the instance
    restarts, rejoins without its member id and the same protocols: answered at once in the same
    generation, under a new id, told the old leader; SyncGroup gives it its old assignment; the
    other member goes on, the old id is fenced."""

    async def test():
        ids, generation, leader = await static_group(harness)
        index = next(i for i, m in enumerate(ids) if m != leader)
        instance, old_id = f"host-{index + 1}", ids[index]
        joining = harness.join("", instance=instance)
        await settle()
        assert joining.done(), "the rejoin waited for a rebalance"
        result = joining.result()
        assert (result.error, result.generation_id, result.leader_id, result.members) == (
            ErrorCode.none, generation, leader, [],
        )  # fmt: skip
        assert result.member_id not in (old_id, "") and result.member_id.startswith(instance)
        assert harness.group().state is GroupState.STABLE and harness.group().generation_id == generation
        sync = await harness.sync(result.member_id, generation, instance=instance)
        assert (sync.error, sync.assignment) == (ErrorCode.none, old_id.encode())
        assert harness.heartbeat(leader, generation) == ErrorCode.none
        assert harness.heartbeat(old_id, generation, instance=instance) == ErrorCode.fenced_instance_id
        # The new member id is what a restart of the coordinator finds.
        partition = harness.coordinator.partition_for("g")
        stored = harness.coordinator.store.replay(partition, harness.offsets.partition(partition))
        assert [set(g.members) for g in stored if g.group_id == "g"] == [{leader, result.member_id}]

    run(test)


def test_a_static_leader_rejoining_is_told_to_skip_the_assignment_from_join_group_v9(harness):
    """KIP-814: before JoinGroup v9 the rejoining leader is told the old leader id (so it does
    not compute an assignment); from v9 it is the leader, with the members and skip_assignment."""

    async def test():
        ids, generation, leader = await static_group(harness)
        instance = f"host-{ids.index(leader) + 1}"
        old = await harness.join("", instance=instance)
        assert (old.leader_id, old.members, old.skip_assignment) == (leader, [], False)
        new = await harness.coordinator.join_group(
            harness.broker(), "g", "", instance, "consumer", PROTOCOLS, session_timeout_ms=SESSION,
            rebalance_timeout_ms=REBALANCE, supports_skip_assignment=True,
        )  # fmt: skip
        assert new.error == ErrorCode.none and new.generation_id == generation
        assert new.leader_id == new.member_id and new.skip_assignment
        assert sorted(m for m, _, _ in new.members) == sorted([new.member_id, *[m for m in ids if m != leader]])
        assert harness.group().state is GroupState.STABLE

    run(test)


def test_a_static_member_rejoining_with_a_protocol_that_changes_the_groups_choice_rebalances(harness):
    async def test():
        ids, generation, leader = await static_group(harness)
        joining = harness.join("", instance="host-2", protocols=[("roundrobin", b"rr")])
        await settle()
        assert not joining.done() and harness.group().state is GroupState.PREPARING_REBALANCE
        assert harness.heartbeat(ids[0], generation, instance="host-1") == ErrorCode.rebalance_in_progress
        first = harness.join(ids[0], instance="host-1")
        results = [await first, await joining]
        assert {r.generation_id for r in results} == {generation + 1}
        assert {r.protocol_name for r in results} == {"roundrobin"}

    run(test)


def test_offsets_expire_after_the_retention_and_groups_left_without_offsets_are_removed(tmp_path):
    """KIP-211 (OffsetMetadataManager.cleanupExpiredOffsets, GroupMetadataManager.maybeDeleteGroup):
    every ``offsets.retention.check.interval.ms``, offsets of an Empty group expire a retention
    after it became Empty, a simple (no group management) commit a retention after it was made,
    and a Stable group's offsets only for topics nobody subscribes to; tombstones are written, and
    an Empty group with no offsets left is deleted: gone after a reload as well."""
    h = Harness(tmp_path, offsets_retention_minutes=1, offsets_retention_check_interval_ms=5000)

    def fetched(group: str) -> dict[tuple[str, int], int]:
        error, committed = h.coordinator.fetch_offsets(h.broker(group), group, None)
        assert error == ErrorCode.none
        return {(c.topic, c.partition): c.offset for c in committed}

    async def test():
        (a,), generation = await stable_group(h, 1, "left")
        assert h.commit(a, generation, {("t1", 0): (5, -1, "")}, group="left") == {("t1", 0): ErrorCode.none}
        (s,), stable_generation = await stable_group(h, 1, "stable")
        assert h.commit(s, stable_generation, {("t1", 0): (7, -1, ""), ("gone", 0): (8, -1, "")}, group="stable") == {
            ("t1", 0): ErrorCode.none, ("gone", 0): ErrorCode.none}  # fmt: skip
        assert h.commit("", -1, {("t", 3): (9, -1, "")}, group="solo") == {("t", 3): ErrorCode.none}

        def wait(ms: int) -> None:  # time passes; the members keep heartbeating
            for _ in range(ms // 5000):
                h.timer.advance(5000)
                assert h.heartbeat(s, stable_generation, "stable") == ErrorCode.none
                if a in getattr(h.coordinator.groups.get("left"), "members", ()):
                    assert h.heartbeat(a, generation, "left") == ErrorCode.none

        wait(30_000)
        assert h.coordinator.leave_group(h.broker("left"), "left", [(a, None)]) == (ErrorCode.none, [ErrorCode.none])
        assert h.group("left").state is GroupState.EMPTY
        wait(25_000)  # 55 s after the commits: nothing has expired yet
        assert fetched("solo") == {("t", 3): 9} and fetched("left") == {("t1", 0): 5}
        assert fetched("stable") == {("t1", 0): 7, ("gone", 0): 8}
        wait(5_000)  # a minute after the commits: the simple commit and the unsubscribed topic expire
        assert "solo" not in h.coordinator.groups and fetched("solo") == {}
        assert fetched("stable") == {("t1", 0): 7} and h.group("stable").state is GroupState.STABLE
        assert fetched("left") == {("t1", 0): 5}  # Empty for 30 s only
        wait(30_000)
        assert "left" not in h.coordinator.groups and fetched("left") == {}
        assert fetched("stable") == {("t1", 0): 7}
        # The tombstones are in the log: a new coordinator on the same directory agrees.
        reloaded = GroupCoordinator(h.offsets, clock=h.timer.now, timer=h.timer)
        assert {"left", "solo"}.isdisjoint(reloaded.groups)
        assert reloaded.fetch_offsets(h.broker("stable"), "stable", None)[1][0].offset == 7
        reloaded.close()

    try:
        run(test)
    finally:
        h.close()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"protocol_type": "connect"}, ErrorCode.inconsistent_group_protocol),
        ({"protocols": [("sticky", b"")]}, ErrorCode.inconsistent_group_protocol),
        ({"session": 500}, ErrorCode.invalid_session_timeout),
        ({"session": 1_800_001}, ErrorCode.invalid_session_timeout),
        ({"protocols": [("range", b"x" * 1_048_589)]}, ErrorCode.invalid_request),
        ({"group": ""}, ErrorCode.invalid_group_id),
    ],
)
def test_bad_joins_get_kafkas_error_and_the_group_is_unaffected(harness, change, code):
    async def test():
        (a,), generation = await stable_group(harness, 1)
        group = change.pop("group", "g")
        if group:
            result = await harness.join("", group, **change)
        else:
            result = await harness.coordinator.join_group(0, "", "", None, "consumer", PROTOCOLS,
                                                          session_timeout_ms=SESSION, rebalance_timeout_ms=REBALANCE)
        assert result.error == code
        assert harness.group().state is GroupState.STABLE and list(harness.group().members) == [a]
        assert harness.heartbeat(a, generation) == ErrorCode.none

    run(test)


def test_an_empty_group_takes_any_protocol_but_needs_a_type_and_a_protocol(harness):
    async def test():
        assert (await harness.join("", protocol_type="")).error == ErrorCode.inconsistent_group_protocol
        assert (await harness.join("", protocols=[])).error == ErrorCode.inconsistent_group_protocol
        assert "g" not in harness.coordinator.groups or not harness.group().members

    run(test)


def test_group_max_size_reached(tmp_path):
    h = Harness(tmp_path, group_max_size=2)

    async def test():
        await stable_group(h, 2)
        assert (await h.join("")).error == ErrorCode.group_max_size_reached

    try:
        run(test)
    finally:
        h.close()


def test_sync_and_heartbeat_errors(harness):
    async def test():
        (a, b), generation = await stable_group(harness, 2)
        assert (await harness.sync("stranger", generation)).error == ErrorCode.unknown_member_id
        assert (await harness.sync(a, generation + 5)).error == ErrorCode.illegal_generation
        assert (await harness.sync(a, generation, group="other")).error == ErrorCode.unknown_member_id
        assert harness.heartbeat(a, generation - 1) == ErrorCode.illegal_generation
        assert harness.heartbeat("stranger", generation) == ErrorCode.unknown_member_id
        wrong = (harness.broker() + 1) % 3
        assert harness.coordinator.heartbeat(wrong, "g", generation, a, None) == ErrorCode.not_coordinator
        # The group goes on.
        assert harness.heartbeat(a, generation) == ErrorCode.none and harness.heartbeat(b, generation) == 0

    run(test)


def test_commit_errors(harness):
    async def test():
        (a,), generation = await stable_group(harness, 1)
        assert harness.commit(a, generation - 1, {("t", 0): (1, -1, "")}) == {("t", 0): ErrorCode.illegal_generation}
        assert harness.commit("x", generation, {("t", 0): (1, -1, "")}) == {("t", 0): ErrorCode.unknown_member_id}
        # A simple commit (no member, no generation) is refused while the group has members.
        assert harness.commit("", -1, {("t", 0): (1, -1, "")}) == {("t", 0): ErrorCode.unknown_member_id}
        big = harness.commit(a, generation, {("t", 0): (1, -1, "m" * 4097), ("t", 1): (2, -1, "m" * 4096)})
        assert big == {("t", 0): ErrorCode.offset_metadata_too_large, ("t", 1): ErrorCode.none}
        # A group the coordinator does not know: simple commits create it, members' are refused.
        assert harness.commit("", -1, {("t", 0): (9, -1, "")}, group="solo") == {("t", 0): ErrorCode.none}
        assert harness.commit("m", 3, {("t", 0): (9, -1, "")}, group="new") == {("t", 0): ErrorCode.illegal_generation}
        assert harness.coordinator.fetch_offsets(harness.broker("solo"), "solo", None)[1][0].offset == 9

    run(test)


def test_list_describe_delete_groups_and_offset_delete(harness):
    async def test():
        (a,), generation = await stable_group(harness, 1)
        assert harness.commit(a, generation, {("t1", 0): (3, -1, ""), ("other", 0): (4, -1, "")})
        broker = harness.broker()
        assert ("g", "consumer", "Stable") in harness.coordinator.list_groups(broker)
        assert harness.coordinator.list_groups(broker, ["empty"]) == []
        error, summary = harness.coordinator.describe_group(broker, "g")
        assert (error, summary["group_state"], summary["protocol_data"]) == (ErrorCode.none, "Stable", "range")
        assert summary["members"][0]["member_assignment"] == a.encode()
        assert harness.coordinator.describe_group(harness.broker("nope"), "nope")[1]["group_state"] == "Dead"
        assert harness.coordinator.delete_groups(broker, ["g"]) == {"g": ErrorCode.non_empty_group}
        # t1 is in the member's subscription (PROTOCOLS' range metadata): its offsets stay.
        error, results = harness.coordinator.delete_offsets(broker, "g", [("t1", 0), ("other", 0)])
        assert results == {("t1", 0): ErrorCode.group_subscribed_to_topic, ("other", 0): ErrorCode.none}
        assert [o.topic for o in harness.coordinator.fetch_offsets(broker, "g", None)[1]] == ["t1"]
        harness.coordinator.leave_group(broker, "g", [(a, None)])
        await settle()
        assert harness.group().state is GroupState.EMPTY
        assert harness.coordinator.delete_groups(broker, ["g"]) == {"g": ErrorCode.none}
        assert harness.coordinator.delete_groups(broker, ["g"]) == {"g": ErrorCode.group_id_not_found}
        assert harness.coordinator.delete_offsets(broker, "g", [("t1", 0)])[0] == ErrorCode.group_id_not_found

    run(test)


# --- durability -----------------------------------------------------------------------------------


def test_offsets_and_the_group_are_reloaded_by_a_new_coordinator_on_the_same_directory(tmp_path):
    first = Harness(tmp_path)

    async def build_state():
        (a, b), generation = await stable_group(first, 2)
        first.commit(a, generation, {("t1", 0): (11, 2, "x"), ("t2", 0): (12, -1, "")})
        first.commit("", -1, {("t3", 0): (13, -1, "")}, group="simple")
        first.commit("", -1, {("t3", 0): (14, -1, "")}, group="deleted")
        first.coordinator.delete_groups(first.broker("deleted"), ["deleted"])
        return a, b, generation

    a, b, generation = run(build_state)
    first.close()
    second = Harness(tmp_path)  # a restart: the partitions on disk are loaded at start

    async def check():
        _, offsets = second.coordinator.fetch_offsets(second.broker(), "g", None)
        assert [(o.topic, o.offset, o.leader_epoch, o.metadata) for o in offsets] == [
            ("t1", 11, 2, "x"), ("t2", 12, -1, "")
        ]  # fmt: skip
        group = second.group()
        assert (group.state, group.generation_id, set(group.members)) == (GroupState.STABLE, generation, {a, b})
        assert group.members[a].assignment == a.encode()
        assert second.heartbeat(a, generation) == ErrorCode.none
        assert second.coordinator.fetch_offsets(second.broker("simple"), "simple", None)[1][0].offset == 13
        assert "deleted" not in second.coordinator.groups

    try:
        run(check)
    finally:
        second.close()


def test_failover_moves_the_group_to_the_new_leader_with_its_offsets(harness):
    async def test():
        (a,), generation = await stable_group(harness, 1)
        harness.commit(a, generation, {("t1", 0): (21, -1, "")})
        old = harness.broker()
        harness.stop_broker(old)
        new = harness.broker()
        assert new != old
        assert harness.coordinator.heartbeat(old, "g", generation, a, None) == ErrorCode.not_coordinator
        assert harness.coordinator.heartbeat(new, "g", generation, a, None) == ErrorCode.none
        assert harness.coordinator.fetch_offsets(new, "g", None)[1][0].offset == 21
        harness.start_broker(old)
        assert harness.coordinator.fetch_offsets(harness.broker(), "g", None)[1][0].offset == 21

    run(test)


# --- on the wire ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerThread(tmp_path_factory.mktemp("serve"), brokers=3, topics=["t1"], group_initial_rebalance_delay_ms=0,
                      group_min_session_timeout_ms=1000) as running:  # fmt: skip
        yield running


def call(server: ServerThread, broker: int, api_key: int, version: int, body: dict, source: str | None = None):
    """One request to ``broker`` on a new connection (from the loopback address ``source`` if
    given); the parsed response."""
    schema = load_request_schema(api_key, version)
    buffer = io.BytesIO()
    header = schema.__header_schema__
    entity_writer(header)(buffer, header(request_api_key=api_key, request_api_version=version, correlation_id=7,
                                         client_id="wire"))  # fmt: skip
    entity_writer(schema)(buffer, build(schema, body))
    data = buffer.getvalue()
    address = None if source is None else (source, 0)
    with socket.create_connection(("127.0.0.1", server.server.ports[broker]), timeout=15,
                                  source_address=address) as sock:  # fmt: skip
        sock.sendall(struct.pack(">i", len(data)) + data)
        size = struct.unpack(">i", _exactly(sock, 4))[0]
        frame = _exactly(sock, size)
    response_schema = load_response_schema(api_key, version)
    head, used = entity_reader(response_schema.__header_schema__)(frame, 0)
    assert head.correlation_id == 7
    response, rest = entity_reader(response_schema)(frame, used)
    assert used + rest == len(frame)
    return response


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


def coordinator_of(server: ServerThread, group: str) -> int:
    return server.run(server.server.groups.coordinator_id, group)


def ms(value: int) -> datetime.timedelta:
    return datetime.timedelta(milliseconds=value)


def join_body(group: str, member_id: str = "", protocol_type: str = "consumer", protocols=None) -> dict:
    protocols = PROTOCOLS if protocols is None else protocols
    return {"group_id": group, "session_timeout": ms(SESSION), "rebalance_timeout": ms(REBALANCE),
            "member_id": member_id, "group_instance_id": None, "protocol_type": protocol_type,
            "protocols": [{"name": n, "metadata": m} for n, m in protocols], "reason": None}  # fmt: skip


def wire_member(server: ServerThread, group: str) -> tuple[str, int]:
    """A member of ``group`` (JoinGroup v5 twice for KIP-394, SyncGroup v5): its id and generation."""
    broker = coordinator_of(server, group)
    first = call(server, broker, ApiKey.JOIN_GROUP, 5, join_body(group))
    assert first.error_code == ErrorCode.member_id_required
    joined = call(server, broker, ApiKey.JOIN_GROUP, 5, join_body(group, first.member_id))
    assert joined.error_code == ErrorCode.none and joined.leader == joined.member_id
    synced = call(server, broker, ApiKey.SYNC_GROUP, 5, {
        "group_id": group, "generation_id": joined.generation_id, "member_id": joined.member_id,
        "group_instance_id": None, "protocol_type": "consumer", "protocol_name": "range",
        "assignments": [{"member_id": joined.member_id, "assignment": b"mine"}],
    })  # fmt: skip
    assert (synced.error_code, synced.assignment) == (ErrorCode.none, b"mine")
    return joined.member_id, joined.generation_id


def heartbeat_error(server: ServerThread, group: str, member_id: str, generation: int) -> int:
    body = {"group_id": group, "generation_id": generation, "member_id": member_id, "group_instance_id": None}
    return call(server, coordinator_of(server, group), ApiKey.HEARTBEAT, 4, body).error_code


@pytest.mark.parametrize("version", range(5))
def test_find_coordinator_names_the_offsets_partition_leader(server, version):
    groups = ["alpha", "beta", "gamma"]
    body = {"key": groups[0], "key_type": 0, "coordinator_keys": groups}
    response = call(server, 1, ApiKey.FIND_COORDINATOR, version, body)
    answers = response.coordinators if version >= 4 else [response]
    assert len(answers) == (3 if version >= 4 else 1)
    for group, answer in zip(groups, answers, strict=False):
        leader = coordinator_of(server, group)
        assert (answer.error_code, answer.node_id, answer.port) == (0, leader, server.server.ports[leader])


def test_find_coordinator_for_a_transactional_id_is_its_transaction_state_partitions_leader(server):
    response = call(server, 0, ApiKey.FIND_COORDINATOR, 3, {"key": "tx", "key_type": 1})
    coordinator = server.run(server.server.transactions.coordinator_id, "tx")
    assert (response.error_code, response.node_id, response.port) == (0, coordinator, server.server.ports[coordinator])
    assert "__transaction_state" in server.run(list, server.server.topics)


@pytest.mark.parametrize("version", range(10))
def test_join_group_in_every_version(server, version):
    group = f"join-v{version}"
    broker = coordinator_of(server, group)
    response = call(server, broker, ApiKey.JOIN_GROUP, version, join_body(group))
    if version >= 4:  # KIP-394
        assert response.error_code == ErrorCode.member_id_required and response.member_id
        response = call(server, broker, ApiKey.JOIN_GROUP, version, join_body(group, response.member_id))
    assert (response.error_code, response.generation_id) == (ErrorCode.none, 1)
    assert response.protocol_name == "range" and [m.member_id for m in response.members] == [response.member_id]
    wrong = (broker + 1) % 3
    assert call(server, wrong, ApiKey.JOIN_GROUP, version, join_body(group)).error_code == ErrorCode.not_coordinator


def test_bad_group_requests_on_the_wire_get_kafkas_codes_and_the_group_goes_on(server):
    group = "wire-bad"
    member, generation = wire_member(server, group)
    broker = coordinator_of(server, group)
    # JoinGroup with another protocol type, or no protocol in common with the group.
    assert call(server, broker, ApiKey.JOIN_GROUP, 5, join_body(group, protocol_type="connect")).error_code == 23
    assert call(server, broker, ApiKey.JOIN_GROUP, 5, join_body(group, protocols=[("sticky", b"")])).error_code == 23
    # An oversized member metadata (over message.max.bytes) is refused before it is held.
    huge = join_body(group, protocols=[("range", b"x" * 1_100_000)])
    assert call(server, broker, ApiKey.JOIN_GROUP, 5, huge).error_code == ErrorCode.invalid_request
    # OffsetCommit with a stale generation; SyncGroup from a non-member.
    partition = {"partition_index": 0, "committed_offset": 5, "committed_leader_epoch": -1, "committed_metadata": ""}
    commit = {"group_id": group, "generation_id_or_member_epoch": generation - 1, "member_id": member,
              "group_instance_id": None, "topics": [{"name": "t1", "partitions": [partition]}]}  # fmt: skip
    stale = call(server, broker, ApiKey.OFFSET_COMMIT, 8, commit)
    assert stale.topics[0].partitions[0].error_code == ErrorCode.illegal_generation
    sync = {"group_id": group, "generation_id": generation, "member_id": "stranger", "group_instance_id": None,
            "protocol_type": "consumer", "protocol_name": "range", "assignments": []}  # fmt: skip
    assert call(server, broker, ApiKey.SYNC_GROUP, 5, sync).error_code == ErrorCode.unknown_member_id
    # The group is untouched: the member heartbeats and commits in its generation.
    assert heartbeat_error(server, group, member, generation) == ErrorCode.none
    good = call(server, broker, ApiKey.OFFSET_COMMIT, 8, commit | {"generation_id_or_member_epoch": generation})
    assert good.topics[0].partitions[0].error_code == ErrorCode.none


@pytest.mark.parametrize("version", range(2, 10))
def test_offset_commit_and_fetch_in_every_version(server, version):
    group = f"offsets-v{version}"
    broker = coordinator_of(server, group)
    partitions = [{"partition_index": 0, "committed_offset": 40 + version, "committed_leader_epoch": 1,
                   "committed_metadata": "m", "commit_timestamp": -1}]  # fmt: skip
    body = {"group_id": group, "generation_id": -1, "generation_id_or_member_epoch": -1, "member_id": "",
            "group_instance_id": None, "retention_time": ms(-1),
            "topics": [{"name": "t1", "partitions": partitions}]}  # fmt: skip
    assert call(server, broker, ApiKey.OFFSET_COMMIT, version, body).topics[0].partitions[0].error_code == 0
    topics = [{"name": "t1", "partition_indexes": [0, 1]}]
    fetch_version = min(version, 9)
    if fetch_version >= 8:
        fetch = {"groups": [{"group_id": group, "member_id": None, "member_epoch": -1, "topics": topics}],
                 "require_stable": False}  # fmt: skip
        [answer] = call(server, broker, ApiKey.OFFSET_FETCH, fetch_version, fetch).groups
    else:
        answer = call(server, broker, ApiKey.OFFSET_FETCH, fetch_version, {"group_id": group, "topics": topics,
                                                                           "require_stable": False})  # fmt: skip
    [topic] = answer.topics
    assert [(p.partition_index, p.committed_offset, p.metadata) for p in topic.partitions] == [
        (0, 40 + version, "m"), (1, -1, "")
    ]  # fmt: skip


def test_list_describe_leave_and_delete_on_the_wire(server):
    group = "wire-admin"
    member, generation = wire_member(server, group)
    broker = coordinator_of(server, group)
    listed = call(server, broker, ApiKey.LIST_GROUPS, 4, {"states_filter": ["Stable"]})
    assert (group, "consumer", "Stable") in [(g.group_id, g.protocol_type, g.group_state) for g in listed.groups]
    other = (broker + 1) % 3
    assert group not in [g.group_id for g in call(server, other, ApiKey.LIST_GROUPS, 0, {}).groups]
    describe = {"groups": [group], "include_authorized_operations": False}
    [described] = call(server, broker, ApiKey.DESCRIBE_GROUPS, 5, describe).groups
    assert (described.group_state, described.protocol_data, described.members[0].member_id) == (
        "Stable", "range", member
    )  # fmt: skip
    deleted = call(server, broker, ApiKey.DELETE_GROUPS, 2, {"groups_names": [group]})
    assert deleted.results[0].error_code == ErrorCode.non_empty_group
    leaving = [{"member_id": member, "group_instance_id": None, "reason": "done"},
               {"member_id": "x", "group_instance_id": None, "reason": None}]  # fmt: skip
    left = call(server, broker, ApiKey.LEAVE_GROUP, 5, {"group_id": group, "members": leaving})
    assert (left.error_code, [m.error_code for m in left.members]) == (0, [0, ErrorCode.unknown_member_id])
    assert call(server, broker, ApiKey.LEAVE_GROUP, 0, {"group_id": group, "member_id": member}).error_code == 25
    offset_delete = {"group_id": group, "topics": [{"name": "t1", "partitions": [{"partition_index": 0}]}]}
    assert call(server, broker, ApiKey.OFFSET_DELETE, 0, offset_delete).error_code == ErrorCode.none
    assert call(server, broker, ApiKey.DELETE_GROUPS, 0, {"groups_names": [group]}).results[0].error_code == 0
    assert call(server, broker, ApiKey.OFFSET_DELETE, 0, offset_delete).error_code == ErrorCode.group_id_not_found


def test_a_members_client_host_is_the_address_it_connects_from(server):
    """Kafka's JoinGroup records ``RequestContext.clientAddress`` ("/" and the peer's address),
    which DescribeGroups shows: here a client on 127.0.0.2 (loopback) of a broker on 127.0.0.1."""
    group, source = "wire-host", "127.0.0.2"
    broker = coordinator_of(server, group)
    try:
        first = call(server, broker, ApiKey.JOIN_GROUP, 5, join_body(group), source=source)
    except OSError as error:
        pytest.skip(f"no second loopback address here: {error}")
    joined = call(server, broker, ApiKey.JOIN_GROUP, 5, join_body(group, first.member_id), source=source)
    assert joined.error_code == ErrorCode.none
    synced = call(server, broker, ApiKey.SYNC_GROUP, 5, {
        "group_id": group, "generation_id": joined.generation_id, "member_id": joined.member_id,
        "group_instance_id": None, "protocol_type": "consumer", "protocol_name": "range",
        "assignments": [{"member_id": joined.member_id, "assignment": b"mine"}],
    })  # fmt: skip
    assert synced.error_code == ErrorCode.none
    [described] = call(server, broker, ApiKey.DESCRIBE_GROUPS, 5, {"groups": [group],
                                                                   "include_authorized_operations": False}).groups
    assert [(m.member_id, m.client_id, m.client_host) for m in described.members] == [
        (joined.member_id, "wire", "/127.0.0.2")
    ]


def test_a_stopped_coordinator_moves_the_group_and_the_old_broker_says_not_coordinator(tmp_path):
    with ServerThread(tmp_path, brokers=3, topics=["t1"], group_initial_rebalance_delay_ms=0,
                      group_min_session_timeout_ms=1000) as running:  # fmt: skip
        member, generation = wire_member(running, "moving")
        old = coordinator_of(running, "moving")
        running.stop_broker(old)
        new = coordinator_of(running, "moving")
        assert new != old
        found = call(running, new, ApiKey.FIND_COORDINATOR, 3, {"key": "moving", "key_type": 0})
        assert found.node_id == new
        # The group was reloaded from the new leader's replica: the member goes on in its generation.
        assert heartbeat_error(running, "moving", member, generation) == ErrorCode.none
        running.start_broker(old)
        assert call(running, old, ApiKey.HEARTBEAT, 4, {"group_id": "moving", "generation_id": generation,
                                                        "member_id": member, "group_instance_id": None}).error_code in (
            ErrorCode.none, ErrorCode.not_coordinator
        )  # fmt: skip
