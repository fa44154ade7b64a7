"""rspose_tune: tune RSPose ranking losses for MMPose with Ray Tune and Optuna.

Layers, from the bottom up (each only imports the ones below it):

- :mod:`rspose_tune.losses` - pure-torch Spatial Rank / Spatial Sort / Instance Sort.
- :mod:`rspose_tune.mmpose_adapter` - MMPose registration (losses, heads) and config building.
- :mod:`trainables` (top-level package) - Ray Tune trainables that run an MMPose Runner.
- :mod:`rspose_tune.search` / :mod:`rspose_tune.report` / :mod:`rspose_tune.export` - the CLIs.

Importing this package defines names only: no MMPose, Ray or torch import, no patching.
"""

__version__ = "0.1.0"

#: Default storage root of runs, the CLIs' ``--storage``: ``results`` relative to the working
#: directory when a CLI runs (the repository's ``results/`` when run from its root); never a
#: folder inside the installed package.
DEFAULT_STORAGE = "results"

__all__ = ["DEFAULT_STORAGE", "__version__"]
