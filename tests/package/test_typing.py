"""mypy sees dedup as installed (README's command), from any directory, with the compiled types.

An editable install through setuptools' import hook (a finder on ``sys.meta_path``) is
invisible to mypy, which reads ``sys.path``; pyproject.toml's ``package-dir`` makes
``pip install -e .`` put the project directory on ``sys.path`` with a plain ``.pth`` instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

USER_CODE = """\
import dedup

table = dedup.ProducerStateTable()
result = table.append(1000, 0, 0, 10, 0)
staged = table.copy([1000])
staged.append(1000, 0, 10, 10, 10)
table.update_from(staged)
reveal_type(table)
reveal_type(result.base_offset)
reveal_type(dedup.reference.ProducerStateTable().append(1, 0, 0, 1, 0))
"""


def test_mypy_finds_the_installed_package_from_another_directory(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.fail("mypy is a test dependency: pip install -e '.[test]'")
    (tmp_path / "use_dedup.py").write_text(USER_CODE)
    # Only the installation may lead mypy to dedup: mypy also searches PYTHONPATH and MYPYPATH.
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MYPYPATH")}
    result = subprocess.run(
        # No configuration file (the user's, or one above tmp_path) and no cache left behind.
        [sys.executable, "-m", "mypy", "--config-file", "", "--cache-dir", os.devnull, "use_dedup.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    revealed = [line.split("Revealed type is ", 1)[1] for line in result.stdout.splitlines() if "Revealed" in line]
    assert revealed == [
        '"dedup._state.ProducerStateTable"',  # the compiled class, not the twin
        '"int"',
        '"dedup.reference.table.AppendResult"',  # the twin's own result: the contract is generic
    ], textwrap.indent(result.stdout, "    ")
