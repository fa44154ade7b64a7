"""What the replay's two commands share (``python -m rspose_tune.replay`` and its ``make-table``): the
error class, the parser that prints one ``error:`` line, and the check that an output path is writable."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

from rspose_tune.errors import RSPoseTuneError

__all__ = ["ReplayError"]


class ReplayError(RSPoseTuneError, ValueError):
    """Bad input to ``python -m rspose_tune.replay`` or its ``make-table``: a flag, or a recorded value
    that stands in for one; the message names it. Printed by :func:`rspose_tune.errors.cli_error`."""


class _Parser(argparse.ArgumentParser):
    """Bad flags give one ``error:`` line (naming the flag and the rule) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _check_writable(given: str, flag: str, *, folder: bool) -> Path:
    """``given`` (a flag's path) made absolute, refused before any work when it cannot be written:
    ``folder``: a folder to create or use, else a file to create or replace."""
    path = Path(given).expanduser().absolute()
    if folder and path.exists() and not path.is_dir():
        raise ReplayError(f"{flag} {given}: exists and is not a folder")
    if not folder and path.is_dir():
        raise ReplayError(f"{flag} {given}: is a folder; name the file to write")
    parent = path if folder else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ReplayError(f"{flag} {given}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ReplayError(f"{flag} {given}: {parent} is not writable")
    return path
