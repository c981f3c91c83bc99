"""The processes tests/log/test_kill9.py kills with SIGKILL.

``python kill9_worker.py`` is a fork server: it imports dedup once, then for each line
``DIRECTORY SEED ACK_FILE`` on stdin forks a worker and prints its pid; for ``reap PID`` it
waits for that (killed) worker and prints ``reaped``. Forking from this single-threaded
process makes a worker start in milliseconds instead of an interpreter start, so the test
can afford hundreds of kills.

A worker recovers the log in DIRECTORY (whatever the last kill left), then first resends, for
each of its producers, the last batch the log holds from it: a retry after a crash, which
must be recognised (spec §2.1 rule 10) with the original offsets (``VIOLATION`` otherwise).
It writes ``ready``, then appends idempotent batches in a loop, rolling small segments (a
snapshot at every roll), taking snapshots and flushing now and then, and writes
``ack PRODUCER_ID BASE_SEQUENCE BASE_OFFSET LAST_OFFSET`` after each append returned. Each
line is one ``os.write`` to an O_APPEND file: a kill leaves whole lines.
"""

from __future__ import annotations

import os
import random
import sys

from dedup import PartitionLog
from dedup.batch import encode_batch

PRODUCERS = [7_000 + i for i in range(8)]
SEGMENT_BYTES = 32 * 1024
TIMESTAMP = 1_767_225_600_000


def batch(producer_id: int, sequence: int, records: int) -> bytes:
    values = [b"%d-%d" % (producer_id, sequence + i) for i in range(records)]
    return encode_batch(values, producer_id=producer_id, producer_epoch=0, base_sequence=sequence,
                        timestamp=TIMESTAMP + sequence)  # fmt: skip


def work(directory: str, seed: int, ack_path: str) -> None:
    out = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def say(line: str) -> None:
        os.write(out, (line + "\n").encode())

    rng = random.Random(seed)
    log = PartitionLog(directory, segment_bytes=SEGMENT_BYTES, clock=lambda: TIMESTAMP)
    table = log.producer_state
    next_sequence = {}
    for producer_id in PRODUCERS:
        entry = table.entry(producer_id)
        if entry is None or not entry.batches:
            next_sequence[producer_id] = 0
            continue
        last = entry.batches[-1]
        first = last.last_sequence - last.offset_delta
        retry = log.append_as_leader(batch(producer_id, first, last.offset_delta + 1), leader_epoch=0)
        if not retry.duplicate or retry.last_offset != last.last_offset:
            say(f"VIOLATION retry of {producer_id} seq {first} not recognised: {retry}")
        next_sequence[producer_id] = last.last_sequence + 1
    say("ready")
    while True:
        producer_id = rng.choice(PRODUCERS)
        sequence = next_sequence[producer_id]
        records = rng.randint(1, 4)
        info = log.append_as_leader(batch(producer_id, sequence, records), leader_epoch=0)
        say(f"ack {producer_id} {sequence} {info.base_offset} {info.last_offset}")
        next_sequence[producer_id] = sequence + records
        draw = rng.random()
        if draw < 0.05:
            log.take_snapshot()
        elif draw < 0.06:
            log.flush()


def serve() -> None:
    for line in sys.stdin:
        words = line.split()
        if words[0] == "reap":
            os.waitpid(int(words[1]), 0)
            print("reaped", flush=True)
            continue
        directory, seed, ack_path = words[0], int(words[1]), words[2]
        pid = os.fork()
        if pid == 0:
            try:
                work(directory, seed, ack_path)
            finally:
                os._exit(1)  # never reached unless the worker failed: the test sees no "ready"
        print(pid, flush=True)


if __name__ == "__main__":
    serve()
