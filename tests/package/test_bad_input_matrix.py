"""A bad-input matrix over every public entry point (issue #7 part 3).

One row per (entry point, argument, bad-value class): the call, the exception class expected
and a regex that must find the argument's name in the message. Every row that touches a
producer-state table runs on both twins (compiled ``dedup._state`` and pure-Python
``dedup.reference``), which must raise the same class; every row also asserts that nothing
was applied (the table's producers, entries and map end offset, the log's offsets, the files
on disk). Bad bytes are a typed Kafka/snapshot error (``CorruptSnapshotError``,
``TruncatedBatchError``) that says expected versus found, never a crash.

The rows and their tests are in four parts by layer: test_bad_input_table.py (the table and
the sequence arithmetic), test_bad_input_formats.py (batches, CRC, snapshots, the batch codec),
test_bad_input_log.py (checkpoints, the partition log) and test_bad_input_cluster.py (cluster,
producer, network, simulator, server); tests/package/bad_input.py holds the row type. This file
checks that the matrix covers every public name.

Deliberately not repeated here (each has its own thorough tests): the numpy boundary of
``append_many`` (``tests/table/test_append_many.py``: dtypes, shapes, strides, read-only arrays,
lengths, value ranges; three smoke rows in the table's part), ``append``/``check`` scalars
(``tests/table/test_arguments.py``), the batch codec's bad bytes (``tests/formats/test_batch.py``,
``tests/formats/test_records_fuzz.py``) and corrupt snapshots (``tests/formats/test_snapshot_fuzz.py``).

Valid edge cases sit beside the rows: empty inputs to the readers and an empty table to the
snapshot functions work.
"""

from __future__ import annotations

import inspect

from bad_input import ids
from test_bad_input_cluster import CLIENT_ROWS, CLUSTER_CONSTRUCTOR_ROWS, CLUSTER_ROWS, SERVER_ROWS
from test_bad_input_formats import BATCH_ROWS, CRC_ROWS, RECORDS_ROWS, SNAPSHOT_ROWS
from test_bad_input_log import CHECKPOINT_ROWS, LOG_CONSTRUCTOR_ROWS, LOG_ROWS
from test_bad_input_table import SEQUENCE_ROWS, TABLE_ROWS

import dedup

# --- the matrix itself --------------------------------------------------------------------------

ALL_ROWS = (
    TABLE_ROWS
    + SEQUENCE_ROWS
    + RECORDS_ROWS
    + CRC_ROWS
    + SNAPSHOT_ROWS
    + BATCH_ROWS
    + CHECKPOINT_ROWS
    + LOG_CONSTRUCTOR_ROWS
    + LOG_ROWS
    + CLUSTER_CONSTRUCTOR_ROWS
    + CLUSTER_ROWS
    + CLIENT_ROWS
    + SERVER_ROWS
)


def test_every_public_name_of_the_package_that_takes_arguments_is_in_the_matrix():
    covered = {bad.entry.split(".")[0] for bad in ALL_ROWS}
    # Every function the package exports, and the two classes whose constructors take arguments.
    functions = {name for name in dedup.__all__ if inspect.isroutine(getattr(dedup, name))}
    takes_arguments = functions | {"ProducerStateTable", "PartitionLog"}
    assert len(functions) == 15, sorted(functions)  # a new export is a new row to write
    assert takes_arguments <= set(dedup.__all__)
    # Methods are rows under their own names; the classes' constructors under the class's.
    assert takes_arguments - covered == set()
    assert len(ALL_ROWS) == len(set(ids(ALL_ROWS))), "two rows with the same id"
