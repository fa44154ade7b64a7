"""One rank of a trial, without Ray: an mmengine Runner in a torch process group (:mod:`._rank`),
the hook that checks the loss and reports after each validation (:mod:`._hooks`), the trial's
checkpoints (:mod:`._checkpoint`) and its config (:mod:`._config`).

The report function and the checkpoint are passed in, so the same code runs in a Ray Tune trial
(the trainable in the top-level ``trainables`` package, which imports this one: never the other
way round, docs/ARCHITECTURE.md), in ``make-table`` and in ``python -m rspose_tune.bench gpu``.
Importing it loads torch and mmengine, not Ray.
"""

from ._checkpoint import (
    CHECKPOINT_FILE,
    CheckpointMismatchError,
    fetch_checkpoint,
    newest_checkpoint,
    restore_checkpoint,
    safe_checkpoint_loading,
    strip_unsafe_state,
    verify_checkpoint_dir,
    write_manifest,
)
from ._config import RESOLVED_CONFIG, TRIAL_META, prepare_trial_config
from ._hooks import DIVERGED, LOSS_KEYS, LossDivergedError, TuneReportHook
from ._rank import Rendezvous, no_report, open_rendezvous, process_group, train_rank

__all__ = [
    "CHECKPOINT_FILE", "DIVERGED", "LOSS_KEYS", "RESOLVED_CONFIG", "TRIAL_META", "CheckpointMismatchError",
    "LossDivergedError", "Rendezvous", "TuneReportHook", "fetch_checkpoint", "newest_checkpoint", "no_report",
    "open_rendezvous", "prepare_trial_config", "process_group", "restore_checkpoint", "safe_checkpoint_loading",
    "strip_unsafe_state", "train_rank", "verify_checkpoint_dir", "write_manifest",
]
