"""argparse value parsers shared by the CLIs: the error names the flag and the rule broken."""

from __future__ import annotations

import argparse

__all__ = ["int_at_least"]


def int_at_least(flag: str, minimum: int):
    """An argparse ``type`` accepting integers >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer >= {minimum}, got {value}")
        return value

    return parse
