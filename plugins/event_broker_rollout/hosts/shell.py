"""Remote command lines, built from argument lists and quoted in exactly one place (``command_line``).

No caller formats a shell command: a command is an argv list, or argv lists joined by a fixed operator
(``&&``, ``||``, ``|``, ``;``), or a constant script run by ``sh -c`` with its inputs as positional
parameters. A value such as ``/data$(touch /tmp/x)`` therefore always arrives as one literal word.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Operator(StrEnum):
    AND = "&&"
    OR = "||"
    PIPE = "|"
    THEN = ";"


def _argv(words: Sequence[str]) -> tuple[str, ...]:
    # A str is a Sequence[str] too: refusing it keeps a formatted command line from slipping through.
    if isinstance(words, str) or not words or not all(isinstance(word, str) for word in words):
        raise TypeError(f"a command is a non-empty list of str arguments, not {type(words).__name__}")
    return tuple(words)


@dataclass(frozen=True)
class Command:
    """Argv lists joined by fixed operators; ``discard_stderr`` sends every step's stderr to /dev/null."""

    first: tuple[str, ...]
    rest: tuple[tuple[Operator, tuple[str, ...]], ...] = ()
    discard_stderr: bool = False

    @classmethod
    def of(cls, *argv: str) -> Command:
        return cls(_argv(argv))

    @classmethod
    def all_of(cls, steps: Sequence[Sequence[str]]) -> Command:
        """Every step in order, stopping at the first that fails (``a && b && c``)."""
        if not steps:
            raise TypeError("a command needs at least one step")
        return Command(_argv(steps[0]), tuple((Operator.AND, _argv(step)) for step in steps[1:]))

    def _join(self, operator: Operator, argv: Sequence[str]) -> Command:
        return Command(self.first, (*self.rest, (operator, _argv(argv))), self.discard_stderr)

    def and_then(self, *argv: str) -> Command:
        return self._join(Operator.AND, argv)

    def or_else(self, *argv: str) -> Command:
        return self._join(Operator.OR, argv)

    def pipe(self, *argv: str) -> Command:
        return self._join(Operator.PIPE, argv)

    def then(self, *argv: str) -> Command:
        return self._join(Operator.THEN, argv)

    def quiet(self) -> Command:
        return Command(self.first, self.rest, discard_stderr=True)


def script(text: str, *args: str, name: str = "sh") -> tuple[str, ...]:
    """``sh -c TEXT NAME ARGS...``: TEXT is a constant of the calling module, never built from values;
    the values reach it only as ``"$1"``, ``"$2"``, ... (an AST test holds every caller to this)."""
    return ("sh", "-c", text, name, *args)


def command_line(command: Command | Sequence[str]) -> str:
    """The one place a remote command line is made: every word quoted, operators fixed."""
    built = command if isinstance(command, Command) else Command(_argv(command))
    redirect = " 2>/dev/null" if built.discard_stderr else ""
    line = shlex.join(built.first) + redirect
    for operator, argv in built.rest:
        line += f" {operator.value} {shlex.join(argv)}{redirect}"
    return line


def double_quoted(value: object) -> str:
    """The value escaped for use between double quotes in a file a shell sources (``KEY="{{ v | shell_dq }}"``).

    Inside double quotes only ``$``, `````, ``\\`` and ``"`` are special to a POSIX shell; each is
    backslash-escaped, so ``$(...)`` stays text. Control characters are refused before this (``render``).
    """
    text = str(value)
    for special in ("\\", "$", "`", '"'):
        text = text.replace(special, "\\" + special)
    return text
