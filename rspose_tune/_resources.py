"""How a trial's resources split into ranks, and whether a Ray cluster can ever hold them.

Pure functions (no Ray import): the search CLI calls them with ``ray.nodes()``. A trial's
placement group (:func:`trial_resources`, one bundle per rank) is built from :func:`rank_bundle`;
that one function imports Ray, when called.
"""

from __future__ import annotations

from rspose_tune.errors import RSPoseTuneError

import math
from collections.abc import Iterable, Mapping

__all__ = ["ResourceError", "bundles_that_fit", "check_feasible", "plan_ranks", "rank_bundle", "trial_resources"]


class ResourceError(RSPoseTuneError, ValueError):
    """Per-trial resources that make no sense, or that no node of the cluster can hold."""


def plan_ranks(gpus: float, cpus: float, workers: int | None) -> int:
    """The number of ranks a trial trains on, checked against its GPUs.

    Default (``workers`` None): one rank per GPU when a trial holds more than one GPU, else one.
    A data-parallel trial on GPUs gives each rank one whole GPU (NCCL refuses two ranks on one
    device), so ``gpus`` must then equal ``workers``. On CPUs (``gpus == 0``) any number of gloo
    ranks may share the trial's CPUs.
    """
    if workers is None:
        workers = int(gpus) if gpus > 1 else 1
    if workers < 1:
        raise ResourceError(f"--workers-per-trial must be >= 1, got {workers}")
    if gpus > 1 and not float(gpus).is_integer():
        raise ResourceError(f"--gpus-per-trial above 1 must be a whole number, got {gpus:g}")
    if workers > 1 and gpus > 0 and gpus != workers:
        raise ResourceError(
            f"--workers-per-trial {workers} with --gpus-per-trial {gpus:g}: each rank of a data-parallel "
            f"trial trains on one whole GPU, so --gpus-per-trial must equal --workers-per-trial ({workers})"
        )
    if workers == 1 and gpus > 1:
        raise ResourceError(
            f"--workers-per-trial 1 with --gpus-per-trial {gpus:g}: one rank uses one GPU; "
            f"pass --workers-per-trial {int(gpus)} to train on all of them"
        )
    if cpus <= 0:
        raise ResourceError(f"--cpus-per-trial must be > 0, got {cpus:g}")
    return workers


def rank_bundle(workers: int, cpus: float, gpus: float) -> dict[str, float]:
    """The Ray resources of one rank: the trial's CPUs and GPUs shared equally by its ranks."""
    bundle = {"CPU": cpus / workers}
    if gpus:
        bundle["GPU"] = gpus / workers
    return bundle


def trial_resources(workers: int, cpus: float, gpus: float):
    """The placement group of a trial: ``workers`` equal bundles (:func:`rank_bundle`) that share the
    per-trial CPUs/GPUs, ``PACK``-ed. Bundle 0 holds the trial's own process (rank 0), bundles 1..
    the other ranks (docs/ARCHITECTURE.md, "Distributed trials")."""
    from ray import tune

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return tune.PlacementGroupFactory([rank_bundle(workers, cpus, gpus) for _ in range(workers)], strategy="PACK")


def bundles_that_fit(bundle: Mapping[str, float], node: Mapping[str, float]) -> int:
    """How many copies of ``bundle`` one node's total resources can hold."""
    counts = []
    for name, need in bundle.items():
        if need <= 0:
            continue
        have = float(node.get(name, 0.0))
        counts.append(math.floor(have / need + 1e-9))
    return min(counts) if counts else 1_000_000


def check_feasible(bundle: Mapping[str, float], workers: int, nodes: Iterable[Mapping[str, float]]) -> None:
    """Raise :class:`ResourceError` if no placement of ``workers`` bundles fits the nodes.

    Ranks may sit on different nodes (placement strategy ``PACK``), so the trial fits when the
    nodes together hold ``workers`` bundles, each bundle inside one node.
    """
    nodes = [dict(n) for n in nodes]
    room = sum(bundles_that_fit(bundle, n) for n in nodes)
    if room >= workers:
        return
    largest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
    shown = {k: largest.get(k, 0.0) for k in ("CPU", "GPU")}
    need = ", ".join(f"{k}: {v:g}" for k, v in bundle.items())
    raise ResourceError(
        f"a trial needs {workers} rank(s) of {{{need}}} (--gpus-per-trial / --cpus-per-trial / "
        f"--workers-per-trial), but the cluster's {len(nodes)} node(s) can hold only {room}; the largest "
        f"node has {{CPU: {shown['CPU']:g}, GPU: {shown['GPU']:g}}}. Ask for less per trial, add nodes, "
        "or pass --allow-pending-trials if an autoscaler will add them"
    )
