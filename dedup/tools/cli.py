"""What every command of ``python -m dedup`` shares: its parser, the types of its numeric
options, its help text, and how its process ends.

- :class:`Command`: a command's arguments (``add_arguments``) and its body (``run``), with the
  plain-text help made from its docstring; ``python -m dedup`` assembles one argparse tree
  from them (``dedup/__main__.py``), and ``Command.main(argv)`` runs one alone (the tests).
- The option types (``type=`` of ``add_argument``): :func:`positive_int`,
  :func:`non_negative_int`, :func:`int_in`, :func:`seed`, :func:`port`, :func:`share`,
  :func:`non_negative_float`, :func:`positive_float`. A value out of range is argparse's usage
  error naming the option: one line on stderr, exit status 2 (:class:`CommandParser`).
- :func:`finish`: Ctrl-C ends the command with one line on stderr and exit status 130; a
  reader that closes stdout early (``| head``) ends it quietly with exit status 141. Both are
  what a shell reports for a command killed by SIGINT or SIGPIPE (128 + the signal), but the
  command's own cleanup (``finally`` blocks, temporary directories) has run.
"""

from __future__ import annotations

import _thread
import argparse
import inspect
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

#: Exit status of a command ended by Ctrl-C (128 + SIGINT).
INTERRUPTED = 130
#: Exit status of a command whose stdout was closed by its reader (128 + SIGPIPE).
CLOSED_PIPE = 141


class CommandParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UsageError(Exception):
    """A combination of options the parser cannot check alone (``--port`` and ``--brokers``):
    reported as the parser's usage error. The message starts ``argument --OPTION:``."""


# --- option types ----------------------------------------------------------------------------


def _integer(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _number(text: str, low: float, high: float, what: str, *, above: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < low or value > high or (above and value == low):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer, 1 or more (runs, worker processes, brokers)."""
    return _integer(text, 1, None, "a positive integer")


def non_negative_int(text: str) -> int:
    """An integer, 0 or more (steps, milliseconds)."""
    return _integer(text, 0, None, "an integer >= 0")


def seed(text: str) -> int:
    """A random seed: an integer in [0, 2^63-1]."""
    return _integer(text, 0, (1 << 63) - 1, "an integer in [0, 2^63-1]")


def port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    return _integer(text, 0, 65535, "a port number in [0, 65535]")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """The type of an integer option in [low, high]."""

    def integer(text: str) -> int:
        return _integer(text, low, high, f"an integer in [{low}, {high}]")

    return integer


def share(text: str) -> float:
    """A share of events: a number in [0, 1]."""
    return _number(text, 0.0, 1.0, "a share in [0, 1]")


def non_negative_float(text: str) -> float:
    """A finite number, 0 or more (seconds)."""
    return _number(text, 0.0, math.inf, "a number >= 0")


def positive_float(text: str) -> float:
    """A finite number above 0 (seconds)."""
    return _number(text, 0.0, math.inf, "a number > 0", above=True)


# --- help --------------------------------------------------------------------------------------

_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_ROLE = re.compile(r":[a-z]+:`(~?)([^`<]+?)\s*(?:<[^`>]*>)?`")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return target.rsplit(".", 1)[-1] if tilde else target


def plain(text: str) -> str:
    """A docstring as a terminal shows it: ``x`` as x, :func:`a.b` as a.b, :class:`~a.B` as B,
    :attr:`text <target>` as text, and a literal block's ``::`` as ``:``."""
    text = _LITERAL.sub(r"\1", _ROLE.sub(_role, text))
    return re.sub(r"(?<=\S)::$", ":", text, flags=re.MULTILINE)


def help_options(doc: str | None) -> dict[str, Any]:
    """``description`` (the docstring's first paragraph) and ``epilog`` (the rest) for
    ``--help``, in plain text, line breaks kept."""
    paragraphs = plain(inspect.cleandoc(doc or "")).split("\n\n", 1)
    return {
        "description": paragraphs[0],
        "epilog": paragraphs[1] if len(paragraphs) > 1 else None,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


@dataclass(frozen=True)
class Command:
    """One command of ``python -m dedup``: ``add_arguments(parser)`` declares its options,
    ``run(args)`` does the work and returns the exit status; ``doc`` is its ``--help``."""

    name: str
    doc: str | None
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]

    @property
    def prog(self) -> str:
        return f"python -m dedup {self.name}"

    def parser(self) -> CommandParser:
        """The command's parser alone (``python -m dedup`` adds the same one to its tree)."""
        parser = CommandParser(prog=self.prog, **help_options(self.doc))
        self.add_arguments(parser)
        return parser

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse ``argv`` (without the command's name) and run: what ``python -m dedup NAME
        ARGV`` does, without the process's end (:func:`finish`), for the tests."""
        parser = self.parser()
        return call(parser, self.run, parser.parse_args(argv))


def call(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)``, with a :class:`UsageError` reported by ``parser`` (exit status 2)."""
    try:
        return run(args)
    except UsageError as error:
        parser.error(str(error))


# --- the end of the process ----------------------------------------------------------------------


def _interrupted(error: BaseException | None) -> bool:
    """Whether ``error`` is Ctrl-C, or an error raised while unwinding from one (a cleanup
    cut short)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__context__
    return False


def finish(prog: str, body: Callable[[], int]) -> int:
    """The exit status of ``body()``, the whole life of command ``prog`` in this process:
    Ctrl-C is ``INTERRUPTED`` with ``PROG: interrupted`` on stderr, a closed stdout is
    ``CLOSED_PIPE`` with nothing more said (stdout goes to /dev/null so that the interpreter's
    last flush does not fail again at exit).

    A Ctrl-C that lands in a destructor (a ``__del__``, a generator closed by the garbage
    collector) would be printed as "Exception ignored" and lost, the command going on: it is
    delivered again to the main thread instead, where it ends the command."""
    previous_hook = sys.unraisablehook
    redelivered: list[threading.Timer] = []

    def redeliver(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            # Shortly, from another thread: raised here, the interruption would be ignored again.
            timer = threading.Timer(0.01, _thread.interrupt_main)
            timer.daemon = True
            timer.start()
            redelivered.append(timer)
        else:
            previous_hook(unraisable)

    sys.unraisablehook = redeliver
    try:
        status = body()
        sys.stdout.flush()  # a closed pipe shows here rather than at exit, as "Exception ignored"
        if redelivered:  # a Ctrl-C that a destructor took just before the end
            for timer in redelivered:
                timer.cancel()
            raise KeyboardInterrupt
        return status
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return CLOSED_PIPE
    except BaseException as error:
        if not _interrupted(error):
            raise
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the process is ending: a second Ctrl-C changes nothing
        try:
            print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        except OSError:
            pass
        return INTERRUPTED
    finally:
        sys.unraisablehook = previous_hook
