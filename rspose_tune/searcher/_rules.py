"""The rules of a search: the sampler names, TPE's options and start-up count, the Optuna state of
a trial that Ray ended, and the sampler a (re)opened study gets. Imports no Optuna and no Ray until
called (the search's parser reads :data:`SAMPLERS`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import TrialState

#: Every sampler of a search, by the one name the searcher, the search's ``--sampler``, the run spec and
#: the replay's policies use: ``tpe`` (Optuna's TPE after its random start-up trials), ``random`` (random
#: search: every trial a start-up trial) and ``gp`` (Optuna's Gaussian process after them).
SAMPLERS = ("tpe", "random", "gp")
#: The TPE options of a search: ``constant_liar`` for parallel trials (measured: docs/trust.md#parallel-tpe;
#: with one candidate per proposal it changes nothing, as the liar only adds running trials to the
#: "bad" density a single candidate never consults); ``n_ei_candidates=1`` (each proposal drawn from
#: TPE's density of good trials, not the best of 24 draws by expected improvement) from issue 26's
#: third round (docs/replay.md): over 80 search seeds, with the all-on space, the confirm stage named
#: the best setting in 73 instead of 61 (demo table) and 55 instead of 38 (held-out table) replays;
#: ``random_fraction=0.5`` (every other proposal after the start-up drawn at random, BOHB's random
#: fraction) from its fourth round: over 160 search seeds, 147 instead of 142 (demo) and 122 instead
#: of 109 (held-out).
TPE_OPTIONS = {"constant_liar": True, "multivariate": False, "n_ei_candidates": 1, "random_fraction": 0.5}
#: The kind of value each option ``tpe_options`` may set takes (``int``: >= 1; ``float``: finite, > 0;
#: ``"fraction"``: a number in [0, 1)). All are ``TPESampler`` keyword arguments but ``random_fraction``:
#: the share of proposals after the start-up trials drawn at random instead of by TPE
#: (:class:`rspose_tune.searcher._random_fraction.RandomFractionSampler`, BOHB's ``random_fraction``).
_TPE_OPTION_KINDS = {"constant_liar": bool, "multivariate": bool, "group": bool, "consider_endpoints": bool,
                     "n_ei_candidates": int, "prior_weight": float, "random_fraction": "fraction"}
#: The options ``tpe_options`` may set.
TPE_OPTION_KEYS = tuple(_TPE_OPTION_KINDS)


def parse_tpe_option(text: str) -> tuple[str, bool | int | float]:
    """``KEY=VALUE`` (the replay's ``--tpe-option``) as one ``TPESampler`` keyword argument.

    Raises:
        ValueError: naming the rule broken: ``KEY`` one of :data:`TPE_OPTION_KEYS`; a switch
            ``true``/``false``, ``n_ei_candidates`` an integer >= 1, ``prior_weight`` a finite number > 0,
            ``random_fraction`` a number in [0, 1).
    """
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or key not in _TPE_OPTION_KINDS:
        raise ValueError(f"must be KEY=VALUE with KEY one of {list(TPE_OPTION_KEYS)}, got {text!r}")
    kind = _TPE_OPTION_KINDS[key]
    if kind == "fraction":
        try:
            fraction = float(value)
        except ValueError:
            fraction = math.nan
        if not 0.0 <= fraction < 1.0:  # NaN fails too
            raise ValueError(f"{key} must be a number in [0, 1), got {value!r}")
        return key, fraction
    if kind is bool:
        if value.lower() not in ("true", "false"):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return key, value.lower() == "true"
    try:
        number = kind(value)
    except ValueError:
        number = None
    if kind is int and (number is None or number < 1):
        raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    if kind is float and (number is None or not math.isfinite(number) or number <= 0):
        raise ValueError(f"{key} must be a finite number > 0, got {value!r}")
    return key, number


def startup_trials(num_trials: int, sampler: str = "tpe") -> int:
    """TPE's random start-up trials in a search of ``num_trials`` trials: a third of them, at least
    2 (``sampler="random"``: all of them). The live search records it in the run spec; the offline
    replay and ``bench tpe`` call this too, so they run what the search runs.

    No cap: it was at most 10 (Optuna's default) until the replays of issue 26 (docs/replay.md,
    "Why the search missed the best setting"): with a third of the ~100 trials a replayed search
    runs (32) instead of 10, TPE's confirm stage named the best setting in 14 instead of 12 of 40
    replays on the shipped demo table and 18 instead of 8 on the held-out one, each with a lower
    mean regret. Searches of up to 32 trials (the default for the real presets) are unchanged."""
    if sampler not in SAMPLERS:
        raise ValueError(f"`sampler` is {sampler!r}, but must be one of {list(SAMPLERS)}.")
    if sampler == "random":
        return num_trials
    return max(2, num_trials // 3)


def to_optuna_state(last_epoch: int | None, max_epochs: int, error: bool) -> TrialState:
    """The Optuna state of a trial that Ray Tune has ended.

    Args:
        last_epoch: The highest epoch the trial reported (``None`` or 0: none).
        max_epochs: The full budget; a trial that reached it is complete.
        error: Whether the trial raised an error.

    Returns:
        ``FAIL`` on error or when no epoch was reported (nothing was learned about the
        parameters), ``COMPLETE`` when ``last_epoch >= max_epochs``, else ``PRUNED`` (the
        scheduler stopped it early).
    """
    from optuna.trial import TrialState

    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"The value of `max_epochs` is {max_epochs!r}, but must be an int >= 1.")
    if last_epoch is not None and (
        isinstance(last_epoch, bool) or not isinstance(last_epoch, int) or last_epoch < 0
    ):
        raise ValueError(f"The value of `last_epoch` is {last_epoch!r}, but must be None or an int >= 0.")
    if error or not last_epoch:
        return TrialState.FAIL
    if last_epoch >= max_epochs:
        return TrialState.COMPLETE
    return TrialState.PRUNED


def derive_seed(seed: int | None, n_trials: int) -> int | None:
    """The TPE seed after ``n_trials`` trials exist (a reopened study must not replay proposals)."""
    if seed is None or n_trials == 0:
        return seed
    return (seed * 1_000_003 + n_trials * 7_919) % (2**32)


def make_sampler(
    sampler: str, seed: int | None, n_trials: int, n_startup_trials: int, tpe_options: Mapping[str, Any]
) -> optuna.samplers.BaseSampler:
    """The sampler of a study that holds ``n_trials`` trials (its seed: :func:`derive_seed`)."""
    import optuna

    with warnings.catch_warnings():  # `group` is marked experimental in Optuna 5; chosen knowingly
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning,
                                message=".*``group``.*")
        if sampler == "random":  # what TPE's start-up trials draw (TPESampler's own RandomSampler, same seed)
            return optuna.samplers.RandomSampler(seed=derive_seed(seed, n_trials))
        if sampler == "gp":  # Optuna's Gaussian-process sampler (learns the noise); tpe_options do not apply
            return optuna.samplers.GPSampler(
                seed=derive_seed(seed, n_trials), n_startup_trials=n_startup_trials,
                warn_independent_sampling=False,  # off components make the space conditional
            )
        options = dict(tpe_options)
        fraction = float(options.pop("random_fraction", 0.0))
        tpe_seed = derive_seed(seed, n_trials)
        tpe = optuna.samplers.TPESampler(seed=tpe_seed, n_startup_trials=n_startup_trials, **options)
        if not fraction:
            return tpe
        from rspose_tune.searcher._random_fraction import RandomFractionSampler

        random_seed = None if tpe_seed is None else (tpe_seed + 1) % (2**32)  # not TPE's stream
        return RandomFractionSampler(tpe, optuna.samplers.RandomSampler(seed=random_seed), fraction, n_startup_trials)
