"""The Ray Tune callbacks of :mod:`rspose_tune.tracking` (imports Ray, MLflow's and W&B's Ray
integrations; classes at module level so ``tuner.pkl`` pickles them by reference)."""

from __future__ import annotations

import os
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

from rspose_tune._layout import mlflow_metric_name

__all__ = ["MLflowTrialCallback", "WandbTrialCallback"]


def _trial_tags(trial: Any, *, backbone: str, seed: int, run: str) -> dict[str, str]:
    config = trial.config
    return {"trial_id": trial.trial_id, "stage": str(config.get("stage", "search")),
            "seed": str(config.get("seed", seed)), "backbone": backbone, "rspose_run": run}


def _trial_params(trial: Any, tags: dict[str, str]) -> dict[str, Any]:
    from rspose_tune.spaces import PARAM_NAMES

    config = trial.config
    params = {name: config.get(name) for name in PARAM_NAMES if name in config}
    if "confirms" in config:
        params["confirms"] = config["confirms"]
    return {**params, "stage": tags["stage"], "seed": tags["seed"], "backbone": tags["backbone"]}


class MLflowTrialCallback(MLflowLoggerCallback):
    """Ray's callback, one MLflow run per trial with per-trial tags, step = epoch, and a
    resumed trial continuing its run (see the module docstring)."""

    def __init__(self, tracking_uri: str, *, experiment_name: str, backbone: str, seed: int) -> None:
        super().__init__(tracking_uri, experiment_name=experiment_name)
        self._backbone, self._seed = backbone, seed

    def setup(self, *args, **kwargs) -> None:
        if str(self.tracking_uri).startswith("file:"):
            # MLflow 3.x refuses its file store unless this is set ("maintenance mode"); --mlflow PATH asks for it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial: Any) -> None:
        tags = _trial_tags(trial, backbone=self._backbone, seed=self._seed, run=self.experiment_name)
        if trial not in self._trial_runs:
            client = self.mlflow_util._get_client()
            found = client.search_runs([self.mlflow_util.experiment_id],
                                       filter_string=f"tags.trial_id = '{trial.trial_id}'", max_results=1)
            if found:  # a trial restarted by --resume: continue its run
                run_id = found[0].info.run_id
                client.update_run(run_id, status="RUNNING")
            else:
                run_id = self.mlflow_util.start_run(tags={**tags, "trial_name": str(trial)},
                                                    run_name=str(trial)).info.run_id
            self._trial_runs[trial] = run_id
        self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=_trial_params(trial, tags))

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        from ray.tune.utils import flatten_dict

        step = int(result.get("epoch", result.get("training_iteration", 0)))
        # MLflow refuses some of MMPose's metric names (``coco/AP (M)``): one error would end the search
        metrics = {mlflow_metric_name(key): value for key, value in flatten_dict(result).items()}
        self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=metrics, step=step)


class _EpochStepActor(_WandbLoggingActor):
    def run(self) -> None:
        super().run()
        # wandb 0.31's ``finish()`` only *publishes* its finish to the wandb-core process, which writes
        # the run's records to its ``.wandb`` file when it closes the stream. Ray 2.60's callback kills
        # this actor as soon as ``run()`` returns, and a search's end shuts Ray down with it: a core still
        # closing the stream then dies with the records unwritten (a 7-byte, header-only file, seen once
        # in CI). ``teardown()`` waits for the core to close every stream and exit.
        self._wandb.teardown()

    def _handle_result(self, result: dict):
        log, config_update = super()._handle_result(result)
        if "epoch" in log:  # wandb.log's step is the result's training_iteration: make it the epoch
            log["tune_iteration"] = log.get("training_iteration")
            log["training_iteration"] = log["epoch"]
        return log, config_update


class WandbTrialCallback(WandbLoggerCallback):
    """Ray's callback with step = epoch and per-trial tags (see the module docstring)."""

    _logger_actor_cls = _EpochStepActor

    def __init__(self, project: str, *, group: str, backbone: str, seed: int, dir: str | None) -> None:
        super().__init__(project=project, group=group, resume="allow", **({"dir": dir} if dir else {}))
        self._backbone, self._seed = backbone, seed

    def log_trial_start(self, trial: Any) -> None:
        tags = _trial_tags(trial, backbone=self._backbone, seed=self._seed, run=self.group)
        self.kwargs["tags"] = [f"stage:{tags['stage']}", f"seed:{tags['seed']}", f"backbone:{tags['backbone']}"]
        super().log_trial_start(trial)
