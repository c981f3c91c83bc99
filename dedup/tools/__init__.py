"""dedup's tools, apart from the engine: the command line's ``bench``, ``fuzz``, ``simulate``,
``demo``, ``dump-log`` and ``dump-snapshot`` (``python -m dedup --help``).

They use the library (``dedup``: table, records, snapshot, log, cluster, server); the library
never imports them.
"""
