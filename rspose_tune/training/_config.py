"""A trial's MMPose config, built and saved beside its results (:func:`prepare_trial_config`).

No Ray here: the Ray Tune trainable, the replay's ``make-table`` and the benchmarks build a trial's
config the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["RESOLVED_CONFIG", "TRIAL_META", "prepare_trial_config"]

#: The trial's resolved MMPose config, in its working directory.
RESOLVED_CONFIG = "resolved_config.py"
#: The trial's facts (preset, seed, params, and what the caller adds), in its working directory.
TRIAL_META = "trial.json"


def prepare_trial_config(preset, params: Mapping[str, Any] | None, trial_dir: Path, *, seed: int = 0,
                         meta: Mapping[str, Any] | None = None, **build_options):
    """Build the trial's MMPose config and save it (and the seed) beside the trial's results.

    ``params=None``: the base config's stock loss (the baseline). ``meta`` adds keys to
    ``trial.json``. ``build_options`` go to
    :func:`rspose_tune.mmpose_adapter.configs.build_config` (``max_epochs``, ``val_interval``,
    ``batch_size``, ``num_workers``, ``shrink``, ``scratch``).
    """
    from rspose_tune.mmpose_adapter import setup_mmpose
    from rspose_tune.mmpose_adapter.configs import build_config

    setup_mmpose()
    trial_dir = Path(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    cfg = build_config(preset, params, work_dir=trial_dir / "mmpose", seed=seed, **build_options)
    cfg.dump(str(trial_dir / RESOLVED_CONFIG))
    meta = {"preset": preset.name, "seed": int(seed), "params": None if params is None else dict(params),
            **(meta or {})}
    (trial_dir / TRIAL_META).write_text(json.dumps(meta, indent=1, default=str))
    return cfg
