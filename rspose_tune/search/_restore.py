"""What a resumed run fixes in Ray's restored trials before they start (imported by the run only:
it imports Ray)."""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

from rspose_tune._ray_compat import repoint_missing_checkpoint
from rspose_tune.training._checkpoint import oldest_checkpoint_path

__all__ = ["MissingCheckpointRepair"]

logger = logging.getLogger("rspose_tune.search")


class MissingCheckpointRepair(Callback):
    """A restored trial whose recorded checkpoint was rotated away after Ray's last experiment
    snapshot (a driver killed in between) resumes from its oldest checkpoint still on storage, and
    the trainable then moves on to its newest recorded one (:func:`rspose_tune.training.newest_checkpoint`).

    ``on_trial_start`` runs after the trial's actor started and before Ray schedules its restore
    (Ray 2.60 ``TuneController._actor_started``; :func:`rspose_tune._ray_compat.repoint_missing_checkpoint`).
    """

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        changed = repoint_missing_checkpoint(
            trial, lambda fs, path: oldest_checkpoint_path(fs, path, trial_id=trial.trial_id))
        if changed is not None:
            logger.warning("trial %s: its recorded checkpoint %s is gone (rotated after the last experiment "
                           "snapshot); resuming from %s", trial.trial_id, changed[0],
                           changed[1] or "its newest recorded checkpoint, found by the trainable")
