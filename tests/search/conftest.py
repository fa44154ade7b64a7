"""Shared by the search CLI's tests."""

from __future__ import annotations

from rspose_tune import search


def _run(argv, capsys):
    code = search.main(argv)
    return code, capsys.readouterr().err
