"""The names of a run folder's files (``<storage>/<run>/``), below every layer that writes or reads
them: the searcher writes the journal, the run spec layer the spec and the finished marker, the report
reads all three. :mod:`rspose_tune.runspec` re-exports them. Also the one rule for a metric's name in
MLflow, used by the search's MLflow logging and by an export's vis backend. No project imports."""

import re

__all__ = ["FINISHED_FILE", "JOURNAL_FILE", "SPEC_FILE", "mlflow_metric_name"]

#: File name of the spec inside the run directory.
SPEC_FILE = "run_spec.yaml"
#: Written when a run's search ended with every trial finished.
FINISHED_FILE = "finished.json"
#: The run's Optuna study (``<run>/optuna.journal``): the searcher writes it, the report reads it.
JOURNAL_FILE = "optuna.journal"


def mlflow_metric_name(key: str) -> str:
    """``key`` as MLflow allows a metric name (alphanumerics and ``_ - . : /`` and spaces): MMPose's
    ``coco/AP (M)`` becomes ``coco/AP_M``; any other character outside the rule becomes ``_``. The rule
    of the search's MLflow logging and of an exported config's ``RSPoseMLflowVisBackend``."""
    key = re.sub(r"\s*\(([^()]*)\)", r"_\1", key)
    return re.sub(r"[^\w\-. :/]", "_", key)
