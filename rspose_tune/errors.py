"""The one root of rspose_tune's user errors.

Every error that bad input (a flag, a preset file, a run folder, a table) can cause derives from
:class:`RSPoseTuneError`. Each CLI (``search``, ``report``, ``export``, ``replay``, ``bench``)
catches this class and nothing else, prints its message as one ``error:`` line on stderr and
exits with status 2 (:func:`cli_error`). Anything else is a bug and keeps its traceback.

The concrete classes keep their historic second base (``ValueError``, ``RuntimeError``,
``FileNotFoundError``) so that callers catching those still work. This module imports nothing.
"""

from __future__ import annotations

import sys

__all__ = ["EXIT_USER_ERROR", "RSPoseTuneError", "cli_error"]

#: Exit status of every CLI for a user error.
EXIT_USER_ERROR = 2


class RSPoseTuneError(Exception):
    """A user error: the message names the file, flag or key and the rule it breaks."""


def cli_error(exc: BaseException, hint: str = "") -> int:
    """Print ``exc`` as one ``error:`` line (plus an optional hint) on stderr; return exit status 2."""
    print(f"error: {exc}{hint}", file=sys.stderr)
    return EXIT_USER_ERROR
