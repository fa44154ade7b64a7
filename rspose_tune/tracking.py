"""Experiment tracking of a search: MLflow (``--mlflow URI``) and Weights & Biases (``--wandb PROJECT``)
through Ray Tune's own logger callbacks, and the matching mmengine vis backend of an exported config.

- :func:`check_tracking` validates the flags before Ray starts (a malformed value, an MLflow server
  that does not answer within a few seconds, W&B online without an API key: one
  :class:`TrackingError`, nothing written).
- :class:`MLflowTrialCallback` is Ray's ``MLflowLoggerCallback`` with three changes: one MLflow run
  per trial with the trial's ``trial_id``/``stage``/``seed``/``backbone`` as tags (Ray's callback has
  one tag set for all trials), metrics at ``step = epoch`` (Ray's uses ``training_iteration``, the
  number of validations), and a trial restarted by ``--resume`` continues its MLflow run (found by
  the ``trial_id`` tag in the run's experiment; Ray keys its runs by the ``Trial`` object, which a
  restored experiment does not share).
- :class:`WandbTrialCallback` is Ray's ``WandbLoggerCallback`` with step = epoch and
  ``resume="allow"`` (a resumed trial continues its W&B run, id = trial id, when online).
- ``<run>/tracking.json`` records the latest start's choice (the run spec is written once and
  both flags may change on ``--resume``); ``python -m rspose_tune.export`` reads it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rspose_tune.errors import RSPoseTuneError

__all__ = ["TRACKING_FILE", "Tracking", "TrackingError", "check_tracking", "read_tracking", "tracking_callbacks",
           "use_tracking_callbacks", "vis_backends", "write_tracking"]

#: The latest tracking choice of a run, beside its run spec.
TRACKING_FILE = "tracking.json"
#: Seconds an MLflow tracking server has to answer before the search refuses to start.
REACH_TIMEOUT_S = 5.0
_WANDB_BAD_CHARS = set("/\\#?%:")


class TrackingError(RSPoseTuneError, ValueError):
    """A bad ``--mlflow``/``--wandb`` value, or a tracking server that cannot be reached."""


@dataclass(frozen=True)
class Tracking:
    """Where a run's trials are tracked: an MLflow tracking URI and/or a W&B project (None: not)."""

    mlflow: str | None = None
    wandb: str | None = None

    def __bool__(self) -> bool:
        return bool(self.mlflow or self.wandb)


def normalize_mlflow_uri(value: str) -> str:
    """``http(s)://host[:port][/path]`` as given (no trailing ``/``), a local path or ``file://`` URI
    as an absolute ``file://`` URI (the same from every working directory and node)."""
    text = (value or "").strip()
    if not text:
        raise TrackingError("--mlflow needs a tracking URI: a local path, file:///abs/path or http://host:port")
    parsed = urlparse(text)
    if parsed.scheme in ("http", "https"):
        if not parsed.hostname:
            raise TrackingError(f"--mlflow {value!r}: an {parsed.scheme}:// URI needs a host (http://host:port)")
        try:
            parsed.port  # noqa: B018 - raises on a non-numeric port
        except ValueError:
            raise TrackingError(f"--mlflow {value!r}: the port is not a number") from None
        return text.rstrip("/")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise TrackingError(f"--mlflow {value!r}: a file:// URI must be local (file:///abs/path)")
        return Path(parsed.path).absolute().as_uri()
    if "://" in text or (parsed.scheme and len(parsed.scheme) > 1):
        raise TrackingError(f"--mlflow {value!r}: must be a local path, file:///abs/path, or http(s)://host:port "
                            f"of a tracking server (scheme {parsed.scheme!r} is not supported)")
    return Path(text).expanduser().absolute().as_uri()


def _check_mlflow_reachable(uri: str, timeout_s: float) -> None:
    if uri.startswith("file://"):
        from rspose_tune._storage import unwritable

        path = Path(urlparse(uri).path)
        why = unwritable(path)
        if why is not None:
            raise TrackingError(f"--mlflow {uri!r}: cannot use {path} as MLflow's file store ({why})")
        return
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        return  # it answered (an authenticating proxy, an older server without /health ...)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or str(reason)
        raise TrackingError(f"--mlflow {uri!r}: no MLflow tracking server answered within {timeout_s:g} s "
                            f"({reason}); start it (mlflow server --host ... --port ...) or fix the URI") from None


def _wandb_project(project: str) -> str:
    """The project name of ``--wandb``, its form checked (what ``--dry-run`` checks)."""
    text = (project or "").strip()
    if not text or _WANDB_BAD_CHARS & set(text) or len(text) > 128:
        raise TrackingError(f"--wandb {project!r}: a W&B project name is 1-128 characters without any of "
                            f"{' '.join(sorted(_WANDB_BAD_CHARS))}")
    return text


def _check_wandb(project: str) -> str:
    text = _wandb_project(project)
    if os.environ.get("WANDB_MODE") in ("offline", "disabled") or os.environ.get("WANDB_API_KEY"):
        return text
    import wandb  # Ray's WandbLoggerCallback.setup needs a key, else it fails inside Tuner.fit

    # wandb.api.api_key reads the key as Ray's callback will (env, netrc, settings) without the network
    # (wandb.login would verify it online); its deprecation warning is not the user's business
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            key = wandb.api.api_key
    except Exception:  # noqa: BLE001 - wandb's settings loader; no key then
        key = None
    if not key:
        raise TrackingError(f"--wandb {text!r}: W&B has no API key here: set WANDB_API_KEY, run `wandb login`, "
                            "or set WANDB_MODE=offline (air-gapped: `wandb sync` the offline runs later)")
    return text


def check_tracking(mlflow: str | None, wandb: str | None, *, reach: bool = True,
                   timeout_s: float = REACH_TIMEOUT_S) -> Tracking:
    """The tracking of the flags, validated: their form, and that a local MLflow store's folder can
    be created (what ``--dry-run`` checks, as a start does); ``reach``: also check that an MLflow
    server answers and that W&B has an API key here — what only a start does."""
    uri = None if mlflow is None else normalize_mlflow_uri(mlflow)
    if uri is not None and (reach or uri.startswith("file://")):  # a local store: checked without a network
        _check_mlflow_reachable(uri, timeout_s)
    project = None if wandb is None else (_check_wandb(wandb) if reach else _wandb_project(wandb))
    return Tracking(mlflow=uri, wandb=project)


# --------------------------------------------------------------------------------------------
# <run>/tracking.json
# --------------------------------------------------------------------------------------------


def tracking_record(tracking: Tracking, run: str) -> dict[str, Any]:
    return {
        "mlflow": None if tracking.mlflow is None else {"tracking_uri": tracking.mlflow, "experiment": run},
        "wandb": None if tracking.wandb is None else {"project": tracking.wandb, "group": run,
                                                      "mode": os.environ.get("WANDB_MODE", "online")},
    }


def write_tracking(run_dir: str, tracking: Tracking, run: str) -> None:
    """Record this start's tracking choice in ``<run>/tracking.json`` (rewritten at every start)."""
    from rspose_tune._storage import join, write_text

    write_text(join(run_dir, TRACKING_FILE), json.dumps(tracking_record(tracking, run), indent=1) + "\n")


def read_tracking(run_dir: str) -> dict[str, Any] | None:
    """``tracking.json`` of a run (None: the run never recorded one)."""
    from rspose_tune._storage import exists, join, read_text

    path = join(run_dir, TRACKING_FILE)
    if not exists(path):
        return None
    try:
        data = json.loads(read_text(path))
    except ValueError as exc:
        raise TrackingError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise TrackingError(f"{path}: must be a JSON object")
    return data


def vis_backends(record: dict[str, Any] | None, *, run_name: str) -> list[dict[str, Any]]:
    """The mmengine vis backends that log an exported config's training where the run was tracked."""
    out: list[dict[str, Any]] = []
    if not record:
        return out
    if record.get("mlflow"):
        m = record["mlflow"]
        out.append(dict(type="RSPoseMLflowVisBackend", tracking_uri=m["tracking_uri"], exp_name=m["experiment"],
                        run_name=run_name))
    if record.get("wandb"):
        w = record["wandb"]
        out.append(dict(type="WandbVisBackend", init_kwargs=dict(project=w["project"], group=w["group"],
                                                                 name=run_name)))
    return out


# --------------------------------------------------------------------------------------------
# The Ray Tune callbacks
# --------------------------------------------------------------------------------------------


def tracking_callbacks(tracking: Tracking, *, run: str, run_dir: str, backbone: str, seed: int) -> list:
    """The Ray Tune callbacks of ``tracking`` for the run's experiments (search and confirm)."""
    from rspose_tune._tracking_callbacks import MLflowTrialCallback, WandbTrialCallback

    out = []
    if tracking.mlflow:
        out.append(MLflowTrialCallback(tracking.mlflow, experiment_name=run, backbone=backbone, seed=seed))
    if tracking.wandb:
        local = None if "://" in run_dir else run_dir  # offline runs: <run>/wandb/offline-run-*
        out.append(WandbTrialCallback(tracking.wandb, group=run, backbone=backbone, seed=seed, dir=local))
    return out


def is_tracking_callback(callback: Any) -> bool:
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.air.integrations.wandb import WandbLoggerCallback

    return isinstance(callback, (MLflowLoggerCallback, WandbLoggerCallback))


def use_tracking_callbacks(tuner: Any, callbacks: list) -> None:
    """Give a ``Tuner.restore`` d tuner this start's tracking callbacks (those among ``callbacks``)
    instead of the ones its first start pickled into ``tuner.pkl``; its other callbacks stay."""
    from rspose_tune._ray_compat import restored_run_config

    run_config = restored_run_config(tuner)
    kept = [c for c in run_config.callbacks or [] if not is_tracking_callback(c)]
    run_config.callbacks = kept + [c for c in callbacks if is_tracking_callback(c)]
