"""How the searcher survives a restart (docs/trust.md#resume): its explicit JSON state (``save``,
``restore``, ``get_state``, ``set_state``), its pickled form (Ray's ``tuner.pkl``: the constructor's
arguments and that state) and the study opened from the journal and reconciled with the state."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna

from rspose_tune._storage import read_text, write_text
from rspose_tune.spaces import validate_space

from ._journal import journal_location, local_journal, upload_journal
from ._rules import make_sampler
from ._space import spec_json
from ._state import RUNNING, STATE_FORMAT, STATE_VERSION, Record, check_format, reconcile


class Persistence:
    """The save/restore half of :class:`~rspose_tune.searcher.PruningAwareOptunaSearch` (a mixin:
    it reads and sets the attributes that class's ``__init__`` creates)."""

    _journal_path: str | None
    _journal_local: str | None
    _study: optuna.Study | None
    _records: dict[str, Record]

    def save(self, checkpoint_path: str) -> None:
        """Upload the journal when it lives on an object store (:meth:`sync_journal`), then write
        :meth:`get_state` as JSON (atomically) to ``checkpoint_path``."""
        self.sync_journal()
        write_text(checkpoint_path, json.dumps(self.get_state(), indent=1, allow_nan=False))

    def restore(self, checkpoint_path: str) -> None:
        """Read a :meth:`save` file and reopen the study from its journal (see :meth:`set_state`)."""
        try:
            state = json.loads(read_text(checkpoint_path))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"{checkpoint_path!r} is not a PruningAwareOptunaSearch state file (JSON): {exc}"
            ) from exc
        self.set_state(state)

    def sync_journal(self) -> None:
        """Upload the local working copy of a journal on an object store (no-op otherwise)."""
        upload_journal(self._journal_local, self._journal_path)

    def get_state(self) -> dict[str, Any]:
        """The explicit, JSON-serialisable state (version :data:`STATE_VERSION`)."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "study_name": self._study_name,
            "journal_path": self._journal_path,
            "metric": self._metric,
            "mode": self._mode,
            "max_epochs": self._max_epochs,
            "time_attr": self._time_attr,
            "seed": self._seed,
            "space": {n: spec_json(d) for n, d in self._dims.items()},
            "known_good_used": self._known_good_used,
            "trials": {tid: r.to_json() for tid, r in self._records.items()},
            "pending": sorted(tid for tid, r in self._records.items() if r.state == RUNNING),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`get_state` output and reopen the study from the journal.

        The settings in ``state`` must match this searcher's (space, budget, metric, mode, study
        name, time attribute); trials pending in ``state`` are interrupted: FAIL in Optuna,
        re-run if Ray resumes them (docs/trust.md#resume).
        """
        self._load_state(state)
        self._open_study()

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the searcher inside tuner.pkl; keep that explicit as well (no live objects).
        return {"init": dict(self._init_kwargs), "state": self.get_state() if self._records else None}

    def __setstate__(self, pickled: dict[str, Any]) -> None:
        self.__init__(**pickled["init"])  # type: ignore[misc]
        if pickled["state"] is not None:
            self._load_state(pickled["state"])  # the study is opened on first use

    def _local_journal(self) -> str:
        """The journal file Optuna writes: the path itself, or a local copy of a URI's journal."""
        path = local_journal(self._journal_path, self._journal_local)  # type: ignore[arg-type]
        if path != self._journal_path:
            self._journal_local = path
        return path

    def _load_state(self, state: Mapping[str, Any]) -> None:
        check_format(state)
        ours = {"study_name": self._study_name, "max_epochs": self._max_epochs, "time_attr": self._time_attr,
                "space": {n: spec_json(d) for n, d in self._dims.items()}}
        saved_space = state.get("space")
        if isinstance(saved_space, Mapping):  # one saved before a parameter with a default existed has it fixed there
            specs = validate_space(saved_space, source="the saved searcher state's space")
            state = {**state, "space": {n: spec_json(d) for n, d in specs.items()}}
        for key, mine in ours.items():
            if state[key] != mine:
                raise ValueError(
                    f"The saved searcher has {key}={state[key]!r}, but this searcher has {key}={mine!r}; "
                    "resume with the settings of the original run."
                )
        for key in ("metric", "mode"):
            mine, saved = getattr(self, f"_{key}"), state[key]
            if mine is not None and saved is not None and mine != saved:
                raise ValueError(f"The saved searcher has {key}={saved!r}, but this searcher has {key}={mine!r}.")
            if mine is None and saved is not None:
                setattr(self, f"_{key}", saved)
                self._init_kwargs[key] = saved
        if self._journal_path is None:
            self._journal_path = journal_location(state["journal_path"])
            self._init_kwargs["journal_path"] = self._journal_path
        if self._journal_path is None and state["trials"]:
            raise ValueError(
                "Cannot restore the search history: the saved searcher used an in-memory study and this "
                "one has no `journal_path`. Only journal-backed searches can be resumed."
            )
        self._records = {tid: Record(**rec) for tid, rec in state["trials"].items()}
        self._known_good_used = max(self._known_good_used, int(state["known_good_used"]))
        self._study, self._live = None, {}

    def _open_study(self) -> optuna.Study:
        if self._study is not None:
            return self._study
        if self._metric is None or self._mode is None:
            raise ValueError(
                f"PruningAwareOptunaSearch needs `metric` and `mode` (got metric={self._metric!r}, "
                f"mode={self._mode!r}): pass them to PruningAwareOptunaSearch(...) or to "
                "tune.TuneConfig(metric=..., mode=...) with a non-empty `param_space`."
            )
        if self._journal_path is None:
            storage: optuna.storages.BaseStorage = optuna.storages.InMemoryStorage()
        else:
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(self._local_journal()))
        direction = "maximize" if self._mode == "max" else "minimize"
        study = optuna.create_study(
            storage=storage,
            study_name=self._study_name,
            direction=direction,
            load_if_exists=True,
            pruner=optuna.pruners.NopPruner(),
            sampler=optuna.samplers.RandomSampler(),  # replaced below, once the history is known
        )
        if study.direction.name.lower() != direction:
            raise ValueError(
                f"The study {self._study_name!r} in {self._journal_path!r} has direction "
                f"{study.direction.name.lower()}, but mode={self._mode!r} needs {direction}."
            )
        trials = study.get_trials(deepcopy=False)
        study.sampler = make_sampler(self._sampler, self._seed, len(trials), self._n_startup_trials, self._tpe_options)
        self._known_good_used = reconcile(study, trials, self._records, known_good_used=self._known_good_used,
                                          journal_path=self._journal_path, study_name=self._study_name)
        self._study = study
        return study
