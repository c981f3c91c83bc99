"""``python -m dedup`` as a user meets it: every command's ``--help``, Ctrl-C (exit 130, one
line on stderr, no traceback, no process left behind), a reader that closes the pipe early
(exit 141, nothing on stderr), and a bad number given to any option (exit 2, one line naming
the option).

Ctrl-C is sent as a terminal sends it, to the whole process group, once the command is busy
(measured by the CPU time its processes have used, not by the clock, so a loaded machine does
not make the test interrupt an interpreter still importing).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka_batches import IDEMPOTENT_BATCH

from dedup.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("demo", "dump-log", "dump-snapshot", "bench", "serve", "simulate", "fuzz", "probe")
PROC = Path("/proc")
needs_proc = pytest.mark.skipif(not (PROC / "self" / "stat").exists(), reason="reads /proc to see the processes")


def environment(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def start(tmp_path: Path, *arguments: str, **options) -> subprocess.Popen:
    """``python -m dedup ARGUMENTS`` in a session of its own (its process group id is its pid)."""
    return subprocess.Popen(
        [sys.executable, "-m", "dedup", *arguments], env=environment(tmp_path), cwd=tmp_path,
        start_new_session=True, **options,
    )  # fmt: skip


# --- --help ---------------------------------------------------------------------------------------


def test_the_top_level_help_lists_every_command_in_plain_text(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dedup", "--help"], capture_output=True, text=True, timeout=60,
                          env=environment(tmp_path), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m dedup ")
    for name in COMMANDS:  # each on a line of its own, with its help
        assert re.search(rf"^    {name}\s+[a-z]", done.stdout, re.MULTILINE), (name, done.stdout)
    assert_plain(done.stdout)


def assert_plain(text: str) -> None:
    """No reStructuredText in what a terminal shows: no double backticks, no :func:`x` roles."""
    assert "``" not in text, text
    assert ":`" not in text, text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_its_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"usage: python -m dedup {command}"), out
    assert err == ""
    assert_plain(out)


@pytest.mark.parametrize("arguments", [[], ["nonsense"], ["dump-log"], ["simulate", "--no-such-option"]])
def test_a_wrong_command_line_is_one_line_and_exit_2(arguments, capsys):
    with pytest.raises(SystemExit) as exit:
        main(arguments)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m dedup"), err
    assert "--help" in err  # where to look next


# --- bad numbers ----------------------------------------------------------------------------------

# Each with the option it names.
BAD_NUMBERS = [
    (["simulate", "--runs", "-5"], "--runs"),
    (["simulate", "--runs", "0"], "--runs"),
    (["simulate", "--runs", "many"], "--runs"),
    (["simulate", "--jobs", "0"], "--jobs"),
    (["simulate", "--steps", "-1"], "--steps"),
    (["simulate", "--seed", "-1"], "--seed"),
    (["simulate", "--seed", str((1 << 63) - 1), "--runs", "2"], "--seed"),
    (["simulate", "--unclean-share", "1.5"], "--unclean-share"),
    (["simulate", "--unclean-share", "nan"], "--unclean-share"),
    (["fuzz", "--seconds", "-1"], "--seconds"),
    (["fuzz", "--seconds", "inf"], "--seconds"),
    (["fuzz", "--timeout", "0"], "--timeout"),
    (["fuzz", "--seed", "-1"], "--seed"),
    (["serve", "--port", "65536"], "--port"),
    (["serve", "--port", "-1"], "--port"),
    (["serve", "--port", "65534", "--brokers", "3"], "--port"),
    (["serve", "--brokers", "0"], "--brokers"),
    (["serve", "--min-insync-replicas", "0"], "--min-insync-replicas"),
    (["serve", "--brokers", "2", "--min-insync-replicas", "3"], "--min-insync-replicas"),
    (["serve", "--drop-responses", "0.6", "--delay-responses", "0.6"], "--delay-responses"),
    (["serve", "--drop-responses", "1.5"], "--drop-responses"),
    (["serve", "--delay-responses", "-0.1"], "--delay-responses"),
    (["serve", "--close-connections", "2"], "--close-connections"),
    (["serve", "--delay-ms", "-1"], "--delay-ms"),
    (["serve", "--seed", "-1"], "--seed"),
    (["serve", "--crash-leader-every", "0"], "--crash-leader-every"),
    (["serve", "--restart-after", "-1"], "--restart-after"),
    (["serve", "--exit-after", "-1"], "--exit-after"),
]


@pytest.fixture
def nothing_runs(monkeypatch, tmp_path):
    """The work of simulate, fuzz and serve replaced by a failure: a value the parser let
    through fails the test at once instead of running (fuzzing forever, for ``inf``)."""
    from dedup.server import cli as serve
    from dedup.tools import fuzz, simulate

    def refuse(*args, **kwargs):
        raise AssertionError("the parser let the value through")

    monkeypatch.setattr(simulate, "simulate", refuse)
    monkeypatch.setattr(simulate, "run_seed", refuse)
    monkeypatch.setattr(fuzz, "run", refuse)
    monkeypatch.setattr(serve, "serve", refuse)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("arguments, option", BAD_NUMBERS, ids=[" ".join(case) for case, _ in BAD_NUMBERS])
def test_a_bad_number_is_one_line_naming_the_option_and_exit_2(arguments, option, capsys, nothing_runs):
    with pytest.raises(SystemExit) as exit:
        main(arguments)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"python -m dedup {arguments[0]}: error: argument {option}"), err


def test_a_bad_number_from_the_shell(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dedup", "simulate", "--runs", "-5"], capture_output=True,
                          text=True, timeout=60, env=environment(tmp_path), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "--runs" in done.stderr, done.stderr


# --- a closed pipe --------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [[], ["--json"]])
def test_a_reader_that_stops_early_ends_the_dump_quietly(options, tmp_path):
    """``python -m dedup dump-log FILE | head -1``: 5,000 batches are far more than a pipe holds."""
    segment = tmp_path / "00000000000000000000.log"
    segment.write_bytes(IDEMPOTENT_BATCH * 5_000)
    process = start(tmp_path, "dump-log", str(segment), *options, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()  # what head does after its line
        err = process.stderr.read()
        status = process.wait(timeout=60)
    finally:
        process.kill()
    assert first.startswith(b"Dumping" if not options else b"{"), first
    assert err == b"", err.decode(errors="replace")
    assert status == 141  # 128 + SIGPIPE, what a shell shows for a writer whose reader went away


# --- Ctrl-C ---------------------------------------------------------------------------------------


def group_processes(group: int) -> list[int]:
    """The processes of process group ``group``."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == group and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_until_busy(process: subprocess.Popen, seconds: float, timeout: float = 180) -> None:
    """Until the command's processes have used ``seconds`` of CPU: past the imports, at work."""
    deadline = time.monotonic() + timeout
    while cpu_seconds(group_processes(process.pid)) < seconds:
        if process.poll() is not None:
            pytest.fail(f"the command ended before it was interrupted: {process.communicate()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the command did not get {seconds} s of CPU in {timeout} s")
        time.sleep(0.05)


def interrupt(process: subprocess.Popen) -> tuple[str, str]:
    """Ctrl-C: SIGINT to the process group, as a terminal sends it; the command's output."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def assert_interrupted(process: subprocess.Popen, err: str, command: str) -> None:
    assert "Traceback" not in err and "Exception ignored" not in err, err
    # The bench's progress bar redraws one line with "\r" (text mode reads it as line breaks).
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]
    assert lines == [f"python -m dedup {command}: interrupted"], err
    assert process.returncode == 130, err
    deadline = time.monotonic() + 20
    while group_processes(process.pid):  # no worker outlives the command
        assert time.monotonic() < deadline, f"left running: {group_processes(process.pid)}"
        time.sleep(0.05)


INTERRUPTED = {
    "simulate": (["simulate", "--runs", "100000"], 2.0),
    "simulate --jobs 2": (["simulate", "--runs", "100000", "--jobs", "2"], 3.0),
    "fuzz": (["fuzz", "--seconds", "120", "--crashes", "crashes"], 2.5),
    "bench": (["bench"], 3.0),
}


@needs_proc
@pytest.mark.parametrize("case", list(INTERRUPTED))
def test_ctrl_c_is_exit_130_and_one_line(case, tmp_path):
    arguments, busy = INTERRUPTED[case]
    process = start(tmp_path, *arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until_busy(process, busy)
    _, err = interrupt(process)
    assert_interrupted(process, err, arguments[0])
    # Every scratch directory went with the run (TMPDIR is tmp_path; the fuzz worker's included).
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith("dedup-")]
    assert not (tmp_path / "crashes").exists()  # an interruption is not a finding


def test_ctrl_c_in_a_destructor_still_ends_the_command(tmp_path):
    """CPython prints an exception raised in ``__del__`` as "Exception ignored" and goes on: a
    Ctrl-C that lands there (seen with the bench's C loop tables) must still end the command."""
    script = """if True:
        import sys
        from dedup.tools import cli

        class Table:
            def __del__(self):
                raise KeyboardInterrupt  # where SIGINT's handler raised it

        def body():
            Table()
            for _ in range(10**8):  # the interruption ends this loop
                pass
            print("not interrupted")
            return 0

        sys.exit(cli.finish("python -m dedup bench", body))
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=environment(tmp_path), cwd=tmp_path)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "python -m dedup bench: interrupted\n")


@needs_proc
def test_ctrl_c_stops_serve_cleanly_with_exit_130(tmp_path):
    process = start(tmp_path, "serve", "--port", "0", "--brokers", "2", stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "serve printed nothing in 120 s"
        assert process.stdout.readline().startswith("bootstrap.servers=127.0.0.1:")
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    out, err = interrupt(process)
    assert_interrupted(process, err, "serve")
    assert "produce requests:" in out and "served:" in out  # the brokers were shut down and counted
