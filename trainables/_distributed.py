"""Data-parallel training inside one Ray Tune trial (a trial that holds N > 1 GPUs).

The trial's process (which owns the Ray Tune session) starts N worker processes, one per GPU
(or per CPU slot with the gloo backend), and each runs mmengine's Runner with
``launcher='pytorch'`` (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` set here, as torchrun would).
Rank 0's :class:`~trainables.mmpose_trainable.TuneReportHook` sends every validation result
and its checkpoint directory through a queue; the trial process calls ``tune.report`` and
acknowledges, and only then may rank 0 delete the checkpoint directory. A worker that fails
sends its traceback; the trial then stops every worker and raises, so Ray Tune retries the trial
from its last checkpoint like any other failure.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import socket
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["WorkerFailedError", "run_data_parallel"]

POLL_S = 1.0


class WorkerFailedError(RuntimeError):
    """A data-parallel worker of the trial failed (its traceback is in the message)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _QueueReport:
    """Rank 0's report function: hand the result to the trial process and wait until persisted."""

    def __init__(self, results, acks):
        self.results, self.acks = results, acks

    def __call__(self, result: Mapping[str, Any], checkpoint_dir: str | None) -> None:
        self.results.put(("report", dict(result), checkpoint_dir))
        self.acks.get()


def _worker(rank: int, world_size: int, port: int, config_path: str, resume_from: str | None,
            metric: str, trial_id: str, results, acks, backend: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    try:
        import torch
        from mmengine.config import Config
        from mmengine.runner import Runner

        from rspose_tune.mmpose_adapter import setup_mmpose

        from ._checkpoint import safe_checkpoint_loading
        from .mmpose_trainable import TuneReportHook

        setup_mmpose()
        cfg = Config.fromfile(config_path)
        cfg.launcher = "pytorch"
        cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = backend
        if backend == "nccl":
            torch.cuda.set_device(rank)
        else:
            # mmengine's own init_dist calls torch.cuda.set_device even for gloo; initialise the
            # process group here instead (the Runner then skips its init_dist).
            import torch.distributed as dist

            dist.init_process_group("gloo", rank=rank, world_size=world_size)
            # CPU modules: DDP must not be given device ids.
            cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)
        if resume_from:
            cfg.resume, cfg.load_from = True, resume_from
        runner = Runner.from_cfg(cfg)
        report = _QueueReport(results, acks) if rank == 0 else (lambda result, ckpt: None)
        runner.register_hook(TuneReportHook(metric, trial_id, report=report, checkpoint=rank == 0))
        with safe_checkpoint_loading():
            runner.train()
        results.put(("done", rank, None))
    except BaseException:  # noqa: BLE001 - forwarded to the trial process, which re-raises
        results.put(("error", rank, traceback.format_exc()))
        raise


def run_data_parallel(
    *,
    world_size: int,
    config_path: Path,
    resume_from: Path | None,
    metric: str,
    trial_id: str,
    report: Callable[[Mapping[str, Any], str | None], None],
    use_cuda: bool,
) -> None:
    """Train ``config_path`` on ``world_size`` processes; call ``report`` for rank 0's results."""
    ctx = mp.get_context("spawn")
    results, acks = ctx.Queue(), ctx.Queue()
    port = _free_port()
    backend = "nccl" if use_cuda else "gloo"
    procs = [
        ctx.Process(
            target=_worker,
            args=(rank, world_size, port, str(config_path), str(resume_from) if resume_from else None,
                  metric, trial_id, results, acks, backend),
            name=f"rspose-dp-rank{rank}",
            daemon=True,
        )
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.start()
    done: set[int] = set()
    try:
        while len(done) < world_size:
            try:
                kind, payload, extra = results.get(timeout=POLL_S)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise WorkerFailedError(
                        f"data-parallel worker {dead[0].name} exited with code {dead[0].exitcode} without a report"
                    ) from None
                continue
            if kind == "report":
                report(payload, extra)
                acks.put(True)
            elif kind == "done":
                done.add(payload)
            else:
                raise WorkerFailedError(f"data-parallel rank {payload} failed:\n{extra}")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=30)
