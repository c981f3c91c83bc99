"""The plan of a simulation run: what one seed fixes before anything runs (the cluster's
settings and the list of actions, faults included), and the simulation's constants.

Used by :mod:`dedup.tools.simulate_run` (which carries the actions out) and
:mod:`dedup.tools.simulate` (the runs and the command line); a plan is data only, so any
subset of it is itself a plan (what shrinking a failing run needs).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

START_MS = 1_767_225_600_000
EXPIRATION_MS = 600_000  # producer.id.expiration.ms in the simulation (10 minutes)
#: Kafka's delivery.timeout.ms default: no copy of a request outlives it (the client has given
#: up on the batch), so stale duplicates come from the last 2 minutes only. (A copy older than
#: producer.id.expiration.ms would be taken as new: Kafka forgets expired producers; its
#: defaults keep the two 12 hours or more apart.)
DELIVERY_TIMEOUT_MS = 120_000
SEGMENT_BYTES = 2048  # small segments: rolls, snapshots and recovery of several segments
STEPS = 150
FLUSH_POLLS = 400  # polls a producer gets to deliver at the end, or before a commit

# Damage done to a stopped broker's files before it restarts (bits of Action.detail).
TORN_TAIL, DELETE_SNAPSHOT, TRUNCATE_SNAPSHOT, FLIP_SNAPSHOT = 1, 2, 4, 8


class Action(NamedTuple):
    """One step of a plan. ``target`` is a producer index or a broker id; an action whose
    target does not fit the state when it runs (restarting a live broker) does nothing, so
    any subset of a plan is itself a plan (what shrinking needs)."""

    kind: str
    target: int = 0
    detail: int = 0

    def __str__(self) -> str:
        return f"{self.kind}({self.target}, {self.detail})"


@dataclass
class Settings:
    brokers: int
    producers: int
    stable: int  # the first `stable` producers have a transactional id
    min_insync_replicas: int
    unclean: bool
    drop_request: float
    drop_response: float


def settings_for(seed: int, unclean_share: float) -> Settings:
    rng = random.Random(f"settings-{seed}")
    producers = rng.randint(1, 4)
    return Settings(
        brokers=3,
        producers=producers,
        stable=rng.randint(0, min(2, producers)),
        min_insync_replicas=rng.choice([1, 2]),
        unclean=rng.random() < unclean_share,
        drop_request=rng.choice([0.0, 0.05, 0.15]),
        drop_response=rng.choice([0.0, 0.1, 0.25]),
    )


def plan(seed: int, settings: Settings, steps: int = STEPS, *, coordinator: bool = True) -> list[Action]:
    """The actions of seed ``seed``'s run (``coordinator``: with the transaction coordinator's
    faults when the run has transactional producers; without, the plan from before Kafka's
    coordinator, which regression seeds found by then replay)."""
    rng = random.Random(f"plan-{seed}")
    kinds = [
        ("poll", 50), ("send", 22), ("crash", 3), ("restart", 5), ("clean_restart", 1), ("duplicate", 3),
        ("clock_jump", 1), ("disk_full", 1.5), ("commit", 3), ("app_restart", 1), ("identity_restart", 1),
    ]  # fmt: skip
    names = [name for name, _ in kinds]
    weights = [weight for _, weight in kinds]
    actions = []
    for _ in range(steps):
        kind = rng.choices(names, weights)[0]
        if kind in ("poll", "send", "duplicate", "commit", "app_restart", "identity_restart"):
            target = rng.randrange(settings.producers)
        else:
            target = rng.randrange(settings.brokers)
        detail = 0
        if kind == "send":
            detail = rng.randint(1, 3)  # records
        elif kind == "poll":
            detail = rng.randint(1, 6)  # polls
        elif kind == "restart":
            detail = sum(bit for bit in (TORN_TAIL, DELETE_SNAPSHOT, TRUNCATE_SNAPSHOT, FLIP_SNAPSHOT)
                         if rng.random() < 0.2)  # fmt: skip
        elif kind == "duplicate":
            detail = rng.randrange(1 << 16)  # which earlier batch
        elif kind == "disk_full":
            detail = rng.randint(0, 200)  # bytes the leader's segment may still grow
        elif kind == "commit":
            detail = int(rng.random() < 0.3)  # 1: abort instead
        elif kind == "crash":
            detail = int(rng.random() < 0.7)  # 1: the leader, else broker `target`
        actions.append(Action(kind, target, detail))
    if settings.stable and coordinator:
        _add_coordinator_faults(seed, settings, actions)
    return actions


#: The transaction coordinator's faults and more transaction ends, added to runs with
#: transactional producers: per action of the plan, the chance of one of these before it, and
#: their weights.
COORDINATOR_ACTION_RATE = 0.1
COORDINATOR_ACTIONS = [("commit", 5), ("coordinator_crash", 3), ("coordinator_failover", 2),
                       ("coordinator_restart", 1), ("txn_timeout", 1), ("zombie", 2)]  # fmt: skip


def _add_coordinator_faults(seed: int, settings: Settings, actions: list[Action]) -> None:
    """Insert the coordinator's faults at positions of their own random stream (the actions
    of the base plan are those of a plan without them)."""
    rng = random.Random(f"plan-txn-{seed}")
    names = [name for name, _ in COORDINATOR_ACTIONS]
    weights = [weight for _, weight in COORDINATOR_ACTIONS]
    for position in range(len(actions), -1, -1):
        if rng.random() >= COORDINATOR_ACTION_RATE:
            continue
        kind = rng.choices(names, weights)[0]
        target, detail = rng.randrange(settings.stable), 0
        if kind == "coordinator_crash":
            detail = rng.randint(0, 1)  # markers written before the crash (0: right after the prepare record)
        elif kind == "zombie":
            detail = rng.randint(1, 6)  # polls
        elif kind == "commit":
            detail = int(rng.random() < 0.3)  # 1: abort instead
        actions.insert(position, Action(kind, target, detail))
