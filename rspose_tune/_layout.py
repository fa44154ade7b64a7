"""The names of a run folder's files (``<storage>/<run>/``), below every layer that writes or reads
them: the searcher writes the journal, the run spec layer the spec and the finished marker, the report
reads all three. :mod:`rspose_tune.runspec` re-exports them. No imports."""

__all__ = ["FINISHED_FILE", "JOURNAL_FILE", "SPEC_FILE"]

#: File name of the spec inside the run directory.
SPEC_FILE = "run_spec.yaml"
#: Written when a run's search ended with every trial finished.
FINISHED_FILE = "finished.json"
#: The run's Optuna study (``<run>/optuna.journal``): the searcher writes it, the report reads it.
JOURNAL_FILE = "optuna.journal"
