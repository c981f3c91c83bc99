"""``python -m dedup demo``: what the producer-state table does to a retrying producer.

One partition's table, one idempotent producer: a retry is answered with the original
offsets, a gap is OUT_OF_ORDER_SEQUENCE_NUMBER, an older epoch is fenced, and a restarted
producer with a new producer id is not recognised (Kafka's documented limit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from . import ProducerStateTable
from .errors import KafkaError

PID, RESTARTED_PID = 1000, 1001


def steps(table) -> Iterator[str]:
    """Run the scenario on ``table``, one line per step."""
    end = 0

    def send(what: str, pid: int, epoch: int, seq: int, count: int) -> str:
        nonlocal end
        batch = f"producer {pid} epoch {epoch} seq {seq}-{seq + count - 1}"
        try:
            result = table.append(pid, epoch, seq, count, end, max_timestamp=1_700_000_000_000 + end)
        except KafkaError as error:
            return f"{what:<34} {batch:<33} -> {error.error_name} ({error.code}): rejected, nothing written"
        if result.duplicate:
            return (f"{what:<34} {batch:<33} -> duplicate: answered with the original offsets "
                    f"{result.base_offset}-{result.last_offset}, nothing written")
        end = result.last_offset + 1
        return f"{what:<34} {batch:<33} -> appended at offsets {result.base_offset}-{result.last_offset}"

    yield f"dedup demo: {type(table).__module__}.{type(table).__name__}, window {table.window}"
    yield send("1. sends 10 clicks", PID, 0, 0, 10)
    yield send("2. sends 10 more", PID, 0, 10, 10)
    yield send("3. ack lost, retries batch 2", PID, 0, 10, 10)
    yield send("4. skips seq 20-24 (a gap)", PID, 0, 25, 5)
    yield send("5. bumps its epoch, restarts at 0", PID, 1, 0, 5)
    yield send("6. a zombie with the old epoch", PID, 0, 20, 5)
    yield send("7. restarts with a new producer id", RESTARTED_PID, 0, 0, 10)
    yield ("   step 7 stored clicks 0-9 a second time: a new producer id is a new producer, "
           "so dedup (like Kafka) cannot recognise its batches")
    yield f"log end offset {end}; producers in the table: {sorted(table)}"


def main(write: Callable[[str], None] = print) -> int:
    for line in steps(ProducerStateTable()):
        write(line)
    return 0
