"""One rank of a trial: an mmengine Runner inside a torch process group. No Ray in this module.

A trial trained on N ranks runs :func:`train_rank` once per rank, each in its own process (rank 0
in the Ray Tune trial's process, the others in Ray actors: ``trainables._ray_ranks``). The
same function also runs alone, without Ray: a 1-rank process group on one GPU is what
``python -m rspose_tune.bench gpu`` checks on a bare GPU machine.

Rendezvous: rank 0 opens a :class:`torch.distributed.TCPStore` on an ephemeral port (port 0, so
the operating system picks a free one atomically: no pick-then-release race between trials) and
the other ranks connect to ``host:port``. The process group is then initialised from that store,
before the Runner is built; mmengine skips its own ``init_dist`` when a group exists, so this
module sets the CUDA device itself (one GPU per rank, chosen by index among the visible ones).

Validation results are gathered with collectives (``collect_device='gpu'``, which is
``all_gather_object`` and works on gloo too), never through a temporary folder, because ranks
may sit on nodes that share no filesystem.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Rendezvous", "no_report", "open_rendezvous", "process_group", "train_rank"]

#: How long a collective may wait for a missing rank before the process group fails.
DEFAULT_TIMEOUT_S = 1800.0

Report = Callable[[Mapping[str, Any], "str | None"], None]


@dataclass(frozen=True)
class Rendezvous:
    """Where ranks 1..N-1 meet rank 0: the TCPStore address, the group size and the backend."""

    host: str
    port: int
    world_size: int
    backend: str  # "nccl" on GPUs, "gloo" on CPUs
    timeout_s: float = DEFAULT_TIMEOUT_S


def open_rendezvous(host: str, world_size: int, backend: str, timeout_s: float = DEFAULT_TIMEOUT_S):
    """Rank 0: open the TCPStore on a port the OS picks. Returns ``(Rendezvous, store)``."""
    import torch.distributed as dist

    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
    store = dist.TCPStore(host, 0, world_size, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=timeout_s))
    return Rendezvous(host, int(store.port), int(world_size), backend, timeout_s), store


@contextlib.contextmanager
def process_group(rdzv: Rendezvous, rank: int, store=None, device_index: int = 0) -> Iterator[None]:
    """Join the trial's process group as ``rank`` (rank 0 passes the store it opened).

    On NCCL the rank trains on CUDA device ``device_index`` of the devices this process sees.
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        raise RuntimeError("a torch process group already exists in this process; one trial per process")
    timeout = datetime.timedelta(seconds=rdzv.timeout_s)
    if store is None:
        store = dist.TCPStore(rdzv.host, rdzv.port, rdzv.world_size, is_master=False, timeout=timeout)
    if rdzv.backend == "nccl":
        torch.cuda.set_device(device_index)
    # mmengine's DDP wrapper takes its device id from LOCAL_RANK.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(rdzv.world_size), LOCAL_RANK=str(device_index))
    dist.init_process_group(rdzv.backend, store=store, rank=rank, world_size=rdzv.world_size, timeout=timeout)
    try:
        yield
    finally:
        dist.destroy_process_group()


def no_report(result: Mapping[str, Any], checkpoint_dir: str | None) -> None:
    """Ranks other than 0 report nothing (rank 0 speaks for the trial)."""


def _collect_with_collectives(cfg) -> None:
    """Evaluators gather results by ``all_gather_object`` instead of a shared temporary folder."""
    for key in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(key)
        metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
        for metric in metrics:
            if isinstance(metric, Mapping):
                metric["collect_device"] = "gpu"


def _own_visualizer(cfg) -> None:
    """Give this Runner a visualizer of its own. MMPose's base configs name it ``'visualizer'``, and
    mmengine builds a named ``ManagerMixin`` with ``get_instance(name)``, which returns the instance
    an earlier Runner of this process made, with that Runner's ``vis_data/`` as its save folder: a
    second trial (or a retry) in a reused Ray actor wrote its scalars into the first trial's folder
    and had no ``vis_data/`` of its own (found by ``bench soak``; docs/troubleshooting.md)."""
    import uuid

    if cfg.get("visualizer") is not None:
        cfg.visualizer["name"] = f"visualizer_{uuid.uuid4().hex}"


def train_rank(
    cfg,
    *,
    metric: str,
    trial_id: str,
    report: Report,
    resume_from: Path | None = None,
    hooks: Sequence[Any] = (),
    device: str = "cpu",
) -> None:
    """Train the resolved MMPose ``cfg`` as this process's rank; rank 0 reports each validation.

    If a process group is initialised (:func:`process_group`), the Runner trains data-parallel in it
    (DDP); otherwise it trains alone. Only rank 0 saves checkpoints and calls ``report``.

    Args:
        cfg: the trial's resolved :class:`mmengine.config.Config` (not modified; a copy is used).
        metric: the evaluator key the search optimises, e.g. ``coco/AP``.
        trial_id: written into each checkpoint's manifest.
        report: ``report(result, checkpoint_dir_or_None)``, called by rank 0 after each validation;
            it must return only once the checkpoint directory was persisted.
        resume_from: a verified trial checkpoint file to resume from (every rank loads it).
        hooks: extra mmengine hooks, registered on every rank.
        device: ``cuda`` or ``cpu``; decides the DDP wrapper's device ids.
    """
    import torch.distributed as dist
    from mmengine.config import Config
    from mmengine.runner import Runner

    from rspose_tune.mmpose_adapter import setup_mmpose

    from ._checkpoint import safe_checkpoint_loading
    from ._hooks import TuneReportHook

    setup_mmpose()
    # The trial saved its resolved config already (formatted once); the Runner would format it
    # with yapf three more times (log, work dir, visualizer): ~1.2 s of every trial's start.
    cfg = Config(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg), format_python_code=False)
    distributed = dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    if distributed:
        cfg.launcher = "pytorch"  # the Runner sees the group and skips its own init_dist
        _collect_with_collectives(cfg)
        if device == "cpu":
            # CPU modules: DDP must not be given device ids.
            cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)
    if resume_from is not None:
        cfg.resume, cfg.load_from = True, str(resume_from)
    _own_visualizer(cfg)
    runner = Runner.from_cfg(cfg)
    if rank != 0:
        report = no_report
    runner.register_hook(TuneReportHook(metric, trial_id, report=report, checkpoint=rank == 0))
    for hook in hooks:
        runner.register_hook(hook)
    with safe_checkpoint_loading():
        runner.train()
