"""dedup's tools, apart from the engine: the command line's ``bench``, ``fuzz``, ``simulate``,
``demo``, ``dump-log``, ``dump-snapshot`` and ``probe`` (``python -m dedup --help``), and what every
command shares (``cli``: the parser, the option types, the exit statuses).

They use the library (``dedup``: table, records, snapshot, log, cluster, server); the library
never imports them, except for the ``serve`` command's own module (``dedup/server/cli.py``),
which takes its parser and option types from ``dedup.tools.cli`` like every other command.
"""
