"""Benchmarks: ``python -m rspose_tune.bench {losses,step,trainable,search,gpu}``.

Each benchmark measures its baseline in the same run and prints the ratio; see docs/benchmarks.md.
"""
