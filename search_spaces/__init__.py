"""Search-space data files, one ``<preset>.yaml`` per backbone (read by :mod:`rspose_tune.spaces`).

A package only so that the YAML files install as package data; it holds no code.
"""
