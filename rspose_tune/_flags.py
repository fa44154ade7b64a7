"""argparse pieces shared by the CLIs: value parsers whose error names the flag and the rule broken,
and the ``[STORAGE] --run NAME ...`` selection of the report and the export."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["add_run_selection", "float_at_least", "int_at_least", "int_between"]


def _parser(convert: Callable[[str], float], ok: Callable[[float], bool], bad_form: str, bad_value: str,
            *, show_text: bool):
    """An argparse ``type``: ``convert``, then ``ok``; ``"<rule>, got <value>"`` otherwise."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{bad_form}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{bad_value}, got {text if show_text else value}")
        return value

    return parse


def int_at_least(flag: str, minimum: int):
    """An argparse ``type`` accepting integers >= ``minimum``."""
    rule = f"{flag} must be an integer >= {minimum}"
    return _parser(int, lambda v: v >= minimum, rule, rule, show_text=False)


def int_between(flag: str, minimum: int, maximum: int):
    """An argparse ``type`` accepting integers from ``minimum`` to ``maximum``."""
    rule = f"{flag} must be an integer from {minimum} to {maximum}"
    return _parser(int, lambda v: minimum <= v <= maximum, rule, rule, show_text=False)


def float_at_least(flag: str, minimum: float):
    """An argparse ``type`` accepting finite numbers >= ``minimum``."""
    return _parser(float, lambda v: math.isfinite(v) and v >= minimum, f"{flag} must be a number >= {minimum:g}",
                   f"{flag} must be a finite number >= {minimum:g}", show_text=True)


def add_run_selection(parser: argparse.ArgumentParser, *, run_help: str) -> None:
    """The report's and the export's ``[STORAGE] --run NAME ...`` (read by ``report.storage_argument``)."""
    parser.add_argument("storage", nargs="?", default=None,
                        help="storage root holding <run>/trials/ (or one run directory): a local path or a "
                        "URI pyarrow.fs opens (file://, s3://); default ./results under the working directory")
    parser.add_argument("--run", nargs="+", action="extend", metavar="NAME", help=run_help)
