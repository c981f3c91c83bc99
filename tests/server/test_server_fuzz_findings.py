"""Bad Kafka request frames that ``python -m dedup fuzz`` found breaking the front end, as plain
tests: an absurd array count that aborted the whole process in kio's native reader, a null array
where Kafka allows none (a TypeError in the Produce handler), a negative fetch offset (a
ValueError from the log). Each now gets Kafka's answer: the connection closed (InvalidRequest)
for the first two, OFFSET_OUT_OF_RANGE for the third. The inputs themselves are replayed from
``tests/fuzz_corpus/found/``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kio.schema.errors import ErrorCode
from test_server_protocol import fetch_body, frame

from dedup.server.apis import fetch_partitions
from dedup.server.core import KafkaServer
from dedup.server.wire import ApiKey, BadRequest, parse_request

ROOT = Path(__file__).resolve().parents[2]
#: What a child Python needs to load the extension as this process did: an AddressSanitizer
#: build (tools/asan.sh) needs its runtime preloaded.
SANITIZER = {name: os.environ[name] for name in ("LD_PRELOAD", "ASAN_OPTIONS", "PYTHONMALLOC") if name in os.environ}

#: Metadata v9 whose topics array (a compact count) claims 2^32 - 2 topics in a frame of 22 bytes:
#: kio's native reader reserved 34 GB for it and the failed allocation aborted the process, every
#: broker of ``dedup serve`` with it. The second frame is the fuzzer's own find (a varint of 35 bits).
ABSURD_COUNTS = {
    "metadata v9, 2^32-2 topics": "0003000900000007000466757a7a00ffffffff0f00",
    "metadata v9, found by the fuzzer": "0003000900000007000466757a7a009beaccd469636b7300",
}


def test_an_absurd_array_count_is_a_bad_request_not_an_abort(tmp_path):
    """In a child process (the failure mode is SIGABRT): parse_request refuses the frames, and a
    running server closes the connection and keeps serving."""
    program = f"""
import socket, struct
from dedup.server import ServerThread
from dedup.server.wire import BadRequest, parse_request
frames = [bytes.fromhex(h) for h in {list(ABSURD_COUNTS.values())!r}]
for frame in frames:
    try:
        parse_request(frame)
    except BadRequest as error:
        print("BadRequest", error)
with ServerThread({str(tmp_path)!r}, brokers=1, topics=["clicks"]) as running:
    for frame in frames:
        with socket.create_connection(("127.0.0.1", running.server.ports[0]), timeout=30) as sock:
            sock.sendall(struct.pack(">i", len(frame)) + frame)
            print("closed" if sock.recv(100) == b"" else "answered")
    with socket.create_connection(("127.0.0.1", running.server.ports[0]), timeout=30) as sock:
        sock.sendall(bytes.fromhex("0000000e001200000000000100046675 7a7a".replace(" ", "")))
        print("still serving", len(sock.recv(1000)) > 4)
"""
    env = {"PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **SANITIZER}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr[-800:]}"
    lines = done.stdout.splitlines()
    assert lines[:2] == [
        "BadRequest MetadataRequest: topics: a length of 4294967294 with 1 bytes left in the request",
        "BadRequest MetadataRequest: topics: a length of 28363142426 with 4 bytes left in the request",
    ]
    assert lines[2:] == ["closed", "closed", "still serving True"]


def test_a_null_array_where_kafka_allows_none_is_a_bad_request():
    """Produce v3 whose partition_data is null (-1): kio read it as None and the handler failed
    with a TypeError (an internal error; the connection closed). Kafka's reader refuses it:
    "non-nullable field partitionData was serialized as null"."""
    frame = bytes.fromhex("0000000300000007000466757a7affffffff00001388000000010006636c69636b73ffffffff")
    with pytest.raises(BadRequest, match="non-nullable field partition_data was serialized as null"):
        parse_request(frame)
    # where null is allowed it still parses: Metadata v1+ topics null means every topic
    request = parse_request(bytes.fromhex("0003000100000007000466757a7affffffff"))
    assert request.body.topics is None


def test_a_negative_fetch_offset_is_offset_out_of_range(tmp_path):
    """Fetch at offset -72057594037927936 reached PartitionLog.read, whose argument check raised
    ValueError (an internal error); Kafka answers OFFSET_OUT_OF_RANGE for the partition."""
    server = KafkaServer(tmp_path, brokers=1, topics=["clicks"])
    try:
        for version in (4, 11):
            for offset in (-1, -(1 << 56), -(1 << 63)):
                request = parse_request(frame(ApiKey.FETCH, version, fetch_body(offset, topic="clicks"))[4:])
                [topic], _ = fetch_partitions(server, 0, request)
                assert [p["error_code"] for p in topic["partitions"]] == [ErrorCode.offset_out_of_range]
    finally:
        asyncio.run(server.close())
