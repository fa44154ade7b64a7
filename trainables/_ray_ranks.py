"""Data-parallel trials on Ray's own machinery: one placement-group bundle per rank.

A trial that trains on N ranks asks Ray Tune for a placement group of N bundles
(:func:`rspose_tune._resources.trial_resources`). Tune starts the trial's process in bundle 0: that process is rank 0
(it owns the Tune session, so it reports and checkpoints directly). Ranks 1..N-1 are Ray actors
(:class:`RankActor`) scheduled into bundles 1..N-1 of the same placement group, on whichever
nodes Ray placed them (``PACK``: one node when it fits, several when it does not). Each rank
runs :func:`rspose_tune.training.train_rank` inside a torch process group whose rendezvous rank 0
opened (:mod:`rspose_tune.training._rank`).

Lifetimes follow Ray's ownership: the rank actors are owned by the trial's process, so when
Tune stops the trial (ASHA) or the trial fails, Ray kills them and Tune removes the placement
group. Failures: a rank that dies or raises ends the trial with :class:`RankFailedError`
(gloo and NCCL peers notice a lost rank in their next collective); Ray Tune's
``FailureConfig`` then retries the whole trial from its last checkpoint. That is the one
failure policy (``rspose_tune.search``: ``max_failures``). A rank that *diverged* (its error is
one of :data:`rspose_tune.training.DIVERGED`) ends the trial with :class:`LossDivergedError`
instead, naming the rank and its error, so rank 0 records the divergence as for its own and no
retry trains again (:func:`trainables.mmpose_trainable.refuse_after_divergence`). Rank 0 may be
stuck in a collective then (gloo too waits for a peer that left): ``on_divergence`` records the
divergence as soon as rank 0 hears of it, and the process is ended after
:data:`RANK_DIVERGED_GRACE_S` instead of :data:`RANK_FAILURE_GRACE_S`.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rspose_tune.training import (
    DIVERGED,
    LossDivergedError,
    Rendezvous,
    no_report,
    open_rendezvous,
    process_group,
    restore_checkpoint,
    train_rank,
)

__all__ = ["RankActor", "RankFailedError", "backend_for", "share_node_gpus", "train_ranks"]

#: After another rank failed, how long rank 0 may take to fail by itself (a collective error)
#: before its process is ended, so that Tune retries the trial instead of waiting on a hung
#: collective.
RANK_FAILURE_GRACE_S = float(os.environ.get("RSPOSE_RANK_FAILURE_GRACE_S", "120"))
#: The same after another rank *diverged*: the divergence is recorded at once (the trial is over and
#: no retry trains again), so rank 0 is not left waiting on a hung collective (gloo too hangs there).
RANK_DIVERGED_GRACE_S = 10.0


class RankFailedError(RuntimeError):
    """A rank of a data-parallel trial died or raised; the trial fails over from its checkpoint."""


def backend_for(bundles: Sequence[Mapping[str, float]]) -> tuple[str, str]:
    """``(backend, device)`` of a trial's ranks: NCCL on GPUs, gloo on CPUs.

    A bundle's GPU is Ray's logical resource; the device is CUDA only when this process also
    sees one (a CPU-only test cluster may declare logical GPUs).
    """
    import torch

    if bundles[0].get("GPU", 0) > 0 and torch.cuda.is_available():
        return "nccl", "cuda"
    return "gloo", "cpu"


def _where() -> str:
    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"


def _placement() -> dict[str, Any]:
    """Where this process runs and the GPUs Ray assigned to it."""
    return {"where": _where(), "node": ray.get_runtime_context().get_node_id(),
            "gpus": [str(g) for g in ray.get_gpu_ids()]}


def share_node_gpus(placements: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """Per rank: ``(CUDA_VISIBLE_DEVICES, device index)`` so ranks on one node see each other's GPUs.

    Ray makes only a process's own GPU visible to it; NCCL then cannot use peer-to-peer copies
    (NVLink) between ranks on one node and falls back to host memory. As Ray Train does, every rank
    on a node sees all the GPUs the trial holds on that node and picks its own by index.
    """
    per_node: dict[str, list[str]] = {}
    for placement in placements:
        per_node.setdefault(placement["node"], []).extend(placement["gpus"])
    shared = []
    for placement in placements:
        visible = sorted(set(per_node[placement["node"]]), key=lambda g: (len(g), g))
        index = visible.index(placement["gpus"][0]) if placement["gpus"] else 0
        shared.append((",".join(visible), index))
    return shared


def _use_devices(visible: str) -> None:
    """Set this process's visible GPUs (before CUDA is initialised in it)."""
    if visible:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible


@ray.remote
class RankActor:
    """Rank r > 0 of one trial: fetch the checkpoint, join the group, train, then exit."""

    def placement(self) -> dict[str, Any]:
        return _placement()

    def run(self, cfg: dict, rdzv: Rendezvous, rank: int, *, metric: str, trial_id: str,
            checkpoint, hooks: Sequence[Any], device: str, visible: str, device_index: int) -> str:
        _use_devices(visible)
        with tempfile.TemporaryDirectory(prefix=f"rspose_rank{rank}_") as tmp:
            resume = restore_checkpoint(checkpoint, Path(tmp), trial_id=trial_id) if checkpoint else None
            with process_group(rdzv, rank, device_index=device_index):
                train_rank(cfg, metric=metric, trial_id=trial_id, report=no_report,
                           resume_from=resume, hooks=hooks, device=device)
        return _where()


def _rank_error(rank: int, failure: BaseException, trial_id: str) -> Exception:
    """What rank 0 raises for rank ``rank``'s ``failure``: a divergence stays one
    (:class:`LossDivergedError`: recorded, not retried), anything else is a :class:`RankFailedError`."""
    cause = getattr(failure, "cause", failure)  # ray.get raises a RayTaskError; `cause` is the rank's own error
    if isinstance(cause, DIVERGED):
        return LossDivergedError(f"rank {rank} of trial {trial_id} diverged: {type(cause).__name__}: {cause}")
    return RankFailedError(f"rank {rank} of trial {trial_id} failed: {failure}")


class _Watcher(threading.Thread):
    """Waits on the remote ranks; if one fails while rank 0 still trains, makes the trial fail."""

    def __init__(self, refs: list, done: threading.Event, trial_id: str,
                 on_divergence: Callable[[str], None] | None = None):
        super().__init__(name="rspose-rank-watcher", daemon=True)
        self.refs, self.done, self.trial_id, self.on_divergence = refs, done, trial_id, on_divergence
        self.failure: tuple[int, BaseException] | None = None  # (rank, its error)

    def run(self) -> None:
        pending = list(self.refs)
        while pending and not self.done.is_set():
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in ready:
                try:
                    ray.get(ref)
                except BaseException as exc:  # noqa: BLE001 - recorded, then the trial is failed
                    self.failure = (self.refs.index(ref) + 1, exc)
            if self.failure is not None:
                break
        if self.failure is None:
            return
        error, grace = _rank_error(*self.failure, self.trial_id), RANK_FAILURE_GRACE_S
        if isinstance(error, LossDivergedError) and self.on_divergence is not None:
            try:  # the trial is over, whatever rank 0 does now
                self.on_divergence(f"{type(error).__name__}: {error}")
                grace = min(grace, RANK_DIVERGED_GRACE_S)
            except Exception as exc:  # noqa: BLE001 - rank 0 may still record it when it raises
                print(f"rspose_tune: could not record the divergence of this trial: {exc!r}", file=sys.stderr,
                      flush=True)
        if self.done.wait(grace):
            return
        # Rank 0 is stuck in a collective with a dead peer: end the process, Tune retries the trial
        # (after a divergence the retry refuses at once: recorded above).
        print(f"rspose_tune: a rank of this trial failed and rank 0 did not stop within "
              f"{grace:.0f} s; exiting so the trial fails over:\n{error}",
              file=sys.stderr, flush=True)
        os._exit(70)


def train_ranks(cfg, *, bundles: Sequence[Mapping[str, float]], metric: str, trial_id: str, report,
                checkpoint, resume_from: Path | None = None, hooks: Sequence[Any] = (),
                on_divergence: Callable[[str], None] | None = None) -> None:
    """Train ``cfg`` on ``len(bundles)`` ranks (this process is rank 0).

    Every report carries ``nodes``: where each rank runs, in rank order.

    Args:
        cfg: the trial's resolved MMPose config.
        bundles: the trial's placement-group bundles, one per rank.
        report: rank 0's report function (``tune_report`` in a trial).
        checkpoint: the trial's ``ray.tune.Checkpoint`` to resume from, or None.
        resume_from: rank 0's local copy of ``checkpoint``, when the caller fetched it already.
        hooks: extra mmengine hooks for every rank (pickled to the other ranks).
        on_divergence: called with the reason as soon as another rank's divergence reaches this
            one (from a watcher thread): the record must not wait for rank 0, which may be stuck in
            a collective and then ended after :data:`RANK_DIVERGED_GRACE_S`.

    Raises:
        LossDivergedError: this rank's own divergence (:data:`rspose_tune.training.DIVERGED`) as it
            was raised, or another rank's, naming the rank.
        RankFailedError: another rank died or raised anything else.
    """
    world_size = len(bundles)
    pg = get_current_placement_group()
    if pg is None:
        raise RuntimeError("a data-parallel trial must run inside its placement group (tune.with_resources)")
    cfg_dict = cfg.to_dict()
    actors = [
        RankActor.options(
            num_cpus=bundles[rank].get("CPU", 0),
            num_gpus=bundles[rank].get("GPU", 0),
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank),
        ).remote()
        for rank in range(1, world_size)
    ]
    done = threading.Event()
    try:
        # Before `run`: an actor runs its calls in order, and `run` waits for rank 0 to train.
        placements = [_placement(), *ray.get([actor.placement.remote() for actor in actors])]
        nodes = [p["where"] for p in placements]
        devices = share_node_gpus(placements)
        _use_devices(devices[0][0])  # before this process touches CUDA (a fresh trial process)
        backend, device = backend_for(bundles)
        rdzv, store = open_rendezvous(ray.util.get_node_ip_address(), world_size, backend)
        refs = [
            actor.run.remote(cfg_dict, rdzv, rank, metric=metric, trial_id=trial_id, checkpoint=checkpoint,
                             hooks=list(hooks), device=device, visible=devices[rank][0],
                             device_index=devices[rank][1])
            for rank, actor in enumerate(actors, start=1)
        ]

        def report_with_nodes(result, checkpoint_dir):
            report({**result, "nodes": ",".join(nodes)}, checkpoint_dir)

        watcher = _Watcher(refs, done, trial_id, on_divergence)
        watcher.start()
        with tempfile.TemporaryDirectory(prefix="rspose_rank0_") as tmp:
            resume = resume_from
            if resume is None and checkpoint is not None:
                resume = restore_checkpoint(checkpoint, Path(tmp), trial_id=trial_id)
            with process_group(rdzv, 0, store=store, device_index=devices[0][1]):
                try:
                    train_rank(cfg, metric=metric, trial_id=trial_id, report=report_with_nodes,
                               resume_from=resume, hooks=hooks, device=device)
                except DIVERGED:
                    raise  # this rank diverged (the others may have failed of it): recorded, not retried
                except Exception as exc:
                    failure = _first_remote_failure(refs, watcher)
                    if failure is not None:
                        raise _rank_error(*failure, trial_id) from exc
                    raise
        for rank, ref in enumerate(refs, start=1):
            try:
                ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a rank failed after rank 0 finished
                raise _rank_error(rank, exc, trial_id) from exc
    finally:
        done.set()
        for actor in actors:
            ray.kill(actor)


def _first_remote_failure(refs: list, watcher: _Watcher, timeout_s: float = 30.0) -> tuple[int, BaseException] | None:
    """``(rank, error)`` of the remote rank that failed first, if any (waits briefly for it to surface)."""
    if watcher.failure is not None:
        return watcher.failure
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    for ref in ready:
        try:
            ray.get(ref)
        except BaseException as exc:  # noqa: BLE001 - returned to the caller, which raises it
            return refs.index(ref) + 1, exc
    return None
